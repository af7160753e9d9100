"""Argo Rollouts canaries run by the daemon itself on the real control plane: CRDs installed on
demand, ReplicaSets per pod template, steps, pauses, promotion, abort and Service selectors."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon import settings
from daemon.engine import Engine
from daemon.settings import Application
from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_sync import get

pytestmark = pytest.mark.cluster

HASH = "rollouts-pod-template-hash"


def rollout(image: str, steps: str, api: str = "argoproj.io/v1alpha1") -> str:
    return f"""apiVersion: {api}
kind: Rollout
metadata:
  name: web
spec:
  replicas: 5
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: main
          image: {image}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      maxSurge: 1
      maxUnavailable: 0
      steps:
{steps}
"""


SERVICES = """apiVersion: v1
kind: Service
metadata:
  name: web-stable
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web-canary
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""

STEPS = """        - setWeight: 20
        - pause: {}
        - setWeight: 60
        - pause: {duration: 2s}"""


async def until(
    what: str, check: Callable[[], Any], timeout: float = 90.0, every: float = 0.5
) -> Any:
    """Poll `check` (sync) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await anyio.to_thread.run_sync(check)
        if last:
            return last
        await anyio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def sets(cluster: Cluster, ns: str) -> dict[str, int]:
    out = cluster.kubectl("get", "rs", "-n", ns, "-l", HASH, "-o", "json")
    return {
        rs["metadata"]["labels"][HASH]: rs["spec"]["replicas"] for rs in json.loads(out)["items"]
    }


def ro_status(cluster: Cluster, ns: str, name: str = "web") -> dict[str, Any]:
    ro = get(cluster, ns, f"rollout/{name}") or {}
    return dict(ro.get("status") or {})


def patch_status(cluster: Cluster, ns: str, patch: str, name: str = "web") -> None:
    """Write the Rollout's status as `kubectl argo rollouts` does (promote, abort, ...)."""
    cluster.kubectl(
        "patch", "rollout", name, "-n", ns, "--subresource=status", "--type=merge", "-p", patch
    )


def selector(cluster: Cluster, ns: str, svc: str) -> str:
    body = get(cluster, ns, f"service/{svc}") or {}
    return str((body.get("spec") or {}).get("selector", {}).get(HASH, ""))


@contextlib.asynccontextmanager
async def deployed(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, name: str
) -> AsyncIterator[tuple[Engine, Application, str]]:
    """An engine with app `name` (path `app` of `git_repo`) synced once and its Rollout `web`
    through its first deploy: the engine, the app and the stable pod-template hash."""
    cfg = settings.load(
        write_config(tmp_path, cluster, [application(name, git_repo.url, "app", namespace)])
    )
    async with Engine.open(cfg) as engine:
        app = cfg.app(name)
        await engine.reconciler.reconcile(app)
        first = await until(
            "first deploy",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
        )
        yield engine, app, str(first["stableRS"])


