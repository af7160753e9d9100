"""gitopsd under systemd: the unit file is valid and hardened, and the daemon speaks sd_notify.

The daemon tests play systemd's side of the protocol with a unix datagram socket passed in
$NOTIFY_SOCKET; they need no cluster (the config has no applications).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from daemon.runner import SHUTDOWN_GRACE
from daemon.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "gitopsd.service"
SYSUSERS = ROOT / "systemd" / "gitopsd.sysusers.conf"
GITOPSD = Path(sys.executable).parent / "gitopsd"
WATCHDOG_USEC = 2_000_000


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned, in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{UNIT.name}:{lineno}: not a key=value line"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def timespan(value: str) -> float:
    """Seconds from a systemd time span such as '30s', '1min 30s' or '500ms'."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


class NotifySocket:
    """systemd's end of $NOTIFY_SOCKET: collects datagrams, waits for the one a test wants."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, str]] = []

    def close(self) -> None:
        self.sock.close()

    def wait_for(self, predicate: Callable[[str], bool], *, timeout: float, what: str) -> str:
        """Receive until a message satisfies `predicate`; fail naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            message = data.decode()
            self.received.append((time.monotonic(), message))
            if predicate(message):
                return message
        seen = [m for _, m in self.received]
        raise AssertionError(f"no {what} within {timeout} s; received {seen!r}")


def fields(message: str) -> dict[str, str]:
    """An sd_notify datagram as a dict (newline-separated KEY=VALUE assignments)."""
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_settings(path: Path, port: int, extra: str = "") -> None:
    path.write_text(
        "applications: []\n"
        "settings:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  cacheDir: {path.parent / 'cache'}\n"
        f"  stateDir: {path.parent / 'state'}\n" + extra
    )


@contextmanager
def daemon(tmp_path: Path, notify: NotifySocket, config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`gitopsd run` with systemd's notify and watchdog variables; killed if a test leaves it."""
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(WATCHDOG_USEC))
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "gitopsd.log").open("wb")
    proc = subprocess.Popen(
        [str(GITOPSD), "run", "-c", str(config)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def daemon_log(tmp_path: Path) -> str:
    return (tmp_path / "gitopsd.log").read_text(errors="replace")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    """A bound notify socket in the test's temporary folder."""
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_notify_protocol_ready_watchdog_reload_stop(tmp_path: Path, notify: NotifySocket) -> None:
    """The daemon sends READY, STATUS and WATCHDOG in time, survives SIGHUP and stops cleanly."""
    port = free_port()
    config = tmp_path / "gitopsd.yaml"
    write_settings(config, port)
    with daemon(tmp_path, notify, config) as proc:
        ready = notify.wait_for(lambda m: "READY=1" in m.splitlines(), timeout=30, what="READY=1")
        assert fields(ready).get("STATUS"), f"READY=1 without a STATUS: {ready!r}"
        ready_at = notify.received[-1][0]

        status = notify.wait_for(lambda m: "STATUS" in fields(m), timeout=15, what="STATUS=")
        assert fields(status)["STATUS"].strip(), f"empty STATUS: {status!r}"

        # Under WatchdogSec=2s systemd kills a service whose pings are 2 s apart or more.
        window_end = ready_at + 5.0
        while time.monotonic() < window_end:
            try:
                notify.wait_for(
                    lambda m: "WATCHDOG=1" in m.splitlines(),
                    timeout=window_end - time.monotonic(),
                    what="WATCHDOG=1",
                )
            except AssertionError:
                break
        pings = [t for t, m in notify.received if "WATCHDOG=1" in m.splitlines() and t >= ready_at]
        assert len(pings) >= 3, f"{len(pings)} WATCHDOG=1 in the 5 s after READY=1"
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < WATCHDOG_USEC / 1e6, f"watchdog gaps {gaps} reach WATCHDOG_USEC"

        proc.send_signal(signal.SIGHUP)
        # At most one ping can be queued from before the signal; the second is from after it.
        for _ in range(2):
            notify.wait_for(
                lambda m: "WATCHDOG=1" in m.splitlines(), timeout=5, what="WATCHDOG=1 after SIGHUP"
            )
        assert proc.poll() is None, f"daemon exited on SIGHUP:\n{daemon_log(tmp_path)}"
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert r.status_code == 200, r.text

        proc.send_signal(signal.SIGTERM)
        notify.wait_for(lambda m: "STOPPING=1" in m.splitlines(), timeout=30, what="STOPPING=1")
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running 30 s after SIGTERM:\n{daemon_log(tmp_path)}")
        assert code == 0, f"exit code {code} after SIGTERM:\n{daemon_log(tmp_path)}"


def test_reload_with_broken_config_keeps_serving(tmp_path: Path, notify: NotifySocket) -> None:
    """`systemctl reload` of a broken config keeps the daemon serving and reports it in STATUS."""
    port = free_port()
    config = tmp_path / "gitopsd.yaml"
    write_settings(config, port)
    with daemon(tmp_path, notify, config) as proc:
        notify.wait_for(lambda m: "READY=1" in m.splitlines(), timeout=30, what="READY=1")

        # Keep the mtime so the daemon's file watcher stays quiet and only SIGHUP reloads.
        before = config.stat()
        write_settings(config, port, "  maxConcurrentSyncs: 0\n")
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for(
            lambda m: "config error" in fields(m).get("STATUS", ""),
            timeout=15,
            what="STATUS with the config error",
        )
        assert proc.poll() is None, f"daemon exited on a broken reload:\n{daemon_log(tmp_path)}"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert "maxConcurrentSyncs" in ready["configError"], ready

        write_settings(config, port)
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for(
            lambda m: "STATUS" in fields(m) and "config error" not in fields(m)["STATUS"],
            timeout=15,
            what="STATUS without the config error after fixing the config",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, daemon_log(tmp_path)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts every section, key and value of the unit."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    # verify also checks that ExecStart exists; point it at the gitopsd this test runs with.
    text = UNIT.read_text().replace("/usr/local/bin/gitopsd", str(GITOPSD))
    assert str(GITOPSD) in text, "ExecStart no longer names /usr/local/bin/gitopsd"
    unit = tmp_path / "gitopsd.service"
    unit.write_text(text)
    r = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER=""),
    )
    # Other units on the machine may be reported too; only lines about ours count.
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "gitopsd.service" in line]
    assert r.returncode == 0 and not ours, f"rc={r.returncode}\n{r.stdout}{r.stderr}"


