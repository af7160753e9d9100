"""API server outages during a multi-wave sync: visible while they last (readiness, app
condition, metric, log), and the sync converges afterwards with nothing lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for
from tests.faults import proxied_config
from tests.faults.proxy import FaultProxy, Mode
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, deployment, get

pytestmark = pytest.mark.cluster


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test API server."""
    target = urlparse(cluster.server)
    p = FaultProxy(target.hostname or "127.0.0.1", target.port or 443)
    yield p
    p.close()


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
def test_outage_mid_wave_is_visible_and_the_sync_converges(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    proxy: FaultProxy,
    fault: Mode,
) -> None:
    """With the API server cut or blackholed during wave 1: /readyz turns 503 naming the
    cluster, the app carries an 'unreachable' condition, argocd_cluster_connection_status is 0
    and a warning is logged; when it comes back all of that clears and every wave is applied."""
    git_repo.write(
        {
            "a/0.yaml": configmap("first", wave=0),
            "a/1.yaml": deployment("slow", "nginx:1", wave=1, min_ready=5),
            "a/2.yaml": configmap("last", wave=2),
        }
    )
    app = application("outage", git_repo.url, "a", namespace)
    cfg = proxied_config(tmp_path, cluster, proxy.port, [app])
    with running(cfg) as d:
        wait_for(
            lambda: get(cluster, namespace, "deployment/slow") is not None,
            timeout=60,
            what="wave 1 applied",
        )
        proxy.set(fault)

        def degraded() -> bool:
            r = d.api("/readyz")
            conditions = d.status("outage").get("conditions") or []
            return (
                r.status_code == 503
                and "in-cluster" in r.json().get("unreachableClusters", {})
                and any("unreachable since" in c["message"] for c in conditions)
            )

        wait_for(degraded, timeout=30, what="outage visible in /readyz and the app")
        metrics = d.api("/metrics").text
        assert any(
            line.startswith("argocd_cluster_connection_status{") and line.endswith(" 0.0")
            for line in metrics.splitlines()
        ), metrics
        assert d.api("/healthz").status_code == 200
        assert get(cluster, namespace, "configmap/last") is None  # no later wave ran blind
        proxy.set("pass")
        wait_for(lambda: d.api("/readyz").status_code == 200, timeout=30, what="ready again")
        wait_for(
            lambda: d.synced("outage") and get(cluster, namespace, "configmap/last") is not None,
            timeout=120,
            what="sync converged after the outage",
        )
        st = d.status("outage")
        assert not any("unreachable" in c["message"] for c in st.get("conditions") or [])
        logs = [json.loads(line) for line in d.log.read_text().splitlines() if line.startswith("{")]
        events = [e.get("event") for e in logs]
        assert "cluster unreachable" in events
        assert "cluster reachable again" in events


def test_slow_api_server_still_converges_in_wave_order(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, proxy: FaultProxy
) -> None:
    """With 300 ms added to every chunk the API server sends, the multi-wave sync still
    converges in order, and latency alone is not reported as an outage."""
    git_repo.write(
        {
            "a/0.yaml": configmap("first", wave=0),
            "a/1.yaml": deployment("mid", "nginx:1", wave=1),
            "a/2.yaml": configmap("last", wave=2),
        }
    )
    proxy.latency = 0.3
    proxy.set("latency")
    app = application("slow-api", git_repo.url, "a", namespace)
    cfg = proxied_config(tmp_path, cluster, proxy.port, [app])
    with running(cfg) as d:
        wait_for(lambda: d.synced("slow-api"), timeout=180, what="synced over a slow link")
        assert d.api("/readyz").status_code == 200
        st = d.status("slow-api")
        assert st["operationState"]["phase"] == "Succeeded"
    first, mid, last = (get(cluster, namespace, r) for r in ("cm/first", "deploy/mid", "cm/last"))
    assert first and mid and last
    stamps = [o["metadata"]["creationTimestamp"] for o in (first, mid, last)]
    assert stamps == sorted(stamps)
