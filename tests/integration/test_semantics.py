"""Argo CD semantics that used to differ: stale retries, out-of-bounds symlinks, discovery."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from daemon import settings
from daemon.engine import Engine
from daemon.errors import SyncFailed
from daemon.reconciler import SyncRequest
from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_bad_input import assert_untouched, condition_text, synced_baseline
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get, reconcile

pytestmark = pytest.mark.cluster

BAD_SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999}]}\n"
GOOD_SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n"


def test_retries_of_a_failed_revision_stop_when_a_newer_one_syncs(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Revision A fails and is scheduled for retry; B fixes it and syncs; no operation on A
    starts after that, and the status stays on B."""
    bad = git_repo.write({"a/cm.yaml": configmap("c"), "a/svc.yaml": BAD_SERVICE})
    app = application("retry", git_repo.url, "a", namespace)
    app["spec"]["syncPolicy"]["retry"] = {"limit": 5, "backoff": {"duration": "3s", "factor": 1}}
    cfg = write_config(tmp_path, cluster, [app])
    with running(cfg) as d:
        wait_for(
            lambda: (d.status("retry").get("operationState") or {}).get("phase") == "Failed",
            timeout=60,
            what="revision A failed",
        )
        good = git_repo.write({"a/svc.yaml": GOOD_SERVICE})
        d.api("/api/v1/applications/retry/refresh", method="POST")
        wait_for(lambda: d.synced("retry", good), timeout=60, what="revision B synced")
        time.sleep(12)  # several retry periods of A
        st = d.status("retry")
        assert st["sync"] == {**st["sync"], "status": "Synced", "revision": good}
        assert st["operationState"]["syncResult"]["revision"] == good
        events = [json.loads(x) for x in d.log.read_text().splitlines() if x.startswith("{")]
    starts = [e.get("revision") for e in events if e.get("event") == "sync starting"]
    first_b = starts.index(good[:12])
    assert bad[:12] in starts[:first_b]
    assert bad[:12] not in starts[first_b:], starts


