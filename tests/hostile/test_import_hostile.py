"""`gitopsd import argocd` on hostile backup files: wrong-typed fields, odd YAML and clusters
whose names collide end in an error naming the file, the document and the reason (exit 2,
nothing written), never a traceback; exec credentials are refused unless allowed."""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import cli
from tests.conftest import Cluster, GitRepo, application
from tests.integration.test_disaster import cluster_secret as real_cluster_secret
from tests.integration.test_disaster import kubectl_list
from tests.integration.test_sync import configmap, get

GITOPSD = str(Path(sys.executable).parent / "gitopsd")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cluster_secret(name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"cluster-{name.replace('/', '-')}",
            "namespace": "argocd",
            "labels": {"argocd.argoproj.io/secret-type": "cluster", "env": "edge"},
            "annotations": {"team": "a"},
        },
        "data": {
            "name": b64(name),
            "server": b64("https://edge:6443"),
            "config": b64(json.dumps(config)),
        },
    }


def backup() -> list[dict[str, Any]]:
    """A valid backup: every kind the importer converts, one of each."""
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "web", "namespace": "argocd", "annotations": {"a": "b"}},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/a.git", "path": "web"},
            "destination": {"name": "edge", "namespace": "web"},
        },
        "status": {"sync": {"status": "Synced"}},
    }
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "team", "namespace": "argocd"},
        "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}]},
    }
    appset = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "set", "namespace": "argocd"},
        "spec": {"generators": [{"list": {"elements": []}}], "template": {"spec": {}}},
    }
    repo = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "repo-a",
            "namespace": "argocd",
            "labels": {"argocd.argoproj.io/secret-type": "repository"},
        },
        "stringData": {"url": "https://git.example/a.git", "username": "u", "password": "p"},
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {
            "timeout.reconciliation": "120s",
            "repositories": yaml.safe_dump(
                [
                    {
                        "url": "https://git.example/b.git",
                        "passwordSecret": {"name": "repo-a", "key": "password"},
                    }
                ]
            ),
        },
    }
    rbac = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-rbac-cm"},
        "data": {"policy.csv": "p, role:x, applications, get, */*, allow\n"},
    }
    edge = cluster_secret("edge", {"bearerToken": "t", "tlsClientConfig": {"insecure": True}})
    return [app, project, appset, repo, cm, rbac, edge]


def run_cli(tmp_path: Path, docs: list[Any], *extra: str) -> tuple[int, str, str, Path]:
    """Import one file holding `docs` (as a kubectl List) in-process; (code, out, err, dest)."""
    src = tmp_path / "backup.yaml"
    src.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs}))
    return _main(tmp_path, src, *extra)


def _main(tmp_path: Path, src: Path, *extra: str) -> tuple[int, str, str, Path]:
    import contextlib
    import io

    dest = tmp_path / "out"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["import", "argocd", str(src), "--to", str(dest), *extra])
    return code, out.getvalue(), err.getvalue(), dest


def test_the_valid_backup_imports(tmp_path: Path) -> None:
    """The fixture the malformed cases start from imports cleanly (so each case below fails
    for its own fault)."""
    code, _, err, dest = run_cli(tmp_path, backup())
    assert code == 0, err
    assert (dest / "IMPORT-REPORT.txt").read_text().startswith(f"imported into {dest}")


