"""HTTP-level faults from the API server (through tests/faults/http_proxy.py): throttling and
server errors during a sync, watch streams dropped and expired. The daemon converges with
nothing lost, shows the trouble while it lasts, and keeps healing drift."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for
from tests.faults import proxied_config
from tests.faults.http_proxy import HttpFaultProxy, Mode
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, deployment, get

pytestmark = pytest.mark.cluster


@pytest.fixture
def proxy(cluster: Cluster, tmp_path: Path) -> Iterator[HttpFaultProxy]:
    """An HTTP-aware fault proxy in front of the test API server."""
    p = HttpFaultProxy(cluster.server, tmp_path / "proxy", cluster.ssl_context)
    yield p
    p.close()


def proxied(tmp_path: Path, cluster: Cluster, proxy: HttpFaultProxy, app: dict) -> Path:
    """A config reaching the cluster through the HTTP-aware proxy."""
    return proxied_config(tmp_path, cluster, proxy.port, [app], ca_pem=proxy.ca_pem)


@pytest.mark.parametrize("fault", ["429", "503"])
def test_throttling_or_server_errors_mid_wave(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    proxy: HttpFaultProxy,
    fault: Mode,
) -> None:
    """Every request answered 429 (Retry-After) or 503 for a while during wave 1: the cluster
    is reported unreachable while it lasts, no later wave runs blind, and the sync completes
    once the API server answers again."""
    git_repo.write(
        {
            "a/0.yaml": configmap("first", wave=0),
            "a/1.yaml": deployment("slow", "nginx:1", wave=1, min_ready=4),
            "a/2.yaml": configmap("last", wave=2),
        }
    )
    cfg = proxied(tmp_path, cluster, proxy, application("throttled", git_repo.url, "a", namespace))
    with running(cfg) as d:
        wait_for(
            lambda: get(cluster, namespace, "deployment/slow") is not None,
            timeout=60,
            what="wave 1 applied",
        )
        proxy.mode = fault
        wait_for(lambda: d.api("/readyz").status_code == 503, timeout=30, what="reported")
        assert get(cluster, namespace, "configmap/last") is None
        proxy.mode = "pass"
        wait_for(
            lambda: d.synced("throttled") and get(cluster, namespace, "configmap/last"),
            timeout=120,
            what="converged after the fault",
        )
        assert proxy.hits > 0
        # Readiness comes back with the next probe (clusterProbeInterval), not with the sync.
        wait_for(lambda: d.api("/readyz").status_code == 200, timeout=30, what="ready again")


@pytest.mark.parametrize("fault", ["drop-watch", "gone-watch"])
def test_drift_is_healed_when_watches_drop_or_expire(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    proxy: HttpFaultProxy,
    fault: Mode,
) -> None:
    """With watch streams cut every second, or answered 410 Gone on resume, a change made by
    hand is still healed within seconds (the watch relists and compares), not at the next
    poll a minute later."""
    git_repo.write({"a/cm.yaml": configmap("guarded", data="from-git")})
    cfg = proxied(tmp_path, cluster, proxy, application("healing", git_repo.url, "a", namespace))
    with running(cfg) as d:
        wait_for(lambda: d.synced("healing"), timeout=60, what="synced")
        time.sleep(2)  # the drift watch is up
        proxy.mode = "drop-watch"
        time.sleep(2)  # at least one watch stream was cut
        proxy.mode = fault
        cluster.kubectl(
            "patch", "cm", "guarded", "-n", namespace, "-p", '{"data":{"key":"by-hand"}}'
        )

        def healed() -> bool:
            live = get(cluster, namespace, "configmap/guarded") or {}
            return (live.get("data") or {}).get("key") == "from-git"

        wait_for(healed, timeout=30, what="drift healed despite broken watches")
        assert proxy.hits > 0
