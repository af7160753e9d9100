"""A Rollout's spec as typed values, validated as Argo Rollouts validates it (pure).

Errors name the Rollout (`Rollout/ns/name`) and the field, and the controller reports them as the
`InvalidSpec` condition (phase Degraded) instead of acting on a spec it does not understand.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from daemon.durations import parse_go_duration

Body = dict[str, Any]
GROUP = "argoproj.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
HASH_LABEL = "rollouts-pod-template-hash"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"
DESIRED_ANNOTATION = "rollout.argoproj.io/desired-replicas"
SCALE_DOWN_DEADLINE = "scale-down-deadline"
MANAGED_BY = "argo-rollouts.argoproj.io/managed-by-rollouts"


class InvalidSpec(ValueError):
    """The Rollout cannot be acted on as written."""


@dataclass(frozen=True, slots=True)
class SetWeight:
    weight: int


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float | None  # None: until promoted


@dataclass(frozen=True, slots=True)
class SetCanaryScale:
    replicas: int | None = None
    weight: int | None = None
    match_traffic_weight: bool = False


@dataclass(frozen=True, slots=True)
class TemplateRef:
    name: str
    cluster_scope: bool = False


@dataclass(frozen=True, slots=True)
class AnalysisRef:
    """Templates and args of a step, background, pre- or post-promotion analysis."""

    templates: tuple[TemplateRef, ...]
    args: tuple[Body, ...] = ()
    starting_step: int = 0
    dry_run: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AnalysisStep:
    analysis: AnalysisRef


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One header a setHeaderRoute step sends to the canary: `how` is exact, regex or prefix."""

    header: str
    how: str
    value: str


@dataclass(frozen=True, slots=True)
class RouteStep:
    """setHeaderRoute / setMirrorRoute. With nginx a header route becomes the canary Ingress's
    canary-by-header annotations (nginx matches one header); a mirror route has no nginx
    counterpart and completes at once, as in Argo Rollouts."""

    kind: str
    name: str = ""
    match: HeaderMatch | None = None  # setHeaderRoute without match removes the route


Step = SetWeight | Pause | SetCanaryScale | AnalysisStep | RouteStep


@dataclass(frozen=True, slots=True)
class Nginx:
    stable_ingresses: tuple[str, ...]
    annotation_prefix: str = "nginx.ingress.kubernetes.io"
    additional_annotations: tuple[tuple[str, str], ...] = ()
    canary_annotations: tuple[tuple[str, str], ...] = ()
    weight_total: int | None = None  # trafficRouting.maxTrafficWeight, if set


@dataclass(frozen=True, slots=True)
class Canary:
    steps: tuple[Step, ...] = ()
    max_surge: int | str | None = None
    max_unavailable: int | str | None = None
    canary_service: str = ""
    stable_service: str = ""
    nginx: Nginx | None = None
    max_weight: int = 100
    analysis: AnalysisRef | None = None
    scale_down_delay: float = 30.0
    abort_scale_down_delay: float = 30.0
    min_pods_per_replica_set: int = 1

    @property
    def traffic_routed(self) -> bool:
        return self.nginx is not None


