"""The daemon's local admin token: what a write to the API needs when no `apiTokens` are set.

An open loopback API is reachable by every process on the host, and by anything the daemon
itself can be made to fetch; reading is harmless enough there, writing (sync, delete, rollback)
is not. So writes need a bearer token, and without configured tokens the daemon keeps one in a
file only its own user can read (mode 0600): `gitopsd app` reads it when it runs as that user,
nobody else can. An existing private file is reused, so replicas on one host that name the same
file, and restarts, agree on the token.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

from daemon.errors import ConfigError

FILE_NAME = "local-api-token"


def _private(st: os.stat_result, *, mine: bool = True) -> bool:
    """A regular file no one but its owner may read (and, with `mine`, owned by this user)."""
    owner_ok = st.st_uid == os.getuid() or not mine
    return stat.S_ISREG(st.st_mode) and owner_ok and not st.st_mode & 0o077


def read(path: Path, *, mine: bool = True) -> str:
    """The token in `path`, read through a descriptor checked to be a private regular file (a
    symlink is not followed, so one swapped in after a check is refused). `mine=False`: owned
    by another user (root reading the daemon's). ConfigError naming the file otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise ConfigError(f"cannot read the local API token: {e.strerror}", file=str(path)) from e
    with os.fdopen(fd) as f:
        if not _private(os.fstat(f.fileno()), mine=mine):
            raise ConfigError("the local API token is not a private (0600) file", file=str(path))
        return f.read(4096).strip()


def ensure(path: Path) -> str:
    """The token in `path`, made (random, mode 0600) unless a private one is already there.
    A file anyone else could read or have written is replaced; ConfigError if it cannot be."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(50):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            token = secrets.token_urlsafe(32)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue  # another replica made it first: read theirs
            except OSError as e:
                raise ConfigError(
                    f"cannot create the local API token: {e.strerror}", file=str(path)
                ) from e
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            return token
        if not _private(st):
            try:
                path.unlink()  # readable by others, a link, or not ours: never trust it
            except OSError as e:
                raise ConfigError(
                    f"cannot replace an untrusted file: {e.strerror}", file=str(path)
                ) from e
            continue
        try:
            value = read(path)
        except ConfigError:
            value = ""  # replaced or not ours since the look: look again
        if value:
            return value
        time.sleep(0.05)  # being written by another replica
    raise ConfigError("cannot settle the local API token file", file=str(path))
