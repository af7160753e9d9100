"""Unit tests for the pure parts of the reconcile stages: desired (placement), compare (decisions),
decide (automated sync, self-heal backoff, resume, windows), sync (preflight, selection,
ownership, fingerprints), waves and hooks (messages, naming), children and status building."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from daemon.appproject import AppProject
from daemon.children import ChildRegistry, compare_children
from daemon.compare import (
    dry_run_failure_status,
    fingerprint_current,
    namespaces_created_by_sync,
    owned_extras,
    wanted_types,
)
from daemon.decide import HealBackoff, auto_sync_request, resume_request, window_allows
from daemon.desired import crd_scopes, inputs_key, placed
from daemon.errors import KubeError
from daemon.health.wait import WaitResult
from daemon.kube import FIELD_MANAGER
from daemon.model import (
    Action,
    Body,
    Health,
    HealthStatus,
    HookType,
    Manifest,
    OperationPhase,
    ResourceKey,
    ResourceResult,
    ResourceType,
    ResultCode,
    SyncPhase,
    SyncStatus,
)
from daemon.plan import tracking
from daemon.plan.options import parse_sync_options
from daemon.plan.order import SyncTask
from daemon.settings import Application, ClusterConfig, parse_application
from daemon.stages import Comparison, Desired, Operation, SyncRequest
from daemon.status.build import build_status, error_status, meaningful
from daemon.sync import (
    dry_run_results,
    owned_after,
    preflight,
    record_fingerprints,
    select_manifests,
)
from daemon.sync.children import child_verdict
from daemon.sync.hooks import hook_body, hook_label, should_delete
from daemon.sync.waves import _by_kind, mark_failed, wait_failure

CM = ResourceType("", "v1", "ConfigMap", "configmaps", True, frozenset({"get", "list"}))
CLUSTER = ClusterConfig(name="in-cluster", server="https://kubernetes.default.svc")


def app(**spec: Any) -> Application:
    """An Application 'web' syncing into namespace 'shop', with `spec` merged in."""
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "web", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example.com/r.git", "path": "p"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"},
            **spec,
        },
    }
    return parse_application(doc, where="test", warnings=[])


def cm(name: str, ns: str = "shop", **annotations: str) -> Manifest:
    """A ConfigMap manifest tracked for app 'web'."""
    body: Body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "annotations": dict(annotations)},
        "data": {"k": name},
    }
    key = ResourceKey.of(body)
    tid = tracking.build("web", key, namespaced=True, dest_namespace="shop")
    return Manifest(key, tracking.with_tracking(body, tid), "cm.yaml")


def desired_of(*manifests: Manifest, revision: str = "a" * 40) -> Desired:
    """A Desired at `revision` with every manifest typed as a ConfigMap."""
    return Desired(revision, [revision], list(manifests), {m.key: CM for m in manifests}, "dir")


def live_of(m: Manifest, uid: str = "u1") -> Body:
    """The live object for `m`, owned by our field manager."""
    body = {**m.body, "metadata": {**m.body["metadata"], "uid": uid}}
    body["metadata"]["managedFields"] = [
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}}}}
    ]
    return body


def result(key: ResourceKey, code: ResultCode, **kw: Any) -> ResourceResult:
    """A ResourceResult in Sync wave 0."""
    action = kw.pop("action", Action.CONFIGURED)
    return ResourceResult(key, "v1", action, code, kw.pop("message", ""), SyncPhase.SYNC, 0, **kw)


# --- desired ---------------------------------------------------------------------------------


def test_placed_defaults_namespace_and_adds_tracking() -> None:
    """A namespaced object without a namespace lands in the destination one, tracked by the app."""
    m = Manifest(ResourceKey("", "ConfigMap", "", "a"), cm("a").body | {"metadata": {"name": "a"}})
    body, error = placed(app(), m, namespaced=True)
    assert error == ""
    assert body["metadata"]["namespace"] == "shop"
    assert tracking.is_owned_by(body, "web", namespaced=True)


def test_placed_strips_namespace_from_cluster_scoped_and_refuses_nowhere() -> None:
    """Cluster-scoped objects lose a namespace; a namespaced one with nowhere to go is an error."""
    m = cm("a")
    body, _ = placed(app(), m, namespaced=False)
    assert "namespace" not in body["metadata"]
    no_ns = app(destination={"server": "https://kubernetes.default.svc"})
    bare = Manifest(m.key, {**m.body, "metadata": {"name": "a"}}, "x.yaml")
    _, error = placed(no_ns, bare, namespaced=True)
    assert "x.yaml: ConfigMap/a: namespaced resource has no metadata.namespace" in error


def test_crd_scopes_reads_group_kind_and_scope() -> None:
    """CRDs in a render define the scope of their kinds before they are installed."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Widget"}, "scope": "Cluster"},
    }
    assert crd_scopes([Manifest(ResourceKey.of(crd), crd)]) == {("example.com", "Widget"): False}


