"""One reconcile of one canary Rollout, as a pure function: from the Rollout (spec, status and
the user's requests in it), its ReplicaSets and the time, to the writes to make and the new
status. The controller performs the writes; nothing here talks to the cluster.

The rules are Argo Rollouts' (see ../shared/research/rollouts.md): the first deploy goes
straight to 100%; a new pod template starts the steps at 0; `setWeight` completes when the pod
counts are reached, `pause` when its duration ran out or the user promoted, and the canary becomes
stable after the last step once fully available; abort returns to 100% stable and Degraded.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.rollouts import replicas as math_
from daemon.rollouts.spec import (
    DESIRED_ANNOTATION,
    HASH_LABEL,
    REVISION_ANNOTATION,
    SCALE_DOWN_DEADLINE,
    AnalysisRef,
    AnalysisStep,
    BlueGreen,
    Body,
    Canary,
    HeaderMatch,
    Pause,
    RolloutSpec,
    RouteStep,
    SetCanaryScale,
    SetWeight,
    Step,
    owner_reference,
    steps_hash,
    template_hash,
)

PAUSE_STEP = "CanaryPauseStep"
ANALYSIS_NOT_RUN = "AnalysisNotSupported"


@dataclass(frozen=True, slots=True)
class ReplicaSet:
    """A ReplicaSet of the Rollout, as the plan reads it."""

    name: str
    hash: str
    revision: int
    replicas: int
    available: int
    ready: int
    current: int  # status.replicas
    template: Body
    uid: str = ""
    deadline: str = ""  # the scale-down-deadline annotation

    @classmethod
    def of(cls, body: Body) -> ReplicaSet:
        meta = body.get("metadata") or {}
        spec, status = body.get("spec") or {}, body.get("status") or {}
        try:
            revision = int((meta.get("annotations") or {}).get(REVISION_ANNOTATION, "0"))
        except ValueError:
            revision = 0
        return cls(
            name=str(meta.get("name", "")),
            hash=str((meta.get("labels") or {}).get(HASH_LABEL, "")),
            revision=revision,
            replicas=int(spec.get("replicas", 1) or 0),
            available=int(status.get("availableReplicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            current=int(status.get("replicas") or 0),
            template=spec.get("template") or {},
            uid=str(meta.get("uid", "")),
            deadline=str((meta.get("annotations") or {}).get(SCALE_DOWN_DEADLINE, "")),
        )

    @property
    def state(self) -> math_.SetState:
        return math_.SetState(self.replicas, self.available)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """An AnalysisRun the Rollout needs: its kind (Step, Background, PrePromotion,
    PostPromotion), templates and args, and the name infix (step index, pre, post)."""

    kind: str
    ref: AnalysisRef
    infix: str


@dataclass
class Plan:
    """The writes of one reconcile, in the order the controller makes them."""

    create: Body | None = None
    scale: dict[str, int] = field(default_factory=dict)  # ReplicaSet name -> replicas
    delete: list[str] = field(default_factory=list)  # old ReplicaSets past the history limit
    services: dict[str, str] = field(default_factory=dict)  # Service name -> pod-template hash
    # ReplicaSet name -> annotations to set (a None value removes one)
    annotate: dict[str, dict[str, str | None]] = field(default_factory=dict)
    status: Body = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    want_runs: list[RunRequest] = field(default_factory=list)  # AnalysisRuns to create
    terminate_runs: list[str] = field(default_factory=list)  # AnalysisRuns to stop
    requeue_after: float | None = None  # seconds; None: wait for an event
    # A traffic-routed canary: the weight for the canary Ingress and the active header route.
    weight: int | None = None
    header: HeaderMatch | None = None
    # The update waits for an analysis that is still running (not a lack of progress).
    analysis_waiting: bool = False


def _without_hash(template: Body) -> Body:
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return out


def new_replica_set(ro: Body, spec: RolloutSpec, h: str, revision: int, replicas: int) -> Body:
    """The ReplicaSet of pod template `h`: named `<rollout>-<hash>`, the hash label on it, its
    selector and its pods, owned by the Rollout."""
    meta = ro.get("metadata") or {}
    template = copy.deepcopy(spec.template)
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: h}
    selector = copy.deepcopy(spec.selector)
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: h}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta.get('name')}-{h}",
            "namespace": meta.get("namespace"),
            "labels": dict(tmeta["labels"]),
            "annotations": {
                REVISION_ANNOTATION: str(revision),
                DESIRED_ANNOTATION: str(spec.replicas),
            },
            "ownerReferences": [owner_reference(ro)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.min_ready_seconds,
            "selector": selector,
            "template": template,
        },
    }


def _current_set(
    spec: RolloutSpec, status: Body, sets: list[ReplicaSet]
) -> tuple[str, ReplicaSet | None]:
    """The pod-template hash of the spec and its ReplicaSet, if one exists: by hash, else by
    template equality (a set Argo Rollouts made, whose Go-computed hash we cannot reproduce)."""
    h = template_hash(spec.template, int(status.get("collisionCount") or 0))
    new = next((s for s in sets if s.hash == h), None)
    if new is None:
        wanted = _without_hash(spec.template)
        new = next((s for s in sets if _without_hash(s.template) == wanted), None)
        if new is not None:
            h = new.hash
    return h, new


def _finish(plan: Plan, status: Body, spec: RolloutSpec, ro: Body, now: dt.datetime) -> Plan:
    """The status's conditions and phase, and a prompt requeue while sets are being scaled."""
    _not_applied_condition(status, spec, now)
    if plan.scale or plan.create:
        plan.requeue_after = plan.requeue_after if plan.requeue_after is not None else 1.0
    _progress_deadline(plan, status, spec, ro, now)
    status["phase"], status["message"] = phase(spec, status, ro)
    plan.status = status
    return plan


