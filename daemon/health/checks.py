"""Argo CD-compatible health of live Kubernetes objects, and of an app made of them.

`assess` is gitops-engine's GetResourceHealth: one small pure function per supported kind,
chosen by (group, kind). `aggregate` is Argo CD's worst-of roll-up for an application.
Nothing here does I/O; malformed objects yield `Unknown`, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.model import ANN_HELM_HOOK, ANN_HOOK, Health, HealthStatus, ResourceKey

HOOK_FINALIZER = "argocd.argoproj.io/hook-finalizer"
ANN_IGNORE_RESTART_POLICY = "argocd.argoproj.io/ignore-restart-policy"
ANN_HPA_V1_CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"

# Argo CD shows at most this many resources when naming the cause of an app's health.
MAX_CAUSES_SHOWN = 3


class _Malformed(Exception):
    """A field holds a value of the wrong type; the message names the field."""

    def __init__(self, path: str, expected: str, got: object) -> None:
        super().__init__(f"{path} is {type(got).__name__}, expected {expected}")


@dataclass(frozen=True, slots=True)
class _Fields:
    """Typed read access to one mapping of a manifest body, remembering where it sits.

    Absent and null fields read as the Kubernetes zero value, like Go's typed structs do;
    a present field of the wrong type raises `_Malformed` with its dotted path.
    """

    data: Mapping[str, Any]
    path: str = ""

    def _at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        """True when the field is present and not null."""
        return self.data.get(name) is not None

    def sub(self, name: str) -> _Fields:
        """A nested object (empty when absent)."""
        value = self.data.get(name)
        if value is None:
            return _Fields({}, self._at(name))
        if not isinstance(value, Mapping):
            raise _Malformed(self._at(name), "an object", value)
        return _Fields(value, self._at(name))

    def subs(self, name: str) -> list[_Fields]:
        """A list of objects (empty when absent)."""
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _Malformed(self._at(name), "a list", value)
        items = []
        for index, item in enumerate(value):
            where = f"{self._at(name)}[{index}]"
            if not isinstance(item, Mapping):
                raise _Malformed(where, "an object", item)
            items.append(_Fields(item, where))
        return items

    def text(self, name: str) -> str:
        """A string field ('' when absent)."""
        value = self.data.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _Malformed(self._at(name), "a string", value)
        return value

    def texts(self, name: str) -> list[str]:
        """A list of strings (empty when absent)."""
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Malformed(self._at(name), "a list of strings", value)
        return value

    def maybe_number(self, name: str) -> int | None:
        """An integer field, or None when absent (Go's *int32)."""
        value = self.data.get(name)
        if value is None:
            return None
        # bool is an int subclass; `replicas: true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Malformed(self._at(name), "an integer", value)
        return value

    def number(self, name: str) -> int:
        """An integer field (0 when absent)."""
        value = self.maybe_number(name)
        return 0 if value is None else value

    def flag(self, name: str) -> bool:
        """A boolean field (False when absent)."""
        value = self.data.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise _Malformed(self._at(name), "a boolean", value)
        return value

    def timestamp(self, name: str) -> datetime | None:
        """An RFC 3339 timestamp, or None when absent.

        The API serves strings; YAML fixtures may already hold datetimes.
        """
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                raise _Malformed(self._at(name), "an RFC 3339 timestamp", value) from None
        raise _Malformed(self._at(name), "an RFC 3339 timestamp", value)


def _condition(status: _Fields, kind: str) -> _Fields | None:
    """The first condition of the given type in status.conditions, if any."""
    for condition in status.subs("conditions"):
        if condition.text("type") == kind:
            return condition
    return None


def _quote(name: str) -> str:
    """Double-quote a name the way Go's %q does, so messages match kubectl's."""
    return json.dumps(name)


def _progressing(message: str) -> Health:
    return Health(HealthStatus.PROGRESSING, message)


def _healthy(message: str = "") -> Health:
    return Health(HealthStatus.HEALTHY, message)


def _degraded(message: str) -> Health:
    return Health(HealthStatus.DEGRADED, message)


# --- apps ---------------------------------------------------------------------------------


def _deployment(obj: _Fields) -> Health:
    spec, status = obj.sub("spec"), obj.sub("status")
    if spec.flag("paused"):
        return Health(HealthStatus.SUSPENDED, "Deployment is paused")
    # Until the controller has seen the latest spec, status describes an older rollout.
    if obj.sub("metadata").number("generation") > status.number("observedGeneration"):
        return _progressing(
            "Waiting for rollout to finish: observed deployment generation less than desired "
            "generation"
        )
    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.text("reason") == "ProgressDeadlineExceeded":
        name = obj.sub("metadata").text("name")
        return _degraded(f"Deployment {_quote(name)} exceeded its progress deadline")
    desired = spec.maybe_number("replicas")
    updated = status.number("updatedReplicas")
    if desired is not None and updated < desired:
        return _progressing(
            f"Waiting for rollout to finish: {updated} out of {desired} new replicas have been "
            "updated..."
        )
    total = status.number("replicas")
    if total > updated:
        return _progressing(
            f"Waiting for rollout to finish: {total - updated} old replicas are pending "
            "termination..."
        )
    available = status.number("availableReplicas")
    if available < updated:
        return _progressing(
            f"Waiting for rollout to finish: {available} of {updated} updated replicas are "
            "available..."
        )
    return _healthy()


def _statefulset(obj: _Fields) -> Health:
    spec, status = obj.sub("spec"), obj.sub("status")
    observed = status.number("observedGeneration")
    if observed == 0 or obj.sub("metadata").number("generation") > observed:
        return _progressing("Waiting for statefulset spec update to be observed...")
    desired = spec.maybe_number("replicas")
    ready = status.number("readyReplicas")
    if desired is not None and ready < desired:
        return _progressing(f"Waiting for {desired - ready} pods to be ready...")
    strategy = spec.sub("updateStrategy")
    updated = status.number("updatedReplicas")
    if strategy.text("type") == "RollingUpdate" and strategy.has("rollingUpdate"):
        # The API server defaults rollingUpdate.partition, so live objects end here: pods
        # below the partition are deliberately left on the old revision.
        partition = strategy.sub("rollingUpdate").maybe_number("partition")
        if desired is not None and partition is not None and updated < desired - partition:
            return _progressing(
                f"Waiting for partitioned roll out to finish: {updated} out of "
                f"{desired - partition} new pods have been updated..."
            )
        return _healthy(f"Partitioned roll out complete: {updated} new pods have been updated...")
    if strategy.text("type") == "OnDelete":
        return _healthy(f"StatefulSet has {ready} ready pods")
    update_revision = status.text("updateRevision")
    if update_revision != status.text("currentRevision"):
        return _progressing(
            f"Waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{update_revision}..."
        )
    return _healthy(
        f"StatefulSet rolling update complete {status.number('currentReplicas')} pods at "
        f"revision {status.text('currentRevision')}..."
    )


def _daemonset(obj: _Fields) -> Health:
    spec, status = obj.sub("spec"), obj.sub("status")
    if obj.sub("metadata").number("generation") > status.number("observedGeneration"):
        return _progressing(
            "Waiting for rollout to finish: observed daemon set generation less than desired "
            "generation"
        )
    desired = status.number("desiredNumberScheduled")
    updated = status.number("updatedNumberScheduled")
    if spec.sub("updateStrategy").text("type") == "OnDelete":
        # Pods only change when someone deletes them, so a partial update is the steady state.
        return _healthy(f"DaemonSet {updated} out of {desired} new pods have been updated")
    name = _quote(obj.sub("metadata").text("name"))
    if updated < desired:
        return _progressing(
            f"Waiting for daemon set {name} rollout to finish: {updated} out of {desired} new "
            "pods have been updated..."
        )
    available = status.number("numberAvailable")
    if available < desired:
        return _progressing(
            f"Waiting for daemon set {name} rollout to finish: {available} of {desired} updated "
            "pods are available..."
        )
    return _healthy()


def _replicaset(obj: _Fields) -> Health:
    spec, status = obj.sub("spec"), obj.sub("status")
    if obj.sub("metadata").number("generation") > status.number("observedGeneration"):
        return _progressing(
            "Waiting for rollout to finish: observed replica set generation less than desired "
            "generation"
        )
    failure = _condition(status, "ReplicaFailure")
    if failure is not None and failure.text("status") == "True":
        return _degraded(failure.text("message") or "ReplicaSet failed to create pods")
    desired = spec.maybe_number("replicas")
    available = status.number("availableReplicas")
    if desired is not None and available < desired:
        return _progressing(
            f"Waiting for rollout to finish: {available} out of {desired} new replicas are "
            "available..."
        )
    return _healthy()


# --- core ---------------------------------------------------------------------------------


def _is_bad_waiting_reason(reason: str) -> bool:
    """Waiting reasons that mean the container will not start without a change.

    CrashLoopBackOff, ImagePullBackOff, ErrImagePull, CreateContainerConfigError, ...
    """
    return reason.startswith("Err") or reason.endswith(("Error", "BackOff"))


def _pod_failure_message(status: _Fields) -> str:
    """Why a Failed pod failed: the pod's own message, else the first terminated container."""
    if status.text("message"):
        return status.text("message")
    for container in [*status.subs("initContainerStatuses"), *status.subs("containerStatuses")]:
        terminated = container.sub("state").sub("terminated")
        if terminated.text("message"):
            return terminated.text("message")
        if terminated.text("reason") == "OOMKilled":
            return "OOMKilled"
        code = terminated.number("exitCode")
        if code != 0:
            return f"container {_quote(container.text('name'))} failed with exit code {code}"
    return "Pod failed"


def _pod(obj: _Fields) -> Health:
    spec, status = obj.sub("spec"), obj.sub("status")
    annotations = obj.sub("metadata").sub("annotations")
    is_hook = annotations.has(ANN_HOOK) or annotations.has(ANN_HELM_HOOK)
    # The API server defaults restartPolicy to Always; a body without it means Always.
    policy = spec.text("restartPolicy") or "Always"
    # Pods with OnFailure/Never are usually hooks, which must not fail on a transient
    # ImagePullBackOff; the annotation lets operator-managed non-hook pods opt back in.
    long_running = policy == "Always" or (
        annotations.text(ANN_IGNORE_RESTART_POLICY) == "true" and not is_hook
    )
    if long_running:
        problems = []
        for container in status.subs("containerStatuses"):
            waiting = container.sub("state").sub("waiting")
            reason = waiting.text("reason")
            if _is_bad_waiting_reason(reason):
                detail = waiting.text("message")
                name = _quote(container.text("name"))
                problems.append(
                    f"{reason}: {detail}" if detail else f"container {name} is waiting: {reason}"
                )
        if problems:
            return _degraded(", ".join(problems))

    phase = status.text("phase")
    message = status.text("message")
    if phase == "Pending":
        return _progressing(message or "Pod is pending")
    if phase == "Succeeded":
        return _healthy(message)
    if phase == "Failed":
        return _degraded(_pod_failure_message(status))
    if phase == "Running":
        if not long_running:
            # A finite-life pod that is still running has not done its job yet.
            return _progressing(message or "Pod is running to completion")
        ready = _condition(status, "Ready")
        if ready is not None and ready.text("status") == "True":
            return _healthy(message)
        for container in status.subs("containerStatuses"):
            last_state = container.sub("lastState")
            if last_state.has("terminated"):
                # Not ready after a restart: the container is crashing, not starting.
                terminated = last_state.sub("terminated")
                return _degraded(
                    message
                    or f"container {_quote(container.text('name'))} is not ready after it "
                    f"terminated ({terminated.text('reason') or 'no reason'}, exit code "
                    f"{terminated.number('exitCode')})"
                )
        return _progressing(message or "Waiting for containers to become ready")
    return Health(HealthStatus.UNKNOWN, message or f"Pod phase {phase!r} is not recognised")


def _service(obj: _Fields) -> Health:
    is_load_balancer = obj.sub("spec").text("type") == "LoadBalancer"
    if is_load_balancer and not obj.sub("status").sub("loadBalancer").subs("ingress"):
        return _progressing("Waiting for the load balancer to be assigned an address")
    return _healthy()


def _ingress(obj: _Fields) -> Health:
    if obj.sub("status").sub("loadBalancer").subs("ingress"):
        return _healthy()
    return _progressing("Waiting for the ingress controller to publish an address")


def _pvc(obj: _Fields) -> Health:
    phase = obj.sub("status").text("phase")
    if phase == "Bound":
        return _healthy()
    if phase == "Pending":
        return _progressing("Waiting for the claim to be bound to a volume")
    if phase == "Lost":
        return _degraded("The claim lost its bound volume")
    return Health(HealthStatus.UNKNOWN, f"PersistentVolumeClaim phase {phase!r} is not recognised")


# --- batch --------------------------------------------------------------------------------


def _job(obj: _Fields) -> Health:
    failed = complete = suspended = False
    message = failure = ""
    # Like gitops-engine, a Failed or Complete condition counts whatever its status, and a
    # Suspended condition marks the job as settled even after it was resumed (status False).
    for condition in obj.sub("status").subs("conditions"):
        kind = condition.text("type")
        if kind == "Failed":
            failed = complete = True
            failure = condition.text("message")
        elif kind == "Complete":
            complete = True
            message = condition.text("message")
        elif kind == "Suspended":
            complete = True
            message = condition.text("message")
            suspended = condition.text("status") == "True"
    if not complete:
        return _progressing(message or "Waiting for the job to complete")
    if failed:
        return _degraded(failure or "Job failed")
    if suspended:
        return Health(HealthStatus.SUSPENDED, message or "Job is suspended")
    return _healthy(message)


def _cronjob(obj: _Fields) -> Health:
    if obj.sub("spec").flag("suspend"):
        return Health(HealthStatus.SUSPENDED, "CronJob is suspended")
    if not obj.has("status"):
        return _progressing("Waiting for CronJob")
    status = obj.sub("status")
    last_schedule = status.timestamp("lastScheduleTime")
    if last_schedule is None:
        # Status cannot tell a CronJob that is not due yet from one that is never scheduled.
        return _healthy("CronJob has not been scheduled yet")
    last_success = status.timestamp("lastSuccessfulTime")
    if last_success is None:
        # Either the first run is still going or it never succeeded; status cannot tell which.
        return _healthy("The CronJob never completed successfully. It may not be healthy")
    if status.subs("active"):
        return _healthy("The job is running. Its last execution may not have been successful")
    if last_success < last_schedule:
        return _degraded("CronJob has not completed its last execution successfully")
    return _healthy("CronJob has completed its last execution successfully")


# --- API extensions -----------------------------------------------------------------------


def _apiservice(obj: _Fields) -> Health:
    available = _condition(obj.sub("status"), "Available")
    if available is None:
        return _progressing("Waiting to be processed")
    message = f"{available.text('reason')}: {available.text('message')}"
    if available.text("status") == "True":
        return _healthy(message)
    return _progressing(message)


def _crd(obj: _Fields) -> Health:
    conditions = obj.sub("status").subs("conditions")
    if not conditions:
        return _progressing("Status conditions not found")
    by_type = {c.text("type"): c for c in conditions}
    terminating = by_type.get("Terminating")
    if terminating is not None and terminating.text("status") == "True":
        return _progressing(f"CRD is being terminated: {terminating.text('message')}")
    names = by_type.get("NamesAccepted")
    if names is not None and names.text("status") == "False":
        return _degraded(f"CRD names have not been accepted: {names.text('message')}")
    established = by_type.get("Established")
    if established is None or established.text("status") != "True":
        # Establishing takes a moment after creation; custom resources wait on it.
        detail = established.text("message") if established is not None else ""
        return _progressing(
            f"CRD is not established yet: {detail}" if detail else "CRD is not established yet"
        )
    violations = by_type.get("NonStructuralSchema")
    if violations is not None and violations.text("status") == "True":
        return _degraded(f"Schema violations found: {violations.text('message')}")
    return _healthy("CRD is healthy")


# --- autoscaling --------------------------------------------------------------------------

_HPA_DEGRADED = frozenset(
    {
        ("AbleToScale", "FailedGetScale"),
        ("AbleToScale", "FailedUpdateScale"),
        ("ScalingActive", "FailedGetResourceMetric"),
        ("ScalingActive", "FailedGetObjectMetric"),
        ("ScalingActive", "FailedGetPodsMetric"),
        ("ScalingActive", "FailedGetExternalMetric"),
        ("ScalingActive", "FailedComputeMetricsReplicas"),
        ("ScalingActive", "InvalidSelector"),
    }
)


def _hpa_from_conditions(conditions: list[_Fields]) -> Health:
    for condition in conditions:
        if (condition.text("type"), condition.text("reason")) in _HPA_DEGRADED:
            return _degraded(condition.text("message") or condition.text("reason"))
    healthy = [
        c
        for c in conditions
        if c.text("type") in ("AbleToScale", "ScalingLimited") and c.text("status") == "True"
    ]
    if healthy:
        return _healthy(", ".join(c.text("message") for c in healthy if c.text("message")))
    return _progressing("Waiting to Autoscale")


def _hpa(obj: _Fields) -> Health:
    if obj.text("apiVersion") != "autoscaling/v1":
        return _hpa_from_conditions(obj.sub("status").subs("conditions"))
    # autoscaling/v1 has no status.conditions; the controller serialises them as JSON into
    # an annotation instead.
    annotations = obj.sub("metadata").sub("annotations")
    raw = annotations.text(ANN_HPA_V1_CONDITIONS)
    if not raw:
        return _progressing("Waiting to Autoscale")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"{annotations.path}.{ANN_HPA_V1_CONDITIONS}"
        raise _Malformed(where, "a JSON list of conditions", raw) from exc
    carrier = _Fields({"conditions": parsed}, f"{annotations.path}.{ANN_HPA_V1_CONDITIONS}")
    return _hpa_from_conditions(carrier.subs("conditions"))


# --- argoproj.io --------------------------------------------------------------------------


def _application(obj: _Fields) -> Health:
    # Argo CD removed the built-in Application check in 1.8; this is the check its docs
    # restore for app-of-apps, so a parent waits on its children's own health.
    health = obj.sub("status").sub("health")
    reported = health.text("status")
    if not reported:
        return _progressing("Waiting for application health")
    try:
        status = HealthStatus(reported)
    except ValueError:
        return Health(HealthStatus.UNKNOWN, f"Application reports unknown health {reported!r}")
    return Health(status, health.text("message"))


def _rollout(obj: _Fields) -> Health:
    # Argo CD's Rollout health: the controller's phase, Paused shown as Suspended, once the
    # controller has seen the current spec (status.observedGeneration is a string there).
    status = obj.sub("status")
    observed = status.data.get("observedGeneration")
    generation = obj.sub("metadata").data.get("generation")
    if observed is not None and str(observed).isdigit() and str(observed) != str(generation):
        return _progressing("Waiting for rollout spec update to be observed")
    phase = status.text("phase")
    if not phase:
        return _progressing("Waiting for rollout spec update to be observed")
    mapped = {"Paused": HealthStatus.SUSPENDED}.get(phase)
    try:
        value = mapped or HealthStatus(phase)
    except ValueError:
        return Health(HealthStatus.UNKNOWN, f"Rollout reports unknown phase {phase!r}")
    return Health(value, status.text("message"))


def _analysis_run(obj: _Fields) -> Health:
    phase = obj.sub("status").text("phase")
    if phase in ("", "Pending", "Running"):
        return _progressing(obj.sub("status").text("message"))
    if phase == "Successful":
        return _healthy(obj.sub("status").text("message"))
    if phase in ("Failed", "Error"):
        return _degraded(obj.sub("status").text("message"))
    return Health(HealthStatus.UNKNOWN, obj.sub("status").text("message"))


_Check = Callable[[_Fields], Health]

_CHECKS: dict[tuple[str, str], _Check] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("extensions", "Deployment"): _deployment,
    ("extensions", "DaemonSet"): _daemonset,
    ("extensions", "ReplicaSet"): _replicaset,
    ("extensions", "Ingress"): _ingress,
    ("networking.k8s.io", "Ingress"): _ingress,
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "PersistentVolumeClaim"): _pvc,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("apiregistration.k8s.io", "APIService"): _apiservice,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("autoscaling", "HorizontalPodAutoscaler"): _hpa,
    ("argoproj.io", "Application"): _application,
    ("argoproj.io", "Rollout"): _rollout,
    ("argoproj.io", "AnalysisRun"): _analysis_run,
}


