"""The steps of a sync operation: each (phase, wave) prunes, then applies grouped by kind (in
parallel within a group), then waits for health before the next one starts.

A wave is a barrier, as in Argo CD: it must be Healthy before the next wave runs (Degraded fails
the operation, a timeout fails it naming what is still waiting); a shutdown stops at the next
boundary and leaves the operation Terminating so it resumes after restart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from daemon.apply import apply_one, prune_one, run_bounded
from daemon.children import is_child_kind
from daemon.errors import KubeError
from daemon.health.checks import assess
from daemon.health.wait import WaitItem, WaitResult, wait_healthy
from daemon.kube import KubeClient
from daemon.model import (
    ANN_IGNORE_HEALTHCHECK,
    Action,
    HealthStatus,
    ResourceKey,
    ResourceResult,
    ResourceType,
    ResultCode,
    SyncPhase,
    annotations_of,
)
from daemon.plan.options import SyncOptions
from daemon.plan.order import SyncTask, group_steps
from daemon.settings import Application
from daemon.stages import Comparison, Desired
from daemon.sync.children import ChildTasks
from daemon.sync.hooks import CreatedHook, run_hook

Job = Callable[[], Awaitable[ResourceResult]]


@dataclass
class Run:
    """One operation in progress: what it works on, its options and what it has done."""

    app: Application
    client: KubeClient
    desired: Desired
    comparison: Comparison
    opts: SyncOptions
    prune: bool
    children: ChildTasks
    parallelism: int
    health_timeout: float
    wave_delay: float
    stopping: Callable[[], bool]
    report: Callable[[Sequence[ResourceResult], str], None]
    log: Any
    run_stamp: str = field(default_factory=lambda: str(int(time.time())))
    operation_id: str = ""
    hooks: list[CreatedHook] = field(default_factory=list)
    results: list[ResourceResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the waves ended: '' failure means every step succeeded."""

    failure: str = ""
    interrupted: bool = False


def interrupted(where: str) -> Outcome:
    return Outcome(f"interrupted by shutdown {where}; the sync resumes when gitopsd restarts", True)


async def run_waves(run: Run, tasks: Sequence[SyncTask]) -> Outcome:
    """Every step of `tasks` in order, each gated on the health of the previous one."""
    steps = group_steps(tasks)
    for index, step in enumerate(steps):
        if index > 0 and run.stopping():
            return interrupted(f"before {step.phase} wave {step.wave}")
        run.log.info("wave", phase=str(step.phase), wave=step.wave, resources=len(step.tasks))
        run.report(run.results, f"{step.phase} wave {step.wave}")
        step_results = await run_step(run, step.tasks, prune=run.prune)
        run.results.extend(step_results)
        if run.stopping():
            return interrupted(f"after {step.phase} wave {step.wave}")
        bad = [r for r in step_results if r.failed]
        if bad:
            return Outcome(
                "one or more objects failed to apply: "
                + "; ".join(f"{r.key}: {r.message}" for r in bad)
            )
        last = index == len(steps) - 1
        gate = len(steps) > 1 and (not last or any(t.is_hook for t in step.tasks))
        outcome = await _gate(run, step.tasks, step_results, step.phase, step.wave, gate=gate)
        if outcome is not None:
            return outcome
        if not last and run.wave_delay > 0:
            await anyio.sleep(run.wave_delay)
    return Outcome()


async def _gate(
    run: Run,
    tasks: Sequence[SyncTask],
    step_results: Sequence[ResourceResult],
    phase: SyncPhase,
    wave: int,
    *,
    gate: bool,
) -> Outcome | None:
    """Wait for the step's health (and its prunes to be gone); an Outcome ends the waves."""
    waits = wait_items(run.client, run.desired, step_results, gate_resources=gate)
    if waits:
        result = await wait_healthy(
            run.client, waits, timeout=run.health_timeout, should_stop=run.stopping
        )
        if run.stopping() and not result.failed:
            return interrupted(f"in {phase} wave {wave}")
        if not result.ok:
            run.results[:] = mark_failed(run.results, result)
            return Outcome(wait_failure(result, phase, wave))
    pruned = [r for r in step_results if r.status is ResultCode.PRUNED]
    if pruned:
        lingering = await wait_deleted(run, pruned)
        if lingering and not run.stopping():
            return Outcome(
                f"{phase} wave {wave} failed: deletion of "
                + ", ".join(str(k) for k in lingering)
                + " did not complete in time (a finalizer may be holding it)"
            )
    return None


