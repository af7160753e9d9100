"""Confine a command's processes and kill every one it left behind.

Where the machine allows it, a confined command runs as the first process of its own PID
namespace (util-linux `unshare`): when that process exits or is killed, the kernel kills every
other process in the namespace, whatever they did (`&`, `setsid`, double forks). Elsewhere the
sweep below stands in: the command's process group and session, its descendants through
/proc parent links, and any process still carrying the command's marker in its environment
(a `setsid` child whose parent already exited has no other link back).
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import anyio

MARKER = "GITOPSD_STEP"
# Tried in order; the first that runs `true` is used. --mount-proc also hides every process
# outside the namespace (the daemon's /proc/PID/environ included) from the command.
_UNSHARE = ("unshare", "--pid", "--fork", "--kill-child")
_CANDIDATES = (
    (*_UNSHARE, "--user", "--map-current-user", "--mount-proc"),
    (*_UNSHARE, "--user", "--map-current-user"),
    (*_UNSHARE, "--mount-proc"),
    _UNSHARE,
)
_PROBE_TIMEOUT = 5.0
_MAX_ROUNDS = 50
_prefix: tuple[str, ...] | None = None
_probed = False


def new_marker() -> str:
    """A value for MARKER that names one command run."""
    return secrets.token_hex(8)


async def namespace_prefix() -> tuple[str, ...]:
    """The `unshare ... --` prefix that gives a command its own PID namespace here, or ()
    where none works (no util-linux, user namespaces disabled, no privilege): probed once."""
    global _prefix, _probed
    if not _probed:
        for candidate in _CANDIDATES:
            try:
                with anyio.fail_after(_PROBE_TIMEOUT):
                    done = await anyio.run_process(
                        [*candidate, "--", "true"], check=False, start_new_session=True
                    )
            except (OSError, TimeoutError):
                continue
            if done.returncode == 0:
                _prefix = (*candidate, "--")
                break
        _probed = True
    return _prefix or ()


def _table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, pgid, sid) of every process visible in /proc."""
    out: dict[int, tuple[int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while listed
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 4 and fields[0] != "Z":
            out[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return out


def _carries(pid: int, marker: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return marker in environ.split(b"\0")


def members(root: int, marker: str) -> set[int]:
    """Live processes that belong to the command started as `root` (its own process group
    and session): in root's group or session, descended from one that is, or carrying
    `MARKER=marker`."""
    table = _table()
    tag = f"{MARKER}={marker}".encode()
    found = {pid for pid, (_, pgid, sid) in table.items() if root in (pgid, sid)}
    found |= {pid for pid in table if pid not in found and _carries(pid, tag)}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    found.discard(os.getpid())
    return found


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_all(root: int, marker: str) -> None:
    """SIGKILL every member of the command: stop them first (a stopped process cannot fork),
    look again until no new one appears, then kill them all."""
    try:
        os.killpg(root, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    stopped: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        fresh = members(root, marker) - stopped
        if not fresh:
            break
        _signal(fresh, signal.SIGSTOP)
        stopped |= fresh
    _signal(stopped, signal.SIGKILL)
