"""The services one configuration needs (repo cache, renderer, clusters, state), wired once."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from daemon.kube import Clusters, KubeClient
from daemon.model import HealthStatus
from daemon.reconciler import Reconciler
from daemon.render import Renderer
from daemon.rollouts.controller import Rollouts
from daemon.settings import IN_CLUSTER_SERVER, Application, ClusterConfig, Config, Settings
from daemon.sources.chartfiles import ChartLimits
from daemon.sources.git import RepoCache
from daemon.sources.lastgood import LastGood
from daemon.status.state import StateStore, Store


@dataclass
class Engine:
    """Shared services; `reconciler` runs the pipeline with them."""

    config: Config
    repos: RepoCache
    renderer: Renderer
    clusters: Clusters
    store: Store
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
        repos.charts.limits = ChartLimits.of(s)
        renderer.charts = repos.charts  # chart dependencies come through the chart cache
        renderer.index_max_age = s.reconcile_interval
        clusters = Clusters(config.clusters)
        store: Store = StateStore(s.state_dir)
        follow = None
        if s.state_store == "kubernetes":
            from daemon.status.kubestate import KubeStateStore

            client = await clusters.client(control_cluster(config, clusters))
            kube_store = KubeStateStore(client, s.sharding_namespace or s.inventory_namespace)
            follow = (kube_store, await kube_store.start())
            store = kube_store
        reconciler = Reconciler(
            config, repos=repos, renderer=renderer, clusters=clusters, store=store
        )
        reconciler.last_good = LastGood(s.state_dir, max_bytes=s.max_manifest_bytes)
        reconciler.rollouts = Rollouts(
            mode=s.rollouts_controller,
            install_crds=s.rollouts_install_crds,
            ours=reconciler.tracks,
            policy=reconciler.analysis_policy,
        )
        try:
            async with anyio.create_task_group() as tg:
                # Rollout controllers start when a reconcile meets an app with Rollouts.
                tg.start_soon(reconciler.rollouts.run)
                if follow is not None:
                    tg.start_soon(follow[0].follow, follow[1])
                try:
                    yield cls(config, repos, renderer, clusters, store, reconciler)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await clusters.aclose()

    def apply(self, config: Config) -> list[KubeClient]:
        """Make a reloaded config the running one in every service: repository credentials and
        timeouts, chart and render limits, the render pool, clusters (added, moved, removed),
        the Rollouts controller mode, and everything the reconciler reads. Returns the clients
        of clusters whose entry changed or went away (their watches and controllers must go,
        and the caller closes them once idle). Fields in RESTART_ONLY are the caller's to keep."""
        s = config.settings
        self.config = config
        self.repos.credentials = tuple(config.repositories)
        self.repos.timeout = s.repo_timeout
        self.repos.charts.credentials = tuple(config.repositories)
        self.repos.charts.timeout = s.repo_timeout
        self.repos.charts.limits = ChartLimits.of(s)
        r = self.renderer
        r.timeout, r.max_bytes, r.max_nodes = s.repo_timeout, s.max_manifest_bytes, s.max_yaml_nodes
        r.limiter.total_tokens = s.max_concurrent_renders
        r.index_max_age = s.reconcile_interval
        dropped = self.clusters.update(config.clusters)
        rollouts = self.reconciler.rollouts
        if rollouts is not None:
            rollouts.mode, rollouts.install_crds = s.rollouts_controller, s.rollouts_install_crds
            for client in dropped:
                rollouts.forget(client.name)
        self.reconciler.config = config
        return dropped

    def control(self) -> ClusterConfig:
        """The cluster holding the replicas' Leases and the state (settings.sharding.cluster)."""
        return control_cluster(self.config, self.clusters)

    async def client_for(self, app: Application) -> KubeClient:
        """The client of the app's destination cluster."""
        cluster = self.clusters.lookup(server=app.destination.server, name=app.destination.name)
        return await self.clusters.client(cluster)


# Settings a running daemon cannot take from an edit: the API's socket, where state and caches
# live, and the replicas' identity and Lease layout. A reload keeps their running values and
# names them in a warning.
RESTART_ONLY = (
    "listen",
    "cache_dir",
    "state_dir",
    "state_store",
    "sharding_enabled",
    "sharding_cluster",
    "sharding_namespace",
    "sharding_member_id",
    "sharding_algorithm",
    "sharding_advertise_url",
    "sharding_lease_duration",
    "sharding_renew_interval",
)


def keep_restart_only(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """`new` with the RESTART_ONLY fields as they run, and the names of those the edit changed."""
    changed = [f for f in RESTART_ONLY if getattr(running, f) != getattr(new, f)]
    kept = dataclasses.replace(new, **{f: getattr(running, f) for f in changed})
    return kept, changed


def control_cluster(config: Config, clusters: Clusters) -> ClusterConfig:
    """settings.sharding.cluster, else the first configured cluster, else in-cluster."""
    name = config.settings.sharding_cluster
    if name:
        return clusters.lookup(server="", name=name)
    if clusters.configs:
        return clusters.configs[0]
    return clusters.lookup(server=IN_CLUSTER_SERVER, name="")


async def run_once(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """Reconcile every app once (syncing automated ones), then wait for synced apps' health."""
    results: dict[str, dict[str, Any]] = {}
    async with Engine.open(config) as engine:
        limiter = anyio.CapacityLimiter(config.settings.max_concurrent_syncs)
        apps = list(config.applications)
        if config.application_sets:
            # Imported only when needed: generators and templates cost a start a third of a
            # second on the development machine.
            from daemon import appsets

            expansion = await appsets.expand(config, engine.repos)
            engine.reconciler.generated = dict(expansion.owner)
            for name, error in expansion.errors.items():
                results[f"ApplicationSet/{name}"] = {
                    "sync": {"status": "Unknown"},
                    "health": {"status": "Unknown"},
                    "conditions": [{"type": "ApplicationSetError", "message": error}],
                }
            apps += expansion.apps.values()

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
    """Re-compare the app (without syncing) every second until it is Healthy or Degraded, or
    the health timeout passes. A compare LISTs each type once and applies the app's real health
    rules (customizations, Lua), so the wait costs a few requests, not one GET per object."""
    deadline = anyio.current_time() + engine.config.settings.health_timeout
    while (status.get("health") or {}).get("status") not in _SETTLED:
        if anyio.current_time() > deadline:
            break
        await anyio.sleep(1)
        status = await engine.reconciler.reconcile(app, auto=False)
    return status


_SETTLED = {str(HealthStatus.HEALTHY), str(HealthStatus.DEGRADED)}
