"""The seed's progressive delivery with a real Prometheus: the Rollout's background analysis
(the seed's success-rate AnalysisTemplate, durations shortened) queries a Prometheus server
(Debian's package, on loopback) that scrapes an exporter whose success rate the test sets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from daemon import settings
from daemon.engine import Engine
from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_rollouts import SERVICES, allow, ro_status, sets, until
from tests.testenv.prometheus import Exporter, running_prometheus

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Exporter]]:
    """A Prometheus server scraping the exporter every second; its URL and the exporter."""
    exporter = Exporter()
    try:
        with running_prometheus(tmp_path / "prometheus", exporter) as url:
            yield url, exporter
    finally:
        exporter.close()


def seed_rollout(image: str) -> str:
    """The seed's Rollout, as written there (`argoproj.io/v1`), with the pauses shortened and
    the stable/canary Services added."""
    return f"""apiVersion: argoproj.io/v1
kind: Rollout
metadata:
  name: webapp
spec:
  replicas: 5
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      steps:
        - setWeight: 20
        - pause: {{duration: 4s}}
        - setWeight: 40
        - pause: {{duration: 2s}}
        - setWeight: 60
        - pause: {{duration: 2s}}
        - setWeight: 80
        - pause: {{duration: 2s}}
      analysis:
        templates:
          - templateName: success-rate
        args:
          - name: service-name
            value: webapp
  selector:
    matchLabels:
      app: webapp
  template:
    metadata:
      labels:
        app: webapp
    spec:
      containers:
        - name: webapp
          image: {image}
          ports:
            - containerPort: 8080
