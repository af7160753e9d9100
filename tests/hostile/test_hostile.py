"""Hostile input from a tenant's repository or config: each case is refused with an error that
names the file and the reason, and nothing of the app is applied or pruned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_bad_input import assert_untouched, condition_text, synced_baseline

pytestmark = pytest.mark.cluster
GITOPSD = str(Path(sys.executable).parent / "gitopsd")

BOMB = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '0'}]\n" for i in range(9)
)


def commit_bytes(repo: GitRepo, rel: str, data: bytes) -> None:
    """Commit raw bytes (invalid UTF-8 cannot go through GitRepo.write)."""
    path = repo.work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "bytes")
    repo.git("push", "-q", "origin", "HEAD:main")


CASES: list[tuple[str, dict[str, str | None], str]] = [
    ("alias bomb", {"app/b.yaml": None, "app/c.yaml": BOMB}, "aliases expand this YAML past"),
    (
        "namespace traversal",
        {
            "app/b.yaml": None,
            "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\n"
            "metadata: {name: c, namespace: tenant-a-1/../kube-system}\n",
        },
        "app/c.yaml: ConfigMap/c: metadata.namespace 'tenant-a-1/../kube-system' is not a valid "
        "namespace name",
    ),
    (
        "document is a list",
        {"app/b.yaml": None, "app/c.yaml": "- apiVersion: v1\n  kind: ConfigMap\n"},
        "app/c.yaml: document 1 is not a mapping (got list)",
    ),
    (
        "invalid JSON",
        {"app/b.yaml": None, "app/c.json": '{"apiVersion": "v1", "kind": '},
        "app/c.json:1: invalid JSON",
    ),
    (
        "name is not a string",
        {
            "app/b.yaml": None,
            "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 7}\n",
        },
        "app/c.yaml: ConfigMap metadata.name must be a string",
    ),
    (
        "List with a non-object item",
        {"app/b.yaml": None, "app/c.yaml": "apiVersion: v1\nkind: List\nitems: [3]\n"},
        "app/c.yaml: document 1 items[0] is not a mapping",
    ),
    (
        "bad sync-options annotation",
        {
            "app/b.yaml": None,
            "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n"
            "    argocd.argoproj.io/sync-options: Prune=maybe\n",
        },
        "app/c.yaml: ConfigMap/",
    ),
    (
        "namespace longer than a DNS label",
        {
            "app/b.yaml": None,
            "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\n"
            f"metadata: {{name: c, namespace: {'n' * 64}}}\n",
        },
        "is not a valid namespace name",
    ),
    (
        "kustomize remote base",
        {
            "app/b.yaml": None,
            "app/kustomization.yaml": "resources: [a.yaml, https://github.com/org/repo//base]\n",
        },
        "remote resource 'https://github.com/org/repo//base' is not allowed",
    ),
    (
        "kustomize patch from outside",
        {
            "app/b.yaml": None,
            "app/kustomization.yaml": "resources: [a.yaml]\n"
            "patches: [{path: ../../../etc/x.yaml}]\n",
        },
        "app/kustomization.yaml: reference '../../../etc/x.yaml' is outside the repository",
    ),
    (
        "alias bomb in a kustomization",
        {"app/b.yaml": None, "app/kustomization.yaml": BOMB.replace("apiVersion: v1\n", "")},
        "aliases expand this YAML past",
    ),
    (
        "config generator file outside",
        {
            "app/b.yaml": None,
            "app/kustomization.yaml": "resources: [a.yaml]\n"
            "configMapGenerator: [{name: g, files: [/etc/passwd]}]\n",
        },
        "reference '/etc/passwd' is outside the repository",
    ),
    (
        "upper-case namespace",
        {
            "app/b.yaml": None,
            "app/c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: Prod}\n",
        },
        "metadata.namespace 'Prod' is not a valid namespace name",
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_hostile_manifests_are_refused_whole(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    files: dict[str, str | None],
    expected: str,
) -> None:
    """A hostile commit fails the app with a named error; nothing is applied or pruned."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    git_repo.write(files)
    status = await assert_untouched(cluster, namespace, cfg)
    assert expected in condition_text(status)


async def test_invalid_utf8_is_an_error_naming_the_file(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Invalid UTF-8 is not replaced and applied: the app fails naming file and offset."""
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    git_repo.write({"app/b.yaml": None})
    body = b'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: "\xff\xfe"}\n'
    commit_bytes(git_repo, "app/c.yaml", body)
    status = await assert_untouched(cluster, namespace, cfg)
    assert "app/c.yaml: not valid UTF-8 (byte 0xff at offset" in condition_text(status)


def test_destination_namespace_traversal_is_refused_at_load(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An Application whose destination namespace is not a DNS-1123 label (a path that a
    `tenant-a-*` glob would match) is refused by `check`, naming the file and field."""
    app = application("trav", git_repo.url, "app", "tenant-a-1/../kube-system")
    cfg = write_config(tmp_path, cluster, [app])
    out = subprocess.run(
        [GITOPSD, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "trav.yaml" in text
    assert "spec.destination.namespace: 'tenant-a-1/../kube-system' is not a valid namespace" in (
        text
    )


async def test_unbounded_jq_rule_is_refused_naming_the_rule(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An ignoreDifferences jq expression that could loop forever is refused with the rule's
    location; nothing is applied."""
    rules = [{"group": "", "kind": "ConfigMap", "jqPathExpressions": ["def f: f; f"]}]
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    data = yaml.safe_load((tmp_path / "apps" / "bad.yaml").read_text())
    data["spec"]["ignoreDifferences"] = rules
    (tmp_path / "apps" / "bad.yaml").write_text(yaml.safe_dump(data))
    git_repo.write({"app/c.yaml": None})
    status = await assert_untouched(cluster, namespace, cfg)
    assert "ignoreDifferences[0].jqPathExpressions[0]" in condition_text(status)
    assert "'def' may run unbounded" in condition_text(status)


@pytest.mark.parametrize(
    "field", ["generators", "transformers", "validators", "resources", "components", "crds"]
)
async def test_kustomize_fields_cannot_reach_outside_the_repository(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path, field: str
) -> None:
    """A kustomization naming a directory on the host (another kustomization, e.g. another
    app's checkout in the cache) in any field is refused naming the file and the reference,
    without revealing where the cache lives; nothing is applied."""
    host = tmp_path / "host-secrets"
    host.mkdir()
    (host / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (host / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\ndata: {k: v}\n"
    )
    cfg = await synced_baseline(cluster, namespace, git_repo, tmp_path)
    git_repo.write(
        {
            "app/a.yaml": None,
            "app/b.yaml": None,
            "app/kustomization.yaml": f"resources: [a.yaml, b.yaml]\n{field}: [{host}]\n",
        }
    )
    git_repo.write(
        {
            "app/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {key: x}\n",
            "app/b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {key: x}\n",
        }
    )
    status = await assert_untouched(cluster, namespace, cfg)
    text = condition_text(status)
    assert f"app/kustomization.yaml: reference '{host}' is outside the repository" in text, text
    assert "/cache/" not in text.replace(str(host), "")