async def test_canary_steps_pause_promote_and_complete(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The seed's `argoproj.io/v1` Rollout is read as v1alpha1 and its CRDs installed; the first
    deploy goes to 100%; a new image runs 1 canary pod next to 4 stable ones and pauses (the app
    Suspended) until promoted; then 3/2, a timed pause, and the canary becomes stable with the
    Services following, the old set scaled to zero."""
    git_repo.write(
        {
            "app/svc.yaml": SERVICES,
            "app/ro.yaml": rollout("nginx:1", STEPS, api="argoproj.io/v1"),
        }
    )
    cfg = settings.load(
        write_config(tmp_path, cluster, [application("canary", git_repo.url, "app", namespace)])
    )
    async with Engine.open(cfg) as engine:
        app = cfg.app("canary")
        status = await engine.reconciler.reconcile(app)
        assert status["operationState"]["phase"] == "Succeeded", status["operationState"]
        first = await until(
            "the first deploy to be Healthy",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
        )
        stable = first["stableRS"]
        assert sets(cluster, namespace) == {stable: 5}
        assert selector(cluster, namespace, "web-stable") == stable

        git_repo.write({"app/ro.yaml": rollout("nginx:2", STEPS, api="argoproj.io/v1")})
        await engine.reconciler.reconcile(app)
        paused = await until(
            "the canary to pause at step 1",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Paused" and s,
        )
        canary = paused["currentPodHash"]
        assert paused["currentStepIndex"] == 1
        assert sets(cluster, namespace) == {stable: 4, canary: 1}
        assert selector(cluster, namespace, "web-canary") == canary
        assert selector(cluster, namespace, "web-stable") == stable
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["health"]["status"] == "Suspended"
        await anyio.sleep(2)
        assert ro_status(cluster, namespace)["currentStepIndex"] == 1, "waits to be promoted"

        # What `kubectl argo rollouts promote` does: clear the pause conditions.
        patch_status(cluster, namespace, '{"status":{"pauseConditions":null}}')
        done = await until(
            "the canary to become stable",
            lambda: (
                (s := ro_status(cluster, namespace)).get("stableRS") == canary
                and s.get("phase") == "Healthy"
                and s
            ),
        )
        assert done["currentStepIndex"] == 4
        assert await until(
            "the old set to drain", lambda: sets(cluster, namespace) == {stable: 0, canary: 5}
        )
        assert selector(cluster, namespace, "web-stable") == canary
        events = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=web",
            "-o",
            "jsonpath={.items[*].reason}",
        )
        assert "RolloutStepCompleted" in events and "RolloutCompleted" in events
        status = await engine.reconciler.reconcile(app, auto=False)
        drifted = [r for r in status["resources"] if r.get("status") != "Synced"]
        assert status["sync"]["status"] == "Synced", drifted
        assert status["health"]["status"] == "Healthy"


async def test_abort_goes_back_to_stable_and_degrades_the_app(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """status.abort during a canary scales the canary away and the stable set back to 100%;
    the Rollout is Degraded and so is the app, while git still holds the new version."""
    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": rollout("nginx:1", STEPS)})
    async with deployed(cluster, namespace, git_repo, tmp_path, "abort") as (engine, app, stable):
        git_repo.write({"app/ro.yaml": rollout("nginx:2", STEPS)})
        await engine.reconciler.reconcile(app)
        await until("pause", lambda: ro_status(cluster, namespace).get("phase") == "Paused")
        patch_status(cluster, namespace, '{"status":{"abort":true}}')
        await until(
            "the canary to be gone",
            lambda: (
                ro_status(cluster, namespace).get("phase") == "Degraded"
                and sets(cluster, namespace).get(stable) == 5
                and sum(sets(cluster, namespace).values()) == 5
            ),
        )
        assert selector(cluster, namespace, "web-canary") == stable
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["health"]["status"] == "Degraded"


def blue_green(image: str) -> str:
    return f"""apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: main
          image: {image}
  strategy:
    blueGreen:
      activeService: web-stable
      previewService: web-canary
      autoPromotionEnabled: false
      scaleDownDelaySeconds: 6
"""


async def test_blue_green_preview_promote_switch(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Blue-green on the real cluster: the new version runs behind the preview Service while
    the active one keeps the old pods; after promotion active switches, and the old set is
    scaled down once scaleDownDelaySeconds have passed."""
    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": blue_green("nginx:1")})
    async with deployed(cluster, namespace, git_repo, tmp_path, "bg") as (engine, app, blue):
        assert selector(cluster, namespace, "web-stable") == blue
        git_repo.write({"app/ro.yaml": blue_green("nginx:2")})
        await engine.reconciler.reconcile(app)
        st = await until(
            "the preview to be up and paused",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Paused" and s,
        )
        green = st["currentPodHash"]
        assert selector(cluster, namespace, "web-canary") == green
        assert selector(cluster, namespace, "web-stable") == blue
        assert sets(cluster, namespace) == {blue: 3, green: 3}
        patch_status(cluster, namespace, '{"status":{"pauseConditions":null}}')
        await until("active to switch", lambda: selector(cluster, namespace, "web-stable") == green)
        assert sets(cluster, namespace)[blue] == 3, "old pods stay for scaleDownDelaySeconds"
        await until("the old set to go", lambda: sets(cluster, namespace) == {blue: 0, green: 3})
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["sync"]["status"] == "Synced"
        assert status["health"]["status"] == "Healthy"


def test_rollout_verbs_through_the_daemon_with_project_roles(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`gitopsd rollout get|promote|abort` talk to the running daemon; promoting needs the
    project role action `action/argoproj.io/Rollout/promote` (Argo CD's RBAC name): a viewer
    may look but not promote, a promoter may promote, and the canary then completes. The
    status page shows the paused canary's step, weight, pause reason and image."""
    import os
    import subprocess

    import yaml

    from tests.integration.test_daemon import GITOPSD, running, wait_for

    steps = "        - setWeight: 20\n        - pause: {}"
    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": rollout("nginx:1", steps)})
    app = application("verbs", git_repo.url, "app", namespace)
    app["spec"]["project"] = "team"
    cfg = write_config(tmp_path, cluster, [app])
    policy = "p, proj:team:{role}, applications, {action}, team/*, allow"
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "team", "namespace": "argocd"},
        "spec": {
            "sourceRepos": [git_repo.url],
            "destinations": [{"namespace": namespace, "server": "*"}],
            "roles": [
                {
                    "name": "promoter",
                    "policies": [
                        policy.format(role="promoter", action="get"),
                        policy.format(role="promoter", action="action/argoproj.io/Rollout/promote"),
                    ],
                    "groups": ["promoters"],
                },
                {
                    "name": "viewer",
                    "policies": [policy.format(role="viewer", action="get")],
                    "groups": ["viewers"],
                },
            ],
        },
    }
    (tmp_path / "apps" / "project.yaml").write_text(yaml.safe_dump(project))
    (tmp_path / "promoter").write_text("promoter-token")
    (tmp_path / "viewer").write_text("viewer-token")
    (tmp_path / "admin").write_text("admin-token")
    data = yaml.safe_load(cfg.read_text())
    data["apiTokens"] = [
        {
            "name": "p",
            "tokenFile": str(tmp_path / "promoter"),
            "role": "none",
            "groups": ["promoters"],
        },
        {"name": "v", "tokenFile": str(tmp_path / "viewer"), "role": "none", "groups": ["viewers"]},
        {"name": "a", "tokenFile": str(tmp_path / "admin"), "role": "admin"},
    ]
    cfg.write_text(yaml.safe_dump(data))

    def cli(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GITOPSD_TOKEN": token}
        return subprocess.run(
            [GITOPSD, "rollout", *args, "--server", d.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    with running(cfg) as d:
        wait_for(
            lambda: ro_status(cluster, namespace).get("phase") == "Healthy",
            timeout=90,
            what="first deploy",
        )
        git_repo.write({"app/ro.yaml": rollout("nginx:2", steps)})
        d.api("/api/v1/applications/verbs/refresh", method="POST", token="admin-token")
        wait_for(
            lambda: ro_status(cluster, namespace).get("phase") == "Paused",
            timeout=90,
            what="the canary pause",
        )
        shown = cli("viewer-token", "get", "web")
        assert shown.returncode == 0, shown.stderr
        assert "Paused" in shown.stdout and "CanaryPauseStep" in shown.stdout
        assert "verbs" in shown.stdout and "nginx:2" in shown.stdout
        page = d.api("/ui/applications/verbs", token="viewer-token").text
        row = page.split(f'data-rollout="{namespace}/web"', 1)[1].split("</tr>", 1)[0]
        for shown_on_page in ("Canary", "Paused", "step 1/2, weight 20%", "CanaryPauseStep"):
            assert shown_on_page in row, (shown_on_page, row)
        assert "nginx:2" in row
        denied = cli("viewer-token", "promote", "web")
        assert denied.returncode != 0 and "403" in denied.stderr, denied
        assert ro_status(cluster, namespace).get("phase") == "Paused"
        bad = d.api("/api/v1/rollouts/web/explode", method="POST", token="admin-token")
        assert bad.status_code == 400, bad.text
        missing = d.api("/api/v1/rollouts/nope", token="admin-token")
        assert missing.status_code == 404
        ok = cli("promoter-token", "promote", "web")
        assert ok.returncode == 0, ok.stderr
        assert "promoted" in ok.stdout
        wait_for(
            lambda: (
                (s := ro_status(cluster, namespace)).get("phase") == "Healthy"
                and s.get("stableRS") == s.get("currentPodHash")
            ),
            timeout=90,
            what="the canary to complete after promote",
        )
        assert cli("promoter-token", "abort", "web").returncode != 0

        def metric_line() -> str:
            text = d.api("/metrics", token="admin-token").text
            return next((ln for ln in text.splitlines() if ln.startswith("rollout_info{")), "")

        line = wait_for(
            lambda: 'phase="Healthy"' in metric_line() and metric_line(),
            timeout=30,
            what="rollout_info",
        )
        assert f'namespace="{namespace}"' in line and 'strategy="canary"' in line


class _Health:
    """A small HTTP endpoint the analysis queries: {"ok": <bool>, "rate": <float>}."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.ok = True
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps({"ok": outer.ok, "rate": 0.99 if outer.ok else 0.5}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def allow(url: str) -> dict[str, Any]:
    """settings.rollouts letting analyses reach `url`'s host and port (loopback is refused
    unless named)."""
    parts = url.split("/")
    return {"analysis": {"allowedAddresses": [f"{parts[0]}//{parts[2]}"]}}


def analysis_template(url: str) -> str:
    return """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: health
spec:
  args:
    - name: url
  metrics:
    - name: ok
      interval: 1s
      count: 2
      successCondition: result == true
      provider:
        web:
          url: "{{args.url}}"
          jsonPath: "{$.ok}"
"""


STEP_ANALYSIS = """        - setWeight: 20
        - analysis:
            templates:
              - templateName: health
            args:
              - name: url
                value: URL"""


async def test_step_analysis_passes_a_good_canary_and_aborts_a_bad_one(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An analysis step creates an AnalysisRun from the template (args substituted) that
    measures the endpoint twice; while it answers ok the canary completes, and when it turns
    bad the next update is aborted back to stable with the run's reason."""
    health = _Health()
    try:
        steps = STEP_ANALYSIS.replace("URL", health.url)
        git_repo.write(
            {
                "app/svc.yaml": SERVICES,
                "app/at.yaml": analysis_template(health.url),
                "app/ro.yaml": rollout("nginx:1", steps),
            }
        )
        cfg = settings.load(
            write_config(
                tmp_path,
                cluster,
                [application("an", git_repo.url, "app", namespace)],
                rollouts=allow(health.url),
            )
        )
        async with Engine.open(cfg) as engine:
            app = cfg.app("an")
            await engine.reconciler.reconcile(app)
            first = await until(
                "first deploy",
                lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
            )
            git_repo.write({"app/ro.yaml": rollout("nginx:2", steps)})
            await engine.reconciler.reconcile(app)
            done = await until(
                "the analysed canary to complete",
                lambda: (
                    (s := ro_status(cluster, namespace)).get("stableRS") != first["stableRS"]
                    and s.get("phase") == "Healthy"
                    and s
                ),
            )
            runs = json.loads(cluster.kubectl("get", "analysisrun", "-n", namespace, "-o", "json"))
            (run,) = runs["items"]
            assert run["status"]["phase"] == "Successful"
            assert run["spec"]["metrics"][0]["provider"]["web"]["url"] == health.url
            assert run["status"]["metricResults"][0]["count"] == 2
            assert run["metadata"]["labels"]["rollout-type"] == "Step"
            assert health.hits >= 2

            health.ok = False
            git_repo.write({"app/ro.yaml": rollout("nginx:3", steps)})
            await engine.reconciler.reconcile(app)
            failed = await until(
                "the bad canary to abort",
                lambda: (s := ro_status(cluster, namespace)).get("phase") == "Degraded" and s,
            )
            assert "Step-based analysis phase failed" in failed["message"]
            assert failed["stableRS"] == done["stableRS"]
            await until(
                "back to 100% stable",
                lambda: (
                    sets(cluster, namespace).get(done["stableRS"]) == 5
                    and sum(sets(cluster, namespace).values()) == 5
                ),
            )
    finally:
        health.close()


def test_a_killed_daemon_resumes_the_canary_where_it_was(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """kill -9 during a paused canary: the restarted daemon finds the Rollout at the same step
    (its state lives in the Rollout's status, not in the daemon), re-runs no finished step,
    leaves the stable set as it was, and completes after a promotion."""
    import signal

    from tests.integration.test_daemon import running, wait_for

    steps = (
        "        - setWeight: 40\n        - pause: {}\n        - setWeight: 80\n        - pause: {}"
    )
    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": rollout("nginx:1", steps)})
    cfg = write_config(tmp_path, cluster, [application("crash", git_repo.url, "app", namespace)])
    with running(cfg) as d:
        wait_for(
            lambda: ro_status(cluster, namespace).get("phase") == "Healthy",
            timeout=90,
            what="first deploy",
        )
        stable = ro_status(cluster, namespace)["stableRS"]
        git_repo.write({"app/ro.yaml": rollout("nginx:2", steps)})
        d.api("/api/v1/applications/crash/refresh", method="POST")
        wait_for(
            lambda: ro_status(cluster, namespace).get("phase") == "Paused",
            timeout=90,
            what="the canary at its first pause",
        )
        before = ro_status(cluster, namespace)
        counts = sets(cluster, namespace)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
    assert before["currentStepIndex"] == 1
    assert counts[stable] == 3 and counts[before["currentPodHash"]] == 2
    events_before = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=RolloutStepCompleted",
        "-o",
        "name",
    ).split()
    with running(cfg) as d:
        wait_for(lambda: d.synced("crash"), timeout=60, what="the restarted daemon's reconcile")
        time.sleep(3)
        after = ro_status(cluster, namespace)
        assert after["currentStepIndex"] == 1 and after["phase"] == "Paused"
        assert sets(cluster, namespace) == counts, "nothing rescaled by the restart"
        again = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "reason=RolloutStepCompleted",
            "-o",
            "name",
        ).split()
        assert len(again) == len(events_before), "no finished step ran again"
        patch_status(cluster, namespace, '{"status":{"pauseConditions":null}}')
        wait_for(
            lambda: ro_status(cluster, namespace).get("currentStepIndex") == 3,
            timeout=90,
            what="the next pause after the promotion",
        )
        assert sets(cluster, namespace)[stable] == 1


AB_INGRESS = """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: webapp-ingress
spec:
  ingressClassName: nginx
  rules:
    - host: webapp.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: web-stable
                port:
                  number: 80
"""


def routed_rollout(image: str) -> str:
    """The seed's A/B test as a Rollout: header X-Canary-Test: true goes to the canary, and
    10% of the rest."""
    return rollout(image, "        - setWeight: 10\n        - pause: {}").replace(
        "      maxSurge: 1\n      maxUnavailable: 0\n",
        """      scaleDownDelaySeconds: 3
      trafficRouting:
        nginx:
          stableIngress: webapp-ingress
          additionalIngressAnnotations:
            canary-by-header: X-Canary-Test
            canary-by-header-value: "true"
""",
    )


async def test_nginx_canary_ingress_gives_the_seed_ab_routing(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """trafficRouting.nginx on the real API server: the canary Ingress the controller makes
    from the stable one is the seed's A/B Ingress (canary, canary-by-header X-Canary-Test,
    -value true, canary-weight 10, path / to the canary Service), owned by the Rollout; the
    stable set stays whole; promotion sets the weight to 0 and the old pods go after
    scaleDownDelaySeconds; deleting the Rollout garbage-collects the canary Ingress."""
    git_repo.write(
        {
            "app/svc.yaml": SERVICES,
            "app/ingress.yaml": AB_INGRESS,
            "app/ro.yaml": routed_rollout("nginx:1"),
        }
    )
    cfg = settings.load(
        write_config(tmp_path, cluster, [application("ab", git_repo.url, "app", namespace)])
    )
    canary_ingress = "web-webapp-ingress-canary"
    async with Engine.open(cfg) as engine:
        app = cfg.app("ab")
        await engine.reconciler.reconcile(app)
        stable = (
            await until(
                "first deploy",
                lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
            )
        )["stableRS"]
        git_repo.write({"app/ro.yaml": routed_rollout("nginx:2")})
        await engine.reconciler.reconcile(app)
        st = await until(
            "the canary to pause at 10%",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Paused" and s,
        )
        canary = st["currentPodHash"]
        assert sets(cluster, namespace) == {stable: 5, canary: 1}, "the stable set stays whole"
        ing = get(cluster, namespace, f"ingress/{canary_ingress}") or {}
        notes = ing["metadata"]["annotations"]
        assert notes == {
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary-Test",
            "nginx.ingress.kubernetes.io/canary-by-header-value": "true",
            "nginx.ingress.kubernetes.io/canary-weight": "10",
        }
        rule = ing["spec"]["rules"][0]
        assert rule["host"] == "webapp.example.com"
        assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "web-canary"
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert ing["metadata"]["ownerReferences"][0]["kind"] == "Rollout"
        assert selector(cluster, namespace, "web-canary") == canary
        assert st["canary"]["weights"]["canary"]["weight"] == 10

        patch_status(cluster, namespace, '{"status":{"pauseConditions":null}}')
        await until(
            "promotion",
            lambda: ro_status(cluster, namespace).get("stableRS") == canary,
        )
        weight = "nginx.ingress.kubernetes.io/canary-weight"
        await until(
            "the canary weight back to 0",
            lambda: (
                (get(cluster, namespace, f"ingress/{canary_ingress}") or {})["metadata"][
                    "annotations"
                ][weight]
                == "0"
            ),
        )
        assert selector(cluster, namespace, "web-stable") == canary
        await until("the old set to go", lambda: sets(cluster, namespace) == {stable: 0, canary: 5})
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["sync"]["status"] == "Synced", "the canary Ingress is not app drift"
        assert not [r for r in status["resources"] if r.get("name") == canary_ingress]

    cluster.kubectl("delete", "rollout", "web", "-n", namespace, "--wait=true")
    await until(
        "the canary Ingress to be garbage-collected",
        lambda: get(cluster, namespace, f"ingress/{canary_ingress}") is None,
    )


async def test_a_rollout_without_its_stable_ingress_is_invalid_until_it_exists(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A traffic-routed Rollout whose stable Ingress is missing is Degraded with InvalidSpec
    naming it, and recovers by itself once the Ingress appears."""
    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": routed_rollout("nginx:1")})
    cfg = settings.load(
        write_config(tmp_path, cluster, [application("noing", git_repo.url, "app", namespace)])
    )
    async with Engine.open(cfg) as engine:
        await engine.reconciler.reconcile(cfg.app("noing"))
        st = await until(
            "InvalidSpec",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Degraded" and s,
        )
        assert "stable Ingress 'webapp-ingress' not found" in st["message"]
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=AB_INGRESS)
        await until("Healthy", lambda: ro_status(cluster, namespace).get("phase") == "Healthy")


def blue_green_post(image: str, url: str) -> str:
    return (
        blue_green(image)
        .replace("      autoPromotionEnabled: false\n", "")
        .replace("scaleDownDelaySeconds: 6\n", "scaleDownDelaySeconds: 2\n")
        + f"""      postPromotionAnalysis:
        templates:
          - templateName: health
        args:
          - name: url
            value: {url}
"""
    )


async def test_blue_green_post_promotion_analysis_switches_back_on_failure(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """postPromotionAnalysis on the real cluster: after the switch a PostPromotion run
    measures the new version; passing makes it stable and the old set goes; failing aborts and
    points the active Service back at the stable pods, which were kept."""
    health = _Health()
    try:
        git_repo.write(
            {
                "app/svc.yaml": SERVICES,
                "app/at.yaml": analysis_template(health.url),
                "app/ro.yaml": blue_green_post("nginx:1", health.url),
            }
        )
        cfg = settings.load(
            write_config(
                tmp_path,
                cluster,
                [application("post", git_repo.url, "app", namespace)],
                rollouts=allow(health.url),
            )
        )
        async with Engine.open(cfg) as engine:
            app = cfg.app("post")
            await engine.reconciler.reconcile(app)
            blue = (
                await until(
                    "first deploy",
                    lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
                )
            )["stableRS"]
            git_repo.write({"app/ro.yaml": blue_green_post("nginx:2", health.url)})
            await engine.reconciler.reconcile(app)
            green = (
                await until(
                    "green to pass its post-promotion analysis",
                    lambda: (
                        (s := ro_status(cluster, namespace)).get("stableRS") != blue
                        and s.get("phase") == "Healthy"
                        and s
                    ),
                )
            )["stableRS"]
            assert selector(cluster, namespace, "web-stable") == green
            runs = json.loads(cluster.kubectl("get", "analysisrun", "-n", namespace, "-o", "json"))
            (run,) = runs["items"]
            assert run["metadata"]["labels"]["rollout-type"] == "PostPromotion"
            assert run["status"]["phase"] == "Successful"
            await until("blue to go", lambda: sets(cluster, namespace).get(blue) == 0)

            health.ok = False
            git_repo.write({"app/ro.yaml": blue_green_post("nginx:3", health.url)})
            await engine.reconciler.reconcile(app)
            failed = await until(
                "the post-promotion failure to abort",
                lambda: (s := ro_status(cluster, namespace)).get("phase") == "Degraded" and s,
            )
            assert failed["stableRS"] == green
            assert "PostPromotion analysis phase failed" in failed["message"]
            await until(
                "active back on green",
                lambda: selector(cluster, namespace, "web-stable") == green,
            )
            assert sets(cluster, namespace)[green] == 3, "the stable pods were kept"
    finally:
        health.close()


async def test_restart_replaces_every_pod_a_few_at_a_time(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`restart` (spec.restartAt) on the real cluster: every pod of the Rollout is replaced by
    a newer one, the ReplicaSet stays the same, and status.restartedAt records it."""
    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": rollout("nginx:1", STEPS)})
    async with deployed(cluster, namespace, git_repo, tmp_path, "rst") as (engine, app, stable):

        def pods() -> dict[str, str]:
            out = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))
            return {
                p["metadata"]["name"]: p["metadata"]["creationTimestamp"]
                for p in out["items"]
                if not p["metadata"].get("deletionTimestamp")
            }

        before = await until("5 pods", lambda: len(p := pods()) == 5 and p)
        await anyio.sleep(1.1)  # creation times have a one-second resolution
        client = await engine.client_for(app)
        rollouts = engine.reconciler.rollouts
        assert rollouts is not None
        message = await rollouts.act(client, namespace, "web", "restart")
        assert "restarts pods at" in message
        await until(
            "the restart to finish",
            lambda: (
                (s := ro_status(cluster, namespace)).get("restartedAt")
                and s.get("phase") == "Healthy"
            ),
        )
        after = pods()
        assert len(after) == 5 and not set(after) & set(before), "every pod replaced"
        assert sets(cluster, namespace) == {stable: 5}
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["sync"]["status"] == "Synced", "restartAt is not drift"


def workload_deployment(image: str) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: main
          image: {image}
"""


WORKLOAD_ROLLOUT = """apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  workloadRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
    scaleDown: onsuccess
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      steps:
        - setWeight: 34
        - pause: {}
"""


async def test_workload_ref_runs_the_deployments_template_and_scales_it_down(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A Rollout with workloadRef to a Deployment from the same app: its ReplicaSets run the
    Deployment's pod template, the Deployment is scaled to 0 once the Rollout is Healthy
    (scaleDown: onsuccess) without the app seeing drift, the Deployment's generation is
    recorded as Argo CD's health check expects, and a new image in the Deployment runs the
    canary steps. A Rollout no app of the daemon deploys is left alone."""
    git_repo.write(
        {
            "app/svc.yaml": SERVICES,
            "app/deploy.yaml": workload_deployment("nginx:1"),
            "app/ro.yaml": WORKLOAD_ROLLOUT,
        }
    )
    cfg = settings.load(
        write_config(tmp_path, cluster, [application("wref", git_repo.url, "app", namespace)])
    )
    async with Engine.open(cfg) as engine:
        app = cfg.app("wref")
        await engine.reconciler.reconcile(app)
        stranger = rollout("nginx:1", STEPS).replace("name: web\n", "name: stranger\n", 1)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=stranger)
        st = await until(
            "the Rollout to take over",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
        )
        assert sets(cluster, namespace) == {st["stableRS"]: 3}
        await until(
            "the Deployment to be scaled to 0",
            lambda: (get(cluster, namespace, "deployment/web") or {})["spec"]["replicas"] == 0,
        )
        deploy = get(cluster, namespace, "deployment/web") or {}
        ro = get(cluster, namespace, "rollout/web") or {}
        generation = str(deploy["metadata"]["generation"])
        assert ro["metadata"]["annotations"]["rollout.argoproj.io/workload-generation"] == (
            generation
        )
        assert (
            await until(
                "the generation to be observed",
                lambda: ro_status(cluster, namespace).get("workloadObservedGeneration"),
            )
            == generation
        )
        rs = json.loads(cluster.kubectl("get", "rs", "-n", namespace, "-l", HASH, "-o", "json"))
        (one,) = rs["items"]
        assert one["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1"
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["sync"]["status"] == "Synced", [
            r for r in status["resources"] if r.get("status") != "Synced"
        ]

        git_repo.write({"app/deploy.yaml": workload_deployment("nginx:2")})
        await engine.reconciler.reconcile(app)
        paused = await until(
            "the canary of the new Deployment template",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Paused" and s,
        )
        assert sorted(sets(cluster, namespace).values()) == [1, 2]
        assert (get(cluster, namespace, "deployment/web") or {})["spec"]["replicas"] == 0, (
            "the sync kept the Deployment at 0"
        )
        patch_status(cluster, namespace, '{"status":{"pauseConditions":null}}')
        await until(
            "the canary to complete",
            lambda: ro_status(cluster, namespace).get("stableRS") == paused["currentPodHash"],
        )
        assert not ro_status(cluster, namespace, "stranger"), "not ours: never touched"


SMOKE_TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: smoke
spec:
  args:
    - name: image
  metrics:
    - name: smoke-test
      provider:
        job:
          metadata:
            labels: {purpose: smoke}
          spec:
            backoffLimit: 0
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: smoke
                    image: "{{args.image}}"
"""

SMOKE_STEPS = """        - setWeight: 20
        - analysis:
            templates:
              - templateName: smoke
            args:
              - name: image
                value: IMAGE"""


async def test_job_provider_passes_on_a_completed_job_and_aborts_on_a_failed_one(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The `job` provider on the real cluster: an analysis step creates a Job (named
    `<run uid>.<metric>.1`, owned by the AnalysisRun, the template's labels on it) and the
    measurement runs until the Job ends; a Job that completes lets the canary go on, one that
    fails aborts the update back to stable."""
    git_repo.write(
        {
            "app/svc.yaml": SERVICES,
            "app/at.yaml": SMOKE_TEMPLATE,
            "app/ro.yaml": rollout("nginx:1", SMOKE_STEPS.replace("IMAGE", "smoke:ok")),
        }
    )
    cfg = settings.load(
        write_config(tmp_path, cluster, [application("job", git_repo.url, "app", namespace)])
    )
    async with Engine.open(cfg) as engine:
        app = cfg.app("job")
        await engine.reconciler.reconcile(app)
        first = await until(
            "first deploy",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Healthy" and s,
        )
        git_repo.write(
            {"app/ro.yaml": rollout("nginx:2", SMOKE_STEPS.replace("IMAGE", "smoke:ok"))}
        )
        await engine.reconciler.reconcile(app)
        done = await until(
            "the canary to pass its smoke test",
            lambda: (
                (s := ro_status(cluster, namespace)).get("stableRS") != first["stableRS"]
                and s.get("phase") == "Healthy"
                and s
            ),
        )
        runs = json.loads(cluster.kubectl("get", "analysisrun", "-n", namespace, "-o", "json"))
        (run,) = runs["items"]
        assert run["status"]["phase"] == "Successful"
        (measurement,) = run["status"]["metricResults"][0]["measurements"]
        job_name = measurement["metadata"]["job-name"]
        assert job_name == f"{run['metadata']['uid']}.smoke-test.1"
        job = get(cluster, namespace, f"job/{job_name}") or {}
        assert job["metadata"]["labels"]["purpose"] == "smoke"
        assert job["metadata"]["ownerReferences"][0]["kind"] == "AnalysisRun"

        git_repo.write(
            {"app/ro.yaml": rollout("nginx:3", SMOKE_STEPS.replace("IMAGE", "smoke:fail"))}
        )
        await engine.reconciler.reconcile(app)
        failed = await until(
            "the failed smoke test to abort",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Degraded" and s,
        )
        assert "Step-based analysis phase failed" in failed["message"]
        assert failed["stableRS"] == done["stableRS"]


async def test_a_crashlooping_canary_times_out_and_is_aborted(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A canary image that crash-loops (the node simulator's `:crashloop`) never becomes
    available: the Rollout stays at its first step, then exceeds progressDeadlineSeconds and,
    with progressDeadlineAbort, is aborted back to the stable pods; the app is Degraded."""

    def stuck(image: str) -> str:
        return rollout(image, STEPS).replace(
            "  replicas: 5\n",
            "  replicas: 5\n  progressDeadlineSeconds: 6\n  progressDeadlineAbort: true\n",
        )

    git_repo.write({"app/svc.yaml": SERVICES, "app/ro.yaml": stuck("nginx:1")})
    async with deployed(cluster, namespace, git_repo, tmp_path, "stuck") as (engine, app, stable):
        git_repo.write({"app/ro.yaml": stuck("nginx:crashloop")})
        await engine.reconciler.reconcile(app)
        aborted = await until(
            "the deadline to abort the update",
            lambda: (s := ro_status(cluster, namespace)).get("phase") == "Degraded" and s,
            timeout=60,
        )
        assert "timed out progressing" in aborted["message"]
        assert aborted["currentStepIndex"] == 0
        await until(
            "back to 100% stable",
            lambda: (
                sets(cluster, namespace).get(stable) == 5
                and sum(sets(cluster, namespace).values()) == 5
            ),
        )
        assert selector(cluster, namespace, "web-canary") == stable
        status = await engine.reconciler.reconcile(app, auto=False)
        assert status["health"]["status"] == "Degraded"