def test_sysusers_creates_the_units_user(tmp_path: Path) -> None:
    """systemd-sysusers creates the unit's User= with the state directory as its home."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers not installed (Debian package: systemd)")
    service = parse_unit(UNIT.read_text())["Service"]
    (tmp_path / "etc").mkdir()
    r = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    user = service["User"][-1]
    assert user in passwd, f"{SYSUSERS.name} does not create {user!r}: {sorted(passwd)}"
    assert passwd[user][5] == f"/var/lib/{service['StateDirectory'][-1]}"
    groups = (tmp_path / "etc" / "group").read_text()
    assert re.search(rf"^{service['Group'][-1]}:", groups, re.M), groups


def test_unit_declares_notify_watchdog_reload_and_hardening() -> None:
    """The unit uses the notify protocol, a watchdog, SIGHUP reload and the promised sandbox."""
    unit = parse_unit(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(unit)
    svc = {k: v[-1] for k, v in unit["Service"].items()}

    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["ExecStart"].split()[1:] == ["run", "-c", "/etc/gitopsd/gitopsd.yaml"]
    assert svc["ExecReload"].split() == ["/bin/kill", "-HUP", "$MAINPID"]
    assert svc["Restart"] == "on-failure"
    assert 0 < timespan(svc["WatchdogSec"]) <= 60
    # systemd must not SIGKILL the daemon while it still waits for syncs to reach a boundary.
    assert timespan(svc["TimeoutStopSec"]) > SHUTDOWN_GRACE

    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "StateDirectory": "gitopsd",
        "CacheDirectory": "gitopsd",
        "ConfigurationDirectory": "gitopsd",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    env = dict(e.split("=", 1) for e in unit["Service"].get("Environment", []))
    assert env.get("HOME") == "%S/gitopsd", env


def test_daemon_default_dirs_are_the_units_writable_dirs() -> None:
    """Under ProtectSystem=strict the daemon's default and example dirs are the writable ones."""
    svc = {k: v[-1] for k, v in parse_unit(UNIT.read_text())["Service"].items()}
    state = f"/var/lib/{svc['StateDirectory']}"
    cache = f"/var/cache/{svc['CacheDirectory']}"
    assert (Settings().state_dir, Settings().cache_dir) == (state, cache)
    example = yaml.safe_load((ROOT / "config" / "gitopsd.yaml").read_text())["settings"]
    assert (example["stateDir"], example["cacheDir"]) == (state, cache)
