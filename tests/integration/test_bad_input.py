"""Bad input never causes a partial apply or a prune; errors name file, resource and reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_sync import configmap, get, reconcile

pytestmark = pytest.mark.cluster


def condition_text(status: dict[str, Any]) -> str:
    return " | ".join(c["message"] for c in status.get("conditions", []))


async def synced_baseline(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, **app_kw: Any
) -> Path:
    git_repo.write({"app/a.yaml": configmap("a"), "app/b.yaml": configmap("b")})
    cfg = write_config(
        tmp_path, cluster, [application("bad", git_repo.url, "app", namespace, **app_kw)]
    )
    status = await reconcile(cfg, "bad")
    assert status["operationState"]["phase"] == "Succeeded"
    return cfg


async def assert_untouched(cluster: Cluster, namespace: str, cfg: Path) -> dict[str, Any]:
    """Reconcile after a bad commit: a and b still exist and nothing new appeared."""
    status = await reconcile(cfg, "bad")
    assert get(cluster, namespace, "configmap/a") is not None
    assert get(cluster, namespace, "configmap/b") is not None
    names = json.loads(cluster.kubectl("get", "cm", "-n", namespace, "-o", "json"))["items"]
    assert {n["metadata"]["name"] for n in names} <= {"a", "b", "kube-root-ca.crt"}
    return status


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"app/b.yaml": None, "app/c.yaml": "kind: ConfigMap\nmetadata: {name: c\n"},
            "app/c.yaml:",
        ),
        (
            {"app/b.yaml": None, "app/c.yaml": "apiVersion: v1\nmetadata: {name: c}\n"},
            "has no kind",
        ),
        (
            {"app/b.yaml": None, "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"},
            "has no metadata.name",
        ),
        (
            {"app/b.yaml": None, "app/c.yaml": configmap("a", data="other")},
            "defined more than once, differently (app/a.yaml and app/c.yaml differ in data)",
        ),
        (
            {
                "app/b.yaml": None,
                "app/c.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
            },
            "no resource type Widget in example.com/v1",
        ),
        (
            {
                "app/b.yaml": None,
                "app/c.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                "spec: {ports: [{port: 99999}]}\n",
            },
            "Invalid value: 99999",
        ),
        (
            {
                "app/b.yaml": None,
                "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                "bogusField: 1\n",
            },
            "bogusField",
        ),
    ],
    ids=[
        "malformed-yaml",
        "no-kind",
        "no-name",
        "duplicate",
        "unknown-kind",
        "api-rejects",
        "unknown-field",
    ],
)
async def test_broken_commit_applies_nothing_and_prunes_nothing(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    files: dict[str, str | None],
    expected: str,
) -> None:
    """A broken manifest (plus removing b in the same commit) changes nothing in the cluster."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    git_repo.write(files)
    status = await assert_untouched(cluster, namespace, cfg)
    text = condition_text(status) + " " + (status.get("operationState") or {}).get("message", "")
    assert expected in text, text


async def test_namespaced_object_without_any_namespace_is_rejected(
    cluster: Cluster, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A namespaced object with no namespace in the manifest or the destination is refused."""
    git_repo.write({"app/a.yaml": configmap("orphan-ns")})
    app = application("nons", git_repo.url, "app", "")
    cfg = write_config(tmp_path, cluster, [app])
    status = await reconcile(cfg, "nons")
    assert "has no metadata.namespace" in condition_text(status)
    assert status["sync"]["status"] == "Unknown"


async def test_unreachable_repository_keeps_last_state(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """When git is unreachable or the revision is gone, resources stay and a condition says why."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    text = cfg.read_text()
    (tmp_path / "apps" / "bad.yaml").write_text(
        (tmp_path / "apps" / "bad.yaml")
        .read_text()
        .replace(git_repo.url, "git://127.0.0.1:1/none.git")
    )
    status = await assert_untouched(cluster, namespace, cfg)
    assert "git ls-remote failed" in condition_text(status)
    assert status["sync"]["status"] == "Unknown"
    cfg.write_text(text)
    (tmp_path / "apps" / "bad.yaml").write_text(
        (tmp_path / "apps" / "bad.yaml")
        .read_text()
        .replace("git://127.0.0.1:1/none.git", git_repo.url)
        .replace("targetRevision: main", "targetRevision: no-such-branch")
    )
    status = await assert_untouched(cluster, namespace, cfg)
    assert "revision 'no-such-branch' not found" in condition_text(status)


@pytest.mark.parametrize("path", ["../..", "/etc"])
async def test_path_escaping_the_repository_is_refused(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, path: str
) -> None:
    """An app path outside the repository is refused with a clear error."""
    git_repo.write({"app/a.yaml": configmap("a")})
    cfg = write_config(tmp_path, cluster, [application("esc", git_repo.url, path, namespace)])
    status = await reconcile(cfg, "esc")
    text = condition_text(status)
    assert "outside the repository" in text or "absolute paths are not allowed" in text, text


async def test_symlink_leaving_the_repository_is_refused(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A symlinked manifest directory pointing outside the repository is refused."""
    git_repo.write({"app/a.yaml": configmap("a")})
    (git_repo.work / "evil").symlink_to("/etc")
    git_repo.write({}, message="add evil link")
    cfg = write_config(tmp_path, cluster, [application("sym", git_repo.url, "evil", namespace)])
    status = await reconcile(cfg, "sym")
    assert "leaves the repository" in condition_text(status), condition_text(status)


async def test_empty_render_with_prune_is_refused(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An app that suddenly renders zero resources is not pruned to nothing without allowEmpty."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    git_repo.write({"app/a.yaml": None, "app/b.yaml": None, "app/README.md": "empty"})
    status = await assert_untouched(cluster, namespace, cfg)
    assert "allowEmpty" in status["operationState"]["message"]
