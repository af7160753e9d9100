"""The backup archive: a versioned tar.gz with a manifest of checksums, optionally signed.

Layout (every member but the signature is listed in `manifest.json` with its SHA-256 and size):

    manifest.json           format, version, when, by which gitopsd, the config file's name and
                            directory, credential file references, notes on what could not be
                            included; always the first member
    manifest.sig            with a backup key: HMAC-SHA256 of manifest.json's bytes, keyed by
                            HKDF-SHA256 of the key file's key; always the second member
    config/...              the config tree as loaded (paths relative to the config's directory;
                            files outside it under config/_external/<n>/)
    state/<app>.json        each app's state record (status, history, operation, fingerprints)
    inventory/<app>.json    each app's in-cluster inventory: {"cluster", "entries"}
    last-good/<file>        the last good renders (offline operation)
    secrets/<n>             credential files, only with --include-secrets: Fernet-encrypted
                            (AES-128-CBC + HMAC-SHA256, the `cryptography` library) with the
                            key file's key; the manifest maps <n> to the original path

Pure: bytes in, bytes out. Reading streams the archive once, the manifest first, and refuses,
naming the archive and the member, anything that is not exactly what the manifest lists (wrong
format or version, a bad or missing signature when a key is given, a checksum or size that does
not match, a member missing, added or repeated, a link, special file or path that is not plain,
more than MAX_MEMBERS members or MAX_TOTAL bytes unpacked, a damaged or truncated stream).
Only a signature checked with the key says who wrote the archive: checksums alone catch damage,
not tampering.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, cast

from daemon import __version__
from daemon.dr.files import components
from daemon.errors import ConfigError

FORMAT = "gitopsd-backup"
VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MEMBER = 64 * 1024 * 1024  # one member, unpacked
MAX_TOTAL = 256 * 1024 * 1024  # the whole tar stream, unpacked (headers included)
MAX_MEMBERS = 20_000
MAX_MANIFEST = 16 * 1024 * 1024
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)  # not sparse or contiguous files: plain data only


@dataclass
class Contents:
    """What an archive holds (member path -> bytes) and its manifest's own fields."""

    members: dict[str, bytes] = field(default_factory=dict)
    config_file: str = "gitopsd.yaml"  # the settings file, under config/
    config_dir: str = ""  # the directory the config tree was taken from (absolute)
    credentials: list[str] = field(default_factory=list)  # referenced credential files
    secrets: dict[str, str] = field(default_factory=dict)  # secrets/<n> -> original path
    notes: list[str] = field(default_factory=list)
    created_at: str = ""
    created_by: str = ""
    signature: str = ""  # reading: "verified", "not checked (no --key-file)" or "none ..."


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mac(key: bytes, manifest: bytes) -> str:
    """HMAC-SHA256 of the manifest with a key derived from the backup key (HKDF, so the MAC
    key is never the Fernet key itself)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = base64.urlsafe_b64decode(key)
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"gitopsd-backup-manifest-mac"
    ).derive(raw)
    return hmac.new(derived, manifest, hashlib.sha256).hexdigest()


def pack(contents: Contents, *, key: bytes | None = None) -> bytes:
    """The archive's bytes (deterministic order; the manifest first, then, with `key`, its
    signature). ConfigError when a restore would refuse it as too large."""
    total = sum(len(d) for d in contents.members.values())
    if total > MAX_TOTAL - MAX_MANIFEST or len(contents.members) > MAX_MEMBERS:
        raise ConfigError(
            f"the backup would hold {len(contents.members)} files, {total} bytes: more than a "
            f"restore accepts ({MAX_MEMBERS} files, {MAX_TOTAL - MAX_MANIFEST} bytes)"
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "createdAt": contents.created_at or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "createdBy": contents.created_by or f"gitopsd {__version__}",
        "configFile": contents.config_file,
        "configDir": contents.config_dir,
        "credentialFiles": sorted(contents.credentials),
        "secrets": contents.secrets,
        "notes": contents.notes,
        "files": {path: _sha(data) for path, data in sorted(contents.members.items())},
        "sizes": {path: len(data) for path, data in sorted(contents.members.items())},
    }
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    head = [(MANIFEST, raw)]
    if key is not None:
        sig = {"algorithm": "HMAC-SHA256/HKDF-SHA256", "mac": _mac(key, raw)}
        head.append((SIGNATURE, json.dumps(sig).encode()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path, data in [*head, *sorted(contents.members.items())]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _TooLarge(Exception):
    """The unpacked stream passed MAX_TOTAL bytes."""


class _Inflater:
    """The gzip stream inflated on demand, at most `size` bytes per read, so damage surfaces
    in the member being read rather than ahead of it, and never more than `limit` bytes in
    all (tarfile buffers whole extended headers itself, so the bound must sit below it).
    Concatenated gzip members are read in turn, as gzip allows."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._src = io.BytesIO(data)
        self._z = zlib.decompressobj(31)
        self._in = b""
        self._ended = False  # the current gzip member is complete
        self._limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        want = min(size if size >= 0 else 1 << 16, self._limit + 1 - self.count)
        parts: list[bytes] = []
        n = 0
        while n < want:
            if not self._in:
                self._in = self._src.read(16384)
                if not self._in:
                    if not self._ended:
                        raise EOFError("the compressed stream ends early (truncated)")
                    break
            if self._ended:
                self._z, self._ended = zlib.decompressobj(31), False
            piece = self._z.decompress(self._in, want - n)
            if self._z.eof:
                self._in, self._ended = self._z.unused_data, True
            else:
                self._in = self._z.unconsumed_tail
            parts.append(piece)
            n += len(piece)
        self.count += n
        if self.count > self._limit:
            raise _TooLarge
        return b"".join(parts)


