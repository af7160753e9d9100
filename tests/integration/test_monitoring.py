"""config/monitoring against a real Prometheus scraping a running daemon: every dashboard query
and template variable returns data, every alert rule loads and evaluates, the alerts fire on
the apps that deserve them, and the Argo CD metric names carry Argo CD's labels."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap
from tests.testenv.prometheus import running_prometheus

pytestmark = pytest.mark.cluster

MONITORING = Path(__file__).resolve().parents[2] / "config" / "monitoring"
# What Grafana puts in for its built-in variables; `.*` selects every job, project and app.
_GRAFANA = {"$__rate_interval": "30s", "$__range": "1h", "$__interval": "5s"}
_METRIC = re.compile(r"\b((?:argocd|gitopsd|process|python)_[a-z0-9_]+|up)\b")


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def api(prom: str, path: str) -> Any:
    """GET a Prometheus API path's `data`."""
    with urllib.request.urlopen(prom + path, timeout=10) as r:
        return json.load(r)["data"]


def grafana(expr: str) -> str:
    """A dashboard expression as Grafana would send it with every variable at "All"."""
    for name, value in _GRAFANA.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?(job|project|app)\}?", ".*", expr)


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of the dashboard."""
    dash = json.loads((MONITORING / "gitopsd-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_and_alerts_work_against_a_real_prometheus(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Three apps (synced, OutOfSync without automation, and one the API server refuses) give
    every panel data; every rule is loaded and healthy, references only metrics the daemon
    exports, and the OutOfSync and error alerts go pending for the apps that cause them."""
    git_repo.write(
        {
            "good/cm.yaml": configmap("mon-good"),
            "manual/cm.yaml": configmap("mon-manual"),
            "broken/svc.yaml": (
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: mon-broken\n"
                "spec:\n  ports:\n    - port: 70000\n"
            ),
        }
    )
    apps = [
        application("mon-good", git_repo.url, "good", namespace),
        application("mon-manual", git_repo.url, "manual", namespace, automated=False),
        application("mon-broken", git_repo.url, "broken", namespace),
    ]
    cfg = write_config(tmp_path, cluster, apps, reconcileInterval="3s")
    rules = MONITORING / "gitopsd-rules.yaml"
    with running(cfg) as d:
        wait_for(lambda: d.synced("mon-good"), timeout=60, what="mon-good synced")
        target = d.url.removeprefix("http://")
        ready = 'argocd_app_sync_total{phase="Failed"}'
        with running_prometheus(
            tmp_path / "prom", jobs={"gitopsd": target}, rule_files=(rules,), ready=ready
        ) as prom:
            # rate() and increase() need two samples inside their window.
            wait_for(
                lambda: query(prom, "count_over_time(argocd_app_info[30s]) > 3"),
                timeout=30,
                what="several scrapes",
            )
            dead = [
                f"{title}: {expr}"
                for title, expr in dashboard_targets()
                if not query(prom, grafana(expr))
            ]
            assert not dead, "panels without data:\n" + "\n".join(dead)
            dash = json.loads((MONITORING / "gitopsd-dashboard.json").read_text())
            for var in dash["templating"]["list"]:
                if var["type"] != "query":
                    continue
                m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
                assert m, var
                values = query(prom, f"count by ({m[2]}) ({grafana(m[1])})")
                assert values, f"template variable {var['name']} has no values"

            loaded = {
                r["name"]: r for g in api(prom, "/api/v1/rules")["groups"] for r in g["rules"]
            }
            written = yaml.safe_load(rules.read_text())["groups"][0]["rules"]
            assert sorted(loaded) == sorted(r["alert"] for r in written)
            for rule in written:
                got = loaded[rule["alert"]]
                assert got["health"] == "ok", f"{rule['alert']}: {got.get('lastError')}"
                for metric in set(_METRIC.findall(rule["expr"])):
                    assert query(prom, f"count({metric})"), f"{rule['alert']}: no {metric}"

            def alerting(name: str, app: str) -> bool:
                return any(
                    a["labels"].get("alertname") == name and a["labels"].get("name") == app
                    for a in api(prom, "/api/v1/alerts")["alerts"]
                )

            wait_for(
                lambda: alerting("GitopsdApplicationOutOfSync", "mon-manual"),
                timeout=30,
                what="the OutOfSync alert pending for the manual app",
            )
            assert alerting("GitopsdApplicationCondition", "mon-broken")
            assert not alerting("GitopsdApplicationOutOfSync", "mon-good")

            # Argo CD's labels, so its dashboards and alerts carry over.
            (sync,) = query(prom, 'argocd_app_sync_total{name="mon-good"}')
            assert sync["metric"]["dry_run"] == "false" and sync["metric"]["phase"] == "Succeeded"
            reqs = query(prom, 'argocd_app_k8s_request_total{name="mon-good", verb="patch"}')
            assert all(r["metric"]["project"] == "default" for r in reqs)
            assert {r["metric"]["dry_run"] for r in reqs} == {"true", "false"}
            # The app's own namespace, and the inventory's (gitopsd's record of what it owns).
            assert namespace in {r["metric"].get("resource_namespace") for r in reqs}


def test_the_prometheusrule_and_servicemonitor_match_what_they_stand_for() -> None:
    """The PrometheusRule holds exactly the rules file's groups, and the ServiceMonitor selects
    the sidecar Service whose port is the gitopsd container's named port."""
    rules = yaml.safe_load((MONITORING / "gitopsd-rules.yaml").read_text())
    crd = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert crd["kind"] == "PrometheusRule" and crd["spec"]["groups"] == rules["groups"]
    service, monitor = yaml.safe_load_all((MONITORING / "servicemonitor.yaml").read_text())
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    sidecar = yaml.safe_load((MONITORING.parent / "sidecar" / "deployment.yaml").read_text())
    pod = sidecar["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (gitopsd,) = [c for c in pod["spec"]["containers"] if c["name"] == "gitopsd"]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in gitopsd["ports"]}


def test_orphaned_resources_are_counted_and_warned(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A project with orphanedResources: an object in the app's namespace that no app tracks
    and nothing owns is counted in argocd_app_orphaned_resources_count and named in an
    OrphanedResourceWarning; ignored names and the namespace's default objects are not."""
    git_repo.write({"a/cm.yaml": configmap("owned")})
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "watched"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "orphanedResources": {"warn": True, "ignore": [{"kind": "ConfigMap", "name": "tmp-*"}]},
        },
    }
    app = application("orphans", git_repo.url, "a", namespace)
    app["spec"]["project"] = "watched"
    cfg = write_config(tmp_path, cluster, [app], reconcileInterval="2s")
    (tmp_path / "apps" / "project.yaml").write_text(yaml.safe_dump(project))
    with running(cfg) as d:
        wait_for(lambda: d.synced("orphans"), timeout=60, what="synced")
        cluster.kubectl("create", "configmap", "stray", "-n", namespace)
        cluster.kubectl("create", "configmap", "tmp-scratch", "-n", namespace)

        def warning() -> str:
            return str(d.status("orphans").get("conditions") or "")

        wait_for(
            lambda: "Application has 1 orphaned resources: ConfigMap/stray" in warning(),
            timeout=30,
            what="the orphan warned about",
        )
        line = (
            'argocd_app_orphaned_resources_count{name="orphans",namespace="argocd",'
            'project="watched"} 1.0'
        )
        wait_for(lambda: line in d.api("/metrics").text, timeout=10, what="orphan metric")
        cluster.kubectl("delete", "configmap", "stray", "-n", namespace)
        wait_for(lambda: "OrphanedResourceWarning" not in warning(), timeout=30, what="gone")
