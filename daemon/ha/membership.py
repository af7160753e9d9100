"""This replica's membership, its write fence and its app claims, kept in Leases on the control
cluster (see `daemon.ha.leases` for the objects).

Why two replicas never write for the same app at once:

1. A member writes to any cluster only while its fence is open: less than `leaseDuration -
   margin` (by its own monotonic clock) since it *sent* its last successful renewal. Every
   write through `daemon.kube` checks this (`KubeClient.write_gate`), so a member cut off from
   the API, or stalled, stops writing by itself.
2. Before reconciling an app, a member claims the app's Lease by compare-and-swap (its
   resourceVersion). It may take it only when it is free, already its own, or held by an
   incarnation whose member Lease no longer names it.
3. A member Lease stops naming its incarnation only by eviction: another member saw it
   unchanged for `leaseDuration` by its own clock and replaced it by compare-and-swap on that
   very resourceVersion. A renewal and an eviction race on the same version, so exactly one
   wins. If the eviction wins, the evicted incarnation's last successful renewal is older than
   that version, which the evictor watched unchanged for `leaseDuration`; so the evicted member's
   fence (which closes `margin` earlier) was already shut, and since its renewals now fail
   (409), it never opens again for that incarnation. The member rejoins as a new incarnation
   that holds no claim.
4. A member that is merely no longer assigned an app (membership changed) finishes its current
   reconcile, then releases the claim (compare-and-swap to ""), and only then can the new owner
   claim it.

Clocks on different hosts are never compared; only each observer's monotonic clock, whose rate
must be roughly right (the margin covers drift).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from daemon import kube
from daemon.errors import Fenced, KubeError
from daemon.ha import leases as L
from daemon.ha import shard
from daemon.kube import KubeClient
from daemon.model import ResourceType

log = structlog.get_logger("gitopsd.ha")
Body = dict[str, Any]
LEADERSHIP = ""  # the Epoch "app" of leader-only work (no app is named "")
GC_AFTER = 10  # evicted member Leases are deleted by the leader after this many leaseDurations


class Membership:
    """One replica's view of the members and its part in the coordination."""

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        member_id: str,
        lease_duration: float = 10.0,
        renew_interval: float = 3.0,
        algorithm: str = "rendezvous",
        address: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.member_id = member_id
        self.duration = lease_duration
        self.interval = renew_interval
        self.margin = min(2.0, lease_duration / 5)
        self.algorithm = algorithm
        self.address = address  # this replica's API, e.g. http://10.0.0.7:8080
        self.addresses: dict[str, str] = {}  # member id -> its API address
        self.clock = clock
        self.wall = wall
        self.incarnation = self._new_incarnation()
        self.renewed_at: float | None = None  # when the last successful renewal was sent
        self.version = ""  # our member Lease's resourceVersion
        self.transitions = 0
        self.members: dict[str, L.Seen] = {}  # member Lease name -> observation
        self.live: dict[str, str] = {}  # member id -> incarnation
        self.leader = False
        self._leader_seen: L.Seen | None = None
        self.claims: set[str] = set()
        self.joined = anyio.Event()
        self.on_change: Callable[[], None] = lambda: None  # the live members changed
        self.on_lost: Callable[[], None] = lambda: None  # our incarnation was evicted
        self._rt: ResourceType | None = None

    def _new_incarnation(self) -> str:
        return f"{self.member_id}/{secrets.token_hex(4)}"

    # --- the fence ---------------------------------------------------------------------------

    def may_write(self) -> bool:
        return self._left() > 0

    def _left(self) -> float:
        at = self.renewed_at
        return -1.0 if at is None else at + self.duration - self.margin - self.clock()

    def leader_epoch(self) -> kube.Epoch:
        """What leader-only work (the ApplicationSet output) runs under: this incarnation's
        leadership, checked again at each write."""
        return kube.Epoch(self.incarnation, LEADERSHIP)

    def epoch(self, app: str) -> kube.Epoch:
        """What a reconcile of `app` runs under: this incarnation and its claim on the app."""
        return kube.Epoch(self.incarnation, app)

    def check(self, subject: str, verb: str) -> float:
        """`KubeClient.write_gate`: refuse writes while the fence is shut, and writes of work
        begun under an earlier incarnation or for an app no longer claimed (a replica resumed
        after a stall and rejoined must not finish what it started before); else the seconds
        left before the fence closes, which bound the write."""
        left = self._left()
        if left <= 0:
            raise Fenced(
                subject,
                verb,
                f"fenced: member {self.member_id}'s Lease is not renewed, so another replica "
                "may own this app now; the write is refused",
                status=503,
            )
        bound = kube.write_epoch.get()
        held = self.leader if bound is not None and bound.app == LEADERSHIP else None
        if bound is not None and (
            bound.incarnation != self.incarnation
            or not (held if held is not None else bound.app in self.claims)
        ):
            raise Fenced(
                subject,
                verb,
                f"fenced: this work on app {bound.app} began under incarnation "
                f"{bound.incarnation}, which no longer holds the app (now {self.incarnation}); "
                "the write is refused",
                status=503,
            )
        return left

    # --- the member Lease ----------------------------------------------------------------------

    async def _type(self) -> ResourceType:
        if self._rt is None:
            self._rt = await self.client.resource_for(
                "coordination.k8s.io/v1", "Lease", subject="Lease"
            )
        return self._rt

    def _mine(
        self,
        name: str,
        kind: str,
        *,
        transitions: int = 0,
        acquired: str = "",
        resource_version: str = "",
    ) -> Body:
        """A Lease held by this incarnation, renewed now (a member Lease also carries the
        address of this replica's API, so the others can forward requests to it)."""
        notes = {L.API_ADDRESS: self.address} if kind == "member" and self.address else None
        return L.lease(
            name,
            self.namespace,
            kind,
            self.incarnation,
            self.duration,
            self.wall(),
            transitions=transitions,
            acquired=acquired,
            annotations=notes,
            resource_version=resource_version,
        )

    async def _ensure_namespace(self) -> None:
        rt = await self.client.resource_for("v1", "Namespace", subject="Namespace")
        if await self.client.get(rt, "", self.namespace) is None:
            try:
                body = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.namespace},
                }
                await self.client.create(rt, body, ungated=True)
            except KubeError as e:
                if e.status != 409:
                    raise

    async def join(self) -> None:
        """Hold our member Lease: create it, or take it over once the incarnation that held it
        (a previous run with the same member id) released it or was stale for leaseDuration."""
        rt = await self._type()
        await self._ensure_namespace()
        name = L.member_lease_name(self.member_id)
        seen: L.Seen | None = None
        while True:
            sent = self.clock()
            current = await self.client.get(rt, self.namespace, name)
            try:
                if current is None:
                    created = await self.client.create(rt, self._mine(name, "member"), ungated=True)
                    self._joined(created, sent)
                    return
                holder, version = L.holder(current), L.version(current)
                if seen is None or seen.version != version:
                    seen = L.Seen(version, holder, self.clock())
                if holder == "" or L.stale(seen, self.clock(), self.duration):
                    transitions = int((current.get("spec") or {}).get("leaseTransitions") or 0)
                    body = self._mine(
                        name, "member", transitions=transitions + 1, resource_version=version
                    )
                    self._joined(await self.client.replace(rt, body, ungated=True), sent)
                    return
                log.info(
                    "member Lease held by a previous incarnation; waiting for it to expire",
                    lease=name,
                    holder=holder,
                )
            except KubeError as e:
                if e.status not in (409, 404):
                    log.warning("joining failed; retrying", error=str(e))
            await anyio.sleep(min(self.interval, self.duration / 3))

    def _joined(self, body: Body, sent: float) -> None:
        self.version = L.version(body)
        self.transitions = int((body.get("spec") or {}).get("leaseTransitions") or 0)
        self.renewed_at = sent
        log.info("joined", member=self.member_id, incarnation=self.incarnation)
        if self.live.get(self.member_id) != self.incarnation:
            # A new dict, and the runner told: a rejoin after an eviction must reassign the
            # apps (a silent in-place update left both members thinking the other owned one).
            self.live = {**self.live, self.member_id: self.incarnation}
            self.on_change()
        self.joined.set()

    async def renew(self) -> None:
        """Renew our member Lease (compare-and-swap); evicted: rejoin as a new incarnation."""
        rt = await self._type()
        name = L.member_lease_name(self.member_id)
        sent = self.clock()
        body = self._mine(
            name, "member", transitions=self.transitions, resource_version=self.version
        )
        try:
            # A merge patch, not a PUT: Leases are created on update, so a PUT after the
            # leader collected our evicted Lease would bring this stale incarnation back.
            renewed = await self.client.patch_merge(
                rt, self.namespace, name, body, manager="gitopsd", ungated=True
            )
        except KubeError as e:
            if e.status in (404, 409):
                await self._lost(str(e))
            else:
                log.warning("member Lease renewal failed", error=str(e))
            return
        self.version = L.version(renewed)
        self.renewed_at = sent

    async def _lost(self, why: str) -> None:
        log.error(
            "this replica was evicted (its Lease lapsed); rejoining as a new incarnation",
            member=self.member_id,
            error=why,
        )
        self.renewed_at = None
        self.claims.clear()
        self.leader = False
        self.incarnation = self._new_incarnation()
        self.on_lost()
        await self.join()

    # --- the others ----------------------------------------------------------------------------

    async def observe(self) -> None:
        """List member Leases, evict the stale ones, and note who is alive."""
        rt = await self._type()
        items, _ = await self.client.list(rt, self.namespace, label_selector=f"{L.LABEL}=member")
        now = self.clock()
        self.members = L.observe(self.members, items, now)
        for item in items:
            meta = item.get("metadata") or {}
            address = str((meta.get("annotations") or {}).get(L.API_ADDRESS, ""))
            if L.holder(item) and address:
                self.addresses[L.member_of(L.holder(item))] = address
        own = L.member_lease_name(self.member_id)
        for item in items:
            name = str((item.get("metadata") or {}).get("name", ""))
            seen = self.members[name]
            if name == own or not seen.holder or not L.stale(seen, now, self.duration):
                continue
            await self._evict(item, seen)
        live = L.live_incarnations(self.members, now, self.duration)
        if self.may_write():
            live[self.member_id] = self.incarnation
        else:
            live.pop(self.member_id, None)
        if live != self.live:
            log.info("members changed", members=sorted(live))
            self.live = live
            self.on_change()

    async def _evict(self, item: Body, seen: L.Seen) -> None:
        rt = await self._type()
        meta = item.get("metadata") or {}
        body = L.lease(
            str(meta.get("name")),
            self.namespace,
            "member",
            "",
            self.duration,
            self.wall(),
            transitions=int((item.get("spec") or {}).get("leaseTransitions") or 0),
            annotations={L.EVICTED_BY: self.incarnation},
            resource_version=seen.version,
        )
        try:
            evicted = await self.client.replace(rt, body)
        except KubeError as e:
            if e.status != 409:  # 409: it renewed (or someone else evicted it) meanwhile
                log.warning("eviction failed", holder=seen.holder, error=str(e))
            return
        log.warning("evicted a member whose Lease lapsed", holder=seen.holder)
        self.members[str(meta.get("name"))] = L.Seen(L.version(evicted), "", self.clock())

    async def _alive(self, incarnation: str) -> bool:
        """Whether `incarnation` still holds its member Lease, read now when our last
        observation does not show it (it may have joined since)."""
        if L.holder_alive(incarnation, self.members):
            return True
        rt = await self._type()
        body = await self.client.get(
            rt, self.namespace, L.member_lease_name(L.member_of(incarnation))
        )
        return L.holder(body) == incarnation

    # --- assignment and claims -------------------------------------------------------------------

    def assigned(self, apps: list[shard.AppRef]) -> dict[str, str]:
        """app -> member id, over the live members."""
        return shard.assign(apps, list(self.live), self.algorithm)

    async def claim(self, app: str) -> bool:
        """Hold the app's Lease (compare-and-swap); False when a live member holds it. A claim
        already held costs no request: only an eviction takes it away, and an eviction shuts
        the fence first and then clears the claims (`_lost`)."""
        if not self.may_write():
            return False
        if app in self.claims:
            return True
        rt = await self._type()
        name = L.app_lease_name(app)
        current = await self.client.get(rt, self.namespace, name)
        try:
            if current is None:
                await self.client.create(rt, self._mine(name, "app"))
            else:
                holder = L.holder(current)
                if holder == self.incarnation:
                    self.claims.add(app)
                    return True
                if holder and await self._alive(holder):
                    return False
                transitions = int((current.get("spec") or {}).get("leaseTransitions") or 0)
                body = self._mine(
                    name, "app", transitions=transitions + 1, resource_version=L.version(current)
                )
                await self.client.replace(rt, body)
                if holder:
                    log.info("took over an app from a dead member", app=app, previous=holder)
        except KubeError as e:
            if e.status == 409:
                return False  # another member was faster
            raise
        self.claims.add(app)
        return True

    async def release(self, app: str) -> None:
        """Give the app's Lease up (it must be ours)."""
        self.claims.discard(app)
        rt = await self._type()
        name = L.app_lease_name(app)
        current = await self.client.get(rt, self.namespace, name)
        if L.holder(current) != self.incarnation or current is None:
            return
        transitions = int((current.get("spec") or {}).get("leaseTransitions") or 0)
        body = L.lease(
            name,
            self.namespace,
            "app",
            "",
            self.duration,
            self.wall(),
            transitions=transitions,
            resource_version=L.version(current),
        )
        try:
            await self.client.replace(rt, body, ungated=True)
        except KubeError as e:
            if e.status != 409:
                log.warning("releasing an app failed", app=app, error=str(e))

    # --- the leader ------------------------------------------------------------------------------

    async def elect(self) -> None:
        """Kubernetes leader election on `gitopsd-leader`: acquire when free or when its holder
        is dead, renew while ours, lose it when the compare-and-swap fails."""
        rt = await self._type()
        current = await self.client.get(rt, self.namespace, L.LEADER)
        was = self.leader
        try:
            if current is None:
                await self.client.create(rt, self._mine(L.LEADER, "leader"))
                self.leader = True
            else:
                holder = L.holder(current)
                spec = current.get("spec") or {}
                transitions = int(spec.get("leaseTransitions") or 0)
                if holder == self.incarnation or not (holder and await self._alive(holder)):
                    body = self._mine(
                        L.LEADER,
                        "leader",
                        transitions=transitions + (holder != self.incarnation),
                        acquired=str(spec.get("acquireTime") or "")
                        if holder == self.incarnation
                        else "",
                        resource_version=L.version(current),
                    )
                    await self.client.replace(rt, body)
                    self.leader = True
                else:
                    self.leader = False
        except KubeError as e:
            self.leader = False
            if e.status != 409:
                log.warning("leader election failed", error=str(e))
        if self.leader != was:
            log.info("leadership", leader=self.leader, member=self.member_id)

    async def collect(self) -> None:
        """Leader only: delete member Leases evicted long ago (their incarnations are gone)."""
        rt = await self._type()
        now = self.clock()
        for name, seen in list(self.members.items()):
            if seen.holder or not L.stale(seen, now, self.duration * GC_AFTER):
                continue
            try:
                await self.client.delete(
                    rt,
                    self.namespace,
                    name,
                    propagation="Background",
                    resource_version=seen.version,
                )
            except KubeError as e:
                if e.status != 409:
                    log.warning("deleting an evicted member Lease failed", lease=name, error=str(e))
            self.members.pop(name, None)

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Join, then renew every renewInterval, and (apart, so a slow list never delays a
        renewal) observe and elect, until cancelled. None of it waits for the apps' `qps`."""
        kube.unthrottled.set(True)
        await self.join()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._every, (self.renew,))
            await self._every((self.observe, self.elect, self._collect))

    async def _every(self, steps: tuple[Callable[[], Awaitable[None]], ...]) -> None:
        while True:
            started = self.clock()
            for step in steps:
                try:
                    await step()
                except KubeError as e:
                    log.warning("membership step failed", step=step.__name__, error=str(e))
            await anyio.sleep(max(0.1, self.interval - (self.clock() - started)))

    async def _collect(self) -> None:
        if self.leader:
            await self.collect()

    async def leave(self) -> None:
        """Graceful shutdown: release the claims and the leadership, delete our member Lease
        (so a restart with the same member id joins at once)."""
        for app in list(self.claims):
            try:
                await self.release(app)
            except KubeError as e:
                log.warning("releasing an app failed", app=app, error=str(e))
        rt = await self._type()
        try:
            if self.leader:
                current = await self.client.get(rt, self.namespace, L.LEADER)
                if L.holder(current) == self.incarnation and current is not None:
                    spec = current.get("spec") or {}
                    body = L.lease(
                        L.LEADER,
                        self.namespace,
                        "leader",
                        "",
                        self.duration,
                        self.wall(),
                        transitions=int(spec.get("leaseTransitions") or 0),
                        resource_version=L.version(current),
                    )
                    await self.client.replace(rt, body, ungated=True)
            await self.client.delete(
                rt,
                self.namespace,
                L.member_lease_name(self.member_id),
                propagation="Background",
                resource_version=self.version,
                ungated=True,
            )
        except KubeError as e:
            log.warning("leaving the members failed", error=str(e))
        self.renewed_at = None
        log.info("left", member=self.member_id)
