"""Stage 3 of a reconcile: live vs desired into a `Comparison`.

Per resource: Synced when the object is exactly as gitopsd last applied it (fingerprint fast path,
no API call), else the server-side dry-run of the desired object is diffed against the live one
(honouring ignoreDifferences). Owned live objects that git no longer has are the prune set. The
decisions are pure functions below; `compare` only gathers their inputs from the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from daemon.children import ChildRegistry, compare_children, is_child_kind
from daemon.compare.inventory import Inventory
from daemon.compare.live import fetch_live
from daemon.errors import KubeError
from daemon.kube import FIELD_MANAGER, KubeClient
from daemon.model import Body, Manifest, ResourceKey, ResourceType, SyncStatus
from daemon.plan import diff as diffing
from daemon.plan import tracking
from daemon.plan.options import (
    SyncOptions,
    is_hook,
    parse_sync_options,
    resource_sync_options,
)
from daemon.plan.tracking import TrackingMethod
from daemon.settings import Application
from daemon.stages import Comparison, Desired

Fingerprints = dict[str, list[str]]


def app_rules(app: Application) -> list[diffing.IgnoreRule]:
    """The app's own `spec.ignoreDifferences`, parsed (errors name the app and the rule)."""
    return diffing.parse_ignore_differences(
        list(app.ignore_differences), where=f"Application/{app.name}.spec.ignoreDifferences"
    )


def fingerprint_current(fp: Sequence[str] | None, desired: Body, live: Body | None) -> bool:
    """True when `live` is exactly what gitopsd applied from `desired` last time: same desired
    body, same fields owned by our field manager, same object (uid)."""
    return (
        live is not None
        and fp is not None
        and fp[0] == tracking.fingerprint(desired)
        and bool(fp[1])
        and fp[1] == tracking.manager_fields(live, FIELD_MANAGER)
        and fp[2] == str(live["metadata"].get("uid"))
    )


