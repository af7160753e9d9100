"""`make bench` (part 2): 100 apps on one repository, nothing changing, then webhook latency.

Measures the running daemon from outside: idle CPU (% of one core, from /proc utime+stime),
RSS (VmRSS / VmHWM), git requests per poll interval (from /metrics), and change-to-applied
latency via a webhook for a small app. Targets: idle CPU < 2%, RSS < 150 MB, git requests per
poll = number of repositories, webhook latency < 3 s.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GITOPSD = str(Path(sys.executable).parent / "gitopsd")

from tests.testenv.session import (  # noqa: E402
    delete_namespaces,
    ensure_cluster,
    stop_cluster,
    write_settings,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(cpu seconds, rss MB, peak rss MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    return cpu, rss, hwm


def git_requests(url: str, kind: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("argocd_git_request_total{") and f'request_type="{kind}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def kube_client(kubeconfig: Path) -> httpx.Client:
    cfg = yaml.safe_load(kubeconfig.read_text())
    d = Path(tempfile.mkdtemp(prefix="bench-kc-"))
    for name, key, src in (
        ("ca", "certificate-authority-data", cfg["clusters"][0]["cluster"]),
        ("crt", "client-certificate-data", cfg["users"][0]["user"]),
        ("key", "client-key-data", cfg["users"][0]["user"]),
    ):
        (d / name).write_bytes(base64.b64decode(src[key]))
    ctx = ssl.create_default_context(cafile=str(d / "ca"))
    ctx.load_cert_chain(str(d / "crt"), str(d / "key"))
    return httpx.Client(base_url=cfg["clusters"][0]["cluster"]["server"], verify=ctx, timeout=10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--apps", type=int, default=100)
    p.add_argument("--interval", type=int, default=20, help="reconcileInterval seconds")
    p.add_argument("--idle", type=int, default=60, help="seconds of idle measurement")
    p.add_argument("--webhooks", type=int, default=5)
    args = p.parse_args()
    kubeconfig, started = ensure_cluster()
    work = Path(tempfile.mkdtemp(prefix="gitopsd-bench-daemon-"))
    ns = f"bench-apps-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x.invalid",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x.invalid",
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        repo = work / "repo"
        repo.mkdir()
        for i in range(args.apps):
            (repo / f"app-{i:03d}").mkdir()
            (repo / f"app-{i:03d}" / "cm.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": f"cm-{i:03d}"},
                        "data": {"version": "0"},
                    }
                )
            )
        for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
            subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
        bare = work / "repo.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
        subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=repo, check=True)
        git_port = free_port()
        gitd = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={work}",
                "--listen=127.0.0.1",
                f"--port={git_port}",
                str(work),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        repo_url = f"git://127.0.0.1:{git_port}/repo.git"
        (work / "apps").mkdir()
        docs = []
        for i in range(args.apps):
            docs.append(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": {"name": f"app-{i:03d}", "namespace": "argocd"},
                    "spec": {
                        "project": "default",
                        "source": {
                            "repoURL": repo_url,
                            "targetRevision": "main",
                            "path": f"app-{i:03d}",
                        },
                        "destination": {
                            "server": "https://kubernetes.default.svc",
                            "namespace": ns,
                        },
                        "syncPolicy": {
                            "automated": {"prune": True, "selfHeal": True},
                            "syncOptions": ["CreateNamespace=true"],
                        },
                    },
                }
            )
        (work / "apps" / "apps.yaml").write_text(yaml.safe_dump_all(docs))
        port = free_port()
        write_settings(
            work / "gitopsd.yaml",
            kubeconfig=kubeconfig,
            work=work,
            listen=f"127.0.0.1:{port}",
            syncWaveDelay="0s",
            reconcileInterval=f"{args.interval}s",
            reconcileJitter=f"{args.interval // 4}s",
        )
        url = f"http://127.0.0.1:{port}"
        log = (work / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [
                GITOPSD,
                "run",
                "-c",
                str(work / "gitopsd.yaml"),
                "--log-level",
                os.environ.get("BENCH_LOG_LEVEL", "warning"),
            ],
            stdout=log,
            stderr=log,
        )
        print(f"bench: {args.apps} apps on one repository; waiting for all to sync", flush=True)
        t0 = time.monotonic()
        while True:
            try:
                items = httpx.get(url + "/api/v1/applications", timeout=10).json()["items"]
                synced = sum(
                    1 for a in items if (a["status"].get("sync") or {}).get("status") == "Synced"
                )
                if synced == args.apps:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() - t0 > 600 or proc.poll() is not None:
                raise SystemExit("apps did not all sync; see " + str(work / "daemon.log"))
            time.sleep(1)
        print(f"bench: all {args.apps} apps synced in {time.monotonic() - t0:.1f}s", flush=True)
        time.sleep(args.interval)  # let the start-up burst settle
        cpu0, _, _ = proc_stats(proc.pid)
        ls0 = git_requests(url, "ls-remote")
        fetch0 = git_requests(url, "fetch")
        w0 = time.monotonic()
        time.sleep(args.idle)
        cpu1, rss, hwm = proc_stats(proc.pid)
        wall = time.monotonic() - w0
        ls1 = git_requests(url, "ls-remote")
        fetch1 = git_requests(url, "fetch")
        cpu_pct = 100 * (cpu1 - cpu0) / wall
        polls = wall / args.interval
        ls_per_poll = (ls1 - ls0) / polls

        kube = kube_client(kubeconfig)
        latencies = []
        for n in range(1, args.webhooks + 1):
            (repo / "app-000" / "cm.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "cm-000"},
                        "data": {"version": str(n)},
                    }
                )
            )
            subprocess.run(["git", "commit", "-qam", f"v{n}"], cwd=repo, check=True, env=env)
            subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=repo, check=True)
            t = time.monotonic()
            httpx.post(
                url + "/api/webhook",
                timeout=10,
                headers={"X-GitHub-Event": "push"},
                json={"ref": "refs/heads/main", "repository": {"clone_url": repo_url}},
            )
            while time.monotonic() - t < 30:
                cm = kube.get(f"/api/v1/namespaces/{ns}/configmaps/cm-000").json()
                if cm.get("data", {}).get("version") == str(n):
                    break
                time.sleep(0.02)
            latencies.append(time.monotonic() - t)
        print(f"\n{'measure':<44} {'value':>10}  target")
        print(
            f"{'idle CPU (% of one core, ' + str(args.idle) + 's window)':<44} "
            f"{cpu_pct:>9.2f}%  < 2%  {'OK' if cpu_pct < 2 else 'MISSED'}"
        )
        print(
            f"{'RSS now / peak (MB)':<44} {rss:>6.0f}/{hwm:<4.0f}  < 150 "
            f"{'OK' if hwm < 150 else 'MISSED'}"
        )
        print(
            f"{'git ls-remote per poll interval (1 repo)':<44} {ls_per_poll:>10.2f}  = 1  "
            f"{'OK' if ls_per_poll <= 1.05 else 'MISSED'}"
        )
        print(f"{'git fetches while idle':<44} {fetch1 - fetch0:>10.0f}  = 0")
        print(
            f"{'webhook change-to-applied latency median/max s':<44} "
            f"{statistics.median(latencies):>5.2f}/{max(latencies):<4.2f}  < 3 s  "
            f"{'OK' if max(latencies) < 3 else 'MISSED'}"
        )
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        if "gitd" in locals():
            gitd.terminate()
        delete_namespaces(kubeconfig, ns)
        if os.environ.get("BENCH_KEEP"):
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if started:
            stop_cluster()


if __name__ == "__main__":
    raise SystemExit(main())
