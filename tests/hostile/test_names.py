"""App names at the limits: long names sync, and names sharing a long beginning never share
a Lease, a state ConfigMap, an inventory or a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import settings
from daemon.engine import run_once
from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_sync import configmap

pytestmark = pytest.mark.cluster


async def test_long_app_names_sync_and_keep_their_own_state(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Two apps whose 240-character names share their first 230 characters both sync (their
    last-good files and inventories fit their limits) and, after a restart, each shows its own
    history from its own state ConfigMap."""
    base = "a" * 230
    first, other = base + "-first-app", base + "-other-app"
    git_repo.write({"a/cm.yaml": configmap("one"), "b/cm.yaml": configmap("two")})
    apps = [
        application(first, git_repo.url, "a", namespace),
        application(other, git_repo.url, "b", namespace),
    ]
    cfg = write_config(tmp_path, cluster, apps, stateStore="kubernetes")
    results = dict(await run_once(settings.load(cfg)))
    for name in (first, other):
        assert results[name]["sync"]["status"] == "Synced", results[name].get("conditions")
    git_repo.write({"b/cm.yaml": configmap("two", data="changed")})
    results = dict(await run_once(settings.load(cfg)))
    assert results[other]["sync"]["status"] == "Synced"
    again = dict(await run_once(settings.load(cfg)))  # a new process: state from the cluster
    for name, path in ((first, "a"), (other, "b")):
        history = again[name].get("history") or []
        assert history, name
        assert {h["source"]["path"] for h in history} == {path}, (name, history)
