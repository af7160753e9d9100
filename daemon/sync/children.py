"""App of apps inside a sync operation: a child Application or AppProject is a task like any
resource, in its wave; applying it registers the child and waits until the child app is Synced and
Healthy (so it gates the next wave), pruning it unregisters it (and cascades when it asks to).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from daemon.children import ANCESTRY, ChildRegistry, clean
from daemon.errors import GitopsdError
from daemon.model import Action, ResourceResult, ResultCode
from daemon.plan.order import SyncTask
from daemon.settings import Application

Job = Callable[[], Awaitable[ResourceResult]]
FAILING_CONDITIONS = ("ComparisonError", "InvalidSpecError")


def child_verdict(status: dict[str, Any]) -> tuple[ResultCode | None, str]:
    """Where a child app stands: (SYNCED, why) when Synced and Healthy, (SYNC_FAILED, why) when
    its sync failed, it is Degraded or its spec is refused; (None, "") while still converging."""
    sync = (status.get("sync") or {}).get("status")
    health = (status.get("health") or {}).get("status")
    op = status.get("operationState") or {}
    conditions = status.get("conditions") or []
    if sync == "Synced" and health == "Healthy":
        return ResultCode.SYNCED, ""
    failed = op.get("phase") in ("Failed", "Error")
    if (
        failed
        or health == "Degraded"
        or any(c.get("type") in FAILING_CONDITIONS for c in conditions)
    ):
        why = (
            op.get("message")
            if failed
            else "; ".join(c.get("message", "") for c in conditions) or f"health {health}"
        )
        return ResultCode.SYNC_FAILED, str(why)
    return None, f"sync {sync}, health {health}"


@dataclass
class ChildTasks:
    """Builds the jobs for child tasks; the reconciler supplies how to reach the rest."""

    registry: ChildRegistry
    reconcile: Callable[[Application], Awaitable[dict[str, Any]]]
    delete_app: Callable[[Application], Awaitable[Any]]
    top_level_projects: Callable[[], set[str]]
    taken_names: Callable[[str], set[str]]  # every app name but the given parent's children
    stopping: Callable[[], bool]
    health_timeout: Callable[[], float]
    health_gate: Callable[[], bool]
    on_added: Callable[[Application], None] | None = None
    on_removed: Callable[[Application], Awaitable[None]] | None = None

    def apply_job(self, parent: Application, task: SyncTask) -> Job:
        """Register the child (project or app); for an app, wait until it converges."""

        async def job() -> ResourceResult:
            assert task.target is not None

            def result(code: ResultCode, message: str, action: Action) -> ResourceResult:
                return ResourceResult(
                    task.key,
                    "v1alpha1",
                    action,
                    code,
                    message,
                    task.phase,
                    task.wave,
                    task.hook_type,
                )

            try:
                if task.key.kind == "AppProject":
                    proj = self.registry.parse_project(
                        parent, task.target, top_level=self.top_level_projects()
                    )
                    self.registry.register_project(parent.name, proj, clean(task.target))
                    message = f"appproject/{task.key.name} registered"
                    return result(ResultCode.SYNCED, message, Action.CONFIGURED)
                if task.key.kind != "Application":
                    message = f"{task.key.kind} inside an app is not supported yet"
                    return result(ResultCode.SYNC_FAILED, message, Action.FAILED)
                child = self.registry.parse_child(
                    parent, task.target, top_level=self.taken_names(parent.name)
                )
            except GitopsdError as e:
                return result(ResultCode.SYNC_FAILED, str(e), Action.FAILED)
            if self.registry.register(parent.name, child, clean(task.target)) and self.on_added:
                self.on_added(child)
            if not self.health_gate():
                # As in Argo CD, an Application has no health check: registering it is the
                # whole task; the child syncs (or fails, with its own conditions) on its own,
                # in its own worker, or right here once when no daemon runs workers.
                if self.on_added is None:
                    token = ANCESTRY.set((*ANCESTRY.get(), parent.name))
                    try:
                        await self.reconcile(child)
                    finally:
                        ANCESTRY.reset(token)
                message = f"application/{child.name} registered"
                return result(ResultCode.SYNCED, message, Action.CONFIGURED)
            code, message = await self._converge(parent, child)
            action = Action.CONFIGURED if code is ResultCode.SYNCED else Action.FAILED
            return result(code, message, action)

        return job

    async def _converge(self, parent: Application, child: Application) -> tuple[ResultCode, str]:
        token = ANCESTRY.set((*ANCESTRY.get(), parent.name))
        try:
            status = await self.reconcile(child)
            deadline = time.monotonic() + self.health_timeout()
            while True:
                code, why = child_verdict(status)
                if code is ResultCode.SYNCED:
                    return code, f"application/{child.name} synced and healthy"
                if code is not None:
                    return code, f"child application {child.name} failed: {why}"
                if time.monotonic() > deadline or self.stopping():
                    return ResultCode.SYNC_FAILED, (
                        f"timed out waiting for child application {child.name} ({why})"
                    )
                await anyio.sleep(1)
                status = await self.reconcile(child)
        finally:
            ANCESTRY.reset(token)

    def prune_job(self, task: SyncTask, *, prune: bool) -> Job:
        """Unregister a child no longer rendered (when pruning is on)."""

        async def job() -> ResourceResult:
            def result(code: ResultCode, message: str, action: Action) -> ResourceResult:
                return ResourceResult(
                    task.key, "v1alpha1", action, code, message, task.phase, task.wave
                )

            if not prune:
                return result(
                    ResultCode.PRUNE_SKIPPED, "ignored (requires pruning)", Action.SKIPPED
                )
            if task.key.kind == "AppProject":
                self.registry.unregister_project(task.key.name)
                return result(ResultCode.PRUNED, "appproject removed", Action.DELETED)
            child = self.registry.unregister(task.key.name)
            if child is None:
                return result(ResultCode.PRUNED, "already removed", Action.DELETED)
            if self.on_removed is not None:
                await self.on_removed(child)
            elif child.cascade_delete:
                await self.delete_app(child)
            note = " and its resources deleted" if child.cascade_delete else ""
            return result(ResultCode.PRUNED, f"child application removed{note}", Action.DELETED)

        return job
