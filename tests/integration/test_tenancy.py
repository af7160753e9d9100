"""Tenancy and fleets: AppProjects enforced on every path, ApplicationSets, sync windows, RBAC."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import settings
from daemon.engine import Engine, run_once
from daemon.reconciler import SyncRequest
from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, deployment, get

pytestmark = pytest.mark.cluster
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed.yaml"


def seed_doc(kind: str, name: str) -> dict[str, Any]:
    """A document from the user's seed (copied into tests/fixtures/seed.yaml)."""
    for doc in yaml.safe_load_all(SEED.read_text()):
        if (
            isinstance(doc, dict)
            and doc.get("kind") == kind
            and (doc.get("metadata", {}).get("name") == name)
        ):
            return doc
    raise AssertionError(f"{kind}/{name} not in the seed")


def tenant_project(prefix: str, repo_url: str) -> dict[str, Any]:
    """The seed's tenant-a AppProject, pointed at our repo and a per-test namespace prefix,
    permitting the Namespaces its apps create (CreateNamespace=true)."""
    proj = seed_doc("AppProject", "tenant-a")
    proj["spec"]["sourceRepos"] = [repo_url]
    proj["spec"]["clusterResourceWhitelist"].append({"group": "", "kind": "Namespace"})
    proj["spec"]["destinations"] = [
        {"namespace": f"{prefix}-*", "server": "https://kubernetes.default.svc"}
    ]
    return proj


def write_project(tmp_path: Path, proj: dict[str, Any]) -> None:
    (tmp_path / "apps").mkdir(exist_ok=True)
    (tmp_path / "apps" / f"project-{proj['metadata']['name']}.yaml").write_text(
        yaml.safe_dump(proj)
    )


def tenant_app(name: str, url: str, path: str, ns: str) -> dict[str, Any]:
    app = application(name, url, path, ns, options=["CreateNamespace=true"])
    app["spec"]["project"] = "tenant-a"
    return app


def names_in(cluster: Cluster, ns: str) -> set[str]:
    out = cluster.kubectl(
        "get", "cm,deploy,role,rolebinding", "-n", ns, "-o", "json", "--ignore-not-found"
    )
    if not out.strip():
        return set()
    return {
        i["metadata"]["name"]
        for i in json.loads(out)["items"]
        if i["metadata"]["name"] != "kube-root-ca.crt"
    }


