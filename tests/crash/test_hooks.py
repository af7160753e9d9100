"""kill -9 in the middle of operations with hooks: each hook runs at most once per operation, no
hook finalizer outlives the operation, and the operation finishes after the restart."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, deployment, get

pytestmark = pytest.mark.cluster


def generated_job(prefix: str, hook: str, policy: str = "BeforeHookCreation") -> str:
    """A `generateName` hook Job, as migrations are usually written."""
    return f"""apiVersion: batch/v1
kind: Job
metadata:
  generateName: {prefix}-
  annotations:
    argocd.argoproj.io/hook: {hook}
    argocd.argoproj.io/hook-delete-policy: {policy}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: "busybox:1"}}]
"""


def jobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Every Job in `namespace`."""
    out = cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json")
    return list(json.loads(out)["items"])


def test_presync_hook_runs_once_across_kill_9(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """kill -9 after a generateName PreSync Job ran, mid-wave: the restarted daemon resumes the
    same operation, adopts that Job instead of creating a second one, and finishes the sync."""
    git_repo.write(
        {
            "a/pre.yaml": generated_job("migrate", "PreSync"),
            "a/1.yaml": deployment("slow", "nginx:1", wave=1, min_ready=8),
            "a/2.yaml": configmap("after", wave=2),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("once", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(
            lambda: get(cluster, namespace, "deployment/slow") is not None,
            timeout=60,
            what="PreSync done and wave 1 applied",
        )
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
    assert len(jobs(cluster, namespace)) == 1
    with running(cfg) as d:
        wait_for(
            lambda: d.synced("once") and get(cluster, namespace, "configmap/after"),
            timeout=90,
            what="operation finished after restart",
        )
        assert d.status("once")["operationState"]["phase"] == "Succeeded"
    migrations = jobs(cluster, namespace)
    assert [j["metadata"]["name"].startswith("migrate-") for j in migrations] == [True], migrations
    assert not migrations[0]["metadata"].get("finalizers")


def test_hook_finalizers_of_a_killed_run_are_removed(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A hook left holding the hook finalizer by a killed daemon whose state was lost too (a
    sidecar's emptyDir) is released by the next operation, so its namespace can be deleted."""
    git_repo.write(
        {
            "a/pre.yaml": generated_job("prep", "PreSync"),
            "a/1.yaml": deployment("slow", "nginx:1", wave=1, min_ready=30),
            "a/2.yaml": configmap("after", wave=2),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("fin", git_repo.url, "a", namespace)])
    with running(cfg) as d:
        wait_for(
            lambda: get(cluster, namespace, "deployment/slow") is not None,
            timeout=60,
            what="wave 1 applied",
        )
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
    [hook] = jobs(cluster, namespace)
    assert hook["metadata"].get("finalizers") == ["argocd.argoproj.io/hook-finalizer"]
    # Without its state the operation cannot be resumed: the next one is new, and the abandoned
    # operation's hooks must not keep their finalizer.
    shutil.rmtree(tmp_path / "state")
    git_repo.write({"a/1.yaml": deployment("slow", "nginx:1", wave=1, min_ready=0)})
    with running(cfg) as d:
        wait_for(lambda: d.synced("fin"), timeout=90, what="synced")
        wait_for(
            lambda: all(not j["metadata"].get("finalizers") for j in jobs(cluster, namespace)),
            timeout=30,
            what="no hook finalizer left",
        )