def test_inputs_key_changes_with_spec_and_revisions() -> None:
    """The quick path's key moves when a source commit or the spec changes."""
    a = app()
    assert inputs_key(a, ["1"]) != inputs_key(a, ["2"])
    assert inputs_key(a, ["1"]) != inputs_key(app(revisionHistoryLimit=3), ["1"])


# --- compare ---------------------------------------------------------------------------------


def test_fingerprint_current_needs_same_body_fields_and_uid() -> None:
    """An object is recognised unchanged only when body, owned fields and uid all match."""
    m = cm("a")
    live = live_of(m)
    fp = [tracking.fingerprint(m.body), tracking.manager_fields(live, FIELD_MANAGER), "u1"]
    assert fingerprint_current(fp, m.body, live)
    assert not fingerprint_current(fp, m.body, live_of(m, uid="u2"))  # recreated
    assert not fingerprint_current(fp, cm("a", x="1").body, live)  # desired changed
    assert not fingerprint_current(None, m.body, live)
    assert not fingerprint_current(fp, m.body, None)


def test_owned_extras_are_tracked_objects_git_no_longer_has() -> None:
    """Prune candidates: tracked by this app, not desired, not owned by another object."""
    kept, gone, child = cm("kept"), cm("gone"), cm("child")
    foreign = Manifest(cm("foreign").key, {**cm("foreign").body, "metadata": {"name": "foreign"}})
    child_body = {**child.body, "metadata": {**child.body["metadata"], "ownerReferences": [{}]}}
    live = {
        kept.key: kept.body,
        gone.key: gone.body,
        child.key: child_body,
        foreign.key: foreign.body,
    }
    types = dict.fromkeys(live, CM)
    assert set(owned_extras(live, {kept.key}, types, "web")) == {gone.key}


def test_wanted_types_adds_recorded_keys_with_preferred_types() -> None:
    """Recorded (inventory) keys are read too; unknown kinds and child apps are skipped."""
    a = cm("a")
    old = ResourceKey("", "ConfigMap", "shop", "old")
    unknown = ResourceKey("x.io", "Gone", "shop", "u")
    child = ResourceKey("argoproj.io", "Application", "argocd", "c")

    def preferred(group: str, kind: str) -> ResourceType | None:
        return CM if kind == "ConfigMap" else None

    got = wanted_types([a], {a.key: CM}, [old, unknown, child], preferred)
    assert got == {a.key: CM, old: CM}


def test_dry_run_failures_expected_before_the_sync_are_not_errors() -> None:
    """404 in a namespace the sync creates, and 422 under Force, are OutOfSync, not errors."""
    e404 = KubeError("ConfigMap/shop/a", "apply", "not found", status=404)
    e422 = KubeError("Job/shop/j", "apply", "immutable", status=422)
    assert dry_run_failure_status(e404, exists=False, namespace_pending=True, force=False) is (
        SyncStatus.OUT_OF_SYNC
    )
    assert dry_run_failure_status(e404, exists=False, namespace_pending=False, force=False) is None
    assert dry_run_failure_status(e422, exists=True, namespace_pending=False, force=True) is (
        SyncStatus.OUT_OF_SYNC
    )
    assert dry_run_failure_status(e422, exists=True, namespace_pending=False, force=False) is None


