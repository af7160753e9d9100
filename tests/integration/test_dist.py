"""The single-file executable that `make dist` builds, run as it would run on an edge host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from daemon import __version__
from tests.conftest import Cluster, GitRepo, application, write_config

# The first test to run may have to build the executable (about half a minute on 2 cores, more
# when pip has to fetch PyInstaller first).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "dist" / "gitopsd"
# What the executable is built from: the package and the PyInstaller spec with its hooks.
SOURCES = ("daemon", "packaging")

APP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: main
          image: nginx:1
"""


def _newest_source() -> float:
    return max(
        p.stat().st_mtime
        for d in SOURCES
        for p in (ROOT / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def binary() -> Path:
    """dist/gitopsd, rebuilt with `make dist` when it is missing or older than its sources."""
    if not BINARY.exists() or BINARY.stat().st_mtime < _newest_source():
        r = subprocess.run(["make", "dist"], cwd=ROOT, capture_output=True, text=True, timeout=840)
        assert r.returncode == 0, f"make dist failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert os.access(BINARY, os.X_OK), f"{BINARY} is not executable"
    return BINARY


def _bare_env() -> dict[str, str]:
    # No virtualenv, PYTHONPATH or GITOPSD_HELM: the executable must carry everything itself.
    return {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}


def test_executable_reports_package_version(binary: Path) -> None:
    """`dist/gitopsd --version` starts the frozen program and prints daemon.__version__."""
    r = subprocess.run(
        [str(binary), "--version"], env=_bare_env(), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"gitopsd {__version__}\n"


def test_executable_run_once_syncs_app_from_git(
    binary: Path, cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`dist/gitopsd run --once` in a bare environment syncs a git app to Synced and Healthy."""
    sha = git_repo.write({"app/all.yaml": APP})
    cfg = write_config(tmp_path, cluster, [application("dist", git_repo.url, "app", namespace)])
    r = subprocess.run(
        [str(binary), "run", "-c", str(cfg), "--once"],
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["APP", "SYNC", "HEALTH", "REVISION", "MESSAGE"]
    assert [row.split()[:4] for row in rows] == [["dist", "Synced", "Healthy", sha[:12]]]
    cm = json.loads(cluster.kubectl("get", "configmap/settings", "-n", namespace, "-o", "json"))
    assert cm["data"] == {"color": "blue"}
    assert cm["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"].startswith("dist:")
    web = json.loads(cluster.kubectl("get", "deployment/web", "-n", namespace, "-o", "json"))
    assert web["status"].get("availableReplicas") == 1
