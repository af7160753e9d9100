"""Run config management plugins: discover, init, generate (Argo CD's sidecar protocol, as
subprocesses).

Each render works on a scratch copy of the checkout (without `.git`), as Argo CD's sidecar
gets a tarball: `init` may write into it (fetch dependencies, decrypt files) without touching
the shared cache. Commands run in the copy's source path with a clean environment (PATH, LANG,
a scratch HOME and TMPDIR, the build environment, and the Application's `ARGOCD_ENV_*` and
`PARAM_*` variables), never the daemon's own (which holds credentials), under the renderer's
timeout and output limit. A step ends when its main process exits, and nothing it started
outlives it (its own PID namespace where the machine allows one; see daemon.proctree).
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import anyio

from daemon import cmp, proc
from daemon.errors import RenderError
from daemon.sources.git import UNSAFE_LINKS_FILE

# Run a command: (argv, cwd, env, what) -> stdout; raises RenderError.
Exec = Callable[[list[str], Path, dict[str, str], str], Awaitable[bytes]]


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in (".git", UNSAFE_LINKS_FILE)}


def _strip_modes(root: Path) -> None:
    """Without `preserveFileMode`, files reach the plugin as 0644 and directories 0755."""
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            p = Path(dirpath) / d
            if not p.is_symlink():
                p.chmod(0o755)
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                p.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)


def copy_checkout(root: Path, target: Path, *, preserve_modes: bool) -> None:
    """Copy a checkout for a plugin (links stay links: the checkout holds none leaving it)."""
    shutil.copytree(root, target, symlinks=True, ignore=_ignore)
    if not preserve_modes:
        _strip_modes(target)


def base_env(scratch: Path) -> dict[str, str]:
    """The only variables a plugin inherits: a PATH to find its tools, the locale, and a
    scratch HOME and TMPDIR removed after the render."""
    home, tmp = scratch / "home", scratch / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
    for key in ("LANG", "LC_ALL"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(HOME=str(home), TMPDIR=str(tmp))
    return env


def _matches_pattern(app_dir: Path, pattern: str, *, recursive: bool) -> bool:
    found = glob.glob(str(app_dir / pattern), recursive=recursive)
    base = str(app_dir.resolve())
    return any(os.path.realpath(f).startswith(base) for f in found)


def may_match(plugins: Sequence[cmp.Plugin], app_dir: Path) -> bool:
    """Whether discovery could pick a plugin for `app_dir` (checked on the checkout itself,
    before any copy): a `fileName` / `find.glob` rule matches, or a `find.command` must be
    asked."""
    for p in plugins:
        if p.discover_command:
            return True
        if p.discover_file_name and _matches_pattern(
            app_dir, p.discover_file_name, recursive=False
        ):
            return True
        if p.discover_glob and _matches_pattern(app_dir, p.discover_glob, recursive=True):
            return True
    return False


async def discover(
    plugins: Sequence[cmp.Plugin], app_dir: Path, env: Mapping[str, str], run: Exec
) -> dict[str, bool]:
    """Which plugins' discover rules match `app_dir` (plugins without a rule are left out).
    `fileName` is a glob in the source path, `find.glob` the same with `**`, and
    `find.command` matches when it exits 0 and prints something."""
    out: dict[str, bool] = {}
    for p in plugins:
        if p.discover_file_name:
            out[p.full_name] = _matches_pattern(app_dir, p.discover_file_name, recursive=False)
        elif p.discover_glob:
            out[p.full_name] = _matches_pattern(app_dir, p.discover_glob, recursive=True)
        elif p.discover_command:
            try:
                found = await run(
                    list(p.discover_command.argv),
                    app_dir,
                    dict(env),
                    f"plugin {p.full_name} step discover",
                )
            except RenderError:
                found = b""
            out[p.full_name] = bool(found.strip())
    return out


async def generate(plugin: cmp.Plugin, app_dir: Path, env: Mapping[str, str], run: Exec) -> bytes:
    """Run the plugin's `init` (output ignored) then `generate`; its stdout is the manifests."""
    step = f"plugin {plugin.full_name} step"
    if plugin.init:
        await run(list(plugin.init.argv), app_dir, dict(env), f"{step} init")
    return await run(list(plugin.generate.argv), app_dir, dict(env), f"{step} generate")


async def run_command(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    what: str,
    *,
    timeout: float,
    max_bytes: int,
) -> bytes:
    """One plugin step with the renderer's limits, confined: it ends when its main process
    exits, and nothing it started outlives it (daemon.proctree). Failures name the plugin
    and the step (`what`)."""
    try:
        result = await proc.run(
            argv,
            cwd=cwd,
            env=env,
            timeout=timeout,
            max_output=max_bytes,
            inherit_env=False,
            confine=True,
        )
    except proc.CommandTimeout as e:
        raise RenderError(f"{what} timed out after {timeout:g}s") from e
    except proc.OutputTooLarge as e:
        raise RenderError(f"{what}: output exceeds the size limit of {max_bytes} bytes") from e
    except OSError as e:
        raise RenderError(f"{what}: cannot run {argv[0]!r}: {e.strerror or e}") from e
    if result.returncode != 0:
        raise RenderError(f"{what} {_exit_text(result.returncode)}: {_tail(result.stderr)}")
    return result.stdout


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exited {code}"


def _tail(stderr: bytes, limit: int = 2000) -> str:
    """The end of stderr, where a failing command says why."""
    text = stderr.decode(errors="replace").strip()
    return text if len(text) <= limit else "...(truncated) " + text[-limit:]


class Scratch:
    """A scratch directory holding a plugin's copy of the checkout; removed on exit."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.path = Path()

    async def __aenter__(self) -> Scratch:
        self._tmp = tempfile.TemporaryDirectory(prefix="gitopsd-plugin-")
        self.path = Path(self._tmp.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tmp is not None
        tmp = self._tmp
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(tmp.cleanup)