def test_namespaces_created_by_sync() -> None:
    """Namespace manifests and CreateNamespace=true count as created by the sync."""
    ns = Manifest(ResourceKey("", "Namespace", "", "extra"), {"kind": "Namespace"})
    assert namespaces_created_by_sync(app(), [ns]) == {"extra"}
    created = app(syncPolicy={"syncOptions": ["CreateNamespace=true"]})
    assert namespaces_created_by_sync(created, []) == {"shop"}


# --- decide ----------------------------------------------------------------------------------


def out_of_sync(key: ResourceKey) -> Comparison:
    """A comparison where `key` is OutOfSync."""
    return Comparison(live={}, owned_extra={}, status={key: SyncStatus.OUT_OF_SYNC})


def last_op(phase: str, revision: str) -> dict[str, Any]:
    """A status whose last operation ended in `phase` at `revision`."""
    return {"operationState": {"phase": phase, "syncResult": {"revision": revision}}}


AUTO = {"syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}


def test_auto_sync_only_with_policy_and_only_out_of_sync() -> None:
    """No automated policy, or a Synced app, means no sync."""
    key = cm("a").key
    backoff = HealBackoff()
    assert auto_sync_request(app(), {}, "r1", out_of_sync(key), backoff=backoff, now=0) is None
    synced = Comparison(live={}, owned_extra={}, status={key: SyncStatus.SYNCED})
    assert auto_sync_request(app(**AUTO), {}, "r1", synced, backoff=backoff, now=0) is None
    req = auto_sync_request(app(**AUTO), {}, "r1", out_of_sync(key), backoff=backoff, now=0)
    assert req == SyncRequest(prune=True, initiated_by="automated", self_heal=False)


def test_auto_sync_never_retries_a_failed_revision() -> None:
    """A revision whose sync failed is not synced again until a new commit."""
    key = cm("a").key
    status = last_op("Failed", "r1")
    assert (
        auto_sync_request(app(**AUTO), status, "r1", out_of_sync(key), backoff=HealBackoff(), now=0)
        is None
    )
    assert auto_sync_request(
        app(**AUTO), status, "r2", out_of_sync(key), backoff=HealBackoff(), now=0
    )


def test_self_heal_needs_the_flag_and_backs_off() -> None:
    """Drift after a successful sync heals only with selfHeal, then waits 2 s, 6 s, ..."""
    key = cm("a").key
    status = last_op("Succeeded", "r1")
    no_heal = app(syncPolicy={"automated": {"prune": True}})
    assert (
        auto_sync_request(no_heal, status, "r1", out_of_sync(key), backoff=HealBackoff(), now=0)
        is None
    )
    backoff = HealBackoff()

    def heal(now: float) -> SyncRequest | None:
        return auto_sync_request(
            app(**AUTO), status, "r1", out_of_sync(key), backoff=backoff, now=now
        )

    first = heal(100.0)
    assert first is not None and first.self_heal
    assert heal(101.0) is None and backoff.retry_in["web"] == pytest.approx(1.0)
    assert heal(102.0) is not None
    assert heal(107.0) is None  # 6 s after the second attempt
    assert heal(108.0) is not None


@pytest.mark.parametrize("phase", ["Terminating", "Running"])
def test_resume_request_for_unfinished_operations(phase: str) -> None:
    """An operation a shutdown interrupted (Terminating) or a crash cut short (Running) resumes
    with its revision, prune flag, options, initiator and identity."""
    assert resume_request(last_op("Succeeded", "r1")) is None
    status = last_op(phase, "r1")
    status["operationState"]["operation"] = {
        "sync": {"prune": True, "syncOptions": ["Replace=true"]},
        "initiatedBy": {"username": "api"},
        "operationId": "op7",
    }
    assert resume_request(status) == SyncRequest(
        revision="r1", prune=True, initiated_by="api", options=("Replace=true",), operation_id="op7"
    )


def test_window_allows_reports_invalid_windows_and_blocks() -> None:
    """A deny window that is active blocks an automated sync and says why; no windows allow."""
    window = {"kind": "deny", "schedule": "0 22 * * *", "duration": "1h", "applications": ["*"]}
    project = AppProject(name="p", raw={"spec": {"syncWindows": [window]}})
    night = dt.datetime(2024, 5, 13, 22, 30, tzinfo=dt.UTC)
    allowed, why = window_allows(app(), project, CLUSTER, SyncRequest(), now=night)
    assert not allowed and "deny window" in why
    assert window_allows(app(), AppProject(name="q"), CLUSTER, SyncRequest(), now=night) == (
        True,
        "",
    )


# --- sync ------------------------------------------------------------------------------------


def test_preflight_refuses_empty_prune_dry_run_errors_and_shared() -> None:
    """Nothing is written when a prune would empty the app, a dry run failed, or a shared
    resource is refused."""
    opts = parse_sync_options([])
    empty = desired_of()
    gone = Comparison(live={}, owned_extra={cm("a").key: cm("a").body}, status={})
    assert "refusing to prune every resource" in preflight(
        empty, gone, opts, prune=True, allow_empty=False
    )
    assert preflight(empty, gone, opts, prune=True, allow_empty=True) == ""
    broken = Comparison(live={}, owned_extra={}, status={}, errors={cm("a").key: "bad"})
    assert "failed to apply (dry run): bad" in preflight(
        desired_of(cm("a")), broken, opts, prune=False, allow_empty=False
    )
    shared = Comparison(live={}, owned_extra={}, status={}, shared={cm("a").key: "shared!"})
    strict = parse_sync_options(["FailOnSharedResource=true"])
    assert "Shared resource found: shared!" in preflight(
        desired_of(cm("a")), shared, strict, prune=False, allow_empty=False
    )


def test_select_manifests_automated_applies_only_out_of_sync_and_self_heal_skips_hooks() -> None:
    """Automated syncs apply OutOfSync resources plus hooks; a self-heal skips hooks; a manual
    sync applies everything."""
    a, b = cm("a"), cm("b")
    hook = cm("h", **{"argocd.argoproj.io/hook": "PreSync"})
    desired = desired_of(a, b, hook)
    comparison = Comparison(
        live={}, owned_extra={}, status={a.key: SyncStatus.SYNCED, b.key: SyncStatus.OUT_OF_SYNC}
    )
    opts = parse_sync_options([])
    auto = select_manifests(app(), desired, comparison, SyncRequest(), opts)
    assert [m.key.name for m in auto] == ["b", "h"]
    heal = select_manifests(app(), desired, comparison, SyncRequest(self_heal=True), opts)
    assert [m.key.name for m in heal] == ["b"]
    manual = select_manifests(app(), desired, comparison, SyncRequest(initiated_by="me"), opts)
    assert [m.key.name for m in manual] == ["a", "b", "h"]


def test_owned_after_keeps_everything_touched_when_the_sync_failed() -> None:
    """After success: synced objects and skipped prunes; after failure, all targets and prunes."""
    a, b, old = cm("a"), cm("b"), cm("old")
    desired = desired_of(a, b)
    comparison = Comparison(live={}, owned_extra={old.key: old.body}, status={})
    results = [result(a.key, ResultCode.SYNCED)]
    assert owned_after(results, desired, comparison, failed=False) == {a.key}
    assert owned_after(results, desired, comparison, failed=True) == {a.key, b.key, old.key}
    skipped = [result(old.key, ResultCode.PRUNE_SKIPPED, action=Action.SKIPPED)]
    assert owned_after(skipped, desired, comparison, failed=False) == {old.key}


def test_record_fingerprints_adds_synced_drops_pruned_and_undesired() -> None:
    """Fingerprints follow results: synced objects recorded, pruned and no longer desired gone."""
    a = cm("a")
    fingerprints = {"stale": ["x", "y", "z"], tracking.key_to_str(cm("b").key): ["1", "2", "3"]}
    live = live_of(a)
    record_fingerprints(
        [result(a.key, ResultCode.SYNCED, live=live), result(cm("b").key, ResultCode.PRUNED)],
        desired_of(a),
        fingerprints,
    )
    assert list(fingerprints) == [tracking.key_to_str(a.key)]
    assert fingerprints[tracking.key_to_str(a.key)][2] == "u1"


def test_dry_run_results_report_every_task() -> None:
    """A dry run reports each task as synced or pruned, marked '(dry run)'."""
    a = cm("a")
    tasks = [
        SyncTask(a.key, SyncPhase.SYNC, 0, a.body, None),
        SyncTask(cm("b").key, SyncPhase.SYNC, 0, None, cm("b").body),
    ]
    codes = [(r.status, r.message) for r in dry_run_results(tasks)]
    assert codes == [(ResultCode.SYNCED, "(dry run)"), (ResultCode.PRUNED, "(dry run)")]


# --- waves and hooks -------------------------------------------------------------------------


def test_wait_failure_names_failed_and_waiting_resources() -> None:
    """The wave failure message names what degraded and what was still waiting."""
    a, b = cm("a").key, cm("b").key
    wait = WaitResult(
        healths={a: Health(HealthStatus.DEGRADED, "crash"), b: Health(HealthStatus.PROGRESSING)},
        failed=(a,),
        waiting=(b,),
        timed_out=True,
        live={},
    )
    message = wait_failure(wait, SyncPhase.SYNC, 2)
    assert message.startswith("Sync wave 2 failed: ConfigMap/shop/a is Degraded: crash")
    assert "timed out waiting for health in Sync wave 2: ConfigMap/shop/b (Progressing" in message
    marked = mark_failed([result(a, ResultCode.SYNCED), result(b, ResultCode.SYNCED)], wait)
    assert [(r.status, r.message) for r in marked] == [
        (ResultCode.SYNC_FAILED, "crash"),
        (ResultCode.SYNCED, ""),
    ]


def test_by_kind_groups_consecutive_tasks() -> None:
    """Applies run grouped by consecutive kind, in order."""
    t = [
        SyncTask(ResourceKey("", k, "", n), SyncPhase.SYNC, 0, {}, None)
        for k, n in [("ConfigMap", "a"), ("ConfigMap", "b"), ("Service", "s"), ("ConfigMap", "c")]
    ]
    assert [[x.key.name for x in g] for g in _by_kind(t)] == [["a", "b"], ["s"], ["c"]]


def test_hook_body_names_generate_name_hooks_per_revision_and_holds_finalizer() -> None:
    """generateName hooks get a name from revision, phase and run; the hook finalizer is added."""
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "Migrate-"}}
    task = SyncTask(
        ResourceKey("batch", "Job", "shop", ""),
        SyncPhase.PRE_SYNC,
        0,
        body,
        None,
        True,
        HookType.PRE_SYNC,
    )
    out = hook_body(task, app="web", revision="abcdef1234", run_stamp="99", operation_id="op1")
    assert out["metadata"]["name"] == "migrate-abcdef1-presync-99"
    assert out["metadata"]["finalizers"] == ["argocd.argoproj.io/hook-finalizer"]
    assert "generateName" not in out["metadata"]
    assert out["metadata"]["labels"] == {"gitopsd.io/hook-of": "web"}
    assert out["metadata"]["annotations"] == {"gitopsd.io/operation": "op1"}
    again = hook_body(task, app="web", revision="abcdef1234", run_stamp="99", operation_id="op1")
    assert again == out  # a resumed operation looks for exactly the same hook


