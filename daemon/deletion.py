"""Cascade deletion of an app's resources (`resources-finalizer.argocd.argoproj.io`), in reverse
wave order, limited to what the app owns and its project permits, between its PreDelete and
PostDelete hooks.

Ownership records are dropped only when every delete went through; otherwise `SyncFailed` is
raised and the caller retries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from daemon.apply import run_bounded
from daemon.appproject import AppProject
from daemon.compare.inventory import Inventory
from daemon.compare.live import fetch_live
from daemon.errors import SyncFailed
from daemon.health.wait import WaitItem, wait_healthy
from daemon.kube import KubeClient
from daemon.model import (
    ANN_HELM_RESOURCE_POLICY,
    Body,
    HookType,
    ResourceKey,
    ResourceResult,
    ResourceType,
    SyncPhase,
    annotations_of,
)
from daemon.plan import tracking
from daemon.plan.options import (
    RemovalPolicy,
    hook_types,
    live_sync_options,
    parse_sync_options,
    sync_wave,
)
from daemon.plan.order import SyncTask, build_tasks, group_steps
from daemon.plan.project import resource_violation
from daemon.plan.tracking import TrackingMethod
from daemon.settings import Application, ClusterConfig
from daemon.stages import Desired
from daemon.sync.hooks import CreatedHook, cleanup, run_hook
from daemon.sync.waves import prune_job

BACKGROUND_FINALIZER = "resources-finalizer.argocd.argoproj.io/background"


def deletable(
    live: Mapping[ResourceKey, Body],
    types: Mapping[ResourceKey, ResourceType],
    app: Application,
    project: AppProject,
    cluster: ClusterConfig,
    method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> dict[ResourceKey, Body]:
    """The live objects a cascade delete may remove: tracked as the app's, not owned by another
    object, not kept by Helm's resource policy, not CRDs, and permitted by the project (Argo
    CD's getPermittedAppLiveObjects)."""

    def namespaced(k: ResourceKey) -> bool:
        rt = types.get(k)  # None: found by its tracking id alone
        return rt.namespaced if rt is not None else bool(k.namespace)

    return {
        k: b
        for k, b in live.items()
        if tracking.is_owned_by(b, app.instance_name, namespaced=namespaced(k), method=method)
        and not (b.get("metadata") or {}).get("ownerReferences")
        and annotations_of(b).get(ANN_HELM_RESOURCE_POLICY) != "keep"
        and k.kind != "CustomResourceDefinition"
        and resource_violation(project, cluster, k, namespaced=namespaced(k)) is None
    }


async def delete_resources(
    app: Application,
    project: AppProject,
    cluster: ClusterConfig,
    client: KubeClient,
    *,
    inventory: Inventory,
    fingerprints: Mapping[str, object],
    parallelism: int,
    tracking_method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> list[ResourceResult]:
    """Delete what `app` owns, wave by wave in reverse; forget its inventory when all went."""
    await client.discover()
    candidates = set(await inventory.load(app.name, client))
    candidates |= {k for k in map(tracking.key_from_str, fingerprints) if k is not None}
    types = {
        key: rt for key in candidates if (rt := client.preferred(key.group, key.kind)) is not None
    }
    live = await fetch_live(client, types, owner=app.instance_name, method=tracking_method)
    owned = deletable(live, types, app, project, cluster, tracking_method)
    for key in owned:
        if key not in types and (rt := client.preferred(key.group, key.kind)) is not None:
            types[key] = rt
    opts = parse_sync_options([*app.sync_policy.sync_options, "Prune=true"])
    if BACKGROUND_FINALIZER in app.finalizers:
        opts = opts.merged(parse_sync_options(["PrunePropagationPolicy=background"]))
    results: list[ResourceResult] = []
    for step in group_steps(build_tasks([], owned, prune_last=False)):
        jobs = [
            prune_job(client, types[t.key], t, opts, True)
            for t in step.tasks
            if t.live is not None
            and t.key in types
            and live_sync_options(t.live).delete is not RemovalPolicy.NEVER
        ]
        results.extend(await run_bounded(jobs, limit=parallelism))
    failed = [r for r in results if r.failed]
    if failed:
        raise SyncFailed(
            f"Application/{app.name}: deleting its resources failed: "
            + "; ".join(f"{r.key}: {r.message}" for r in failed)
        )
    await inventory.delete(app.name, client)
    return results


def delete_hooks(desired: Desired, hook_type: HookType) -> list[SyncTask]:
    """The PreDelete or PostDelete hooks of an app, as tasks in wave order."""
    tasks = [
        SyncTask(m.key, SyncPhase.SYNC, sync_wave(m.body), m.body, None, True, hook_type)
        for m in desired.manifests
        if hook_type in hook_types(m.body)
    ]
    return sorted(tasks, key=lambda t: (t.wave, t.key.kind, t.key.name))


async def run_delete_hooks(
    client: KubeClient,
    app: Application,
    desired: Desired,
    hook_type: HookType,
    *,
    timeout: float,
) -> list[ResourceResult]:
    """Run one kind of deletion hook (Argo CD 2.10+: PreDelete before the resources go, and
    deletion blocked while one fails; PostDelete after) and wait for them to complete. Named
    after the app and revision, so a retried deletion adopts the hooks already created.
    Raises SyncFailed naming the hook that failed."""
    tasks = delete_hooks(desired, hook_type)
    if not tasks:
        return []
    operation = (
        "delete-" + hashlib.sha256(f"{app.name}\0{desired.revision}".encode()).hexdigest()[:8]
    )
    created: list[CreatedHook] = []
    results = []
    for task in tasks:
        rt = desired.types.get(task.key)
        if rt is None:
            raise SyncFailed(
                f"Application/{app.name}: {hook_type} hook {task.key} has no known kind"
            )
        results.append(
            await run_hook(
                client,
                rt,
                task,
                parse_sync_options([]),
                app=app.name,
                revision=desired.revision,
                run_stamp=operation[7:],
                operation_id=operation,
                created=created,
            )
        )
    failed = [r for r in results if r.failed]
    if not failed:
        waits = [WaitItem(h.key, h.type, is_hook=True) for h in created]
        outcome = await wait_healthy(client, waits, timeout=timeout)
        if not outcome.ok:
            failed = [r for r in results if r.key in outcome.failed or r.key in outcome.waiting]
    await cleanup(client, created, succeeded=not failed)
    if failed:
        blocked = "; deletion is blocked until it does" if hook_type is HookType.PRE_DELETE else ""
        raise SyncFailed(
            f"Application/{app.name}: {hook_type} hook "
            + ", ".join(str(r.key) for r in failed)
            + f" did not succeed{blocked}"
        )
    return results
