"""A CustomResourceDefinition and its custom resources in one app sync in one go, as in Argo CD:
the CRD is applied, Established, its kinds discovered, then the resources applied."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster, GitRepo, application, write_config

pytestmark = pytest.mark.cluster
GITOPSD = str(Path(sys.executable).parent / "gitopsd")


@pytest.fixture
def group(cluster: Cluster) -> Iterator[str]:
    """A fresh API group for this test's CRD; the CRD is deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}.example.com"
    yield name
    cluster.kubectl("delete", "crd", f"widgets.{name}", "--ignore-not-found", "--wait=false")


def crd(group: str, *, subresources: bool = False, served: str = "v1") -> str:
    """A namespaced Widget CRD (optionally with status and scale subresources)."""
    sub = (
        """
      subresources:
        status: {}
        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}"""
        if subresources
        else ""
    )
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
    - name: {served}
      served: true
      storage: true{sub}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {{type: string}}
                replicas: {{type: integer}}
            status:
              type: object
              properties:
                replicas: {{type: integer}}
"""


def widget(group: str, name: str, version: str = "v1") -> str:
    return f"""apiVersion: {group}/{version}
kind: Widget
metadata:
  name: {name}
spec:
  size: large
  replicas: 2
"""


def run_once(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GITOPSD, "run", "-c", str(cfg), "--once", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("subresources", [False, True])
def test_crd_and_resources_in_one_wave_sync_in_one_run(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    group: str,
    subresources: bool,
) -> None:
    """Plain YAML with the CRD and two of its resources in the same wave: the first
    `run --once` succeeds (also with status/scale subresources)."""
    git_repo.write(
        {
            "a/crd.yaml": crd(group, subresources=subresources),
            "a/w1.yaml": widget(group, "one"),
            "a/w2.yaml": widget(group, "two"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("crds", git_repo.url, "a", namespace)])
    out = run_once(cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    names = cluster.kubectl("get", f"widgets.{group}", "-n", namespace, "-o", "name").split()
    assert sorted(names) == [f"widget.{group}/one", f"widget.{group}/two"]


def test_helm_chart_crds_dir_and_resources_sync_in_one_run(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, group: str
) -> None:
    """A Helm chart shipping its CRD in crds/ and a resource of it in templates/ syncs in one
    `run --once`."""
    git_repo.write(
        {
            "chart/Chart.yaml": "apiVersion: v2\nname: widgets\nversion: 0.1.0\n",
            "chart/crds/widgets.yaml": crd(group),
            "chart/templates/w.yaml": widget(group, "from-chart"),
        }
    )
    cfg = write_config(
        tmp_path, cluster, [application("crdchart", git_repo.url, "chart", namespace)]
    )
    out = run_once(cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert cluster.kubectl("get", f"widgets.{group}", "from-chart", "-n", namespace, "-o", "name")


def test_resource_of_a_version_its_crd_does_not_serve_fails_before_any_write(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, group: str
) -> None:
    """A custom resource asking for a version its CRD (in the same app) does not serve is
    refused up front, naming the file and the served versions; nothing is applied."""
    git_repo.write({"a/crd.yaml": crd(group), "a/w.yaml": widget(group, "w", version="v2")})
    cfg = write_config(tmp_path, cluster, [application("crdbad", git_repo.url, "a", namespace)])
    out = run_once(cfg)
    assert out.returncode != 0
    assert "w.yaml" in out.stdout + out.stderr
    assert "does not serve version v2 (it serves v1)" in out.stdout + out.stderr
    found = cluster.kubectl("get", "crd", f"widgets.{group}", "--ignore-not-found", "-o", "name")
    assert found.strip() == ""