def test_hook_label_fits_any_app_name() -> None:
    """App names that are not valid label values are hashed into one."""
    assert hook_label("web") == "web"
    long = hook_label("a" * 100)
    assert len(long) <= 63 and long.startswith("h-")


def test_should_delete_follows_delete_policy() -> None:
    """HookSucceeded deletes after success only, HookFailed after failure only."""
    ok = {"metadata": {"annotations": {"argocd.argoproj.io/hook-delete-policy": "HookSucceeded"}}}
    assert should_delete(ok, succeeded=True) and not should_delete(ok, succeeded=False)
    bad = {"metadata": {"annotations": {"argocd.argoproj.io/hook-delete-policy": "HookFailed"}}}
    assert should_delete(bad, succeeded=False) and not should_delete(bad, succeeded=True)


# --- children --------------------------------------------------------------------------------


def test_child_verdict() -> None:
    """A child gates its wave until Synced+Healthy; failure, Degraded or a refused spec fail it."""
    assert child_verdict({"sync": {"status": "Synced"}, "health": {"status": "Healthy"}})[0] is (
        ResultCode.SYNCED
    )
    failed = {"operationState": {"phase": "Failed", "message": "boom"}}
    assert child_verdict(failed) == (ResultCode.SYNC_FAILED, "boom")
    refused = {"conditions": [{"type": "InvalidSpecError", "message": "no"}]}
    assert child_verdict(refused) == (ResultCode.SYNC_FAILED, "no")
    assert (
        child_verdict({"sync": {"status": "OutOfSync"}, "health": {"status": "Progressing"}})[0]
        is None
    )


