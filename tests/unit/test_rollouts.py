"""Argo Rollouts semantics as pure functions: canary pod arithmetic, spec validation, and the
canary state machine driven step by step against a simulated ReplicaSet controller."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from daemon.rollouts import replicas as rmath
from daemon.rollouts.plan import ReplicaSet, current_weight, plan_rollout
from daemon.rollouts.spec import HASH_LABEL, InvalidSpec, Pause, SetWeight, parse

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("replicas", "weight", "surge", "expected"),
    [
        (10, 1, 0, (1, 9)),
        (10, 15, 0, (2, 8)),
        (3, 50, 0, (2, 1)),
        (3, 10, 1, (1, 3)),
        (2, 1, 1, (1, 2)),
        (1, 49, 0, (0, 1)),
        (1, 50, 0, (1, 0)),
        (1, 1, 1, (1, 1)),
        (10, 41, 0, (4, 6)),
    ],
)
def test_weighted_counts_match_argo_rollouts(
    replicas: int, weight: int, surge: int, expected: tuple[int, int]
) -> None:
    """The closest canary/stable split to a weight, as Argo Rollouts' table gives it."""
    assert rmath.weighted_counts(replicas, weight, 100, surge) == expected


@pytest.mark.parametrize(
    ("replicas", "weight", "unavailable", "surge", "expected"),
    [
        (10, 10, 1, 1, (1, 9)),
        (10, 30, 0, 3, (3, 10)),
        (10, 30, 5, 0, (0, 7)),
        (1, 5, 0, 1, (1, 1)),
        (1, 95, 0, 1, (1, 1)),
    ],
)
def test_basic_canary_respects_surge_and_availability(
    replicas: int, weight: int, unavailable: int, surge: int, expected: tuple[int, int]
) -> None:
    """First step from a fully available stable set, within maxSurge and maxUnavailable."""
    t = rmath.basic_canary(
        replicas=replicas,
        weight=weight,
        max_weight=100,
        max_surge=surge,
        max_unavailable=unavailable,
        canary=rmath.SetState(0, 0),
        stable=rmath.SetState(replicas, replicas),
        old=[],
    )
    assert (t.canary, t.stable) == expected


def test_uneven_weight_does_not_round_past_surge() -> None:
    """10 replicas at weight 5 with no surge: stable first drops to 9 (one unavailable
    allowed), then the canary gets its pod (Argo Rollouts' own test cases)."""
    common: dict[str, Any] = {
        "replicas": 10,
        "weight": 5,
        "max_weight": 100,
        "max_surge": 0,
        "max_unavailable": 1,
        "canary": rmath.SetState(0, 0),
        "old": [],
    }
    first = rmath.basic_canary(stable=rmath.SetState(10, 10), **common)
    assert (first.canary, first.stable) == (0, 9)
    second = rmath.basic_canary(stable=rmath.SetState(9, 9), **common)
    assert (second.canary, second.stable) == (1, 9)


def test_fenceposts_default_to_a_quarter_and_never_both_zero() -> None:
    """25% surge rounds up, 25% unavailable rounds down; both zero makes unavailable 1."""
    assert rmath.fenceposts(None, None, 5) == (2, 1)
    assert rmath.fenceposts("0%", "10%", 5) == (0, 1)
    assert rmath.fenceposts(2, "50", 4) == (2, 2)


def test_old_sets_drain_unhealthy_pods_first_then_within_availability() -> None:
    """Older sets lose their unavailable pods at once and available ones only down to the
    floor."""
    assert rmath.drain_old([rmath.SetState(3, 1), rmath.SetState(2, 2)], 8, 7) == (0, 2)


def rollout(**canary: Any) -> dict[str, Any]:
    canary.setdefault("steps", [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}])
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "web:1"}]},
            },
            "strategy": {"canary": canary},
        },
    }


