"""Signed commits: AppProject `signatureKeys`, as Argo CD enforces them.

When an app's project lists signature keys, every git revision it would sync must be a commit
signed by one of them: `git verify-commit` against a keyring holding only the public keys the
settings name (`settings.gpgKeys`: files of ASCII-armored public keys, Argo CD keeps them in
argocd-gpg-keys-cm). An unsigned commit, a bad signature, a key the keyring does not hold, or a
valid signature by a key the project does not list: the reconcile fails naming the commit and the
reason, and nothing is applied. Helm chart sources cannot be verified (Argo CD refuses them under
signature keys too).

The keyring is a GNUPGHOME under the cache directory, built once per set of key files (keyed by
their content) with `gpg --import`; git runs gpg against it with the status lines (`--raw`) that
say which key made a valid signature.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from daemon import proc
from daemon.errors import SourceError

log = structlog.get_logger("gitopsd.signatures")


def signer(status: str) -> tuple[str, str]:
    """(fingerprint of the key that made a valid signature, why not) from gpg status lines."""
    valid = re.search(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]{40})", status, re.M)
    if valid:
        return valid.group(1), ""
    if re.search(r"^\[GNUPG:\] (ERRSIG|NO_PUBKEY) ([0-9A-F]+)", status, re.M):
        key = re.search(r"^\[GNUPG:\] (?:ERRSIG|NO_PUBKEY) ([0-9A-F]+)", status, re.M)
        return "", f"signed by key {key.group(1) if key else '?'}, which no gpgKeys file holds"
    if re.search(r"^\[GNUPG:\] BADSIG", status, re.M):
        return "", "its signature does not verify (BADSIG)"
    if re.search(r"^\[GNUPG:\] (EXPKEYSIG|REVKEYSIG|EXPSIG)", status, re.M):
        return "", "signed by an expired or revoked key"
    return "", "it is not signed"


def allowed(fingerprint: str, keys: Sequence[str]) -> bool:
    """Whether a signing key's fingerprint is one of the project's key IDs (short, long, or the
    full fingerprint: a suffix match, as GnuPG key IDs are)."""
    return any(fingerprint.endswith(k) for k in keys)


class Keyring:
    """The public keys of `settings.gpgKeys`, as a GNUPGHOME git can verify commits against."""

    def __init__(self, root: Path, key_files: Sequence[str], *, timeout: float = 30.0) -> None:
        self.root = root
        self.key_files = tuple(key_files)
        self.timeout = timeout
        self._home: Path | None = None
        self._lock = anyio.Lock()

    async def home(self) -> Path:
        """The GNUPGHOME holding exactly the configured keys (built on first use)."""
        async with self._lock:
            if self._home is not None:
                return self._home
            blobs = []
            for f in self.key_files:
                try:
                    blobs.append(Path(f).read_bytes())
                except OSError as e:
                    raise SourceError(f"gpgKeys: cannot read {f}: {e.strerror}") from e
            digest = hashlib.sha256(b"\0".join(blobs)).hexdigest()[:16]
            home = self.root / f"gnupg-{digest}"
            if not (home / ".complete").exists():
                tmp = self.root / f".gnupg-{uuid.uuid4().hex}"
                tmp.mkdir(parents=True, mode=0o700)
                try:
                    for f, blob in zip(self.key_files, blobs, strict=True):
                        argv = ["gpg", "--batch", "--no-autostart", "--status-fd", "1"]
                        argv += ["--homedir", str(tmp), "--import"]
                        done = await proc.run(argv, timeout=self.timeout, stdin=blob)
                        # Public keys need no agent; gpg may still complain that it cannot
                        # reach one (a long homedir), so the status lines decide.
                        if b"[GNUPG:] IMPORT_OK" not in done.stdout:
                            raise SourceError(f"gpgKeys: {f}: gpg --import: {done.err_text}")
                    (tmp / ".complete").write_text("")
                    shutil.rmtree(home, ignore_errors=True)
                    os.replace(tmp, home)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            self._home = home
            return home

    async def verify(self, clone: Path, sha: str, keys: Sequence[str], *, where: str) -> str:
        """The fingerprint that signed commit `sha` of the bare clone `clone`, when it is one of
        `keys`; SourceError naming the commit and the reason otherwise."""
        home = await self.home()
        done = await proc.run(
            ["git", "verify-commit", "--raw", sha],
            cwd=clone,
            env={"GNUPGHOME": str(home), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1"},
            timeout=self.timeout,
        )
        fingerprint, why = signer(done.stderr.decode(errors="replace"))
        if not fingerprint:
            raise SourceError(f"{where}: commit {sha[:12]} is refused: {why}")
        if not allowed(fingerprint, keys):
            raise SourceError(
                f"{where}: commit {sha[:12]} is signed by {fingerprint[-16:]}, which is not "
                f"among the project's signatureKeys ({', '.join(keys)})"
            )
        return fingerprint
