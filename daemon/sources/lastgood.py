"""The last good render of each app, kept on disk so the edge keeps working offline.

After every successful render of an app (all its sources resolved, fetched and rendered), the
rendered manifests are kept under `stateDir/last-good/<app>.json.gz` together with the app spec
they came from and the revisions. When a source is unreachable (git ls-remote or fetch fails,
`SourceUnreachable`), the reconcile takes the desired state from there instead of failing: the
app keeps self-healing and re-applying revision R, with a `SourceUnreachable` condition saying
since when and from which render. The record survives restarts; it applies only while the app's
spec is the one it was rendered from (a changed spec cannot be rendered offline).

Bounded: written only when the render changed, gzip-compressed, and never larger than the
render cap (`maxManifestBytes`); written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiofiles
import aiofiles.os
import structlog

from daemon.model import Manifest, ResourceKey
from daemon.names import file_stem
from daemon.settings import Application
from daemon.sources.signatures import allowed

log = structlog.get_logger("gitopsd.lastgood")

VERSION = 1
_fsync = aiofiles.os.wrap(os.fsync)


@dataclass(frozen=True)
class Rendered:
    """What the sources of an app rendered to at some revisions."""

    manifests: list[Manifest]
    revisions: list[str]
    ref_shas: list[str]  # the `ref` sources' commits (multi-source value files)
    tools: list[str]
    rendered_at: str = ""  # when this render was kept (for the offline condition)
    # Commit -> the fingerprint that signed it, for commits checked against signatureKeys.
    signers: dict[str, str] = field(default_factory=dict)

    def signed_for(self, keys: Sequence[str]) -> str:
        """Why this render may not stand in under a project requiring `keys` ("" when every
        commit it came from was verified as signed by one of them)."""
        for sha in [*self.revisions, *self.ref_shas]:
            fingerprint = self.signers.get(sha, "")
            if not fingerprint:
                return f"commit {sha[:12]} of the last good render was not signature-checked"
            if not allowed(fingerprint, keys):
                return (
                    f"commit {sha[:12]} of the last good render is signed by "
                    f"{fingerprint[-16:]}, which is no longer among the project's signatureKeys"
                )
        return ""


def _spec_digest(app: Application) -> str:
    spec = json.dumps(app.raw.get("spec"), sort_keys=True, default=str)
    return hashlib.sha256(spec.encode()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LastGood:
    """Per-app last good renders under `root`."""

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int) -> None:
        self.root = Path(root) / "last-good"
        self.max_bytes = max_bytes
        self._digests: dict[str, str] = {}  # app -> digest of what is on disk

    def _path(self, app: str) -> Path:
        return self.root / f"{file_stem(app)}.json.gz"

    async def keep(self, app: Application, rendered: Rendered) -> None:
        """Record a successful render (a no-op when it is what is already kept). A failure to
        write is logged, never fatal: the render itself succeeded."""
        body = {
            "version": VERSION,
            "app": app.name,
            "spec": _spec_digest(app),
            "revisions": rendered.revisions,
            "refShas": rendered.ref_shas,
            "tools": rendered.tools,
            "signers": rendered.signers,
            "manifests": [{"source": m.source, "body": m.body} for m in rendered.manifests],
        }
        data = json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()
        digest = hashlib.sha256(data).hexdigest()
        if self._digests.get(app.name) == digest:
            return
        packed = gzip.compress(
            json.dumps({**body, "renderedAt": _now()}, separators=(",", ":"), default=str).encode(),
            mtime=0,
        )
        if len(packed) > self.max_bytes:
            log.warning(
                "last good render not kept: too large",
                app=app.name,
                bytes=len(packed),
                limit=self.max_bytes,
            )
            return
        path = self._path(app.name)
        tmp = self.root / f".{path.name}.{uuid.uuid4().hex}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            async with aiofiles.open(tmp, "wb") as f:
                await f.write(packed)
                await f.flush()
                await _fsync(f.fileno())
            await aiofiles.os.replace(tmp, path)
            self._digests[app.name] = digest
        except OSError as e:
            tmp.unlink(missing_ok=True)
            log.warning("last good render not kept", app=app.name, error=str(e))

    def load(self, app: Application) -> tuple[Rendered | None, str]:
        """The kept render of `app`, or None and why there is none to use."""
        path = self._path(app.name)
        try:
            raw = json.loads(gzip.decompress(path.read_bytes()))
        except FileNotFoundError:
            return None, "no last good render of this app is kept"
        except (OSError, ValueError, EOFError) as e:
            return None, f"the last good render {path} is unreadable: {e}"
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            return None, f"the last good render {path} has an unknown format"
        if raw.get("spec") != _spec_digest(app):
            return None, "the app's spec changed since its last good render"
        manifests = [
            Manifest(ResourceKey.of(m["body"]), m["body"], str(m.get("source", "")))
            for m in raw.get("manifests") or []
            if isinstance(m, dict) and isinstance(m.get("body"), dict)
        ]
        return (
            Rendered(
                manifests,
                [str(r) for r in raw.get("revisions") or []],
                [str(r) for r in raw.get("refShas") or []],
                [str(t) for t in raw.get("tools") or []],
                str(raw.get("renderedAt", "")),
                {str(k): str(v) for k, v in (raw.get("signers") or {}).items()},
            ),
            "",
        )

    def forget(self, app: str) -> None:
        """Drop the kept render of an app that is deleted."""
        self._digests.pop(app, None)
        self._path(app).unlink(missing_ok=True)

    def names(self) -> Sequence[str]:
        """Apps with a kept render (file names)."""
        return sorted(p.name.removesuffix(".json.gz") for p in self.root.glob("*.json.gz"))
