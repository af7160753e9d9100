"""The sync engine against the real control plane and a real git server on loopback."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemon import settings
from daemon.engine import Engine, run_once
from daemon.reconciler import SyncRequest
from tests.conftest import Cluster, GitRepo, application, wait_for, write_config

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
DB_APP = (ROOT / "config/examples/apps/db-app/db.yaml").read_text()


async def reconcile(cfg_path: Path, name: str, sync: SyncRequest | None = None) -> dict[str, Any]:
    cfg = settings.load(cfg_path)
    async with Engine.open(cfg) as engine:
        return await engine.reconciler.reconcile(cfg.app(name), sync=sync)


def get(cluster: Cluster, ns: str, ref: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", ref, "-n", ns, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def created(obj: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def deployment(
    name: str, image: str, wave: int | None = None, replicas: int = 1, min_ready: int = 0
) -> str:
    ann = (
        f'\n  annotations:\n    argocd.argoproj.io/sync-wave: "{wave}"' if wave is not None else ""
    )
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}{ann}
spec:
  replicas: {replicas}
  minReadySeconds: {min_ready}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: main
          image: {image}
"""


def configmap(name: str, wave: int = 0, data: str = "x") -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  annotations:
    argocd.argoproj.io/sync-wave: "{wave}"
data:
  key: {data}
"""


async def test_database_app_pattern_syncs_wave_by_wave(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The seed's Database-App pattern syncs in six waves, each after the last is healthy."""
    # minReadySeconds makes the database wave take >= 3s to become healthy, so a wave that
    # did not wait would show up as the next wave being created too early.
    slow_db = DB_APP.replace("  replicas: 1\n", "  replicas: 1\n  minReadySeconds: 3\n", 1)
    git_repo.write({"db-app/db.yaml": slow_db})
    cfg = write_config(tmp_path, cluster, [application("db", git_repo.url, "db-app", namespace)])
    status = await reconcile(cfg, "db")
    op = status["operationState"]
    assert op["phase"] == "Succeeded", op["message"]
    waves = [r["syncWave"] for r in op["syncResult"]["resources"]]
    assert waves == [-3, -2, -1, 0, 1, 2]
    assert status["sync"]["status"] == "Synced"
    db = get(cluster, namespace, "deployment/database")
    svc = get(cluster, namespace, "service/database-service")
    pvc = get(cluster, namespace, "pvc/db-pvc")
    assert db and svc and pvc
    assert pvc["status"]["phase"] == "Bound"
    assert (created(svc) - created(db)).total_seconds() >= 3, "wave 0 did not wait for wave -1"
    for ref in ("secret/db-credentials", "deployment/webapp", "service/webapp-service"):
        obj = get(cluster, namespace, ref)
        assert obj is not None, ref
        tid = obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"]
        assert tid.startswith("db:")


