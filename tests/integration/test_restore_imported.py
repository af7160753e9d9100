"""Disaster recovery of an imported Argo CD installation: the restored tree is complete and
self-contained (its credential files inside it, relative references kept, absolute ones
rewritten), and the original directory is not needed, or touched, to run it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application
from tests.integration.test_disaster import GITOPSD, cluster_secret, kubectl_list
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster


def gitopsd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GITOPSD, *args], capture_output=True, text=True, timeout=timeout)


def test_an_imported_config_restored_elsewhere_runs_without_the_original(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`import argocd` writes `kubeconfig: credentials/...` (relative) and the in-cluster
    kubeconfig by absolute path; backed up with --include-secrets and the original directory
    lost, `restore --to DIR2 --key-file`: the dry run names DIR2's paths, the restore writes
    the kubeconfigs inside DIR2 (the relative reference kept, the absolute one rewritten to
    the restored copy) and nothing outside it, and `run --once` on DIR2 syncs both apps.
    Without the key the restore refuses, naming the missing file, and writes nothing."""
    git_repo.write({"a/cm.yaml": configmap("restored-a"), "b/cm.yaml": configmap("restored-b")})
    app_a = application("restored-a", git_repo.url, "a", namespace)
    app_b = application("restored-b", git_repo.url, "b", namespace)
    app_b["spec"]["destination"] = {"name": "edge", "namespace": namespace}
    source = tmp_path / "argocd"
    source.mkdir()
    (source / "applications.yaml").write_text(yaml.safe_dump(kubectl_list([app_a, app_b])))
    (source / "clusters.yaml").write_text(
        yaml.safe_dump(kubectl_list([cluster_secret("edge", cluster)]))
    )
    in_cluster = tmp_path / "outside" / "in-cluster.kubeconfig"
    in_cluster.parent.mkdir()
    shutil.copy(cluster.kubeconfig, in_cluster)
    first = tmp_path / "first"
    r = gitopsd(
        "import",
        "argocd",
        str(source / "applications.yaml"),
        str(source / "clusters.yaml"),
        "--to",
        str(first),
        "--in-cluster-kubeconfig",
        str(in_cluster),
    )
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load((first / "gitopsd.yaml").read_text())
    edge = next(c for c in config["clusters"] if c["name"] == "edge")
    imported = str(edge["kubeconfig"])  # credentials/cluster-edge-<hash of the name>.kubeconfig
    assert imported.startswith("credentials/cluster-edge-") and not Path(imported).is_absolute()

    key = tmp_path / "backup.key"
    assert gitopsd("backup", "--new-key", str(key)).returncode == 0
    archive = tmp_path / "backup.tar.gz"
    r = gitopsd(
        "backup",
        "-c",
        str(first / "gitopsd.yaml"),
        "-o",
        str(archive),
        "--include-secrets",
        "--key-file",
        str(key),
    )
    assert r.returncode == 0, r.stderr
    shutil.rmtree(first)
    in_cluster.unlink()

    second = tmp_path / "second"
    kube = second / imported
    r = gitopsd("restore", str(archive), "--to", str(second), "--dry-run", "--key-file", str(key))
    assert r.returncode == 0, r.stderr
    assert f"  {kube} (the credential file " in r.stdout, r.stdout
    assert f"{second / 'gitopsd.yaml'}" in r.stdout, r.stdout
    assert "1 credential paths in" in r.stdout and "would create" in r.stdout, r.stdout
    assert not second.exists(), "a dry run writes nothing"

    r = gitopsd("restore", str(archive), "--to", str(second), "--key-file", str(key))
    assert r.returncode == 0, r.stderr
    assert not first.exists() and not in_cluster.exists(), "nothing written outside DIR2"
    assert kube.stat().st_mode & 0o777 == 0o600
    restored = yaml.safe_load((second / "gitopsd.yaml").read_text())
    by_name = {c["name"]: c for c in restored["clusters"]}
    assert by_name["edge"]["kubeconfig"] == imported
    moved = by_name["in-cluster"]["kubeconfig"]
    assert not Path(moved).is_absolute() and (second / moved).is_file(), moved

    run = gitopsd(
        "run", "-c", str(second / "gitopsd.yaml"), "--once", "--log-format", "json", timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert get(cluster, namespace, "configmap/restored-a") is not None
    assert get(cluster, namespace, "configmap/restored-b") is not None

    third = tmp_path / "third"
    r = gitopsd("restore", str(archive), "--to", str(third), "--no-cluster")
    assert r.returncode == 2, r.stdout
    missing = third / imported
    assert str(missing) in r.stderr and "restore with --key-file" in r.stderr, r.stderr
    assert not third.exists()
