"""Writing a config tree whole or not at all (import and restore share it)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from daemon.errors import ConfigError


def write_tree(
    files: dict[str, tuple[bytes, int]],
    dest: Path,
    *,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Write `files` (relative path -> (content, mode)) as the new directory `dest`: first into
    a sibling temporary directory, then `check` it (raising ConfigError), then rename it into
    place. `dest` must not exist or be empty; nothing is left behind on failure."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest}: exists and is not an empty directory; choose a new one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    try:
        for rel, (content, mode) in sorted(files.items()):
            path = tmp / rel
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ConfigError(f"{rel}: refusing a path outside {dest}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        if check is not None:
            check(tmp)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