class Cluster:
    """A Rollout and its ReplicaSets, with a ReplicaSet controller whose pods become available
    at once (unless `stuck`)."""

    def __init__(self, ro: dict[str, Any]) -> None:
        self.ro = ro
        self.sets: dict[str, dict[str, Any]] = {}
        self.now = T0
        self.stuck: set[str] = set()
        self.events: list[str] = []
        self.services: dict[str, str] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.weight: int | None = None  # what the canary Ingress routes
        self.header: Any = None

    def settle_pods(self) -> None:
        for name, rs in self.sets.items():
            n = rs["spec"]["replicas"]
            ready = 0 if name in self.stuck else n
            rs["status"] = {"replicas": n, "readyReplicas": ready, "availableReplicas": ready}

    def step(self) -> float | None:
        """One reconcile; returns its requeue."""
        spec = parse(self.ro)
        sets = [ReplicaSet.of(b) for b in self.sets.values()]
        plan = plan_rollout(self.ro, spec, sets, self.now, list(self.runs.values()))
        for want in plan.want_runs:
            h = plan.status["currentPodHash"]
            name = f"web-{h}-{want.kind}-{want.infix}"
            labels = {"rollout-type": want.kind, HASH_LABEL: h, "step-index": want.infix}
            self.runs[name] = {
                "metadata": {"name": name, "labels": labels},
                "spec": {},
                "status": {"phase": "Running"},
            }
        for name in plan.terminate_runs:
            self.runs[name]["spec"]["terminate"] = True
        if plan.create is not None:
            self.sets[plan.create["metadata"]["name"]] = copy.deepcopy(plan.create)
        for name, n in plan.scale.items():
            self.sets[name]["spec"]["replicas"] = n
        for name, changes in plan.annotate.items():
            anns = self.sets[name]["metadata"].setdefault("annotations", {})
            for k, v in changes.items():
                anns.pop(k, None) if v is None else anns.__setitem__(k, v)
        for name in plan.delete:
            del self.sets[name]
        self.services.update(plan.services)
        self.weight, self.header = plan.weight, plan.header
        self.ro["status"] = plan.status
        self.events += [reason for reason, _ in plan.events]
        self.settle_pods()
        return plan.requeue_after

    def run(self, rounds: int = 20) -> None:
        """Reconcile until nothing is left to do right now."""
        for _ in range(rounds):
            again = self.step()
            if again is None or again > 1.0:
                return

    def finish_runs(self, kind: str, phase: str, message: str = "") -> None:
        for run in self.runs.values():
            labels = run["metadata"]["labels"]
            if labels["rollout-type"] == kind and not run["spec"].get("terminate"):
                run["status"] = {"phase": phase, "message": message}

    def counts(self) -> dict[str, int]:
        return {
            rs["metadata"]["labels"][HASH_LABEL][:4]: rs["spec"]["replicas"]
            for rs in self.sets.values()
        }

    def update_image(self, image: str) -> None:
        self.ro["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.ro["metadata"]["generation"] += 1


def test_first_deploy_goes_straight_to_full_and_stable() -> None:
    """No stable yet: one ReplicaSet at 100%, no steps, phase Healthy."""
    c = Cluster(rollout())
    c.run()
    st = c.ro["status"]
    assert list(c.counts().values()) == [5]
    assert st["stableRS"] == st["currentPodHash"]
    assert st["currentStepIndex"] == 3
    assert st["phase"] == "Healthy", st
    before = copy.deepcopy(c.ro["status"])
    assert c.step() is None and c.ro["status"] == before, "a settled Rollout needs no writes"


def test_canary_walks_its_steps_pauses_and_promotes() -> None:
    """setWeight 20 gives 1 canary pod and 4 stable, the indefinite pause holds until
    promoted, setWeight 60 gives 3/2, then the canary becomes stable and the old set drains."""
    c = Cluster(rollout(canaryService="web-canary", stableService="web-stable"))
    c.run()
    stable_hash = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    st = c.ro["status"]
    new_hash = st["currentPodHash"]
    assert new_hash != stable_hash
    assert c.counts() == {stable_hash[:4]: 4, new_hash[:4]: 1}
    assert st["currentStepIndex"] == 1
    assert st["phase"] == "Paused"
    assert st["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    assert c.services == {"web-stable": stable_hash, "web-canary": new_hash}
    c.run()
    assert c.ro["status"]["currentStepIndex"] == 1, "an indefinite pause waits for promotion"
    c.ro["status"].pop("pauseConditions")  # what `promote` does
    c.run()
    st = c.ro["status"]
    assert st["stableRS"] == new_hash
    assert st["phase"] == "Healthy"
    assert c.counts()[new_hash[:4]] == 5
    assert c.counts().get(stable_hash[:4], 0) == 0
    assert c.services == {"web-stable": new_hash, "web-canary": new_hash}
    assert "RolloutCompleted" in c.events and "RolloutStepCompleted" in c.events


def test_timed_pause_completes_when_its_time_has_come() -> None:
    """pause {duration: 30s} asks to be woken after 30 s and completes then, not before."""
    c = Cluster(rollout(steps=[{"setWeight": 40}, {"pause": {"duration": "30s"}}]))
    c.run()
    c.update_image("web:2")
    c.run()
    assert c.ro["status"]["currentStepIndex"] == 1
    c.now += dt.timedelta(seconds=10)
    assert c.step() == pytest.approx(20)
    c.now += dt.timedelta(seconds=21)
    c.run()
    assert c.ro["status"]["stableRS"] == c.ro["status"]["currentPodHash"]


def test_abort_returns_to_stable_and_is_degraded() -> None:
    """status.abort scales the canary to 0 and the stable set back to 100%, phase Degraded;
    the stable set was never scaled below the availability floor."""
    c = Cluster(rollout())
    c.run()
    stable_hash = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    c.ro["status"]["abort"] = True
    c.run()
    st = c.ro["status"]
    assert st["phase"] == "Degraded"
    assert "pauseConditions" not in st, "an aborted update waits for nobody"
    assert c.counts()[stable_hash[:4]] == 5
    assert c.counts()[st["currentPodHash"][:4]] == 0
    assert st["stableRS"] == stable_hash


def test_unhealthy_canary_does_not_advance() -> None:
    """A canary whose pods never become available stays at its setWeight step."""
    c = Cluster(rollout())
    c.run()
    c.update_image("web:bad")
    c.step()  # creates the canary set
    new_hash = c.ro["status"]["currentPodHash"]
    c.stuck = {n for n, rs in c.sets.items() if rs["metadata"]["labels"][HASH_LABEL] == new_hash}
    c.settle_pods()
    c.run()
    st = c.ro["status"]
    assert st["currentStepIndex"] == 0
    assert st["phase"] == "Progressing"


def test_reverting_the_template_mid_canary_is_a_fast_rollback() -> None:
    """Going back to the stable template skips the steps: the stable set is already there."""
    c = Cluster(rollout())
    c.run()
    c.update_image("web:2")
    c.run()
    c.update_image("web:1")
    c.run()
    st = c.ro["status"]
    assert st["currentPodHash"] == st["stableRS"]
    assert st["phase"] == "Healthy"
    assert sorted(c.counts().values()) == [0, 5]


def test_current_weight_is_the_last_set_weight() -> None:
    """The weight at a step is the last setWeight at or before it; the maximum after the last."""
    steps = (SetWeight(10), Pause(None), SetWeight(50))
    assert [current_weight(steps, i, 100) for i in range(4)] == [10, 10, 50, 100]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": {}}, "missing field '.spec.strategy.canary"),
        ({"strategy": {"canary": {}, "blueGreen": {}}}, "Multiple Strategies"),
        ({"selector": {}}, "empty selector"),
        ({"strategy": {"canary": {"steps": [{"setWeight": 120}]}}}, "must be 0..100"),
        ({"strategy": {"canary": {"steps": [{"experiment": {}}]}}}, "'experiment' is not"),
        (
            {"strategy": {"canary": {"maxSurge": 0, "maxUnavailable": "0%"}}},
            "both can not be zero",
        ),
        (
            {"strategy": {"canary": {"trafficRouting": {"nginx": {"stableIngress": "i"}}}}},
            "canaryService and stableService must be set",
        ),
        (
            {"strategy": {"canary": {"steps": [{"setHeaderRoute": {"name": "h"}}]}}},
            "setHeaderRoute: needs trafficRouting",
        ),
        (
            {"strategy": {"canary": {"trafficRouting": {"maxTrafficWeight": "x"}}}},
            "invalid spec",
        ),
        (
            {
                "strategy": {
                    "canary": {
                        "canaryService": "a",
                        "stableService": "b",
                        "trafficRouting": {"nginx": {"stableIngress": "i"}},
                        "steps": [
                            {
                                "setHeaderRoute": {
                                    "name": "h",
                                    "match": [
                                        {"headerName": "a", "headerValue": {"exact": "1"}},
                                        {"headerName": "b", "headerValue": {"exact": "2"}},
                                    ],
                                }
                            }
                        ],
                    }
                }
            },
            "nginx routes by one header",
        ),
        (
            {
                "strategy": {
                    "canary": {
                        "canaryService": "a",
                        "stableService": "b",
                        "trafficRouting": {
                            "nginx": {"stableIngress": "i", "stableIngresses": ["j"]}
                        },
                    }
                }
            },
            "exactly one of stableIngress",
        ),
    ],
)
def test_invalid_specs_are_refused_naming_the_rollout(change: dict[str, Any], message: str) -> None:
    """Specs Argo Rollouts refuses are refused with its message and the Rollout's name."""
    ro = rollout()
    ro["spec"].update(change)
    with pytest.raises(InvalidSpec, match=message) as err:
        parse(ro)
    assert "Rollout/ns/web" in str(err.value)


