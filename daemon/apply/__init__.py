"""Apply and prune: turn sync tasks into API writes and report what happened as data.

Every function returns `ResourceResult`s (created, configured, unchanged, deleted, skipped,
failed) and never raises for a single resource's failure: the orchestrator decides what a
failure means for the operation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio

from daemon.errors import KubeError
from daemon.kube import KubeClient
from daemon.model import (
    Action,
    Body,
    ResourceKey,
    ResourceResult,
    ResourceType,
    ResultCode,
)
from daemon.plan.options import (
    RemovalPolicy,
    SyncOptions,
    live_sync_options,
    resource_sync_options,
)
from daemon.plan.order import SyncTask

HOOK_FINALIZER = "argocd.argoproj.io/hook-finalizer"


def _version(body: Body | None) -> str:
    if not body:
        return ""
    return str(body.get("apiVersion", "")).rpartition("/")[2]


async def apply_one(
    client: KubeClient,
    rt: ResourceType,
    task: SyncTask,
    *,
    options: SyncOptions,
    existed: bool,
    dry_run: bool = False,
) -> ResourceResult:
    """Apply one desired object (SSA by default; Replace/Force per options)."""
    assert task.target is not None
    body = task.target
    opts = options.merged(resource_sync_options(body))
    key = task.key
    version = _version(body)
    try:
        if opts.force and opts.replace and existed and not dry_run:
            # kubectl replace --force: always delete and recreate.
            await client.delete(rt, key.namespace, key.name, propagation="Foreground")
            await _wait_gone(client, rt, key, timeout=60)
            out = await client.create(rt, body)
        elif opts.force and existed and not dry_run:
            # kubectl apply --force: recreate only when the update itself is refused
            # (an immutable field changed).
            try:
                out = await client.apply(rt, body, validate=opts.validate)
            except KubeError as e:
                if e.status != 422:
                    raise
                await client.delete(rt, key.namespace, key.name, propagation="Foreground")
                await _wait_gone(client, rt, key, timeout=60)
                out = await client.apply(rt, body, validate=opts.validate)
        elif opts.replace and key.kind not in ("CustomResourceDefinition", "Namespace"):
            if existed:
                live = await client.get(rt, key.namespace, key.name)
                replaced = copy.deepcopy(body)
                if live is not None:
                    replaced["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                out = await client.replace(rt, replaced, dry_run=dry_run)
            else:
                out = await client.create(rt, body, dry_run=dry_run)
        elif not opts.validate:
            out = await client.write_unvalidated(rt, body, exists=existed, dry_run=dry_run)
        else:
            out = await client.apply(rt, body, dry_run=dry_run)
    except KubeError as e:
        return ResourceResult(
            key,
            version,
            Action.FAILED,
            ResultCode.SYNC_FAILED,
            e.api_message,
            task.phase,
            task.wave,
            task.hook_type,
        )
    action = Action.CONFIGURED if existed else Action.CREATED
    verb = "configured" if existed else "created"
    before = ((task.live or {}).get("metadata") or {}).get("resourceVersion")
    after = (out.get("metadata") or {}).get("resourceVersion")
    if existed and before and before == after and not dry_run:
        # Server-side apply wrote nothing: the object already was exactly this.
        action, verb = Action.UNCHANGED, "unchanged"
    msg = f"{key.kind.lower()}/{key.name} {verb}"
    if dry_run:
        msg += " (dry run)"
    return ResourceResult(
        key, version, action, ResultCode.SYNCED, msg, task.phase, task.wave, task.hook_type, out
    )


async def _wait_gone(
    client: KubeClient, rt: ResourceType, key: ResourceKey, *, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await client.get(rt, key.namespace, key.name) is None:
            return
        await anyio.sleep(0.5)


async def prune_one(
    client: KubeClient,
    rt: ResourceType,
    task: SyncTask,
    *,
    options: SyncOptions,
    prune_enabled: bool,
    dry_run: bool = False,
) -> ResourceResult:
    """Delete one owned object that git no longer has (honouring Prune=false and friends)."""
    assert task.live is not None
    key = task.key
    version = _version(task.live)
    opts = options.merged(live_sync_options(task.live))

    def outcome(action: Action, code: ResultCode, message: str) -> ResourceResult:
        return ResourceResult(key, version, action, code, message, task.phase, task.wave)

    if not prune_enabled:
        return outcome(Action.SKIPPED, ResultCode.PRUNE_SKIPPED, "ignored (requires pruning)")
    if opts.prune is RemovalPolicy.NEVER:
        return outcome(Action.SKIPPED, ResultCode.PRUNE_SKIPPED, "ignored (no prune)")
    if opts.prune is RemovalPolicy.CONFIRM:
        return outcome(
            Action.SKIPPED,
            ResultCode.PRUNE_SKIPPED,
            "ignored (prune requires confirmation, which gitopsd does not support yet)",
        )
    if dry_run:
        return outcome(Action.DELETED, ResultCode.PRUNED, "pruned (dry run)")
    if (task.live.get("metadata") or {}).get("deletionTimestamp"):
        return outcome(Action.DELETED, ResultCode.PRUNED, "pruned (deletion in progress)")
    try:
        await client.delete(
            rt,
            key.namespace,
            key.name,
            propagation=opts.prune_propagation_policy.api_value,
            uid=str(task.live.get("metadata", {}).get("uid") or ""),
        )
    except KubeError as e:
        return outcome(Action.FAILED, ResultCode.SYNC_FAILED, f"prune failed: {e.api_message}")
    return outcome(Action.DELETED, ResultCode.PRUNED, "pruned")


async def run_bounded(
    jobs: Sequence[Callable[[], Awaitable[ResourceResult]]], *, limit: int
) -> list[ResourceResult]:
    """Run `jobs` with at most `limit` in flight; results in job order."""
    results: list[ResourceResult | None] = [None] * len(jobs)
    limiter = anyio.CapacityLimiter(max(1, limit))

    async def one(i: int) -> None:
        async with limiter:
            results[i] = await jobs[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(jobs)):
            tg.start_soon(one, i)
    return [r for r in results if r is not None]