def unpack(data: bytes, *, name: str, key: bytes | None = None) -> tuple[Contents, dict[str, Any]]:
    """The archive's contents after every check; ConfigError naming `name` (and the member)
    otherwise. With `key`, an archive without a matching signature is refused before any
    member after the manifest is read."""
    reader = _Reader(name, key)
    stream = cast(IO[bytes], _Inflater(data, MAX_TOTAL))
    try:
        # bufsize: tarfile reads the stream a block at a time, so errors name the right member.
        with tarfile.open(fileobj=stream, mode="r|", bufsize=tarfile.BLOCKSIZE) as tar:
            for info in tar:
                reader.member(tar, info)
    except ConfigError:
        raise
    except _TooLarge as e:
        raise ConfigError(
            f"{name}: more than {MAX_TOTAL} bytes unpacked{reader.where()}: refusing it"
        ) from e
    except Exception as e:  # hostile input: any failure to parse it (zlib, tarfile) is damage
        raise ConfigError(
            f"{name}: not a readable gitopsd backup (damaged{reader.where()}: "
            f"{e or type(e).__name__})"
        ) from e
    return reader.contents()


_SAFE_NAME = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
# Top-level directory -> whether members below it are one plain file name (restore writes
# each where the config says, by that name) or a tree (config/).
_SECTIONS = {"config": False, "state": True, "inventory": True, "last-good": True, "secrets": True}


