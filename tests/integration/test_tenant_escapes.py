"""Attacks a tenant could try against other tenants; each must fail with a clear reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import settings
from daemon.engine import run_once
from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_app_of_apps import child
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get
from tests.integration.test_tenancy import write_project

pytestmark = pytest.mark.cluster


def project(name: str, namespaces: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": n} for n in namespaces],
            **spec,
        },
    }


async def test_child_cannot_take_over_a_generated_app(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A child Application named like another source's app is refused, so removing it later
    cannot delete the other app's resources."""
    url = git_repo.url
    git_repo.write(
        {
            "victim/cm.yaml": configmap("victim-data"),
            "attacker/victim.yaml": child("victim-web", url, "nowhere", namespace, finalizer=True),
        }
    )
    aset = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "victims", "namespace": "argocd"},
        "spec": {
            "generators": [{"list": {"elements": [{"app": "web"}]}}],
            "template": {
                "metadata": {"name": "victim-{{app}}"},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": url, "targetRevision": "main", "path": "victim"},
                    "destination": {
                        "server": "https://kubernetes.default.svc",
                        "namespace": namespace,
                    },
                    "syncPolicy": {"automated": {}},
                },
            },
        },
    }
    cfg = write_config(tmp_path, cluster, [application("attacker", url, "attacker", "argocd")])
    (tmp_path / "apps" / "appset.yaml").write_text(yaml.safe_dump(aset))
    results = dict(await run_once(settings.load(cfg)))
    op = results["attacker"]["operationState"]
    assert op["phase"] == "Failed"
    assert "name is already used by another Application" in op["message"]
    assert results["victim-web"]["sync"]["status"] == "Synced"
    assert get(cluster, namespace, "cm/victim-data") is not None


async def test_child_appproject_cannot_grant_anything_outside_its_parent(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A permissive AppProject rendered by a tenant's parent app does not become a project for
    configured apps, and one outside the control namespace is refused."""
    url = git_repo.url
    wide = project("team-c", ["*"], clusterResourceWhitelist=[{"group": "*", "kind": "*"}])
    elsewhere = project("team-d", ["*"])
    elsewhere["metadata"]["namespace"] = namespace
    git_repo.write(
        {
            "parent/project.yaml": yaml.safe_dump(wide),
            "other/project.yaml": yaml.safe_dump(elsewhere),
            "c/cr.yaml": (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
                f"metadata: {{name: {namespace}-escape}}\nrules: []\n"
            ),
        }
    )
    c_app = application("c-app", url, "c", namespace)
    c_app["spec"]["project"] = "team-c"
    cfg = write_config(
        tmp_path,
        cluster,
        [
            application("proj-parent", url, "parent", "argocd"),
            application("proj-other", url, "other", "argocd"),
            c_app,
        ],
    )
    results = dict(await run_once(settings.load(cfg)))
    assert results["proj-parent"]["operationState"]["phase"] == "Succeeded"
    c_text = " ".join(c["message"] for c in results["c-app"]["conditions"])
    assert "project 'team-c' does not exist" in c_text
    assert (
        cluster.kubectl(
            "get", "clusterrole", f"{namespace}-escape", "--ignore-not-found", "-o", "name"
        ).strip()
        == ""
    )
    other = results["proj-other"]["operationState"]
    assert other["phase"] == "Failed" and "must be in namespace 'argocd'" in other["message"]


def test_api_diff_and_global_reads_respect_projects(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """The diff endpoint applies the AppProject (no peeking into another tenant's namespace),
    project-scoped tokens cannot list ApplicationSets, and an empty token file grants nothing."""
    victim_ns = f"{namespace}-b"
    cluster.kubectl("create", "namespace", victim_ns)
    cluster.kubectl(
        "create", "configmap", "secret-cm", "-n", victim_ns, "--from-literal=password=hunter2-B"
    )
    git_repo.write(
        {
            "a/peek.yaml": configmap("secret-cm").replace(
                "metadata:\n", f"metadata:\n  namespace: {victim_ns}\n"
            )
        }
    )
    team = project(
        "team-a",
        [namespace],
        roles=[
            {
                "name": "dev",
                "groups": ["team-a-devs"],
                "policies": ["p, proj:team-a:dev, applications, get, team-a/*, allow"],
            }
        ],
    )
    app = application("peeker", git_repo.url, "a", namespace, automated=False)
    app["spec"]["project"] = "team-a"
    (tmp_path / "dev").write_text("dev-token")
    (tmp_path / "empty").write_text("")
    cfg = write_config(tmp_path, cluster, [app])
    write_project(tmp_path, team)
    data = yaml.safe_load(cfg.read_text())
    data["apiTokens"] = [
        {
            "name": "dev",
            "tokenFile": str(tmp_path / "dev"),
            "role": "none",
            "groups": ["team-a-devs"],
        },
        {"name": "unprovisioned", "tokenFile": str(tmp_path / "empty"), "role": "admin"},
    ]
    data["settings"]["listen"] = "127.0.0.1:0"
    cfg.write_text(yaml.safe_dump(data))
    try:
        with running(cfg) as d:
            r = d.api("/api/v1/applications/peeker/diff", token="dev-token")
            assert "hunter2" not in r.text and "not permitted in project team-a" in r.text, r.text
            assert d.api("/api/v1/applicationsets", token="dev-token").status_code == 403
            for bogus in ("\xa0", "\x85"):
                r = d.api(
                    "/api/v1/applications/peeker/sync",
                    method="POST",
                    headers={"Authorization": f"Bearer {bogus}".encode("latin-1")},  # type: ignore[dict-item]
                )
                assert r.status_code == 401, (repr(bogus), r.status_code)
    finally:
        cluster.kubectl("delete", "namespace", victim_ns, "--wait=false", check=False)
