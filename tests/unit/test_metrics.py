"""Observability without a daemon: Argo CD's cluster-cache metric families from a cluster's
live cache and watch events, the standard process/python collectors, and Argo CD's log fields."""

from __future__ import annotations

from collections import Counter

from daemon.livecache import LiveCache
from daemon.status.metrics import Metrics


class FakeClient:
    """What the collector reads of a cluster client: its live cache and event counts."""

    def __init__(self) -> None:
        self.cache = LiveCache()
        self.events: Counter[tuple[str, str]] = Counter()


def test_cluster_cache_families_and_standard_collectors_are_exported() -> None:
    """Types and objects count readable scopes only; events are counted by group and kind;
    process_* and python_* are in the daemon's own registry."""
    client = FakeClient()
    scope = ("apps", "Deployment", "web")
    client.cache.open(scope, "apps/v1")
    client.cache.open(("", "ConfigMap", "web"), "v1")  # not listed yet: not counted
    client.cache.fill(scope, [{"metadata": {"name": n, "resourceVersion": "1"}} for n in "ab"])
    client.events[("apps", "Deployment")] += 3
    m = Metrics()
    m.cluster_events.sources["https://k8s"] = client
    text = m.render().decode()
    assert 'argocd_cluster_api_resources{server="https://k8s"} 1.0' in text
    assert 'argocd_cluster_api_resource_objects{server="https://k8s"} 2.0' in text
    assert (
        'argocd_cluster_events_total{group="apps",kind="Deployment",server="https://k8s"} 3.0'
        in text
    )
    assert "process_resident_memory_bytes" in text and "python_info" in text


def test_json_log_lines_carry_argo_cd_field_names() -> None:
    """`msg`, `time` and `application` are added beside structlog's own names."""
    from daemon.status.logs import argo_fields

    line = argo_fields(None, "info", {"event": "synced", "timestamp": "T", "app": "web"})
    assert line == {
        "event": "synced",
        "msg": "synced",
        "timestamp": "T",
        "time": "T",
        "app": "web",
        "application": "web",
    }


def test_orphan_candidates_are_untracked_unowned_and_not_ignored() -> None:
    """The cache offers objects without tracking or owners; the project's ignore globs and
    Argo CD's built-in exclusions (default ServiceAccount, kube-root-ca.crt) drop some."""
    from daemon.appproject import OrphanedResources

    cache = LiveCache()
    scope = ("", "ConfigMap", "web")
    cache.open(scope, "v1")
    tracked = {"annotations": {"argocd.argoproj.io/tracking-id": "web:/ConfigMap:web/a"}}
    owned = {"ownerReferences": [{"kind": "Deployment", "name": "x", "uid": "1"}]}
    cache.fill(
        scope,
        [
            {"metadata": {"name": "a", "resourceVersion": "1", **tracked}},
            {"metadata": {"name": "b", "resourceVersion": "1", **owned}},
            {"metadata": {"name": "stray", "resourceVersion": "1"}},
            {"metadata": {"name": "tmp-1", "resourceVersion": "1"}},
            {"metadata": {"name": "kube-root-ca.crt", "resourceVersion": "1"}},
        ],
    )
    found = cache.untracked("web")
    assert found is not None and cache.untracked("other") is None
    rules = OrphanedResources(ignore=(("", "ConfigMap", "tmp-*"),))
    names = [
        b["metadata"]["name"] for g, k, b in found if not rules.ignores(g, k, b["metadata"]["name"])
    ]
    assert names == ["stray"]