async def test_tenant_project_rules_hold(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The seed's tenant-a project: allowed apps sync; a ClusterRoleBinding, another tenant's
    namespace, a foreign repo and a missing project each block the whole app."""
    prefix = f"ta{int(time.time()) % 100000}"
    url = git_repo.url
    crb = (
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
        "metadata: {name: PREFIX-escape}\nroleRef: {apiGroup: rbac.authorization.k8s.io, "
        "kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: Group, name: x, "
        "apiGroup: rbac.authorization.k8s.io}]\n"
    ).replace("PREFIX", prefix)
    role = (
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reader}\n"
        "rules: [{apiGroups: [''], resources: [pods], verbs: [get]}]\n"
    )
    git_repo.write(
        {
            "ok/web.yaml": deployment("web", "nginx:1"),
            "ok/role.yaml": role,
            "escape/cm.yaml": configmap("should-not-exist"),
            "escape/crb.yaml": crb,
            "plain/cm.yaml": configmap("plain"),
        }
    )
    other = f"{prefix}b-prod"
    apps = [
        tenant_app("ta-ok", url, "ok", f"{prefix}-prod"),
        tenant_app("ta-crb", url, "escape", f"{prefix}-crb"),
        tenant_app("ta-other-ns", url, "plain", other),
        {
            **tenant_app("ta-no-project", url, "plain", f"{prefix}-np"),
            "spec": {**tenant_app("x", url, "plain", f"{prefix}-np")["spec"], "project": "nope"},
        },
    ]
    apps[3]["metadata"]["name"] = "ta-no-project"
    foreign = tenant_app("ta-foreign", url.replace("repo-", "other-"), "plain", f"{prefix}-fr")
    apps.append(foreign)
    cfg = write_config(tmp_path, cluster, apps)
    write_project(tmp_path, tenant_project(prefix, url))
    results = dict(await run_once(settings.load(cfg)))

    ok = results["ta-ok"]
    assert ok["sync"]["status"] == "Synced" and ok["health"]["status"] == "Healthy"
    assert names_in(cluster, f"{prefix}-prod") == {"web", "reader"}

    def cond(name: str) -> str:
        return " ".join(c["message"] for c in results[name].get("conditions", []))

    assert "ClusterRoleBinding" in cond("ta-crb") and "clusterResourceWhitelist" in cond("ta-crb")
    assert names_in(cluster, f"{prefix}-crb") == set()
    assert (
        cluster.kubectl(
            "get", "clusterrolebinding", f"{prefix}-escape", "--ignore-not-found", "-o", "name"
        ).strip()
        == ""
    )
    assert other in cond("ta-other-ns") and "destinations" in cond("ta-other-ns")
    assert names_in(cluster, other) == set()
    assert "project 'nope' does not exist" in cond("ta-no-project")
    assert "sourceRepos" in cond("ta-foreign")
    for name in ("ta-crb", "ta-other-ns", "ta-no-project", "ta-foreign"):
        assert any(c["type"] == "InvalidSpecError" for c in results[name]["conditions"]), name
    for ns in (f"{prefix}-prod",):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


async def test_seed_blue_green_applicationset(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The seed's blue-green ApplicationSet (list generator) creates webapp-blue and
    webapp-green, each rendering the Helm chart with its own values into its own namespace."""
    git_repo.write(
        {
            "manifests/Chart.yaml": "apiVersion: v2\nname: webapp\nversion: 0.1.0\n",
            "manifests/values.yaml": "replicaCount: 1\nenvironment: none\ncolor: none\n",
            "manifests/templates/cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: webapp-config\n"
                "data:\n  environment: {{ .Values.environment | quote }}\n"
                "  color: {{ .Values.color | quote }}\n"
                "  replicas: {{ .Values.replicaCount | quote }}\n"
            ),
        }
    )
    aset = seed_doc("ApplicationSet", "blue-green-app")
    aset["spec"]["template"]["spec"]["source"]["repoURL"] = git_repo.url
    cfg = write_config(tmp_path, cluster, [])
    (tmp_path / "apps" / "appset.yaml").write_text(yaml.safe_dump(aset))
    results = dict(await run_once(settings.load(cfg)))
    assert {"webapp-blue", "webapp-green"} <= set(results), results.keys()
    try:
        for color in ("blue", "green"):
            st = results[f"webapp-{color}"]
            assert st["sync"]["status"] == "Synced", st.get("conditions")
            cm = get(cluster, f"webapp-{color}", "cm/webapp-config")
            assert cm and cm["data"] == {"environment": color, "color": color, "replicas": "3"}
    finally:
        for color in ("blue", "green"):
            cluster.kubectl(
                "delete",
                "namespace",
                f"webapp-{color}",
                "--wait=false",
                "--ignore-not-found",
                check=False,
            )