class _Reader:
    """Checks members in the order the stream yields them: the manifest, its signature, then
    only listed members within the declared sizes, each read whole and checksummed."""

    def __init__(self, name: str, key: bytes | None) -> None:
        self.name = name
        self.key = key
        self.manifest: dict[str, Any] | None = None
        self.raw = b""
        self.files: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.members: dict[str, bytes] = {}
        self.signature = ""
        self.count = 0
        self.total = 0
        self.current = ""
        self.last = ""

    def where(self) -> str:
        if self.current:
            return f" in member {self.current}"
        return f" after member {self.last}" if self.last else " at its start"

    def fail(self, member: str, why: str) -> ConfigError:
        shown = member if member.isprintable() else repr(member)
        return ConfigError(f"{self.name}: member {shown} {why}")

    def member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        self.count += 1
        if self.count > MAX_MEMBERS + 2:
            raise self.fail(info.name, f"is past the limit of {MAX_MEMBERS} members")
        if self.manifest is None:
            if info.name != MANIFEST or info.type not in _REGULAR:
                raise ConfigError(f"{self.name}: no manifest.json first: not a gitopsd backup")
            self.raw = self.read(tar, info, MAX_MANIFEST)
            self.parse_manifest()
            return
        if not self.signature:
            is_sig = info.name == SIGNATURE and info.type in _REGULAR
            self.verify(self.read(tar, info, 4096) if is_sig else None)
            if is_sig:
                return
        self.check(info)
        data = self.read(tar, info, MAX_MEMBER)
        if _sha(data) != self.files[info.name]:
            raise self.fail(info.name, "does not match its checksum (corrupted)")
        self.members[info.name] = data

    def check(self, info: tarfile.TarInfo) -> None:
        """Everything knowable about a member from its header, before its data are read."""
        path = info.name
        if info.type not in _REGULAR:
            raise self.fail(path, "is not a regular file (links and special files are refused)")
        shown = path if path.isprintable() else repr(path)
        parts = components(path, what=f"{self.name}: member {shown}")
        one_file = _SECTIONS.get(parts[0])
        if one_file is None or len(parts) < 2 or (one_file and len(parts) != 2):
            raise self.fail(path, f"is not where a backup keeps files ({', '.join(_SECTIONS)})")
        if one_file and (parts[1][0] == "." or parts[1].strip(_SAFE_NAME)):
            raise self.fail(path, "has a name that is not a plain file name")
        if path not in self.files:
            raise self.fail(path, "is not listed in the manifest")
        if path in self.members:
            raise self.fail(path, "appears twice")
        declared = self.sizes.get(path)
        if declared is not None and declared != info.size:
            raise self.fail(path, f"holds {info.size} bytes; the manifest says {declared}")
        if info.size > MAX_MEMBER:
            raise self.fail(path, f"is larger than {MAX_MEMBER} bytes")
        self.total += info.size
        if self.total > MAX_TOTAL:
            raise self.fail(path, f"takes the archive past {MAX_TOTAL} bytes unpacked")

    def read(self, tar: tarfile.TarFile, info: tarfile.TarInfo, limit: int) -> bytes:
        if info.size > limit:
            raise self.fail(info.name, f"is larger than {limit} bytes")
        self.current = info.name
        f = tar.extractfile(info)
        if f is None:
            raise self.fail(info.name, "cannot be read")
        data = f.read()
        if len(data) != info.size:
            raise self.fail(info.name, "is truncated")
        self.current, self.last = "", info.name
        return data

    def parse_manifest(self) -> None:
        try:
            manifest = json.loads(self.raw)
        except ValueError as e:
            raise ConfigError(f"{self.name}: manifest.json is not JSON: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ConfigError(f"{self.name}: manifest.json: not a gitopsd backup")
        if manifest.get("version") != VERSION:
            raise ConfigError(
                f"{self.name}: backup format version {manifest.get('version')!r}; this gitopsd "
                f"reads version {VERSION}"
            )
        files, sizes = manifest.get("files"), manifest.get("sizes") or {}
        if not isinstance(files, dict) or not isinstance(sizes, dict):
            raise ConfigError(f"{self.name}: manifest.json: no file list")
        if len(files) > MAX_MEMBERS:
            raise ConfigError(f"{self.name}: manifest.json lists more than {MAX_MEMBERS} members")
        try:
            self.files = {str(k): str(v) for k, v in files.items()}
            self.sizes = {str(k): int(v) for k, v in sizes.items()}
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.name}: manifest.json: sizes are not numbers") from e
        declared = sum(max(0, self.sizes.get(f, 0)) for f in self.files)
        if declared > MAX_TOTAL:
            raise ConfigError(
                f"{self.name}: manifest.json declares {declared} bytes unpacked, more than "
                f"{MAX_TOTAL}: refusing it"
            )
        self.manifest = manifest

    def verify(self, sig: bytes | None) -> None:
        if self.key is None:
            self.signature = (
                "not checked (no --key-file)"
                if sig is not None
                else "none (unsigned: anyone who could write the file could have changed it)"
            )
            return
        if sig is None:
            raise ConfigError(
                f"{self.name}: is not signed; with a key only an archive signed with it is "
                "restored (anyone who could write the file could have changed it)"
            )
        try:
            mac = str(json.loads(sig)["mac"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{self.name}: member {SIGNATURE} is not a signature") from e
        if not hmac.compare_digest(mac, _mac(self.key, self.raw)):
            raise ConfigError(
                f"{self.name}: signature does not match this key (wrong key, or the archive "
                "was changed)"
            )
        self.signature = "verified"

    def contents(self) -> tuple[Contents, dict[str, Any]]:
        manifest = self.manifest
        if manifest is None:
            raise ConfigError(f"{self.name}: no manifest.json: not a gitopsd backup")
        if not self.signature:
            self.verify(None)
        missing = sorted(set(self.files) - set(self.members))
        if missing:
            raise self.fail(missing[0], "is listed in the manifest but missing")
        secrets = {str(k): str(v) for k, v in (manifest.get("secrets") or {}).items()}
        stray = sorted(set(secrets) ^ {m for m in self.members if m.startswith("secrets/")})
        if stray:
            raise self.fail(stray[0], "is not both a secrets/ member and mapped in the manifest")
        config_file = str(manifest.get("configFile") or "gitopsd.yaml")
        components(config_file, what=f"{self.name}: manifest.json configFile")
        if f"config/{config_file}" not in self.members:
            raise ConfigError(f"{self.name}: the archive has no config/{config_file}")
        contents = Contents(
            members=self.members,
            config_file=config_file,
            config_dir=str(manifest.get("configDir") or ""),
            credentials=[str(c) for c in manifest.get("credentialFiles") or []],
            secrets=secrets,
            notes=[str(n) for n in manifest.get("notes") or []],
            created_at=str(manifest.get("createdAt", "")),
            created_by=str(manifest.get("createdBy", "")),
            signature=self.signature,
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
