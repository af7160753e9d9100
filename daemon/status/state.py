"""Per-app state persisted atomically under `stateDir`, surviving restarts.

Each app has one JSON file holding its Argo CD-shaped `status` plus gitopsd's bookkeeping
(fingerprints of what was applied). Writes go to a temporary file, are fsynced and renamed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class StateStore:
    """Reads and writes app state files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "apps"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, app: str) -> Path:
        return self.root / f"{_SAFE.sub('_', app)}.json"

    def load(self, app: str) -> dict[str, Any]:
        """The saved state of `app` ({} when none or unreadable)."""
        try:
            data = json.loads(self._path(app).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, app: str, state: dict[str, Any]) -> None:
        """Atomically replace the state of `app`."""
        path = self._path(app)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f, separators=(",", ":"), default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, app: str) -> None:
        """Forget `app`."""
        self._path(app).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Apps with saved state."""
        return sorted(p.stem for p in self.root.glob("*.json"))
