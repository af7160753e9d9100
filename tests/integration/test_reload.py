"""Config edits take effect in a running daemon without a restart: a cluster added with an
app on it, a cluster whose kubeconfig moved (the old path's server gone), the sync pool's size;
a setting that needs a restart is kept as it runs and named in a warning."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, TcpProxy, application, wait_for, write_config
from tests.integration.githttp import PrivateGitServer
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster


def _via(cluster: Cluster, proxy: TcpProxy, path: Path) -> Path:
    """A kubeconfig for the test cluster reached through `proxy`, written at `path`."""
    kc = yaml.safe_load(cluster.kubeconfig.read_text())
    kc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(kc))
    return path


def test_clusters_and_pool_size_change_live(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An edit adding cluster edge-2 and an app on it syncs the app; moving edge-2's kubeconfig
    to a file naming another route, with the old route gone, keeps the app syncing; a new
    maxConcurrentSyncs shows in gitopsd_sync_pool_size; a new `listen` is refused by name."""
    target = urlparse(cluster.server)
    first, second = (TcpProxy(target.hostname or "127.0.0.1", target.port or 443) for _ in "ab")
    first.start()
    second.start()
    git_repo.write({"a/cm.yaml": configmap("home"), "e/cm.yaml": configmap("edge", data="v1")})
    cfg = write_config(tmp_path, cluster, [application("home", git_repo.url, "a", namespace)])
    try:
        with running(cfg) as d:
            wait_for(lambda: d.synced("home"), timeout=60, what="home synced")
            data = yaml.safe_load(cfg.read_text())
            old_kc = _via(cluster, first, tmp_path / "edge-old.kubeconfig")
            data["clusters"].append(
                {"name": "edge-2", "server": "https://edge-2.invalid", "kubeconfig": str(old_kc)}
            )
            data["settings"]["maxConcurrentSyncs"] = 3
            cfg.write_text(yaml.safe_dump(data))
            edge = application("edge", git_repo.url, "e", namespace)
            edge["spec"]["destination"] = {"name": "edge-2", "namespace": namespace}
            (tmp_path / "apps" / "edge.yaml").write_text(yaml.safe_dump(edge))
            wait_for(lambda: d.synced("edge"), timeout=60, what="the app on the added cluster")
            assert "gitopsd_sync_pool_size 3.0" in d.api("/metrics").text

            new_kc = _via(cluster, second, tmp_path / "edge-new.kubeconfig")
            data["clusters"][1]["kubeconfig"] = str(new_kc)
            cfg.write_text(yaml.safe_dump(data))
            time.sleep(2.5)  # the watcher reads the files every second
            old_kc.unlink()
            first.stop()  # the old route is gone: only the new entry reaches the cluster
            git_repo.write({"e/cm.yaml": configmap("edge", data="v2")})
            d.api("/api/v1/applications/edge/refresh", method="POST")
            wait_for(
                lambda: (
                    ((get(cluster, namespace, "configmap/edge") or {}).get("data") or {}).get("key")
                    == "v2"
                ),
                timeout=60,
                what="a sync through the moved kubeconfig",
            )

            port = d.url.rsplit(":", 1)[1]
            data["settings"]["listen"] = "127.0.0.1:1"
            cfg.write_text(yaml.safe_dump(data))
            wait_for(
                lambda: "take effect only after a restart" in d.log.read_text(),
                timeout=15,
                what="the restart-only field named",
            )
            assert '"listen"' in d.log.read_text()
            assert d.api("/healthz").status_code == 200 and d.url.endswith(port)
    finally:
        second.stop()
        first.stop()


def test_a_repository_credential_added_live_reaches_a_private_repo(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An app on a repository that asks for basic auth fails while no credential matches; an
    edit adding a `repositories` entry (username and passwordFile) makes it sync, no restart."""
    git_repo.write({"p/cm.yaml": configmap("private")})
    server = PrivateGitServer(git_repo.bare.parent, "deploy", "s3cret-pass")
    url = f"{server.url}/{git_repo.bare.name}"
    cfg = write_config(tmp_path, cluster, [application("private", url, "p", namespace)])
    try:
        with running(cfg) as d:
            wait_for(
                lambda: any(
                    c.get("type") == "ComparisonError"
                    for c in d.status("private").get("conditions", [])
                ),
                timeout=60,
                what="the private repo refused without a credential",
            )
            assert server.denied > 0
            secret = tmp_path / "git-password"
            secret.write_text("s3cret-pass\n")
            data = yaml.safe_load(cfg.read_text())
            data["repositories"] = [
                {"url": f"{server.url}/", "username": "deploy", "passwordFile": str(secret)}
            ]
            cfg.write_text(yaml.safe_dump(data))
            time.sleep(2.5)  # the watcher reads the files every second
            d.api("/api/v1/applications/private/refresh", method="POST")
            wait_for(lambda: d.synced("private"), timeout=60, what="synced with the new credential")
            assert get(cluster, namespace, "configmap/private") is not None
    finally:
        server.close()