async def run_syncfail(run: Run, tasks: Sequence[SyncTask]) -> None:
    """SyncFail hooks after a failed operation (not gated on anything but themselves)."""
    run.log.info("running SyncFail hooks", count=len(tasks))
    results = await run_step(run, tasks, prune=False)
    run.results.extend(results)
    waits = wait_items(run.client, run.desired, results, gate_resources=False)
    if waits:
        await wait_healthy(run.client, waits, timeout=run.health_timeout)


async def run_step(run: Run, tasks: Sequence[SyncTask], *, prune: bool) -> list[ResourceResult]:
    """One (phase, wave): prunes first, then applies grouped by kind (parallel per group)."""
    results: list[ResourceResult] = []
    prunes: list[Job] = []
    for t in (t for t in tasks if t.is_prune):
        if is_child_kind(t.key):
            prunes.append(run.children.prune_job(t, prune=prune))
        elif (rt := run.client.preferred(t.key.group, t.key.kind)) is not None:
            prunes.append(prune_job(run.client, rt, t, run.opts, prune))
    results.extend(await run_bounded(prunes, limit=run.parallelism))
    applies = [t for t in tasks if not t.is_prune]
    for group in _by_kind(applies):
        group_results = await run_bounded([apply_job(run, t) for t in group], limit=run.parallelism)
        results.extend(group_results)
        if any(r.failed for r in group_results):
            break
        crds = [r for r in group_results if r.key.kind == "CustomResourceDefinition"]
        for r in crds:
            error = await wait_crd(run.client, r.key.name, timeout=run.health_timeout)
            if error:
                failed = replace(r, status=ResultCode.SYNC_FAILED, action=Action.FAILED)
                results[results.index(r)] = replace(failed, message=error)
        if any(r.failed for r in results[len(results) - len(group_results) :]):
            break
    return results


def _by_kind(tasks: Sequence[SyncTask]) -> list[list[SyncTask]]:
    """Consecutive runs of the same kind (tasks are already in sync order)."""
    groups: list[list[SyncTask]] = []
    for t in tasks:
        if groups and groups[-1][0].key.kind == t.key.kind:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def prune_job(
    client: KubeClient, rt: ResourceType, task: SyncTask, opts: SyncOptions, prune: bool
) -> Job:
    async def job() -> ResourceResult:
        return await prune_one(client, rt, task, options=opts, prune_enabled=prune)

    return job


def apply_job(run: Run, task: SyncTask) -> Job:
    if is_child_kind(task.key):
        return run.children.apply_job(run.app, task)

    async def job() -> ResourceResult:
        assert task.target is not None
        api_version = str(task.target.get("apiVersion"))
        rt = run.desired.types.get(task.key) or run.client.known(api_version, task.key.kind)
        if rt is None:
            try:
                rt = await run.client.resource_for(
                    api_version, task.key.kind, subject=str(task.key)
                )
            except KubeError as e:
                return ResourceResult(
                    task.key,
                    "",
                    Action.FAILED,
                    ResultCode.SYNC_FAILED,
                    e.api_message,
                    task.phase,
                    task.wave,
                    task.hook_type,
                )
        if task.is_hook:
            return await run_hook(
                run.client,
                rt,
                task,
                run.opts,
                app=run.app.name,
                revision=run.desired.revision,
                run_stamp=run.run_stamp,
                operation_id=run.operation_id,
                created=run.hooks,
            )
        live = run.comparison.live.get(task.key)
        paired = replace(task, live=live) if task.live is None and live is not None else task
        return await apply_one(run.client, rt, paired, options=run.opts, existed=live is not None)

    return job


