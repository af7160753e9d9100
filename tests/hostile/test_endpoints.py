"""The HTTP API beyond loopback: nothing but probes without a token, an optional token on
/metrics, unsigned webhooks refused, and webhook floods coalesced into a few ls-remotes."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap

pytestmark = pytest.mark.cluster


def push_event(url: str, branch: str = "main") -> str:
    """A minimal GitHub push payload for `url`."""
    return json.dumps({"ref": f"refs/heads/{branch}", "repository": {"clone_url": url}})


def test_beyond_loopback_without_tokens_serves_no_app_data(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Listening on 0.0.0.0 with no apiTokens: app reads, refresh and sync are refused (401),
    /readyz says only ready or not, /healthz answers, unsigned webhooks are refused."""
    git_repo.write({"a/cm.yaml": configmap("x")})
    cfg = write_config(tmp_path, cluster, [application("open", git_repo.url, "a", namespace)])
    with running(cfg, host="0.0.0.0") as d:
        assert d.api("/healthz").status_code == 200
        ready = d.api("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        for method, path in [
            ("GET", "/api/v1/applications"),
            ("GET", "/api/v1/applications/open"),
            ("GET", "/api/v1/applications/open/diff"),
            ("POST", "/api/v1/applications/open/refresh"),
            ("POST", "/api/v1/applications/open/sync"),
            ("GET", "/api/v1/status"),
            ("GET", "/api/v1/applicationsets"),
        ]:
            assert d.api(path, method=method).status_code == 401, (method, path)
        hook = d.api(
            "/api/webhook",
            method="POST",
            content=push_event(git_repo.url),
            headers={"X-GitHub-Event": "push", "Content-Type": "application/json"},
        )
        assert hook.status_code == 401
        assert "webhooks.github.secretFile" in hook.json()["error"]


def test_metrics_token_is_required_when_configured(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With settings.metricsTokenFile, /metrics needs that bearer token."""
    git_repo.write({"a/cm.yaml": configmap("x")})
    (tmp_path / "metrics-token").write_text("s3cret-metrics\n")
    cfg = write_config(
        tmp_path,
        cluster,
        [application("metered", git_repo.url, "a", namespace)],
        metricsTokenFile=str(tmp_path / "metrics-token"),
    )
    with running(cfg) as d:
        assert d.api("/metrics").status_code == 401
        assert d.api("/metrics", token="wrong").status_code == 401
        ok = d.api("/metrics", token="s3cret-metrics")
        assert ok.status_code == 200 and "argocd_app_info" in ok.text


def test_webhook_flood_costs_a_handful_of_ls_remotes(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A flood of 300 push webhooks (4 senders) for one repository followed by 3 apps costs a
    handful of ls-remotes, not one per webhook, and the pushed change reaches every app."""
    git_repo.write({f"a{i}/cm.yaml": configmap(f"x{i}") for i in range(3)})
    apps = [application(f"flood{i}", git_repo.url, f"a{i}", namespace) for i in range(3)]
    cfg = write_config(tmp_path, cluster, apps)

    def ls_remotes(text: str) -> float:
        found = re.findall(
            r'^argocd_git_request_total\{[^}]*request_type="ls-remote"[^}]*\} (\S+)$', text, re.M
        )
        return sum(float(v) for v in found)

    def data(i: int) -> str:
        return cluster.kubectl("get", "cm", f"x{i}", "-n", namespace, "-o", "jsonpath={.data.key}")

    with running(cfg) as d:
        wait_for(lambda: all(d.synced(f"flood{i}") for i in range(3)), timeout=60, what="synced")
        before = ls_remotes(d.api("/metrics").text)
        git_repo.write({f"a{i}/cm.yaml": configmap(f"x{i}", data="pushed") for i in range(3)})
        with httpx.Client(base_url=d.url, timeout=30) as client:

            def send(_: int) -> int:
                r = client.post(
                    "/api/webhook",
                    content=push_event(git_repo.url),
                    headers={"X-GitHub-Event": "push", "Content-Type": "application/json"},
                )
                return r.status_code

            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(send, range(300)))
        assert set(codes) == {200}
        wait_for(
            lambda: all(data(i) == "pushed" for i in range(3)),
            timeout=30,
            what="pushed change applied to every app",
        )
        spent = ls_remotes(d.api("/metrics").text) - before
        assert spent <= 10, spent
