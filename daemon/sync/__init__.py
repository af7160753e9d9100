"""Stage 5 of a reconcile: one sync operation into an `Operation`.

Preflight (nothing is written when any object failed its dry run, a prune would empty the app, or
a shared resource is refused), then the inventory records intent, then phases and waves run
(`waves`), SyncFail hooks after a failure, hooks are cleaned up and the inventory and fingerprints
record what the app owns now. Selection and bookkeeping are pure functions below.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.appproject import AppProject
from daemon.children import is_child_kind
from daemon.compare import app_rules
from daemon.compare.inventory import Inventory
from daemon.errors import GitopsdError
from daemon.kube import FIELD_MANAGER, KubeClient
from daemon.model import (
    Action,
    Body,
    Manifest,
    OperationPhase,
    ResourceKey,
    ResourceResult,
    ResultCode,
    SyncPhase,
    SyncStatus,
)
from daemon.plan import diff as diffing
from daemon.plan import tracking
from daemon.plan.options import SyncOptions, is_hook, parse_sync_options
from daemon.plan.order import SyncTask, build_tasks, split_syncfail
from daemon.plan.project import namespace_violation
from daemon.settings import Application, ClusterConfig, Settings
from daemon.stages import Comparison, Desired, Operation, SyncRequest
from daemon.status import build
from daemon.sync import hooks
from daemon.sync.children import ChildTasks
from daemon.sync.waves import Outcome, Run, run_syncfail, run_waves

log = structlog.get_logger("gitopsd.sync")

Progress = Callable[[str, dict[str, Any]], None]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SyncContext:
    """What an operation needs besides the app's own desired and live state."""

    settings: Settings
    project: AppProject  # judges what the sync writes by itself (CreateNamespace=true)
    cluster: ClusterConfig
    inventory: Inventory
    children: ChildTasks
    stopping: Callable[[], bool]
    progress: Progress | None = None
    # Persists the Running operationState before the first write, so a process killed mid-sync
    # resumes this very operation (and adopts its hooks) after a restart.
    checkpoint: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    system_rules: Sequence[diffing.IgnoreRule] = ()  # argocd-cm ignoreDifferences
    # `app terminate-op`: the operation stops at the next step and ends Failed.
    terminated: Callable[[], bool] = lambda: False


def preflight(
    desired: Desired, comparison: Comparison, opts: SyncOptions, *, prune: bool, allow_empty: bool
) -> str:
    """Why the operation must not write anything at all ('' when it may run)."""
    targets = [m for m in desired.manifests if not is_hook(m.body)]
    if prune and not allow_empty and not targets and comparison.owned_extra:
        return (
            "refusing to prune every resource of the app: the source rendered zero "
            "resources (set syncPolicy.automated.allowEmpty: true to allow)"
        )
    if comparison.errors:
        return "one or more objects failed to apply (dry run): " + "; ".join(
            sorted(comparison.errors.values())
        )
    if opts.fail_on_shared_resource and comparison.shared:
        return "Shared resource found: " + "; ".join(comparison.shared.values())
    return ""


def select_manifests(
    app: Application,
    desired: Desired,
    comparison: Comparison,
    request: SyncRequest,
    opts: SyncOptions,
    system_rules: Sequence[diffing.IgnoreRule] = (),
) -> list[Manifest]:
    """What the operation applies: hooks (not for a self-heal), and resources (only OutOfSync
    ones for automated syncs, self-heals and ApplyOutOfSyncOnly); with RespectIgnoreDifferences
    the ignored fields keep their live values."""
    selective = (
        request.self_heal or opts.apply_out_of_sync_only or request.initiated_by == ("automated")
    )
    chosen = [
        m
        for m in desired.manifests
        if (is_hook(m.body) and not request.self_heal)
        or (
            not is_hook(m.body)
            and (not selective or comparison.status.get(m.key) is not SyncStatus.SYNCED)
        )
    ]
    rules = [*app_rules(app), *system_rules] if opts.respect_ignore_differences else []
    rules += diffing.CONTROLLER_OWNED
    return [
        Manifest(
            m.key,
            diffing.respect_ignored(m.body, comparison.live[m.key], rules=rules, key=m.key),
            m.source,
        )
        if m.key in comparison.live
        and not is_child_kind(m.key)
        and not is_hook(m.body)
        and any(diffing.rule_matches(r, m.key) for r in rules)
        else m
        for m in chosen
    ]


