"""What each app owns, recorded in its destination cluster (ConfigMap `gitopsd-inventory.<app>`
in `inventoryNamespace`), so losing the daemon's disk never loses ownership.

As in Flux's inventory: the set of object ids from the last sync; objects whose delete failed stay
in it so the next run retries them.
"""

from __future__ import annotations

import structlog

from daemon.errors import KubeError, KubeNotFound
from daemon.kube import KubeClient
from daemon.model import ResourceKey
from daemon.names import INVENTORY_PREFIX, object_name
from daemon.plan import tracking

log = structlog.get_logger("gitopsd.inventory")

MANAGER = "gitopsd-inventory"


class Inventory:
    """Reads and writes app inventories; caches what it last read or wrote per (cluster, app)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._cache: dict[tuple[str, str], set[ResourceKey]] = {}

    async def load(self, app: str, client: KubeClient) -> set[ResourceKey]:
        """What `app` owned after its last sync. An unreadable inventory raises: acting on an
        empty one would forget owned objects. Only Forbidden degrades to local state."""
        cached = self._cache.get((client.name, app))
        if cached is not None:
            return set(cached)
        rt = await client.resource_for("v1", "ConfigMap", subject="inventory")
        try:
            cm = await client.get(rt, self.namespace, object_name(INVENTORY_PREFIX, app))
        except KubeError as e:
            if e.status != 403:
                raise
            log.warning(
                "inventory not readable (forbidden); using local state only",
                app=app,
                error=str(e),
            )
            return set()
        if not cm:
            return set()
        entries = str((cm.get("data") or {}).get("entries", ""))
        keys = {k for k in (tracking.key_from_str(e) for e in entries.splitlines()) if k}
        self._cache[(client.name, app)] = set(keys)
        return keys

    async def save(self, app: str, client: KubeClient, keys: set[ResourceKey]) -> None:
        """Record `keys` as what `app` owns (a write only when it differs from the last one)."""
        if self._cache.get((client.name, app)) == keys:
            return
        ns_rt = await client.resource_for("v1", "Namespace", subject="inventory")
        cm_rt = await client.resource_for("v1", "ConfigMap", subject="inventory")
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": object_name(INVENTORY_PREFIX, app),
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "gitopsd"},
            },
            "data": {"entries": "\n".join(sorted(tracking.key_to_str(k) for k in keys))},
        }
        try:
            try:
                await client.apply(cm_rt, body, manager=MANAGER)
            except KubeNotFound:
                namespace = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.namespace},
                }
                await client.apply(ns_rt, namespace, manager=MANAGER)
                await client.apply(cm_rt, body, manager=MANAGER)
            self._cache[(client.name, app)] = set(keys)
        except KubeError as e:
            log.warning("inventory not saved", app=app, error=str(e))

    async def delete(self, app: str, client: KubeClient) -> None:
        """Forget `app` (after its resources were deleted)."""
        cm_rt = await client.resource_for("v1", "ConfigMap", subject="inventory")
        await client.delete(cm_rt, self.namespace, object_name(INVENTORY_PREFIX, app))
        self._cache.pop((client.name, app), None)