def has_check(group: str, kind: str) -> bool:
    """True when `assess` has a built-in check for this group and kind."""
    return (group, kind) in _CHECKS or (group, kind) in _CUSTOM


# Checks the configuration adds (argocd-cm Lua scripts), by (group, kind); they take precedence
# over the built-in ones, as in Argo CD. Set with `set_custom_checks` when a config is loaded.
_CUSTOM: dict[tuple[str, str], Callable[[dict[str, Any]], Health]] = {}


def set_custom_checks(checks: Mapping[tuple[str, str], Callable[[dict[str, Any]], Health]]) -> None:
    """Replace the configured custom health checks."""
    _CUSTOM.clear()
    _CUSTOM.update(checks)


def assess(obj: dict[str, Any]) -> Health | None:
    """Health of one live object, or None for kinds that have no health (ConfigMap, RBAC...).

    An object being deleted is Progressing, unless Argo CD's hook finalizer holds it (the
    hook's own outcome still matters then). A body whose fields have the wrong types is
    Unknown with a message naming the field.
    """
    body: object = obj
    if not isinstance(body, Mapping):
        return Health(HealthStatus.UNKNOWN, f"object is {type(body).__name__}, expected a mapping")
    root = _Fields(body)
    try:
        api_version, kind = root.text("apiVersion"), root.text("kind")
        metadata = root.sub("metadata")
        if metadata.has("deletionTimestamp") and HOOK_FINALIZER not in metadata.texts("finalizers"):
            return _progressing("Pending deletion")
    except _Malformed as exc:
        return Health(HealthStatus.UNKNOWN, f"health check failed: {exc}")
    group = api_version.rpartition("/")[0]
    custom = _CUSTOM.get((group, kind))
    if custom is not None:
        return custom(dict(body))
    check = _CHECKS.get((group, kind))
    if check is None:
        return None
    try:
        return check(root)
    except _Malformed as exc:
        return Health(HealthStatus.UNKNOWN, f"{kind} health check failed: {exc}")


