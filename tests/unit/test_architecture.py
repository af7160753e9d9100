"""Architecture checks: the import contracts in pyproject.toml hold and daemon/ has no import
cycle (lazy imports inside functions included)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
from importlinter import cli

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """lint-imports keeps every contract: only kube.py imports the cluster client libraries, pure
    stages import nothing that does I/O, settings stand below planning, the API not on the
    runner."""
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(no_cache=True) == 0


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    """The cycle check itself works: a -> b -> c -> a is reported, a DAG is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_in_daemon() -> None:
    """No two daemon modules import each other, directly or through others."""
    graph = grimp.build_graph("daemon", exclude_type_checking_imports=True)
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert _cycles(edges) == []


def test_a_start_does_not_import_what_it_does_not_need() -> None:
    """`gitopsd run --once` imports neither kubernetes-asyncio's generated client (only
    exec/auth-provider kubeconfigs need it), httpx (the CLI's client) nor the ApplicationSet
    generators (only configs with ApplicationSets); the daemon neither of the first two."""
    import subprocess
    import sys

    def loaded(modules: str) -> str:
        code = (
            f"import sys, {modules}\n"
            "print(','.join(m for m in ('kubernetes_asyncio', 'httpx', 'daemon.appset')"
            " if m in sys.modules))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    assert loaded("daemon.cli, daemon.engine") == ""
    assert loaded("daemon.runner") == "daemon.appset"
