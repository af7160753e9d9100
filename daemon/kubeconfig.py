"""How to reach a cluster: server URL, TLS context and the Authorization header, from a
kubeconfig file, the pod's service account, or a bearer token file.

Static credentials (CA, client certificate and key, token, tokenFile, basic auth; inline `-data`
or files relative to the kubeconfig) are read here. Only what needs code to run (an `exec`
credential plugin, an `auth-provider`, several merged KUBECONFIG files) goes through
kubernetes-asyncio's loader, imported only then: importing it pulls in its whole generated API
client (0.8 s on the development machine), which a daemon start or a `run --once` must not pay
for a plain certificate or token.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.errors import KubeError

Headers = dict[str, str]
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_STATIC_USER_KEYS = {
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "token",
    "tokenFile",
    "username",
    "password",
}
_TOKEN_TTL = 60.0  # a token file is re-read at most this often (kubelet rotates them)


@dataclass(frozen=True)
class Credentials:
    """Everything a client needs to talk to one API server."""

    server: str
    verify: ssl.SSLContext | bool
    auth: Callable[[], Awaitable[Headers]] = field(default=lambda: _no_headers())
    refresh: Callable[[], Awaitable[Headers]] | None = None  # after a 401
    tls_server_name: str = ""


async def _no_headers() -> Headers:
    return {}


class _TokenFile:
    """A bearer token read from a file, re-read after `_TOKEN_TTL` or when forced (401)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = ""
        self.read_at = 0.0

    async def headers(self) -> Headers:
        if not self.value or time.monotonic() - self.read_at > _TOKEN_TTL:
            return await self.reread()
        return {"Authorization": f"Bearer {self.value}"}

    async def reread(self) -> Headers:
        self.value = self.path.read_text().strip()
        self.read_at = time.monotonic()
        return {"Authorization": f"Bearer {self.value}"}


def _ssl_context(*, ca_file: str = "", ca_data: str = "", insecure: bool = False) -> ssl.SSLContext:
    """A client TLS context trusting the cluster's CA only (the system's when none is given:
    loading the system bundle costs a tenth of a second and trusts more than needed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file or ca_data:
        ctx.load_verify_locations(cafile=ca_file or None, cadata=ca_data or None)
    else:
        ctx.load_default_certs()
    return ctx


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load an in-memory certificate and key (the ssl module only reads files: they live in a
    private directory for the call and are gone when it returns)."""
    with tempfile.TemporaryDirectory(prefix="gitopsd-tls-") as d:
        cert_path, key_path = Path(d) / "tls.crt", Path(d) / "tls.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(str(cert_path), str(key_path))


def from_token_file(*, server: str, token_file: str, ca_file: str, insecure: bool) -> Credentials:
    """A bearer token file (re-read on rotation and after a 401) and a CA file."""
    token = _TokenFile(Path(token_file))
    verify: ssl.SSLContext | bool = False if insecure else _ssl_context(ca_file=ca_file)
    return Credentials(server=server, verify=verify, auth=token.headers, refresh=token.reread)


def in_cluster(subject: str) -> Credentials:
    """The pod's service account, as every in-cluster client finds it."""
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not port:
        raise KubeError(subject, "load in-cluster config", "KUBERNETES_SERVICE_HOST/PORT unset")
    if ":" in host:
        host = f"[{host}]"
    token, ca = SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt"
    if not token.is_file() or not ca.is_file():
        raise KubeError(subject, "load in-cluster config", f"no service account token in {token}")
    return from_token_file(
        server=f"https://{host}:{port}", token_file=str(token), ca_file=str(ca), insecure=False
    )


async def from_kubeconfig(subject: str, path: str | None, context: str | None) -> Credentials:
    """The credentials of `context` (or the current context) in a kubeconfig file."""
    paths = [path] if path else os.environ.get("KUBECONFIG", "").split(os.pathsep)
    paths = [p for p in paths if p] or [str(Path("~/.kube/config").expanduser())]
    if len(paths) > 1:
        return await _with_library(subject, None, context)  # kubectl's merge rules
    file = Path(paths[0]).expanduser()
    try:
        doc = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KubeError(subject, "load kubeconfig", f"{file}: {e}") from e
    if not isinstance(doc, dict):
        raise KubeError(subject, "load kubeconfig", f"{file}: not a kubeconfig")

    def entry(section: str, name: str) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                value = item.get(section[:-1]) or {}
                return value if isinstance(value, dict) else {}
        raise KubeError(subject, "load kubeconfig", f"{file}: no {section[:-1]} named {name!r}")

    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        raise KubeError(subject, "load kubeconfig", f"{file}: no current-context and none given")
    ctx = entry("contexts", ctx_name)
    cluster = entry("clusters", str(ctx.get("cluster", "")))
    user = entry("users", str(ctx.get("user", ""))) if ctx.get("user") else {}
    if set(user) - _STATIC_USER_KEYS or cluster.get("proxy-url"):
        return await _with_library(subject, str(file), context)  # exec, auth-provider, ...
    return _static(subject, file, cluster, user)