def wait_items(
    client: KubeClient,
    desired: Desired,
    results: Sequence[ResourceResult],
    *,
    gate_resources: bool,
) -> list[WaitItem]:
    """What a step waits for: its hooks always, its resources when the wave is a barrier,
    never objects marked ignore-healthcheck or that failed to apply."""
    items: list[WaitItem] = []
    for r in results:
        if r.failed or r.status is not ResultCode.SYNCED:
            continue
        hook = r.hook_type is not None
        if not hook and not gate_resources:
            continue
        if r.live is not None and annotations_of(r.live).get(ANN_IGNORE_HEALTHCHECK) == "true":
            continue
        rt = desired.types.get(r.key) or client.preferred(r.key.group, r.key.kind)
        if rt is not None:
            items.append(WaitItem(r.key, rt, is_hook=hook))
    return items


def mark_failed(results: Sequence[ResourceResult], wait: WaitResult) -> list[ResourceResult]:
    """`results` with every resource the health wait found failed marked SyncFailed."""
    out = []
    for r in results:
        if r.key in wait.failed:
            h = wait.healths.get(r.key)
            r = ResourceResult(
                r.key,
                r.version,
                r.action,
                ResultCode.SYNC_FAILED,
                h.message if h else "failed",
                r.phase,
                r.wave,
                r.hook_type,
                r.live,
            )
        out.append(r)
    return out


def wait_failure(result: WaitResult, phase: SyncPhase, wave: int) -> str:
    """The operation message for a wave whose health wait failed or timed out."""
    parts = []
    for key in result.failed:
        h = result.healths.get(key)
        parts.append(f"{key} is {h.status if h else 'failed'}: {h.message if h else ''}".strip())
    if result.timed_out:
        waiting = ", ".join(
            f"{k} ({result.healths[k].status}: {result.healths[k].message})"
            if k in result.healths
            else str(k)
            for k in result.waiting
        )
        parts.append(f"timed out waiting for health in {phase} wave {wave}: {waiting}")
    return f"{phase} wave {wave} failed: " + "; ".join(parts)


async def wait_deleted(run: Run, pruned: Sequence[ResourceResult]) -> list[ResourceKey]:
    """Wait (bounded; stops on shutdown) until pruned objects are gone; returns those that
    are still there."""
    deadline = time.monotonic() + run.health_timeout
    lingering: list[ResourceKey] = []
    for r in pruned:
        rt = run.client.preferred(r.key.group, r.key.kind)
        if rt is None or is_child_kind(r.key):
            continue
        while await run.client.get(rt, r.key.namespace, r.key.name) is not None:
            if time.monotonic() >= deadline or run.stopping():
                lingering.append(r.key)
                break
            await anyio.sleep(0.5)
    return lingering


async def wait_crd(client: KubeClient, name: str, *, timeout: float) -> str:
    """Wait until a CRD just applied is Established and load its served versions into the
    discovery cache, so its custom resources apply in the same sync (as Argo CD does); an
    error message when it does not become Established in time."""
    rt = await client.resource_for(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        subject=f"CustomResourceDefinition/{name}",
    )
    deadline = time.monotonic() + timeout
    health = None
    while time.monotonic() < deadline:
        crd = await client.get(rt, "", name)
        health = assess(crd) if crd else None
        if crd is not None and health is not None and health.status is HealthStatus.HEALTHY:
            spec = crd.get("spec") or {}
            for version in spec.get("versions") or []:
                if version.get("served", True):
                    await client.discover_group(str(spec.get("group", "")), str(version["name"]))
            return ""
        await anyio.sleep(0.25)
    why = f": {health.message}" if health is not None and health.message else ""
    return f"CustomResourceDefinition/{name} did not become Established in {timeout:g}s{why}"