async def test_clusters_generator_deploys_to_every_matching_cluster(
    cluster: Cluster, cluster2: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The seed's multi-cluster ApplicationSet (clusters generator, environment=production)
    deploys to both production clusters with per-cluster Helm values, and not to staging."""
    git_repo.write(
        {
            "manifests/Chart.yaml": "apiVersion: v2\nname: webapp\nversion: 0.1.0\n",
            "manifests/templates/cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: where\n"
                "data:\n  cluster: {{ .Values.cluster | quote }}\n"
                "  region: {{ .Values.region | quote }}\n"
                "  environment: {{ .Values.environment | quote }}\n"
            ),
        }
    )
    aset = seed_doc("ApplicationSet", "multi-cluster-apps")
    aset["spec"]["template"]["spec"]["source"]["repoURL"] = git_repo.url
    aset["spec"]["template"]["spec"]["project"] = "default"
    ns = f"mc-webapp-{int(time.time()) % 100000}"
    aset["spec"]["template"]["spec"]["destination"]["namespace"] = ns
    cfg_path = write_config(tmp_path, cluster, [])
    data = yaml.safe_load(cfg_path.read_text())
    data["clusters"] = [
        {
            "name": "east",
            "server": "https://east.example.invalid",
            "kubeconfig": str(cluster.kubeconfig),
            "labels": {"environment": "production", "region": "us-east"},
        },
        {
            "name": "west",
            "server": "https://west.example.invalid",
            "kubeconfig": str(cluster2.kubeconfig),
            "labels": {"environment": "production", "region": "us-west"},
        },
        {
            "name": "stage",
            "server": "https://stage.example.invalid",
            "kubeconfig": str(cluster.kubeconfig),
            "labels": {"environment": "staging"},
        },
    ]
    cfg_path.write_text(yaml.safe_dump(data))
    (tmp_path / "apps" / "appset.yaml").write_text(yaml.safe_dump(aset))
    results = dict(await run_once(settings.load(cfg_path)))
    assert {"east-webapp", "west-webapp"} <= set(results)
    assert "stage-webapp" not in results
    try:
        for name, c, region in (("east", cluster, "us-east"), ("west", cluster2, "us-west")):
            st = results[f"{name}-webapp"]
            assert st["sync"]["status"] == "Synced", st.get("conditions")
            cm = get(c, ns, "cm/where")
            assert cm and cm["data"] == {
                "cluster": name,
                "region": region,
                "environment": "production",
            }
    finally:
        for c in (cluster, cluster2):
            c.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t["metadata"].update(name="same-name"), "duplicate"),
        (lambda t: t["metadata"].update(name="app-{{missing}}"), "missing"),
        (lambda t: t["spec"].update(project="{{environment}}"), "project"),
    ],
    ids=["duplicate-names", "missing-parameter", "templated-project"],
)
async def test_bad_applicationsets_apply_nothing(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path, mutate: Any, expected: str
) -> None:
    """Duplicate generated names, a missing parameter or a templated project yield a clear
    error and no Application at all."""
    git_repo.write({"app/cm.yaml": configmap("never")})
    ns = f"bad-aset-{int(time.time() * 1000) % 10**7}"
    template: dict[str, Any] = {
        "metadata": {"name": "gen-{{environment}}"},
        "spec": {
            "project": "default",
            "source": {"repoURL": git_repo.url, "targetRevision": "main", "path": "app"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ns},
            "syncPolicy": {"automated": {}, "syncOptions": ["CreateNamespace=true"]},
        },
    }
    mutate(template)
    aset = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "bad", "namespace": "argocd"},
        "spec": {
            "generators": [{"list": {"elements": [{"environment": "a"}, {"environment": "b"}]}}],
            "template": template,
        },
    }
    cfg = write_config(tmp_path, cluster, [])
    (tmp_path / "apps" / "appset.yaml").write_text(yaml.safe_dump(aset))
    results = dict(await run_once(settings.load(cfg)))
    assert set(results) == {"ApplicationSet/bad"}
    message = results["ApplicationSet/bad"]["conditions"][0]["message"]
    assert expected in message.lower(), message
    assert cluster.kubectl("get", "namespace", ns, "--ignore-not-found", "-o", "name").strip() == ""


async def test_sync_windows_block_automated_syncs(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An active deny window stops automated syncs and says why; a manual sync passes only
    where the window allows manual syncs."""
    git_repo.write({"app/cm.yaml": configmap("windowed")})
    proj = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "frozen", "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "syncWindows": [
                {
                    "kind": "deny",
                    "schedule": "* * * * *",
                    "duration": "1h",
                    "applications": ["*"],
                    "manualSync": True,
                }
            ],
        },
    }
    app = application("windowed", git_repo.url, "app", namespace)
    app["spec"]["project"] = "frozen"
    cfg_path = write_config(tmp_path, cluster, [app])
    write_project(tmp_path, proj)
    cfg = settings.load(cfg_path)
    async with Engine.open(cfg) as engine:
        status = await engine.reconciler.reconcile(cfg.app("windowed"))
        assert "operationState" not in status
        blocked = [c for c in status["conditions"] if c["type"] == "SyncBlocked"]
        assert blocked and "deny" in blocked[0]["message"], status["conditions"]
        assert get(cluster, namespace, "cm/windowed") is None
        manual = await engine.reconciler.reconcile(
            cfg.app("windowed"), sync=SyncRequest(initiated_by="admin")
        )
        assert manual["operationState"]["phase"] == "Succeeded"
        assert get(cluster, namespace, "cm/windowed") is not None