_PROGRESS_FIELDS = (
    "currentPodHash",
    "currentStepIndex",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "stableRS",
)


def _progress_deadline(
    plan: Plan, status: Body, spec: RolloutSpec, ro: Body, now: dt.datetime
) -> None:
    """The Progressing condition and progressDeadlineSeconds, as Argo Rollouts keeps them: an
    update that makes no progress (no new step, no pod added, updated, ready or available, no
    set scaled) for that long is ProgressDeadlineExceeded, so Degraded, and aborted with
    progressDeadlineAbort. Time spent paused or waiting for an analysis step does not count.
    The condition changes only when its reason does or progress is made, so a settled
    Rollout writes nothing."""
    if status.get("abort"):
        return  # the RolloutAborted condition is the Progressing condition now
    old: Body = ro.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("type") == "Progressing"]
    current = conditions[-1] if conditions else None
    others = [c for c in status.get("conditions") or [] if c.get("type") != "Progressing"]
    moved = bool(plan.scale or plan.create) or any(
        old.get(k) != status.get(k) for k in _PROGRESS_FIELDS
    )
    updating = status.get("stableRS") != status.get("currentPodHash")
    waiting = bool(spec.paused or status.get("pauseConditions")) or plan.analysis_waiting
    if not updating:
        reason, message, ok = "NewReplicaSetAvailable", "Rollout has completed its update", True
    elif waiting:
        reason, message, ok = "RolloutPaused", "Rollout is paused", True
    else:
        name = f"{(ro.get('metadata') or {}).get('name')}-{status.get('currentPodHash')}"
        reason, message, ok = "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.', True
        since = _parse_time((current or {}).get("lastUpdateTime")) or now
        if current is not None and current.get("reason") == "ProgressDeadlineExceeded":
            if not moved:
                status["conditions"] = [*others, current]
                return
        elif current is not None and current.get("reason") == reason and not moved:
            left = spec.progress_deadline_seconds - (now - since).total_seconds()
            if left > 0:
                plan.requeue_after = min(
                    left, plan.requeue_after if plan.requeue_after is not None else left
                )
                return
            reason, ok = "ProgressDeadlineExceeded", False
            message = f'ReplicaSet "{name}" has timed out progressing.'
            if spec.progress_deadline_abort:
                _abort(status, message, now)
                plan.requeue_after = 0.0  # the next reconcile rolls back (and says so once)
                return
    if current is not None and current.get("reason") == reason and not (moved and updating):
        return
    transition = (
        current.get("lastTransitionTime")
        if current is not None and (current.get("status") == "True") == ok
        else None
    )
    status["conditions"] = [
        *others,
        {
            "type": "Progressing",
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastUpdateTime": _iso(now),
            "lastTransitionTime": transition or _iso(now),
        },
    ]
    if ok and updating and not waiting:
        left = float(spec.progress_deadline_seconds)
        plan.requeue_after = min(
            left, plan.requeue_after if plan.requeue_after is not None else left
        )
    if not ok:
        plan.events.append(("ProgressDeadlineExceeded", message))


