"""Pairing desired with live objects into sync tasks, and ordering them into (phase, wave) steps.

Order follows Argo CD: one sort key (phase, wave, kind, name), prune waves reversed, PruneLast in
an implicit final wave, then Namespaces and CRDs moved before the first task that needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby

from daemon.model import Body, HookType, Manifest, ResourceKey, SyncPhase
from daemon.plan.options import hook_types, is_hook, is_skipped, live_sync_options, sync_wave

# Helm's install order (kind_sorter.go), which Argo CD uses within a wave; group is ignored.
KIND_ORDER: tuple[str, ...] = (
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
)

# Listed kinds rank negative so that everything unlisted (custom resources) sorts after them at 0.
_KIND_RANK = {kind: index - len(KIND_ORDER) for index, kind in enumerate(KIND_ORDER)}

_HOOK_PHASES = {
    HookType.PRE_SYNC: SyncPhase.PRE_SYNC,
    HookType.SYNC: SyncPhase.SYNC,
    HookType.POST_SYNC: SyncPhase.POST_SYNC,
    HookType.SYNC_FAIL: SyncPhase.SYNC_FAIL,
}

# These run only when the Application is deleted, so Argo CD leaves such objects out of a sync.
_DELETE_HOOKS = frozenset({HookType.PRE_DELETE, HookType.POST_DELETE})

_CRD_GROUP = "apiextensions.k8s.io"


def kind_rank(kind: str) -> int:
    """Sort rank of a kind within a wave: negative for KIND_ORDER kinds, 0 for all others."""
    return _KIND_RANK.get(kind, 0)


@dataclass(frozen=True, slots=True)
class SyncTask:
    """One object to apply, run as a hook, or prune (no target, live set) in one phase and wave."""

    key: ResourceKey
    phase: SyncPhase
    wave: int
    target: Body | None = field(compare=False)
    live: Body | None = field(compare=False)
    is_hook: bool = False
    hook_type: HookType | None = None

    def __post_init__(self) -> None:
        if self.target is None and self.live is None:
            raise ValueError(f"{self.key}: a sync task needs a target or a live object")

    @property
    def is_prune(self) -> bool:
        """True when the live object is no longer wanted and should be deleted."""
        return self.target is None and self.live is not None


@dataclass(frozen=True, slots=True)
class Step:
    """Tasks that run together; the next step starts only after this one completes."""

    phase: SyncPhase
    wave: int
    tasks: tuple[SyncTask, ...]


def build_tasks(
    targets: Sequence[Manifest], live: Mapping[ResourceKey, Body], *, prune_last: bool
) -> list[SyncTask]:
    """Pair desired with live objects and order the tasks as Argo CD runs them.

    `live` must already be limited to objects this app owns; any of them without a target is
    pruned. `prune_last` is the app-level PruneLast option. Raises ValueError (naming the object)
    when a live object's sync-options annotation is malformed.
    """
    tasks = _pair(targets, live)
    tasks = _reverse_prune_waves(tasks)
    tasks = _apply_prune_last(tasks, app_prune_last=prune_last)
    tasks.sort(key=_sort_key)
    tasks = _bubble(tasks, provides=_namespace_provided, needs=_namespace_needed)
    return _bubble(tasks, provides=_crd_provided, needs=_kind_needed)


def split_syncfail(tasks: Iterable[SyncTask]) -> tuple[list[SyncTask], list[SyncTask]]:
    """Split into (tasks of a normal sync, SyncFail hooks run only when the sync fails)."""
    normal: list[SyncTask] = []
    on_fail: list[SyncTask] = []
    for task in tasks:
        (on_fail if task.phase is SyncPhase.SYNC_FAIL else normal).append(task)
    return normal, on_fail


def group_steps(tasks: Iterable[SyncTask]) -> list[Step]:
    """Group consecutive tasks (in build_tasks order) by (phase, wave) into execution steps."""
    return [
        Step(phase=phase, wave=wave, tasks=tuple(group))
        for (phase, wave), group in groupby(tasks, key=lambda t: (t.phase, t.wave))
    ]


def _pair(targets: Sequence[Manifest], live: Mapping[ResourceKey, Body]) -> list[SyncTask]:
    tasks: list[SyncTask] = []
    for manifest in targets:
        body, key = manifest.body, manifest.key
        if is_skipped(body):
            continue
        if not is_hook(body):
            tasks.append(
                SyncTask(key, SyncPhase.SYNC, sync_wave(body), target=body, live=live.get(key))
            )
            continue
        types = hook_types(body)
        if types & _DELETE_HOOKS:
            continue
        # A hook with several types runs once in each of their phases (dict is in phase order).
        for hook_type in (t for t in _HOOK_PHASES if t in types):
            tasks.append(
                SyncTask(
                    key,
                    _HOOK_PHASES[hook_type],
                    sync_wave(body),
                    target=body,
                    live=live.get(key),
                    is_hook=True,
                    hook_type=hook_type,
                )
            )
    # Skipped and delete-hook targets still count as desired, so their live objects are kept.
    desired = {manifest.key for manifest in targets}
    for key, body in live.items():
        # Live hooks are cleaned up by their delete policy, and Skip objects are never touched.
        if key in desired or is_hook(body) or is_skipped(body):
            continue
        tasks.append(SyncTask(key, SyncPhase.SYNC, sync_wave(body), target=None, live=body))
    return tasks


def _reverse_prune_waves(tasks: list[SyncTask]) -> list[SyncTask]:
    # Deletion undoes creation, so the prune waves present are mirrored: highest goes first.
    waves = sorted({t.wave for t in tasks if t.is_prune})
    mirror = dict(zip(waves, reversed(waves), strict=True))
    return [replace(t, wave=mirror[t.wave]) if t.is_prune else t for t in tasks]


def _apply_prune_last(tasks: list[SyncTask], *, app_prune_last: bool) -> list[SyncTask]:
    last = max([0, *(t.wave for t in tasks if t.phase is SyncPhase.SYNC)]) + 1
    return [
        replace(t, wave=last) if t.is_prune and (app_prune_last or _live_prune_last(t)) else t
        for t in tasks
    ]


def _live_prune_last(task: SyncTask) -> bool:
    if task.live is None:
        return False
    return live_sync_options(task.live).prune_last


def _sort_key(task: SyncTask) -> tuple[int, int, int, str, str, str, str]:
    key = task.key
    # Argo CD stops at name; the rest only makes ties deterministic.
    return (
        task.phase.order,
        task.wave,
        kind_rank(key.kind),
        key.name,
        key.kind,
        key.group,
        key.namespace,
    )


def _bubble(
    tasks: list[SyncTask],
    *,
    provides: Callable[[SyncTask], str | None],
    needs: Callable[[SyncTask], str | None],
) -> list[SyncTask]:
    """Move each provider before the first task needing it, into that task's phase and wave."""
    out = list(tasks)
    first_need: dict[str, int] = {}
    # Moves only go backwards, so the i-th original task is still at position i when reached.
    for i, task in enumerate(tasks):
        provided = provides(task)
        if provided is not None:
            at = first_need.get(provided)
            if at is not None:
                anchor = out[at]
                del out[i]
                out.insert(at, replace(task, phase=anchor.phase, wave=anchor.wave))
                first_need = {k: v + 1 if v >= at else v for k, v in first_need.items()}
            continue
        needed = needs(task)
        if needed is not None:
            first_need.setdefault(needed, i)
    return out


def _namespace_provided(task: SyncTask) -> str | None:
    key = task.key
    return key.name if key.group == "" and key.kind == "Namespace" else None


def _namespace_needed(task: SyncTask) -> str | None:
    return task.key.namespace or None


def _crd_provided(task: SyncTask) -> str | None:
    key = task.key
    if key.group != _CRD_GROUP or key.kind != "CustomResourceDefinition":
        return None
    body = task.target if task.target is not None else task.live
    spec = (body or {}).get("spec")
    if not isinstance(spec, dict):
        return None
    group, names = spec.get("group"), spec.get("names")
    kind = names.get("kind") if isinstance(names, dict) else None
    if not isinstance(group, str) or not isinstance(kind, str):
        return None
    return f"{group}/{kind}"


def _kind_needed(task: SyncTask) -> str | None:
    return f"{task.key.group}/{task.key.kind}"
