"""A canary behind nginx, as pure functions: the canary Ingress built from the stable one, the
weight that follows the pods, header routes, and the delayed scale-downs of a routed canary."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from daemon.rollouts import ingress
from daemon.rollouts.spec import HASH_LABEL, SCALE_DOWN_DEADLINE, HeaderMatch, InvalidSpec, parse
from tests.unit.test_rollouts import Cluster, rollout

STABLE_INGRESS: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {
        "name": "webapp-ingress",
        "namespace": "ns",
        "annotations": {"kubernetes.io/ingress.class": "nginx", "team": "web"},
    },
    "spec": {
        "ingressClassName": "nginx",
        "tls": [{"hosts": ["webapp.example.com"], "secretName": "tls"}],
        "rules": [
            {
                "host": "webapp.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "webapp", "port": {"number": 80}}},
                        }
                    ]
                },
            },
            {
                "host": "other.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "other", "port": {"number": 80}}},
                        }
                    ]
                },
            },
        ],
    },
}


def routed(steps: list[Any] | None = None, **nginx: Any) -> dict[str, Any]:
    nginx.setdefault("stableIngress", "webapp-ingress")
    extra = {}
    if "maxTrafficWeight" in nginx:
        extra["maxTrafficWeight"] = nginx.pop("maxTrafficWeight")
    return rollout(
        canaryService="webapp-canary",
        stableService="webapp",
        trafficRouting={"nginx": nginx, **extra},
        steps=steps if steps is not None else [{"setWeight": 20}, {"pause": {}}],
    )


def test_canary_ingress_copies_the_stable_routes_and_the_seed_header_annotations() -> None:
    """The seed's A/B Ingress comes out of trafficRouting.nginx: named
    `<rollout>-<stable>-canary`, the rule sending `/` to the stable Service pointed at the canary
    Service, TLS and class copied, the unrelated rule left out, canary-by-header from
    additionalIngressAnnotations with the prefix added, the weight last."""
    ro = routed(
        additionalIngressAnnotations={
            "canary-by-header": "X-Canary-Test",
            "canary-by-header-value": "true",
        },
        canaryIngressAnnotations={"example.com/owner": "web"},
    )
    canary = parse(ro).canary
    assert canary is not None
    got = ingress.desired(ro, canary, STABLE_INGRESS, 10)
    assert got["metadata"]["name"] == "web-webapp-ingress-canary"
    assert got["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary-Test",
        "nginx.ingress.kubernetes.io/canary-by-header-value": "true",
        "example.com/owner": "web",
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "10",
        "kubernetes.io/ingress.class": "nginx",
    }
    assert got["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert got["spec"]["ingressClassName"] == "nginx"
    assert got["spec"]["tls"] == STABLE_INGRESS["spec"]["tls"]
    assert [r["host"] for r in got["spec"]["rules"]] == ["webapp.example.com"]
    backend = got["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "webapp-canary", "port": {"number": 80}}
    assert (
        STABLE_INGRESS["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        == "webapp"
    ), "the stable Ingress is not touched"


def test_custom_prefix_weight_total_and_verbatim_annotations_win() -> None:
    """annotationPrefix applies to the additional annotations and the weight; maxTrafficWeight
    becomes canary-weight-total; canaryIngressAnnotations override the additional ones."""
    ro = routed(
        annotationPrefix="custom.nginx.io",
        additionalIngressAnnotations={"canary-by-cookie": "beta"},
        canaryIngressAnnotations={"custom.nginx.io/canary-by-cookie": "override"},
        maxTrafficWeight=1000,
    )
    canary = parse(ro).canary
    assert canary is not None
    notes = ingress.canary_annotations(canary, 250, None)
    assert notes == {
        "custom.nginx.io/canary-by-cookie": "override",
        "custom.nginx.io/canary": "true",
        "custom.nginx.io/canary-weight": "250",
        "custom.nginx.io/canary-weight-total": "1000",
    }


def test_stable_ingress_problems_are_invalid_specs_naming_it() -> None:
    """A missing stable Ingress, or one with no path to the stable Service, is refused."""
    with pytest.raises(InvalidSpec, match="stable Ingress 'gone' not found"):
        ingress.check_stable(None, "gone", "webapp", "Rollout/ns/web")
    with pytest.raises(InvalidSpec, match="ingress `webapp-ingress` has no rules using service x"):
        ingress.check_stable(STABLE_INGRESS, "webapp-ingress", "x", "Rollout/ns/web")
    ingress.check_stable(STABLE_INGRESS, "webapp-ingress", "webapp", "Rollout/ns/web")


def test_existing_canary_ingress_is_patched_keeping_foreign_annotations() -> None:
    """Only what differs is patched; an annotation someone else added stays; a header route
    this controller set and no longer wants is removed; another owner is refused."""
    ro = routed()
    canary = parse(ro).canary
    assert canary is not None
    route = HeaderMatch("X-Canary", "exact", "yes")
    before = ingress.desired(ro, canary, STABLE_INGRESS, 20, route)
    before["metadata"]["annotations"]["someone/else"] = "kept"
    same = ingress.desired(ro, canary, STABLE_INGRESS, 20, route)
    assert ingress.patch(before, same, "u1") is None
    after = ingress.desired(ro, canary, STABLE_INGRESS, 40)
    assert ingress.patch(before, after, "u1") == {
        "metadata": {
            "annotations": {
                "nginx.ingress.kubernetes.io/canary-weight": "40",
                "nginx.ingress.kubernetes.io/canary-by-header": None,
                "nginx.ingress.kubernetes.io/canary-by-header-value": None,
            }
        }
    }
    foreign = {**before, "metadata": {**before["metadata"], "ownerReferences": []}}
    with pytest.raises(ingress.IngressConflict, match="not owned by the Rollout"):
        ingress.patch(foreign, after, "u1")
    other = [{"uid": "u2", "controller": True}]
    foreign["metadata"]["ownerReferences"] = other
    with pytest.raises(ingress.IngressConflict, match="controlled by different object"):
        ingress.patch(foreign, after, "u1")


def test_header_routes_map_to_nginx_header_annotations() -> None:
    """exact is canary-by-header-value; regex and prefix are canary-by-header-pattern."""
    assert ingress.header_annotations(HeaderMatch("v", "exact", "2")) == {
        "canary-by-header": "v",
        "canary-by-header-value": "2",
    }
    assert (
        ingress.header_annotations(HeaderMatch("v", "regex", "2|3"))["canary-by-header-pattern"]
        == "2|3"
    )
    assert (
        ingress.header_annotations(HeaderMatch("v", "prefix", "a.b"))["canary-by-header-pattern"]
        == "^a\\.b.*"
    )


def hashes(c: Cluster) -> dict[str, dict[str, Any]]:
    return {rs["metadata"]["labels"][HASH_LABEL]: rs for rs in c.sets.values()}


def test_routed_canary_keeps_stable_whole_and_routes_only_to_available_pods() -> None:
    """Behind nginx the stable set stays at 5 while the canary gets ceil(20% of 5) = 1 pod;
    no traffic goes to the canary until its pod is available, then 20%; promotion routes 0%
    to the canary Ingress (the stable Service now selects the new pods) and the old set is
    scaled down only after scaleDownDelaySeconds."""
    c = Cluster(routed())
    c.run()
    old = c.ro["status"]["stableRS"]
    assert c.weight == 0
    c.update_image("web:2")
    c.step()  # creates the canary set
    new = c.ro["status"]["currentPodHash"]
    c.stuck = {n for n, rs in c.sets.items() if rs["metadata"]["labels"][HASH_LABEL] == new}
    c.settle_pods()
    c.run()
    assert c.counts() == {old[:4]: 5, new[:4]: 1}
    assert c.weight == 0, "no available canary pod, no canary traffic"
    assert c.services["webapp-canary"] == old
    c.stuck = set()
    c.settle_pods()
    c.run()
    st = c.ro["status"]
    assert c.weight == 20 and st["canary"]["weights"]["canary"]["weight"] == 20
    assert st["canary"]["weights"]["canary"]["serviceName"] == "webapp-canary"
    assert st["phase"] == "Paused" and st["currentStepIndex"] == 1
    assert c.services == {"webapp": old, "webapp-canary": new}
    c.ro["status"].pop("pauseConditions")  # promote
    c.run()
    st = c.ro["status"]
    assert st["stableRS"] == new and st["phase"] == "Healthy"
    assert c.weight == 0 and c.services == {"webapp": new, "webapp-canary": new}
    assert c.counts() == {old[:4]: 5, new[:4]: 5}, "the old set waits out its delay"
    assert SCALE_DOWN_DEADLINE in hashes(c)[old]["metadata"]["annotations"]
    c.now += dt.timedelta(seconds=29)
    c.run()
    assert c.counts()[old[:4]] == 5
    c.now += dt.timedelta(seconds=2)
    c.run()
    assert c.counts() == {old[:4]: 0, new[:4]: 5}
    assert SCALE_DOWN_DEADLINE not in hashes(c)[old]["metadata"].get("annotations", {})


def test_routed_abort_moves_traffic_first_and_the_canary_pods_later() -> None:
    """Abort routes 0% to the canary and points the canary Service back at stable at once; the
    canary pods go abortScaleDownDelaySeconds later; with 0 they are kept."""
    for delay, left in ((30, 0), (0, 1)):
        ro = routed()
        ro["spec"]["strategy"]["canary"]["abortScaleDownDelaySeconds"] = delay
        c = Cluster(ro)
        c.run()
        old = c.ro["status"]["stableRS"]
        c.update_image("web:2")
        c.run()
        new = c.ro["status"]["currentPodHash"]
        assert c.weight == 20
        c.ro["status"]["abort"] = True
        c.run()
        assert c.weight == 0 and c.services["webapp-canary"] == old
        assert c.ro["status"]["phase"] == "Degraded"
        assert c.counts()[new[:4]] == 1, "pods stay while the delay runs"
        c.now += dt.timedelta(seconds=31)
        c.run()
        assert c.counts() == {old[:4]: 5, new[:4]: left}, delay


def test_weight_stays_at_the_previous_step_until_the_canary_has_its_pods() -> None:
    """Moving from setWeight 20 to 60, the Ingress keeps 20% until the third canary pod is
    available; setHeaderRoute sends its header to the canary from its step on; setCanaryScale
    sizes the canary without moving traffic."""
    steps = [
        {"setCanaryScale": {"replicas": 2}},
        {"setWeight": 20},
        {
            "setHeaderRoute": {
                "name": "h",
                "match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}],
            }
        },
        {"pause": {}},
        {"setCanaryScale": {"matchTrafficWeight": True}},
        {"setWeight": 60},
        {"pause": {}},
    ]
    c = Cluster(routed(steps))
    c.run()
    c.update_image("web:2")
    c.run()
    st = c.ro["status"]
    new = st["currentPodHash"]
    assert st["currentStepIndex"] == 3
    assert c.counts()[new[:4]] == 2, "setCanaryScale: 2 pods although 20% of 5 is 1"
    assert c.weight == 20
    assert c.header == HeaderMatch("X-Canary", "exact", "1")
    c.ro["status"].pop("pauseConditions")
    while c.ro["status"]["currentStepIndex"] < 5:
        c.step()
    assert c.counts()[new[:4]] == 1, "matchTrafficWeight: back to 20% of 5"
    name = next(n for n, rs in c.sets.items() if rs["metadata"]["labels"][HASH_LABEL] == new)
    c.stuck = {name}
    c.step()  # setWeight 60 asks for 3 pods
    assert c.counts()[new[:4]] == 3
    c.sets[name]["status"]["availableReplicas"] = 2
    c.step()
    assert c.ro["status"]["currentStepIndex"] == 5
    assert c.weight == 20, "the previous setWeight until the pods are there"
    c.stuck = set()
    c.settle_pods()
    c.run()
    assert c.weight == 60 and c.ro["status"]["currentStepIndex"] == 6
