"""The command line as users run it: check, render, diff and run --once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_sync import DB_APP, configmap

pytestmark = pytest.mark.cluster
GITOPSD = str(Path(sys.executable).parent / "gitopsd")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GITOPSD, *args], capture_output=True, text=True, timeout=300)


def test_check_render_diff_and_run_once(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`check` validates and renders without writing, `render` prints sync order with waves,
    `diff` exits 1 until `run --once` syncs, then 0."""
    git_repo.write({"db/db.yaml": DB_APP})
    cfg = str(
        write_config(tmp_path, cluster, [application("cli-db", git_repo.url, "db", namespace)])
    )
    out = cli("check", "-c", cfg)
    assert out.returncode == 0, out.stderr
    assert "ok    cli-db: 6 resources (Directory)" in out.stdout
    assert cluster.kubectl("get", "all", "-n", namespace, "-o", "name").strip() == ""

    out = cli("render", "-c", cfg, "cli-db")
    assert out.returncode == 0, out.stderr
    marks = [line for line in out.stdout.splitlines() if line.startswith("# ")]
    assert marks[0].startswith("# Sync wave -3: Secret/")
    assert marks[-1].startswith("# Sync wave 2: Service/")
    assert "argocd.argoproj.io/tracking-id: cli-db:/Secret:" in out.stdout

    out = cli("diff", "-c", cfg, "cli-db")
    assert out.returncode == 1
    assert f"===== Deployment/{namespace}/database (missing)" in out.stdout

    out = cli("run", "-c", cfg, "--once", "--log-format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cli-db  Synced  Healthy" in out.stdout
    out = cli("diff", "-c", cfg, "cli-db")
    assert out.returncode == 0, out.stdout


def test_check_names_the_broken_file_and_run_once_fails(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A broken manifest makes `check` and `run --once` fail, naming the file and line."""
    git_repo.write(
        {
            "a/ok.yaml": configmap("fine"),
            "a/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n",
        }
    )
    cfg = str(
        write_config(tmp_path, cluster, [application("cli-bad", git_repo.url, "a", namespace)])
    )
    out = cli("check", "-c", cfg)
    assert out.returncode == 1
    assert "error cli-bad: a/bad.yaml:" in out.stdout and "invalid YAML" in out.stdout
    out = cli("run", "-c", cfg, "--once", "--log-format", "json")
    assert out.returncode == 1
    assert "cli-bad  Unknown" in out.stdout


def test_config_errors_exit_2_with_file_and_field(tmp_path: Path, cluster: Cluster) -> None:
    """A broken Application file exits 2 naming file, document and field; an unknown field is
    a warning naming where it is."""
    cfg = write_config(tmp_path, cluster, [application("x", "file:///nowhere", "a", "ns")])
    app_file = tmp_path / "apps" / "x.yaml"
    good = app_file.read_text()
    app_file.write_text(good.replace("project: default", "project: default\n  bogus: 1"))
    out = cli("check", "-c", str(cfg))
    assert "x.yaml: document 1 (Application/x).spec.bogus: unknown field" in out.stderr
    app_file.write_text(good.replace("destination:", "destinationz:"))
    out = cli("check", "-c", str(cfg))
    assert out.returncode == 2
    assert "x.yaml: document 1 (Application/x).spec.destination" in out.stderr, out.stderr


def test_check_reports_every_bad_document_and_nested_unknown_fields(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A config with two broken Application files reports both errors, not only the first;
    a typo inside `source.helm` is warned about like a top-level unknown field."""
    good = application("fine", git_repo.url, "a", namespace)
    good["spec"]["source"]["helm"] = {"valueFile": "values.yaml"}
    cfg = write_config(tmp_path, cluster, [good])
    assert "spec.source.helm.valueFile: unknown field" in cli("check", "-c", str(cfg)).stderr
    bad1 = application("bad-one", git_repo.url, "a", namespace)
    del bad1["spec"]["source"]["repoURL"]
    bad2 = application("bad-two", git_repo.url, "a", "Not_A_Namespace")
    cfg = write_config(tmp_path, cluster, [good, bad1, bad2])
    out = cli("check", "-c", str(cfg))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "2 errors" in text
    assert "bad-one.yaml" in text and "repoURL: required field is missing" in text
    assert "bad-two.yaml" in text and "'Not_A_Namespace' is not a valid namespace name" in text