def current_weight(steps: tuple[Step, ...], index: int, max_weight: int) -> int:
    """The last setWeight at or before `index`; the maximum once past the last step."""
    if index >= len(steps):
        return max_weight
    weight = 0
    for st in steps[: index + 1]:
        if isinstance(st, SetWeight):
            weight = st.weight
    return weight


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def plan_canary(
    ro: Body,
    spec: RolloutSpec,
    sets: list[ReplicaSet],
    now: dt.datetime,
    runs: Sequence[Body] = (),
) -> Plan:
    """The next writes and status of a canary Rollout."""
    canary = spec.canary
    assert canary is not None
    plan = Plan()
    status: Body = copy.deepcopy(ro.get("status") or {})
    steps = canary.steps
    h, new = _current_set(spec, status, sets)
    sh = steps_hash(spec)
    stable_hash = str(status.get("stableRS") or "")

    # A new template (or new steps) restarts the update.
    if status.get("currentPodHash") != h or status.get("currentStepHash") != sh:
        if status.get("currentPodHash"):
            for key in ("abort", "abortedAt", "pauseConditions", "promoteFull"):
                status.pop(key, None)
            status["controllerPause"] = False
            status["currentStepIndex"] = 0
            status.pop("canary", None)
        status["currentPodHash"], status["currentStepHash"] = h, sh
        status.setdefault("currentStepIndex", 0)
    if not stable_hash:
        # Initial deploy: straight to 100%, no steps.
        stable_hash = h
        status["stableRS"] = h
        status["currentStepIndex"] = len(steps)
        plan.events.append(("RolloutCompleted", f"Rollout completed update to revision 1 ({h})"))
    if h == stable_hash:
        status["currentStepIndex"] = len(steps)
        for key in ("pauseConditions", "abort", "abortedAt", "promoteFull"):
            status.pop(key, None)
        status["controllerPause"] = False
    stable = next((s for s in sets if s.hash == stable_hash and s.hash != h), None)
    old = sorted(
        (s for s in sets if s is not new and s is not stable),
        key=lambda s: s.revision,
        reverse=True,
    )

    if new is None:
        revision = max((s.revision for s in sets), default=0) + 1
        start = spec.replicas if stable is None else 0
        plan.create = new_replica_set(ro, spec, h, revision, start)
        plan.events.append(
            ("NewReplicaSetCreated", f"Created ReplicaSet {h} (revision {revision})")
        )
        new = ReplicaSet(
            f"{(ro.get('metadata') or {}).get('name')}-{h}",
            h,
            revision,
            start,
            0,
            0,
            0,
            spec.template,
        )

    aborted = bool(status.get("abort"))
    if not aborted:
        status.pop("abortedAt", None)  # retried
        _clear_abort(status)
    if status.get("promoteFull") and not aborted:
        status["currentStepIndex"] = len(steps)
        status.pop("pauseConditions", None)
        status["controllerPause"] = False
    index = int(status.get("currentStepIndex") or 0)
    weight = 0 if aborted else current_weight(steps, index, canary.max_weight)

    targets = _targets(spec, weight, new, stable, old, steps, index, aborted)
    routed = canary.traffic_routed
    if routed:
        targets = _routed_scale_down(
            plan, canary, spec, targets, new, stable, old, aborted, h == stable_hash, now
        )
    for rs, n in ((new, targets.canary), *((s, targets.stable) for s in [stable] if s)):
        if rs.replicas != n:
            plan.scale[rs.name] = n
    for rs, n in zip(old, targets.old, strict=True):
        if rs.replicas != n and rs.name not in plan.annotate:
            plan.scale[rs.name] = n
    if plan.create is not None and plan.create["spec"]["replicas"] == targets.canary:
        plan.scale.pop(new.name, None)
    elif plan.create is not None and new.name in plan.scale:
        plan.create["spec"]["replicas"] = plan.scale.pop(new.name)

    if routed:
        plan.weight = _routed_weight(spec, status, new, stable, targets, index, aborted, h)
        plan.header = None if aborted or h == stable_hash else _header_route(steps, index)
    settled = not plan.scale and plan.create is None
    if settled and not aborted and h != stable_hash and not spec.paused:
        background = canary.analysis
        if background is not None and stable is not None and index >= background.starting_step:
            _analysis_gate(
                plan, status, runs, kind="Background", infix="", ref=background, h=h, now=now
            )
        if not status.get("abort"):
            index = _advance(
                plan, status, steps, index, new, stable, old, targets, now, runs, routed=routed
            )
        if index >= len(steps) and new.available >= spec.replicas and not status.get("abort"):
            status["stableRS"] = stable_hash = h
            plan.events.append(
                ("RolloutCompleted", f"Rollout completed update to revision {new.revision} ({h})")
            )
            plan.requeue_after = 0.0  # scale the old stable down next
    if aborted:
        status.pop("pauseConditions", None)  # an aborted update waits for nobody
        status["controllerPause"] = False
    if aborted and not status.get("abortedAt"):
        status["abortedAt"] = _iso(now)
        status["currentStepIndex"] = 0
        plan.events.append(("RolloutAborted", f"Rollout aborted update to revision {new.revision}"))

    # Services: stable to the stable pods, canary to the new pods once any is available.
    if canary.stable_service and stable_hash:
        plan.services[canary.stable_service] = stable_hash
    if canary.canary_service:
        target = stable_hash if aborted or new.available == 0 else h
        plan.services[canary.canary_service] = target or h

    shown = weight if h != stable_hash else 0
    if plan.weight is not None:
        shown = plan.weight

    plan.delete = _history(sets, new, stable, spec.revision_history_limit, plan.scale)
    _counts(status, spec, ro, sets, new, plan)
    status["canary"] = {
        **(status.get("canary") or {}),
        "weights": {
            "canary": {"weight": shown, "podTemplateHash": h},
            "stable": {"weight": canary.max_weight - shown, "podTemplateHash": stable_hash},
        },
    }
    if routed:
        status["canary"]["weights"]["canary"]["serviceName"] = canary.canary_service
        status["canary"]["weights"]["stable"]["serviceName"] = canary.stable_service
    return _finish(plan, status, spec, ro, now)


def _targets(
    spec: RolloutSpec,
    weight: int,
    new: ReplicaSet,
    stable: ReplicaSet | None,
    old: list[ReplicaSet],
    steps: tuple[Step, ...],
    index: int,
    aborted: bool,
) -> math_.Targets:
    canary = spec.canary
    assert canary is not None
    if canary.traffic_routed:
        scale = None
        if not aborted and index < len(steps):
            for st in steps[: index + 1]:
                if isinstance(st, SetCanaryScale):
                    scale = None if st.match_traffic_weight else _canary_scale(st, spec)
        if stable is None:
            t = math_.Targets(spec.replicas, 0)
        else:
            t = math_.traffic_routed_canary(
                replicas=spec.replicas,
                weight=weight,
                max_weight=canary.max_weight,
                canary_scale=scale,
                min_pods=canary.min_pods_per_replica_set,
            )
        return math_.Targets(t.canary, t.stable, tuple(0 for _ in old))
    return math_.basic_canary(
        replicas=spec.replicas,
        weight=weight,
        max_weight=canary.max_weight,
        max_surge=canary.max_surge,
        max_unavailable=canary.max_unavailable,
        canary=new.state,
        stable=stable.state if stable else None,
        old=[s.state for s in old],
    )


