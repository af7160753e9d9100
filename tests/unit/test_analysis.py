"""Analysis as Argo Rollouts runs it: the condition language, measurement counters, metric
and run phases, and runs built from templates and arguments (pure functions)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from daemon.rollouts import analysis as an
from daemon.rollouts.expr import ExprError, evaluate
from daemon.rollouts.spec import AnalysisRef, TemplateRef

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("result[0] >= 0.95", [0.97], True),
        ("result[0] >= 0.95", [0.5], False),
        ("len(result) == 0 || result[0] >= 0.95", [], True),
        ("len(result) > 0 && result[0] >= 0.95", [], False),
        ("all(result, # > 10)", [11, 12], True),
        ("any(result, {# > 10}) == false", [1], None),
        ("10 in result", [10, 20], True),
        ("isNaN(result) || result >= 0.95", math.nan, True),
        ("result >= 0.95", math.nan, False),
        ("asInt(result) == 3 and not (result == '4')", "3", True),
        ("default(result, 1.0) >= 0.9", [], True),
        ("result.ok == true", {"ok": True}, True),
        ("result[-1] < 5 ? true : false", [9, 1], True),
        ("isInf(result)", math.inf, True),
    ],
)
def test_conditions_evaluate_like_expr(condition: str, result: Any, expected: bool | None) -> None:
    """The conditions Argo Rollouts' docs use evaluate as expr does (None: a syntax error)."""
    if expected is None:
        with pytest.raises(ExprError):
            evaluate(condition, result)
    else:
        assert evaluate(condition, result) is expected


@pytest.mark.parametrize(
    ("condition", "result", "message"),
    [
        ("result[0] >= 0.95", [], "index out of range"),
        ("result >= 0", [2], "expected a number"),
        ("__import__('os').system('id')", 1, "unexpected '\\('"),
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("result.__class__", 1, "cannot index"),
        ("result", 1, "expected bool"),
        ("(" * 200 + "true" + ")" * 200, 1, "nested too deeply"),
    ],
)
def test_bad_conditions_are_errors_never_code(condition: str, result: Any, message: str) -> None:
    """Runtime errors (empty vector, wrong types) and attempts to reach Python are ExprErrors."""
    with pytest.raises(ExprError, match=message):
        evaluate(condition, result)


def metric(**kw: Any) -> an.Metric:
    raw = {"name": "sr", "provider": {"prometheus": {"query": "q"}}, **kw}
    return an.Metric.of(raw, [])


def test_metric_defaults_follow_argo_rollouts() -> None:
    """One measurement by default; unbounded with only an interval; errors tolerated 4 times."""
    assert metric().count == 1
    assert metric(interval="5m").count is None and metric(interval="5m").interval == 300
    assert metric(interval="1m", count=3).count == 3
    assert metric().consecutive_error_limit == 4 and metric().failure_limit == 0
    with pytest.raises(an.AnalysisError, match="needs an interval"):
        metric(count=2)


def test_result_phase_failure_wins_and_both_false_is_inconclusive() -> None:
    """Failure condition true: Failed; success true: Successful; neither: Inconclusive; a
    success condition alone that is false: Failed; an evaluation error: Error."""
    both = metric(successCondition="result[0] > 0.9", failureCondition="result[0] < 0.5")
    assert an.evaluate_result(both, [0.95])[0] == an.SUCCESSFUL
    assert an.evaluate_result(both, [0.3])[0] == an.FAILED
    assert an.evaluate_result(both, [0.7])[0] == an.INCONCLUSIVE
    assert an.evaluate_result(metric(successCondition="result[0] > 0.9"), [0.7])[0] == an.FAILED
    phase, message = an.evaluate_result(metric(successCondition="result[0] > 0.9"), [])
    assert phase == an.ERROR and "index out of range" in message
    assert an.evaluate_result(metric(), 1)[0] == an.SUCCESSFUL


def measured(phase: str, t: dt.datetime = T0) -> dict[str, Any]:
    return {"phase": phase, "startedAt": an.iso(t), "finishedAt": an.iso(t), "value": "[1]"}


def test_counters_and_limits_decide_the_metric_phase() -> None:
    """failureLimit 3: the fourth failure fails the metric; errors do not count towards
    `count`, and the fifth error in a row is Error."""
    m = metric(interval="1m", count=10, failureLimit=3, successCondition="result[0] > 0")
    r: dict[str, Any] = {}
    for _ in range(3):
        r = an.record(r, measured(an.FAILED))
    assert an.metric_phase(m, r, terminating=False)[0] == an.RUNNING
    r = an.record(r, measured(an.FAILED))
    phase, message = an.metric_phase(m, r, terminating=False)
    assert phase == an.FAILED and message == "failed (4) > failureLimit (3)"
    e: dict[str, Any] = {}
    for _ in range(5):
        e = an.record(e, measured(an.ERROR))
    assert e["count"] == 0 and e["consecutiveError"] == 5
    assert an.metric_phase(m, e, terminating=False)[0] == an.ERROR


