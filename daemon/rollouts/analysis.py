"""AnalysisRuns as Argo Rollouts runs them, as pure functions: a run built from templates and
arguments, which metrics are due, how a measurement changes a metric's counters, and the metric
and run phases that follow (see ../shared/research/rollouts.md §4).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from daemon.durations import parse_go_duration
from daemon.rollouts.expr import ExprError, evaluate
from daemon.rollouts.spec import (
    API_VERSION,
    HASH_LABEL,
    REVISION_ANNOTATION,
    AnalysisRef,
    Body,
    owner_reference,
)

PENDING, RUNNING, SUCCESSFUL = "Pending", "Running", "Successful"
FAILED, ERROR, INCONCLUSIVE = "Failed", "Error", "Inconclusive"
COMPLETED = {SUCCESSFUL, FAILED, ERROR, INCONCLUSIVE}
# Worst last: the run's phase is its worst metric's.
_ORDER = [SUCCESSFUL, RUNNING, PENDING, INCONCLUSIVE, ERROR, FAILED]
ERROR_RETRY = 10.0  # seconds before a measurement that errored is taken again
HISTORY = 10  # measurements kept per metric
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


class AnalysisError(ValueError):
    """A run cannot be built (an argument without a value, a duplicate metric, ...)."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a run, with Argo Rollouts' defaults applied."""

    name: str
    provider: Body
    interval: float | None = None
    initial_delay: float = 0.0
    count: int | None = 1  # None: unbounded (interval without count)
    success_condition: str = ""
    failure_condition: str = ""
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    dry_run: bool = False

    @classmethod
    def of(cls, raw: Body, dry_run_patterns: list[str]) -> Metric:
        name = str(raw.get("name") or "")
        if not name:
            raise AnalysisError("a metric has no name")
        interval = _duration(raw.get("interval"), f"metric {name}: interval")
        count = raw.get("count")
        if count is None:
            count_value: int | None = None if interval else 1
        else:
            count_value = int(_int_or_str(count, f"metric {name}: count"))
        if count_value is not None and count_value > 1 and not interval:
            raise AnalysisError(f"metric {name}: count > 1 needs an interval")
        providers = raw.get("provider") or {}
        if not isinstance(providers, dict) or len(providers) != 1:
            raise AnalysisError(f"metric {name}: exactly one provider is required")
        return cls(
            name=name,
            provider=providers,
            interval=interval,
            initial_delay=_duration(raw.get("initialDelay"), f"metric {name}: initialDelay") or 0.0,
            count=count_value,
            success_condition=str(raw.get("successCondition") or ""),
            failure_condition=str(raw.get("failureCondition") or ""),
            failure_limit=int(_int_or_str(raw.get("failureLimit", 0), "failureLimit")),
            inconclusive_limit=int(_int_or_str(raw.get("inconclusiveLimit", 0), "limit")),
            consecutive_error_limit=int(
                _int_or_str(raw.get("consecutiveErrorLimit", 4), "consecutiveErrorLimit")
            ),
            dry_run=any(re.search(p, name) for p in dry_run_patterns),
        )