async def test_crashloop_fails_its_wave_and_stops_later_waves(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A :crashloop Deployment makes its wave Degraded fails the sync; later waves never apply."""
    git_repo.write(
        {
            "app/a.yaml": configmap("first", wave=0),
            "app/b.yaml": deployment("broken", "app:crashloop", wave=1),
            "app/c.yaml": configmap("after", wave=2),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("crash", git_repo.url, "app", namespace)])
    status = await reconcile(cfg, "crash")
    op = status["operationState"]
    assert op["phase"] == "Failed"
    assert f"Deployment/{namespace}/broken" in op["message"]
    assert get(cluster, namespace, "configmap/first") is not None
    assert get(cluster, namespace, "configmap/after") is None
    assert any(c["type"] == "SyncError" for c in status["conditions"])
    # The same revision is not retried automatically (Argo CD's autoSync rule).
    again = await reconcile(cfg, "crash")
    assert again["operationState"]["startedAt"] == op["startedAt"]


async def test_prune_removes_what_git_no_longer_has(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Removing a file from git prunes its object; Prune=false objects and others' objects stay."""
    keep = configmap("keep").replace(
        "annotations:\n", "annotations:\n    argocd.argoproj.io/sync-options: Prune=false\n"
    )
    git_repo.write(
        {"app/a.yaml": configmap("a"), "app/b.yaml": configmap("b"), "app/keep.yaml": keep}
    )
    cluster.kubectl("create", "configmap", "bystander", "-n", namespace)
    cfg = write_config(tmp_path, cluster, [application("pr", git_repo.url, "app", namespace)])
    assert (await reconcile(cfg, "pr"))["operationState"]["phase"] == "Succeeded"
    git_repo.write({"app/b.yaml": None, "app/keep.yaml": None})
    status = await reconcile(cfg, "pr")
    assert status["operationState"]["phase"] == "Succeeded", status["operationState"]
    results = {r["name"]: r["status"] for r in status["operationState"]["syncResult"]["resources"]}
    assert results["b"] == "Pruned"
    assert results["keep"] == "PruneSkipped"
    assert get(cluster, namespace, "configmap/b") is None
    assert get(cluster, namespace, "configmap/keep") is not None
    assert get(cluster, namespace, "configmap/bystander") is not None
    assert get(cluster, namespace, "configmap/a") is not None


async def test_prune_survives_losing_local_state(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With the daemon's state dir wiped (a sidecar's emptyDir), prune still finds what it owns."""
    git_repo.write({"app/a.yaml": configmap("a"), "app/b.yaml": configmap("b")})
    cfg = write_config(tmp_path, cluster, [application("inv", git_repo.url, "app", namespace)])
    assert (await reconcile(cfg, "inv"))["operationState"]["phase"] == "Succeeded"
    import shutil

    shutil.rmtree(tmp_path / "state")
    shutil.rmtree(tmp_path / "cache")
    git_repo.write({"app/b.yaml": None})
    status = await reconcile(cfg, "inv")
    assert status["operationState"]["phase"] == "Succeeded"
    assert get(cluster, namespace, "configmap/b") is None


async def test_self_heal_restores_scaled_deployment(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A hand-scaled Deployment is OutOfSync and self-heal restores it, writing nothing else."""
    git_repo.write(
        {
            "app/web.yaml": deployment("web", "nginx:1", replicas=2),
            "app/cm.yaml": configmap("settings"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("heal", git_repo.url, "app", namespace)])
    assert (await reconcile(cfg, "heal"))["operationState"]["phase"] == "Succeeded"
    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=5")
    status = await reconcile(cfg, "heal")
    op = status["operationState"]
    assert op["phase"] == "Succeeded"
    assert op["operation"]["initiatedBy"]["automated"] is True
    touched = [r["name"] for r in op["syncResult"]["resources"]]
    assert touched == ["web"], "self-heal must only apply what drifted"
    dep = get(cluster, namespace, "deployment/web")
    assert dep and dep["spec"]["replicas"] == 2


async def test_self_heal_off_leaves_drift_out_of_sync(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Without selfHeal, drift at an already-synced revision is reported, not corrected."""
    git_repo.write({"app/web.yaml": deployment("web", "nginx:1", replicas=1)})
    app = application("noheal", git_repo.url, "app", namespace, self_heal=False)
    cfg = write_config(tmp_path, cluster, [app])
    assert (await reconcile(cfg, "noheal"))["operationState"]["phase"] == "Succeeded"
    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3")
    status = await reconcile(cfg, "noheal")
    assert status["sync"]["status"] == "OutOfSync"
    dep = get(cluster, namespace, "deployment/web")
    assert dep and dep["spec"]["replicas"] == 3


async def test_noop_resync_makes_no_writes(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A resync with nothing changed sends no write (not even a dry-run) to the API server."""
    git_repo.write({f"app/cm{i}.yaml": configmap(f"cm{i}") for i in range(10)})
    cfg_path = write_config(
        tmp_path, cluster, [application("noop", git_repo.url, "app", namespace)]
    )
    cfg = settings.load(cfg_path)
    async with Engine.open(cfg) as engine:
        app = cfg.app("noop")
        first = await engine.reconciler.reconcile(app)
        assert first["operationState"]["phase"] == "Succeeded"
        client = await engine.client_for(app)
        before = dict(client.requests)
        second = await engine.reconciler.reconcile(app)
        delta = {k: v - before.get(k, 0) for k, v in client.requests.items()}
    assert second["sync"]["status"] == "Synced"
    writes = {k: v for k, v in delta.items() if k not in ("get", "list", "discover") and v}
    assert writes == {}, f"no-op resync wrote: {writes}"
    assert engine.renderer.renders == 1, "an unchanged revision must not be rendered twice"


async def test_sync_into_a_new_namespace_skips_dry_runs_that_can_only_fail(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With CreateNamespace=true and no namespace yet, the compare asks for the namespace once
    instead of sending one dry-run per object (each could only answer 404); the sync then
    creates the namespace and every object, and a dry-run runs again once it exists."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    git_repo.write({f"app/cm{i}.yaml": configmap(f"cm{i}") for i in range(20)})
    app_doc = application("newns", git_repo.url, "app", name, options=["CreateNamespace=true"])
    cfg = settings.load(write_config(tmp_path, cluster, [app_doc]))
    try:
        async with Engine.open(cfg) as engine:
            app = cfg.app("newns")
            client = await engine.client_for(app)
            await client.discover()
            status = await engine.reconciler.reconcile(app)
            assert status["operationState"]["phase"] == "Succeeded", status["operationState"]
            assert client.requests["apply (dry run)"] == 0
            # the 20 objects, plus the namespace and the inventory (written once or twice)
            assert 20 < client.requests["apply"] <= 23, client.requests
            assert get(cluster, name, "configmap/cm19") is not None
            git_repo.write({"app/cm0.yaml": configmap("cm0", data="changed")})
            status = await engine.reconciler.reconcile(app)
            assert client.requests["apply (dry run)"] == 1  # the namespace exists now
    finally:
        with cluster.sync_client() as c:
            c.delete(f"/api/v1/namespaces/{name}")


async def test_hooks_run_in_their_phases(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """PreSync runs before Sync resources, PostSync after; HookSucceeded hooks are deleted."""

    def job(name: str, hook: str, policy: str) -> str:
        return f"""apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
    argocd.argoproj.io/hook: {hook}
    argocd.argoproj.io/hook-delete-policy: {policy}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: "busybox:1"}}]
"""

    git_repo.write(
        {
            "app/pre.yaml": job("migrate", "PreSync", "BeforeHookCreation"),
            "app/post.yaml": job("smoke", "PostSync", "HookSucceeded"),
            "app/web.yaml": deployment("web", "nginx:1"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("hooks", git_repo.url, "app", namespace)])
    status = await reconcile(cfg, "hooks")
    op = status["operationState"]
    assert op["phase"] == "Succeeded", op["message"]
    phases = [(r["name"], r["syncPhase"]) for r in op["syncResult"]["resources"]]
    assert phases == [("migrate", "PreSync"), ("web", "Sync"), ("smoke", "PostSync")]
    migrate = get(cluster, namespace, "job/migrate")
    web = get(cluster, namespace, "deployment/web")
    assert migrate and web
    assert migrate["status"].get("succeeded") == 1
    assert "argocd.argoproj.io/hook-finalizer" not in migrate["metadata"].get("finalizers", [])
    wait_for(
        lambda: get(cluster, namespace, "job/smoke") is None,
        timeout=30,
        what="HookSucceeded PostSync job deleted",
    )
    assert status["sync"]["status"] == "Synced"


async def test_failed_presync_hook_blocks_sync_and_runs_syncfail(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A failing PreSync Job fails the operation before any Sync resource; SyncFail hooks run."""
    git_repo.write(
        {
            "app/pre.yaml": """apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations: {argocd.argoproj.io/hook: PreSync}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: "busybox:fail"}]
""",
            "app/onfail.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: sync-failed-marker
  annotations: {argocd.argoproj.io/hook: SyncFail}
data: {failed: "yes"}
""",
            "app/web.yaml": deployment("web", "nginx:1"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("prefail", git_repo.url, "app", namespace)])
    status = await reconcile(cfg, "prefail")
    op = status["operationState"]
    assert op["phase"] == "Failed"
    assert f"Job/{namespace}/migrate" in op["message"]
    assert get(cluster, namespace, "deployment/web") is None
    assert get(cluster, namespace, "configmap/sync-failed-marker") is not None


async def test_helm_and_kustomize_sources_render_with_options(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Helm (values, valuesObject, parameters) and Kustomize (namePrefix, images) apps sync."""
    git_repo.write(
        {
            "chart/Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
            "chart/values.yaml": "replicas: 1\ncolor: blue\n",
            "chart/values-prod.yaml": "color: green\n",
            "chart/templates/cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
                'data:\n  color: {{ .Values.color }}\n  replicas: "{{ .Values.replicas }}"\n'
                '  tier: {{ .Values.tier | default "none" }}\n'
            ),
            "kust/base/kustomization.yaml": "resources: [cm.yaml, dep.yaml]\n",
            "kust/base/cm.yaml": configmap("kcfg"),
            "kust/base/dep.yaml": deployment("kweb", "nginx:1.0"),
            "kust/overlay/kustomization.yaml": "resources: [../base]\n",
        }
    )
    helm_app = application(
        "helmapp",
        git_repo.url,
        "chart",
        namespace,
        source_extra={
            "helm": {
                "releaseName": "rel",
                "valueFiles": ["values-prod.yaml"],
                "valuesObject": {"tier": "gold"},
                "parameters": [{"name": "replicas", "value": "3"}],
            }
        },
    )
    kust_app = application(
        "kustapp",
        git_repo.url,
        "kust/overlay",
        namespace,
        source_extra={"kustomize": {"namePrefix": "p-", "images": ["nginx=nginx:1.27"]}},
    )
    cfg = write_config(tmp_path, cluster, [helm_app, kust_app])
    hs = await reconcile(cfg, "helmapp")
    assert hs["operationState"]["phase"] == "Succeeded", hs["operationState"]["message"]
    assert hs["sourceType"] == "Helm"
    cm = get(cluster, namespace, "configmap/rel-cfg")
    assert cm and cm["data"] == {"color": "green", "replicas": "3", "tier": "gold"}
    ks = await reconcile(cfg, "kustapp")
    assert ks["operationState"]["phase"] == "Succeeded", ks["operationState"]["message"]
    assert ks["sourceType"] == "Kustomize"
    assert get(cluster, namespace, "configmap/p-kcfg") is not None
    dep = get(cluster, namespace, "deployment/p-kweb")
    assert dep and dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


async def test_run_once_reports_synced_and_healthy(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`run --once` syncs every automated app and waits until each is Healthy."""
    git_repo.write({"app/web.yaml": deployment("web", "nginx:1", replicas=2)})
    cfg = write_config(tmp_path, cluster, [application("once", git_repo.url, "app", namespace)])
    results = await run_once(settings.load(cfg))
    ((name, status),) = results
    assert name == "once"
    assert status["sync"]["status"] == "Synced"
    assert status["health"]["status"] == "Healthy"


async def test_respect_ignore_differences_keeps_live_values(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With ignoreDifferences on /spec/replicas, a hand-scaled Deployment is Synced; with
    RespectIgnoreDifferences a sync for another change keeps the live replica count."""
    git_repo.write({"app/web.yaml": deployment("web", "nginx:1", replicas=1)})
    app = application(
        "rid",
        git_repo.url,
        "app",
        namespace,
        options=["RespectIgnoreDifferences=true"],
        ignoreDifferences=[
            {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}
        ],
    )
    cfg = write_config(tmp_path, cluster, [app])
    assert (await reconcile(cfg, "rid"))["operationState"]["phase"] == "Succeeded"
    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3")
    status = await reconcile(cfg, "rid")
    assert status["sync"]["status"] == "Synced", "ignored field must not make the app OutOfSync"
    git_repo.write({"app/web.yaml": deployment("web", "nginx:2", replicas=1)})
    status = await reconcile(cfg, "rid")
    assert status["operationState"]["phase"] == "Succeeded"
    dep = get(cluster, namespace, "deployment/web")
    assert dep and dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"


async def test_force_recreates_a_job_whose_template_changed(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Force=true on a Job lets a changed (immutable) pod template sync by recreating the Job;
    without it the dry-run refuses the change and nothing is written."""

    def job(image: str, force: bool) -> str:
        ann = "\n  annotations: {argocd.argoproj.io/sync-options: Force=true}" if force else ""
        return (
            f"apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate{ann}\n"
            "spec:\n  template:\n    spec:\n      restartPolicy: Never\n"
            f"      containers: [{{name: m, image: '{image}'}}]\n"
        )

    git_repo.write({"app/job.yaml": job("busybox:1", force=True)})
    cfg = write_config(tmp_path, cluster, [application("force", git_repo.url, "app", namespace)])
    assert (await reconcile(cfg, "force"))["operationState"]["phase"] == "Succeeded"
    first = get(cluster, namespace, "job/migrate")
    git_repo.write({"app/job.yaml": job("busybox:2", force=True)})
    status = await reconcile(cfg, "force")
    assert status["operationState"]["phase"] == "Succeeded", status["operationState"]["message"]
    second = get(cluster, namespace, "job/migrate")
    assert first and second and first["metadata"]["uid"] != second["metadata"]["uid"]
    assert second["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:2"
    git_repo.write({"app/job.yaml": job("busybox:3", force=False)})
    status = await reconcile(cfg, "force")
    assert status["operationState"]["phase"] == "Failed"
    assert "field is immutable" in status["operationState"]["message"]


async def test_multi_source_helm_value_files_from_a_ref_source(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`sources` with a `ref` source: Helm valueFiles `$values/...` come from that source."""
    git_repo.write(
        {
            "chart/Chart.yaml": "apiVersion: v2\nname: c\nversion: 0.1.0\n",
            "chart/templates/cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: refd}\n"
                "data: {tier: {{ .Values.tier | quote }}}\n"
            ),
            "env/prod/values.yaml": "tier: gold\n",
        }
    )
    app = application("multi", git_repo.url, "chart", namespace)
    src = app["spec"].pop("source")
    src["helm"] = {"valueFiles": ["$values/env/prod/values.yaml"]}
    app["spec"]["sources"] = [
        src,
        {"repoURL": git_repo.url, "targetRevision": "main", "ref": "values"},
    ]
    cfg = write_config(tmp_path, cluster, [app])
    status = await reconcile(cfg, "multi")
    assert status["operationState"]["phase"] == "Succeeded", status.get("conditions")
    assert (get(cluster, namespace, "cm/refd") or {})["data"] == {"tier": "gold"}
    git_repo.write({"env/prod/values.yaml": "tier: platinum\n"})
    status = await reconcile(cfg, "multi")
    assert (get(cluster, namespace, "cm/refd") or {})["data"] == {"tier": "platinum"}


async def test_concurrent_compares_share_a_list_that_is_never_older_than_them(
    cluster: Cluster, namespace: str
) -> None:
    """`list_fresh`: compares of one type and namespace running at once share LISTs (fewer
    than one each), yet every caller sees every write that completed before it asked."""
    import anyio

    from daemon.kube import KubeClient

    client = await KubeClient.from_kubeconfig(name="c", path=str(cluster.kubeconfig))
    try:
        rt = await client.resource_for("v1", "ConfigMap", subject="test")
        seen: list[set[str]] = []

        async def writer_then_reader(i: int) -> None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"f{i}", "namespace": namespace},
            }
            await client.create(rt, body)
            items = await client.list_fresh(rt, namespace)
            names = {it["metadata"]["name"] for it in items}
            assert f"f{i}" in names, f"f{i} written before the call, missing from its LIST"
            seen.append(names)

        before = client.requests["list"]
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(writer_then_reader, i)
        lists = client.requests["list"] - before
        assert len(seen) == 20
        assert lists < 20, f"{lists} LISTs for 20 concurrent callers"
    finally:
        await client.aclose()
