"""Reading the config's files safely: glob expansion, documents, and what counts as a file that
went wrong rather than an edit.

Editors, `cat >`, ConfigMap volume updates and full disks all leave a file briefly empty or
half-written, and a symlink can briefly point nowhere. A file that cannot be read, an app file
that is now empty where it held documents, or a symlink that points nowhere is a `ConfigError`,
so the running config stays in force; real removals are confirmed later by a second read
(`daemon.removals`).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon import yamlio
from daemon.errors import ConfigError

Documents = list[tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the watcher compares between two looks at one file."""

    mtime_ns: int
    size: int
    inode: int


def read_documents(path: Path, *, held: int = 0) -> Documents:
    """The YAML documents of `path` (the items of a `List` spread out), each with its number.
    `held` is how many documents the running config read from this file: an empty file that
    held some is an error (a write in progress), not an edit that removes them."""
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"dangling symlink (points to {os.readlink(path)!r})", file=str(path))
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason}", file=str(path)) from e
    if held and not text.strip():
        raise ConfigError(
            f"file is empty but held {held} document(s); keeping them (delete the file, or "
            "leave a comment in it, to remove them)",
            file=str(path),
        )
    try:
        docs = list(yamlio.load_all(text))
    except yaml.YAMLError as e:
        raise ConfigError(
            f"invalid YAML: {getattr(e, 'problem', e)}", file=str(path), line=yamlio.error_line(e)
        ) from e
    out: Documents = []
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(f"document {i}: expected a mapping", file=str(path))
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend((i, item) for item in doc["items"] if isinstance(item, dict))
        else:
            out.append((i, doc))
    return out


def expand(base: Path, patterns: list[str], *, where: str) -> list[Path]:
    """The files the `applications` patterns match, in order. A pattern without wildcards must
    name an existing file; a match that is a dangling symlink is an error, not skipped."""
    files: list[Path] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        matches = sorted(glob.glob(full, recursive=True))
        if not matches and not glob.has_magic(pattern):
            raise ConfigError(f"applications: file {pattern!r} does not exist", file=where)
        for m in matches:
            p = Path(m)
            if p.is_symlink() and not p.exists():
                raise ConfigError(f"dangling symlink (points to {os.readlink(p)!r})", file=str(p))
            if p.is_file():
                files.append(p)
    return files


def stamps(config_path: str, base: Path, patterns: tuple[str, ...]) -> dict[str, Stamp | None]:
    """Every file the config reads now (the globs matched afresh, so a file added to a directory
    that had none is seen), with its stamp; None for one that cannot be stat'ed."""
    names = [config_path]
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        names.extend(sorted(glob.glob(full, recursive=True)))
    out: dict[str, Stamp | None] = {}
    for name in names:
        try:
            st = os.stat(name)
        except OSError:
            out[name] = None
            continue
        out[name] = Stamp(st.st_mtime_ns, st.st_size, st.st_ino)
    return out
