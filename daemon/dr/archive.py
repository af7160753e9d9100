"""The backup archive: a versioned tar.gz with a manifest of checksums.

Layout (every member is listed in `manifest.json` with its SHA-256):

    manifest.json           format, version, when, by which gitopsd, the config file's name,
                            credential file references, notes on what could not be included
    config/...              the config tree as loaded (paths relative to the config's directory;
                            files outside it under config/_external/<n>/)
    state/<app>.json        each app's state record (status, history, operation, fingerprints)
    inventory/<app>.json    each app's in-cluster inventory: {"cluster", "entries"}
    last-good/<file>        the last good renders (offline operation)
    secrets/<n>             credential files, only with --include-secrets: Fernet-encrypted
                            (AES-128-CBC + HMAC-SHA256, the `cryptography` library) with the
                            key file's key; the manifest maps <n> to the original path

Pure: bytes in, bytes out. Reading refuses, naming the archive and the member, anything that is
not exactly what the manifest lists (wrong format or version, a checksum that does not match, a
member missing or added, a link or a path leaving the archive, a truncated file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from daemon import __version__
from daemon.errors import ConfigError

FORMAT = "gitopsd-backup"
VERSION = 1
MAX_MEMBER = 256 * 1024 * 1024


@dataclass
class Contents:
    """What an archive holds (member path -> bytes) and its manifest's own fields."""

    members: dict[str, bytes] = field(default_factory=dict)
    config_file: str = "gitopsd.yaml"  # the settings file, under config/
    credentials: list[str] = field(default_factory=list)  # referenced credential files
    secrets: dict[str, str] = field(default_factory=dict)  # secrets/<n> -> original path
    notes: list[str] = field(default_factory=list)
    created_at: str = ""
    created_by: str = ""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(contents: Contents) -> bytes:
    """The archive's bytes (deterministic order; the manifest first)."""
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "createdAt": contents.created_at or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "createdBy": contents.created_by or f"gitopsd {__version__}",
        "configFile": contents.config_file,
        "credentialFiles": sorted(contents.credentials),
        "secrets": contents.secrets,
        "notes": contents.notes,
        "files": {path: _sha(data) for path, data in sorted(contents.members.items())},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path, data in [
            ("manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode()),
            *sorted(contents.members.items()),
        ]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack(data: bytes, *, name: str) -> tuple[Contents, dict[str, Any]]:
    """The archive's contents after every check; ConfigError naming `name` otherwise."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                path = PurePosixPath(info.name)
                if not info.isfile():
                    raise ConfigError(f"{name}: member {info.name} is not a regular file")
                if path.is_absolute() or ".." in path.parts:
                    raise ConfigError(f"{name}: member {info.name} leaves the archive")
                if info.size > MAX_MEMBER:
                    raise ConfigError(f"{name}: member {info.name} is too large")
                f = tar.extractfile(info)
                if f is None:
                    raise ConfigError(f"{name}: member {info.name} cannot be read")
                members[info.name] = f.read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"{name}: not a readable gitopsd backup ({e})") from e
    raw = members.pop("manifest.json", None)
    if raw is None:
        raise ConfigError(f"{name}: no manifest.json: not a gitopsd backup")
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{name}: manifest.json is not JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{name}: manifest.json: not a gitopsd backup")
    if manifest.get("version") != VERSION:
        raise ConfigError(
            f"{name}: backup format version {manifest.get('version')!r}; this gitopsd reads "
            f"version {VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ConfigError(f"{name}: manifest.json: no file list")
    missing = sorted(set(files) - set(members))
    if missing:
        raise ConfigError(f"{name}: member {missing[0]} is listed in the manifest but missing")
    extra = sorted(set(members) - set(files))
    if extra:
        raise ConfigError(f"{name}: member {extra[0]} is not listed in the manifest")
    for member, digest in sorted(files.items()):
        if _sha(members[member]) != digest:
            raise ConfigError(f"{name}: member {member} does not match its checksum (corrupted)")
    contents = Contents(
        members=members,
        config_file=str(manifest.get("configFile") or "gitopsd.yaml"),
        credentials=[str(c) for c in manifest.get("credentialFiles") or []],
        secrets={str(k): str(v) for k, v in (manifest.get("secrets") or {}).items()},
        notes=[str(n) for n in manifest.get("notes") or []],
        created_at=str(manifest.get("createdAt", "")),
        created_by=str(manifest.get("createdBy", "")),
    )
    return contents, manifest


def encrypt(key: bytes, data: bytes) -> bytes:
    """`data` sealed with a Fernet key (as written by `gitopsd backup --new-key`)."""
    from cryptography.fernet import Fernet

    return Fernet(key).encrypt(data)


def decrypt(key: bytes, token: bytes, *, what: str) -> bytes:
    """The data sealed by `encrypt`; ConfigError when the key is not the one used."""
    from cryptography.fernet import Fernet, InvalidToken

    try:
        return Fernet(key).decrypt(token)
    except (InvalidToken, ValueError) as e:
        raise ConfigError(f"{what}: cannot decrypt with this key file (wrong key?)") from e


def new_key() -> bytes:
    """A fresh Fernet key (URL-safe base64 of 32 random bytes)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


def read_key(path: str) -> bytes:
    """A key file's key; ConfigError naming the file when it is not a Fernet key."""
    from cryptography.fernet import Fernet

    try:
        with open(path, "rb") as f:
            key = f.read().strip()
        Fernet(key)
    except OSError as e:
        raise ConfigError(f"cannot read the key file: {e.strerror}", file=path) from e
    except ValueError as e:
        raise ConfigError(
            "not a backup key (32 URL-safe base64 bytes; create one with "
            "`gitopsd backup --new-key FILE`)",
            file=path,
        ) from e
    return key
