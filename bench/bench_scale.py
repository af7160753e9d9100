"""`make bench` (part 3, issue 13): many apps, one replica against three.

1,000 apps x 10 objects (7 ConfigMaps, 2 Services, 1 Deployment with replicas 0, as in
bench_sync, so health does not wait on simulated pods) on 10 git repositories served by
`git daemon`, against the local control plane. For one replica and then three (processes on
this machine, `settings.sharding` with the state in the cluster) it reports:

- cold convergence: from start until every app is Synced;
- the baseline on the same cluster: `bench/ssa`, a minimal client that only applies the same
  10,000 objects (the ceiling of what the API server takes);
- steady state over an idle window: CPU (% of one core) and RSS per replica, git ls-remote
  requests per poll interval (target: one per repository), API requests per reconcile (the API
  server's own apiserver_request_total over gitopsd's argocd_app_reconcile count);
- three replicas: the failover time after `kill -9` of one (until the survivors claim every one
  of its apps).

Targets: cold <= 180 s with one replica; idle RSS < 300 MB; idle CPU < 5% of a core.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GITOPSD = str(Path(sys.executable).parent / "gitopsd")

from bench.bench_daemon import free_port, git_requests, proc_stats  # noqa: E402
from bench.bench_sync import build_ceiling, ceiling_job  # noqa: E402
from tests.testenv.session import delete_namespaces, ensure_cluster, write_settings  # noqa: E402

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@x.invalid",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@x.invalid",
}
REQUESTS = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$")


def app_objects(i: int) -> list[dict[str, Any]]:
    """The 10 objects of app `i`."""
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"a{i:04d}-cm{k}"},
            "data": {"app": str(i), "payload": "x" * 200},
        }
        for k in range(7)
    ]
    out += [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"a{i:04d}-svc{k}"},
            "spec": {"selector": {"app": f"a{i:04d}"}, "ports": [{"port": 80 + k}]},
        }
        for k in range(2)
    ]
    out.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"a{i:04d}-web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": f"a{i:04d}"}},
                "template": {
                    "metadata": {"labels": {"app": f"a{i:04d}"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
                },
            },
        }
    )
    return out


def kubectl(kubeconfig: Path, *args: str) -> str:
    r = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {r.stderr[-1000:]}")
    return r.stdout


def api_requests(kubeconfig: Path) -> int:
    """Every request the API server counted for the kinds the apps hold (reads and writes)."""
    total = 0
    for line in kubectl(kubeconfig, "get", "--raw", "/metrics").splitlines():
        m = REQUESTS.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("resource") in ("configmaps", "services", "deployments"):
            total += int(float(m.group(2)))
    return total


def reconciles(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("argocd_app_reconcile_count")
    )


def make_repos(work: Path, apps: int, repos: int) -> list[str]:
    """`repos` bare repositories under work/git, app i in repo i % repos; their git:// URLs
    once `git daemon` serves them (port filled in by the caller)."""
    names = []
    for r in range(repos):
        src = work / "src" / f"repo{r}"
        src.mkdir(parents=True)
        for i in range(r, apps, repos):
            d = src / f"a{i:04d}"
            d.mkdir()
            (d / "objects.yaml").write_text(yaml.safe_dump_all(app_objects(i)))
        for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
            subprocess.run(["git", *cmd], cwd=src, check=True, env=ENV)
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(src), str(work / "git" / f"repo{r}.git")],
            check=True,
        )
        names.append(f"repo{r}.git")
    return names


def app_docs(apps: int, repos: int, urls: list[str], namespaces: list[str]) -> list[Any]:
    return [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": f"a{i:04d}", "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {
                    "repoURL": urls[i % repos],
                    "targetRevision": "main",
                    "path": f"a{i:04d}",
                },
                "destination": {
                    "server": "https://kubernetes.default.svc",
                    "namespace": namespaces[i % repos],
                },
                "syncPolicy": {
                    "automated": {"prune": True, "selfHeal": True},
                    "syncOptions": ["CreateNamespace=true"],
                },
            },
        }
        for i in range(apps)
    ]


def synced(url: str) -> int:
    try:
        items = httpx.get(url + "/api/v1/applications", timeout=30).json()["items"]
    except (httpx.HTTPError, KeyError, ValueError):
        return -1
    return sum(1 for a in items if (a["status"].get("sync") or {}).get("status") == "Synced")


def sharding(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/api/v1/sharding", timeout=10).json())


def run(
    args: argparse.Namespace, kubeconfig: Path, work: Path, urls: list[str], replicas: int
) -> dict[str, Any]:
    """One round: `replicas` daemons from cold to converged, then idle, then (with several) a
    kill -9 of one."""
    tag = uuid.uuid4().hex[:5]
    namespaces = [f"scale-{tag}-{r}" for r in range(args.repos)]
    base = work / f"r{replicas}-{tag}"
    (base / "apps").mkdir(parents=True)
    (base / "apps" / "apps.yaml").write_text(
        yaml.safe_dump_all(app_docs(args.apps, args.repos, urls, namespaces))
    )
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for n in range(replicas):
            home = base / f"m{n}"
            home.mkdir()
            (home / "apps").symlink_to(base / "apps")
            port = free_port()
            extra: dict[str, Any] = {}
            if replicas > 1:
                extra = {
                    "stateStore": "kubernetes",
                    "sharding": {
                        "enabled": True,
                        "namespace": f"scale-{tag}-leases",
                        "memberId": f"m{n}",
                    },
                }
            write_settings(
                home / "gitopsd.yaml",
                kubeconfig=kubeconfig,
                work=home,
                listen=f"127.0.0.1:{port}",
                syncWaveDelay="0s",
                reconcileInterval=f"{args.interval}s",
                reconcileJitter=f"{args.interval // 4}s",
                maxConcurrentSyncs=10,
                **extra,
            )
            log = (home / "daemon.log").open("wb")
            proc = subprocess.Popen(
                [GITOPSD, "run", "-c", str(home / "gitopsd.yaml"), "--log-level", "warning"],
                stdout=log,
                stderr=log,
            )
            procs[f"m{n}"] = (proc, f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        last = -1
        while True:
            done = max(synced(u) for _, u in procs.values())  # each shows every app
            if done != last:
                print(f"  +{time.monotonic() - t0:6.1f}s  {done}/{args.apps} Synced", flush=True)
                last = done
            if done == args.apps:
                break
            if time.monotonic() - t0 > args.timeout or any(
                p.poll() is not None for p, _ in procs.values()
            ):
                raise SystemExit(f"no convergence; logs under {base}")
            time.sleep(2)
        cold = time.monotonic() - t0
        time.sleep(min(args.interval, 30))  # the start-up burst settles
        before = {m: proc_stats(p.pid)[0] for m, (p, _) in procs.items()}
        ls0 = sum(git_requests(u, "ls-remote") for _, u in procs.values())
        rec0 = sum(reconciles(u) for _, u in procs.values())
        req0 = api_requests(kubeconfig)
        w0 = time.monotonic()
        time.sleep(args.idle)
        wall = time.monotonic() - w0
        after = {m: proc_stats(p.pid) for m, (p, _) in procs.items()}
        ls1 = sum(git_requests(u, "ls-remote") for _, u in procs.values())
        rec1 = sum(reconciles(u) for _, u in procs.values())
        req1 = api_requests(kubeconfig)
        result: dict[str, Any] = {
            "replicas": replicas,
            "cold": cold,
            "cpu": {m: 100 * (after[m][0] - before[m]) / wall for m in procs},
            "rss": {m: after[m][1] for m in procs},
            "ls_per_poll": (ls1 - ls0) / (wall / args.interval),
            "requests_per_reconcile": (req1 - req0) / max(1.0, rec1 - rec0),
            "reconciles": rec1 - rec0,
        }
        if replicas > 1:
            victim = "m0"
            owned = set(sharding(procs[victim][1])["owned"])
            procs[victim][0].send_signal(signal.SIGKILL)
            procs[victim][0].wait(10)
            k0 = time.monotonic()
            survivors = [u for m, (_, u) in procs.items() if m != victim]
            while time.monotonic() - k0 < 120:
                claimed = set().union(*(set(sharding(u)["claimed"]) for u in survivors))
                if owned <= claimed:
                    break
                time.sleep(0.5)
            result["failover"] = time.monotonic() - k0
            result["moved"] = len(owned)
        return result
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        delete_namespaces(kubeconfig, *namespaces, f"scale-{tag}-leases")


def ceiling(kubeconfig: Path, work: Path, apps: int) -> float:
    """bench/ssa applying the same objects into one namespace: the API server's pace."""
    ssa = build_ceiling(work)
    ns = f"scale-ceiling-{uuid.uuid4().hex[:5]}"
    kubectl(kubeconfig, "create", "namespace", ns)
    objs = [o for i in range(apps) for o in app_objects(i)]
    ceiling_job(kubeconfig, objs, ns, work / "job.json")
    t = time.monotonic()
    out = subprocess.run([str(ssa), str(work / "job.json")], capture_output=True, text=True)
    wall = time.monotonic() - t
    delete_namespaces(kubeconfig, ns)
    data = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    if data.get("errors"):
        raise SystemExit(f"ceiling errors: {data}")
    return wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--apps", type=int, default=1000)
    p.add_argument("--repos", type=int, default=10)
    p.add_argument("--replicas", default="1,3")
    p.add_argument(
        "--interval", type=int, default=180, help="reconcileInterval seconds (gitopsd's default)"
    )
    p.add_argument("--idle", type=int, default=120, help="seconds of idle measurement")
    p.add_argument("--timeout", type=int, default=900)
    args = p.parse_args()
    kubeconfig, _ = ensure_cluster()
    work = Path(tempfile.mkdtemp(prefix="gitopsd-bench-scale-"))
    names = make_repos(work, args.apps, args.repos)
    port = free_port()
    gitd = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={work / 'git'}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(work / "git"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    urls = [f"git://127.0.0.1:{port}/{n}" for n in names]
    try:
        print(f"bench: {args.apps} apps x 10 objects on {args.repos} repositories", flush=True)
        ceil = ceiling(kubeconfig, work, args.apps)
        print(f"  baseline: bench/ssa applies the {args.apps * 10} objects in {ceil:.1f}s")
        results = []
        for n in (int(x) for x in args.replicas.split(",")):
            print(f"bench: {n} replica(s)", flush=True)
            results.append(run(args, kubeconfig, work, urls, n))
        print(f"\n{'measure':<52} {'value':>14}  target")
        ok = True
        for r in results:
            n = r["replicas"]
            cpu = max(r["cpu"].values())
            rss = max(r["rss"].values())
            cold_ok = n > 1 or r["cold"] <= 180
            ok &= cold_ok and rss < 300 and cpu < 5
            print(
                f"{f'{n} replica(s): cold convergence s (x baseline)':<52} "
                f"{r['cold']:>7.1f} ({r['cold'] / ceil:4.1f}x)  "
                + ("<= 180 " + ("OK" if cold_ok else "MISSED") if n == 1 else "")
            )
            print(
                f"{f'{n} replica(s): idle CPU % of a core (max per replica)':<52} {cpu:>14.2f}  "
                f"< 5 {'OK' if cpu < 5 else 'MISSED'}"
            )
            print(
                f"{f'{n} replica(s): RSS MB (max per replica)':<52} {rss:>14.0f}  "
                f"< 300 {'OK' if rss < 300 else 'MISSED'}"
            )
            print(
                f"{f'{n} replica(s): git ls-remote per poll (all replicas)':<52} "
                f"{r['ls_per_poll']:>14.1f}  ~{args.repos} x replicas"
            )
            print(
                f"{f'{n} replica(s): API requests per reconcile':<52} "
                f"{r['requests_per_reconcile']:>14.2f}  ({r['reconciles']:.0f} reconciles)"
            )
            if "failover" in r:
                what = f"{n} replicas: failover s after kill -9 ({r['moved']} apps)"
                print(f"{what:<52} {r['failover']:>14.1f}  < 20")
        return 0 if ok else 1
    finally:
        gitd.terminate()


if __name__ == "__main__":
    raise SystemExit(main())