def test_run_phase_is_the_worst_metric_and_dry_run_never_counts() -> None:
    """The run takes its worst metric's phase with Argo Rollouts' message; a dry-run metric
    is measured but never fails the run; an unbounded metric stops when another failed."""
    good = an.Metric.of({"name": "good", "provider": {"web": {}}, "interval": "1m"}, [])
    bad = an.Metric.of({"name": "bad", "provider": {"web": {}}}, [])
    shadow = an.Metric.of({"name": "shadow", "provider": {"web": {}}}, ["shad.*"])
    results = {
        "good": an.record({}, measured(an.SUCCESSFUL)),
        "bad": an.record({}, measured(an.FAILED)),
        "shadow": an.record({}, measured(an.FAILED)),
    }
    phase, message, phases = an.run_phase([good, bad, shadow], results, terminate=False)
    assert phase == an.FAILED
    assert message == 'Metric "bad" assessed Failed due to failed (1) > failureLimit (0)'
    assert phases["good"][0] == an.SUCCESSFUL
    ok, _, _ = an.run_phase([good, shadow], results, terminate=False)
    assert ok == an.RUNNING, "the unbounded metric keeps the run going"
    done, message, _ = an.run_phase([good, shadow], results, terminate=True)
    assert done == an.SUCCESSFUL and message == "Run Terminated"


def test_measurements_are_scheduled_by_delay_interval_and_error_retry() -> None:
    """initialDelay before the first, interval between, 10 s after an error, none past count."""
    m = metric(interval="30s", count=2, initialDelay="5s")
    due, wait = an.due_metrics([m], {}, T0, T0)
    assert due == [] and wait == 5
    due, _ = an.due_metrics([m], {}, T0, T0 + dt.timedelta(seconds=5))
    assert due == [m]
    r = an.record({}, measured(an.ERROR, T0 + dt.timedelta(seconds=5)))
    due, wait = an.due_metrics([m], {"sr": r}, T0, T0 + dt.timedelta(seconds=6))
    assert due == [] and wait == pytest.approx(9)
    r = an.record(an.record({}, measured(an.SUCCESSFUL)), measured(an.SUCCESSFUL))
    assert an.due_metrics([m], {"sr": r}, T0, T0 + dt.timedelta(hours=1)) == ([], None)


def test_a_run_is_built_from_templates_and_args() -> None:
    """Template metrics with `{{args.x}}` substituted (JSON-escaped), Rollout args overriding
    template defaults, podTemplateHashValue resolved, labels and owner as Argo Rollouts sets."""
    ro = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}
    template = {
        "spec": {
            "args": [{"name": "service-name"}, {"name": "hash"}, {"name": "q", "value": "x"}],
            "metrics": [
                {
                    "name": "success-rate",
                    "successCondition": "result[0] >= 0.95",
                    "provider": {
                        "prometheus": {
                            "query": 'sum(rate(x{service="{{args.service-name}}",'
                            'h="{{ args.hash }}"}[5m]))'
                        }
                    },
                }
            ],
        }
    }
    ref = AnalysisRef(
        (TemplateRef("success-rate"),),
        (
            {"name": "service-name", "value": "web"},
            {"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            {"name": "unknown", "value": "dropped"},
        ),
    )
    run = an.build_run(
        ro,
        [template],
        ref,
        kind="Background",
        pod_hash="abc",
        revision=2,
        infix="",
        stable_hash="old",
    )
    assert run["metadata"]["name"] == "web-abc-2"
    assert run["metadata"]["labels"] == {
        "rollouts-pod-template-hash": "abc",
        "rollout-type": "Background",
    }
    query = run["spec"]["metrics"][0]["provider"]["prometheus"]["query"]
    assert query == 'sum(rate(x{service="web",h="abc"}[5m]))'
    assert run["metadata"]["ownerReferences"][0]["uid"] == "u1"
    with pytest.raises(an.AnalysisError, match=r"args\.service-name was not resolved"):
        an.build_run(
            ro,
            [template],
            AnalysisRef((TemplateRef("success-rate"),)),
            kind="Step",
            pod_hash="abc",
            revision=2,
            infix="1",
            stable_hash="old",
        )


def test_job_measurements_run_until_their_job_ends() -> None:
    """A job measurement is in flight (Running, no counter moved, not due again) until its
    Job is Complete (Successful) or Failed (Failed, with the Job's message); a missing Job is
    an Error; the Job is named `<run uid>.<metric>.<n>` and owned by the run."""
    job_spec = {"template": {"spec": {"containers": [{"name": "t", "image": "t:1"}]}}}
    m = an.Metric.of(
        {
            "name": "smoke",
            "provider": {"job": {"metadata": {"labels": {"a": "b"}}, "spec": job_spec}},
        },
        [],
    )
    run = {"metadata": {"name": "r", "namespace": "ns", "uid": "u-1"}}
    job = an.job_for(run, m, 1)
    assert job["metadata"]["name"] == "u-1.smoke.1"
    assert job["metadata"]["labels"] == {"a": "b", an.JOB_RUN_UID: "u-1"}
    assert job["metadata"]["ownerReferences"][0]["kind"] == "AnalysisRun"
    assert job["spec"] == job_spec

    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    r = an.start({"name": "smoke"}, {"phase": an.RUNNING, "startedAt": an.iso(t0)})
    assert an.metric_phase(m, r, terminating=False) == (an.RUNNING, "")
    assert an.due_metrics([m], {"smoke": r}, t0, t0 + dt.timedelta(hours=1))[0] == []
    assert an.in_flight(r) is not None
    assert an.job_phase({"status": {"active": 1}}) == (an.RUNNING, "")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert an.job_phase(done) == (an.SUCCESSFUL, "")
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "boom"}]}}
    assert an.job_phase(failed) == (an.FAILED, "boom")
    assert an.job_phase(None) == (an.ERROR, "job not found")
    finished = an.record(r, {"phase": an.FAILED, "finishedAt": an.iso(t0)})
    assert len(finished["measurements"]) == 1 and finished["failed"] == 1
    assert an.metric_phase(m, finished, terminating=False)[0] == an.FAILED
