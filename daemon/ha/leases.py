"""Lease bodies and the decisions made on them (pure).

Every replica (member) has an identity `<member id>/<nonce>`, new at each start (an
*incarnation*). Three kinds of `coordination.k8s.io/v1` Lease carry the coordination:

- `gitopsd-member-<member id>`: the member's own, renewed every `renewInterval` by a
  compare-and-swap on its resourceVersion; `holderIdentity` is the incarnation, "" once evicted.
- `gitopsd-app.<app>`: who may write for the app; `holderIdentity` is the owning incarnation,
  "" when released.
- `gitopsd-leader`: the leader, with Kubernetes leader-election fields.

Staleness is judged by the observer's own clock: a Lease is stale when its resourceVersion has
not changed for `leaseDuration` since the observer first saw that version. No clocks are
compared between hosts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from daemon.names import APP_LEASE_PREFIX, object_name

Body = dict[str, Any]
LABEL = "gitopsd.io/lease"  # member | app | leader
MEMBER_PREFIX = "gitopsd-member-"
APP_PREFIX = APP_LEASE_PREFIX
LEADER = "gitopsd-leader"
EVICTED_BY = "gitopsd.io/evicted-by"
API_ADDRESS = "gitopsd.io/api-address"


def micro_time(t: dt.datetime) -> str:
    """Kubernetes MicroTime."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def member_of(incarnation: str) -> str:
    """The member id of an incarnation `<id>/<nonce>`."""
    return incarnation.split("/", 1)[0]


def member_lease_name(member: str) -> str:
    return object_name(MEMBER_PREFIX, member)


def app_lease_name(app: str) -> str:
    return object_name(APP_PREFIX, app)


def lease(
    name: str,
    namespace: str,
    kind: str,
    holder: str,
    duration: float,
    now: dt.datetime,
    *,
    transitions: int = 0,
    acquired: str = "",
    annotations: dict[str, str] | None = None,
    resource_version: str = "",
) -> Body:
    """A Lease body (with resourceVersion, a replace is a compare-and-swap)."""
    meta: Body = {
        "name": name,
        "namespace": namespace,
        "labels": {LABEL: kind, "app.kubernetes.io/managed-by": "gitopsd"},
    }
    if annotations:
        meta["annotations"] = annotations
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(duration)),
            "acquireTime": acquired or micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        },
    }


def holder(body: Body | None) -> str:
    return str(((body or {}).get("spec") or {}).get("holderIdentity") or "")


def version(body: Body | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


@dataclass
class Seen:
    """A Lease as one observer saw it: its version and when (observer's monotonic clock) that
    version was first seen."""

    version: str
    holder: str
    since: float


def observe(seen: dict[str, Seen], items: list[Body], now: float) -> dict[str, Seen]:
    """The observations after a LIST at monotonic time `now` (a version seen before keeps its
    first-seen time; a new one starts now)."""
    out: dict[str, Seen] = {}
    for item in items:
        name = str((item.get("metadata") or {}).get("name", ""))
        v, h = version(item), holder(item)
        before = seen.get(name)
        out[name] = before if before is not None and before.version == v else Seen(v, h, now)
    return out


def stale(s: Seen, now: float, duration: float) -> bool:
    """Unchanged for `duration` by the observer's clock."""
    return now - s.since >= duration


def live_incarnations(seen: dict[str, Seen], now: float, duration: float) -> dict[str, str]:
    """member id -> incarnation, for member Leases held and not stale."""
    out = {}
    for s in seen.values():
        if s.holder and not stale(s, now, duration):
            out[member_of(s.holder)] = s.holder
    return out


def holder_alive(incarnation: str, members: dict[str, Seen]) -> bool:
    """Whether the incarnation holding something may still write: its member Lease still names
    it. Stale but not yet evicted counts as alive: it may be renewing right now, so only the
    eviction (a compare-and-swap its renewal would lose) makes it dead."""
    lease_ = members.get(member_lease_name(member_of(incarnation)))
    return lease_ is not None and lease_.holder == incarnation


def may_claim(current: str, me: str, alive: bool) -> bool:
    """Whether incarnation `me` may take (or keep) something held by `current`."""
    return current in ("", me) or not alive