def _duration(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_go_duration(str(value))
    except ValueError as e:
        raise AnalysisError(f"{where}: {e}") from e


def _int_or_str(value: Any, where: str) -> int:
    try:
        return int(str(value))
    except ValueError as e:
        raise AnalysisError(f"{where}: {value!r} is not an integer") from e


# --- building a run -----------------------------------------------------------------------


def merge_args(template_args: list[Body], given: list[Body]) -> list[Body]:
    """Template args overridden by the Rollout's (only names the template declares); every
    arg must end up with a value or a valueFrom."""
    by_name = {str(a.get("name")): dict(a) for a in template_args}
    for a in given:
        name = str(a.get("name"))
        if name in by_name:
            by_name[name] = {k: v for k, v in a.items() if v is not None}
    for name, a in by_name.items():
        if a.get("value") is None and not a.get("valueFrom"):
            raise AnalysisError(f"args.{name} was not resolved")
    return list(by_name.values())


def resolve_rollout_args(args: list[Body], ro: Body, stable: str, latest: str) -> list[Body]:
    """The Rollout-side `valueFrom`s: podTemplateHashValue (Stable | Latest) and fieldRef into
    the Rollout; secretKeyRef stays for measurement time."""
    out = []
    for a in args:
        source = a.get("valueFrom") or {}
        if "podTemplateHashValue" in source:
            which = source["podTemplateHashValue"]
            out.append({"name": a["name"], "value": stable if which == "Stable" else latest})
        elif "fieldRef" in source:
            value = field_path(ro, str(source["fieldRef"].get("fieldPath", "")))
            out.append({"name": a["name"], "value": "" if value is None else str(value)})
        else:
            out.append(a)
    return out


def field_path(obj: Body, path: str) -> Any:
    """`metadata.labels['x']`, `spec.template.x`, `status.y` read from an object."""
    tokens = re.findall(r"\['([^']*)'\]|([^.\[\]]+)", path)
    current: Any = obj
    for quoted, plain in tokens:
        key = quoted or plain
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


def substitute(metric: Body, args: dict[str, str]) -> Body:
    """`{{ args.name }}` replaced in the whole metric (values JSON-escaped, as Argo Rollouts
    serialises the metric and substitutes the text); an unresolved one is an error."""
    text = json.dumps(metric)

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in args:
            raise AnalysisError(f"failed to resolve {m.group(0)}")
        return json.dumps(args[name])[1:-1]

    return dict(json.loads(_ARG.sub(one, text)))


def build_run(
    ro: Body,
    templates: list[Body],
    ref: AnalysisRef,
    *,
    kind: str,
    pod_hash: str,
    revision: int,
    infix: str,
    stable_hash: str,
) -> Body:
    """The AnalysisRun a Rollout creates for `ref` (kind Step, Background, PrePromotion or
    PostPromotion): templates' metrics concatenated, args merged and substituted, owned by the
    Rollout. Secret-valued args stay references until measured."""
    meta = ro.get("metadata") or {}
    metrics: list[Body] = []
    template_args: list[Body] = []
    dry_run: list[Body] = []
    for t in templates:
        spec = t.get("spec") or {}
        metrics += [copy.deepcopy(m) for m in spec.get("metrics") or []]
        template_args += [a for a in spec.get("args") or [] if isinstance(a, dict)]
        dry_run += [d for d in spec.get("dryRun") or [] if isinstance(d, dict)]
    names = [str(m.get("name")) for m in metrics]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AnalysisError(f"duplicate metric name {dupes[0]!r} across templates")
    given = resolve_rollout_args(list(ref.args), ro, stable_hash, pod_hash)
    args = merge_args(template_args, given)
    plain = {str(a["name"]): str(a["value"]) for a in args if a.get("value") is not None}
    secret_names = {str(a["name"]) for a in args if a.get("value") is None}
    masked = {**plain, **{n: f"{{{{args.{n}}}}}" for n in secret_names}}
    resolved = [substitute(m, masked) for m in metrics]
    name = f"{meta.get('name')}-{pod_hash}-{revision}" + (f"-{infix}" if infix else "")
    labels = {HASH_LABEL: pod_hash, "rollout-type": kind}
    if kind == "Step":
        labels["step-index"] = infix
    return {
        "apiVersion": API_VERSION,
        "kind": "AnalysisRun",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": {REVISION_ANNOTATION: str(revision)},
            "ownerReferences": [owner_reference(ro)],
        },
        "spec": {
            "metrics": resolved,
            "args": args,
            **({"dryRun": dry_run} if dry_run else {}),
        },
    }


# --- running a run ------------------------------------------------------------------------