CLUSTER = (
    "kind: Secret\nmetadata: {name: s, labels: {argocd.argoproj.io/secret-type: cluster}}\n"
    "stringData: {server: 'https://x', config: '%s'}\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: 5\n", r"document 1: kind must be a string, not a number \(5\)"),
        ("- a\n- b\n", r"document 1: expected a Kubernetes object or List, got a list"),
        ("kind: List\nitems: 5\n", r"document 1 \(List\): items must be a list, not a number"),
        ("kind: List\nitems: [7]\n", r"document 1 items\[0\]: expected a Kubernetes object"),
        (
            "---\n---\nkind: Secret\nmetadata: [x]\n",
            r"document 2 \(Secret/\?\)\.metadata: expected a mapping, got a list",
        ),
        (
            "kind: Secret\nmetadata: {name: s, labels: [a]}\n",
            r"document 1 \(Secret/s\)\.metadata\.labels: expected a mapping",
        ),
        (
            "kind: Secret\nmetadata: {name: s}\ndata: [a]\n",
            r"document 1 \(Secret/s\)\.data: expected a mapping",
        ),
        (
            "kind: Secret\nmetadata: {name: {a: b}}\n",
            r"document 1 \(Secret/\?\)\.metadata\.name: expected a string",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: x}\ndata: !!binary aGk=\n",
            r"document 1\.data: a bytes is not Kubernetes data",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: x}\ndata: &a {b: *a}\n",
            r"document 1\.data\.b: a YAML alias refers to a node that contains it",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: argocd-cm}\ndata: [1]\n",
            r"document 1 \(ConfigMap/argocd-cm\)\.data: expected a mapping",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: argocd-cm}\ndata: {timeout.reconciliation: soon}\n",
            r"\(ConfigMap/argocd-cm\)\.data\.timeout\.reconciliation: invalid duration",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: argocd-rbac-cm}\ndata: {policy.csv: [1]}\n",
            r"\.data\.policy\.csv: expected a string, got a list",
        ),
        (
            "kind: Application\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: a}\nspec: 5\n",
            r"document 1 \(Application/a\)\.spec",
        ),
        (
            "kind: Application\napiVersion: v1\nmetadata: {name: a}\n",
            r"document 1 \(Application/a\): apiVersion must be argoproj\.io/v1alpha1",
        ),
        (
            "kind: ApplicationSet\napiVersion: argoproj.io/v1alpha1\nmetadata: {name: s}\n"
            "spec: {generators: {}}\n",
            r"\(ApplicationSet/s\)\.spec\.generators: required",
        ),
        (
            CLUSTER % "[1]",
            r"document 1 \(Secret/s\): data\.config: expected a mapping, got a list",
        ),
        (
            CLUSTER % '{"tlsClientConfig": "x"}',
            r"data\.config\.tlsClientConfig: expected a mapping, got a string",
        ),
        (
            CLUSTER % '{"execProviderConfig": {"command": "a", "args": "-x"}}',
            r"data\.config\.execProviderConfig\.args: expected a list, got a string",
        ),
        (
            CLUSTER % '{"bearerToken": 5}',
            r"data\.config\.bearerToken: expected a string, got a number",
        ),
        (
            "kind: Secret\nmetadata: {name: s}\nstringData: {a: [1]}\n",
            r"document 1 \(Secret/s\)\.stringData\.a: expected a string, got a list",
        ),
        (
            "kind: ConfigMap\nmetadata: {name: argocd-cm}\n"
            "data: {repositories: '[{url: x, passwordSecret: [1]}]'}\n",
            r"data\.repositories\[0\]\.passwordSecret: expected a mapping, got a list",
        ),
        (
            "kind: Secret\nmetadata: {name: s}\ndata: {a: 5}\n",
            r"\(Secret/s\)\.data\.a: expected a string, got a number",
        ),
    ],
)
def test_malformed_documents_fail_naming_file_document_and_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each malformed document ends the import with exit 2 and `config error: FILE document
    N (Kind/name)...: reason`; no directory is written."""
    src = tmp_path / "bad.yaml"
    src.write_text(text)
    code, out, err, dest = _main(tmp_path, src)
    assert code == 2, (out, err)
    assert err.startswith(f"config error: {src} document "), err
    assert len(re.findall(message, err)) == 1, err
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


_WRONG: list[Any] = [5, "x", [], [1, {"a": None}], {}, {"k": [1]}, None, True, 1.5]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of `value` (mapping keys and list indexes)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _mutants(seed: int, count: int) -> list[list[dict[str, Any]]]:
    """Copies of the valid backup with one node (a field, or a Secret's config JSON
    decoded) replaced by a value of another type."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        docs = backup()
        i = rng.randrange(len(docs))
        doc = docs[i]
        if doc["kind"] == "Secret" and "config" in doc.get("data", {}) and rng.random() < 0.5:
            config = json.loads(base64.b64decode(doc["data"]["config"]))
            config["execProviderConfig"] = {"command": "login", "args": ["a"], "env": {"A": "1"}}
            path = rng.choice(_paths(config)[1:])
            _set(config, path, copy.deepcopy(rng.choice(_WRONG)))
            doc["data"]["config"] = b64(json.dumps(config))
        else:
            path = rng.choice(_paths(doc)[1:])
            _set(doc, path, copy.deepcopy(rng.choice(_WRONG)))
        out.append(docs)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_backups_import_or_fail_cleanly(tmp_path: Path, seed: int) -> None:
    """A hundred single-field mutations of a valid backup each import (exit 0) or stop with
    a config error naming the file and a document (exit 2, nothing written): no traceback."""
    for n, docs in enumerate(_mutants(seed, 100)):
        case = tmp_path / str(n)
        case.mkdir()
        code, _, err, dest = run_cli(case, docs)
        assert code in (0, 2), (docs, err)
        if code == 2:
            assert err.startswith("config error: ") and "document " in err, (docs, err)
            assert not dest.exists(), docs