def test_status_writes_are_minimal_merge_patches() -> None:
    """Removed keys become nulls, nested changes stay nested, equal values are left out."""
    from daemon.rollouts.controller import merge_patch

    old = {"a": 1, "pauseConditions": [{"reason": "x"}], "canary": {"w": 1, "h": "a"}}
    new = {"a": 1, "canary": {"w": 2, "h": "a"}, "phase": "Healthy"}
    assert merge_patch(old, new) == {
        "pauseConditions": None,
        "canary": {"w": 2},
        "phase": "Healthy",
    }


def test_another_rollouts_controller_is_recognised_but_a_user_patch_is_not() -> None:
    """Argo Rollouts' status writes mark the Rollout as its own; kubectl patches do not."""
    from daemon.rollouts.controller import foreign_manager

    def ro(manager: str) -> dict[str, Any]:
        entry = {"manager": manager, "operation": "Update", "subresource": "status"}
        return {"metadata": {"managedFields": [entry]}}

    assert foreign_manager(ro("rollouts-controller")) == "rollouts-controller"
    assert foreign_manager(ro("kubectl-patch")) == ""
    assert foreign_manager(ro("kubectl-argo-rollouts")) == ""
    assert foreign_manager(ro("gitopsd-rollouts")) == ""


def test_step_analysis_holds_the_step_until_successful() -> None:
    """An analysis step creates one run for the new pods and completes only when it is
    Successful; reconciling again while it runs changes nothing."""
    c = Cluster(
        rollout(steps=[{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "sr"}]}}])
    )
    c.run()
    c.update_image("web:2")
    c.run()
    assert c.ro["status"]["currentStepIndex"] == 1
    assert [r["metadata"]["labels"]["step-index"] for r in c.runs.values()] == ["1"]
    before = copy.deepcopy(c.ro["status"])
    c.step()
    assert c.ro["status"] == before and len(c.runs) == 1
    c.finish_runs("Step", "Successful")
    c.run()
    assert c.ro["status"]["stableRS"] == c.ro["status"]["currentPodHash"]


