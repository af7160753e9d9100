"""A member stalled (SIGSTOP) in the middle of a sync, for longer than its Lease, and then
resumed (SIGCONT): the replica that took the app over has synced a newer revision, and none of
the stalled member's queued or retried writes of the old revision lands after it resumes, nor
does its new incarnation resume the stale operation. Lease renewals never wait behind the
app's own request budget (`qps`)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, write_config
from tests.ha.test_replicas import LEASE, member_config, members, sharding
from tests.integration.test_daemon import wait_for

pytestmark = pytest.mark.cluster
OBJECTS = 24


def _configmaps(data: str) -> dict[str, str]:
    """OBJECTS ConfigMaps over four waves, all carrying `data`."""
    out = {}
    for i in range(OBJECTS):
        out[f"app/cm-{i}.yaml"] = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"cm-{i}",
                    "annotations": {"argocd.argoproj.io/sync-wave": str(i % 4)},
                },
                "data": {"rev": data},
            }
        )
    return out


def _values(cluster: Cluster, namespace: str) -> dict[str, str]:
    items = json.loads(cluster.kubectl("get", "cm", "-n", namespace, "-o", "json"))["items"]
    return {
        cm["metadata"]["name"]: (cm.get("data") or {}).get("rev", "")
        for cm in items
        if cm["metadata"]["name"].startswith("cm-")
    }


def test_a_stalled_member_writes_nothing_after_its_fence(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """SIGSTOP the owner mid-sync of v1 (24 objects at qps 2), let the other member take the
    app and sync v2, SIGCONT: for the next 15 s every object still carries v2 (no old write
    lands), the resumed member never resumes the v1 operation, and with qps 2 neither member
    evicted itself while syncing."""
    git_repo.write(_configmaps("v0"))
    app = application("stall", git_repo.url, "app", namespace, self_heal=False)
    write_config(tmp_path, cluster, [app], syncWaveDelay="0s")
    cfgs = {}
    for m in ("m1", "m2"):
        cfgs[m] = member_config(tmp_path, m, namespace)
        data = yaml.safe_load(cfgs[m].read_text())
        data["clusters"][0].update(qps=2, burst=2)  # slow writes: many queue behind the limiter
        cfgs[m].write_text(yaml.safe_dump(data))
    with members(cfgs) as ds:
        wait_for(
            lambda: (
                any("stall" in sharding(d)["claimed"] for d in ds.values())
                and all(d.synced("stall") for d in ds.values())
            ),
            timeout=120,
            what="v0 synced by one member",
        )
        owner = next(m for m, d in ds.items() if "stall" in sharding(d)["claimed"])
        heir = next(m for m in ds if m != owner)
        git_repo.write(_configmaps("v1"))
        ds[owner].api("/api/v1/applications/stall/refresh", method="POST")
        wait_for(
            lambda: "v1" in _values(cluster, namespace).values(),
            timeout=60,
            what="the owner's sync of v1 to start writing",
        )
        ds[owner].proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            git_repo.write(_configmaps("v2"))
            wait_for(
                lambda: "stall" in sharding(ds[heir])["claimed"],
                timeout=LEASE * 4,
                what="the other member to take the app over",
            )
            ds[heir].api("/api/v1/applications/stall/refresh", method="POST")
            wait_for(
                lambda: (
                    set(_values(cluster, namespace).values()) == {"v2"} and ds[heir].synced("stall")
                ),
                timeout=120,
                what="the heir to sync v2",
            )
            time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        finally:
            ds[owner].proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            values = _values(cluster, namespace)
            stale = sorted(n for n, v in values.items() if v != "v2")
            assert not stale, f"old writes landed after the stall: {stale[:5]} ({len(stale)})"
            time.sleep(0.3)
        wait_for(
            lambda: all(d.synced("stall") for d in ds.values()),
            timeout=30,
            what="both members to show the app Synced at v2",
        )
        assert set(_values(cluster, namespace).values()) == {"v2"}
        heir_log = ds[heir].log.read_text()
        assert "this replica was evicted" not in heir_log, "a renewal waited behind qps"
