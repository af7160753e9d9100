"""The drift watches' object cache that compares read instead of LISTing: scope readiness,
candidates by tracking id, and read-your-writes against gitopsd's own writes."""

from __future__ import annotations

from typing import Any

from daemon.livecache import LiveCache

SCOPE = ("", "ConfigMap", "ns1")


def cm(name: str, rv: int, app: str = "", finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns1", "resourceVersion": str(rv)}
    if app:
        meta["annotations"] = {"argocd.argoproj.io/tracking-id": f"{app}:/ConfigMap:ns1/{name}"}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": str(rv)}}


def filled(*items: dict[str, Any]) -> LiveCache:
    cache = LiveCache()
    cache.open(SCOPE, "v1")
    cache.fill(SCOPE, list(items))
    return cache


def read(cache: LiveCache, *names: str, app: str = "") -> Any:
    return cache.read("", "ConfigMap", "v1", "ns1", set(names), app)


def test_a_scope_is_readable_only_while_its_watch_is_established() -> None:
    """Before the LIST, after the watch broke, at another version or after close: None, so the
    caller LISTs; once filled, the named objects come back as independent copies."""
    cache = LiveCache()
    handle = cache.open(SCOPE, "v1")
    assert read(cache, "a") is None, "opened but not listed yet"
    cache.fill(SCOPE, [cm("a", 5)])
    got = read(cache, "a", "missing")
    assert got.objects["a"]["data"] == {"v": "5"} and got.stale == frozenset()
    got.objects["a"]["data"]["v"] = "changed by the caller"
    assert read(cache, "a").objects["a"]["data"] == {"v": "5"}, "a reader gets its own copy"
    assert cache.read("", "ConfigMap", "v2", "ns1", {"a"}, "") is None, "other version"
    cache.lost(SCOPE)
    assert read(cache, "a") is None, "a broken watch may have missed events"
    cache.fill(SCOPE, [cm("a", 6)])
    assert read(cache, "a").objects["a"]["data"] == {"v": "6"}
    cache.close(SCOPE, object())
    assert read(cache, "a") is not None, "a late close of an older watch changes nothing"
    cache.close(SCOPE, handle)
    assert read(cache, "a") is None


def test_events_keep_the_scope_current_and_candidates_follow_tracking_ids() -> None:
    """Added, modified and deleted events change what is read; objects whose tracking id or
    instance label names the app come back even when not asked for by name."""
    cache = filled(cm("a", 1, app="shop"), cm("b", 2, app="other"))
    cache.event(SCOPE, cm("c", 3, app="shop"), deleted=False)
    labelled = cm("d", 4)
    labelled["metadata"]["labels"] = {"app.kubernetes.io/instance": "shop"}
    cache.event(SCOPE, labelled, deleted=False)
    assert set(read(cache, app="shop").objects) == {"a", "c", "d"}
    cache.event(SCOPE, cm("a", 5, app="other"), deleted=False)  # tracking id moved
    cache.event(SCOPE, cm("c", 6), deleted=True)
    assert set(read(cache, app="shop").objects) == {"d"}
    assert set(read(cache, app="other").objects) == {"a", "b"}


def test_gitopsd_reads_its_own_writes() -> None:
    """An object gitopsd created, updated or deleted is stale until the watch shows that
    version (or a newer one); writes into scopes nobody watches are not recorded."""
    cache = filled(cm("a", 10), cm("gone", 11))
    cache.wrote("", "ConfigMap", "ns1", "new", cm("new", 20))
    cache.wrote("", "ConfigMap", "ns1", "a", cm("a", 21))
    cache.wrote("", "ConfigMap", "ns1", "gone", cm("gone", 22), delete=True)
    got = read(cache, "a", "new", "gone")
    assert got.stale == {"a", "new", "gone"} and got.objects == {}
    cache.event(SCOPE, cm("new", 20), deleted=False)
    cache.event(SCOPE, cm("a", 25), deleted=False)  # someone else's later change: newer
    cache.event(SCOPE, cm("gone", 22), deleted=True)
    got = read(cache, "a", "new", "gone")
    assert got.stale == frozenset() and set(got.objects) == {"a", "new"}
    assert got.objects["a"]["data"] == {"v": "25"}
    cache.wrote("", "Secret", "ns1", "s", {"metadata": {"resourceVersion": "30"}})
    assert cache.hits == 2 and cache.misses == 3


def test_a_delete_held_by_finalizers_is_a_write_of_a_live_object() -> None:
    """A foreground delete answers with the object still there (finalizers): the cached
    object is current once it shows that version; an older one is stale."""
    cache = filled(cm("a", 10))
    held = cm("a", 12, finalizers=["foregroundDeletion"])
    cache.wrote("", "ConfigMap", "ns1", "a", held, delete=True)
    assert read(cache, "a").stale == {"a"}
    cache.event(SCOPE, held, deleted=False)
    assert read(cache, "a").stale == frozenset()
    cache.wrote("", "ConfigMap", "ns1", "a", None, delete=True)  # already gone: 404
    assert read(cache, "a").stale == {"a"}, "still cached after a delete: ask the server"
    cache.event(SCOPE, cm("a", 13), deleted=False)  # created again by someone else
    assert read(cache, "a").objects["a"]["data"] == {"v": "13"}


def test_the_echo_of_gitopsds_own_write_is_recognised() -> None:
    """The event carrying the version gitopsd's write produced (or the removal it asked for)
    is an echo; anyone else's change, or a later version, is not."""
    cache = filled(cm("a", 10), cm("b", 11))
    cache.wrote("", "ConfigMap", "ns1", "a", cm("a", 20))
    assert not cache.event(SCOPE, cm("a", 15), deleted=False), "an older version in flight"
    assert cache.event(SCOPE, cm("a", 20), deleted=False), "our write coming back"
    assert not cache.event(SCOPE, cm("a", 21), deleted=False), "someone else's edit after it"
    assert not cache.event(SCOPE, cm("b", 11), deleted=True), "deleted by someone else"
    cache.event(SCOPE, cm("b", 30), deleted=False)
    cache.wrote("", "ConfigMap", "ns1", "b", cm("b", 31), delete=True)
    assert cache.event(SCOPE, cm("b", 31), deleted=True), "the prune we asked for"