def test_failed_analysis_aborts_with_its_message() -> None:
    """A Failed step run aborts the update: back to stable, Degraded, the run's message in
    the Rollout's."""
    c = Cluster(
        rollout(steps=[{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "sr"}]}}])
    )
    c.run()
    stable = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    c.finish_runs(
        "Step", "Failed", 'Metric "sr" assessed Failed due to failed (1) > failureLimit (0)'
    )
    c.run()
    st = c.ro["status"]
    assert st["phase"] == "Degraded"
    assert "Step-based analysis phase failed" in st["message"] and "failureLimit" in st["message"]
    assert c.counts()[stable[:4]] == 5


def test_background_analysis_runs_during_the_canary_and_stops_at_promotion() -> None:
    """Background analysis starts with the update (not on the first deploy), a Failed run
    aborts, and a still-running one is terminated when the canary is promoted."""
    ro = rollout(analysis={"templates": [{"templateName": "success-rate"}]})
    c = Cluster(ro)
    c.run()
    assert c.runs == {}, "no analysis on the first deploy"
    c.update_image("web:2")
    c.run()
    assert [r["metadata"]["labels"]["rollout-type"] for r in c.runs.values()] == ["Background"]
    c.ro["status"].pop("pauseConditions")
    c.run()
    assert c.ro["status"]["stableRS"] == c.ro["status"]["currentPodHash"]
    assert all(r["spec"].get("terminate") for r in c.runs.values())
    c.update_image("web:3")
    c.run()
    c.finish_runs("Background", "Error", "consecutiveErrors (5) > consecutiveErrorLimit (4)")
    c.run()
    assert c.ro["status"]["phase"] == "Degraded"
    assert "Background analysis phase error" in c.ro["status"]["message"]


def test_inconclusive_analysis_pauses_until_promoted() -> None:
    """An Inconclusive run pauses the Rollout (InconclusiveAnalysisRun); promoting goes on."""
    c = Cluster(
        rollout(steps=[{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "sr"}]}}])
    )
    c.run()
    c.update_image("web:2")
    c.run()
    c.finish_runs("Step", "Inconclusive")
    c.run()
    st = c.ro["status"]
    assert st["phase"] == "Paused"
    assert st["pauseConditions"][0]["reason"] == "InconclusiveAnalysisRun"
    st.pop("pauseConditions")
    c.run()
    assert c.ro["status"]["stableRS"] == c.ro["status"]["currentPodHash"]


def blue_green(**bg: Any) -> dict[str, Any]:
    ro = rollout()
    bg.setdefault("activeService", "web-active")
    bg.setdefault("previewService", "web-preview")
    ro["spec"]["strategy"] = {"blueGreen": bg}
    return ro


def test_blue_green_preview_then_switch_then_delayed_scale_down() -> None:
    """The new set comes up behind preview only (active stays on the old one), waits for a
    promotion when autoPromotionEnabled is false, then active switches and the old set is
    scaled down only after scaleDownDelaySeconds."""
    c = Cluster(blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=30))
    c.run()
    blue = c.ro["status"]["stableRS"]
    assert c.services == {"web-active": blue, "web-preview": blue}
    c.update_image("web:2")
    c.run()
    st = c.ro["status"]
    green = st["currentPodHash"]
    assert c.counts() == {blue[:4]: 5, green[:4]: 5}
    assert c.services == {"web-active": blue, "web-preview": green}
    assert st["phase"] == "Paused" and st["pauseConditions"][0]["reason"] == "BlueGreenPause"
    c.ro["status"].pop("pauseConditions")  # promote
    c.run()
    st = c.ro["status"]
    assert c.services["web-active"] == green and st["stableRS"] == green
    assert c.counts()[blue[:4]] == 5, "the old set waits for scaleDownDelaySeconds"
    c.now += dt.timedelta(seconds=31)
    c.run()
    assert c.counts() == {blue[:4]: 0, green[:4]: 5}
    assert c.ro["status"]["phase"] == "Healthy"


def test_blue_green_preview_replica_count_and_auto_promotion_seconds() -> None:
    """previewReplicaCount sizes the preview until promotion; autoPromotionSeconds promotes
    by itself, scaling the new set to full before the switch."""
    c = Cluster(blue_green(previewReplicaCount=1, autoPromotionSeconds=20))
    c.run()
    c.update_image("web:2")
    c.run()
    green = c.ro["status"]["currentPodHash"]
    assert c.counts()[green[:4]] == 1
    assert c.ro["status"]["phase"] == "Paused"
    c.now += dt.timedelta(seconds=21)
    c.run()
    assert c.counts()[green[:4]] == 5
    assert c.services["web-active"] == green