def test_exec_credentials_are_refused_by_default_and_reported_with_their_command(
    tmp_path: Path,
) -> None:
    """Through the real CLI: a cluster Secret's exec provider is left out and IMPORT-REPORT
    names the cluster and the command; with --allow-exec-credentials it is carried and the
    report says so."""
    docs = [
        cluster_secret(
            "edge", {"execProviderConfig": {"command": "/opt/login", "args": ["--as", "me"]}}
        )
    ]
    src = tmp_path / "clusters.yaml"
    src.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs}))
    for flags, verdict in (([], "REFUSED"), (["--allow-exec-credentials"], "ALLOWED")):
        dest = tmp_path / f"out-{verdict}"
        r = subprocess.run(
            [GITOPSD, "import", "argocd", str(src), "--to", str(dest), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        report = (dest / "IMPORT-REPORT.txt").read_text()
        assert f"cluster 'edge': exec credential command {verdict}" in report, report
        assert "/opt/login --as me" in report
        kube = next((dest / "credentials").glob("cluster-edge-*.kubeconfig")).read_text()
        assert ("/opt/login" in kube) == (verdict == "ALLOWED")


@pytest.mark.cluster
def test_clusters_whose_names_slug_alike_sync_with_their_own_credentials(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """`edge/1` (valid client certificate) and `edge-1` (a wrong token) on the same control
    plane import into two kubeconfigs: `run --once` syncs the app for edge/1 and refuses the
    one for edge-1 (401), instead of both using whichever Secret was written last."""
    git_repo.write({"a/cm.yaml": configmap("slug-a"), "b/cm.yaml": configmap("slug-b")})
    good = real_cluster_secret("edge/1", cluster)
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "cluster-edge-1-token"
    config = json.loads(base64.b64decode(good["data"]["config"]))
    tls = config["tlsClientConfig"]
    bad_config = {"bearerToken": "wrong", "tlsClientConfig": {"caData": tls["caData"]}}
    bad["data"].update(name=b64("edge-1"), config=b64(json.dumps(bad_config)))
    apps = []
    for name, path, target in (("slug-a", "a", "edge/1"), ("slug-b", "b", "edge-1")):
        app = application(name, git_repo.url, path, namespace)
        app["spec"]["destination"] = {"name": target, "namespace": namespace}
        apps.append(app)
    src = tmp_path / "backup.yaml"
    src.write_text(yaml.safe_dump(kubectl_list([good, bad, *apps])))
    dest = tmp_path / "imported"
    r = subprocess.run(
        [GITOPSD, "import", "argocd", str(src), "--to", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    run = subprocess.run(
        [GITOPSD, "run", "-c", str(dest / "gitopsd.yaml"), "--once"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert get(cluster, namespace, "configmap/slug-a") is not None, run.stdout + run.stderr
    assert get(cluster, namespace, "configmap/slug-b") is None, "edge-1 used edge/1's credentials"
