"""Writing files only below a chosen directory, and a config tree whole or not at all (import
and restore share it).

Every write goes through `write_under`: the path is split into plain components (no absolute
path, no `..`, `.` or empty component, no NUL) and walked with one directory file descriptor
per component (`openat`-style: `dir_fd` and `O_NOFOLLOW`), so neither a crafted name nor a
symbolic link planted on the way can lead a write outside the directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.errors import ConfigError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def components(rel: str, *, what: str) -> list[str]:
    """`rel`'s components when it is a plain relative path; ConfigError naming `what` when
    it is absolute or has an empty, `.` or `..` component or a NUL byte."""
    parts = rel.split("/")
    if not rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(
            f"{what}: not a plain relative path (absolute, or an empty, . or .. part)"
        )
    return parts


@contextmanager
def opened_dir(path: Path) -> Iterator[int]:
    """A file descriptor of the existing directory `path` (itself may be a link an operator
    chose, like a state directory on another disk; nothing below it may be)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def write_under(root_fd: int, rel: str, data: bytes, mode: int) -> None:
    """Create the new file `rel` (with its missing directories) below the directory open as
    `root_fd`. FileExistsError when it exists; OSError (ELOOP, ENOTDIR) when a component is
    a link or not a directory."""
    parts = components(rel, what=rel if rel.isprintable() else repr(rel))
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
        out = os.open(parts[-1], _FILE_FLAGS, mode, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            f.write(data)
    finally:
        os.close(fd)


def write_files(files: dict[str, tuple[bytes, int]], root: Path) -> None:
    """Write `files` (relative path -> (content, mode)) below the existing directory `root`."""
    with opened_dir(root) as fd:
        for rel, (content, mode) in sorted(files.items()):
            try:
                write_under(fd, rel, content, mode)
            except OSError as e:
                raise ConfigError(f"cannot write {rel} below {root}: {e.strerror}") from e


def write_tree(
    files: dict[str, tuple[bytes, int]],
    dest: Path,
    *,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Write `files` (relative path -> (content, mode)) as the new directory `dest`: first into
    a sibling temporary directory, then `check` it (raising ConfigError), then rename it into
    place. `dest` must not exist or be empty; nothing is left behind on failure."""
    for rel in files:
        components(rel, what=f"{dest}: {rel}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest}: exists and is not an empty directory; choose a new one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_files(files, tmp)
        if check is not None:
            check(tmp)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
