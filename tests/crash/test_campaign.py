"""A kill -9 campaign: seeded random kill points over several syncs with hooks and prunes. After
every restart: exactly the desired objects, no orphan, each hook at most once per revision, no
hook finalizer left, state files valid. `make test` runs a few rounds; `make soak` many
(GITOPSD_CRASH_ROUNDS, GITOPSD_CRASH_SEED)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.crash.test_hooks import generated_job, jobs
from tests.integration.test_daemon import Daemon, running
from tests.integration.test_sync import configmap, deployment

pytestmark = pytest.mark.cluster

ROUNDS = int(os.environ.get("GITOPSD_CRASH_ROUNDS", "3"))
SEED = int(os.environ.get("GITOPSD_CRASH_SEED", "20261201"))


def desired_files(rng: random.Random, round_no: int) -> dict[str, str | None]:
    """A revision: a PreSync hook, a random subset of ConfigMaps in waves 0 and 2 (the rest
    pruned), and a Deployment that takes a moment to become ready in wave 1."""
    files: dict[str, str | None] = {
        "a/pre.yaml": generated_job("migrate", "PreSync"),
        "a/dep.yaml": deployment("slow", "nginx:1", wave=1, min_ready=2),
    }
    for i in range(8):
        wanted = rng.random() < 0.6
        files[f"a/cm{i}.yaml"] = (
            configmap(f"cm{i}", wave=0 if i < 4 else 2, data=f"r{round_no}") if wanted else None
        )
    return files


def config_maps(cluster: Cluster, namespace: str) -> dict[str, dict]:
    out = json.loads(cluster.kubectl("get", "cm", "-n", namespace, "-o", "json"))
    return {
        i["metadata"]["name"]: i
        for i in out["items"]
        if i["metadata"]["name"] != "kube-root-ca.crt"
    }


def test_kill_9_campaign_converges_with_nothing_lost_or_duplicated(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Each round pushes a revision, kills the daemon at a random moment of its sync, restarts
    it, and checks the invariants once it has converged."""
    rng = random.Random(SEED)
    files = desired_files(rng, 0)
    git_repo.write(files)
    cfg = write_config(tmp_path, cluster, [application("campaign", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(lambda: d.synced("campaign"), timeout=90, what="first sync")
    for round_no in range(1, ROUNDS + 1):
        files = desired_files(rng, round_no)
        head = git_repo.write(files, message=f"round {round_no}")
        kill_after = rng.uniform(0.2, 4.0)
        with running(cfg) as d:
            time.sleep(kill_after)
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(30)
        with running(cfg) as d:

            def converged(d: Daemon = d, head: str = head) -> bool:
                op = d.status("campaign").get("operationState") or {}
                return d.synced("campaign", head) and op.get("phase") == "Succeeded"

            wait_for(
                converged,
                timeout=120,
                what=f"round {round_no} (killed after {kill_after:.1f}s) converged",
            )
        wanted = {Path(p).stem for p, body in files.items() if body and p.startswith("a/cm")}
        live = config_maps(cluster, namespace)
        assert set(live) == wanted, (round_no, kill_after)
        assert all(cm["data"]["key"] == f"r{round_no}" for cm in live.values())
        hooks = jobs(cluster, namespace)
        per_revision = Counter("-".join(j["metadata"]["name"].split("-")[1:3]) for j in hooks)
        assert max(per_revision.values()) == 1, (round_no, kill_after, per_revision)
        assert not any(j["metadata"].get("finalizers") for j in hooks), (round_no, kill_after)
        for state in (tmp_path / "state").rglob("*.json"):
            json.loads(state.read_text())
