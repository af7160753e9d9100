"""Kubeconfig files: static credentials read directly, plugins through kubernetes-asyncio."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from daemon import kubeconfig
from daemon.errors import KubeError
from tests.testenv.cluster import _write_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _write_pki(d)
    return d


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "main",
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "c", "user": "nobody"}},
        ],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(json.dumps(doc))
    return path


async def test_inline_client_certificate_and_ca(pki: Path, tmp_path: Path) -> None:
    """Inline `-data` fields give a context that trusts only the cluster CA and presents the
    client certificate; no Authorization header is sent."""
    path = write(
        tmp_path / "kc",
        {
            "client-certificate-data": b64(pki / "admin.crt"),
            "client-key-data": b64(pki / "admin.key"),
        },
        {"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(pki / "ca.crt")},
    )
    creds = await kubeconfig.from_kubeconfig("cluster t", str(path), None)
    assert creds.server == "https://127.0.0.1:6443"
    assert isinstance(creds.verify, ssl.SSLContext)
    assert creds.verify.verify_mode == ssl.CERT_REQUIRED
    subjects = [c["subject"] for c in creds.verify.get_ca_certs()]
    assert subjects == [((("commonName", "gitopsd-testenv-ca"),),)]
    assert await creds.auth() == {}
    assert not list(tmp_path.glob("gitopsd-tls-*")), "the key must not stay on disk"


async def test_files_relative_to_the_kubeconfig_and_token(pki: Path, tmp_path: Path) -> None:
    """File references resolve against the kubeconfig's directory; a token becomes a Bearer
    header; insecure-skip-tls-verify turns verification off."""
    (tmp_path / "sub").mkdir()
    for name in ("admin.crt", "admin.key"):
        (tmp_path / "sub" / name).write_bytes((pki / name).read_bytes())
    path = write(
        tmp_path / "kc",
        {"client-certificate": "sub/admin.crt", "client-key": "sub/admin.key", "token": "abc"},
        {"server": "https://h:1", "insecure-skip-tls-verify": True, "tls-server-name": "kube"},
    )
    creds = await kubeconfig.from_kubeconfig("cluster t", str(path), None)
    assert isinstance(creds.verify, ssl.SSLContext)
    assert creds.verify.verify_mode == ssl.CERT_NONE
    assert creds.tls_server_name == "kube"
    assert await creds.auth() == {"Authorization": "Bearer abc"}


async def test_token_file_is_reread_after_a_401(tmp_path: Path) -> None:
    """A tokenFile is read when first needed and again on refresh (a rotated token)."""
    token = tmp_path / "token"
    token.write_text("one\n")
    creds = await kubeconfig.from_kubeconfig(
        "cluster t", str(write(tmp_path / "kc", {"tokenFile": "token"})), None
    )
    assert await creds.auth() == {"Authorization": "Bearer one"}
    token.write_text("two")
    assert creds.refresh is not None
    assert await creds.refresh() == {"Authorization": "Bearer two"}


async def test_basic_auth(tmp_path: Path) -> None:
    """username/password become a Basic header."""
    path = write(tmp_path / "kc", {"username": "u", "password": "p"})
    creds = await kubeconfig.from_kubeconfig("cluster t", str(path), None)
    assert await creds.auth() == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}


async def test_errors_name_the_file_and_what_is_missing(tmp_path: Path) -> None:
    """A missing user, a missing file or broken TLS material is a KubeError naming the file."""
    path = write(tmp_path / "kc", {"token": "t"})
    with pytest.raises(KubeError, match=r"kc: no user named 'nobody'"):
        await kubeconfig.from_kubeconfig("cluster t", str(path), "other")
    with pytest.raises(KubeError, match="missing"):
        await kubeconfig.from_kubeconfig("cluster t", str(tmp_path / "missing"), None)
    bad = write(
        tmp_path / "bad",
        {"client-certificate-data": b64(path), "client-key-data": b64(path)},
    )
    with pytest.raises(KubeError, match=r"bad: TLS material"):
        await kubeconfig.from_kubeconfig("cluster t", str(bad), None)


async def test_exec_plugins_go_through_kubernetes_asyncio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user with an exec credential plugin (code to run) is handed to kubernetes-asyncio's
    loader; static users never import it."""
    calls: list[tuple[str | None, str | None]] = []

    async def fake(subject: str, path: str | None, context: str | None) -> kubeconfig.Credentials:
        calls.append((path, context))
        return kubeconfig.Credentials(server="https://x", verify=False)

    monkeypatch.setattr(kubeconfig, "_with_library", fake)
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}}
    path = write(tmp_path / "kc", exec_user)
    creds = await kubeconfig.from_kubeconfig("cluster t", str(path), None)
    assert creds.server == "https://x"
    assert calls == [(str(path), None)]
    await kubeconfig.from_kubeconfig("cluster t", str(write(tmp_path / "s", {"token": "t"})), None)
    assert len(calls) == 1


async def test_in_cluster_needs_the_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a pod the in-cluster loader says what is missing."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="KUBERNETES_SERVICE_HOST"):
        kubeconfig.in_cluster("cluster in-cluster")
