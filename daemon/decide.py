"""Stage 4 of a reconcile: whether a sync runs now, and which.

Argo CD's automated-sync rules (sync only OutOfSync apps, never loop on a failed revision, self-heal
only with `selfHeal` and with backoff), the project's sync windows, and resuming an operation a
shutdown interrupted. Pure: the clock and the backoff memory are passed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from daemon.appproject import AppProject
from daemon.appproject.windows import project_sync_windows, sync_allowed
from daemon.model import SyncStatus
from daemon.settings import Application, ClusterConfig
from daemon.stages import Comparison, SyncRequest

HEAL_BACKOFF_BASE = 2.0  # seconds; x3 per attempt (Argo CD's self-heal backoff)
HEAL_BACKOFF_CAP = 300.0


@dataclass
class HealBackoff:
    """Self-heal attempts per app: (revision, attempts, monotonic time of the last one), so a
    controller fighting us over a field is not answered every second."""

    attempts: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    retry_in: dict[str, float] = field(default_factory=dict)  # app -> seconds until allowed

    def allow(self, app: str, revision: str, now: float) -> bool:
        """Record a self-heal attempt at `now` unless the backoff still holds it back."""
        rev, count, last_at = self.attempts.get(app, (revision, 0, 0.0))
        if rev != revision:
            count = 0
        if count > 0:
            remaining = min(HEAL_BACKOFF_CAP, HEAL_BACKOFF_BASE * 3 ** (count - 1)) - (
                now - last_at
            )
            if remaining > 0:
                self.retry_in[app] = remaining
                return False
        self.attempts[app] = (revision, count + 1, now)
        return True

    def reset(self, app: str) -> None:
        self.attempts.pop(app, None)


def auto_sync_request(
    app: Application,
    status: dict[str, Any],
    revision: str,
    comparison: Comparison,
    *,
    backoff: HealBackoff,
    now: float,
) -> SyncRequest | None:
    """Argo CD's autoSync decision for `app` whose desired state is at `revision`."""
    auto = app.sync_policy.automated
    if auto is None or comparison.sync_status is not SyncStatus.OUT_OF_SYNC:
        return None
    needs_apply = any(s is SyncStatus.OUT_OF_SYNC for s in comparison.status.values())
    if not needs_apply and not auto.prune:
        return None  # only prune-requiring differences, and prune is off
    last = status.get("operationState") or {}
    last_rev = (last.get("syncResult") or {}).get("revision")
    if last_rev == revision and last.get("phase") in ("Failed", "Error"):
        return None  # already tried this revision and failed: wait for a new commit
    self_heal = last_rev == revision and last.get("phase") == "Succeeded"
    if self_heal and not auto.self_heal:
        return None
    if self_heal:
        if not backoff.allow(app.name, revision, now):
            return None
    else:
        backoff.reset(app.name)
    return SyncRequest(prune=auto.prune, initiated_by="automated", self_heal=self_heal)


def resume_request(status: dict[str, Any]) -> SyncRequest | None:
    """The operation to resume when the saved state shows one unfinished: Terminating (a
    shutdown stopped it at a wave boundary) or Running (the process died during it). It keeps
    its identity, so hooks it already created are adopted, not run again."""
    op = status.get("operationState") or {}
    if op.get("phase") not in ("Terminating", "Running"):
        return None
    operation = op.get("operation") or {}
    spec = operation.get("sync") or {}
    who = operation.get("initiatedBy") or {}
    return SyncRequest(
        revision=str(spec.get("revision") or (op.get("syncResult") or {}).get("revision") or ""),
        prune=bool(spec.get("prune")),
        initiated_by=str(who.get("username") or "automated"),
        options=tuple(str(o) for o in spec.get("syncOptions") or ()),
        retry_count=int(op.get("retryCount") or 0),
        operation_id=str(operation.get("operationId") or ""),
    )


def window_allows(
    app: Application,
    project: AppProject,
    cluster: ClusterConfig,
    request: SyncRequest,
    *,
    now: dt.datetime,
) -> tuple[bool, str]:
    """Whether the project's sync windows let this sync start at `now` (and why not)."""
    try:
        windows = project_sync_windows(project)
    except ValueError as e:
        return False, f"invalid syncWindows in project {project.name}: {e}"
    if not windows:
        return True, ""
    return sync_allowed(
        windows,
        app=app.name,
        namespace=app.destination.namespace,
        cluster=cluster.name,
        server=cluster.server,
        now=now,
        manual=request.initiated_by != "automated",
    )
