"""Run an external command with a timeout and an output size limit, without blocking the loop."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import ByteReceiveStream


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


async def _drain(stream: ByteReceiveStream | None, sink: bytearray, limit: int) -> None:
    if stream is None:
        return
    async for chunk in stream:
        sink.extend(chunk)
        if len(sink) > limit:
            raise OutputTooLarge(f"output exceeded {limit} bytes")


def _kill_group(pid: int) -> None:
    """SIGKILL the command's process group (a shell's children too: `sh -c "a && b"`)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    max_output: int = 64 * 1024 * 1024,
    inherit_env: bool = True,
) -> Completed:
    """Run `argv`; kill it on timeout (CommandTimeout) or when output passes `max_output`.
    With `inherit_env=False` the command sees only `env`, not the daemon's environment."""
    full_env = dict(os.environ) if inherit_env else {}
    if env:
        full_env.update(env)
    out, err = bytearray(), bytearray()
    try:
        with anyio.fail_after(timeout):
            async with await anyio.open_process(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a kill reaches its children
            ) as proc:
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_drain, proc.stdout, out, max_output)
                        tg.start_soon(_drain, proc.stderr, err, max_output)
                        if stdin is not None and proc.stdin is not None:
                            await proc.stdin.send(stdin)
                            await proc.stdin.aclose()
                    code = await proc.wait()
                except BaseException:
                    _kill_group(proc.pid)
                    proc.kill()
                    with anyio.CancelScope(shield=True):
                        await proc.wait()
                    raise
    except TimeoutError as e:
        raise CommandTimeout(f"{argv[0]} timed out after {timeout:g}s") from e
    except BaseExceptionGroup as eg:
        # Errors from the drain tasks come wrapped; surface the first one unwrapped.
        raise eg.exceptions[0] from None
    return Completed(tuple(argv), code, bytes(out), bytes(err))
