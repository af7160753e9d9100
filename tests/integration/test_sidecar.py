"""The sidecar deployment (config/sidecar/): its manifests, and gitopsd syncing with only its Role.

gitopsd runs in-process here with the sidecar ServiceAccount's token, as it would inside the pod
(there is no container runtime to run the image itself).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import settings
from daemon.engine import Engine
from daemon.errors import KubeError
from tests.conftest import Cluster, GitRepo, application, wait_for
from tests.integration.test_sync import configmap, deployment, get, reconcile

pytestmark = pytest.mark.cluster
SIDECAR = Path(__file__).resolve().parents[2] / "config" / "sidecar"


@dataclass(frozen=True)
class Sidecar:
    """How the sidecar's ServiceAccount reaches the test API server."""

    namespace: str
    server: str
    token_file: Path
    ca_file: Path

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:gitopsd"


@pytest.fixture
def sidecar(cluster: Cluster, namespace: str, tmp_path: Path) -> Sidecar:
    """config/sidecar/rbac.yaml applied into the test namespace and a token for its account."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(SIDECAR / "rbac.yaml"))
    token = cluster.kubectl("create", "token", "gitopsd", "-n", namespace, "--duration=1h")
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    creds = tmp_path / "sa"
    creds.mkdir()
    (creds / "token").write_text(token.strip())
    (creds / "ca.crt").write_bytes(ca)
    sc = Sidecar(namespace, cluster.server.rstrip("/"), creds / "token", creds / "ca.crt")
    # The authorizer sees new RoleBindings through an informer; wait until it has this one.
    wait_for(
        lambda: (
            cluster.kubectl(
                "auth",
                "can-i",
                "patch",
                "configmaps",
                "-n",
                namespace,
                f"--as={sc.user}",
                check=False,
            ).strip()
            == "yes"
        ),
        timeout=30,
        what="the sidecar Role to take effect",
    )
    return sc


def sidecar_app(name: str, repo: GitRepo, sc: Sidecar) -> dict[str, Any]:
    """An automated Application into the sidecar's namespace on the sidecar's cluster entry."""
    app = application(name, repo.url, "app", sc.namespace)
    app["spec"]["destination"]["server"] = sc.server
    return app


def sidecar_config(tmp_path: Path, sc: Sidecar, apps: list[dict[str, Any]]) -> Path:
    """A settings file that reaches the cluster only with the sidecar's token."""
    appdir = tmp_path / "apps"
    appdir.mkdir(exist_ok=True)
    for app in apps:
        (appdir / f"{app['metadata']['name']}.yaml").write_text(yaml.safe_dump(app))
    cfg = {
        "applications": ["apps/*.yaml"],
        "clusters": [
            {
                "name": "sidecar",
                "server": sc.server,
                "bearerTokenFile": str(sc.token_file),
                "caFile": str(sc.ca_file),
            }
        ],
        "settings": {
            "syncWaveDelay": "0s",
            "healthTimeout": "60s",
            "cacheDir": str(tmp_path / "cache"),
            "stateDir": str(tmp_path / "state"),
            "inventoryNamespace": sc.namespace,
        },
    }
    path = tmp_path / "gitopsd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_sidecar_role_is_enough_to_sync_watch_and_prune(
    cluster: Cluster, sidecar: Sidecar, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With only the sidecar Role, gitopsd syncs, watches and prunes an app in its namespace."""
    ns = sidecar.namespace
    git_repo.write(
        {"app/cm.yaml": configmap("settings"), "app/web.yaml": deployment("web", "nginx:1")}
    )
    cfg = sidecar_config(tmp_path, sidecar, [sidecar_app("side", git_repo, sidecar)])
    status = await reconcile(cfg, "side")
    op = status["operationState"]
    assert op["phase"] == "Succeeded", op["message"]
    assert status["conditions"] == []
    assert get(cluster, ns, "configmap/settings") is not None
    assert get(cluster, ns, "deployment/web") is not None
    inventory = get(cluster, ns, "configmap/gitopsd-inventory.side")
    assert inventory is not None, "the inventory must be written into the pod's namespace"
    assert "settings" in inventory["data"]["entries"]

    loaded = settings.load(cfg)
    async with Engine.open(loaded) as engine:
        client = await engine.client_for(loaded.app("side"))
        # What the daemon's drift watches do: LIST, then WATCH from its resourceVersion.
        dep = await client.resource_for("apps/v1", "Deployment", subject="drift watch")
        items, rv = await client.list(dep, ns)
        assert [i["metadata"]["name"] for i in items] == ["web"]
        async for _ in client.watch(dep, ns, resource_version=rv, timeout_seconds=1):
            pass
        # The client really is the ServiceAccount, not the admin: namespaces are off limits.
        nss = await client.resource_for("v1", "Namespace", subject="namespaces")
        with pytest.raises(KubeError, match="forbidden"):
            await client.list(nss)

    git_repo.write({"app/cm.yaml": None})
    status = await reconcile(cfg, "side")
    op = status["operationState"]
    assert op["phase"] == "Succeeded", op["message"]
    results = {r["name"]: r["status"] for r in op["syncResult"]["resources"]}
    assert results == {"settings": "Pruned"}
    assert get(cluster, ns, "configmap/settings") is None
    assert get(cluster, ns, "deployment/web") is not None


@pytest.mark.parametrize("where", ["cluster-scoped", "other-namespace"])
async def test_object_outside_the_role_fails_the_sync_before_any_write(
    cluster: Cluster, sidecar: Sidecar, git_repo: GitRepo, tmp_path: Path, where: str
) -> None:
    """An object the Role does not reach fails the sync naming it; nothing of the app is written."""
    ns = sidecar.namespace
    if where == "cluster-scoped":
        name = f"escape-{ns}"
        outside = (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
            f"metadata:\n  name: {name}\nrules: []\n"
        )
        subject, ref, ref_ns = f"ClusterRole/{name}", f"clusterrole/{name}", ""
        api_says = f'clusterroles.rbac.authorization.k8s.io "{name}" is forbidden'
    else:
        name = f"escape-{ns}"
        outside = configmap(name).replace("metadata:\n", "metadata:\n  namespace: default\n", 1)
        subject, ref, ref_ns = f"ConfigMap/default/{name}", f"configmap/{name}", "default"
        api_says = f'configmaps "{name}" is forbidden'
    git_repo.write({"app/cm.yaml": configmap("settings"), "app/outside.yaml": outside})
    cfg = sidecar_config(tmp_path, sidecar, [sidecar_app("esc", git_repo, sidecar)])
    status = await reconcile(cfg, "esc")
    op = status.get("operationState") or {}
    message = op.get("message") or "; ".join(c["message"] for c in status["conditions"])
    assert op.get("phase") == "Failed", f"expected a failed sync, got: {message}"
    assert subject in message
    assert api_says in message
    assert f'User "{sidecar.user}" cannot' in message
    assert get(cluster, ns, "configmap/settings") is None, "an allowed object was written"
    assert get(cluster, ref_ns or ns, ref) is None
    assert get(cluster, ns, "configmap/gitopsd-inventory.esc") is None


async def test_sidecar_manifests_are_accepted_and_name_the_pod_namespace(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """config/sidecar passes a server-side dry run, and its config loads as a sidecar needs."""
    files = [str(SIDECAR / f) for f in ("rbac.yaml", "configmap.yaml", "deployment.yaml")]
    args = [a for f in files for a in ("-f", f)]
    out = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, *args)
    assert "deployment.apps/shop created (server dry run)" in out

    docs = [d for f in files for d in yaml.safe_load_all(Path(f).read_text()) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (mount,) = [
        m
        for c in pod["containers"]
        if c["name"] == "gitopsd"
        for m in c["volumeMounts"]
        if m["name"] == "config"
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    # Lay the ConfigMap out as the volume does, then load it as the daemon would.
    root = tmp_path / mount["mountPath"].lstrip("/")
    for item in volume["configMap"]["items"]:
        (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / item["path"]).write_text(cm["data"][item["key"]])
    gitopsd = next(c for c in pod["containers"] if c["name"] == "gitopsd")
    assert gitopsd["args"][-1] == mount["mountPath"] + "/gitopsd.yaml"
    loaded = settings.load(root / "gitopsd.yaml")
    assert loaded.warnings == ()
    assert loaded.clusters == (), "a sidecar uses in-cluster config"
    (app,) = loaded.applications
    assert app.destination.server == "https://kubernetes.default.svc"
    assert loaded.settings.inventory_namespace == app.destination.namespace
    assert pod["serviceAccountName"] == "gitopsd"
