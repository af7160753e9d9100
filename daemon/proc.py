"""Run an external command with a timeout and an output size limit, without blocking the loop."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import ByteReceiveStream, Process

from daemon import proctree


@dataclass(frozen=True, slots=True)
class Completed:
    """Result of a finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def err_text(self) -> str:
        """stderr as text, trimmed to a readable size."""
        text = self.stderr.decode(errors="replace").strip()
        return text if len(text) < 4000 else text[:4000] + " ...(truncated)"


class CommandTimeout(Exception):
    """The command did not finish in time and was killed."""


class OutputTooLarge(Exception):
    """The command printed more than allowed and was killed."""


async def _drain(
    stream: ByteReceiveStream | None, sink: bytearray, limit: int, done: anyio.Event
) -> None:
    try:
        if stream is None:
            return
        async for chunk in stream:
            sink.extend(chunk)
            if len(sink) > limit:
                raise OutputTooLarge(f"output exceeded {limit} bytes")
    finally:
        done.set()


def _kill_group(pid: int) -> None:
    """SIGKILL the command's process group (a shell's children too: `sh -c "a && b"`)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _feed(process: Process, data: bytes) -> None:
    """Write stdin; a command that exits without reading it is judged by its exit code."""
    if process.stdin is None:
        return
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.stdin.send(data)
        await process.stdin.aclose()


async def _communicate(
    process: Process, stdin: bytes | None, max_output: int, grace: float
) -> tuple[int, bytes, bytes]:
    """Read the output until the main process exits, then for at most `grace` seconds more:
    a background child holding the pipes open does not keep the command running."""
    out, err = bytearray(), bytearray()
    done = (anyio.Event(), anyio.Event())
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, process.stdout, out, max_output, done[0])
        tg.start_soon(_drain, process.stderr, err, max_output, done[1])
        if stdin is not None:
            tg.start_soon(_feed, process, stdin)
        code = await process.wait()
        with anyio.move_on_after(grace):
            for event in done:
                await event.wait()
        tg.cancel_scope.cancel()
    return code, bytes(out), bytes(err)


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    max_output: int = 64 * 1024 * 1024,
    inherit_env: bool = True,
    confine: bool = False,
    exit_grace: float = 0.5,
) -> Completed:
    """Run `argv`; kill it on timeout (CommandTimeout) or when output passes `max_output`.
    With `inherit_env=False` the command sees only `env`, not the daemon's environment.

    The command ends when its main process exits (output still in the pipes is read for
    `exit_grace` seconds); then whatever is left of its process group is killed. With
    `confine` (untrusted commands: config management plugins) it runs in its own PID
    namespace where the machine allows it, and every process it started, whether it left
    the group or not, is killed when it ends (see daemon.proctree)."""
    full_env = dict(os.environ) if inherit_env else {}
    if env:
        full_env.update(env)
    marker = proctree.new_marker()
    command = list(argv)
    if confine:
        full_env[proctree.MARKER] = marker
        prefix = await proctree.namespace_prefix()
        if prefix:
            _check_runnable(argv[0], cwd, full_env)
            command = [*prefix, *command]
    try:
        with anyio.fail_after(timeout):
            process = await anyio.open_process(
                command,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a kill reaches its children
            )
            try:
                code, out, err = await _communicate(process, stdin, max_output, exit_grace)
            finally:
                with anyio.CancelScope(shield=True):
                    await _end(process, marker if confine else "")
    except TimeoutError as e:
        raise CommandTimeout(f"{argv[0]} timed out after {timeout:g}s") from e
    except BaseExceptionGroup as eg:
        # Errors from the drain tasks come wrapped; surface the first one unwrapped.
        raise eg.exceptions[0] from None
    return Completed(tuple(argv), code, out, err)


async def _end(process: Process, marker: str) -> None:
    """Kill what is left of the command (everything it started, with a marker) and reap it."""
    if marker:
        await anyio.to_thread.run_sync(proctree.kill_all, process.pid, marker)
    else:
        _kill_group(process.pid)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()
    await process.aclose()


def _check_runnable(name: str, cwd: str | os.PathLike[str] | None, env: Mapping[str, str]) -> None:
    """Raise what exec would (FileNotFoundError, PermissionError) before a namespace wrapper
    hides it behind its own exit code."""
    if "/" in name:
        path = os.path.join(cwd or ".", name)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    elif shutil.which(name, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