def test_project_roles_authorise_api_calls(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """API tokens carry groups; AppProject role policies decide who may get and sync which app
    (the seed's tenant-a developer role may sync tenant-a apps only)."""
    git_repo.write({"app/cm.yaml": configmap("rbac")})
    proj = tenant_project(namespace.split("-")[0], git_repo.url)
    proj["spec"]["destinations"] = [{"namespace": namespace, "server": "*"}]
    a = application("tenant-app", git_repo.url, "app", namespace, automated=False)
    a["spec"]["project"] = "tenant-a"
    b = application("other-app", git_repo.url, "app", namespace, automated=False)
    (tmp_path / "dev").write_text("dev-token")
    (tmp_path / "admin").write_text("admin-token")
    cfg = write_config(tmp_path, cluster, [a, b])
    write_project(tmp_path, proj)
    data = yaml.safe_load(cfg.read_text())
    data["apiTokens"] = [
        {
            "name": "dev",
            "tokenFile": str(tmp_path / "dev"),
            "role": "none",
            "groups": ["tenant-a-developer-group"],
        },
        {"name": "admin", "tokenFile": str(tmp_path / "admin"), "role": "admin"},
    ]
    cfg.write_text(yaml.safe_dump(data))
    with running(cfg) as d:
        listed = d.api("/api/v1/applications", token="dev-token").json()["items"]
        assert [i["metadata"]["name"] for i in listed] == ["tenant-app"]
        assert d.api("/api/v1/applications/other-app", token="dev-token").status_code == 403
        assert (
            d.api(
                "/api/v1/applications/other-app/sync", method="POST", token="dev-token"
            ).status_code
            == 403
        )
        ok = d.api("/api/v1/applications/tenant-app/sync", method="POST", token="dev-token")
        assert ok.status_code == 202, ok.text
        wait_for(
            lambda: get(cluster, namespace, "cm/rbac") is not None,
            timeout=30,
            what="tenant sync applied",
        )
        assert (
            d.api(
                "/api/v1/applications/other-app/sync", method="POST", token="admin-token"
            ).status_code
            == 202
        )


def test_generated_apps_follow_the_generators_in_the_daemon(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A git-directories ApplicationSet in the running daemon: a new directory adds an app, a
    removed one removes the app and (finalizer by default) its resources."""
    prefix = f"gd{int(time.time()) % 100000}"
    git_repo.write({"envs/one/cm.yaml": configmap("one"), "envs/two/cm.yaml": configmap("two")})
    aset = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "envs", "namespace": "argocd"},
        "spec": {
            "generators": [
                {
                    "git": {
                        "repoURL": git_repo.url,
                        "revision": "main",
                        "directories": [{"path": "envs/*"}],
                    }
                }
            ],
            "template": {
                "metadata": {"name": f"{prefix}-{{{{path.basename}}}}"},
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": git_repo.url,
                        "targetRevision": "main",
                        "path": "{{path}}",
                    },
                    "destination": {
                        "server": "https://kubernetes.default.svc",
                        "namespace": f"{prefix}-{{{{path.basename}}}}",
                    },
                    "syncPolicy": {
                        "automated": {"prune": True},
                        "syncOptions": ["CreateNamespace=true"],
                    },
                },
            },
        },
    }
    cfg = write_config(tmp_path, cluster, [], reconcileInterval="2s")
    (tmp_path / "apps" / "appset.yaml").write_text(yaml.safe_dump(aset))
    try:
        with running(cfg) as d:
            wait_for(
                lambda: d.synced(f"{prefix}-one") and d.synced(f"{prefix}-two"),
                timeout=60,
                what="generated apps synced",
            )
            assert get(cluster, f"{prefix}-two", "cm/two") is not None
            git_repo.write({"envs/three/cm.yaml": configmap("three"), "envs/two/cm.yaml": None})
            wait_for(lambda: d.synced(f"{prefix}-three"), timeout=60, what="new dir -> new app")
            wait_for(lambda: d.app(f"{prefix}-two") is None, timeout=60, what="app removed")
            wait_for(
                lambda: get(cluster, f"{prefix}-two", "cm/two") is None,
                timeout=60,
                what="removed app's resources deleted",
            )
            sets = d.api("/api/v1/applicationsets").json()["items"]
            assert sets[0]["status"]["applications"] == [f"{prefix}-one", f"{prefix}-three"]
    finally:
        for n in ("one", "two", "three"):
            cluster.kubectl(
                "delete",
                "namespace",
                f"{prefix}-{n}",
                "--wait=false",
                "--ignore-not-found",
                check=False,
            )


async def test_project_destinations_hold_per_cluster(
    cluster: Cluster, cluster2: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A project that permits a namespace only on one cluster refuses the same app on another."""
    ns = f"pd-{int(time.time()) % 100000}"
    git_repo.write({"app/cm.yaml": configmap("per-cluster")})
    proj = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "east-only", "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"name": "east", "namespace": ns}],
            "clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
        },
    }
    apps = []
    for c in ("east", "west"):
        a = application(f"pd-{c}", git_repo.url, "app", ns, options=["CreateNamespace=true"])
        a["spec"]["project"] = "east-only"
        a["spec"]["destination"] = {"name": c, "namespace": ns}
        apps.append(a)
    cfg_path = write_config(tmp_path, cluster, apps)
    write_project(tmp_path, proj)
    data = yaml.safe_load(cfg_path.read_text())
    data["clusters"] = [
        {
            "name": "east",
            "server": "https://east.example.invalid",
            "kubeconfig": str(cluster.kubeconfig),
        },
        {
            "name": "west",
            "server": "https://west.example.invalid",
            "kubeconfig": str(cluster2.kubeconfig),
        },
    ]
    cfg_path.write_text(yaml.safe_dump(data))
    try:
        results = dict(await run_once(settings.load(cfg_path)))
        assert results["pd-east"]["sync"]["status"] == "Synced"
        west = " ".join(c["message"] for c in results["pd-west"]["conditions"])
        assert "not permitted in project east-only" in west, west
        assert get(cluster2, ns, "cm/per-cluster") is None
    finally:
        for c in (cluster, cluster2):
            c.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