@dataclass(frozen=True, slots=True)
class BlueGreen:
    active_service: str
    preview_service: str = ""
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int = 0
    scale_down_delay: float = 30.0
    abort_scale_down_delay: float = 30.0
    preview_replica_count: int | None = None
    pre_promotion: AnalysisRef | None = None
    post_promotion: AnalysisRef | None = None


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What the controller needs from `spec`."""

    subject: str  # Rollout/ns/name
    replicas: int
    selector: Body
    template: Body
    strategy: Canary | BlueGreen
    min_ready_seconds: int = 0
    revision_history_limit: int = 10
    paused: bool = False
    progress_deadline_seconds: int = 600
    progress_deadline_abort: bool = False
    workload_ref: Body = field(default_factory=dict)
    restart_at: str = ""  # spec.restartAt, as written
    unapplied: tuple[str, ...] = ()  # fields accepted but not acted on (reported as a condition)

    @property
    def canary(self) -> Canary | None:
        return self.strategy if isinstance(self.strategy, Canary) else None

    @property
    def blue_green(self) -> BlueGreen | None:
        return self.strategy if isinstance(self.strategy, BlueGreen) else None


def owner_reference(ro: Body) -> Body:
    """The controller ownerReference a Rollout puts on what it creates (ReplicaSets,
    AnalysisRuns), so they are garbage-collected with it."""
    meta = ro.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def subject_of(body: Body) -> str:
    meta = body.get("metadata") or {}
    return f"Rollout/{meta.get('namespace', '')}/{meta.get('name', '')}"


def pause_seconds(value: Any, where: str) -> float:
    """Argo's pause duration: an int (seconds), a digit-only string (seconds) or a Go duration."""
    if isinstance(value, bool):
        raise InvalidSpec(f"{where}: invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        return float(value.strip())
    try:
        return parse_go_duration(str(value))
    except ValueError as e:
        raise InvalidSpec(f"{where}: invalid duration {value!r}: {e}") from e


def _analysis(raw: Any, where: str) -> AnalysisRef:
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{where}: must be an object")
    templates = []
    for i, t in enumerate(raw.get("templates") or []):
        if not isinstance(t, dict) or not t.get("templateName"):
            raise InvalidSpec(f"{where}.templates[{i}]: templateName is required")
        templates.append(TemplateRef(str(t["templateName"]), bool(t.get("clusterScope"))))
    if not templates:
        raise InvalidSpec(f"{where}.templates: at least one template is required")
    args = tuple(a for a in raw.get("args") or [] if isinstance(a, dict))
    dry = tuple(
        str(d.get("metricName", "")) for d in raw.get("dryRun") or [] if isinstance(d, dict)
    )
    return AnalysisRef(tuple(templates), args, int(raw.get("startingStep") or 0), dry)


def _step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidSpec(f"{where}: a step has exactly one of setWeight, pause, ...")
    ((kind, value),) = raw.items()
    if kind == "setWeight":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidSpec(f"{where}.setWeight: must be a non-negative integer")
        return SetWeight(value)
    if kind == "pause":
        value = value or {}
        if not isinstance(value, dict):
            raise InvalidSpec(f"{where}.pause: must be an object")
        if value.get("duration") is None:
            return Pause(None)
        return Pause(pause_seconds(value["duration"], f"{where}.pause.duration"))
    if kind == "setCanaryScale":
        value = value or {}
        return SetCanaryScale(
            replicas=value.get("replicas"),
            weight=value.get("weight"),
            match_traffic_weight=bool(value.get("matchTrafficWeight")),
        )
    if kind == "analysis":
        return AnalysisStep(_analysis(value, f"{where}.analysis"))
    if kind == "setHeaderRoute":
        return _header_route(value or {}, f"{where}.setHeaderRoute")
    if kind == "setMirrorRoute":
        return RouteStep(kind, str((value or {}).get("name") or ""))
    raise InvalidSpec(f"{where}: step {kind!r} is not supported by gitopsd")


def _header_route(raw: Any, where: str) -> RouteStep:
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{where}: must be an object")
    matches = raw.get("match") or []
    if not isinstance(matches, list):
        raise InvalidSpec(f"{where}.match: must be a list")
    if len(matches) > 1:
        raise InvalidSpec(f"{where}.match: nginx routes by one header; {len(matches)} given")
    if not matches:
        return RouteStep("setHeaderRoute", str(raw.get("name") or ""))
    m = matches[0] if isinstance(matches[0], dict) else {}
    value = m.get("headerValue") or {}
    hows = [k for k in ("exact", "regex", "prefix") if isinstance(value, dict) and k in value]
    if not m.get("headerName") or len(hows) != 1:
        raise InvalidSpec(
            f"{where}.match[0]: headerName and exactly one of headerValue.exact, regex or prefix"
        )
    header = HeaderMatch(str(m["headerName"]), hows[0], str(value[hows[0]]))
    return RouteStep("setHeaderRoute", str(raw.get("name") or ""), header)


def _pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (raw or {}).items()) if isinstance(raw, dict) else ()


