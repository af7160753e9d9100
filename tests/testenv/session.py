"""Helpers the demo and the benchmarks share: the background control plane and settings files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cluster"
CLUSTER_PY = ROOT / "tests" / "testenv" / "cluster.py"


def ensure_cluster() -> tuple[Path, bool]:
    """The kubeconfig of `make cluster`'s control plane, starting it if needed; the flag says
    whether we started it (and so should stop it)."""
    if (STATE / "ready").exists():
        return STATE / "kubeconfig", False
    subprocess.run([sys.executable, str(CLUSTER_PY), "up", str(STATE)], check=True)
    return STATE / "kubeconfig", True


def stop_cluster() -> None:
    """Stop the background control plane."""
    subprocess.run([sys.executable, str(CLUSTER_PY), "down", str(STATE)], check=False)


def write_settings(path: Path, *, kubeconfig: Path, work: Path, **settings: Any) -> None:
    """A gitopsd.yaml for the local cluster with caches under `work` and extra settings."""
    data = {
        "applications": ["apps/*.yaml"],
        "clusters": [
            {
                "name": "in-cluster",
                "server": "https://kubernetes.default.svc",
                "kubeconfig": str(kubeconfig),
            }
        ],
        "settings": {"cacheDir": str(work / "cache"), "stateDir": str(work / "state"), **settings},
    }
    path.write_text(yaml.safe_dump(data))


def delete_namespaces(kubeconfig: Path, *names: str) -> None:
    """Delete namespaces without waiting (cleanup after a run)."""
    for ns in names:
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "delete",
                "namespace",
                ns,
                "--wait=false",
                "--ignore-not-found",
            ],
            capture_output=True,
        )
