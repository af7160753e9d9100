"""`spec.restartAt`: restart every pod of a Rollout created before that time, a few at a time
(pure). It is what `kubectl argo rollouts restart` and Argo CD's `restart` action ask for.

As in Argo Rollouts, pods go oldest first and no more at once than the strategy's
`maxUnavailable` allows (at least one) counting pods already missing, and only once the time has
come; when no pod older than `restartAt` is left, `status.restartedAt` records it, which ends
the restart.

Pods are deleted, not evicted: the ReplicaSet makes new ones. A PodDisruptionBudget is
therefore not consulted; the budget above is the only limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.rollouts import replicas as math_
from daemon.rollouts.spec import HASH_LABEL, Body, RolloutSpec


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    hash: str
    created: dt.datetime
    deleting: bool

    @classmethod
    def of(cls, body: Body) -> Pod:
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            hash=str((meta.get("labels") or {}).get(HASH_LABEL, "")),
            created=_time(meta.get("creationTimestamp")) or dt.datetime.max.replace(tzinfo=dt.UTC),
            deleting=bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True, slots=True)
class Restart:
    """What to do now: pods to delete, whether the restart is complete, when to look again."""

    delete: tuple[str, ...] = ()
    done: bool = False
    again_after: float | None = None


def _time(value: object) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def pending(spec: RolloutSpec, status: Body) -> bool:
    """A restart was asked for and has not finished."""
    return bool(spec.restart_at) and status.get("restartedAt") != spec.restart_at


def budget(spec: RolloutSpec) -> int:
    """How many pods may be missing at once: the canary's maxUnavailable (25% by default), at
    least one; one for blue-green."""
    canary = spec.canary
    if canary is None:
        return 1
    n = math_.int_or_percent(canary.max_unavailable, spec.replicas, round_up=False, default="25%")
    return max(1, n)


def plan_restart(
    spec: RolloutSpec,
    status: Body,
    pods: Sequence[Pod],
    hashes: set[str],
    missing: int,
    now: dt.datetime,
) -> Restart:
    """The next pods to restart. `hashes`: the Rollout's ReplicaSets' pod-template hashes;
    `missing`: pods its sets lack right now (desired minus available)."""
    if not pending(spec, status):
        return Restart()
    at = _time(spec.restart_at)
    if at is None:
        return Restart(done=True)  # unreadable: nothing sensible to restart
    if at > now:
        return Restart(again_after=(at - now).total_seconds())
    old = sorted(
        (p for p in pods if p.hash in hashes and p.created < at and not p.deleting),
        key=lambda p: p.created,
    )
    if not old:
        return Restart(done=True)
    room = budget(spec) - missing - sum(1 for p in pods if p.hash in hashes and p.deleting)
    return Restart(delete=tuple(p.name for p in old[: max(0, room)]), again_after=1.0)
