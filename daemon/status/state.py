"""Per-app state persisted atomically under `stateDir`, surviving restarts.

Each app has one JSON file holding its Argo CD-shaped `status` plus gitopsd's bookkeeping
(fingerprints of what was applied). Writes go to a temporary file, are fsynced and renamed, through
aiofiles so a slow disk's fsync never stalls the event loop; reads happen once per app when its
worker starts (a small file, usually in the page cache) and stay synchronous.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

import aiofiles
import aiofiles.os

from daemon.names import file_stem

_fsync = aiofiles.os.wrap(os.fsync)


class Store(Protocol):
    """Where app state lives: files under stateDir (`StateStore`) or ConfigMaps in the control
    cluster (`daemon.status.kubestate.KubeStateStore`, for several replicas)."""

    def load(self, app: str) -> dict[str, Any]: ...

    async def save(self, app: str, state: dict[str, Any]) -> None: ...

    async def delete(self, app: str) -> None: ...

    def names(self) -> list[str]: ...


class StateStore:
    """Reads and writes app state files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "apps"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, app: str) -> Path:
        return self.root / f"{file_stem(app)}.json"

    def load(self, app: str) -> dict[str, Any]:
        """The saved state of `app` ({} when none or unreadable)."""
        try:
            data = json.loads(self._path(app).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    async def save(self, app: str, state: dict[str, Any]) -> None:
        """Atomically replace the state of `app` (the old file stays whole until the rename)."""
        path = self._path(app)
        data = json.dumps(state, separators=(",", ":"), default=str)
        tmp = self.root / f".{path.name}.{uuid.uuid4().hex}"
        try:
            async with aiofiles.open(tmp, "w") as f:
                await f.write(data)
                await f.flush()
                await _fsync(f.fileno())
            await aiofiles.os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def delete(self, app: str) -> None:
        """Forget `app`."""
        try:
            await aiofiles.os.remove(self._path(app))
        except FileNotFoundError:
            pass

    def names(self) -> list[str]:
        """Apps with saved state."""
        return sorted(p.stem for p in self.root.glob("*.json"))
