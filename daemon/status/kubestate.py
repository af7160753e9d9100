"""App state in the cluster (`settings.stateStore: kubernetes`): one ConfigMap per app,
`gitopsd-state.<app>`, in the control namespace, so any replica can serve an app's status and a
new owner resumes the operation a dead one left Running, from its recorded wave.

The state is JSON, zlib-compressed, in `binaryData.state`. A ConfigMap holds at most 1 MiB, so a
record is bounded before it is written: the history is trimmed to its last 10 entries, and if it
is still too large the per-resource lists (which the next reconcile rebuilds) are left out; the
operation state, fingerprints and hook places, which a resume needs, are always kept.

Reads come from a cache filled by one LIST at start and kept fresh by a watch (`follow`), so
`load` stays synchronous like the file store's; `refresh` re-reads one app, which a replica does
when it takes an app over. Writes go through `daemon.kube` and so through the replica's write
fence.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from daemon.errors import Fenced, KubeError, KubeNotFound
from daemon.kube import KubeClient
from daemon.model import ResourceType
from daemon.names import STATE_PREFIX, object_name

log = structlog.get_logger("gitopsd.state")
PREFIX = STATE_PREFIX
LABEL = "gitopsd.io/state"
ANNOTATION = "gitopsd.io/app"
MANAGER = "gitopsd-state"
LIMIT = 900 * 1024  # bytes of compressed state, under the 1 MiB object limit with room to spare
HISTORY = 10


def _name(app: str) -> str:
    return object_name(PREFIX, app)


def encode(state: dict[str, Any]) -> str:
    """The record as stored: bounded, JSON, compressed, base64."""
    record = dict(state)
    status = dict(record.get("status") or {})
    if isinstance(status.get("history"), list):
        status["history"] = status["history"][-HISTORY:]
    record["status"] = status
    packed = zlib.compress(json.dumps(record, separators=(",", ":"), default=str).encode(), 6)
    if len(packed) > LIMIT:
        status.pop("resources", None)
        op = dict(status.get("operationState") or {})
        result = dict(op.get("syncResult") or {})
        result.pop("resources", None)
        if op:
            op["syncResult"] = result
            status["operationState"] = op
        status["history"] = status.get("history", [])[-1:]
        record["status"] = status
        packed = zlib.compress(json.dumps(record, separators=(",", ":"), default=str).encode(), 9)
    if len(packed) > LIMIT:
        raise ValueError(f"state of {len(packed)} bytes does not fit a ConfigMap even trimmed")
    return base64.b64encode(packed).decode()


def decode(data: str) -> dict[str, Any]:
    try:
        out = json.loads(zlib.decompress(base64.b64decode(data)))
    except (ValueError, zlib.error):
        return {}
    return out if isinstance(out, dict) else {}


class KubeStateStore:
    """The StateStore interface over ConfigMaps."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._cache: dict[str, dict[str, Any]] = {}
        self._rt: ResourceType | None = None
        self.on_change: Callable[[str, dict[str, Any]], None] = lambda app, state: None

    async def _type(self) -> ResourceType:
        if self._rt is None:
            self._rt = await self.client.resource_for("v1", "ConfigMap", subject="state")
        return self._rt

    def _app_of(self, cm: dict[str, Any]) -> str:
        return str(((cm.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION, ""))

    async def start(self) -> str:
        """Fill the cache with every app's state; the list's resourceVersion."""
        items, version = await self.client.list(
            await self._type(), self.namespace, label_selector=f"{LABEL}=app"
        )
        for cm in items:
            app = self._app_of(cm)
            if app:
                self._cache[app] = decode(str((cm.get("binaryData") or {}).get("state", "")))
        return version

    async def follow(self, version: str) -> None:
        """Keep the cache in step with the other replicas' writes, until cancelled."""
        rt = await self._type()
        while True:
            try:
                async for ev in self.client.watch(
                    rt, self.namespace, resource_version=version, label_selector=f"{LABEL}=app"
                ):
                    if ev.type == "ERROR":
                        break
                    if ev.type == "BOOKMARK":
                        continue
                    app = self._app_of(ev.object)
                    if not app:
                        continue
                    if ev.type == "DELETED":
                        self._cache.pop(app, None)
                        continue
                    state = decode(str((ev.object.get("binaryData") or {}).get("state", "")))
                    self._cache[app] = state
                    self.on_change(app, state)
                version = await self.start()
            except KubeError as e:
                log.info("state watch restarting", error=str(e))
                await anyio.sleep(2)
                try:
                    version = await self.start()
                except KubeError:
                    continue

    def load(self, app: str) -> dict[str, Any]:
        return dict(self._cache.get(app) or {})

    async def refresh(self, app: str) -> dict[str, Any]:
        """Re-read `app`'s state from the cluster (a replica taking it over)."""
        cm = await self.client.get(await self._type(), self.namespace, _name(app))
        state = decode(str(((cm or {}).get("binaryData") or {}).get("state", "")))
        if state:
            self._cache[app] = state
        else:
            self._cache.pop(app, None)
        return dict(state)

    async def save(self, app: str, state: dict[str, Any]) -> None:
        try:
            data = encode(state)
        except ValueError as e:
            raise OSError(f"state of {app}: {e}") from e
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": _name(app),
                "namespace": self.namespace,
                "labels": {LABEL: "app", "app.kubernetes.io/managed-by": "gitopsd"},
                "annotations": {ANNOTATION: app},
            },
            "binaryData": {"state": data},
        }
        rt = await self._type()
        try:
            try:
                await self.client.apply(rt, body, manager=MANAGER)
            except KubeNotFound:
                ns_rt = await self.client.resource_for("v1", "Namespace", subject="state")
                namespace = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.namespace},
                }
                await self.client.apply(ns_rt, namespace, manager=MANAGER)
                await self.client.apply(rt, body, manager=MANAGER)
        except Fenced:
            raise  # not ours to write any more: the caller must not keep this record either
        except KubeError as e:
            raise OSError(
                f"state of {app} not written to ConfigMap/{self.namespace}/{_name(app)}: {e}"
            ) from e
        self._cache[app] = state

    async def delete(self, app: str) -> None:
        await self.client.delete(
            await self._type(), self.namespace, _name(app), propagation="Background"
        )
        self._cache.pop(app, None)

    def names(self) -> list[str]:
        return sorted(self._cache)
