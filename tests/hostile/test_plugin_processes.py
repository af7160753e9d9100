"""A config management plugin step cannot outlive its run: background children, `setsid`
children and a hang end with the step, on the daemon's own event loop (uvloop), in a PID
namespace where the machine allows one and through the /proc sweep where it does not."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from daemon import proctree
from daemon.errors import RenderError
from daemon.render import Renderer
from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_plugins import data, plugin, request
from tests.integration.test_sync import get

MODES = ("namespace", "sweep")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with one app directory."""
    (tmp_path / "checkout" / "gb").mkdir(parents=True)
    (tmp_path / "checkout" / "gb" / "app.env").write_text("x=1\n")
    return tmp_path / "checkout"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the PID namespace this machine allows, or with it switched off (the sweep)."""
    if request.param == "namespace":
        if not anyio.run(proctree.namespace_prefix):
            pytest.skip("this machine allows no PID namespace (unshare)")
    else:

        async def none() -> tuple[str, ...]:
            return ()

        monkeypatch.setattr(proctree, "namespace_prefix", none)
    return str(request.param)


def sleeps(count: int) -> list[str]:
    """Unique `sleep` durations, so /proc shows which processes came from this test."""
    base = random.randrange(700_000, 900_000)
    return [str(base + i) for i in range(count)]


def survivors(marks: list[str]) -> list[str]:
    """Command lines of live (non-zombie) processes running one of the marked sleeps."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 2 and argv[0].endswith(b"sleep") and argv[1].decode() in marks:
            found.append(f"{entry.name}: {b' '.join(argv).decode()}")
    return found


def assert_none_survive(marks: list[str]) -> None:
    deadline = time.monotonic() + 3
    while survivors(marks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors(marks) == [], "a process from the plugin step outlived it"


def render(renderer: Renderer, block: dict[str, Any], repo: Path) -> Any:
    """Render on the event loop the daemon runs on (asyncio with uvloop)."""
    return anyio.run(
        renderer.render, request("gb", block), repo, backend_options={"use_uvloop": True}
    )


_MANIFEST = (
    "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: m}\\n"
    "data: {seen: \"%s\"}\\n' \"$(tr '\\0' '\\n' < /proc/PID/environ 2>/dev/null "
    '| grep -c GITOPSD_TEST_SECRET)"'
)


def test_a_step_ends_when_its_main_process_exits_and_its_children_die_with_it(
    repo: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """generate prints its manifests and leaves `sleep &`, `setsid sleep &` and an orphaned
    `(setsid sleep &)` holding its pipes: the render returns at once, no sleep survives, and
    in a PID namespace the step cannot read the daemon's environment through /proc."""
    monkeypatch.setenv("GITOPSD_TEST_SECRET", "leaked")
    a, b, c = marks = sleeps(3)
    generate = f"sleep {a} & setsid sleep {b} & (setsid sleep {c} &); " + _MANIFEST.replace(
        "PID", str(os.getpid())
    )
    r = Renderer(timeout=20)
    r.plugins = (plugin("gen", generate=generate),)
    started = time.monotonic()
    try:
        out = render(r, {"name": "gen"}, repo)
    finally:
        elapsed = time.monotonic() - started
        assert_none_survive(marks)
    assert elapsed < 5, f"the step waited {elapsed:.1f}s for its background children"
    if mode == "namespace":
        assert data(out)["seen"] == "0", "the plugin read the daemon's environment"


def test_a_step_that_times_out_is_reported_and_leaves_no_process(repo: Path, mode: str) -> None:
    """A hung generate with a `setsid` child and a background child: the render fails with
    "plugin gen step generate timed out after 1s" (not an exception name) and no process from
    the step survives the kill."""
    a, b, c = marks = sleeps(3)
    r = Renderer(timeout=1)
    r.plugins = (plugin("gen", generate=f"setsid sleep {a} & sleep {b} & sleep {c}"),)
    try:
        with pytest.raises(RenderError, match=r"^plugin gen step generate timed out after 1s$"):
            render(r, {"name": "gen"}, repo)
    finally:
        assert_none_survive(marks)


def test_a_failing_step_reports_its_exit_code_and_stderr_tail(repo: Path, mode: str) -> None:
    """An init that exits 1 after a long stderr and leaves a background child reports
    "plugin gen step init exited 1: <the end of stderr>" promptly, and the child is gone."""
    (a,) = marks = sleeps(1)
    init = f"sleep {a} & yes noise | head -n 2000 >&2; echo 'values are broken' >&2; exit 1"
    r = Renderer(timeout=20)
    r.plugins = (plugin("gen", init=init),)
    started = time.monotonic()
    try:
        with pytest.raises(RenderError) as e:
            render(r, {"name": "gen"}, repo)
    finally:
        assert_none_survive(marks)
    assert time.monotonic() - started < 5
    assert str(e.value).startswith("plugin gen step init exited 1: ...(truncated) ")
    assert str(e.value).endswith("noise\nvalues are broken")


def _plugin_config(tmp_path: Path, generate: str) -> None:
    """A ConfigManagementPlugin `gen` (version v1) in the daemon's config, as a ConfigMap."""
    spec = {
        "version": "v1",
        "generate": {"command": ["sh", "-c", generate]},
        "discover": {"fileName": "*.env"},
    }
    cmp_doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ConfigManagementPlugin",
        "metadata": {"name": "gen"},
        "spec": spec,
    }
    (tmp_path / "apps" / "plugin.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "gen-plugin"},
                "data": {"plugin.yaml": yaml.safe_dump(cmp_doc)},
            }
        )
    )


@pytest.mark.cluster
def test_through_the_daemon_a_step_ends_with_its_children_and_a_hang_is_reported(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A running daemon (uvloop) syncs an app whose generate leaves `sleep &` and
    `setsid sleep &` behind without waiting for them, and none survives; when a commit makes
    generate hang, the condition reads "plugin gen-v1 step generate timed out after 3s"
    (never a bare exception name) and nothing from the step survives."""
    a, b, c, e = marks = sleeps(4)
    manifest = "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: kids-out}\\n'"
    generate = (
        f"test -f hang && {{ setsid sleep {a} & sleep {b}; }}; "
        f"sleep {c} & setsid sleep {e} & {manifest}"
    )
    git_repo.write({"gb/app.env": "x=1\n"})
    app = application(
        "kids", git_repo.url, "gb", namespace, source_extra={"plugin": {"name": "gen-v1"}}
    )
    cfg = write_config(tmp_path, cluster, [app], reconcileInterval="2s", repoTimeout="3s")
    _plugin_config(tmp_path, generate)
    with running(cfg) as d:
        wait_for(lambda: d.synced("kids"), timeout=30, what="the plugin app synced")
        assert get(cluster, namespace, "configmap/kids-out") is not None
        assert_none_survive(marks)
        git_repo.write({"gb/hang": "1"})

        def conditions() -> str:
            return str(d.status("kids").get("conditions") or "")

        wait_for(
            lambda: "plugin gen-v1 step generate timed out after 3s" in conditions(),
            timeout=40,
            what="the hung plugin step reported",
        )
        assert "ProcessLookupError" not in conditions()
        assert_none_survive(marks)
