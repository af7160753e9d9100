"""Names derived from app names: bounded, stable for ordinary names, never shared."""

from __future__ import annotations

from daemon.ha.leases import app_lease_name
from daemon.names import FILE_STEM_MAX, OBJECT_NAME_MAX, file_stem, object_name
from daemon.status.kubestate import _name as state_name


def test_ordinary_names_keep_their_derived_names() -> None:
    """A name that fits needs no hash: existing Leases, ConfigMaps and files keep their names."""
    assert app_lease_name("web") == "gitopsd-app.web"
    assert state_name("shop.prod") == "gitopsd-state.shop.prod"
    assert file_stem("tenant-a_web") == "tenant-a_web"


def test_long_names_sharing_a_beginning_stay_apart_and_within_limits() -> None:
    """Two 250-character names that differ only at the end get different, bounded names."""
    a, b = "x" * 249 + "a", "x" * 249 + "b"
    for derive, limit in ((lambda n: object_name("gitopsd-app.", n), OBJECT_NAME_MAX),
                          (file_stem, FILE_STEM_MAX)):  # fmt: skip
        da, db = derive(a), derive(b)
        assert da != db and len(da) <= limit and len(db) <= limit


def test_names_that_differ_only_in_unsafe_characters_stay_apart() -> None:
    """`a_b` and `a-b` (and `A` and `a`) become different object names."""
    assert object_name("p.", "a_b") != object_name("p.", "a-b")
    assert object_name("p.", "Web") != object_name("p.", "web")
    assert object_name("p.", "a-b") == "p.a-b"


def test_a_name_equal_to_anothers_hashed_form_is_a_clash() -> None:
    """An app named exactly like another's truncated-and-hashed derived name is reported as a
    clash (they would share a Lease, state and inventory); ordinary names are not."""
    from daemon.names import STATE_PREFIX, clashes

    victim = "v" * 250
    twin = object_name(STATE_PREFIX, victim).removeprefix(STATE_PREFIX)
    assert len(twin) <= 253 and twin != victim
    pairs = clashes([victim, twin, "web"])
    assert len(pairs) == 1 and set(pairs[0]) == {victim, twin}
    assert clashes(["web", "api", "db"]) == []
