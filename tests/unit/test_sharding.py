"""Which replica owns which app, and the Lease bookkeeping behind it, as pure functions."""

from __future__ import annotations

import pytest

from daemon.ha import leases as L
from daemon.ha import shard


def apps(n: int, clusters: int = 1) -> list[shard.AppRef]:
    return [shard.AppRef(f"app-{i}", f"c{i % clusters}") for i in range(n)]


def test_rendezvous_spreads_apps_and_moves_only_what_it_must() -> None:
    """Every member gets a fair share; removing a member moves only its apps; adding one moves
    only the apps the newcomer gains (about a quarter with four)."""
    refs = apps(1000)
    three = shard.assign(refs, ["a", "b", "c"])
    counts = {m: list(three.values()).count(m) for m in "abc"}
    assert all(280 < n < 390 for n in counts.values()), counts
    assert shard.assign(refs, ["c", "a", "b"]) == three, "order of members does not matter"
    two = shard.assign(refs, ["a", "b"])
    assert shard.moved(three, two) == {a for a, m in three.items() if m == "c"}
    four = shard.assign(refs, ["a", "b", "c", "d"])
    gained = shard.moved(three, four)
    assert all(four[a] == "d" for a in gained)
    assert 180 < len(gained) < 320, len(gained)


def test_cluster_sharding_as_argo_cd_does_it() -> None:
    """legacy: FNV-32a of the cluster modulo the members; round-robin: clusters in sorted
    order dealt out; either way all apps of a cluster go to one member."""
    assert shard.fnv32a("") == 0x811C9DC5 and shard.fnv32a("a") == 0xE40C292C
    refs = apps(30, clusters=3)
    legacy = shard.assign(refs, ["m1", "m2"], "legacy")
    for c in ("c0", "c1", "c2"):
        owners = {legacy[a.name] for a in refs if a.cluster == c}
        assert owners == {["m1", "m2"][shard.fnv32a(c) % 2]}
    rr = shard.assign(refs, ["m2", "m1"], "round-robin")
    assert {rr[a.name] for a in refs if a.cluster == "c0"} == {"m1"}
    assert {rr[a.name] for a in refs if a.cluster == "c1"} == {"m2"}
    assert {rr[a.name] for a in refs if a.cluster == "c2"} == {"m1"}
    with pytest.raises(ValueError, match="unknown sharding algorithm"):
        shard.assign(refs, ["m1"], "random")


def test_a_pin_wins_while_its_member_lives() -> None:
    """gitopsd.io/shard pins an app to a member; a dead pinned member never orphans it."""
    pinned = [shard.AppRef("x", pin="b"), shard.AppRef("y", pin="gone")]
    got = shard.assign(pinned, ["a", "b", "c"])
    assert got["x"] == "b"
    assert got["y"] == shard.rendezvous("y", ["a", "b", "c"])
    assert shard.assign(pinned, []) == {}


def test_staleness_is_measured_on_the_observers_clock() -> None:
    """A Lease is stale when its version has not changed for leaseDuration since this
    observer first saw it; a renewal (new version) restarts the count; an evicted Lease
    (holder "") is not a live member; a holder is alive while its member Lease names it."""

    def item(name: str, version: str, holder: str) -> dict[str, object]:
        return {
            "metadata": {"name": name, "resourceVersion": version},
            "spec": {"holderIdentity": holder},
        }

    seen = L.observe(
        {}, [item("gitopsd-member-a", "1", "a/1"), item("gitopsd-member-b", "5", "b/9")], 100.0
    )
    assert L.live_incarnations(seen, 110.0, 15) == {"a": "a/1", "b": "b/9"}
    seen = L.observe(
        seen, [item("gitopsd-member-a", "2", "a/1"), item("gitopsd-member-b", "5", "b/9")], 112.0
    )
    assert seen["gitopsd-member-b"].since == 100.0 and seen["gitopsd-member-a"].since == 112.0
    assert L.live_incarnations(seen, 115.0, 15) == {"a": "a/1"}
    assert L.holder_alive("b/9", seen), "stale is not dead until evicted"
    seen = L.observe(
        seen, [item("gitopsd-member-a", "2", "a/1"), item("gitopsd-member-b", "6", "")], 116.0
    )
    assert not L.holder_alive("b/9", seen)
    assert not L.holder_alive("c/1", seen), "no Lease: it left or was collected"
    assert L.may_claim("", "a/1", True) and L.may_claim("a/1", "a/1", True)
    assert not L.may_claim("b/9", "a/1", True) and L.may_claim("b/9", "a/1", False)


def test_lease_names_are_valid_object_names() -> None:
    """Member and app names become DNS-safe Lease names; a name that had to change carries a
    hash of itself, so `Host_1.example` and `host-1.example` never share a Lease."""
    assert L.member_lease_name("host-1.example") == "gitopsd-member-host-1.example"
    changed = L.member_lease_name("Host_1.example")
    assert (
        changed.startswith("gitopsd-member-host-1.example-")
        and changed != "gitopsd-member-host-1.example"
    )
    assert L.app_lease_name("team-a/web").startswith("gitopsd-app.team-a-web-")


def test_state_in_a_configmap_is_bounded_and_round_trips() -> None:
    """The Kubernetes state store keeps the last 10 history entries, and when a record would
    not fit a ConfigMap it drops the per-resource lists but keeps what a resume needs."""
    import random

    from daemon.status import kubestate

    op = {"phase": "Running", "operation": {"operationId": "x"}, "syncResult": {"revision": "r"}}
    state = {
        "status": {"history": [{"id": i} for i in range(30)], "operationState": op},
        "fingerprints": {"a": "b"},
    }
    back = kubestate.decode(kubestate.encode(state))
    assert [h["id"] for h in back["status"]["history"]] == list(range(20, 30))
    assert back["fingerprints"] == {"a": "b"}
    rng = random.Random(1)
    noise = [{"name": f"{rng.getrandbits(256):064x}"} for _ in range(40000)]
    big = {"status": {"resources": noise, "operationState": op}, "hookPlaces": ["h"]}
    back = kubestate.decode(kubestate.encode(big))
    assert "resources" not in back["status"]
    assert back["status"]["operationState"]["phase"] == "Running"
    assert back["hookPlaces"] == ["h"]
    assert kubestate.decode("not base64 zlib") == {}
