"""The repo cache under stress: stale locks, corrupt clones, credentials and path escapes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon import settings
from daemon.engine import Engine
from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_sync import configmap, get, reconcile

pytestmark = pytest.mark.cluster


def clone_dir(tmp_path: Path) -> Path:
    (repo,) = (p for p in (tmp_path / "cache" / "git" / "repos").iterdir() if p.is_dir())
    return repo


async def test_stale_lock_and_corrupt_clone_are_repaired(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A lock left by a killed git and a clone with a broken HEAD are detected and repaired."""
    git_repo.write({"app/cm.yaml": configmap("c", data="v1")})
    cfg_path = write_config(tmp_path, cluster, [application("src", git_repo.url, "app", namespace)])
    cfg = settings.load(cfg_path)
    async with Engine.open(cfg) as engine:
        app = cfg.app("src")
        assert (await engine.reconciler.reconcile(app))["operationState"]["phase"] == "Succeeded"
        (clone_dir(tmp_path) / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        lock = clone_dir(tmp_path) / "refs" / "heads" / "main.lock"
        lock.write_text("stale")
        old = time.time() - 3600  # left by a git killed an hour ago
        os.utime(lock, (old, old))
        sha = git_repo.write({"app/cm.yaml": configmap("c", data="v2")})
        status = await engine.reconciler.reconcile(app)
        assert status["sync"]["revision"] == sha, status.get("conditions")
    assert (get(cluster, namespace, "cm/c") or {})["data"]["key"] == "v2"
    (clone_dir(tmp_path) / "HEAD").write_text("garbage\n")
    sha = git_repo.write({"app/cm.yaml": configmap("c", data="v3")})
    status = await reconcile(cfg_path, "src")
    assert status["sync"]["revision"] == sha, status.get("conditions")
    assert (get(cluster, namespace, "cm/c") or {})["data"]["key"] == "v3"


async def test_credentials_never_appear_in_errors(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A repository URL with credentials in it fails with the secret redacted."""
    url = "https://deploy:s3cr3t-token@127.0.0.1:1/org/repo.git"
    token = tmp_path / "token"
    token.write_text("another-s3cr3t\n")
    cfg = write_config(tmp_path, cluster, [application("cred", url, "app", namespace)])
    text = cfg.read_text() + (
        f"repositories:\n- url: https://deploy@127.0.0.1:1/\n  passwordFile: {token}\n"
    )
    cfg.write_text(text)
    status = await reconcile(cfg, "cred")
    dump = str(status)
    assert "s3cr3t" not in dump, dump
    assert "***@127.0.0.1" in dump
    state = (tmp_path / "state" / "apps" / "cred.json").read_text()
    assert "s3cr3t" not in state


async def test_helm_value_file_outside_the_repo_is_refused(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Helm valueFiles and kustomize references that leave the repository are refused."""
    git_repo.write(
        {
            "chart/Chart.yaml": "apiVersion: v2\nname: c\nversion: 0.1.0\n",
            "chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "kust/kustomization.yaml": "resources: [../../../../../etc]\n",
        }
    )
    helm_app = application(
        "vf",
        git_repo.url,
        "chart",
        namespace,
        source_extra={"helm": {"valueFiles": ["../../../../etc/passwd"]}},
    )
    kust_app = application("kref", git_repo.url, "kust", namespace)
    cfg = write_config(tmp_path, cluster, [helm_app, kust_app])
    for name in ("vf", "kref"):
        status = await reconcile(cfg, name)
        text = " ".join(c["message"] for c in status["conditions"])
        assert "outside the repository" in text, text
        assert "operationState" not in status
