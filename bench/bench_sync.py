"""`make bench`: a 1,000-object app synced by whole `gitopsd run --once` processes, next to
`kubectl apply --server-side` and a minimal server-side-apply client (the ceiling).

Three clients apply the same rendered objects into fresh namespaces of the same local control
plane, one after the other, each started once the cluster is quiet:

- `kubectl apply --server-side -f all.yaml` (what people do by hand);
- `bench/ssa` (Go, standard library only): nothing but server-side apply, 32 requests in flight
  over one HTTP/2 connection; no discovery, dry-run, diff, inventory or status. The ceiling;
- `gitopsd run --once` cold (empty state and cache) and then again (no-op), whole processes.

Each is timed from the outside (wall) and charged its own CPU seconds (user + system, from the
child's rusage). Requests are counted by the API server itself (`apiserver_request_total` for
the app's resource types, dry-runs apart), so a "no-op" is a no-op as the server saw it.

Inside one process the bench then measures the daemon's own no-op paths on the synced app: a
full reconcile (LIST + compare) and the watch-vouched one (the daemon's watches saw no event).

Targets (issue 11): gitopsd cold <= 3x the ceiling and >= 10x faster than kubectl; whole-process
no-op <= 10% of the cold sync with zero writes; in-daemon vouched no-op < 50 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon import settings  # noqa: E402
from daemon.engine import Engine  # noqa: E402
from daemon.status.logs import setup_logging  # noqa: E402
from tests.testenv.session import (  # noqa: E402
    delete_namespaces,
    ensure_cluster,
    stop_cluster,
    write_settings,
)

PLURAL = {"ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments"}
GROUP_PATH = {"ConfigMap": "/api/v1", "Service": "/api/v1", "Deployment": "/apis/apps/v1"}
METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$")


def objects(n_cm: int, n_svc: int, n_dep: int) -> list[dict[str, Any]]:
    """The benchmark app: ConfigMaps with a 200-byte payload, Services, Deployments (replicas 0
    so their health does not wait on pods the node simulator would have to start)."""
    out: list[dict[str, Any]] = []
    for i in range(n_cm):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:04d}"},
                "data": {"index": str(i), "payload": "x" * 200},
            }
        )
    for i in range(n_svc):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc-{i:04d}"},
                "spec": {
                    "selector": {"app": f"d-{i:04d}"},
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            }
        )
    for i in range(n_dep):
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"dep-{i:04d}"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": f"d-{i:04d}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"d-{i:04d}"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
                    },
                },
            }
        )
    return out


class Cluster:
    """kubectl and the API server's own request counters for the bench's cluster."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True
        )
        if check and r.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {r.stderr[-2000:]}")
        return r.stdout

    def requests(self) -> Counter[str]:
        """apiserver_request_total for the bench's resource types, as `VERB` or `VERB dry-run`."""
        out: Counter[str] = Counter()
        for line in self.kubectl("get", "--raw", "/metrics").splitlines():
            m = METRIC.match(line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("resource") not in PLURAL.values() or labels.get("subresource"):
                continue
            verb = labels["verb"] + (" dry-run" if labels.get("dry_run") else "")
            out[verb] += int(float(m.group(2)))
        return out

    def settle(self, timeout: float = 300) -> None:
        """Wait until no namespace is terminating (earlier runs' garbage collection) and give
        the controllers a moment, so each measurement starts on a quiet cluster."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Terminating" not in self.kubectl("get", "ns", "--no-headers"):
                break
            time.sleep(2)
        time.sleep(3)


def timed(cluster: Cluster, argv: list[str]) -> dict[str, Any]:
    """Run one whole process; its wall time, CPU seconds, peak RSS and the API requests."""
    before = cluster.requests()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    after = cluster.requests()
    after.subtract(before)
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,
        "requests": {k: v for k, v in after.items() if v > 0},
        "rc": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
    }


def build_ceiling(work: Path) -> Path:
    """Build bench/ssa (Go standard library only) into the work dir."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise SystemExit("make bench needs Go (https://go.dev/dl/) to build bench/ssa, the ceiling")
    out = work / "ssa"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=ROOT / "bench" / "ssa", check=True, env=env
    )
    return out


def ceiling_job(kubeconfig: Path, objs: list[dict[str, Any]], ns: str, path: Path) -> None:
    """The ceiling's input: server, credentials and one apply request per object."""
    kc = yaml.safe_load(kubeconfig.read_text())
    ctx_name = kc.get("current-context") or kc["contexts"][0]["name"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cl = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])

    def pem(d: dict[str, Any], key: str) -> str:
        if f"{key}-data" in d:
            return base64.b64decode(d[f"{key}-data"]).decode()
        return Path(d[key]).read_text() if key in d else ""

    requests = [
        {
            "path": f"{GROUP_PATH[o['kind']]}/namespaces/{ns}/{PLURAL[o['kind']]}/"
            f"{o['metadata']['name']}",
            "body": json.dumps({**o, "metadata": {**o["metadata"], "namespace": ns}}),
        }
        for o in objs
    ]
    path.write_text(
        json.dumps(
            {
                "server": cl["server"],
                "ca": pem(cl, "certificate-authority"),
                "cert": pem(user, "client-certificate"),
                "key": pem(user, "client-key"),
                "token": user.get("token", ""),
                "inflight": 32,
                "requests": requests,
            }
        )
    )