def test_blue_green_abort_keeps_active_on_stable() -> None:
    """Abort before the switch: active stays on the stable set, Degraded, and the preview set
    is scaled down after abortScaleDownDelaySeconds."""
    c = Cluster(blue_green(autoPromotionEnabled=False, abortScaleDownDelaySeconds=10))
    c.run()
    blue = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    green = c.ro["status"]["currentPodHash"]
    c.ro["status"]["abort"] = True
    c.run()
    assert c.ro["status"]["phase"] == "Degraded"
    assert c.services["web-active"] == blue
    assert c.counts()[green[:4]] == 5
    c.now += dt.timedelta(seconds=11)
    c.run()
    assert c.counts() == {blue[:4]: 5, green[:4]: 0}


def test_blue_green_pre_promotion_analysis_gates_the_switch() -> None:
    """prePromotionAnalysis runs against the preview; active switches only once it is
    Successful, and a failure aborts with active still on the old pods."""
    c = Cluster(blue_green(prePromotionAnalysis={"templates": [{"templateName": "smoke"}]}))
    c.run()
    blue = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    green = c.ro["status"]["currentPodHash"]
    assert c.services["web-active"] == blue
    assert [r["metadata"]["labels"]["rollout-type"] for r in c.runs.values()] == ["PrePromotion"]
    c.finish_runs("PrePromotion", "Successful")
    c.run()
    assert c.services["web-active"] == green
    c.update_image("web:3")
    c.run()
    c.finish_runs("PrePromotion", "Failed", "smoke failed")
    c.run()
    assert c.ro["status"]["phase"] == "Degraded"
    assert c.services["web-active"] == green


def test_blue_green_post_promotion_analysis_decides_after_the_switch() -> None:
    """postPromotionAnalysis runs once active points at the new set; Successful makes it
    stable (and only then is the old set scheduled to go), Failed aborts and switches active
    back to the old pods at once."""
    post = {"templates": [{"templateName": "smoke"}]}
    c = Cluster(blue_green(postPromotionAnalysis=post, scaleDownDelaySeconds=30))
    c.run()
    blue = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    st = c.ro["status"]
    green = st["currentPodHash"]
    assert c.services["web-active"] == green and st["stableRS"] == blue
    assert st["phase"] == "Progressing"
    assert "post-promotion verification" in st["message"]
    assert [r["metadata"]["labels"]["rollout-type"] for r in c.runs.values()] == ["PostPromotion"]
    c.now += dt.timedelta(seconds=60)
    c.run()
    assert c.counts()[blue[:4]] == 5, "the old set stays while the analysis runs"
    c.finish_runs("PostPromotion", "Successful")
    c.run()
    assert c.ro["status"]["stableRS"] == green and c.ro["status"]["phase"] == "Healthy"
    c.now += dt.timedelta(seconds=31)
    c.run()
    assert c.counts() == {blue[:4]: 0, green[:4]: 5}

    c.update_image("web:3")
    c.run()
    c.finish_runs("PostPromotion", "Failed", "errors went up")
    c.step()
    st = c.ro["status"]
    assert st["abort"] and c.services["web-active"] == green, "back on the stable pods at once"
    c.run()
    assert c.ro["status"]["phase"] == "Degraded"
    assert "Post" in c.ro["status"]["message"] and "errors went up" in c.ro["status"]["message"]


def test_blue_green_fast_rollback_within_the_scale_down_delay() -> None:
    """Going back to the previous template while its set still waits out scaleDownDelaySeconds
    switches active back at once: no pause, no analysis, nothing scaled up."""
    c = Cluster(
        blue_green(
            autoPromotionEnabled=False,
            scaleDownDelaySeconds=30,
            prePromotionAnalysis={"templates": [{"templateName": "smoke"}]},
        )
    )
    c.run()
    blue = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    c.finish_runs("PrePromotion", "Successful")
    c.run()
    c.ro["status"].pop("pauseConditions")
    c.run()
    green = c.ro["status"]["stableRS"]
    assert green != blue and c.counts()[blue[:4]] == 5
    runs = len(c.runs)
    c.update_image("web:1")
    c.run()
    st = c.ro["status"]
    assert st["stableRS"] == blue and c.services["web-active"] == blue
    assert st["phase"] == "Healthy" and "pauseConditions" not in st
    assert len(c.runs) == runs, "no analysis for a fast rollback"
    assert "SkipSteps" in c.events
    assert "scale-down-deadline" not in c.sets[f"web-{blue}"]["metadata"].get("annotations", {})
    c.now += dt.timedelta(seconds=31)
    c.run()
    assert c.counts() == {blue[:4]: 5, green[:4]: 0}


def test_actions_write_what_the_kubectl_plugin_writes() -> None:
    """promote clears pauses (or skips the current step), --full sets promoteFull, abort and
    retry flip status.abort, pause sets spec.paused; unknown actions are refused."""
    from daemon.rollouts.actions import ActionError, plan_action

    ro = rollout()
    ro["status"] = {"pauseConditions": [{"reason": "CanaryPauseStep"}], "currentStepIndex": 1}
    assert plan_action("promote", ro).status == {"pauseConditions": None}
    ro["status"] = {"currentStepIndex": 0}
    assert plan_action("promote", ro).status == {"pauseConditions": None, "currentStepIndex": 1}
    assert plan_action("promote-full", ro).status == {"promoteFull": True}
    assert plan_action("abort", ro).status == {"abort": True}
    assert plan_action("retry", ro).status == {"abort": False}
    assert plan_action("pause", ro).spec == {"paused": True}
    with pytest.raises(ActionError, match="unknown action"):
        plan_action("explode", ro)