def dry_run_results(tasks: Sequence[SyncTask]) -> list[ResourceResult]:
    """What a dry-run operation reports: every task as it would run."""
    return [
        ResourceResult(
            t.key,
            "",
            Action.DELETED if t.is_prune else Action.CONFIGURED,
            ResultCode.PRUNED if t.is_prune else ResultCode.SYNCED,
            "(dry run)",
            t.phase,
            t.wave,
            t.hook_type,
        )
        for t in tasks
    ]


def owned_after(
    results: Sequence[ResourceResult],
    desired: Desired,
    comparison: Comparison,
    *,
    failed: bool,
) -> set[ResourceKey]:
    """What the app owns once the operation ended: what it synced, what was already synced,
    prunes that were skipped or failed; after a failure, everything it may have touched."""
    targets = {m.key for m in desired.manifests if not is_hook(m.body)}
    owned = {r.key for r in results if r.status is ResultCode.SYNCED and r.hook_type is None}
    owned |= {k for k in targets if comparison.status.get(k) is SyncStatus.SYNCED}
    owned |= {
        r.key
        for r in results
        if r.status is ResultCode.PRUNE_SKIPPED
        or (r.failed and r.action is Action.FAILED and r.key in comparison.owned_extra)
    }
    if failed:
        owned |= targets | set(comparison.owned_extra)
    return owned


def record_fingerprints(
    results: Sequence[ResourceResult], desired: Desired, fingerprints: dict[str, list[str]]
) -> None:
    """Remember, per synced object, what was applied and what our field manager owns, so the
    next compare can recognise it unchanged without a dry run."""
    by_key: Mapping[ResourceKey, Manifest] = {m.key: m for m in desired.manifests}
    for r in results:
        k = tracking.key_to_str(r.key)
        if r.status is ResultCode.PRUNED:
            fingerprints.pop(k, None)
        elif r.status is ResultCode.SYNCED and r.hook_type is None and r.live is not None:
            m = by_key.get(r.key)
            if m is not None:
                fingerprints[k] = [
                    tracking.fingerprint(m.body),
                    tracking.manager_fields(r.live, FIELD_MANAGER),
                    str((r.live.get("metadata") or {}).get("uid")),
                ]
    keep = {tracking.key_to_str(m.key) for m in desired.manifests}
    for k in list(fingerprints):
        if k not in keep:
            fingerprints.pop(k)


async def run_operation(
    ctx: SyncContext,
    app: Application,
    client: KubeClient,
    desired: Desired,
    comparison: Comparison,
    request: SyncRequest,
    fingerprints: dict[str, list[str]],
    bound: Any,
) -> Operation:
    """Run one sync operation: validate everything, then phases and waves with health gates."""
    started = now_iso()
    opts = parse_sync_options([*app.sync_policy.sync_options, *request.options])
    auto = app.sync_policy.automated
    prune = request.prune if request.prune is not None else bool(auto and auto.prune)

    revision = desired.revision

    def done(phase: OperationPhase, message: str, results: list[ResourceResult]) -> Operation:
        return Operation(phase, message, results, started, now_iso(), revision)

    refused = preflight(
        desired, comparison, opts, prune=prune, allow_empty=bool(auto and auto.allow_empty)
    )
    namespace: Body | None = None
    failed: list[ResourceResult] = []
    if not refused:
        namespace, refused, failed = await _checked_namespace(ctx, app, client, desired, opts)
    if refused:
        return done(OperationPhase.FAILED, refused, failed)
    manifests = select_manifests(app, desired, comparison, request, opts, ctx.system_rules)
    tasks = build_tasks(manifests, comparison.owned_extra, prune_last=opts.prune_last)
    main, syncfail = split_syncfail(tasks)
    if request.dry_run:
        return done(
            OperationPhase.SUCCEEDED, "successfully synced (dry run)", dry_run_results(main)
        )

    def state(results: Sequence[ResourceResult], message: str) -> dict[str, Any]:
        running = Operation(OperationPhase.RUNNING, message, list(results), started, "", revision)
        return build.operation_state(running, request, build.compared_source(app))

    def report(results: Sequence[ResourceResult], message: str) -> None:
        if ctx.progress is not None:
            ctx.progress(app.name, state(results, f"running {message}"))

    run = Run(
        app=app,
        client=client,
        desired=desired,
        comparison=comparison,
        opts=opts,
        prune=prune,
        children=ctx.children,
        parallelism=ctx.settings.kube_parallelism,
        health_timeout=ctx.settings.health_timeout,
        wave_delay=ctx.settings.sync_wave_delay,
        stopping=lambda: ctx.stopping() or ctx.terminated(),
        report=report,
        log=bound,
        run_stamp=request.operation_id[:8] or str(int(time.time())),
        operation_id=request.operation_id,
    )
    if ctx.checkpoint is not None:
        await ctx.checkpoint(app.name, state([], "running (started)"))
    await hooks.release_stale(
        client, app.name, hooks.hook_places(desired), keep=request.operation_id
    )
    # Record intent first: if we die mid-sync, the next run still knows what we may own.
    targets = {m.key for m in desired.manifests if not is_hook(m.body)}
    recorded = await ctx.inventory.load(app.name, client)
    await ctx.inventory.save(app.name, client, recorded | targets | set(comparison.owned_extra))
    outcome = await _execute(run, main, syncfail, namespace)
    await hooks.cleanup(client, run.hooks, succeeded=not outcome.failure)
    record_fingerprints(run.results, desired, fingerprints)
    owned = owned_after(run.results, desired, comparison, failed=bool(outcome.failure))
    await ctx.inventory.save(app.name, client, owned)
    if ctx.terminated():
        # Argo CD's terminate-op: the operation ends Failed and is not resumed.
        return done(OperationPhase.FAILED, "Operation terminated", run.results)
    if outcome.interrupted:
        return done(OperationPhase.TERMINATING, outcome.failure, run.results)
    if outcome.failure:
        return done(OperationPhase.FAILED, outcome.failure, run.results)
    return done(OperationPhase.SUCCEEDED, "successfully synced (all tasks run)", run.results)


