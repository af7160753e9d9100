"""`gitopsd import argocd` conversions, without a cluster: cluster and repository Secrets,
argocd-cm's legacy repositories, and the report of what is not carried over."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import yaml

from daemon.dr.importer import convert
from daemon.errors import ConfigError

SOURCE = {"repoURL": "https://git.example/a.git", "path": "a"}
DEST = {"server": "https://kubernetes.default.svc", "namespace": "a"}


def secret(secret_name: str, stype: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "labels": {"argocd.argoproj.io/secret-type": stype}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_cluster_secrets_become_kubeconfigs_with_what_they_can_express() -> None:
    """A bearer token and (allowed) an exec provider carry over into the kubeconfig; an AWS
    login config is reported; the cluster's extra labels stay on the entry (clusters
    generator)."""
    config = {
        "bearerToken": "tok",
        "tlsClientConfig": {"insecure": True},
        "execProviderConfig": {"command": "login", "args": ["-x"], "env": {"A": "1"}},
        "awsAuthConfig": {"clusterName": "prod"},
    }
    s = secret("c1", "cluster", name="prod", server="https://prod:6443", config=json.dumps(config))
    s["metadata"]["labels"]["env"] = "production"
    out = convert([("clusters.yaml", s)], allow_exec=True)
    cfg = yaml.safe_load(out.files["gitopsd.yaml"][0])
    entry = cfg["clusters"][0]
    assert re.fullmatch(r"credentials/cluster-prod-[0-9a-f]{10}\.kubeconfig", entry["kubeconfig"])
    assert entry == {
        "name": "prod",
        "server": "https://prod:6443",
        "kubeconfig": entry["kubeconfig"],
        "labels": {"env": "production"},
    }
    kube, mode = out.files[entry["kubeconfig"]]
    assert mode == 0o600
    user = yaml.safe_load(kube)["users"][0]["user"]
    assert user["token"] == "tok" and user["exec"]["command"] == "login"
    assert user["exec"]["env"] == [{"name": "A", "value": "1"}]
    assert yaml.safe_load(kube)["clusters"][0]["cluster"]["insecure-skip-tls-verify"] is True
    assert any("awsAuthConfig" in line for line in out.report)


def test_repositories_from_secrets_and_from_argocd_cm() -> None:
    """A repository Secret and argocd-cm's legacy list (with the Secret it names) become
    repositories entries with 0600 credential files; a missing Secret is reported; the
    reconciliation timeout becomes the poll interval."""
    repo = secret("r1", "repository", url="https://git.example/a.git", username="u", password="p")
    creds = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "git-key"},
        "stringData": {"key": "-----BEGIN KEY-----\nabc\n-----END KEY-----"},
    }
    legacy = [
        {"url": "git@example:b.git", "sshPrivateKeySecret": {"name": "git-key", "key": "key"}},
        {"url": "https://c.example/c.git", "passwordSecret": {"name": "gone", "key": "p"}},
    ]
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm"},
        "data": {"repositories": yaml.safe_dump(legacy), "timeout.reconciliation": "300s"},
    }
    out = convert([("r.yaml", repo), ("s.yaml", creds), ("cm.yaml", cm)])
    cfg = yaml.safe_load(out.files["gitopsd.yaml"][0])
    assert cfg["settings"]["reconcileInterval"] == "300s"
    urls = [r["url"] for r in cfg["repositories"]]
    assert urls == ["https://git.example/a.git", "git@example:b.git", "https://c.example/c.git"]
    first = cfg["repositories"][0]
    assert out.files[first["passwordFile"]] == (b"p", 0o600) and first["username"] == "u"
    key = cfg["repositories"][1]["sshPrivateKeyFile"]
    assert out.files[key][0].endswith(b"-----END KEY-----\n")
    assert any("names Secret gone key p, not among the files" in line for line in out.report)
    kept = yaml.safe_load(out.files["apps/argocd-cm.yaml"][0])
    assert "repositories" not in kept["data"] and "timeout.reconciliation" not in kept["data"]
    assert any("Secret/git-key): not carried over" in line for line in out.report)


def test_a_cluster_secret_without_a_server_names_the_file_and_secret() -> None:
    """The error names the file and the Secret; nothing is produced."""
    with pytest.raises(ConfigError, match=r"c\.yaml \(Secret/x\): a cluster Secret needs"):
        convert([("c.yaml", secret("x", "cluster", name="x"))])


def test_argocd_admin_export_documents_are_sorted_by_kind() -> None:
    """`argocd admin export` output (one stream of documents): Applications, AppProjects and
    ApplicationSets are kept without status or server fields, each kind in its own file; a
    pending operation is dropped and reported; other kinds are reported."""
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "a", "namespace": "argocd", "uid": "1", "resourceVersion": "9"},
        "spec": {"project": "default", "source": SOURCE, "destination": DEST},
        "status": {"sync": {"status": "Synced"}},
        "operation": {"sync": {}},
    }
    aset = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "s", "namespace": "argocd"},
        "spec": {"generators": [], "template": {}},
    }
    other = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "argocd-server"}}
    out = convert([("export.yaml", app), ("export.yaml", aset), ("export.yaml", other)])
    assert out.counts["Application"] == 1 and out.counts["ApplicationSet"] == 1
    kept = yaml.safe_load(out.files["apps/applications.yaml"][0])
    assert kept == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "spec": {"project": "default", "source": SOURCE, "destination": DEST},
        "metadata": {"name": "a", "namespace": "argocd"},
    }
    assert "apps/applicationsets.yaml" in out.files
    assert any("pending operation" in line for line in out.report)
    assert any("Deployment/argocd-server): not carried over" in line for line in out.report)


def test_helm_and_oci_repository_secrets_keep_their_kind_and_client_certificates() -> None:
    """A repository Secret of type helm with enableOCI, plain HTTP and a client certificate
    becomes an entry gitopsd's chart cache uses as Argo CD would, the certificate and key in
    0600 files."""
    repo = secret(
        "oci",
        "repository",
        url="registry.example.com/charts",
        type="helm",
        enableOCI="true",
        insecureOCIForceHttp="true",
        tlsClientCertData="CERT",
        tlsClientCertKey="KEY",
    )
    out = convert([("r.yaml", repo)])
    entry = yaml.safe_load(out.files["gitopsd.yaml"][0])["repositories"][0]
    assert entry["type"] == "helm" and entry["enableOCI"] and entry["insecureOCIForceHttp"]
    assert out.files[entry["tlsClientCertFile"]] == (b"CERT", 0o600)
    assert out.files[entry["tlsClientKeyFile"]] == (b"KEY", 0o600)


def test_exec_credentials_are_refused_unless_allowed_and_reported_either_way() -> None:
    """A cluster's execProviderConfig (a command gitopsd would run as itself) is left out of
    the kubeconfig by default; with allow_exec it is carried; the report names the cluster
    and the command line either way."""
    config = {"execProviderConfig": {"command": "aws-login", "args": ["--role", "x y"]}}
    s = secret("c1", "cluster", name="prod", server="https://prod:6443", config=json.dumps(config))
    refused = convert([("clusters.yaml", s)])
    path = yaml.safe_load(refused.files["gitopsd.yaml"][0])["clusters"][0]["kubeconfig"]
    assert "exec" not in yaml.safe_load(refused.files[path][0])["users"][0]["user"]
    (line,) = [r for r in refused.report if "exec credential" in r]
    assert "cluster 'prod': exec credential command REFUSED" in line
    assert "aws-login --role 'x y'" in line and "--allow-exec-credentials" in line
    allowed = convert([("clusters.yaml", s)], allow_exec=True)
    user = yaml.safe_load(allowed.files[path][0])["users"][0]["user"]
    assert user["exec"]["command"] == "aws-login"
    assert any("ALLOWED" in r and "aws-login --role 'x y'" in r for r in allowed.report)


def test_cluster_names_that_slug_alike_keep_their_own_credentials() -> None:
    """`edge/1` and `edge-1` get a kubeconfig each, each holding its own server and token."""
    docs = [
        (f"c{i}.yaml", secret(f"s{i}", "cluster", name=n, server=f"https://{i}:6443", config=c))
        for i, (n, c) in enumerate(
            [("edge/1", json.dumps({"bearerToken": "one"})), ("edge-1", '{"bearerToken": "two"}')]
        )
    ]
    out = convert(docs)
    cfg = yaml.safe_load(out.files["gitopsd.yaml"][0])
    paths = {c["name"]: c["kubeconfig"] for c in cfg["clusters"]}
    assert paths["edge/1"] != paths["edge-1"]
    for name, server, token in (
        ("edge/1", "https://0:6443", "one"),
        ("edge-1", "https://1:6443", "two"),
    ):
        kube = yaml.safe_load(out.files[paths[name]][0])
        assert kube["clusters"][0]["cluster"]["server"] == server
        assert kube["users"][0]["user"]["token"] == token


def test_two_inputs_for_one_cluster_name_or_one_file_are_refused() -> None:
    """The same cluster name twice, or two repository Secrets that would write the same
    credentials file, stop the import with both documents named."""
    a = secret("a", "cluster", name="edge", server="https://a:6443")
    b = secret("b", "cluster", name="edge", server="https://b:6443")
    with pytest.raises(
        ConfigError,
        match=r"y\.yaml \(Secret/b\): cluster name 'edge' is also "
        r"defined by x\.yaml \(Secret/a\)",
    ):
        convert([("x.yaml", a), ("y.yaml", b)])
    r = secret("r", "repository", url="https://git.example/a.git", password="p")
    with pytest.raises(
        ConfigError,
        match=r"y\.yaml \(Secret/r\): would write credentials/"
        r"repo-r-\w+\.password, already written for x\.yaml",
    ):
        convert([("x.yaml", r), ("y.yaml", r)])