"""


def seed_template(address: str) -> str:
    """The seed's success-rate AnalysisTemplate: interval 5m -> 1s, rate window 5m -> 4s, and
    failureLimit 3 -> 1 (with count 3, the seed's failureLimit 3 can never be exceeded, so the
    seed's template as written passes every canary)."""
    return f"""apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
    - name: service-name
  metrics:
    - name: success-rate
      interval: 1s
      count: 3
      successCondition: result[0] >= 0.95
      failureLimit: 1
      provider:
        prometheus:
          address: {address}
          query: |
            sum(rate(http_requests_total{{service="{{{{args.service-name}}}}",
              status!~"5.."}}[4s])) /
            sum(rate(http_requests_total{{service="{{{{args.service-name}}}}"}}[4s]))
"""


async def test_seed_canary_with_prometheus_analysis(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    prometheus: tuple[str, Exporter],
) -> None:
    """A good canary (99-100% success) runs its steps with the background analysis measuring
    Prometheus and becomes stable; a bad one (50%) is aborted by the analysis, back to 100%
    stable, and the app turns Degraded while git still holds the bad version."""
    url, exporter = prometheus
    services = SERVICES.replace("app: web}", "app: webapp}")
    git_repo.write(
        {
            "app/svc.yaml": services,
            "app/template.yaml": seed_template(url),
            "app/rollout.yaml": seed_rollout("webapp:v1"),
        }
    )
    cfg = settings.load(
        write_config(
            tmp_path,
            cluster,
            [application("webapp", git_repo.url, "app", namespace)],
            rollouts=allow(url),
        )
    )
    await until(
        "prometheus to have two scrapes",
        lambda: httpx.get(url + "/api/v1/query", params={"query": "http_requests_total"}).json()[
            "data"
        ]["result"],
    )
    async with Engine.open(cfg) as engine:
        app = cfg.app("webapp")
        await engine.reconciler.reconcile(app)
        first = await until(
            "first deploy",
            lambda: (s := ro_status(cluster, namespace, "webapp")).get("phase") == "Healthy" and s,
        )
        git_repo.write({"app/rollout.yaml": seed_rollout("webapp:v2")})
        await engine.reconciler.reconcile(app)
        good = await until(
            "the good canary to become stable",
            lambda: (
                (s := ro_status(cluster, namespace, "webapp")).get("stableRS") != first["stableRS"]
                and s.get("phase") == "Healthy"
                and s
            ),
            timeout=120,
        )
        (run,) = json.loads(cluster.kubectl("get", "analysisrun", "-n", namespace, "-o", "json"))[
            "items"
        ]
        assert run["status"]["phase"] == "Successful", run["status"]
        values = [m["value"] for m in run["status"]["metricResults"][0]["measurements"]]
        assert len(values) == 3 and all(v.startswith("[") for v in values), values

        exporter.success = 0.5
        await anyio.sleep(5)  # the 4 s rate window forgets the good traffic
        git_repo.write({"app/rollout.yaml": seed_rollout("webapp:v3")})
        await engine.reconciler.reconcile(app)
        aborted = await until(
            "the bad canary to be aborted",
            lambda: (s := ro_status(cluster, namespace, "webapp")).get("phase") == "Degraded" and s,
            timeout=120,
        )
        assert "Background analysis phase failed" in aborted["message"], aborted["message"]
        assert "success-rate" in aborted["message"]
        assert aborted["stableRS"] == good["stableRS"]
        await until(
            "all traffic back on stable",
            lambda: (
                sets(cluster, namespace).get(good["stableRS"]) == 5
                and sum(sets(cluster, namespace).values()) == 5
            ),
        )
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["health"]["status"] == "Degraded"


def blue_green_rollout(image: str) -> str:
    """The seed's blue-green idea (webapp-active switched from blue to green) as a Rollout:
    the new version behind the preview Service, the success-rate analysis before the switch."""
    return f"""apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: webapp
spec:
  replicas: 3
  selector:
    matchLabels:
      app: webapp
  template:
    metadata:
      labels:
        app: webapp
    spec:
      containers:
        - name: webapp
          image: {image}
  strategy:
    blueGreen:
      activeService: web-stable
      previewService: web-canary
      scaleDownDelaySeconds: 2
      prePromotionAnalysis:
        templates:
          - templateName: success-rate
        args:
          - name: service-name
            value: webapp
"""


async def test_blue_green_pre_promotion_analysis_with_prometheus(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    prometheus: tuple[str, Exporter],
) -> None:
    """Blue-green with a real Prometheus: the preview Service gets the new version, the
    pre-promotion analysis passes and the active Service switches; with a 50% success rate
    the analysis fails, the update is aborted and active stays on the old version."""
    from tests.integration.test_rollouts import selector

    url, exporter = prometheus
    services = SERVICES.replace("app: web}", "app: webapp}")
    git_repo.write(
        {
            "app/svc.yaml": services,
            "app/template.yaml": seed_template(url),
            "app/rollout.yaml": blue_green_rollout("webapp:blue"),
        }
    )
    cfg = settings.load(
        write_config(
            tmp_path,
            cluster,
            [application("bg", git_repo.url, "app", namespace)],
            rollouts=allow(url),
        )
    )
    async with Engine.open(cfg) as engine:
        app = cfg.app("bg")
        await engine.reconciler.reconcile(app)
        blue = (
            await until(
                "first deploy",
                lambda: (
                    (s := ro_status(cluster, namespace, "webapp")).get("phase") == "Healthy" and s
                ),
            )
        )["stableRS"]
        git_repo.write({"app/rollout.yaml": blue_green_rollout("webapp:green")})
        await engine.reconciler.reconcile(app)
        st = await until(
            "the preview to come up",
            lambda: (
                (s := ro_status(cluster, namespace, "webapp")).get("currentPodHash") != blue
                and selector(cluster, namespace, "web-canary") == s.get("currentPodHash")
                and s
            ),
        )
        green = st["currentPodHash"]
        assert selector(cluster, namespace, "web-stable") == blue, "active waits for analysis"
        await until(
            "the analysis to pass and active to switch",
            lambda: selector(cluster, namespace, "web-stable") == green,
            timeout=120,
        )
        (run,) = json.loads(cluster.kubectl("get", "analysisrun", "-n", namespace, "-o", "json"))[
            "items"
        ]
        assert run["metadata"]["labels"]["rollout-type"] == "PrePromotion"
        assert run["status"]["phase"] == "Successful"

        exporter.success = 0.5
        await anyio.sleep(5)
        git_repo.write({"app/rollout.yaml": blue_green_rollout("webapp:bad")})
        await engine.reconciler.reconcile(app)
        failed = await until(
            "the failing analysis to abort",
            lambda: (s := ro_status(cluster, namespace, "webapp")).get("phase") == "Degraded" and s,
            timeout=120,
        )
        assert "PrePromotion analysis phase failed" in failed["message"]
        assert selector(cluster, namespace, "web-stable") == green, "active stays on green"
        assert failed["stableRS"] == green
