"""The daemon as users run it: `gitopsd run -c FILE` steered by config edits, API and webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Cluster, GitRepo, _free_port, application, wait_for, write_config
from tests.integration.test_sync import configmap, deployment, get

pytestmark = pytest.mark.cluster
GITOPSD = str(Path(sys.executable).parent / "gitopsd")


class Daemon:
    """A running `gitopsd run` subprocess and its API."""

    def __init__(self, cfg: Path, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.cfg, self.url, self.proc, self.log = cfg, url, proc, log

    def api(
        self,
        path: str,
        *,
        method: str = "GET",
        token: str = "",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {token}"} if token else {}
        all_headers.update(headers or {})
        return httpx.request(method, self.url + path, headers=all_headers, timeout=10, **kw)

    def local_token_file(self) -> str:
        """Where the daemon keeps its local admin token (what writes need without apiTokens)."""
        data = yaml.safe_load(self.cfg.read_text())["settings"]
        return str(data.get("localTokenFile") or Path(data["stateDir"]) / "local-api-token")

    def local_token(self) -> str:
        """The daemon's local admin token."""
        return Path(self.local_token_file()).read_text().strip()

    def cli_env(self) -> dict[str, str]:
        """The environment for `gitopsd app` against this daemon: where its local token is."""
        import os

        return {**os.environ, "GITOPSD_LOCAL_TOKEN_FILE": self.local_token_file()}

    def app(self, name: str) -> dict[str, Any] | None:
        r = self.api(f"/api/v1/applications/{name}")
        return r.json() if r.status_code == 200 else None

    def status(self, name: str) -> dict[str, Any]:
        app = self.app(name)
        return (app or {}).get("status") or {}

    def synced(self, name: str, revision: str = "") -> bool:
        st = self.status(name)
        ok = (st.get("sync") or {}).get("status") == "Synced"
        return ok and (not revision or (st.get("sync") or {}).get("revision") == revision)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@contextmanager