def _static(subject: str, file: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Credentials:
    base = file.parent

    def data(d: dict[str, Any], key: str) -> bytes:
        """`key-data` (base64) or the file `key` names, relative to the kubeconfig."""
        try:
            if d.get(f"{key}-data"):
                return base64.b64decode(str(d[f"{key}-data"]), validate=False)
            if d.get(key):
                return (base / str(d[key])).expanduser().read_bytes()
        except (OSError, ValueError) as e:
            raise KubeError(subject, "load kubeconfig", f"{file}: {key}: {e}") from e
        return b""

    server = str(cluster.get("server") or "")
    if not server:
        raise KubeError(subject, "load kubeconfig", f"{file}: the cluster has no server")
    try:
        ctx = _ssl_context(
            ca_data=data(cluster, "certificate-authority").decode(),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )
        cert, key = data(user, "client-certificate"), data(user, "client-key")
        if cert:
            _load_cert_chain(ctx, cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise KubeError(subject, "load kubeconfig", f"{file}: TLS material: {e}") from e
    auth, refresh = _no_headers, None
    if user.get("tokenFile"):
        token = _TokenFile((base / str(user["tokenFile"])).expanduser())
        auth, refresh = token.headers, token.reread
    elif user.get("token"):
        fixed = {"Authorization": f"Bearer {user['token']}"}

        async def bearer() -> Headers:
            return fixed

        auth = bearer
    elif user.get("username"):
        pair = f"{user['username']}:{user.get('password', '')}".encode()
        basic = {"Authorization": "Basic " + base64.b64encode(pair).decode()}

        async def basic_auth() -> Headers:
            return basic

        auth = basic_auth
    return Credentials(
        server=server,
        verify=ctx,
        auth=auth,
        refresh=refresh,
        tls_server_name=str(cluster.get("tls-server-name") or ""),
    )


async def _maybe_await(value: Any) -> Any:
    """kubernetes-asyncio returns coroutines from some getters and plain values from others."""
    if hasattr(value, "__await__"):
        return await value
    return value


async def _with_library(subject: str, path: str | None, context: str | None) -> Credentials:
    """kubernetes-asyncio's loader, for credentials that run code (exec plugins, auth
    providers, token refresh) or merge several files."""
    from kubernetes_asyncio import config as kconfig
    from kubernetes_asyncio.client import Configuration

    cfg = Configuration()
    try:
        await kconfig.load_kube_config(
            config_file=path, context=context or None, client_configuration=cfg
        )
    except Exception as e:  # the loader raises many unrelated types
        raise KubeError(subject, "load kubeconfig", str(e)) from e
    verify: ssl.SSLContext | bool = False
    try:
        if cfg.verify_ssl:
            verify = _ssl_context(ca_file=cfg.ssl_ca_cert or "")
        elif cfg.cert_file:
            verify = _ssl_context(insecure=True)
        if cfg.cert_file and isinstance(verify, ssl.SSLContext):
            verify.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (ssl.SSLError, OSError) as e:
        raise KubeError(subject, "load kubeconfig", f"TLS material: {e}") from e

    async def headers() -> Headers:
        token = await _maybe_await(cfg.get_api_key_with_prefix("authorization"))
        if not token:
            token = await _maybe_await(cfg.get_api_key_with_prefix("BearerToken"))
        if token:
            return {"Authorization": str(token)}
        if cfg.username:
            return {"Authorization": str(await _maybe_await(cfg.get_basic_auth_token()))}
        return {}

    async def refresh() -> Headers:
        hook: Any = cfg.refresh_api_key_hook
        if hook is not None:
            await _maybe_await(hook(cfg))
        return await headers()

    return Credentials(server=str(cfg.host), verify=verify, auth=headers, refresh=refresh)