async def test_out_of_bounds_symlink_fails_the_whole_app(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A directory app holding a symlink that points outside the repository is refused whole,
    naming the link, instead of applying the other files without it; nothing is pruned."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    (git_repo.work / "app" / "escape.yaml").symlink_to("/etc/hostname")
    git_repo.write({"app/c.yaml": configmap("c")})
    status = await assert_untouched(cluster, namespace, cfg)
    text = condition_text(status)
    assert "symlink app/escape.yaml -> /etc/hostname points outside the repository" in text, text


async def test_folder_with_chart_and_kustomization_is_kustomize(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Argo CD's discovery: a folder with both Chart.yaml and kustomization.yaml is Kustomize."""
    git_repo.write(
        {
            "both/Chart.yaml": "apiVersion: v2\nname: both\nversion: 0.1.0\n",
            "both/templates/cm.yaml": configmap("from-helm"),
            "both/kustomization.yaml": "resources: [cm.yaml]\n",
            "both/cm.yaml": configmap("from-kustomize"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("both", git_repo.url, "both", namespace)])
    status = await reconcile(cfg, "both")
    assert status["sourceType"] == "Kustomize"
    assert get(cluster, namespace, "configmap/from-kustomize") is not None
    assert get(cluster, namespace, "configmap/from-helm") is None


JSONNET_APP = """local lib = import 'lib/labels.libsonnet';
function(replicas=1) [
  {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {name: 'from-jsonnet-' + std.extVar('env'), labels: lib.labels},
    data: {replicas: std.toString(replicas)},
  },
]
"""


async def test_jsonnet_directory_with_ext_vars_tlas_and_libs(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`*.jsonnet` files are evaluated with extVars, tlas (code) and libs, as in Argo CD;
    `*.libsonnet` files are only imported."""
    git_repo.write(
        {
            "j/app.jsonnet": JSONNET_APP,
            "j/helpers.libsonnet": "{}",
            "vendor/lib/labels.libsonnet": "{labels: {team: 'edge'}}",
        }
    )
    app = application(
        "jsonnet",
        git_repo.url,
        "j",
        namespace,
        source_extra={
            "directory": {
                "jsonnet": {
                    "extVars": [{"name": "env", "value": "prod"}],
                    "tlas": [{"name": "replicas", "value": "3", "code": True}],
                    "libs": ["vendor"],
                }
            }
        },
    )
    cfg = write_config(tmp_path, cluster, [app])
    status = await reconcile(cfg, "jsonnet")
    assert status["operationState"]["phase"] == "Succeeded", status["operationState"]["message"]
    cm = get(cluster, namespace, "configmap/from-jsonnet-prod")
    assert cm is not None
    assert cm["data"] == {"replicas": "3"}
    assert cm["metadata"]["labels"]["team"] == "edge"


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("import '/etc/hostname'", "import '/etc/hostname' is outside the repository"),
        ("import '../../../../../../etc/hostname'", "is outside the repository"),
        ("local f(x) = f(x) + 1; f(1)", "Jsonnet error"),
        ("std.length(std.repeat('x', 1000))", "Jsonnet produced int, not objects"),
    ],
)
async def test_bad_jsonnet_fails_the_app_naming_the_file(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    program: str,
    expected: str,
) -> None:
    """Imports outside the repository, runaway recursion and non-object results fail the app
    with the file named; nothing is applied or pruned."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    git_repo.write({"app/x.jsonnet": program})
    status = await assert_untouched(cluster, namespace, cfg)
    text = condition_text(status)
    assert "app/x.jsonnet" in text and expected in text, text


async def test_runaway_jsonnet_is_stopped_at_the_render_timeout(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A Jsonnet program that would run for minutes is killed at repoTimeout, naming the file."""
    git_repo.write({"slow/x.jsonnet": "std.foldl(function(a, b) a + b, std.range(1, 1e9), 0)"})
    cfg = write_config(
        tmp_path, cluster, [application("slowj", git_repo.url, "slow", namespace)], repoTimeout="3s"
    )
    started = time.monotonic()
    status = await reconcile(cfg, "slowj")
    assert time.monotonic() - started < 30
    assert "slow/x.jsonnet: Jsonnet evaluation took longer than 3s" in condition_text(status)


def delete_hook(name: str, hook: str, image: str = "busybox:1") -> str:
    return f"""apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
    argocd.argoproj.io/hook: {hook}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: "{image}"}}]
"""


async def test_pre_and_post_delete_hooks_run_around_cascade_delete(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """PreDelete/PostDelete hooks are left out of syncs, and run on cascade delete: PreDelete
    before the resources go, PostDelete after."""
    git_repo.write(
        {
            "d/cm.yaml": configmap("doomed"),
            "d/pre.yaml": delete_hook("before-delete", "PreDelete"),
            "d/post.yaml": delete_hook("after-delete", "PostDelete"),
        }
    )
    app = application("deleting", git_repo.url, "d", namespace)
    app["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    cfg = write_config(tmp_path, cluster, [app])
    conf = settings.load(cfg)
    async with Engine.open(conf) as engine:
        status = await engine.reconciler.reconcile(conf.app("deleting"))
        assert status["operationState"]["phase"] == "Succeeded"
        assert get(cluster, namespace, "job/before-delete") is None  # not part of a sync
        assert get(cluster, namespace, "job/after-delete") is None
        await engine.reconciler.delete_app(conf.app("deleting"))
    assert get(cluster, namespace, "configmap/doomed") is None
    pre, post = (
        get(cluster, namespace, "job/before-delete"),
        get(cluster, namespace, "job/after-delete"),
    )
    assert pre is not None and post is not None
    assert pre["metadata"]["creationTimestamp"] <= post["metadata"]["creationTimestamp"]


async def test_failing_pre_delete_hook_blocks_deletion(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A PreDelete hook that fails blocks the deletion: nothing of the app is deleted and the
    error names the hook."""
    git_repo.write(
        {"d/cm.yaml": configmap("kept"), "d/pre.yaml": delete_hook("guard", "PreDelete", "x:fail")}
    )
    app = application("guarded", git_repo.url, "d", namespace)
    app["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    cfg = write_config(tmp_path, cluster, [app], healthTimeout="20s")
    conf = settings.load(cfg)
    async with Engine.open(conf) as engine:
        await engine.reconciler.reconcile(conf.app("guarded"))
        with pytest.raises(SyncFailed, match=r"PreDelete hook Job/.*/guard did not succeed"):
            await engine.reconciler.delete_app(conf.app("guarded"))
    assert get(cluster, namespace, "configmap/kept") is not None


def tracked_cm(name: str, app: str, namespace: str, *, ignore_extraneous: bool = False) -> str:
    """A ConfigMap carrying `app`'s tracking id, as a hand-applied copy of a manifest would."""
    extra = (
        "\n    argocd.argoproj.io/compare-options: IgnoreExtraneous" if ignore_extraneous else ""
    )
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: {namespace}
  annotations:
    argocd.argoproj.io/tracking-id: {app}:/ConfigMap:{namespace}/{name}{extra}
data: {{k: v}}
"""


async def test_extraneous_tracked_objects_are_found_and_pruned(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Objects carrying the app's tracking id that no inventory records are OutOfSync
    'requires pruning' and pruned; IgnoreExtraneous ones do not make the app OutOfSync; an
    object tracked by another app is never touched."""
    git_repo.write({"app/a.yaml": configmap("a")})
    app = application("orphans", git_repo.url, "app", namespace, prune=False)
    cfg = write_config(tmp_path, cluster, [app])
    status = await reconcile(cfg, "orphans")
    assert status["sync"]["status"] == "Synced"
    cluster.kubectl(
        "apply", "-f", "-", input=tracked_cm("quiet", "orphans", namespace, ignore_extraneous=True)
    )
    cluster.kubectl("apply", "-f", "-", input=tracked_cm("other", "someone-else", namespace))
    status = await reconcile(cfg, "orphans")
    assert status["sync"]["status"] == "Synced"  # only an IgnoreExtraneous extra
    cluster.kubectl("apply", "-f", "-", input=tracked_cm("stray", "orphans", namespace))
    status = await reconcile(cfg, "orphans")
    assert status["sync"]["status"] == "OutOfSync"
    pruning = {r["name"] for r in status["resources"] if r.get("requiresPruning")}
    assert pruning == {"stray", "quiet"}
    data = yaml.safe_load((tmp_path / "apps" / "orphans.yaml").read_text())
    data["spec"]["syncPolicy"]["automated"]["prune"] = True
    (tmp_path / "apps" / "orphans.yaml").write_text(yaml.safe_dump(data))
    status = await reconcile(cfg, "orphans")
    assert status["sync"]["status"] == "Synced", status["operationState"]["message"]
    assert get(cluster, namespace, "configmap/stray") is None
    assert get(cluster, namespace, "configmap/quiet") is None
    assert get(cluster, namespace, "configmap/other") is not None


async def test_identical_duplicates_are_a_warning_not_an_error(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The same object in two files syncs once with a RepeatedResourceWarning, as in Argo CD."""
    git_repo.write({"dup/a.yaml": configmap("same"), "dup/b.yaml": configmap("same")})
    cfg = write_config(tmp_path, cluster, [application("dups", git_repo.url, "dup", namespace)])
    status = await reconcile(cfg, "dups")
    assert status["operationState"]["phase"] == "Succeeded"
    assert status["sync"]["status"] == "Synced"
    warnings = [c for c in status["conditions"] if c["type"] == "RepeatedResourceWarning"]
    assert warnings and "dup/a.yaml and dup/b.yaml" in warnings[0]["message"]
    assert get(cluster, namespace, "configmap/same") is not None


async def test_validate_false_lets_unknown_fields_through(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`Validate=false` applies an object with a field the schema does not know, as users
    expect from Argo CD (kubectl --validate=false); without it the app is refused."""
    body = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loose\n  annotations:\n"
        "    argocd.argoproj.io/sync-options: Validate=false\ndata: {k: v}\nextraField: 1\n"
    )
    git_repo.write({"v/cm.yaml": body})
    cfg = write_config(tmp_path, cluster, [application("loose", git_repo.url, "v", namespace)])
    status = await reconcile(cfg, "loose")
    assert status["operationState"]["phase"] == "Succeeded", status.get("conditions")
    assert get(cluster, namespace, "configmap/loose") is not None


async def test_sync_results_say_unchanged_for_objects_not_written(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A manual sync of an app already in sync reports each object 'unchanged'."""
    git_repo.write({"u/cm.yaml": configmap("steady")})
    cfg = write_config(
        tmp_path, cluster, [application("steady", git_repo.url, "u", namespace, automated=False)]
    )
    first = await reconcile(cfg, "steady", SyncRequest(initiated_by="tester"))
    assert first["operationState"]["syncResult"]["resources"][0]["message"].endswith("created")
    second = await reconcile(cfg, "steady", SyncRequest(initiated_by="tester"))
    [result] = second["operationState"]["syncResult"]["resources"]
    assert result["message"] == "configmap/steady unchanged"
    assert result["action"] == "unchanged"


ARGOCD_CM = """apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
  resource.customizations.health._ConfigMap: |
    hs = {}
    if obj.data ~= nil and obj.data.state == "broken" then
      hs.status = "Degraded"
      hs.message = "state is " .. obj.data.state
      return hs
    end
    hs.status = "Healthy"
    return hs
  resource.customizations.ignoreDifferences._ConfigMap: |
    jsonPointers: [/data/tuned]
  resource.exclusions: |
    - apiGroups: [""]
      kinds: [Secret]
"""


async def test_argocd_cm_health_lua_ignore_differences_and_exclusions(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An argocd-cm among the application files carries over: a Lua health check decides the
    health of its kind, system-wide ignoreDifferences keep a drifted field Synced, and an
    excluded kind is left alone with a warning."""
    git_repo.write(
        {
            "cm/ok.yaml": configmap("ok"),
            "cm/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
            "stringData: {k: v}\n",
        }
    )
    cfg = write_config(tmp_path, cluster, [application("custom", git_repo.url, "cm", namespace)])
    (tmp_path / "apps" / "argocd-cm.yaml").write_text(ARGOCD_CM)
    status = await reconcile(cfg, "custom")
    assert status["operationState"]["phase"] == "Succeeded"
    assert status["health"]["status"] == "Healthy"
    assert get(cluster, namespace, "secret/s") is None
    excluded = [c for c in status["conditions"] if c["type"] == "ExcludedResourceWarning"]
    assert excluded and f"Secret/{namespace}/s" in excluded[0]["message"]
    cluster.kubectl("patch", "cm", "ok", "-n", namespace, "-p", '{"data":{"tuned":"by-hand"}}')
    status = await reconcile(cfg, "custom")
    assert status["sync"]["status"] == "Synced"
    git_repo.write(
        {
            "cm/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\n"
            "data: {state: broken}\n"
        }
    )
    status = await reconcile(cfg, "custom")
    assert status["health"]["status"] == "Degraded"
    bad = next(r for r in status["resources"] if r["name"] == "bad")
    assert bad["health"] == {"status": "Degraded", "message": "state is broken"}


def test_argocd_cm_lua_that_loops_or_escapes_is_contained() -> None:
    """A Lua health script cannot reach the host or run forever: it yields Unknown health."""
    from daemon.health.lua import evaluate

    assert "os" in evaluate("return os.execute('id')", {}).message
    looping = evaluate("while true do end", {})
    assert looping.status == "Unknown" and "budget" in looping.message


@pytest.mark.parametrize("method", ["label", "annotation+label"])
async def test_resource_tracking_methods(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, method: str
) -> None:
    """`resourceTrackingMethod` label writes the app.kubernetes.io/instance label (and no
    tracking annotation) and prunes by it; annotation+label writes both and prunes by the
    annotation; objects labelled for another app are never pruned."""
    git_repo.write({"t/a.yaml": configmap("a"), "t/b.yaml": configmap("b")})
    app = application("tracked", git_repo.url, "t", namespace)
    cfg = write_config(tmp_path, cluster, [app], resourceTrackingMethod=method)
    status = await reconcile(cfg, "tracked")
    assert status["operationState"]["phase"] == "Succeeded"
    live = get(cluster, namespace, "configmap/a")
    assert live is not None
    assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == "tracked"
    annotations = live["metadata"].get("annotations") or {}
    assert ("argocd.argoproj.io/tracking-id" in annotations) == (method == "annotation+label")
    foreign = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: foreign\n"
        "  labels: {app.kubernetes.io/instance: other-app}\n"
    )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=foreign)
    git_repo.write({"t/b.yaml": None})
    status = await reconcile(cfg, "tracked")
    assert status["sync"]["status"] == "Synced"
    assert get(cluster, namespace, "configmap/b") is None
    assert get(cluster, namespace, "configmap/foreign") is not None
