"""The Lease protocol of several replicas on the real API server, with each member's clock in
the test's hands: claims, eviction racing renewal, the write fence, rejoining as a new
incarnation, leader election and a graceful leave."""

from __future__ import annotations

import pytest

from daemon.errors import Fenced, KubeError
from daemon.ha import leases as L
from daemon.ha.membership import Membership
from daemon.kube import KubeClient
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster
D = 15.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def member(cluster: Cluster, namespace: str, name: str, clock: Clock) -> Membership:
    client = await KubeClient.from_kubeconfig(name="c", path=str(cluster.kubeconfig))
    m = Membership(
        client,
        namespace=namespace,
        member_id=name,
        lease_duration=D,
        renew_interval=5,
        clock=clock,
    )
    client.write_gate = m.check
    await m.join()
    return m


async def test_claims_fence_eviction_and_rejoin(cluster: Cluster, namespace: str) -> None:
    """A holds app1; B cannot take it while A renews. A stalls: once B has seen A's Lease
    unchanged for leaseDuration it evicts A and takes app1, and A's own fence shut before that
    (its writes are refused). A's next renewal loses (409): it rejoins as a new incarnation
    that holds nothing and cannot take app1 back from the live B."""
    ca, cb = Clock(), Clock()
    a = await member(cluster, namespace, "a", ca)
    b = await member(cluster, namespace, "b", cb)
    try:
        await a.observe()
        await b.observe()
        assert sorted(a.live) == sorted(b.live) == ["a", "b"]
        assert await a.claim("app1")
        assert not await b.claim("app1"), "A is alive and holds it"

        # A renews in time: B's observation restarts, no eviction.
        ca.t += 10
        cb.t += 10
        await a.renew()
        await b.renew()
        await b.observe()
        cb.t += 10
        await b.renew()
        await b.observe()
        assert "a" in b.live and not await b.claim("app1")

        # A stalls (no renewal): its fence shuts at leaseDuration - margin ...
        ca.t += D - a.margin + 0.1
        assert not a.may_write()
        with pytest.raises(Fenced, match="fenced"):
            a.check("ConfigMap/x/y", "apply")
        # ... before B, which watches A's unchanged Lease for leaseDuration, evicts it.
        cb.t += D
        await b.renew()
        await b.observe()
        assert "a" not in b.live
        lease = await b.client.get(await b._type(), namespace, L.member_lease_name("a"))
        assert L.holder(lease) == "" and lease["metadata"]["annotations"][L.EVICTED_BY]
        assert await b.claim("app1"), "A's incarnation no longer holds its Lease"

        old = a.incarnation
        await a.renew()  # loses the compare-and-swap: evicted
        assert a.incarnation != old and a.may_write() and not a.claims
        assert not await a.claim("app1"), "B is alive and holds it now"
    finally:
        await a.client.aclose()
        await b.client.aclose()


async def test_a_renewal_that_wins_the_race_keeps_the_member(
    cluster: Cluster, namespace: str
) -> None:
    """Eviction is a compare-and-swap on the version the evictor watched: if the member
    renews first, the eviction fails and the member stays."""
    ca, cb = Clock(), Clock()
    a = await member(cluster, namespace, "a", ca)
    b = await member(cluster, namespace, "b", cb)
    try:
        await b.observe()
        cb.t += D + 1  # B would call A stale ...
        await b.renew()
        await a.renew()  # ... but A renews before B acts on its old observation
        items, _ = await b.client.list(
            await b._type(), namespace, label_selector=f"{L.LABEL}=member"
        )
        stale_item = next(i for i in items if i["metadata"]["name"] == L.member_lease_name("a"))
        stale_item["metadata"]["resourceVersion"] = b.members[L.member_lease_name("a")].version
        await b._evict(stale_item, b.members[L.member_lease_name("a")])
        lease = await a.client.get(await a._type(), namespace, L.member_lease_name("a"))
        assert L.holder(lease) == a.incarnation, "the late eviction lost"
    finally:
        await a.client.aclose()
        await b.client.aclose()


async def test_leader_election_and_graceful_leave(cluster: Cluster, namespace: str) -> None:
    """One leader at a time (Kubernetes leader-election fields); on a graceful leave the
    leader releases leadership and claims and deletes its member Lease, so the other takes
    over at once."""
    ca, cb = Clock(), Clock()
    a = await member(cluster, namespace, "a", ca)
    b = await member(cluster, namespace, "b", cb)
    try:
        await a.elect()
        await b.elect()
        assert a.leader and not b.leader
        leader = await a.client.get(await a._type(), namespace, L.LEADER)
        assert leader["spec"]["holderIdentity"] == a.incarnation
        assert leader["spec"]["leaseDurationSeconds"] == 15
        assert await a.claim("app2")
        await a.leave()
        assert await a.client.get(await a._type(), namespace, L.member_lease_name("a")) is None
        await b.elect()
        assert b.leader
        assert await b.claim("app2"), "released on leave"
        with pytest.raises(KubeError):
            a.check("ConfigMap/x/y", "apply")
    finally:
        await a.client.aclose()
        await b.client.aclose()