async def test_seed_tenant_application_with_managed_namespace_metadata(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The seed's tenant-a-webapp Application and tenant-a AppProject (repository URL aside):
    as written the project does not whitelist Namespace, so CreateNamespace=true is refused as
    in Argo CD; with Namespace whitelisted the app syncs and its namespace gets the
    managedNamespaceMetadata."""
    git_repo.write({"webapp/web.yaml": deployment("webapp", "nginx:1", replicas=2)})
    ns = f"tenant-a-production-{int(time.time()) % 100000}"
    app = seed_doc("Application", "tenant-a-webapp")
    app["spec"]["source"]["repoURL"] = git_repo.url
    app["spec"]["destination"]["namespace"] = ns
    proj = seed_doc("AppProject", "tenant-a")
    proj["spec"]["sourceRepos"] = [git_repo.url]
    cfg = write_config(tmp_path, cluster, [app])
    write_project(tmp_path, proj)
    try:
        st = dict(await run_once(settings.load(cfg)))["tenant-a-webapp"]
        message = (st.get("operationState") or {}).get("message", "")
        assert "project tenant-a (clusterResourceWhitelist)" in message, st
        assert f"Namespace/{ns}" in message, message
        proj["spec"]["clusterResourceWhitelist"].append({"group": "", "kind": "Namespace"})
        write_project(tmp_path, proj)
        # A fresh app: an automated sync that failed is not retried for the same revision.
        app["metadata"]["name"] = "tenant-a-webapp-2"
        cfg = write_config(tmp_path, cluster, [app])
        st = dict(await run_once(settings.load(cfg)))["tenant-a-webapp-2"]
        assert st["sync"]["status"] == "Synced" and st["health"]["status"] == "Healthy", st
        namespace = json.loads(cluster.kubectl("get", "namespace", ns, "-o", "json"))
        assert namespace["metadata"]["labels"]["tenant"] == "tenant-a"
        assert namespace["metadata"]["labels"]["environment"] == "production"
        assert namespace["metadata"]["annotations"]["owner"] == "tenant-a-team"
    finally:
        cluster.kubectl(
            "delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False
        )


def _project(name: str, url: str, prefix: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "sourceRepos": [url],
            "destinations": [
                {"namespace": f"{prefix}-*", "server": "https://kubernetes.default.svc"}
            ],
            **spec,
        },
    }


async def test_create_namespace_obeys_the_projects_cluster_resource_rules(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """CreateNamespace=true writes the Namespace only where the project permits it (Argo CD's
    permission check of the namespace task): not whitelisted or blacklisted, the sync fails
    before anything is applied, naming project, rule and Namespace/<name>; an existing
    namespace the sync leaves alone needs no rule, managedNamespaceMetadata on it does; a
    whitelisted Namespace is created; a namespace outside the destinations is refused."""
    prefix = f"cn{int(time.time()) % 100000}"
    url = git_repo.url
    git_repo.write({"app/cm.yaml": configmap("cn-data")})
    strict = _project("cn-strict", url, prefix)  # no clusterResourceWhitelist: nothing
    black = _project(
        "cn-black",
        url,
        prefix,
        clusterResourceWhitelist=[{"group": "*", "kind": "*"}],
        clusterResourceBlacklist=[{"group": "", "kind": "Namespace", "name": f"{prefix}-bl*"}],
    )
    allowed = _project(
        "cn-allowed", url, prefix, clusterResourceWhitelist=[{"group": "", "kind": "Namespace"}]
    )

    def app(name: str, project: str, ns: str, **policy: Any) -> dict[str, Any]:
        a = application(name, url, "app", ns, options=["CreateNamespace=true"])
        a["spec"]["project"] = project
        a["spec"]["syncPolicy"].update(policy)
        return a

    existing, managed = f"{prefix}-existing", f"{prefix}-managed"
    for ns in (existing, managed):
        cluster.kubectl("create", "namespace", ns)
    mnm = {"managedNamespaceMetadata": {"labels": {"owner": "tenant"}}}
    apps = [
        app("cn-new", "cn-strict", f"{prefix}-new"),
        app("cn-existing", "cn-strict", existing),
        app("cn-managed", "cn-strict", managed, **mnm),
        app("cn-bl", "cn-black", f"{prefix}-bl1"),
        app("cn-ok", "cn-allowed", f"{prefix}-ok"),
        app("cn-outside", "cn-allowed", f"x{prefix}-out"),
    ]
    cfg = write_config(tmp_path, cluster, apps)
    for proj in (strict, black, allowed):
        write_project(tmp_path, proj)
    try:
        results = dict(await run_once(settings.load(cfg)))

        def refused(name: str, project: str, rule: str, ns: str) -> None:
            op = results[name].get("operationState") or {}
            assert op.get("phase") == "Failed", (name, results[name])
            message = op["message"]
            assert f"project {project}" in message and rule in message, message
            assert f"Namespace/{ns}" in message, message
            assert get(cluster, ns, "cm/cn-data") is None, name

        refused("cn-new", "cn-strict", "clusterResourceWhitelist", f"{prefix}-new")
        assert (
            cluster.kubectl(
                "get", "namespace", f"{prefix}-new", "--ignore-not-found", "-o", "name"
            ).strip()
            == ""
        ), "the namespace was created"
        refused("cn-managed", "cn-strict", "clusterResourceWhitelist", managed)
        labels = json.loads(cluster.kubectl("get", "namespace", managed, "-o", "json"))
        assert "owner" not in (labels["metadata"].get("labels") or {})
        refused("cn-bl", "cn-black", "clusterResourceBlacklist", f"{prefix}-bl1")
        for name, ns in (("cn-existing", existing), ("cn-ok", f"{prefix}-ok")):
            assert results[name]["sync"]["status"] == "Synced", (name, results[name])
            assert get(cluster, ns, "cm/cn-data") is not None, name
        outside = " ".join(c["message"] for c in results["cn-outside"].get("conditions", []))
        assert f"x{prefix}-out" in outside and "destinations" in outside, outside
        assert (
            cluster.kubectl(
                "get", "namespace", f"x{prefix}-out", "--ignore-not-found", "-o", "name"
            ).strip()
            == ""
        )
    finally:
        for ns in (existing, managed, f"{prefix}-ok", f"{prefix}-new", f"{prefix}-bl1"):
            cluster.kubectl(
                "delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False
            )