def _canary(raw: Body, replicas: int, where: str) -> Canary:
    steps = tuple(_step(s, f"{where}.steps[{i}]") for i, s in enumerate(raw.get("steps") or []))
    nginx = None
    routing = raw.get("trafficRouting") or {}
    max_weight = int(routing.get("maxTrafficWeight") or 100)
    if max_weight <= 0:
        raise InvalidSpec(f"{where}.trafficRouting.maxTrafficWeight: must be positive")
    if routing:
        raw_nginx = routing.get("nginx")
        if not isinstance(raw_nginx, dict):
            raise InvalidSpec(f"{where}.trafficRouting: only nginx is supported by gitopsd")
        ingresses = [raw_nginx["stableIngress"]] if raw_nginx.get("stableIngress") else []
        ingresses += list(raw_nginx.get("stableIngresses") or [])
        if len(ingresses) == 0 or (
            raw_nginx.get("stableIngress") and raw_nginx.get("stableIngresses")
        ):
            raise InvalidSpec(
                f"{where}.trafficRouting.nginx: exactly one of stableIngress or stableIngresses"
            )
        nginx = Nginx(
            tuple(str(i) for i in ingresses),
            str(raw_nginx.get("annotationPrefix") or "nginx.ingress.kubernetes.io"),
            _pairs(raw_nginx.get("additionalIngressAnnotations")),
            _pairs(raw_nginx.get("canaryIngressAnnotations")),
            int(routing["maxTrafficWeight"]) if routing.get("maxTrafficWeight") else None,
        )
        if not raw.get("canaryService") or not raw.get("stableService"):
            raise InvalidSpec(
                f"{where}: canaryService and stableService must be set to use trafficRouting"
            )
    if raw.get("canaryService") and raw.get("canaryService") == raw.get("stableService"):
        raise InvalidSpec(f"{where}: canaryService and stableService must be different Services")
    for i, st in enumerate(steps):
        if isinstance(st, SetWeight) and st.weight > max_weight:
            raise InvalidSpec(f"{where}.steps[{i}].setWeight: must be 0..{max_weight}")
        if isinstance(st, SetCanaryScale) and nginx is None:
            raise InvalidSpec(f"{where}.steps[{i}].setCanaryScale: needs trafficRouting")
        if isinstance(st, RouteStep) and nginx is None:
            raise InvalidSpec(f"{where}.steps[{i}].{st.kind}: needs trafficRouting")
    if raw.get("maxSurge") in (0, "0", "0%") and raw.get("maxUnavailable") in (0, "0", "0%"):
        raise InvalidSpec(f"{where}: maxSurge and maxUnavailable both can not be zero")
    if raw.get("scaleDownDelaySeconds") is not None and nginx is None:
        raise InvalidSpec(f"{where}.scaleDownDelaySeconds: only with trafficRouting")
    background = _analysis(raw["analysis"], f"{where}.analysis") if raw.get("analysis") else None
    return Canary(
        steps=steps,
        max_surge=raw.get("maxSurge"),
        max_unavailable=raw.get("maxUnavailable"),
        canary_service=str(raw.get("canaryService") or ""),
        stable_service=str(raw.get("stableService") or ""),
        nginx=nginx,
        max_weight=max_weight,
        analysis=background,
        scale_down_delay=float(raw.get("scaleDownDelaySeconds", 30)),
        abort_scale_down_delay=float(raw.get("abortScaleDownDelaySeconds", 30)),
        min_pods_per_replica_set=int(raw.get("minPodsPerReplicaSet") or 1),
    )


def _blue_green(raw: Body, where: str) -> BlueGreen:
    if not raw.get("activeService"):
        raise InvalidSpec(f"{where}.activeService: required")
    if raw.get("previewService") and raw["previewService"] == raw["activeService"]:
        raise InvalidSpec(f"{where}: previewService and activeService must be different Services")
    pre, post = raw.get("prePromotionAnalysis"), raw.get("postPromotionAnalysis")
    return BlueGreen(
        active_service=str(raw["activeService"]),
        preview_service=str(raw.get("previewService") or ""),
        auto_promotion_enabled=raw.get("autoPromotionEnabled", True) is not False,
        auto_promotion_seconds=int(raw.get("autoPromotionSeconds") or 0),
        scale_down_delay=float(raw.get("scaleDownDelaySeconds", 30)),
        abort_scale_down_delay=float(raw.get("abortScaleDownDelaySeconds", 30)),
        preview_replica_count=raw.get("previewReplicaCount"),
        pre_promotion=_analysis(pre, f"{where}.prePromotionAnalysis") if pre else None,
        post_promotion=_analysis(post, f"{where}.postPromotionAnalysis") if post else None,
    )


SCALE_DOWN_MODES = ("never", "onsuccess", "progressively")


def workload_ref(body: Body) -> Body:
    """The Rollout's `workloadRef`, validated (empty when it has none)."""
    ref = (body.get("spec") or {}).get("workloadRef") or {}
    if not ref:
        return {}
    subject = subject_of(body)
    if not isinstance(ref, dict) or not ref.get("name"):
        raise InvalidSpec(f"{subject}: spec.workloadRef.name is required")
    if ref.get("kind", "Deployment") != "Deployment" or ref.get("apiVersion", "apps/v1") not in (
        "apps/v1",
    ):
        raise InvalidSpec(f"{subject}: spec.workloadRef must be an apps/v1 Deployment")
    if (ref.get("scaleDown") or "never") not in SCALE_DOWN_MODES:
        raise InvalidSpec(
            f"{subject}: spec.workloadRef.scaleDown must be one of {', '.join(SCALE_DOWN_MODES)}"
        )
    return dict(ref)