def test_undo_puts_the_previous_template_back() -> None:
    """undo takes the second newest revision's template (without the hash label), or the one
    asked for; the current template already there is a skip, not a write."""
    from daemon.rollouts.actions import ActionError, plan_action

    c = Cluster(rollout())
    c.run()
    c.update_image("web:2")
    c.run()
    sets = [ReplicaSet.of(b) for b in c.sets.values()]
    w = plan_action("undo", c.ro, sets=sets)
    assert w.template is not None
    assert w.template["spec"]["containers"][0]["image"] == "web:1"
    assert HASH_LABEL not in w.template["metadata"]["labels"]
    assert plan_action("undo", c.ro, sets=sets, to_revision=2).template is None
    with pytest.raises(ActionError, match="no revision 9"):
        plan_action("undo", c.ro, sets=sets, to_revision=9)
    # workloadRef: the template in force is the Deployment's, compared and replaced there.
    current = copy.deepcopy(c.ro["spec"]["template"])
    workload = copy.deepcopy(c.ro)
    del workload["spec"]["template"]
    workload["spec"]["workloadRef"] = {"kind": "Deployment", "name": "web"}
    w = plan_action("undo", workload, sets=sets, current_template=current)
    assert w.template is not None and w.template["spec"]["containers"][0]["image"] == "web:1"


def test_rollout_metrics_use_argo_rollouts_names() -> None:
    """rollout_info / rollout_phase, analysis_run_info / analysis_run_metric_phase and the
    rollout_reconcile / analysis_run_reconcile histograms and error counts, as Argo Rollouts'
    dashboards expect them."""
    from daemon.status.metrics import Metrics

    m = Metrics()
    row = {
        "namespace": "ns",
        "name": "web",
        "strategy": "canary",
        "traffic_router": "",
        "phase": "Paused",
    }
    run = {
        "namespace": "ns",
        "name": "web-abc-2",
        "phase": "Running",
        "metrics": [("success-rate", "prometheus", "Running")],
    }
    m.rollouts.source = lambda: ([row], [run])
    from daemon.rollouts.timings import Timings

    t = Timings()
    t.observe(("rollout", "ns", "web"), 0.2)
    t.observe(("rollout", "ns", "web"), 3.0)
    t.error(("analysis_run", "ns", "web-abc-2"))
    m.rollouts.timings = lambda: [t]
    text = m.render().decode()
    assert 'rollout_reconcile_bucket{le="0.15",name="web",namespace="ns"} 0.0' in text
    assert 'rollout_reconcile_bucket{le="0.25",name="web",namespace="ns"} 1.0' in text
    assert 'rollout_reconcile_bucket{le="+Inf",name="web",namespace="ns"} 2.0' in text
    assert 'rollout_reconcile_sum{name="web",namespace="ns"} 3.2' in text
    assert 'analysis_run_reconcile_error{name="web-abc-2",namespace="ns"} 1.0' in text
    assert (
        'rollout_info{name="web",namespace="ns",phase="Paused",strategy="canary",'
        'traffic_router=""} 1.0' in text
    )
    assert 'rollout_phase{name="web",namespace="ns",phase="Paused",strategy="canary"} 1.0' in text
    assert 'rollout_phase{name="web",namespace="ns",phase="Healthy",strategy="canary"} 0.0' in text
    assert 'analysis_run_info{name="web-abc-2",namespace="ns",phase="Running"} 1.0' in text
    assert (
        'analysis_run_metric_phase{metric="success-rate",name="web-abc-2",namespace="ns",'
        'phase="Running",type="prometheus"} 1.0' in text
    )