def owned_extras(
    live: Mapping[ResourceKey, Body],
    desired_keys: Collection[ResourceKey],
    types: Mapping[ResourceKey, ResourceType],
    instance: str,
    method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> dict[ResourceKey, Body]:
    """Live objects the app owns (its tracking id, not a hook, not owned by another object)
    that git no longer has: what a prune would delete."""
    out: dict[ResourceKey, Body] = {}
    for key, body in live.items():
        if key in desired_keys or (body.get("metadata") or {}).get("ownerReferences"):
            continue
        rt = types.get(key)  # None: found by its tracking id, not recorded anywhere
        namespaced = rt.namespaced if rt is not None else bool(key.namespace)
        owned = tracking.is_owned_by(body, instance, namespaced=namespaced, method=method)
        if owned and not is_hook(body):
            out[key] = body
    return out


def wanted_types(
    targets: Iterable[Manifest],
    desired_types: Mapping[ResourceKey, ResourceType | None],
    recorded: Iterable[ResourceKey],
    preferred: Callable[[str, str], ResourceType | None],
) -> dict[ResourceKey, ResourceType]:
    """Every object whose live state the compare needs, with its API type: the desired ones and
    whatever the app recorded owning (inventory, fingerprints)."""
    wanted: dict[ResourceKey, ResourceType] = {}
    for m in targets:
        rt = desired_types.get(m.key)
        if rt is not None:
            wanted[m.key] = rt
    for key in recorded:
        if key in wanted or is_child_kind(key):
            continue
        rt = preferred(key.group, key.kind)
        if rt is not None:
            wanted[key] = rt
    return wanted


def dry_run_failure_status(
    error: KubeError, *, exists: bool, namespace_pending: bool, force: bool
) -> SyncStatus | None:
    """OutOfSync (not an error) when a dry-run failure is expected before the sync runs: the
    namespace is created by the sync itself, or Force=true will recreate an object whose
    immutable field changed. None when the failure is a real error."""
    if not exists and error.status == 404 and namespace_pending:
        return SyncStatus.OUT_OF_SYNC
    if exists and force and error.status == 422:
        return SyncStatus.OUT_OF_SYNC
    return None


def namespaces_created_by_sync(app: Application, targets: Iterable[Manifest]) -> set[str]:
    """Namespaces that do not need to exist before the sync: the app creates them."""
    created = {m.key.name for m in targets if m.key.kind == "Namespace" and not m.key.group}
    create = parse_sync_options(app.sync_policy.sync_options).create_namespace
    if create and app.destination.namespace:
        created.add(app.destination.namespace)
    return created


async def compare(
    app: Application,
    client: KubeClient,
    desired: Desired,
    fingerprints: Fingerprints,
    *,
    inventory: Inventory,
    children: ChildRegistry,
    child_status: Callable[[str], dict[str, Any] | None],
    parallelism: int,
    system_rules: Sequence[diffing.IgnoreRule] = (),
    tracking_method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> Comparison:
    """Per-resource Synced/OutOfSync for `app`: fingerprint fast path, else dry-run diff."""
    manifests = [m for m in desired.manifests if not is_child_kind(m.key)]
    targets = [m for m in manifests if not is_hook(m.body)]
    recorded = set(await inventory.load(app.name, client))
    recorded |= {k for k in map(tracking.key_from_str, fingerprints) if k is not None}
    wanted = wanted_types(targets, desired.types, recorded, client.preferred)
    live = await fetch_live(client, wanted, owner=app.instance_name, method=tracking_method)
    desired_keys = {m.key for m in targets}
    comparison = Comparison(
        live=live,
        owned_extra=owned_extras(live, desired_keys, wanted, app.instance_name, tracking_method),
        status={},
    )
    compare_children(
        app.name,
        [m for m in desired.manifests if is_child_kind(m.key)],
        children,
        child_status,
        comparison,
    )
    differ = _DryRunDiff(
        app=app,
        client=client,
        comparison=comparison,
        rules=[*app_rules(app), *system_rules],
        pending=namespaces_created_by_sync(app, targets),
        app_options=parse_sync_options(app.sync_policy.sync_options),
        tracking_method=tracking_method,
        limiter=anyio.CapacityLimiter(parallelism),
    )
    differ.pending_absent = await _absent(client, differ.pending, targets, live)
    async with anyio.create_task_group() as tg:
        for m in targets:
            fp = fingerprints.get(tracking.key_to_str(m.key))
            tg.start_soon(differ.one, m, desired.types.get(m.key), fp)
    return comparison


async def _absent(
    client: KubeClient,
    pending: Collection[str],
    targets: Iterable[Manifest],
    live: Mapping[ResourceKey, Body],
) -> frozenset[str]:
    """The namespaces the sync creates that do not exist yet, asked only for namespaces that
    hold objects still missing (one GET each, instead of one failing dry-run per object)."""
    asked = {m.key.namespace for m in targets if m.key.namespace in pending and m.key not in live}
    if not asked:
        return frozenset()
    rt = await client.resource_for("v1", "Namespace", subject="Namespace")
    return frozenset([ns for ns in sorted(asked) if await client.get(rt, "", ns) is None])


@dataclass
class _DryRunDiff:
    """Compares one desired object with its live one, writing into `comparison`."""

    app: Application
    client: KubeClient
    comparison: Comparison
    rules: list[diffing.IgnoreRule]
    pending: set[str]
    app_options: SyncOptions
    limiter: anyio.CapacityLimiter
    tracking_method: TrackingMethod
    pending_absent: frozenset[str] = frozenset()  # pending namespaces that do not exist yet

    async def one(self, m: Manifest, rt: ResourceType | None, fp: list[str] | None) -> None:
        live = self.comparison.live.get(m.key)
        owner = tracking.owner_of(live, self.tracking_method) if live is not None else ""
        if owner and owner != self.app.instance_name:
            self.comparison.shared[m.key] = (
                f"{m.key.kind}/{m.key.name} is part of applications {self.app.name} and {owner}"
            )
        if fingerprint_current(fp, m.body, live):
            self.comparison.status[m.key] = SyncStatus.SYNCED
            return
        self.comparison.status[m.key] = SyncStatus.OUT_OF_SYNC
        if rt is None:
            return  # its CRD is not installed yet
        if live is None and m.key.namespace in self.pending_absent:
            return  # its namespace comes with the sync: a dry-run could only answer 404
        options = self.app_options.merged(resource_sync_options(m.body))
        async with self.limiter:
            try:
                if options.validate:
                    predicted = await self.client.apply(rt, m.body, dry_run=True)
                else:  # as the apply will: unknown fields dropped, not refused
                    predicted = await self.client.write_unvalidated(
                        rt, m.body, exists=live is not None, dry_run=True
                    )
            except KubeError as e:
                force = options.force
                namespace_pending = m.key.namespace in self.pending
                exists = live is not None
                if (
                    dry_run_failure_status(
                        e, exists=exists, namespace_pending=namespace_pending, force=force
                    )
                    is None
                ):
                    self.comparison.errors[m.key] = f"{m.key}: {e.api_message}"
                return
        if live is not None:
            result = diffing.diff(predicted, live, rules=self.rules, key=m.key)
            self.comparison.diffs[m.key] = result
            if not result.modified:
                self.comparison.status[m.key] = SyncStatus.SYNCED
