"""Start and stop a real local Kubernetes control plane for tests and the demo.

`serve DIR` runs etcd, kube-apiserver, kube-controller-manager and the node simulator in the
foreground until SIGTERM/SIGINT, writing DIR/kubeconfig once the API answers and DIR/ready when
the node is Ready. `up DIR` starts `serve` detached and waits for it (idempotent); `down DIR`
stops it. Components die with their supervisor (PR_SET_PDEATHSIG), so an interrupted test run
leaves no process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ADMIN_USER = "gitopsd-admin"
SERVICE_CIDR = "10.96.0.0/16"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries() -> Path:
    """Build (or reuse) the control-plane binaries and return their directory."""
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    for line in lines[:-1]:
        print(line, file=sys.stderr)
    return Path(lines[-1])


# --- certificates -------------------------------------------------------------------------


def _write_pki(d: Path) -> None:
    """CA, apiserver serving cert, admin client cert and service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=30)

    def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitopsd-testenv-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        cn: str, orgs: list[str], usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
    ]
    serving = leaf("kube-apiserver", [], ExtendedKeyUsageOID.SERVER_AUTH, sans)
    admin = leaf(ADMIN_USER, ["system:masters"], ExtendedKeyUsageOID.CLIENT_AUTH, [])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.crt").write_bytes(serving[0])
    (d / "apiserver.key").write_bytes(serving[1])
    (d / "admin.crt").write_bytes(admin[0])
    (d / "admin.key").write_bytes(admin[1])
    (d / "sa.key").write_bytes(key_pem(sa_key))
    (d / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for name in ("apiserver.key", "admin.key", "sa.key"):
        (d / name).chmod(0o600)


def _kubeconfig(pki: Path, server: str) -> str:
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gitopsd-testenv",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64("admin.crt"),
                    "client-key-data": b64("admin.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "gitopsd-testenv",
                "context": {"cluster": "gitopsd-testenv", "user": ADMIN_USER},
            }
        ],
        "current-context": "gitopsd-testenv",
    }
    return json.dumps(cfg, indent=2)


# --- processes ----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: receive SIGKILL when the supervisor dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Supervisor:
    """Owns the component processes of one control plane."""

    def __init__(self, state: Path, bindir: Path) -> None:
        self.state = state
        self.bindir = bindir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(self.bindir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_http(
    url: str, sup: Supervisor, *, timeout: float, client: httpx.AsyncClient
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        sup.check_alive()
        try:
            r = await client.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as e:
            last = repr(e)
        await asyncio.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {url}: {last}")


async def serve(state: Path) -> None:
    """Run the control plane until signalled; see the module docstring."""
    from nodesim import NodeSimulator  # sibling module; sys.path set in main()

    bindir = binaries()
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("kubeconfig", "ready", "error"):
        (state / stale).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gitopsd-testenv-"))
    pki = work / "pki"
    pki.mkdir()
    _write_pki(pki)
    sup = Supervisor(state, bindir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    (state / "pid").write_text(str(os.getpid()))
    try:
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        sup.spawn(
            "etcd",
            [
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )
        async with httpx.AsyncClient() as plain:
            await _wait_http(f"{etcd_url}/health", sup, timeout=60, client=plain)
        server = f"https://127.0.0.1:{api_port}"
        sup.spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={work / 'apiserver-certs'}",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(_kubeconfig(pki, server))
        async with httpx.AsyncClient(verify=ctx, base_url=server) as api:
            await _wait_http("/readyz", sup, timeout=120, client=api)
            sup.spawn(
                "kube-controller-manager",
                [
                    f"--kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    "--use-service-account-credentials=false",
                    "--controllers=*,-node-lifecycle-controller",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--kube-api-qps=500",
                    "--kube-api-burst=1000",
                    "--concurrent-deployment-syncs=10",
                    "--concurrent-replicaset-syncs=10",
                    "--v=1",
                ],
            )
            sim = NodeSimulator(api)
            sim_task = asyncio.create_task(sim.run())
            await sim.ready.wait()
            # Publish the kubeconfig atomically only once the node is up.
            tmp = state / "kubeconfig.tmp"
            tmp.write_text(kubeconfig.read_text())
            tmp.replace(state / "kubeconfig")
            (state / "ready").write_text(server)
            print(f"testenv: control plane ready at {server}", file=sys.stderr, flush=True)
            while not stop.is_set():
                sup.check_alive()
                if sim_task.done():
                    sim_task.result()
                    raise RuntimeError("node simulator stopped")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim_task
    except BaseException as e:
        (state / "error").write_text(f"{type(e).__name__}: {e}")
        raise
    finally:
        sup.stop()
        shutil.rmtree(work, ignore_errors=True)
        for name in ("kubeconfig", "ready", "pid"):
            (state / name).unlink(missing_ok=True)


def _alive(state: Path) -> bool:
    try:
        pid = int((state / "pid").read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return (state / "ready").exists()


def up(state: Path, *, timeout: float = 1800) -> None:
    """Start the control plane in the background unless it is already up."""
    if _alive(state):
        print(f"testenv: already running ({state / 'kubeconfig'})")
        return
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("ready", "error", "pid", "kubeconfig"):
        (state / stale).unlink(missing_ok=True)
    log = (state / "supervisor.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "serve", str(state)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / "ready").exists():
            print(f"testenv: ready; kubeconfig at {state / 'kubeconfig'}")
            return
        if proc.poll() is not None or (state / "error").exists():
            err = (state / "error").read_text() if (state / "error").exists() else ""
            tail = (state / "supervisor.log").read_text(errors="replace")[-4000:]
            raise SystemExit(f"testenv: control plane failed to start: {err}\n{tail}")
        time.sleep(0.5)
    raise SystemExit("testenv: timed out waiting for the control plane")


def down(state: Path) -> None:
    """Stop a control plane started with `up`."""
    try:
        pid = int((state / "pid").read_text())
    except (OSError, ValueError):
        print("testenv: not running")
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for name in ("kubeconfig", "ready", "pid"):
        (state / name).unlink(missing_ok=True)
    print("testenv: stopped")


def main() -> None:
    sys.path.insert(0, str(HERE))
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("command", choices=["build", "serve", "up", "down"])
    p.add_argument("state", nargs="?", default=".cluster", type=Path)
    a = p.parse_args()
    if a.command == "build":
        print(binaries())
    elif a.command == "serve":
        asyncio.run(serve(a.state.resolve()))
    elif a.command == "up":
        up(a.state.resolve())
    else:
        down(a.state.resolve())


if __name__ == "__main__":
    main()