def _time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def due_metrics(
    metrics: list[Metric], results: dict[str, Body], started: dt.datetime, now: dt.datetime
) -> tuple[list[Metric], float | None]:
    """The metrics to measure now, and the seconds until the next one is due (None: none)."""
    due: list[Metric] = []
    wait: float | None = None

    def later(seconds: float) -> None:
        nonlocal wait
        wait = seconds if wait is None else min(wait, seconds)

    for m in metrics:
        r = results.get(m.name) or {}
        if r.get("phase") in COMPLETED:
            continue
        if m.count is not None and int(r.get("count") or 0) >= m.count:
            continue
        measurements = r.get("measurements") or []
        if not measurements:
            left = (started + dt.timedelta(seconds=m.initial_delay) - now).total_seconds()
            due.append(m) if left <= 0 else later(left)
            continue
        last = measurements[-1]
        if last.get("phase") == RUNNING:
            continue  # in flight (a Job): resumed, not measured again
        finished = _time(last.get("finishedAt")) or now
        gap = ERROR_RETRY if last.get("phase") == ERROR else (m.interval or 0.0)
        if last.get("phase") != ERROR and m.interval is None:
            continue  # a single measurement, taken
        left = (finished + dt.timedelta(seconds=gap) - now).total_seconds()
        due.append(m) if left <= 0 else later(left)
    return due, wait


def evaluate_result(m: Metric, value: Any) -> tuple[str, str]:
    """The phase of one measurement's value (failure wins; both false is Inconclusive; no
    condition is Successful); an expression error is Error."""
    try:
        if m.failure_condition and evaluate(m.failure_condition, value):
            return FAILED, ""
        if m.success_condition:
            ok = evaluate(m.success_condition, value)
            if ok:
                return SUCCESSFUL, ""
            return (INCONCLUSIVE, "") if m.failure_condition else (FAILED, "")
        return SUCCESSFUL, ""
    except ExprError as e:
        which = "successCondition" if m.success_condition else "failureCondition"
        return ERROR, f"could not evaluate {which}: {e}"


def start(result: Body, measurement: Body, *, history: int = HISTORY) -> Body:
    """The metric's result with a measurement in flight (phase Running; no counter moves)."""
    r = copy.deepcopy(result)
    r["measurements"] = [*(r.get("measurements") or []), measurement][-history:]
    return r


def in_flight(result: Body) -> Body | None:
    """The metric's last measurement if it is still running."""
    measurements = result.get("measurements") or []
    return measurements[-1] if measurements and measurements[-1].get("phase") == RUNNING else None


def record(result: Body, measurement: Body, *, history: int = HISTORY) -> Body:
    """The metric's result after one finished measurement (phase in the measurement); it
    replaces the measurement in flight, if any."""
    r = copy.deepcopy(result)
    if in_flight(r) is not None:
        r["measurements"] = r["measurements"][:-1]
    phase = measurement.get("phase")
    for key in ("count", "successful", "failed", "inconclusive", "error", "consecutiveError"):
        r.setdefault(key, 0)
    if phase == ERROR:
        r["error"] += 1
        r["consecutiveError"] += 1
    else:
        r["count"] += 1
        r["consecutiveError"] = 0
        key = {SUCCESSFUL: "successful", FAILED: "failed", INCONCLUSIVE: "inconclusive"}[str(phase)]
        r[key] += 1
    r["measurements"] = [*(r.get("measurements") or []), measurement][-history:]
    return r


