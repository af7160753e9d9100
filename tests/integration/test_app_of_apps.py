"""App of apps: Applications rendered by a parent become child apps managed by gitopsd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import settings
from daemon.engine import Engine, run_once
from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_sync import configmap, created, deployment, get

pytestmark = pytest.mark.cluster


def child(
    name: str,
    url: str,
    path: str,
    ns: str,
    *,
    wave: int = 0,
    project: str = "default",
    finalizer: bool = False,
) -> str:
    doc: dict[str, Any] = application(name, url, path, ns)
    doc["spec"]["project"] = project
    doc["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": str(wave)}
    if finalizer:
        doc["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    return yaml.safe_dump(doc)


async def test_children_sync_in_parent_wave_order(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With appOfAppsHealthGate, a parent's children sync as apps, wave by wave, each wave after
    the last child is healthy (what Argo CD's docs restore with an Application health check)."""
    url = git_repo.url
    git_repo.write(
        {
            "apps/db.yaml": child("aoa-db", url, "db", namespace, wave=0),
            "apps/web.yaml": child("aoa-web", url, "web", namespace, wave=1),
            "db/dep.yaml": deployment("db", "postgres:14", min_ready=3),
            "web/cm.yaml": configmap("web-config"),
        }
    )
    cfg = write_config(
        tmp_path,
        cluster,
        [application("aoa-root", url, "apps", "argocd")],
        appOfAppsHealthGate=True,
    )
    results = dict(await run_once(settings.load(cfg)))
    assert set(results) == {"aoa-root", "aoa-db", "aoa-web"}
    root = results["aoa-root"]
    assert root["operationState"]["phase"] == "Succeeded", root["operationState"]["message"]
    for name in ("aoa-db", "aoa-web"):
        assert results[name]["sync"]["status"] == "Synced"
        assert results[name]["health"]["status"] == "Healthy"
    db, web = get(cluster, namespace, "deployment/db"), get(cluster, namespace, "cm/web-config")
    assert db and web
    assert (created(web) - created(db)).total_seconds() >= 3, "wave 1 child did not wait"
    kinds = {(r["kind"], r["name"]) for r in root["resources"]}
    assert kinds == {("Application", "aoa-db"), ("Application", "aoa-web")}
    assert all(r["health"]["status"] == "Healthy" for r in root["resources"])


async def test_removing_a_child_honours_its_finalizer(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Removing a child from git removes the app; its resources go only with the finalizer."""
    url = git_repo.url
    git_repo.write(
        {
            "apps/keep.yaml": child("aoa-keep", url, "keep", namespace),
            "apps/drop.yaml": child("aoa-drop", url, "drop", namespace, finalizer=True),
            "keep/cm.yaml": configmap("kept"),
            "drop/cm.yaml": configmap("dropped"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("aoa-parent", url, "apps", namespace)])
    conf = settings.load(cfg)
    async with Engine.open(conf) as engine:
        parent = conf.app("aoa-parent")
        assert (await engine.reconciler.reconcile(parent))["operationState"]["phase"] == "Succeeded"
        assert get(cluster, namespace, "cm/kept") and get(cluster, namespace, "cm/dropped")
        git_repo.write(
            {
                "apps/keep.yaml": None,
                "apps/drop.yaml": None,
                "apps/other.yaml": configmap("parent-own"),
            }
        )
        status = await engine.reconciler.reconcile(parent, sync=None)
        op = status["operationState"]
        assert op["phase"] == "Succeeded", op["message"]
        results = {r["name"]: r["status"] for r in op["syncResult"]["resources"]}
        assert results == {"aoa-keep": "Pruned", "aoa-drop": "Pruned", "parent-own": "Synced"}
        assert engine.reconciler.children.children_of("aoa-parent") == {}
    assert get(cluster, namespace, "cm/dropped") is None
    assert get(cluster, namespace, "cm/kept") is not None


async def test_child_cannot_escape_to_another_project(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A child naming a different project than its parent is refused; nothing of it is applied."""
    url = git_repo.url
    git_repo.write(
        {
            "apps/evil.yaml": child("aoa-evil", url, "evil", namespace, project="default"),
            "evil/cm.yaml": configmap("escaped"),
        }
    )
    proj = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "team", "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "namespaceResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }
    parent = application("aoa-team", url, "apps", "argocd")
    parent["spec"]["project"] = "team"
    cfg = write_config(tmp_path, cluster, [parent])
    (tmp_path / "apps" / "project.yaml").write_text(yaml.safe_dump(proj))
    results = dict(await run_once(settings.load(cfg)))
    op = results["aoa-team"]["operationState"]
    assert op["phase"] == "Failed"
    assert "must stay in its parent's project 'team'" in op["message"]
    assert "aoa-evil" not in results
    assert get(cluster, namespace, "cm/escaped") is None


async def test_app_of_apps_cycle_is_refused(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A child that renders its own parent is a cycle: refused with a condition naming it."""
    url = git_repo.url
    git_repo.write(
        {
            "a/child.yaml": child("cyc-b", url, "b", "argocd"),
            "b/parent.yaml": child("cyc-a2", url, "a", "argocd"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("cyc-a", url, "a", "argocd")])
    # cyc-a -> cyc-b -> cyc-a2 -> cyc-b: the second cyc-b closes the loop.
    results = dict(await run_once(settings.load(cfg)))
    text = str(results)
    assert "app-of-apps cycle" in text
    assert "cyc-a -> cyc-b -> cyc-a2 -> cyc-b" in text


async def test_a_bad_child_does_not_fail_its_parent(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """By default (as in Argo CD, where an Application has no health check) a child that cannot
    be rendered carries its own error; the parent syncs its other children and is Synced."""
    url = git_repo.url
    git_repo.write(
        {
            "apps/good.yaml": child("aoa-good", url, "good", namespace),
            "apps/bad.yaml": child("aoa-bad", url, "missing-dir", namespace),
            "good/cm.yaml": configmap("good-config"),
        }
    )
    cfg = write_config(tmp_path, cluster, [application("aoa-parent2", url, "apps", "argocd")])
    results = dict(await run_once(settings.load(cfg)))
    parent = results["aoa-parent2"]
    assert parent["operationState"]["phase"] == "Succeeded", parent["operationState"]["message"]
    assert parent["sync"]["status"] == "Synced"
    assert parent["health"]["status"] == "Healthy"
    assert results["aoa-good"]["sync"]["status"] == "Synced"
    assert get(cluster, namespace, "cm/good-config") is not None
    bad = results["aoa-bad"]
    assert any("missing-dir" in c["message"] for c in bad.get("conditions") or []), bad
