"""Many clusters: one client per cluster; an unreachable cluster never stalls the others."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from daemon import settings
from daemon.engine import Engine
from tests.conftest import Cluster, GitRepo, TcpProxy, application
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster


def two_cluster_config(
    tmp_path: Path, east: Cluster, west_kubeconfig: Path, apps: list[dict]
) -> Path:
    (tmp_path / "apps").mkdir(exist_ok=True)
    for app in apps:
        (tmp_path / "apps" / f"{app['metadata']['name']}.yaml").write_text(yaml.safe_dump(app))
    cfg = {
        "applications": ["apps/*.yaml"],
        "clusters": [
            {
                "name": "east",
                "server": "https://east.example.invalid",
                "kubeconfig": str(east.kubeconfig),
                "labels": {"environment": "production", "region": "east"},
            },
            {
                "name": "west",
                "server": "https://west.example.invalid",
                "kubeconfig": str(west_kubeconfig),
                "labels": {"environment": "production", "region": "west"},
            },
        ],
        "settings": {
            "syncWaveDelay": "0s",
            "healthTimeout": "60s",
            "cacheDir": str(tmp_path / "cache"),
            "stateDir": str(tmp_path / "state"),
            "inventoryNamespace": "gitopsd-test-inventory",
        },
    }
    path = tmp_path / "gitopsd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def proxied_kubeconfig(cluster: Cluster, proxy: TcpProxy, dest: Path) -> Path:
    data = yaml.safe_load(cluster.kubeconfig.read_text())
    data["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    dest.write_text(yaml.safe_dump(data))
    return dest


def to_cluster(app: dict, name: str) -> dict:
    app["spec"]["destination"] = {
        "name": name,
        "namespace": app["spec"]["destination"]["namespace"],
    }
    return app


async def test_unreachable_cluster_does_not_stall_others_and_recovers(
    cluster: Cluster, cluster2: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With west cut off, east keeps syncing; west's app is Unknown with a condition, then
    recovers by itself when west returns."""
    ns = f"mc-{int(time.time()) % 100000}"
    target = urlparse(cluster2.server)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 443)
    proxy.start()
    try:
        west_kc = proxied_kubeconfig(cluster2, proxy, tmp_path / "west.kubeconfig")
        git_repo.write({"a/cm.yaml": configmap("shared", data="v1")})
        apps = [
            to_cluster(
                application("on-east", git_repo.url, "a", ns, options=["CreateNamespace=true"]),
                "east",
            ),
            to_cluster(
                application("on-west", git_repo.url, "a", ns, options=["CreateNamespace=true"]),
                "west",
            ),
        ]
        cfg = settings.load(two_cluster_config(tmp_path, cluster, west_kc, apps))
        async with Engine.open(cfg) as engine:
            r = engine.reconciler
            east, west = cfg.app("on-east"), cfg.app("on-west")
            assert (await r.reconcile(east))["operationState"]["phase"] == "Succeeded"
            assert (await r.reconcile(west))["operationState"]["phase"] == "Succeeded"
            assert get(cluster, ns, "cm/shared") and get(cluster2, ns, "cm/shared")

            proxy.stop()
            sha = git_repo.write({"a/cm.yaml": configmap("shared", data="v2")})
            t0 = time.monotonic()
            west_status = await r.reconcile(west)
            west_seconds = time.monotonic() - t0
            assert west_status["sync"]["status"] == "Unknown"
            assert west_status["health"]["status"] == "Unknown"
            assert any("unreachable" in c["message"] for c in west_status["conditions"])
            assert west_seconds < 15, f"an unreachable cluster took {west_seconds:.1f}s"
            t0 = time.monotonic()
            east_status = await r.reconcile(east)
            assert time.monotonic() - t0 < 10
            assert east_status["sync"]["revision"] == sha
            assert (get(cluster, ns, "cm/shared") or {})["data"]["key"] == "v2"

            proxy.start()
            recovered = await r.reconcile(west)
            assert recovered["sync"]["status"] == "Synced", recovered.get("conditions")
            assert recovered["conditions"] == []
            assert (get(cluster2, ns, "cm/shared") or {})["data"]["key"] == "v2"
    finally:
        proxy.stop()
        for c in (cluster, cluster2):
            c.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