def _routed_scale_down(
    plan: Plan,
    canary: Canary,
    spec: RolloutSpec,
    targets: math_.Targets,
    new: ReplicaSet,
    stable: ReplicaSet | None,
    old: list[ReplicaSet],
    aborted: bool,
    promoted: bool,
    now: dt.datetime,
) -> math_.Targets:
    """Behind a router, sets that took traffic go away only after a delay: the previous stable
    set scaleDownDelaySeconds after promotion, an aborted canary abortScaleDownDelaySeconds
    after the stable set is whole again (never, with 0). The deadlines are the
    scale-down-deadline annotation, as Argo Rollouts writes it."""
    canary_n = targets.canary
    if aborted:
        canary_n = new.replicas  # kept until the stable set can take all the traffic
        whole = stable is None or stable.available >= spec.replicas
        if whole and canary.abort_scale_down_delay > 0:
            _delayed_scale_down(plan, [new], canary.abort_scale_down_delay, now)
        canary_n = plan.scale.pop(new.name, canary_n)
    elif new.deadline:
        plan.annotate[new.name] = {SCALE_DOWN_DEADLINE: None}  # retried: the canary stays
    if stable is not None and stable.deadline:
        plan.annotate[stable.name] = {SCALE_DOWN_DEADLINE: None}
    old_n = list(targets.old)
    if promoted:
        _delayed_scale_down(plan, old, canary.scale_down_delay, now)
        old_n = [plan.scale.pop(s.name, s.replicas) for s in old]
    return math_.Targets(canary_n, targets.stable, tuple(old_n))