def parse(body: Body, *, workload: Body | None = None) -> RolloutSpec:
    """The Rollout's spec; `workload` is the Deployment its `workloadRef` names (its pod
    template, and its selector when the Rollout has none). A value of the wrong type anywhere
    is InvalidSpec too, never a crash."""
    try:
        return _parse(body, workload)
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, InvalidSpec):
            raise
        raise InvalidSpec(f"{subject_of(body)}: invalid spec: {e}") from e


def _parse(body: Body, workload: Body | None) -> RolloutSpec:
    subject = subject_of(body)
    spec = body.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise InvalidSpec(f"{subject}: spec.replicas must be a non-negative integer")
    ref = workload_ref(body)
    if ref and spec.get("template"):
        raise InvalidSpec(f"{subject}: spec.template and spec.workloadRef are exclusive")
    workload_spec = (workload or {}).get("spec") or {}
    pod_template = workload_spec.get("template") if ref else spec.get("template")
    if not isinstance(pod_template, dict) or not pod_template:
        what = f"Deployment {ref.get('name')!r} of workloadRef" if ref else "spec.template"
        raise InvalidSpec(f"{subject}: {what} is missing")
    selector = spec.get("selector") or (workload_spec.get("selector") if ref else None) or {}
    match = (selector.get("matchLabels") or {}) if isinstance(selector, dict) else {}
    if not match and not (selector or {}).get("matchExpressions"):
        raise InvalidSpec(f"{subject}: spec.selector: empty selector is invalid for deployment")
    labels = (pod_template.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in match.items()):
        raise InvalidSpec(
            f"{subject}: spec.template.metadata.labels do not match spec.selector.matchLabels"
        )
    strategy = spec.get("strategy") or {}
    if "canary" in strategy and "blueGreen" in strategy:
        raise InvalidSpec(f"{subject}: Multiple Strategies can not be listed")
    where = f"{subject}: spec.strategy"
    parsed: Canary | BlueGreen
    if "canary" in strategy:
        parsed = _canary(strategy.get("canary") or {}, replicas, f"{where}.canary")
    elif "blueGreen" in strategy:
        parsed = _blue_green(strategy.get("blueGreen") or {}, f"{where}.blueGreen")
    else:
        raise InvalidSpec(
            f"{subject}: Rollout has missing field '.spec.strategy.canary or "
            ".spec.strategy.blueGreen'"
        )
    return RolloutSpec(
        subject=subject,
        replicas=replicas,
        selector=selector,
        template=pod_template,
        strategy=parsed,
        min_ready_seconds=int(spec.get("minReadySeconds") or 0),
        revision_history_limit=int(spec.get("revisionHistoryLimit", 10)),
        paused=bool(spec.get("paused")),
        progress_deadline_seconds=int(spec.get("progressDeadlineSeconds") or 600),
        progress_deadline_abort=bool(spec.get("progressDeadlineAbort")),
        workload_ref=ref,
        restart_at=str(spec.get("restartAt") or ""),
        unapplied=_unapplied(spec, strategy),
    )


# Argo Rollouts fields this controller accepts without acting on them. They are named on the
# Rollout (condition NotApplied) rather than silently dropped.
_UNAPPLIED_TOP = ("rollbackWindow",)
_UNAPPLIED_CANARY = (
    "antiAffinity",
    "canaryMetadata",
    "stableMetadata",
    "pingPong",
    "dynamicStableScale",
    "scaleDownDelayRevisionLimit",
)
_UNAPPLIED_BLUE_GREEN = (
    "antiAffinity",
    "activeMetadata",
    "previewMetadata",
    "scaleDownDelayRevisionLimit",
)


def _unapplied(spec: Body, strategy: Body) -> tuple[str, ...]:
    out = [f"spec.{k}" for k in _UNAPPLIED_TOP if spec.get(k)]
    for name, fields in (("canary", _UNAPPLIED_CANARY), ("blueGreen", _UNAPPLIED_BLUE_GREEN)):
        raw = strategy.get(name) or {}
        out += [f"spec.strategy.{name}.{k}" for k in fields if raw.get(k)]
    return tuple(out)


def template_hash(template: Body, collision_count: int = 0) -> str:
    """The pod-template hash: stable for equal templates, 10 characters of [a-z0-9] without
    vowels (so no word appears in a name). It cannot equal Argo Rollouts' (Go's JSON bytes
    differ); sets Argo made are adopted by template equality instead."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(raw + collision_count.to_bytes(8, "little")).digest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    n = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "".join(out)


def steps_hash(spec: RolloutSpec) -> str:
    """Changes when the canary steps change (which restarts the update at step 0)."""
    c = spec.canary
    raw = repr(c.steps if c else ()).encode()
    return template_hash({"steps": hashlib.sha256(raw).hexdigest()})