def test_compare_children_synced_when_registered_as_rendered() -> None:
    """A registered child rendered identically is Synced; an unregistered one OutOfSync; a
    registered child no longer rendered is a prune candidate."""
    parent = app()
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "child", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example.com/r.git", "path": "c"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "c"},
        },
    }
    registry = ChildRegistry()
    child = registry.parse_child(parent, doc, top_level=set())
    registry.register("web", child, doc)
    old = {**doc, "metadata": {"name": "old", "namespace": "argocd"}}
    registry.register("web", registry.parse_child(parent, old, top_level=set()), old)
    comparison = Comparison(live={}, owned_extra={}, status={})
    m = Manifest(ResourceKey.of(doc), doc)
    compare_children(
        "web", [m], registry, lambda name: {"health": {"status": "Healthy"}}, comparison
    )
    assert comparison.status == {m.key: SyncStatus.SYNCED}
    assert comparison.live[m.key]["status"] == {"health": {"status": "Healthy"}}
    assert [k.name for k in comparison.owned_extra] == ["old"]


# --- status ----------------------------------------------------------------------------------


def test_build_status_records_history_on_success_and_condition_on_failure() -> None:
    """A successful sync appends history (trimmed to the limit); a failed one adds SyncError."""
    a = cm("a")
    desired = desired_of(a)
    comparison = Comparison(
        live={a.key: live_of(a)}, owned_extra={}, status={a.key: SyncStatus.SYNCED}
    )
    ok = Operation(OperationPhase.SUCCEEDED, "done", [], "t0", "t1", desired.revision)
    limited = app(revisionHistoryLimit=1)
    status = build_status(limited, {}, desired, comparison, ok, [], SyncRequest())
    status = build_status(limited, status, desired, comparison, ok, [], SyncRequest())
    assert status["sync"]["status"] == "Synced"
    assert status["health"]["status"] == "Healthy"
    assert [h["id"] for h in status["history"]] == [1]
    failed = Operation(OperationPhase.FAILED, "boom", [], "t0", "t1", desired.revision)
    status = build_status(app(), {}, desired, comparison, failed, [], SyncRequest())
    assert status["operationState"]["phase"] == "Failed"
    assert [c["type"] for c in status["conditions"]] == ["SyncError"]


def test_error_status_keeps_last_state_as_unknown() -> None:
    """A failed comparison keeps the previous status, sync Unknown, health Unknown when the
    cluster is unreachable."""
    previous = {"sync": {"status": "Synced", "revision": "r"}, "health": {"status": "Healthy"}}
    cond = [{"type": "ComparisonError", "message": "cluster unreachable"}]
    status = error_status(app(), previous, cond)
    assert status["sync"] == {"status": "Unknown", "revision": "r"}
    assert status["health"]["status"] == "Unknown"
    assert previous["sync"]["status"] == "Synced"


def test_meaningful_ignores_timestamps() -> None:
    """Records differing only in reconcile timestamps are the same for the save decision."""
    a = {"status": {"reconciledAt": "1", "conditions": [{"type": "X", "lastTransitionTime": "1"}]}}
    b = {"status": {"reconciledAt": "2", "conditions": [{"type": "X", "lastTransitionTime": "2"}]}}
    assert meaningful(a) == meaningful(b)