def _routed_weight(
    spec: RolloutSpec,
    status: Body,
    new: ReplicaSet,
    stable: ReplicaSet | None,
    targets: math_.Targets,
    index: int,
    aborted: bool,
    h: str,
) -> int:
    """The weight to route to the canary: the step's, but only as far as the pods allow. It
    stays at the previous setWeight until the canary set has its pods, is 0 while no canary pod
    is available, after promotion and on abort, and never moves traffic off a stable set that
    cannot take it."""
    canary = spec.canary
    assert canary is not None
    steps, top = canary.steps, canary.max_weight
    if aborted or h == status.get("stableRS") or new.available == 0:
        return 0
    at_counts = new.replicas == targets.canary and new.available >= targets.canary
    if status.get("promoteFull"):
        want = min(top, new.available * top // max(1, spec.replicas))
    elif not at_counts:
        want = next((st.weight for st in reversed(steps[:index]) if isinstance(st, SetWeight)), 0)
    else:
        want = current_weight(steps, index, top)
    if stable is not None and spec.replicas > 0:
        need = -(-(top - want) * spec.replicas // top)
        if stable.available < need:  # keep what is routed now
            applied = ((status.get("canary") or {}).get("weights") or {}).get("canary") or {}
            want = int(applied.get("weight") or 0)
    return want


def _header_route(steps: tuple[Step, ...], index: int) -> HeaderMatch | None:
    """The header route the steps so far have set (a setHeaderRoute without match clears it)."""
    route = None
    for st in steps[: min(index, len(steps))]:
        if isinstance(st, RouteStep) and st.kind == "setHeaderRoute":
            route = st.match
    return route


def _canary_scale(st: SetCanaryScale, spec: RolloutSpec) -> int | None:
    if st.replicas is not None:
        return int(st.replicas)
    if st.weight is not None:
        return -(-int(st.weight) * spec.replicas // 100)
    return None


def _advance(
    plan: Plan,
    status: Body,
    steps: tuple[Step, ...],
    index: int,
    new: ReplicaSet,
    stable: ReplicaSet | None,
    old: list[ReplicaSet],
    targets: math_.Targets,
    now: dt.datetime,
    runs: Sequence[Body] = (),
    *,
    routed: bool = False,
) -> int:
    """Complete the current step if it is done; returns the new step index."""
    if index >= len(steps):
        return index
    step = steps[index]
    done = False
    if isinstance(step, SetWeight | SetCanaryScale):
        done = (
            new.replicas == targets.canary == new.available
            and (stable is None or stable.replicas == targets.stable == stable.current)
            # Basic canary: old pods would take traffic. Behind a router they take none.
            and (routed or all(s.available == 0 for s in old))
            # Behind a router the step's weight must be routed, not held back.
            and not (routed and isinstance(step, SetWeight) and plan.weight != step.weight)
        )
    elif isinstance(step, Pause):
        done = _pause(plan, status, step, now)
    elif isinstance(step, RouteStep):
        done = True
    elif isinstance(step, AnalysisStep):
        gate = _analysis_gate(
            plan,
            status,
            runs,
            kind="Step",
            infix=str(index),
            ref=step.analysis,
            h=new.hash,
            now=now,
        )
        done = gate is True
    if not done:
        return index
    index += 1
    status["currentStepIndex"] = index
    status["controllerPause"] = False
    status.pop("pauseConditions", None) if not status.get("pauseConditions") else None
    plan.events.append(
        ("RolloutStepCompleted", f"Rollout step {index}/{len(steps)} completed ({_describe(step)})")
    )
    plan.requeue_after = 0.0
    return index


def _pause(plan: Plan, status: Body, step: Pause, now: dt.datetime) -> bool:
    conditions: list[Body] = status.get("pauseConditions") or []
    mine = next((c for c in conditions if c.get("reason") == PAUSE_STEP), None)
    if mine is None:
        if status.get("controllerPause"):
            return True  # the user removed the pause (promote)
        status["pauseConditions"] = [*conditions, {"reason": PAUSE_STEP, "startTime": _iso(now)}]
        status["controllerPause"] = True
        plan.events.append(("RolloutPaused", "Rollout is paused (CanaryPauseStep)"))
        if step.seconds is not None:
            plan.requeue_after = step.seconds
        return False
    if step.seconds is None:
        return False
    started = _parse_time(mine.get("startTime")) or now
    left = (started + dt.timedelta(seconds=step.seconds) - now).total_seconds()
    if left > 0:
        plan.requeue_after = left
        return False
    status["pauseConditions"] = [c for c in conditions if c is not mine]
    if not status["pauseConditions"]:
        status.pop("pauseConditions")
    return True


def _describe(step: Step) -> str:
    if isinstance(step, SetWeight):
        return f"setWeight: {step.weight}"
    if isinstance(step, Pause):
        return "pause" if step.seconds is None else f"pause: {step.seconds:g}s"
    if isinstance(step, SetCanaryScale):
        return "setCanaryScale"
    if isinstance(step, RouteStep):
        return step.kind
    return "analysis"


NOT_APPLIED = "NotApplied"


def _not_applied_condition(status: Body, spec: RolloutSpec, now: dt.datetime) -> None:
    """Name the spec fields this controller accepts but does not act on (condition
    NotApplied), kept unchanged while they are the same so it causes no status write."""
    kept = [
        c
        for c in status.get("conditions") or []
        if c.get("type") not in (ANALYSIS_NOT_RUN, NOT_APPLIED)
    ]
    if spec.unapplied:
        message = f"not applied by gitopsd: {', '.join(spec.unapplied)}"
        same = [
            c
            for c in status.get("conditions") or []
            if c.get("type") == NOT_APPLIED and c.get("message") == message
        ]
        kept.append(
            same[0]
            if same
            else {
                "type": NOT_APPLIED,
                "status": "True",
                "reason": "FieldsNotApplied",
                "message": message,
                "lastUpdateTime": _iso(now),
                "lastTransitionTime": _iso(now),
            }
        )
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def _history(
    sets: list[ReplicaSet],
    new: ReplicaSet,
    stable: ReplicaSet | None,
    limit: int,
    scale: dict[str, int],
) -> list[str]:
    """Old, scaled-down sets beyond `revisionHistoryLimit`, oldest first."""
    idle = [
        s
        for s in sets
        if s is not new
        and s is not stable
        and scale.get(s.name, s.replicas) == 0
        and s.current == 0
    ]
    idle.sort(key=lambda s: s.revision)
    return [s.name for s in idle[: max(0, len(idle) - limit)]]


def _counts(
    status: Body, spec: RolloutSpec, ro: Body, sets: list[ReplicaSet], new: ReplicaSet, plan: Plan
) -> None:
    status["replicas"] = sum(s.current for s in sets)
    status["updatedReplicas"] = new.current
    status["readyReplicas"] = sum(s.ready for s in sets)
    status["availableReplicas"] = sum(s.available for s in sets)
    status["observedGeneration"] = str((ro.get("metadata") or {}).get("generation", ""))
    labels = {**(spec.selector.get("matchLabels") or {})}
    status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def phase(spec: RolloutSpec, status: Body, ro: Body) -> tuple[str, str]:
    """Argo Rollouts' phase and message, from the spec and the (new) status."""
    for c in status.get("conditions") or []:
        if c.get("type") == "InvalidSpec" or c.get("reason") in (
            "RolloutAborted",
            "ProgressDeadlineExceeded",
        ):
            return "Degraded", f"{c.get('reason')}: {c.get('message', '')}"
    if status.get("abort"):
        return "Degraded", "RolloutAborted: Rollout aborted update to revision"
    if spec.paused:
        return "Paused", "manually paused"
    for c in status.get("pauseConditions") or []:
        return "Paused", str(c.get("reason"))
    if spec.restart_at and status.get("restartedAt") != spec.restart_at:
        return "Progressing", "rollout is restarting"
    if int(status.get("updatedReplicas") or 0) < spec.replicas:
        return "Progressing", "more replicas need to be updated"
    if int(status.get("availableReplicas") or 0) < int(status.get("updatedReplicas") or 0):
        return "Progressing", "updated replicas are still becoming available"
    bg = spec.blue_green
    if bg is not None:
        active = (status.get("blueGreen") or {}).get("activeSelector")
        if active != status.get("currentPodHash"):
            return "Progressing", "active service cutover pending"
        if status.get("stableRS") != status.get("currentPodHash"):
            if bg.post_promotion is not None:
                return "Progressing", "waiting for post-promotion verification to complete"
            return "Progressing", "waiting for analysis to complete"
    if spec.canary is not None:
        if spec.canary.nginx is None and int(status.get("replicas") or 0) > int(
            status.get("updatedReplicas") or 0
        ):
            return "Progressing", "old replicas are pending termination"
        if not status.get("stableRS") or status.get("stableRS") != status.get("currentPodHash"):
            return "Progressing", "waiting for all steps to complete"
    return "Healthy", ""


BLUE_GREEN_PAUSE = "BlueGreenPause"


def plan_blue_green(
    ro: Body,
    spec: RolloutSpec,
    sets: list[ReplicaSet],
    now: dt.datetime,
    runs: Sequence[Body] = (),
) -> Plan:
    """The next writes and status of a blue-green Rollout: the new set comes up behind the
    preview Service (at previewReplicaCount, if set), an optional pause (autoPromotionEnabled
    false, or autoPromotionSeconds), then full size and the active Service switched to it; the
    old set is scaled down scaleDownDelaySeconds later. Abort keeps (or puts back) active on
    the stable set and scales the new one down after abortScaleDownDelaySeconds."""
    bg = spec.blue_green
    assert bg is not None
    plan = Plan()
    status: Body = copy.deepcopy(ro.get("status") or {})
    h, new = _current_set(spec, status, sets)
    if status.get("currentPodHash") != h:
        if status.get("currentPodHash"):
            for key in ("abort", "abortedAt", "pauseConditions", "promoteFull"):
                status.pop(key, None)
            status["controllerPause"] = False
        status["currentPodHash"] = h
    stable_hash = str(status.get("stableRS") or "")
    blue: Body = dict(status.get("blueGreen") or {})
    if not stable_hash:
        stable_hash = status["stableRS"] = h
        blue["activeSelector"] = h
        plan.events.append(("RolloutCompleted", f"Rollout completed update to revision 1 ({h})"))
    stable = next((s for s in sets if s.hash == stable_hash and s.hash != h), None)
    old = [s for s in sets if s is not new and s is not stable]
    if new is None:
        revision = max((s.revision for s in sets), default=0) + 1
        plan.create = new_replica_set(ro, spec, h, revision, 0)
        plan.events.append(("NewReplicaSetCreated", f"Created ReplicaSet {h} (rev {revision})"))
        name = str(plan.create["metadata"]["name"])
        new = ReplicaSet(name, h, revision, 0, 0, 0, 0, spec.template)

    aborted = bool(status.get("abort")) and h != stable_hash
    if not aborted:
        status.pop("abortedAt", None)  # retried
        _clear_abort(status)
    promoted = h == stable_hash
    want: dict[str, int] = {}
    if promoted:
        want[new.name] = spec.replicas
        blue["activeSelector"] = h
        for key in ("pauseConditions", "abort", "abortedAt", "promoteFull"):
            status.pop(key, None)
        status["controllerPause"] = False
        if new.deadline:  # a fast rollback to a set that was on its way out
            plan.annotate[new.name] = {SCALE_DOWN_DEADLINE: None}
        _delayed_scale_down(plan, [*old, *([stable] if stable else [])], bg.scale_down_delay, now)
    elif aborted:
        if not status.get("abortedAt"):
            status["abortedAt"] = _iso(now)
            plan.events.append(
                ("RolloutAborted", f"Rollout aborted update to revision {new.revision}")
            )
        blue["activeSelector"] = stable_hash
        if stable is not None:
            want[stable.name] = spec.replicas
        if bg.abort_scale_down_delay > 0:
            _delayed_scale_down(plan, [new], bg.abort_scale_down_delay, now)
    else:
        if stable is not None:
            want[stable.name] = spec.replicas
        if blue.get("activeSelector") not in (stable_hash, h):
            # Active pointed at an update that was replaced mid-way (e.g. during its
            # post-promotion analysis): back to the stable pods, which are whole.
            blue["activeSelector"] = stable_hash
        want[new.name] = _bg_progress(plan, status, blue, spec, bg, new, stable, now, runs)
        if (
            new.deadline and status.get("stableRS") != h and not _fast_rollback(new, stable, now)
        ):  # retried after an abort (a fast rollback keeps it while it waits for pods)
            plan.annotate[new.name] = {SCALE_DOWN_DEADLINE: None}
        for s in old:
            want[s.name] = 0
    for s in [new, *old, *([stable] if stable else [])]:
        waiting = (plan.annotate.get(s.name) or {}).get(SCALE_DOWN_DEADLINE)
        if s.name in want and s.replicas != want[s.name] and not waiting:
            plan.scale[s.name] = want[s.name]
    if plan.create is not None and new.name in plan.scale:
        plan.create["spec"]["replicas"] = plan.scale.pop(new.name)

    blue["previewSelector"] = h
    plan.services[bg.active_service] = blue["activeSelector"]
    if bg.preview_service:
        plan.services[bg.preview_service] = h
    status["blueGreen"] = blue
    plan.delete = _history(sets, new, stable, spec.revision_history_limit, plan.scale)
    _counts(status, spec, ro, sets, new, plan)
    return _finish(plan, status, spec, ro, now)


def _bg_progress(
    plan: Plan,
    status: Body,
    blue: Body,
    spec: RolloutSpec,
    bg: BlueGreen,
    new: ReplicaSet,
    stable: ReplicaSet | None,
    now: dt.datetime,
    runs: Sequence[Body] = (),
) -> int:
    """An update in progress: the new set's size, and the switch once it may happen; with a
    postPromotionAnalysis the new set becomes stable only once that run succeeds (its failure
    aborts and switches active back)."""
    if blue.get("activeSelector") == new.hash:
        return _bg_post_promotion(plan, status, blue, spec, bg, new, now, runs)
    if _fast_rollback(new, stable, now) and new.available >= spec.replicas:
        # Back to a set still inside its scale-down delay: switch at once, no analysis.
        blue["activeSelector"] = status["stableRS"] = new.hash
        plan.events.append(("SkipSteps", "Rollback to a ReplicaSet within its scale-down delay"))
        plan.events.append(("SwitchService", f"Switched active Service to {new.hash}"))
        plan.requeue_after = 0.0
        return spec.replicas
    preview_size = spec.replicas
    if bg.preview_replica_count is not None and not _resumed(status):
        preview_size = int(bg.preview_replica_count)
    size = max(new.replicas, preview_size) if _resumed(status) else preview_size
    ready = new.replicas == size and new.available >= size
    if not ready or spec.paused:
        return size
    if bg.pre_promotion is not None:
        gate = _analysis_gate(
            plan,
            status,
            runs,
            kind="PrePromotion",
            infix="pre",
            ref=bg.pre_promotion,
            h=new.hash,
            now=now,
        )
        if gate is not True:
            return size
    if not _bg_pause(plan, status, bg, now):
        return size
    if not (new.available >= spec.replicas and new.replicas == spec.replicas):
        return spec.replicas  # full size before the switch
    blue["activeSelector"] = new.hash
    status.pop("pauseConditions", None)
    status["controllerPause"] = False
    plan.events.append(("SwitchService", f"Switched active Service to {new.hash}"))
    plan.requeue_after = 0.0
    if bg.post_promotion is None:
        _bg_completed(plan, status, new)
    return spec.replicas


def _bg_post_promotion(
    plan: Plan,
    status: Body,
    blue: Body,
    spec: RolloutSpec,
    bg: BlueGreen,
    new: ReplicaSet,
    now: dt.datetime,
    runs: Sequence[Body],
) -> int:
    """Active already points at the new set: run the post-promotion analysis, if any."""
    if bg.post_promotion is None:
        _bg_completed(plan, status, new)
        return spec.replicas
    gate = _analysis_gate(
        plan,
        status,
        runs,
        kind="PostPromotion",
        infix="post",
        ref=bg.post_promotion,
        h=new.hash,
        now=now,
    )
    if gate is True:
        _bg_completed(plan, status, new)
    elif gate is None:  # failed: traffic back to the stable set now
        blue["activeSelector"] = status.get("stableRS")
    return spec.replicas


def _bg_completed(plan: Plan, status: Body, new: ReplicaSet) -> None:
    status["stableRS"] = new.hash
    message = f"Rollout completed update to revision {new.revision} ({new.hash})"
    plan.events.append(("RolloutCompleted", message))
    plan.requeue_after = 0.0


def _fast_rollback(new: ReplicaSet, stable: ReplicaSet | None, now: dt.datetime) -> bool:
    """`new` is an older set than the stable one whose scale-down delay has not run out."""
    at = _parse_time(new.deadline) if new.deadline else None
    return at is not None and at > now and stable is not None and new.revision < stable.revision


def _resumed(status: Body) -> bool:
    """The user (or autoPromotionSeconds) let a paused blue-green rollout go on."""
    return bool(status.get("controllerPause")) and not any(
        c.get("reason") == BLUE_GREEN_PAUSE for c in status.get("pauseConditions") or []
    )


def _bg_pause(plan: Plan, status: Body, bg: BlueGreen, now: dt.datetime) -> bool:
    """True once the rollout may switch: no pause asked, or the pause is over."""
    if bg.auto_promotion_enabled and bg.auto_promotion_seconds <= 0:
        return True
    conditions: list[Body] = status.get("pauseConditions") or []
    mine = next((c for c in conditions if c.get("reason") == BLUE_GREEN_PAUSE), None)
    if mine is None:
        if status.get("controllerPause"):
            return True  # promoted
        status["pauseConditions"] = [
            *conditions,
            {"reason": BLUE_GREEN_PAUSE, "startTime": _iso(now)},
        ]
        status["controllerPause"] = True
        plan.events.append(("RolloutPaused", "Rollout is paused (BlueGreenPause)"))
        if bg.auto_promotion_enabled and bg.auto_promotion_seconds > 0:
            plan.requeue_after = float(bg.auto_promotion_seconds)
        return False
    if bg.auto_promotion_enabled and bg.auto_promotion_seconds > 0:
        started = _parse_time(mine.get("startTime")) or now
        left = (started + dt.timedelta(seconds=bg.auto_promotion_seconds) - now).total_seconds()
        if left <= 0:
            status["pauseConditions"] = [c for c in conditions if c is not mine]
            return True
        plan.requeue_after = left
    return False


def _delayed_scale_down(plan: Plan, sets: list[ReplicaSet], delay: float, now: dt.datetime) -> None:
    """Scale `sets` to zero `delay` seconds after first asked, by the scale-down-deadline
    annotation Argo Rollouts writes."""
    for s in sets:
        if s.replicas == 0:
            if s.deadline:
                plan.annotate[s.name] = {SCALE_DOWN_DEADLINE: None}
            continue
        if not s.deadline:
            plan.annotate[s.name] = {SCALE_DOWN_DEADLINE: _iso(now + dt.timedelta(seconds=delay))}
            plan.requeue_after = min(plan.requeue_after or delay, delay)
            continue
        at = _parse_time(s.deadline) or now
        left = (at - now).total_seconds()
        if left <= 0:
            plan.scale[s.name] = 0
        else:
            plan.requeue_after = min(plan.requeue_after or left, left)


def plan_rollout(
    ro: Body,
    spec: RolloutSpec,
    sets: list[ReplicaSet],
    now: dt.datetime,
    runs: Sequence[Body] = (),
) -> Plan:
    """The next writes and status of a Rollout, by its strategy (`runs`: its AnalysisRuns)."""
    if spec.blue_green is not None:
        plan = plan_blue_green(ro, spec, sets, now, runs)
    else:
        plan = plan_canary(ro, spec, sets, now, runs)
    status = plan.status
    finished = status.get("stableRS") == status.get("currentPodHash") or status.get("abort")
    for run in runs:
        meta = run.get("metadata") or {}
        labels = meta.get("labels") or {}
        running = (run.get("status") or {}).get("phase") not in _RUN_DONE
        stale = labels.get(HASH_LABEL) != status.get("currentPodHash")
        if (run.get("spec") or {}).get("terminate"):
            continue
        # On abort every run of the update is marked terminated, finished ones included, so
        # a retry starts fresh runs instead of finding the failed one again.
        if (running and (finished or stale)) or (status.get("abort") and not stale):
            plan.terminate_runs.append(str(meta.get("name")))
    return plan


def workload_scale(
    spec: RolloutSpec, status: Body, sets: Sequence[ReplicaSet], current: int
) -> int | None:
    """The replicas for a workloadRef Deployment now at `current` (None: leave it alone).
    `never` leaves it; `onsuccess` scales it to 0 once the Rollout is Healthy;
    `progressively` takes from it what the Rollout's current set has available, never adding."""
    mode = str(spec.workload_ref.get("scaleDown") or "never") if spec.workload_ref else "never"
    if mode == "onsuccess":
        return 0 if status.get("phase") == "Healthy" and current != 0 else None
    if mode == "progressively":
        new = next((s for s in sets if s.hash == status.get("currentPodHash")), None)
        want = min(current, max(0, spec.replicas - (new.available if new else 0)))
        return want if want != current else None
    return None


_RUN_DONE = {"Successful", "Failed", "Error", "Inconclusive"}
INCONCLUSIVE_PAUSE = "InconclusiveAnalysisRun"


def _find_run(runs: Sequence[Body], kind: str, infix: str, h: str) -> Body | None:
    for run in runs:
        labels = (run.get("metadata") or {}).get("labels") or {}
        if labels.get("rollout-type") != kind or labels.get(HASH_LABEL) != h:
            continue
        if kind == "Step" and labels.get("step-index") != infix:
            continue
        if (run.get("spec") or {}).get("terminate"):
            continue
        return run
    return None


def _analysis_gate(
    plan: Plan,
    status: Body,
    runs: Sequence[Body],
    *,
    kind: str,
    infix: str,
    ref: AnalysisRef,
    h: str,
    now: dt.datetime,
) -> bool | None:
    """An analysis the Rollout waits on: True once Successful (or promoted past an
    Inconclusive one), False while it runs or is paused, None when its failure aborted."""
    run = _find_run(runs, kind, infix, h)
    if kind != "Background":
        plan.analysis_waiting = True
    if run is None:
        plan.want_runs.append(RunRequest(kind, ref, infix))
        return False
    rs = run.get("status") or {}
    phase_ = str(rs.get("phase") or "")
    if phase_ == "Successful":
        if kind != "Background":
            plan.analysis_waiting = False
        return True
    if phase_ in ("Failed", "Error"):
        what = (
            "Step-based" if kind == "Step" else f"{kind}" if kind != "Background" else "Background"
        )
        _abort(status, f"{what} analysis phase {phase_.lower()}: {rs.get('message', '')}", now)
        plan.events.append(
            ("AnalysisRunFailed", f"Analysis Run '{run['metadata']['name']}' {phase_}")
        )
        plan.requeue_after = 0.0
        return None
    if phase_ == "Inconclusive":
        conditions = status.get("pauseConditions") or []
        holding = any(c.get("reason") == INCONCLUSIVE_PAUSE for c in conditions)
        if status.get("controllerPause") and not holding:
            return True  # a person promoted past it
        if not holding:
            status["pauseConditions"] = [
                *conditions,
                {"reason": INCONCLUSIVE_PAUSE, "startTime": _iso(now)},
            ]
            status["controllerPause"] = True
            plan.events.append(("RolloutPaused", "Rollout is paused (InconclusiveAnalysisRun)"))
    return False


def _abort(status: Body, message: str, now: dt.datetime) -> None:
    status["abort"] = True
    conditions = [c for c in status.get("conditions") or [] if c.get("reason") != "RolloutAborted"]
    conditions.append(
        {
            "type": "Progressing",
            "status": "False",
            "reason": "RolloutAborted",
            "message": message,
            "lastUpdateTime": _iso(now),
            "lastTransitionTime": _iso(now),
        }
    )
    status["conditions"] = conditions


def _clear_abort(status: Body) -> None:
    conditions = [c for c in status.get("conditions") or [] if c.get("reason") != "RolloutAborted"]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)