def test_restart_replaces_old_pods_oldest_first_within_max_unavailable() -> None:
    """restartAt deletes pods created before it, oldest first, no more at once than
    maxUnavailable allows counting pods already missing; it waits for its time, and records
    restartedAt once no old pod is left (the phase is Progressing until then)."""
    from daemon.rollouts import restart
    from daemon.rollouts.plan import phase

    at = T0 + dt.timedelta(minutes=1)
    ro = rollout(maxUnavailable=2)
    ro["spec"]["restartAt"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = parse(ro)

    def pod(name: str, minutes: int, h: str = "a", deleting: bool = False) -> restart.Pod:
        return restart.Pod(name, h, T0 + dt.timedelta(minutes=minutes), deleting)

    pods = [pod("p3", -1), pod("p1", -3), pod("p2", -2), pod("new", 2), pod("other", -9, "z")]
    early = restart.plan_restart(spec, {}, pods, {"a"}, 0, T0)
    assert early.delete == () and early.again_after == pytest.approx(60)
    now = at + dt.timedelta(seconds=1)
    assert restart.plan_restart(spec, {}, pods, {"a"}, 0, now).delete == ("p1", "p2")
    assert restart.plan_restart(spec, {}, pods, {"a"}, 1, now).delete == ("p1",)
    busy = [pod("p1", -3, deleting=True), *pods[1:]]
    assert restart.plan_restart(spec, {}, busy, {"a"}, 1, now).delete == ()
    assert restart.plan_restart(spec, {}, [pod("new", 2)], {"a"}, 0, now).done
    status = {"restartedAt": spec.restart_at}
    assert restart.plan_restart(spec, status, pods, {"a"}, 0, now) == restart.Restart()
    assert phase(spec, {"updatedReplicas": 5, "availableReplicas": 5}, ro)[0] == "Progressing"


def test_restart_action_sets_restart_at() -> None:
    """`rollout restart` writes spec.restartAt = now, as the kubectl plugin does."""
    from daemon.rollouts.actions import plan_action

    writes = plan_action("restart", rollout(), now=T0)
    assert writes.spec == {"restartAt": "2026-12-01T12:00:00Z"}


def test_workload_ref_takes_the_deployments_template_and_scales_it_down() -> None:
    """A workloadRef Rollout runs the Deployment's pod template (and its selector when the
    Rollout has none); scaleDown never leaves the Deployment, onsuccess scales it to 0 once
    Healthy, progressively gives up what the Rollout has available and never adds."""
    from daemon.rollouts.plan import workload_scale

    ro = rollout()
    del ro["spec"]["template"], ro["spec"]["selector"]
    ro["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    deployment = {
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "web:7"}]},
            },
        }
    }
    with pytest.raises(InvalidSpec, match="Deployment 'web' of workloadRef is missing"):
        parse(ro)
    spec = parse(ro, workload=deployment)
    assert spec.template["spec"]["containers"][0]["image"] == "web:7"
    assert spec.selector == {"matchLabels": {"app": "web"}}
    rs = ReplicaSet("web-h", "h", 1, 5, 2, 2, 5, spec.template)
    healthy = {"phase": "Healthy", "currentPodHash": "h"}
    progressing = {"phase": "Progressing", "currentPodHash": "h"}
    assert workload_scale(spec, healthy, [rs], 3) is None, "scaleDown never (the default)"
    ro["spec"]["workloadRef"]["scaleDown"] = "onsuccess"
    spec = parse(ro, workload=deployment)
    assert workload_scale(spec, progressing, [rs], 3) is None
    assert workload_scale(spec, healthy, [rs], 3) == 0
    assert workload_scale(spec, healthy, [rs], 0) is None
    ro["spec"]["workloadRef"]["scaleDown"] = "progressively"
    spec = parse(ro, workload=deployment)
    assert workload_scale(spec, progressing, [rs], 5) == 3, "5 wanted, 2 available: 3 left"
    assert workload_scale(spec, progressing, [rs], 2) is None, "never scaled up"
    ro["spec"]["workloadRef"]["scaleDown"] = "sometimes"
    with pytest.raises(InvalidSpec, match="scaleDown must be one of"):
        parse(ro, workload=deployment)
    ro["spec"]["workloadRef"] = {"kind": "StatefulSet", "name": "web"}
    with pytest.raises(InvalidSpec, match="apps/v1 Deployment"):
        parse(ro, workload=deployment)


def test_fields_accepted_but_not_applied_are_named_on_the_rollout() -> None:
    """antiAffinity and the like are not silently dropped: a NotApplied condition names them,
    unchanged from one reconcile to the next, and gone when the fields are."""
    c = Cluster(rollout(antiAffinity={"requiredDuringSchedulingIgnoredDuringExecution": {}}))
    c.run()
    (cond,) = [x for x in c.ro["status"]["conditions"] if x["type"] == "NotApplied"]
    assert "spec.strategy.canary.antiAffinity" in cond["message"]
    assert c.ro["status"]["phase"] == "Healthy"
    before = copy.deepcopy(c.ro["status"])
    c.now += dt.timedelta(minutes=5)
    c.step()
    assert c.ro["status"] == before
    del c.ro["spec"]["strategy"]["canary"]["antiAffinity"]
    c.step()
    assert [x["type"] for x in c.ro["status"]["conditions"]] == ["Progressing"]


def test_progress_deadline_degrades_a_stuck_update_and_can_abort_it() -> None:
    """A canary whose pods never become available makes no progress: after
    progressDeadlineSeconds its Progressing condition is ProgressDeadlineExceeded and the phase
    Degraded (with progressDeadlineAbort, the update is aborted back to stable); time spent in
    a pause does not count."""
    for abort in (False, True):
        ro = rollout()
        ro["spec"]["progressDeadlineSeconds"] = 60
        ro["spec"]["progressDeadlineAbort"] = abort
        c = Cluster(ro)
        c.run()
        stable = c.ro["status"]["stableRS"]
        (cond,) = c.ro["status"]["conditions"]
        assert (cond["reason"], cond["status"]) == ("NewReplicaSetAvailable", "True")
        c.update_image("web:crashloop")
        c.step()
        new = c.ro["status"]["currentPodHash"]
        c.stuck = {n for n, rs in c.sets.items() if rs["metadata"]["labels"][HASH_LABEL] == new}
        c.settle_pods()
        c.run()
        assert c.ro["status"]["phase"] == "Progressing"
        c.now += dt.timedelta(seconds=30)
        assert c.step() == pytest.approx(30), "woken when the deadline falls"
        c.now += dt.timedelta(seconds=31)
        c.run()
        st = c.ro["status"]
        assert st["phase"] == "Degraded", st
        if abort:
            assert st["abort"] and "timed out progressing" in st["message"]
            c.run()
            assert c.counts() == {stable[:4]: 5, new[:4]: 0}
        else:
            assert "ProgressDeadlineExceeded" in st["message"]
            c.stuck = set()
            c.settle_pods()
            c.run()
            assert c.ro["status"]["phase"] == "Paused", "progress again clears it"

    c = Cluster(rollout(steps=[{"setWeight": 20}, {"pause": {}}]))
    c.ro["spec"]["progressDeadlineSeconds"] = 60
    c.run()
    c.update_image("web:2")
    c.run()
    c.now += dt.timedelta(hours=2)
    c.run()
    assert c.ro["status"]["phase"] == "Paused", "a pause is not a lack of progress"
    c.ro["status"].pop("pauseConditions")
    c.run()
    assert c.ro["status"]["phase"] == "Healthy"