async def in_daemon(cfg_path: Path) -> dict[str, float]:
    """The daemon's no-op paths on an already synced app, timed inside one process."""
    cfg = settings.load(cfg_path)
    app = cfg.applications[0]
    out: dict[str, float] = {}
    async with Engine.open(cfg) as engine:
        client = await engine.client_for(app)
        await client.discover()
        await engine.reconciler.reconcile(app)  # warm: state loaded, revision resolved
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            status = await engine.reconciler.reconcile(app)
            runs.append(time.perf_counter() - t0)
            if status["sync"]["status"] != "Synced":
                raise SystemExit(f"in-daemon no-op: app is {status['sync']['status']}")
        out["full"] = sorted(runs)[len(runs) // 2]
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            quick = await engine.reconciler.unchanged(app, max_age=180)
            runs.append(time.perf_counter() - t0)
            if quick is None:
                raise SystemExit("in-daemon vouched no-op: the quick path refused a synced app")
        out["vouched"] = sorted(runs)[len(runs) // 2]
    return out


def fmt_requests(reqs: dict[str, int]) -> str:
    writes = sum(v for k, v in reqs.items() if not k.startswith(("GET", "LIST", "WATCH")))
    reads = sum(v for k, v in reqs.items() if k.startswith(("GET", "LIST")))
    return f"{reads:>6} {writes:>7}  " + ", ".join(f"{k} {v}" for k, v in sorted(reqs.items()))


def scenario(
    cluster: Cluster, work: Path, ssa: Path, name: str, counts: tuple[int, int, int]
) -> bool:
    run = uuid.uuid4().hex[:6]
    ns = {k: f"bench-{k}-{run}" for k in ("kubectl", "ceiling", "gitopsd")}
    objs = objects(*counts)
    base = work / name
    repo = base / "repo"
    (repo / "app").mkdir(parents=True)
    manifests = repo / "app" / "all.yaml"
    manifests.write_text(yaml.safe_dump_all(objs))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x.invalid",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x.invalid",
    }
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    print(
        f"\n== {name}: {len(objs)} objects ({counts[0]} ConfigMaps, {counts[1]} Services, "
        f"{counts[2]} Deployments)",
        flush=True,
    )
    try:
        rows: list[tuple[str, dict[str, Any]]] = []
        cluster.kubectl("create", "namespace", ns["kubectl"])
        cluster.settle()
        rows.append(
            (
                "kubectl apply --server-side",
                timed(
                    cluster,
                    [
                        "kubectl",
                        f"--kubeconfig={cluster.kubeconfig}",
                        "apply",
                        "--server-side",
                        "-n",
                        ns["kubectl"],
                        "-f",
                        str(manifests),
                    ],
                ),
            )
        )
        cluster.kubectl("create", "namespace", ns["ceiling"])
        ceiling_job(cluster.kubeconfig, objs, ns["ceiling"], base / "job.json")
        cluster.settle()
        rows.append(("ceiling (bench/ssa)", timed(cluster, [str(ssa), str(base / "job.json")])))

        app = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": f"bench-{run}", "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {"repoURL": f"file://{repo}", "targetRevision": "main", "path": "app"},
                "destination": {
                    "server": "https://kubernetes.default.svc",
                    "namespace": ns["gitopsd"],
                },
                "syncPolicy": {
                    "automated": {"prune": True, "selfHeal": True},
                    "syncOptions": ["CreateNamespace=true"],
                },
            },
        }
        (base / "apps").mkdir()
        (base / "apps" / "bench.yaml").write_text(yaml.safe_dump(app))
        write_settings(
            base / "gitopsd.yaml", kubeconfig=cluster.kubeconfig, work=base, syncWaveDelay="0s"
        )
        gitopsd = [
            str(ROOT / ".venv" / "bin" / "gitopsd"),
            "run",
            "--once",
            "-c",
            str(base / "gitopsd.yaml"),
            "--log-level",
            "warning",
        ]
        if not Path(gitopsd[0]).exists():
            gitopsd[0:1] = [sys.executable, "-m", "daemon"]
        # Like the others, into an existing namespace: every object is dry-run, then applied.
        cluster.kubectl("create", "namespace", ns["gitopsd"])
        cluster.settle()
        rows.append(("gitopsd run --once (cold)", timed(cluster, gitopsd)))
        cluster.settle()
        rows.append(("gitopsd run --once (no-op)", timed(cluster, gitopsd)))
        for label, r in rows:
            if r["rc"] != 0:
                raise SystemExit(
                    f"{label} failed (exit {r['rc']}):\n{r['stdout']}\n{r['stderr'][-3000:]}"
                )
        inside = anyio.run(in_daemon, base / "gitopsd.yaml")

        print(
            f"{'run':<30} {'wall s':>7} {'CPU s':>6} {'RSS MB':>7} {'reads':>6} {'writes':>7}  "
            "API server's count"
        )
        for label, r in rows:
            print(
                f"{label:<30} {r['wall']:>7.2f} {r['cpu']:>6.2f} {r['rss']:>7.0f} "
                f"{fmt_requests(r['requests'])}"
            )
        res = dict(rows)
        kub, ceil = res["kubectl apply --server-side"], res["ceiling (bench/ssa)"]
        cold, noop = res["gitopsd run --once (cold)"], res["gitopsd run --once (no-op)"]
        noop_writes = sum(
            v for k, v in noop["requests"].items() if not k.startswith(("GET", "LIST", "WATCH"))
        )
        checks = [
            (
                "gitopsd cold / ceiling",
                cold["wall"] / ceil["wall"],
                "<= 3",
                cold["wall"] <= 3 * ceil["wall"],
            ),
            (
                "kubectl / gitopsd cold",
                kub["wall"] / cold["wall"],
                ">= 10",
                kub["wall"] >= 10 * cold["wall"],
            ),
            (
                "no-op / cold (whole process)",
                noop["wall"] / cold["wall"],
                "<= 0.1",
                noop["wall"] <= 0.1 * cold["wall"],
            ),
            ("no-op writes", noop_writes, "= 0", noop_writes == 0),
            ("in-daemon no-op, full compare (ms)", inside["full"] * 1000, "(info)", True),
            (
                "in-daemon no-op, watch-vouched (ms)",
                inside["vouched"] * 1000,
                "< 50",
                inside["vouched"] < 0.05,
            ),
        ]
        print()
        for label, value, target, ok in checks:
            print(f"{label:<38} {value:>9.3f}  target {target:<7} {'OK' if ok else 'MISSED'}")
        print(f"{'CPU: gitopsd cold / ceiling':<38} {cold['cpu'] / max(ceil['cpu'], 1e-9):>9.2f}")
        return all(ok for *_, ok in checks)
    finally:
        delete_namespaces(cluster.kubeconfig, *ns.values())


SCENARIOS = {"configmaps": (1000, 0, 0), "mixed": (600, 300, 100)}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    args = p.parse_args()
    setup_logging(level="warning", fmt="console")
    kubeconfig, started = ensure_cluster()
    work = Path(tempfile.mkdtemp(prefix="gitopsd-bench-"))
    cluster = Cluster(kubeconfig)
    try:
        ssa = build_ceiling(work)
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        results = [scenario(cluster, work, ssa, n, SCENARIOS[n]) for n in names]
        return 0 if all(results) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started:
            stop_cluster()


if __name__ == "__main__":
    raise SystemExit(main())
