"""`gitopsd app ...` verbs as `argocd app` users run them, against a running daemon: list
filters, get --refresh, wait, resources, manifests, diff --local, set/unset, terminate-op,
delete, argocd's exit codes, and a closed pipe."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_cli import GITOPSD
from tests.integration.test_daemon import Daemon, running
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster

CHART = {
    "chart/Chart.yaml": "apiVersion: v2\nname: greeter\nversion: 0.1.0\n",
    "chart/values.yaml": "greeting: hello\n",
    "chart/templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeter\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}


def app_cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """`gitopsd app ARGS` against daemon `d`."""
    return subprocess.run(
        [GITOPSD, "app", *args, "--server", d.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=d.cli_env(),
    )


def labelled(app: dict[str, Any], **labels: str) -> dict[str, Any]:
    """`app` with metadata labels."""
    app["metadata"]["labels"] = labels
    return app


def test_read_verbs_filters_and_exit_codes(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """list -l/-p filter as argocd's; wait returns once Synced+Healthy and exits 20 on a
    timeout; resources, manifests (git and live) and get --refresh show the app; diff --local
    renders a local directory and exits 1 on a difference, 0 without, 2 when it cannot; an
    unknown app exits 13, an unreachable daemon 11; a cross-site POST and a foreign Host
    name are refused; a reader closing the pipe (`| true`) gets
    no traceback, and exit code 141 as a program killed by SIGPIPE."""
    big = "x" * 200_000  # more than a pipe holds
    git_repo.write(
        {
            "web/cm.yaml": configmap("cli-web", data="v1"),
            "other/cm.yaml": configmap("cli-other"),
            "big/cm.yaml": configmap("cli-big", data=big),
        }
    )
    apps = [
        labelled(application("cli-web", git_repo.url, "web", namespace), team="a"),
        labelled(
            application("cli-other", git_repo.url, "other", namespace, automated=False), team="b"
        ),
        application("cli-big", git_repo.url, "big", namespace),
    ]
    cfg = write_config(tmp_path, cluster, apps, reconcileInterval="2s")
    with running(cfg) as d:
        out = app_cli(d, "wait", "cli-web", "--health", "--sync", "--timeout", "60")
        assert out.returncode == 0, out.stderr
        assert "app cli-web: sync Synced, health Healthy" in out.stdout

        names = lambda r: [a["metadata"]["name"] for a in json.loads(r.stdout)]  # noqa: E731
        assert names(app_cli(d, "list", "-l", "team=a", "-o", "json")) == ["cli-web"]
        assert names(app_cli(d, "list", "-l", "team in (a,b),team!=a", "-o", "json")) == [
            "cli-other"
        ]
        assert len(names(app_cli(d, "list", "-p", "default", "-o", "json"))) == 3
        assert names(app_cli(d, "list", "-p", "nope", "-o", "json")) == []
        bad = app_cli(d, "list", "-l", "team in a")
        assert bad.returncode == 12 and "selector" in bad.stderr

        out = app_cli(d, "wait", "cli-other", "--sync", "--timeout", "2")
        assert out.returncode == 20 and "timed out (2s) waiting for app 'cli-other'" in out.stderr

        out = app_cli(d, "resources", "cli-web")
        assert out.returncode == 0
        assert any(
            line.split()[:3] == ["ConfigMap", namespace, "cli-web"]
            for line in out.stdout.splitlines()
        ), out.stdout
        git = yaml.safe_load(app_cli(d, "manifests", "cli-web").stdout)
        assert git["kind"] == "ConfigMap" and "resourceVersion" not in git["metadata"]
        live = yaml.safe_load(app_cli(d, "manifests", "cli-web", "--source", "live").stdout)
        assert live["metadata"]["resourceVersion"] and live["data"] == {"key": "v1"}

        before = d.status("cli-web")["reconciledAt"]
        out = app_cli(d, "get", "cli-web", "--refresh", "-o", "json")
        assert out.returncode == 0 and json.loads(out.stdout)["status"]["reconciledAt"] != before

        local = tmp_path / "local"
        local.mkdir()
        (local / "cm.yaml").write_text(configmap("cli-web", data="v1"))
        out = app_cli(d, "diff", "cli-web", "--local", str(local))
        assert out.returncode == 0, out.stdout + out.stderr
        (local / "cm.yaml").write_text(configmap("cli-web", data="v2"))
        out = app_cli(d, "diff", "cli-web", "--local", str(local))
        assert out.returncode == 1 and "+  key: v2" in out.stdout, out.stdout
        out = app_cli(d, "diff", "cli-web", "--local", str(tmp_path / "missing"))
        assert out.returncode == 2 and "not a directory" in out.stderr

        out = app_cli(d, "get", "nope")
        assert out.returncode == 13 and "not found" in out.stderr
        # Browsers cannot drive the API from another site, nor through a rebound host name.
        cross = httpx.post(
            d.url + "/api/v1/applications/cli-web/sync",
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
            content='{"prune": true}',
        )
        assert cross.status_code == 403 and "cross-site" in cross.text
        rebound = httpx.get(d.url + "/api/v1/applications", headers={"Host": "evil.example"})
        assert rebound.status_code == 403
        down = subprocess.run(
            [GITOPSD, "app", "list", "--server", "http://127.0.0.1:9"],
            capture_output=True,
            text=True,
        )
        assert down.returncode == 11 and "cannot reach gitopsd" in down.stderr

        piped = subprocess.run(
            [
                "bash",
                "-c",
                f"{GITOPSD} app manifests cli-big --server {d.url} | true; "
                'echo " ${PIPESTATUS[0]}"',
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in piped.stderr and piped.stderr == "", piped.stderr
        assert piped.stdout == " 141\n", piped.stdout


def test_set_unset_terminate_and_delete(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """set -p overrides a Helm parameter (kept across a restart, shown in the spec) and unset
    drops it; terminate-op ends an automated sync stuck on a wave as Failed "Operation
    terminated" before the next wave, and it is not retried; delete --cascade=false keeps the
    resources, delete removes them, and a deleted app stays deleted over a restart until its
    document changes."""
    stuck = (
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: never-bound\n"
        "  annotations:\n    argocd.argoproj.io/sync-wave: '0'\n"
        "spec:\n  storageClassName: does-not-exist\n  accessModes: [ReadWriteOnce]\n"
        "  resources:\n    requests:\n      storage: 1Gi\n"
    )
    git_repo.write(
        {
            **CHART,
            "stuck/pvc.yaml": stuck,
            "stuck/cm.yaml": configmap("after-the-pvc", wave=1),
            "keep/cm.yaml": configmap("kept"),
        }
    )
    apps = [
        application("cli-helm", git_repo.url, "chart", namespace),
        application("cli-stuck", git_repo.url, "stuck", namespace),
        application("cli-keep", git_repo.url, "keep", namespace),
    ]
    cfg = write_config(tmp_path, cluster, apps, reconcileInterval="2s", healthTimeout="300s")

    def greeting() -> str:
        return str((get(cluster, namespace, "configmap/greeter") or {}).get("data") or {})

    with running(cfg) as d:
        wait_for(lambda: "hello" in greeting(), timeout=60, what="chart synced")
        out = app_cli(d, "set", "cli-helm", "-p", "greeting=bonjour")
        assert out.returncode == 0 and "greeting=bonjour" in out.stdout, out.stderr
        wait_for(lambda: "bonjour" in greeting(), timeout=60, what="override applied")
        spec = json.loads(app_cli(d, "get", "cli-helm", "-o", "json").stdout)["spec"]
        assert spec["source"]["helm"]["parameters"] == [{"name": "greeting", "value": "bonjour"}]
        bad = app_cli(d, "set", "cli-helm", "-p", "novalue")
        assert bad.returncode == 2 and "expected key=value" in bad.stderr

        wait_for(
            lambda: "wave 0" in str(d.status("cli-stuck").get("operationState", {}).get("message")),
            timeout=30,
            what="the sync waiting on wave 0",
        )
        out = app_cli(d, "terminate-op", "cli-stuck")
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: d.status("cli-stuck").get("operationState", {}).get("phase") == "Failed",
            timeout=30,
            what="the operation terminated",
        )
        assert d.status("cli-stuck")["operationState"]["message"] == "Operation terminated"
        started = d.status("cli-stuck")["operationState"]["startedAt"]
        time.sleep(8)  # automated: a failed sync is retried after 5 s, a terminated one never
        assert d.status("cli-stuck")["operationState"]["startedAt"] == started
        assert get(cluster, namespace, "configmap/after-the-pvc") is None, "wave 1 never ran"
        out = app_cli(d, "terminate-op", "cli-stuck")
        assert out.returncode == 12 and "No operation is in progress" in out.stderr

        wait_for(lambda: d.synced("cli-keep"), timeout=60, what="cli-keep synced")
        out = app_cli(d, "delete", "cli-keep", "--cascade", "false")
        assert out.returncode == 0, out.stderr
        assert get(cluster, namespace, "configmap/kept") is not None, "resources kept"
        out = app_cli(d, "delete", "cli-stuck")
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: get(cluster, namespace, "persistentvolumeclaim/never-bound") is None,
            timeout=60,
            what="cascade delete",
        )
        listed = json.loads(app_cli(d, "list", "-o", "json").stdout)
        assert [a["metadata"]["name"] for a in listed] == ["cli-helm"]

    with running(cfg) as d:  # a restart: overrides kept, deleted apps stay deleted
        wait_for(lambda: d.synced("cli-helm"), timeout=60, what="resynced after restart")
        assert "bonjour" in greeting()
        assert app_cli(d, "get", "cli-keep").returncode == 13
        out = app_cli(d, "unset", "cli-helm", "-p", "greeting")
        assert out.returncode == 0 and "no overrides" in out.stdout
        wait_for(lambda: "hello" in greeting(), timeout=60, what="override dropped")
        doc = yaml.safe_load((tmp_path / "apps" / "cli-keep.yaml").read_text())
        doc["spec"]["source"]["targetRevision"] = "HEAD"
        (tmp_path / "apps" / "cli-keep.yaml").write_text(yaml.safe_dump(doc))
        wait_for(
            lambda: app_cli(d, "get", "cli-keep").returncode == 0,
            timeout=30,
            what="an edited document brings the app back",
        )
