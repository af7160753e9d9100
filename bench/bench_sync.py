"""`make bench`: cold sync and no-op resync of a 1,000-object app vs `kubectl apply --server-side`.

Both run in this process's session against the same local control plane and the same rendered
files, each into a fresh namespace. Prints wall time, API requests (reads, writes) and peak RSS.
Targets: cold sync >= 3x faster than kubectl; no-op resync makes zero writes and takes < 1/10
of the cold sync.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

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

WRITE_VERBS = {"apply", "apply (dry run)", "create", "replace", "patch", "delete"}


def objects(n_cm: int, n_svc: int, n_dep: int) -> list[dict]:
    out: list[dict] = []
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
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": f"d-{i:04d}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"d-{i:04d}"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
                    },
                },
            }
        )
    return out


def kubectl_baseline(kubeconfig: Path, manifests: Path, ns: str) -> dict[str, float]:
    subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "create", "namespace", ns],
        check=True,
        capture_output=True,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={kubeconfig}",
            "apply",
            "--server-side",
            "-n",
            ns,
            "-f",
            str(manifests),
            "-v=6",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"kubectl apply failed: {r.stderr[-2000:]}")
    verbs = Counter(m.group(1) for m in re.finditer(r'"Response" verb="(\w+)"', r.stderr))
    if not verbs:
        verbs = Counter(
            m.group(1) for m in re.finditer(r"\b(GET|PATCH|POST|PUT|DELETE) https", r.stderr)
        )
    reads = sum(v for k, v in verbs.items() if k.upper() == "GET")
    writes = sum(v for k, v in verbs.items() if k.upper() != "GET")
    rss = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return {"wall": wall, "reads": reads, "writes": writes, "rss": rss}


async def gitopsd_runs(cfg_path: Path) -> tuple[dict[str, float], dict[str, float]]:
    cfg = settings.load(cfg_path)
    async with Engine.open(cfg) as engine:
        app = cfg.applications[0]
        client = await engine.client_for(app)
        await client.discover()
        results = []
        for label in ("cold", "noop"):
            before = Counter(client.requests)
            t0 = time.perf_counter()
            status = await engine.reconciler.reconcile(app)
            wall = time.perf_counter() - t0
            delta = Counter(client.requests)
            delta.subtract(before)
            op = status.get("operationState") or {}
            if label == "cold" and op.get("phase") != "Succeeded":
                raise SystemExit(f"cold sync failed: {op.get('message')}")
            if status["sync"]["status"] != "Synced":
                raise SystemExit(f"{label}: app is {status['sync']['status']}")
            writes = sum(v for k, v in delta.items() if k in WRITE_VERBS)
            reads = sum(v for k, v in delta.items() if k not in WRITE_VERBS and k != "discover")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            results.append(
                {
                    "wall": wall,
                    "reads": reads,
                    "writes": writes,
                    "rss": rss,
                    "dry_runs": delta.get("apply (dry run)", 0),
                }
            )
    return results[0], results[1]


def settle(kubeconfig: Path, timeout: float = 300) -> None:
    """Wait until no namespace is terminating (earlier runs' garbage collection) and give the
    controllers a moment, so each measurement starts on a quiet cluster."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "get", "ns", "--no-headers"],
            capture_output=True,
            text=True,
        ).stdout
        if "Terminating" not in out:
            break
        time.sleep(2)
    time.sleep(3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configmaps", type=int, default=600)
    p.add_argument("--services", type=int, default=300)
    p.add_argument("--deployments", type=int, default=100)
    args = p.parse_args()
    setup_logging(level="warning", fmt="console")
    kubeconfig, started = ensure_cluster()
    work = Path(tempfile.mkdtemp(prefix="gitopsd-bench-"))
    run = uuid.uuid4().hex[:6]
    ns_kubectl, ns_gitopsd = f"bench-kubectl-{run}", f"bench-gitopsd-{run}"
    try:
        objs = objects(args.configmaps, args.services, args.deployments)
        repo = work / "repo"
        (repo / "app").mkdir(parents=True)
        (repo / "app" / "all.yaml").write_text(yaml.safe_dump_all(objs))
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
            f"bench: {len(objs)} objects ({args.configmaps} ConfigMaps, {args.services} "
            f"Services, {args.deployments} Deployments)",
            flush=True,
        )

        settle(kubeconfig)
        base = kubectl_baseline(kubeconfig, repo / "app" / "all.yaml", ns_kubectl)
        # Let the controllers finish the baseline's rollout so it does not load the next run.
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "wait",
                "-n",
                ns_kubectl,
                "--for=condition=Available",
                "deployment",
                "--all",
                "--timeout=300s",
            ],
            capture_output=True,
        )
        settle(kubeconfig)

        app = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": f"bench-{run}", "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {"repoURL": f"file://{repo}", "targetRevision": "main", "path": "app"},
                "destination": {
                    "server": "https://kubernetes.default.svc",
                    "namespace": ns_gitopsd,
                },
                "syncPolicy": {
                    "automated": {"prune": True, "selfHeal": True},
                    "syncOptions": ["CreateNamespace=true"],
                },
            },
        }
        (work / "apps").mkdir()
        (work / "apps" / "bench.yaml").write_text(yaml.safe_dump(app))
        write_settings(work / "gitopsd.yaml", kubeconfig=kubeconfig, work=work, syncWaveDelay="0s")
        cold, noop = anyio.run(gitopsd_runs, work / "gitopsd.yaml")

        rows = [
            ("kubectl apply --server-side", base),
            ("gitopsd cold sync", cold),
            ("gitopsd no-op resync", noop),
        ]
        print(f"\n{'run':<30} {'wall s':>8} {'reads':>7} {'writes':>7} {'peak RSS MB':>12}")
        for name, r in rows:
            print(
                f"{name:<30} {r['wall']:>8.2f} {r['reads']:>7.0f} {r['writes']:>7.0f} "
                f"{r['rss']:>12.1f}"
            )
        speedup = base["wall"] / cold["wall"]
        noop_ratio = noop["wall"] / cold["wall"]
        print(
            f"\ncold sync speed-up vs kubectl: {speedup:.2f}x (target >= 3x) "
            f"{'OK' if speedup >= 3 else 'MISSED'}"
        )
        print(
            f"no-op resync / cold sync: {noop_ratio:.3f} (target < 0.1) "
            f"{'OK' if noop_ratio < 0.1 else 'MISSED'}; writes: {noop['writes']:.0f} "
            f"(target 0) {'OK' if noop['writes'] == 0 else 'MISSED'}"
        )
        print("(gitopsd RSS is this whole Python process; kubectl RSS is its own peak)")
        return 0
    finally:
        delete_namespaces(kubeconfig, ns_kubectl, ns_gitopsd)
        shutil.rmtree(work, ignore_errors=True)
        if started:
            stop_cluster()


if __name__ == "__main__":
    raise SystemExit(main())