def running(
    cfg: Path,
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    extra_args: tuple[str, ...] = (),
) -> Iterator[Daemon]:
    port = _free_port()
    data = yaml.safe_load(cfg.read_text())
    data["settings"]["listen"] = f"{host}:{port}"
    data["settings"].setdefault("reconcileInterval", "60s")
    data["settings"].setdefault("selfHealDebounce", "0.2s")
    cfg.write_text(yaml.safe_dump(data))
    log = cfg.parent / f"daemon-{port}.log"
    import os

    proc = subprocess.Popen(
        [GITOPSD, "run", "-c", str(cfg), "--log-format", "json", *extra_args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    d = Daemon(cfg, f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for(lambda: _ready(d), timeout=30, what=f"daemon ready (log: {d.logs()[-500:]})")
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _ready(d: Daemon) -> bool:
    if d.proc.poll() is not None:
        raise AssertionError(f"daemon exited with {d.proc.returncode}:\n{d.logs()}")
    try:
        return d.api("/healthz").status_code == 200 and d.api("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def test_config_edit_adds_and_removes_apps_without_restart(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Adding an Application file starts managing it; removing it (with finalizer) deletes its
    resources; all without a restart."""
    git_repo.write({"a/cm.yaml": configmap("from-a"), "b/cm.yaml": configmap("from-b")})
    cfg = write_config(tmp_path, cluster, [application("app-a", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(lambda: d.synced("app-a"), timeout=30, what="app-a synced")
        app_b = application("app-b", git_repo.url, "b", namespace)
        app_b["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
        (tmp_path / "apps" / "app-b.yaml").write_text(yaml.safe_dump(app_b))
        wait_for(lambda: d.synced("app-b"), timeout=30, what="app-b added and synced")
        assert get(cluster, namespace, "configmap/from-b") is not None
        (tmp_path / "apps" / "app-b.yaml").unlink()
        wait_for(lambda: d.app("app-b") is None, timeout=30, what="app-b removed")
        wait_for(
            lambda: get(cluster, namespace, "configmap/from-b") is None,
            timeout=30,
            what="app-b's resources deleted (resources finalizer)",
        )
        (tmp_path / "apps" / "app-a.yaml").unlink()
        wait_for(lambda: d.app("app-a") is None, timeout=30, what="app-a removed")
        time.sleep(2)
        assert get(cluster, namespace, "configmap/from-a") is not None, (
            "an app without the resources finalizer must leave its resources"
        )
        assert d.proc.poll() is None


def test_broken_config_edit_keeps_running_config(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A broken edit is rejected whole: the old config keeps running; API and metrics say why."""
    git_repo.write({"a/cm.yaml": configmap("keep-me")})
    cfg = write_config(tmp_path, cluster, [application("steady", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(lambda: d.synced("steady"), timeout=30, what="steady synced")
        app_file = tmp_path / "apps" / "steady.yaml"
        good = app_file.read_text()
        app_file.write_text(good + "\n  broken: [unclosed\n")
        wait_for(
            lambda: d.api("/readyz").json().get("configError"),
            timeout=15,
            what="config error reported",
        )
        err = d.api("/readyz").json()["configError"]
        assert "steady.yaml" in err and "invalid YAML" in err, err
        assert d.app("steady") is not None
        metrics = d.api("/metrics").text
        assert "gitopsd_config_last_reload_successful 0.0" in metrics
        assert "gitopsd_config_reload_errors_total 1.0" in metrics
        git_repo.write({"a/cm.yaml": configmap("keep-me", data="changed")})
        d.api("/api/v1/applications/steady/refresh", method="POST")
        wait_for(
            lambda: (
                (get(cluster, namespace, "configmap/keep-me") or {}).get("data", {}).get("key")
                == "changed"
            ),
            timeout=30,
            what="the old config still syncs",
        )
        app_file.write_text(good)
        wait_for(
            lambda: not d.api("/readyz").json().get("configError"),
            timeout=15,
            what="error cleared after fix",
        )


def test_webhook_signature_and_fast_sync(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A webhook with a bad signature is refused (401); a good one syncs the push within seconds."""
    git_repo.write({"a/cm.yaml": configmap("hooked", data="v1")})
    secret = tmp_path / "gh-secret"
    secret.write_text("s3cret\n")
    cfg = write_config(
        tmp_path,
        cluster,
        [application("hooked", git_repo.url, "a", namespace)],
        reconcileInterval="600s",
    )
    data = yaml.safe_load(cfg.read_text())
    data["webhooks"] = {"github": {"secretFile": str(secret)}}
    cfg.write_text(yaml.safe_dump(data))
    with running(cfg) as d:
        wait_for(lambda: d.synced("hooked"), timeout=30, what="initial sync")
        sha = git_repo.write({"a/cm.yaml": configmap("hooked", data="v2")})
        payload = json.dumps(
            {
                "ref": "refs/heads/main",
                "repository": {"clone_url": git_repo.url, "html_url": "https://example.invalid/x"},
            }
        ).encode()
        headers = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
        bad = d.api(
            "/api/webhook",
            method="POST",
            content=payload,
            headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64},
        )
        assert bad.status_code == 401
        garbage = d.api(
            "/api/webhook", method="POST", content=b"{not json", headers={"X-GitHub-Event": "push"}
        )
        assert garbage.status_code in (400, 401)
        sig = "sha256=" + hmac.new(b"s3cret", payload, hashlib.sha256).hexdigest()
        t0 = time.monotonic()
        ok = d.api(
            "/api/webhook",
            method="POST",
            content=payload,
            headers={**headers, "X-Hub-Signature-256": sig},
        )
        assert ok.status_code == 200 and ok.json()["refreshed"] == ["hooked"], ok.text
        wait_for(
            lambda: (
                (get(cluster, namespace, "configmap/hooked") or {}).get("data", {}).get("key")
                == "v2"
            ),
            timeout=10,
            interval=0.1,
            what="webhook-triggered sync",
        )
        latency = time.monotonic() - t0
        assert d.synced("hooked", sha) or latency < 10
        assert d.proc.poll() is None


def test_sigterm_mid_sync_saves_state_and_resumes(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """SIGTERM during a multi-wave sync exits 0 with state saved; a restart finishes the sync."""
    git_repo.write(
        {
            "a/1.yaml": configmap("wave0", wave=0),
            "a/2.yaml": deployment("slow", "nginx:1", wave=1, min_ready=6),
            "a/3.yaml": configmap("wave2", wave=2),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("resume", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(
            lambda: get(cluster, namespace, "deployment/slow") is not None,
            timeout=30,
            what="wave 1 applied",
        )
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait(60)
        assert code == 0, d.logs()
    state = json.loads((tmp_path / "state" / "apps" / "resume.json").read_text())
    op = state["status"]["operationState"]
    assert op["phase"] == "Terminating", op
    assert get(cluster, namespace, "configmap/wave2") is None
    with running(cfg) as d:
        wait_for(
            lambda: d.synced("resume") and get(cluster, namespace, "configmap/wave2"),
            timeout=60,
            what="sync resumed after restart",
        )
        st = d.status("resume")
        assert st["operationState"]["phase"] == "Succeeded"
    items = json.loads(cluster.kubectl("get", "cm,deploy", "-n", namespace, "-o", "json"))
    names = sorted(
        i["metadata"]["name"] for i in items["items"] if i["metadata"]["name"] != "kube-root-ca.crt"
    )
    assert names == ["slow", "wave0", "wave2"]


def test_metrics_and_api_shape(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """/metrics carries Argo CD's metric names and labels; the API returns Argo CD-shaped apps."""
    git_repo.write({"a/cm.yaml": configmap("m")})
    cfg = write_config(tmp_path, cluster, [application("metered", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(lambda: d.synced("metered"), timeout=30, what="synced")
        wait_for(
            lambda: 'health_status="Healthy"' in d.api("/metrics").text,
            timeout=15,
            what="healthy in metrics",
        )
        text = d.api("/metrics").text
        info = next(line for line in text.splitlines() if line.startswith("argocd_app_info{"))
        for label in (
            'name="metered"',
            'sync_status="Synced"',
            'health_status="Healthy"',
            f'dest_namespace="{namespace}"',
            'project="default"',
            'autosync_enabled="true"',
        ):
            assert label in info, info
        assert "argocd_app_sync_total{" in text and 'phase="Succeeded"' in text
        assert "argocd_git_request_total{repo=" in text and 'request_type="ls-remote"' in text
        assert "argocd_app_reconcile_bucket" in text
        assert "argocd_app_k8s_request_total{" in text
        assert "argocd_cluster_info{" in text
        app = d.app("metered")
        assert app and app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
        st = app["status"]
        assert st["history"][0]["id"] == 0
        assert {r["name"] for r in st["resources"]} == {"m"}
        assert st["operationState"]["syncResult"]["resources"][0]["status"] == "Synced"


def test_api_tokens_and_roles(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With tokens configured, reads need a token, syncs need the admin role."""
    git_repo.write({"a/cm.yaml": configmap("auth")})
    (tmp_path / "admin").write_text("admin-token")
    (tmp_path / "ro").write_text("ro-token")
    cfg = write_config(tmp_path, cluster, [application("guarded", git_repo.url, "a", namespace)])
    data = yaml.safe_load(cfg.read_text())
    data["apiTokens"] = [
        {"name": "admin", "tokenFile": str(tmp_path / "admin"), "role": "admin"},
        {"name": "ro", "tokenFile": str(tmp_path / "ro"), "role": "readonly"},
    ]
    cfg.write_text(yaml.safe_dump(data))
    with running(cfg) as d:
        assert d.api("/api/v1/applications").status_code == 401
        assert d.api("/api/v1/applications", token="ro-token").status_code == 200
        assert (
            d.api("/api/v1/applications/guarded/sync", method="POST", token="ro-token").status_code
            == 403
        )
        assert (
            d.api("/api/v1/applications/guarded/sync", method="POST", token="wrong").status_code
            == 401
        )
        r = d.api("/api/v1/applications/guarded/sync", method="POST", token="admin-token")
        assert r.status_code == 202
        assert "admin-token" not in d.logs() and "ro-token" not in d.logs()


def test_cli_client_lists_syncs_and_shows_history(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`gitopsd app list/get/sync --wait/history/diff` work against the running daemon."""
    git_repo.write({"a/1.yaml": configmap("c1", wave=0), "a/2.yaml": configmap("c2", wave=1)})
    app = application("manual", git_repo.url, "a", namespace, automated=False)
    cfg = write_config(tmp_path, cluster, [app])
    with running(cfg) as d:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [GITOPSD, "app", "--server", d.url, *args],
                capture_output=True,
                text=True,
                timeout=120,
                env=d.cli_env(),
            )

        wait_for(lambda: d.status("manual").get("sync"), timeout=30, what="first compare")
        out = cli("list")
        assert out.returncode == 0 and "manual" in out.stdout and "OutOfSync" in out.stdout
        diff = cli("diff", "manual")
        assert diff.returncode == 1 and "c1" in diff.stdout
        sync = cli("sync", "manual", "--wait")
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert "wave   0" in sync.stdout and "wave   1" in sync.stdout
        assert "Succeeded" in sync.stdout
        hist = cli("history", "manual", "-o", "json")
        assert json.loads(hist.stdout)[0]["id"] == 0
        got = cli("get", "manual", "-o", "yaml")
        assert yaml.safe_load(got.stdout)["status"]["sync"]["status"] == "Synced"
        assert cli("diff", "manual").returncode == 0


def test_watch_based_self_heal_within_seconds(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """While the daemon runs, a scaled Deployment and a deleted ConfigMap are restored within
    seconds by the drift watches (the poll interval is 10 minutes)."""
    git_repo.write(
        {"a/web.yaml": deployment("web", "nginx:1", replicas=2), "a/cm.yaml": configmap("settings")}
    )
    cfg = write_config(
        tmp_path,
        cluster,
        [application("healer", git_repo.url, "a", namespace)],
        reconcileInterval="600s",
    )
    with running(cfg) as d:
        wait_for(lambda: d.synced("healer"), timeout=30, what="initial sync")
        time.sleep(1)  # let the drift watches start
        cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=5")
        t0 = time.monotonic()
        wait_for(
            lambda: (
                (get(cluster, namespace, "deployment/web") or {}).get("spec", {}).get("replicas")
                == 2
            ),
            timeout=10,
            interval=0.1,
            what="scaled Deployment restored",
        )
        healed = time.monotonic() - t0
        cluster.kubectl("delete", "configmap/settings", "-n", namespace)
        wait_for(
            lambda: get(cluster, namespace, "configmap/settings") is not None,
            timeout=10,
            interval=0.1,
            what="deleted ConfigMap recreated",
        )
        assert healed < 5, f"self-heal took {healed:.1f}s"


def test_interrupted_sync_with_postsync_hook_resumes(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """SIGTERM while the Sync phase waits for health: after restart the operation runs again
    to the end, PostSync hook included, though the app already looks Synced."""
    post = (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: smoke\n  annotations:\n"
        "    argocd.argoproj.io/hook: PostSync\nspec:\n  template:\n    spec:\n"
        "      restartPolicy: Never\n      containers: [{name: m, image: 'busybox:1'}]\n"
    )
    git_repo.write({"a/web.yaml": deployment("web", "nginx:1", min_ready=6), "a/post.yaml": post})
    cfg = write_config(tmp_path, cluster, [application("post", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(
            lambda: get(cluster, namespace, "deployment/web") is not None,
            timeout=30,
            what="Sync phase applied",
        )
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(60) == 0, d.logs()
    assert get(cluster, namespace, "job/smoke") is None
    with running(cfg) as d:
        wait_for(
            lambda: (d.status("post").get("operationState") or {}).get("phase") == "Succeeded",
            timeout=60,
            what="interrupted operation finished",
        )
        assert get(cluster, namespace, "job/smoke") is not None


def test_self_heal_backs_off_when_something_keeps_reverting(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A controller that keeps changing a managed field is not answered every second:
    self-heal backs off (2s, 6s, 18s, ...), yet the drift is still healed in the end."""
    git_repo.write({"a/web.yaml": deployment("web", "nginx:1", replicas=1)})
    cfg = write_config(
        tmp_path,
        cluster,
        [application("fight", git_repo.url, "a", namespace)],
        reconcileInterval="600s",
    )
    with running(cfg) as d:
        wait_for(lambda: d.synced("fight"), timeout=30, what="initial sync")
        time.sleep(1)

        def syncs() -> float:
            for line in d.api("/metrics").text.splitlines():
                if line.startswith("argocd_app_sync_total{") and 'name="fight"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        before = syncs()
        end = time.monotonic() + 12
        while time.monotonic() < end:
            cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=4")
            time.sleep(0.5)
        heals = syncs() - before
        assert 1 <= heals <= 5, f"{heals} self-heal syncs in 12 s"
        wait_for(
            lambda: (
                (get(cluster, namespace, "deployment/web") or {}).get("spec", {}).get("replicas")
                == 1
            ),
            timeout=40,
            what="drift healed at last",
        )


def _lists(d: Daemon, kind: str) -> float:
    """LIST requests of `kind` the daemon sent so far (its own request metric)."""
    total = 0.0
    for line in d.api("/metrics").text.splitlines():
        mine = line.startswith("argocd_app_k8s_request_total{") and f'kind="{kind}"' in line
        if mine and 'verb="list"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_compares_read_the_watch_cache_and_see_their_own_writes(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Once the drift watches hold a namespace, refreshing every app there sends no LIST of it
    (compares read the watch cache), a hand edit is still seen and healed, and a sync's own
    writes are read back at once: one change in git is one sync, not a sync that looks
    OutOfSync to its own health check and runs again."""
    apps = [f"c{i}" for i in range(6)]
    git_repo.write({f"{a}/cm.yaml": configmap(f"cache-{a}") for a in apps})
    cfg = write_config(
        tmp_path, cluster, [application(a, git_repo.url, a, namespace) for a in apps]
    )
    with running(cfg) as d:
        wait_for(lambda: all(d.synced(a) for a in apps), timeout=60, what="all synced")
        time.sleep(1.5)  # the watches of the namespace are established
        before = _lists(d, "ConfigMap")
        stamps = {a: d.status(a).get("reconciledAt") for a in apps}
        for a in apps:
            assert d.api(f"/api/v1/applications/{a}/refresh", method="POST").status_code < 300
        wait_for(
            lambda: all(d.status(a).get("reconciledAt") != stamps[a] for a in apps),
            timeout=30,
            what="every app compared again",
        )
        assert _lists(d, "ConfigMap") == before, "compares LISTed instead of reading the cache"

        cluster.kubectl(
            "patch", "cm", "cache-c0", "-n", namespace, "-p", '{"data":{"key":"by-hand"}}'
        )
        wait_for(
            lambda: (get(cluster, namespace, "configmap/cache-c0") or {})["data"].get("key") == "x",
            timeout=30,
            what="the hand edit seen through the cache and healed",
        )

        history = len(d.status("c1").get("history") or [])
        git_repo.write({"c1/cm.yaml": configmap("cache-c1", data="v2")})
        d.api("/api/v1/applications/c1/refresh", method="POST")
        wait_for(
            lambda: (
                (get(cluster, namespace, "configmap/cache-c1") or {})["data"].get("key") == "v2"
                and d.synced("c1")
            ),
            timeout=30,
            what="the change synced",
        )
        time.sleep(2)
        assert len(d.status("c1").get("history") or []) == history + 1, "exactly one sync"
        assert d.synced("c1")