def aggregate(items: Iterable[tuple[ResourceKey, Health | None, bool]]) -> Health:
    """Application health: the worst health of its resources, as Argo CD rolls it up.

    Each item is `(key, health, live)`: `health` is `assess(live_object)` (None when the kind
    has no health, or when the caller wants the resource not to count) and `live` says
    whether the object exists in the cluster. The caller leaves out what Argo CD skips
    entirely: hooks, `Skip` hooks and ignored objects; it passes health None for resources
    annotated ignore-healthcheck and for the app's own Application.

    A resource that does not exist does not lower the app's health (OutOfSync already says
    it is missing), and a child Application that is Missing or Unknown is ignored; but an
    app that has resources of which none exist is Missing. The message names the resources
    that set the result.
    """
    worst = HealthStatus.HEALTHY
    causes: list[tuple[ResourceKey, Health]] = []
    has_resources = has_live = False
    for key, health, live in items:
        has_resources = True
        has_live = has_live or live
        if health is None or not live:
            continue
        if (key.group, key.kind) == ("argoproj.io", "Application") and health.status in (
            HealthStatus.MISSING,
            HealthStatus.UNKNOWN,
        ):
            continue
        if health.status.is_worse(worst):
            worst, causes = health.status, [(key, health)]
        elif health.status == worst and worst != HealthStatus.HEALTHY:
            causes.append((key, health))
    if has_resources and not has_live and HealthStatus.MISSING.is_worse(worst):
        return Health(HealthStatus.MISSING, "None of the app's resources exist in the cluster")
    return Health(worst, _describe_causes(causes))


def _describe_causes(causes: list[tuple[ResourceKey, Health]]) -> str:
    """'Deployment/shop/web: <message>; ... and N more', or '' when nothing is wrong."""
    parts = [
        f"{key}: {health.message}" if health.message else str(key)
        for key, health in causes[:MAX_CAUSES_SHOWN]
    ]
    summary = "; ".join(parts)
    if len(causes) > MAX_CAUSES_SHOWN:
        summary += f" and {len(causes) - MAX_CAUSES_SHOWN} more"
    return summary