def metric_phase(m: Metric, r: Body, *, terminating: bool) -> tuple[str, str]:
    """A metric's phase from its counters (later limit checks win, as in Argo Rollouts)."""
    measurements = r.get("measurements") or []
    if not measurements:
        return (SUCCESSFUL, "") if terminating else (PENDING, "")
    if measurements[-1].get("phase") == RUNNING:
        return RUNNING, ""
    phase, message = "", ""
    failed, inconclusive = int(r.get("failed") or 0), int(r.get("inconclusive") or 0)
    consecutive = int(r.get("consecutiveError") or 0)
    if m.failure_limit >= 0 and failed > m.failure_limit:
        phase = FAILED
        message = f"failed ({failed}) > failureLimit ({m.failure_limit})"
    if inconclusive > m.inconclusive_limit:
        phase = INCONCLUSIVE
        message = f"inconclusive ({inconclusive}) > inconclusiveLimit ({m.inconclusive_limit})"
    if consecutive > m.consecutive_error_limit:
        phase = ERROR
        message = (
            f"consecutiveErrors ({consecutive}) > consecutiveErrorLimit "
            f"({m.consecutive_error_limit})"
        )
    if phase:
        return phase, message
    if m.count is not None and int(r.get("count") or 0) >= m.count:
        return SUCCESSFUL, ""
    return (SUCCESSFUL, "") if terminating else (RUNNING, "")


def run_phase(
    metrics: list[Metric], results: dict[str, Body], *, terminate: bool
) -> tuple[str, str, dict[str, tuple[str, str]]]:
    """The run's phase and message, and every metric's (phase, message)."""
    terminating = terminate
    phases: dict[str, tuple[str, str]] = {}
    for m in metrics:
        phases[m.name] = metric_phase(m, results.get(m.name) or {}, terminating=False)
        if not m.dry_run and phases[m.name][0] in (FAILED, ERROR, INCONCLUSIVE):
            terminating = True
    if terminating:  # unbounded metrics stop and count as Successful
        phases = {
            m.name: metric_phase(m, results.get(m.name) or {}, terminating=True) for m in metrics
        }
    counted = [(m, phases[m.name]) for m in metrics if not m.dry_run]
    if any(p not in COMPLETED for _, (p, _) in counted):
        return RUNNING, "", phases
    if not counted:
        return SUCCESSFUL, "", phases
    worst_metric, (worst, why) = max(counted, key=lambda x: _ORDER.index(x[1][0]))
    if worst == SUCCESSFUL:
        return SUCCESSFUL, "Run Terminated" if terminate else "", phases
    return worst, f'Metric "{worst_metric.name}" assessed {worst} due to {why}', phases


# --- the job provider --------------------------------------------------------------------------

JOB_RUN_UID = "analysisrun.argoproj.io/uid"
JOB_RUN_NAME = "analysisrun.argoproj.io/name"
JOB_METRIC_NAME = "analysisrun.argoproj.io/metric-name"


def job_for(run: Body, metric: Metric, number: int) -> Body:
    """The Job of a `job` measurement: Argo Rollouts' name `<run uid>.<metric>.<n>`, its labels
    and annotations, owned by the AnalysisRun (so it goes with it)."""
    spec = metric.provider.get("job") or {}
    meta = run.get("metadata") or {}
    job_meta = copy.deepcopy(spec.get("metadata") or {})
    labels = {**(job_meta.get("labels") or {}), JOB_RUN_UID: str(meta.get("uid", ""))}
    annotations = {
        **(job_meta.get("annotations") or {}),
        JOB_RUN_NAME: str(meta.get("name", "")),
        JOB_METRIC_NAME: metric.name,
    }
    if not isinstance(spec.get("spec"), dict):
        raise AnalysisError(f"metric {metric.name}: job provider has no spec")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{meta.get('uid')}.{metric.name}.{number}",
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "AnalysisRun",
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(spec["spec"]),
    }


def job_phase(job: Body | None) -> tuple[str, str]:
    """A job measurement's phase from its Job: Successful once Complete, Failed once Failed
    (the Job's own backoffLimit decides that), Running until then; Error when it is gone."""
    if job is None:
        return ERROR, "job not found"
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return SUCCESSFUL, ""
        if c.get("type") == "Failed":
            return FAILED, str(c.get("message") or c.get("reason") or "job failed")
    return RUNNING, ""