async def _execute(
    run: Run, main: Sequence[SyncTask], syncfail: Sequence[SyncTask], namespace: Body | None
) -> Outcome:
    """The namespace (CreateNamespace=true), the waves, then SyncFail hooks on failure; errors
    end the operation, not the daemon."""
    try:
        if namespace is not None:
            name = namespace["metadata"]["name"]
            rt = await run.client.resource_for("v1", "Namespace", subject=f"Namespace/{name}")
            await run.client.apply(rt, namespace, manager="gitopsd-namespace")
        outcome = await run_waves(run, main)
        if outcome.failure and syncfail and not outcome.interrupted:
            await run_syncfail(run, syncfail)
        return outcome
    except GitopsdError as e:
        return Outcome(f"sync failed: {e}")
    except Exception as e:  # a bug or a bad object must end the operation, not the daemon
        log.exception("sync crashed", app=run.app.name)
        return Outcome(f"sync failed unexpectedly: {type(e).__name__}: {e}")


async def _checked_namespace(
    ctx: SyncContext, app: Application, client: KubeClient, desired: Desired, opts: SyncOptions
) -> tuple[Body | None, str, list[ResourceResult]]:
    """The Namespace the operation writes itself (None: none), checked by the project like any
    cluster-scoped object of the app before anything is written: else why not, with the
    namespace's failed result."""
    try:
        namespace = await namespace_to_write(app, client, desired, opts)
    except GitopsdError as e:
        return None, f"namespace auto creation failed: {e}", []
    if namespace is None:
        return None, "", []
    v = namespace_violation(ctx.project, ctx.cluster, app.destination.namespace)
    if v is None:
        return namespace, "", []
    key = ResourceKey("", "Namespace", "", app.destination.namespace)
    result = ResourceResult(
        key, "v1", Action.FAILED, ResultCode.SYNC_FAILED, v.message, SyncPhase.PRE_SYNC, 0
    )
    return None, f"CreateNamespace=true: {v.message}", [result]


async def namespace_to_write(
    app: Application, client: KubeClient, desired: Desired, opts: SyncOptions
) -> Body | None:
    """The Namespace CreateNamespace=true writes, as Argo CD's `syncNamespace` decides: the
    destination namespace when it does not exist yet, or when managedNamespaceMetadata manages
    it (its labels and annotations); None when the sync leaves it alone (it exists and is not
    managed, or a Namespace manifest of that name in the app takes precedence)."""
    ns = app.destination.namespace
    if not ns or not opts.create_namespace:
        return None
    key = ResourceKey("", "Namespace", "", ns)
    if any(m.key == key for m in desired.manifests):
        return None
    mnm = app.sync_policy.managed_namespace_metadata
    if mnm is None:
        rt = await client.resource_for("v1", "Namespace", subject=str(key))
        if await client.get(rt, "", ns) is not None:
            return None
    meta: dict[str, Any] = {"name": ns}
    for field_name in ("labels", "annotations"):
        if mnm and mnm.get(field_name):
            meta[field_name] = mnm[field_name]
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
