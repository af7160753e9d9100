"""The services one configuration needs (repo cache, renderer, clusters, state), wired once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from daemon import appsets
from daemon.health.checks import aggregate, assess
from daemon.kube import Clusters, KubeClient
from daemon.model import HealthStatus, ResourceKey
from daemon.reconciler import Reconciler
from daemon.render import Renderer
from daemon.settings import Application, Config
from daemon.sources.git import RepoCache
from daemon.status.state import StateStore


@dataclass
class Engine:
    """Shared services; `reconciler` runs the pipeline with them."""

    config: Config
    repos: RepoCache
    renderer: Renderer
    clusters: Clusters
    store: StateStore
    reconciler: Reconciler

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[Engine]:
        s = config.settings
        repos = RepoCache(
            Path(s.cache_dir) / "git", credentials=config.repositories, timeout=s.repo_timeout
        )
        renderer = Renderer(
            timeout=s.repo_timeout,
            max_bytes=s.max_manifest_bytes,
            max_nodes=s.max_yaml_nodes,
            concurrency=s.max_concurrent_renders,
        )
        clusters = Clusters(config.clusters)
        store = StateStore(s.state_dir)
        reconciler = Reconciler(
            config, repos=repos, renderer=renderer, clusters=clusters, store=store
        )
        try:
            yield cls(config, repos, renderer, clusters, store, reconciler)
        finally:
            with anyio.CancelScope(shield=True):
                await clusters.aclose()

    async def client_for(self, app: Application) -> KubeClient:
        """The client of the app's destination cluster."""
        cluster = self.clusters.lookup(server=app.destination.server, name=app.destination.name)
        return await self.clusters.client(cluster)


async def run_once(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """Reconcile every app once (syncing automated ones), then wait for synced apps' health."""
    results: dict[str, dict[str, Any]] = {}
    async with Engine.open(config) as engine:
        limiter = anyio.CapacityLimiter(config.settings.max_concurrent_syncs)
        expansion = await appsets.expand(config, engine.repos)
        engine.reconciler.generated = dict(expansion.owner)
        for name, error in expansion.errors.items():
            results[f"ApplicationSet/{name}"] = {
                "sync": {"status": "Unknown"},
                "health": {"status": "Unknown"},
                "conditions": [{"type": "ApplicationSetError", "message": error}],
            }
        apps = [*config.applications, *expansion.apps.values()]

        async def one(app: Application) -> None:
            async with limiter:
                status = await engine.reconciler.reconcile(app)
                op = status.get("operationState") or {}
                if (
                    op.get("phase") == "Succeeded"
                    and status.get("sync", {}).get("status") == "Synced"
                ):
                    status = await _await_health(engine, app, status)
                results[app.name] = status

        async with anyio.create_task_group() as tg:
            for app in apps:
                tg.start_soon(one, app)
        # App of apps: children registered by their parents run next (grandchildren after
        # them); with the health gate on they were reconciled inline and are only reported.
        gated = config.settings.app_of_apps_health_gate
        while pending := sorted(
            (name, child)
            for name, (_, child, _) in engine.reconciler.children.apps.items()
            if name not in results
        ):
            async with anyio.create_task_group() as tg:
                for name, child in pending:
                    if gated:
                        results[name] = await engine.reconciler.reconcile(child, auto=False)
                    else:
                        tg.start_soon(one, child)
    order = [a.name for a in apps] + sorted(n for n in results if n not in {a.name for a in apps})
    return [(n, results[n]) for n in order]


async def _await_health(engine: Engine, app: Application, status: dict[str, Any]) -> dict[str, Any]:
    """Poll the app's resources until the app is Healthy, Degraded, or the health timeout."""
    client = await engine.client_for(app)
    deadline = anyio.current_time() + engine.config.settings.health_timeout
    while True:
        items = []
        for r in status.get("resources", []):
            if r.get("requiresPruning"):
                continue
            api = f"{r['group']}/{r['version']}" if r["group"] else r["version"]
            rt = client.known(api, r["kind"])
            if rt is None:
                continue
            body = await client.get(rt, r["namespace"], r["name"])
            key = ResourceKey(r["group"], r["kind"], r["namespace"], r["name"])
            items.append((key, assess(body) if body else None, body is not None))
            if body is not None:
                h = assess(body)
                if h is not None:
                    r["health"] = {"status": str(h.status), "message": h.message}
        health = aggregate(items)
        status["health"] = {"status": str(health.status), "message": health.message}
        if health.status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED):
            break
        if anyio.current_time() > deadline:
            break
        await anyio.sleep(1)
    saved = engine.store.load(app.name)
    saved["status"] = status
    await engine.store.save(app.name, saved)
    return status
