"""Unit tests for pairing and ordering sync tasks into steps (daemon.plan.order)."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.model import Body, HookType, Manifest, ResourceKey, SyncPhase
from daemon.plan.order import (
    KIND_ORDER,
    SyncTask,
    build_tasks,
    group_steps,
    kind_rank,
    split_syncfail,
)

API_VERSIONS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
    "Widget": "example.com/v1",
}


def obj(
    kind: str,
    name: str,
    *,
    namespace: str = "shop",
    wave: int | None = None,
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> Body:
    """A minimal object body; `wave` sets the sync-wave annotation."""
    anns = dict(annotations or {})
    if wave is not None:
        anns["argocd.argoproj.io/sync-wave"] = str(wave)
    meta: dict[str, Any] = {"name": name, "annotations": anns}
    if namespace:
        meta["namespace"] = namespace
    body: Body = {"apiVersion": API_VERSIONS.get(kind, "v1"), "kind": kind, "metadata": meta}
    if spec is not None:
        body["spec"] = spec
    return body


def manifests(*bodies: Body) -> list[Manifest]:
    """Wrap bodies as rendered manifests."""
    return [Manifest(key=ResourceKey.of(b), body=b) for b in bodies]


def live_of(*bodies: Body) -> dict[ResourceKey, Body]:
    """Index live bodies by key."""
    return {ResourceKey.of(b): b for b in bodies}


def names(tasks: list[SyncTask]) -> list[str]:
    """Readable task order: phase/wave/key."""
    return [f"{t.phase}/{t.wave}/{t.key}" for t in tasks]


def test_database_app_pattern_runs_six_steps_in_wave_order() -> None:
    """The Basic Database-App Pattern yields six steps, one per wave from -3 to 2."""
    targets = manifests(
        obj("Service", "web", wave=2),
        obj("Deployment", "web", wave=1),
        obj("Service", "db", wave=0),
        obj("Deployment", "db", wave=-1),
        obj("PersistentVolumeClaim", "db-data", wave=-2),
        obj("Secret", "db-credentials", wave=-3),
    )
    steps = group_steps(build_tasks(targets, {}, prune_last=False))
    assert [(s.phase, s.wave, [str(t.key) for t in s.tasks]) for s in steps] == [
        (SyncPhase.SYNC, -3, ["Secret/shop/db-credentials"]),
        (SyncPhase.SYNC, -2, ["PersistentVolumeClaim/shop/db-data"]),
        (SyncPhase.SYNC, -1, ["Deployment/shop/db"]),
        (SyncPhase.SYNC, 0, ["Service/shop/db"]),
        (SyncPhase.SYNC, 1, ["Deployment/shop/web"]),
        (SyncPhase.SYNC, 2, ["Service/shop/web"]),
    ]


def test_kind_order_within_a_wave() -> None:
    """Within one wave, kinds follow Helm's install order and unknown kinds come last."""
    targets = manifests(
        obj("Widget", "a"),
        obj("Deployment", "a"),
        obj("Service", "a"),
        obj("ConfigMap", "a"),
        obj("ServiceAccount", "a"),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert [t.key.kind for t in tasks] == [
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "Widget",
    ]
    assert len(group_steps(tasks)) == 1


def test_kind_rank_table() -> None:
    """kind_rank is index minus table length for listed kinds and 0 for others."""
    assert len(KIND_ORDER) == 35
    assert kind_rank("Namespace") == -35
    assert kind_rank("APIService") == -1
    assert kind_rank("Secret") < kind_rank("ConfigMap") < kind_rank("Deployment")
    assert kind_rank("Widget") == 0


def test_wave_beats_kind() -> None:
    """A lower wave runs first even when its kind sorts later."""
    targets = manifests(obj("Namespace", "zz", namespace="", wave=1), obj("Deployment", "a"))
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == ["Sync/0/Deployment/shop/a", "Sync/1/Namespace/zz"]


def test_name_order_ignores_namespace() -> None:
    """Same kind and wave sort by name alone; namespace is not part of the key."""
    targets = manifests(
        obj("ConfigMap", "b", namespace="a-ns"),
        obj("ConfigMap", "c", namespace="a-ns"),
        obj("ConfigMap", "a", namespace="z-ns"),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert [str(t.key) for t in tasks] == [
        "ConfigMap/z-ns/a",
        "ConfigMap/a-ns/b",
        "ConfigMap/a-ns/c",
    ]


def test_hooks_run_in_their_phases() -> None:
    """PreSync hooks run before all Sync tasks and PostSync hooks after, whatever their waves."""
    targets = manifests(
        obj("Job", "after", wave=-5, annotations={"argocd.argoproj.io/hook": "PostSync"}),
        obj("Deployment", "app", wave=3),
        obj("Job", "migrate", wave=9, annotations={"argocd.argoproj.io/hook": "PreSync"}),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == [
        "PreSync/9/Job/shop/migrate",
        "Sync/3/Deployment/shop/app",
        "PostSync/-5/Job/shop/after",
    ]
    assert [(t.is_hook, t.hook_type) for t in tasks] == [
        (True, HookType.PRE_SYNC),
        (False, None),
        (True, HookType.POST_SYNC),
    ]


def test_hook_with_several_types_runs_in_each_phase() -> None:
    """A hook annotated PreSync,PostSync becomes one task in each phase."""
    targets = manifests(
        obj("Job", "check", annotations={"argocd.argoproj.io/hook": "PostSync,PreSync"})
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert [(t.phase, t.hook_type) for t in tasks] == [
        (SyncPhase.PRE_SYNC, HookType.PRE_SYNC),
        (SyncPhase.POST_SYNC, HookType.POST_SYNC),
    ]


def test_helm_hooks_map_to_phases_with_weight_as_wave() -> None:
    """Helm pre-hooks run once in PreSync, post-hooks in PostSync, with hook-weight as wave."""
    targets = manifests(
        obj(
            "Job",
            "pre",
            annotations={"helm.sh/hook": "pre-install,pre-upgrade", "helm.sh/hook-weight": "-2"},
        ),
        obj(
            "Job", "post", annotations={"helm.sh/hook": "post-upgrade", "helm.sh/hook-weight": "4"}
        ),
        obj(
            "Job",
            "pre-late",
            annotations={"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "1"},
        ),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == [
        "PreSync/-2/Job/shop/pre",
        "PreSync/1/Job/shop/pre-late",
        "PostSync/4/Job/shop/post",
    ]
    assert all(t.is_hook for t in tasks)


def test_helm_crd_install_is_an_ordinary_resource() -> None:
    """A helm.sh/hook: crd-install object syncs as a normal Sync-phase resource."""
    crd = obj(
        "CustomResourceDefinition",
        "widgets.example.com",
        namespace="",
        annotations={"helm.sh/hook": "crd-install"},
    )
    (task,) = build_tasks(manifests(crd), {}, prune_last=False)
    assert (task.phase, task.is_hook, task.hook_type) == (SyncPhase.SYNC, False, None)


def test_skipped_and_ignored_objects_get_no_task_and_are_not_pruned() -> None:
    """Skip, unrecognised hooks and delete hooks produce no task, and their live copies stay."""
    skip = obj("ConfigMap", "skip", annotations={"argocd.argoproj.io/hook": "Skip"})
    test_hook = obj("Pod", "test", annotations={"helm.sh/hook": "test-success"})
    pre_delete = obj("Job", "cleanup", annotations={"argocd.argoproj.io/hook": "PreDelete"})
    post_delete = obj("Job", "bye", annotations={"helm.sh/hook": "post-delete"})
    kept = obj("ConfigMap", "kept")
    targets = manifests(skip, test_hook, pre_delete, post_delete, kept)
    live = live_of(skip, test_hook, pre_delete, post_delete, kept)
    tasks = build_tasks(targets, live, prune_last=False)
    assert names(tasks) == ["Sync/0/ConfigMap/shop/kept"]
    assert tasks[0].live is kept
    assert not tasks[0].is_prune


def test_hook_with_a_delete_type_is_left_out_of_sync() -> None:
    """A hook that is also PreDelete is left out of the sync entirely, as Argo CD does."""
    both = obj("Job", "both", annotations={"argocd.argoproj.io/hook": "PreSync,PreDelete"})
    assert build_tasks(manifests(both), live_of(both), prune_last=False) == []


def test_live_hooks_and_skip_objects_are_not_pruned() -> None:
    """Live hooks and Skip objects without a target are left alone; other orphans are pruned."""
    live = live_of(
        obj("Job", "old-hook", annotations={"argocd.argoproj.io/hook": "PreSync"}),
        obj("ConfigMap", "skip", annotations={"argocd.argoproj.io/hook": "Skip"}),
        obj("ConfigMap", "orphan"),
    )
    tasks = build_tasks([], live, prune_last=False)
    assert names(tasks) == ["Sync/0/ConfigMap/shop/orphan"]
    assert tasks[0].is_prune
    assert tasks[0].target is None


def test_syncfail_hooks_are_split_off() -> None:
    """SyncFail hooks sort last and split_syncfail separates them from the normal run."""
    targets = manifests(
        obj("Job", "on-fail", wave=-9, annotations={"argocd.argoproj.io/hook": "SyncFail"}),
        obj("Deployment", "app"),
    )
    normal, on_fail = split_syncfail(build_tasks(targets, {}, prune_last=False))
    assert names(normal) == ["Sync/0/Deployment/shop/app"]
    assert names(on_fail) == ["SyncFail/-9/Job/shop/on-fail"]


def test_prune_waves_are_reversed_symmetrically() -> None:
    """Prune waves are mirrored so the highest-wave object is pruned first, among apply tasks."""
    live = live_of(
        obj("ConfigMap", "w-1", wave=-1),
        obj("ConfigMap", "w0", wave=0),
        obj("ConfigMap", "w3", wave=3),
        obj("ConfigMap", "w5", wave=5),
    )
    targets = manifests(obj("Deployment", "app", wave=1))
    tasks = build_tasks(targets, live, prune_last=False)
    assert names(tasks) == [
        "Sync/-1/ConfigMap/shop/w5",
        "Sync/0/ConfigMap/shop/w3",
        "Sync/1/Deployment/shop/app",
        "Sync/3/ConfigMap/shop/w0",
        "Sync/5/ConfigMap/shop/w-1",
    ]
    assert [t.is_prune for t in tasks] == [True, True, False, True, True]


def test_prune_last_app_option_moves_prunes_after_last_sync_wave() -> None:
    """With app-level PruneLast every prune runs in wave max(0, highest Sync wave) + 1."""
    targets = manifests(
        obj("Deployment", "app", wave=2),
        obj("Job", "post", wave=7, annotations={"argocd.argoproj.io/hook": "PostSync"}),
    )
    live = live_of(obj("ConfigMap", "old", wave=-4), obj("Secret", "older", wave=1))
    tasks = build_tasks(targets, live, prune_last=True)
    assert names(tasks) == [
        "Sync/2/Deployment/shop/app",
        "Sync/3/Secret/shop/older",
        "Sync/3/ConfigMap/shop/old",
        "PostSync/7/Job/shop/post",
    ]


def test_prune_last_wave_is_at_least_one() -> None:
    """PruneLast uses wave 1 when every Sync task sits in a negative wave."""
    targets = manifests(obj("Deployment", "app", wave=-3))
    tasks = build_tasks(targets, live_of(obj("ConfigMap", "old", wave=-5)), prune_last=True)
    assert names(tasks) == ["Sync/-3/Deployment/shop/app", "Sync/1/ConfigMap/shop/old"]


def test_prune_last_annotation_on_live_object() -> None:
    """A live object's PruneLast=true annotation moves only that prune to the final wave."""
    last = obj(
        "ConfigMap",
        "last",
        annotations={"argocd.argoproj.io/sync-options": "PruneLast=true"},
    )
    live = live_of(last, obj("ConfigMap", "soon"))
    targets = manifests(obj("Deployment", "app", wave=1))
    tasks = build_tasks(targets, live, prune_last=False)
    assert names(tasks) == [
        "Sync/0/ConfigMap/shop/soon",
        "Sync/1/Deployment/shop/app",
        "Sync/2/ConfigMap/shop/last",
    ]


def test_bad_sync_options_on_live_object_are_ignored() -> None:
    """A malformed sync-options annotation on a live object is ignored (as Argo CD ignores
    option strings it does not recognise) instead of breaking the sync."""
    live = live_of(
        obj("ConfigMap", "bad", annotations={"argocd.argoproj.io/sync-options": "PruneLast=yes"})
    )
    (task,) = build_tasks([], live, prune_last=False)
    assert task.is_prune
    assert task.wave == 0


def test_namespace_bubbles_before_first_task_in_it() -> None:
    """A Namespace in a later wave moves before the first task in it, taking its wave."""
    targets = manifests(
        obj("Namespace", "shop", namespace="", wave=5),
        obj("Deployment", "app", wave=-1),
        obj("ConfigMap", "cfg", wave=0),
        obj("ConfigMap", "elsewhere", namespace="other", wave=-2),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == [
        "Sync/-2/ConfigMap/other/elsewhere",
        "Sync/-1/Namespace/shop",
        "Sync/-1/Deployment/shop/app",
        "Sync/0/ConfigMap/shop/cfg",
    ]


def test_namespace_bubbles_into_presync_phase() -> None:
    """A Namespace needed by a PreSync hook moves into the PreSync phase and its wave."""
    targets = manifests(
        obj("Namespace", "shop", namespace=""),
        obj("Job", "migrate", wave=3, annotations={"argocd.argoproj.io/hook": "PreSync"}),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == ["PreSync/3/Namespace/shop", "PreSync/3/Job/shop/migrate"]
    assert [s.phase for s in group_steps(tasks)] == [SyncPhase.PRE_SYNC]


def test_namespace_already_first_is_unchanged() -> None:
    """A Namespace that already sorts before its contents keeps its own wave."""
    targets = manifests(obj("Namespace", "shop", namespace="", wave=-1), obj("Deployment", "app"))
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == ["Sync/-1/Namespace/shop", "Sync/0/Deployment/shop/app"]


def test_each_namespace_bubbles_before_its_own_first_task() -> None:
    """Several Namespaces each land right before the first task in them, with its wave."""
    targets = manifests(
        obj("Deployment", "a-app", namespace="a", wave=0),
        obj("Deployment", "b-app", namespace="b", wave=1),
        obj("Namespace", "a", namespace="", wave=5),
        obj("Namespace", "b", namespace="", wave=6),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == [
        "Sync/0/Namespace/a",
        "Sync/0/Deployment/a/a-app",
        "Sync/1/Namespace/b",
        "Sync/1/Deployment/b/b-app",
    ]


def test_crd_bubbles_before_first_custom_resource() -> None:
    """A CRD moves before the first object of its group/kind, taking its phase and wave."""
    crd = obj(
        "CustomResourceDefinition",
        "widgets.example.com",
        namespace="",
        wave=4,
        spec={"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}},
    )
    targets = manifests(
        crd,
        obj("Widget", "w1", namespace="", wave=1),
        obj("Widget", "w0", namespace="", wave=1),
        obj("ConfigMap", "cfg", namespace="", wave=0),
    )
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == [
        "Sync/0/ConfigMap/cfg",
        "Sync/1/CustomResourceDefinition/widgets.example.com",
        "Sync/1/Widget/w0",
        "Sync/1/Widget/w1",
    ]


def test_crd_for_another_kind_does_not_move() -> None:
    """A CRD defining a kind nobody uses keeps its own position."""
    crd = obj(
        "CustomResourceDefinition",
        "gadgets.example.com",
        namespace="",
        wave=4,
        spec={"group": "example.com", "names": {"kind": "Gadget"}},
    )
    targets = manifests(crd, obj("Widget", "w", namespace="", wave=1))
    tasks = build_tasks(targets, {}, prune_last=False)
    assert names(tasks) == [
        "Sync/1/Widget/w",
        "Sync/4/CustomResourceDefinition/gadgets.example.com",
    ]


def test_target_is_paired_with_its_live_object() -> None:
    """A target with a live counterpart is an apply task carrying both bodies."""
    desired = obj("ConfigMap", "cfg")
    current = obj("ConfigMap", "cfg", annotations={"old": "yes"})
    (task,) = build_tasks(manifests(desired), live_of(current), prune_last=False)
    assert task.target is desired
    assert task.live is current
    assert not task.is_prune


def test_group_steps_splits_on_phase_and_wave() -> None:
    """group_steps makes one step per consecutive (phase, wave), keeping task order."""
    targets = manifests(
        obj("Job", "pre", annotations={"argocd.argoproj.io/hook": "PreSync"}),
        obj("ConfigMap", "a"),
        obj("Secret", "b"),
        obj("Deployment", "c", wave=1),
        obj("Job", "post", annotations={"argocd.argoproj.io/hook": "PostSync"}),
    )
    steps = group_steps(build_tasks(targets, {}, prune_last=False))
    assert [(s.phase, s.wave, [t.key.name for t in s.tasks]) for s in steps] == [
        (SyncPhase.PRE_SYNC, 0, ["pre"]),
        (SyncPhase.SYNC, 0, ["b", "a"]),
        (SyncPhase.SYNC, 1, ["c"]),
        (SyncPhase.POST_SYNC, 0, ["post"]),
    ]
    assert group_steps([]) == []


def test_task_needs_a_body() -> None:
    """A SyncTask with neither target nor live object is rejected."""
    key = ResourceKey("", "ConfigMap", "shop", "x")
    with pytest.raises(ValueError, match="ConfigMap/shop/x"):
        SyncTask(key, SyncPhase.SYNC, 0, target=None, live=None)