def test_blue_green_update_replaced_during_post_analysis_keeps_traffic_on_stable() -> None:
    """V2 is switched in and under post-promotion analysis when V3 arrives: active goes back
    to the stable V1 pods (whole) instead of staying on V2 while V2 is scaled away."""
    post = {"templates": [{"templateName": "smoke"}]}
    c = Cluster(blue_green(postPromotionAnalysis=post))
    c.run()
    v1 = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    assert c.services["web-active"] == c.ro["status"]["currentPodHash"] != v1
    c.update_image("web:3")
    c.step()
    assert c.services["web-active"] == v1
    assert c.counts()[v1[:4]] == 5


def test_retry_after_a_failed_analysis_runs_a_fresh_analysis() -> None:
    """An update aborted by its failed step analysis, then retried, starts a new run instead
    of finding the failed one and aborting again at once."""
    steps = [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "t"}]}}]
    c = Cluster(rollout(steps=steps))
    c.run()
    c.update_image("web:2")
    c.run()
    c.finish_runs("Step", "Failed", "bad")
    c.run()
    assert c.ro["status"]["phase"] == "Degraded"
    assert all(r["spec"].get("terminate") for r in c.runs.values()), "marked on abort"
    c.ro["status"]["abort"] = False  # retry
    c.run()
    st = c.ro["status"]
    assert st["phase"] != "Degraded", st.get("message")
    assert any(r["status"]["phase"] == "Running" for r in c.runs.values())


def test_blue_green_progress_deadline_counts_while_the_preview_is_not_ready() -> None:
    """With a pre-promotion analysis configured, a preview that never becomes available still
    runs into the progress deadline: only a running analysis stops the clock."""
    c = Cluster(blue_green(prePromotionAnalysis={"templates": [{"templateName": "t"}]}))
    c.ro["spec"]["progressDeadlineSeconds"] = 60
    c.run()
    c.update_image("web:crashloop")
    c.step()
    new = c.ro["status"]["currentPodHash"]
    c.stuck = {n for n, rs in c.sets.items() if rs["metadata"]["labels"][HASH_LABEL] == new}
    c.settle_pods()
    c.run()
    c.now += dt.timedelta(seconds=61)
    c.run()
    assert c.ro["status"]["phase"] == "Degraded"
    assert "timed out progressing" in c.ro["status"]["message"]


def test_routed_set_weight_waits_until_its_weight_is_routed() -> None:
    """Behind nginx, a setWeight step whose weight is held back (the stable set cannot take
    the rest) does not complete, so the pause after it never runs at the old weight."""
    from tests.unit.test_traffic_routing import routed

    c = Cluster(routed([{"setWeight": 50}, {"pause": {"duration": "10s"}}]))
    c.run()
    stable = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.step()
    name = next(n for n, rs in c.sets.items() if rs["metadata"]["labels"][HASH_LABEL] == stable)
    c.stuck = {name}
    c.settle_pods()
    c.sets[name]["status"]["availableReplicas"] = 2
    for _ in range(5):
        c.step()
        c.sets[name]["status"]["availableReplicas"] = 2
    assert c.ro["status"]["currentStepIndex"] == 0
    assert c.weight != 50


def test_blue_green_fast_rollback_waits_for_the_old_pods_without_a_full_update() -> None:
    """Reverting while the old set waits out its delay but is one pod short keeps the
    scale-down deadline and waits: no pause, no analysis, then the switch back."""
    c = Cluster(blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=30))
    c.run()
    blue = c.ro["status"]["stableRS"]
    c.update_image("web:2")
    c.run()
    c.ro["status"].pop("pauseConditions")
    c.run()
    name = f"web-{blue}"
    c.update_image("web:1")
    c.stuck = {name}
    c.settle_pods()
    c.sets[name]["status"]["availableReplicas"] = 4
    c.step()
    assert "scale-down-deadline" in c.sets[name]["metadata"].get("annotations", {})
    assert "pauseConditions" not in c.ro["status"]
    c.stuck = set()
    c.settle_pods()
    c.run()
    assert c.ro["status"]["stableRS"] == blue and c.services["web-active"] == blue
