"""Shared fixtures: the real local control plane (session) and a fresh namespace (per test)."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TESTENV = ROOT / "tests" / "testenv"


@dataclass(frozen=True)
class Cluster:
    """A running control plane: its kubeconfig and TLS material for direct API calls."""

    kubeconfig: Path
    server: str
    ssl_context: ssl.SSLContext

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run kubectl against this cluster and return stdout."""
        r = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def client(self) -> httpx.AsyncClient:
        """A new async HTTP client for the API server (admin credentials)."""
        return httpx.AsyncClient(base_url=self.server, verify=self.ssl_context, timeout=30)

    def sync_client(self) -> httpx.Client:
        """A new blocking HTTP client for the API server (admin credentials)."""
        return httpx.Client(base_url=self.server, verify=self.ssl_context, timeout=30)


def _ssl_from_kubeconfig(path: Path) -> tuple[str, ssl.SSLContext]:
    cfg = yaml.safe_load(path.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    d = Path(tempfile.mkdtemp(prefix="gitopsd-kc-"))
    (d / "ca").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (d / "crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (d / "key").write_bytes(base64.b64decode(user["client-key-data"]))
    ctx = ssl.create_default_context(cafile=str(d / "ca"))
    ctx.load_cert_chain(str(d / "crt"), str(d / "key"))
    return str(cluster["server"]), ctx


def _alive(state: Path) -> bool:
    try:
        os.kill(int((state / "pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return (state / "ready").exists()


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def start_cluster(state: Path) -> Iterator[Path]:
    """Run `cluster.py serve` for the duration of the block; yields the kubeconfig path."""
    state.mkdir(parents=True, exist_ok=True)
    log = (state / "supervisor.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, str(TESTENV / "cluster.py"), "serve", str(state)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 1800  # the first run builds the binaries
        while not (state / "ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (state / "supervisor.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"test control plane did not start:\n{tail}")
            time.sleep(0.3)
        yield state / "kubeconfig"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's control plane: `make cluster`'s if it is up, else a private one."""
    shared = ROOT / ".cluster"
    with contextlib.ExitStack() as stack:
        if os.environ.get("GITOPSD_TEST_PRIVATE_CLUSTER") != "1" and _alive(shared):
            kubeconfig = shared / "kubeconfig"
        else:
            kubeconfig = stack.enter_context(start_cluster(tmp_path_factory.mktemp("cluster")))
        server, ctx = _ssl_from_kubeconfig(kubeconfig)
        yield Cluster(kubeconfig=kubeconfig, server=server, ssl_context=ctx)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with cluster.sync_client() as c:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        c.post("/api/v1/namespaces", json=body).raise_for_status()
        # Pods need the namespace's default ServiceAccount, which a controller creates.
        deadline = time.monotonic() + 30
        while c.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no default ServiceAccount in {name}")
            time.sleep(0.2)
    yield name
    with cluster.sync_client() as c:
        c.delete(f"/api/v1/namespaces/{name}")


def wait_for(
    predicate: Any, *, timeout: float = 60, interval: float = 0.3, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns a truthy value; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def dump_json(obj: Any) -> str:
    """Compact JSON for kubectl stdin."""
    return json.dumps(obj)


@pytest.fixture
async def aclient(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """An async admin client for the API server."""
    async with cluster.client() as c:
        yield c


# --- git and gitopsd helpers ------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def helm_binary() -> str:
    """A real helm binary (installed into the cache by tests/testenv/install-helm.sh)."""
    out = subprocess.run(
        ["bash", str(TESTENV / "install-helm.sh")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    path = out.stdout.strip().splitlines()[-1]
    os.environ["GITOPSD_HELM"] = path
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A real `git daemon` on loopback serving bare repositories from a directory."""
    base = tmp_path_factory.mktemp("git-server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + 10
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield base, f"git://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


class GitRepo:
    """A working copy whose commits are pushed to a bare repo the git daemon serves."""

    def __init__(self, work: Path, bare: Path, url: str) -> None:
        self.work, self.bare, self.url = work, bare, url

    def git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        }
        r = subprocess.run(
            ["git", *args], cwd=self.work, env=env, capture_output=True, text=True, timeout=60
        )
        if r.returncode != 0:
            raise AssertionError(f"git {' '.join(args)}: {r.stderr}")
        return r.stdout.strip()

    def write(self, files: dict[str, str | None], message: str = "update") -> str:
        """Write (or delete, with None) files, commit, push; returns the new SHA."""
        for rel, content in files.items():
            p = self.work / rel
            if content is None:
                if p.exists():
                    p.unlink()
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        self.git("push", "-q", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def git_repo(git_server: tuple[Path, str], tmp_path: Path) -> GitRepo:
    """A fresh repository served over git:// with a `main` branch."""
    base, url = git_server
    name = f"repo-{uuid.uuid4().hex[:8]}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(base / name)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    repo = GitRepo(work, base / name, f"{url}/{name}")
    repo.git("init", "-q", "-b", "main")
    repo.git("remote", "add", "origin", str(base / name))
    return repo


def write_config(
    tmp_path: Path, cluster: Cluster, apps: list[dict[str, Any]], **settings: Any
) -> Path:
    """A gitopsd.yaml with the test cluster, the given Application documents, and settings."""
    appdir = tmp_path / "apps"
    appdir.mkdir(exist_ok=True)
    for app in apps:
        (appdir / f"{app['metadata']['name']}.yaml").write_text(yaml.safe_dump(app))
    base = {
        "syncWaveDelay": "0s",
        "healthTimeout": "60s",
        "cacheDir": str(tmp_path / "cache"),
        "stateDir": str(tmp_path / "state"),
        "inventoryNamespace": "gitopsd-test-inventory",
    }
    base.update(settings)
    cfg = {
        "applications": ["apps/*.yaml"],
        "clusters": [
            {
                "name": "in-cluster",
                "server": "https://kubernetes.default.svc",
                "kubeconfig": str(cluster.kubeconfig),
            }
        ],
        "settings": base,
    }
    path = tmp_path / "gitopsd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def application(
    name: str,
    repo_url: str,
    path: str,
    namespace: str,
    *,
    automated: bool = True,
    prune: bool = True,
    self_heal: bool = True,
    options: list[str] | None = None,
    source_extra: dict[str, Any] | None = None,
    **spec_extra: Any,
) -> dict[str, Any]:
    """An Argo CD Application document as users write it."""
    spec: dict[str, Any] = {
        "project": "default",
        "source": {
            "repoURL": repo_url,
            "targetRevision": "main",
            "path": path,
            **(source_extra or {}),
        },
        "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
        "syncPolicy": {"syncOptions": options or []},
    }
    if automated:
        spec["syncPolicy"]["automated"] = {"prune": prune, "selfHeal": self_heal}
    spec.update(spec_extra)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": spec,
    }


@pytest.fixture(scope="session")
def cluster2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second, independent control plane (multi-cluster tests)."""
    with start_cluster(tmp_path_factory.mktemp("cluster2")) as kubeconfig:
        server, ctx = _ssl_from_kubeconfig(kubeconfig)
        yield Cluster(kubeconfig=kubeconfig, server=server, ssl_context=ctx)


class TcpProxy:
    """A loopback TCP forwarder the test can cut and restore (a cluster going away)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket
        import threading

        self.target = (target_host, target_port)
        self.port = _free_port()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import socket
        import threading

        self._stop.clear()
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        srv.settimeout(0.2)
        self._server = srv
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket
        import threading

        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._stop.set()
        if self._server is not None:
            self._server.close()
        if self._thread is not None:
            self._thread.join(2)
        import socket

        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._conns.clear()
