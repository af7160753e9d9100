"""Prometheus metrics, named as Argo CD names them where the meaning matches.

Argo CD's `argocd_*` names keep existing dashboards and alerts working; what is gitopsd's own
is `gitopsd_*`. One registry per daemon so tests can run several.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    UnknownMetricFamily,
)

from daemon.rollouts.timings import RECONCILE_BUCKETS, Timings


class AppInfoCollector:
    """`argocd_app_info` computed at scrape time from the latest app statuses."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        info = GaugeMetricFamily(
            "argocd_app_info",
            "Information about application.",
            labels=[
                "name",
                "namespace",
                "project",
                "dest_server",
                "dest_namespace",
                "repo",
                "sync_status",
                "health_status",
                "operation",
                "autosync_enabled",
            ],
        )
        condition = GaugeMetricFamily(
            "argocd_app_condition",
            "Report application conditions.",
            labels=["name", "namespace", "project", "condition"],
        )
        for name, a in sorted(self.apps.items()):
            info.add_metric(
                [
                    name,
                    a["namespace"],
                    a["project"],
                    a["dest_server"],
                    a["dest_namespace"],
                    a["repo"],
                    a["sync_status"],
                    a["health_status"],
                    a["operation"],
                    a["autosync"],
                ],
                1,
            )
            for cond in a.get("conditions", []):
                condition.add_metric([name, a["namespace"], a["project"], cond], 1)
        yield info
        yield condition


class _Cache(Protocol):
    def sizes(self) -> tuple[int, int]: ...


class _Watched(Protocol):
    """What the collector reads of a cluster client (daemon.kube.KubeClient)."""

    @property
    def cache(self) -> _Cache: ...

    @property
    def events(self) -> Tally[tuple[str, str]]: ...


class ClusterCacheCollector:
    """Argo CD's cluster cache metrics from each cluster's live cache, at scrape time:
    `argocd_cluster_api_resources`, `argocd_cluster_api_resource_objects` and
    `argocd_cluster_events_total`."""

    def __init__(self) -> None:
        self.sources: dict[str, _Watched] = {}  # server -> client

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        types = GaugeMetricFamily(
            "argocd_cluster_api_resources",
            "Number of monitored kubernetes API resources.",
            labels=["server"],
        )
        objects = GaugeMetricFamily(
            "argocd_cluster_api_resource_objects",
            "Number of k8s resource objects in the cache.",
            labels=["server"],
        )
        events = CounterMetricFamily(
            "argocd_cluster_events",
            "Number of processes k8s resource events.",
            labels=["server", "group", "kind"],
        )
        for server, client in sorted(self.sources.items()):
            n_types, n_objects = client.cache.sizes()
            types.add_metric([server], n_types)
            objects.add_metric([server], n_objects)
            for (group, kind), n in sorted(client.events.items()):
                events.add_metric([server, group, kind], n)
        yield types
        yield objects
        yield events


RolloutRows = tuple[list[dict[str, str]], list[dict[str, Any]]]
ROLLOUT_PHASES = ("Progressing", "Paused", "Healthy", "Degraded")


class RolloutCollector:
    """Argo Rollouts' metric names, computed at scrape time from the Rollout controllers'
    latest view: `rollout_info`, `rollout_phase`, `analysis_run_info`,
    `analysis_run_metric_phase`."""

    def __init__(self) -> None:
        self.source: Callable[[], RolloutRows] = lambda: ([], [])
        self.timings: Callable[[], list[Timings]] = list

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        rollouts, runs = self.source()
        info = GaugeMetricFamily(
            "rollout_info",
            "Information about rollout.",
            labels=["namespace", "name", "strategy", "traffic_router", "phase"],
        )
        phases = GaugeMetricFamily(
            "rollout_phase",
            "Information on the state of the rollout (1 for its phase, 0 for the others).",
            labels=["namespace", "name", "strategy", "phase"],
        )
        for r in sorted(rollouts, key=lambda x: (x["namespace"], x["name"])):
            info.add_metric(
                [r["namespace"], r["name"], r["strategy"], r["traffic_router"], r["phase"]], 1
            )
            for p in ROLLOUT_PHASES:
                phases.add_metric(
                    [r["namespace"], r["name"], r["strategy"], p], 1 if p == r["phase"] else 0
                )
        run_info = GaugeMetricFamily(
            "analysis_run_info",
            "Information about analysis run.",
            labels=["namespace", "name", "phase"],
        )
        metric_phase = GaugeMetricFamily(
            "analysis_run_metric_phase",
            "Information on the duration of a specific metric in the Analysis Run.",
            labels=["namespace", "name", "metric", "type", "phase"],
        )
        for run in sorted(runs, key=lambda x: (x["namespace"], x["name"])):
            run_info.add_metric([run["namespace"], run["name"], run["phase"]], 1)
            for metric, kind, phase in run["metrics"]:
                metric_phase.add_metric([run["namespace"], run["name"], metric, kind, phase], 1)
        yield info
        yield phases
        yield run_info
        yield metric_phase
        yield from self._timings()

    def _timings(self) -> Any:
        """rollout_reconcile / analysis_run_reconcile histograms and their _error counts."""
        tables = self.timings()
        for kind, what in (("rollout", "rollout"), ("analysis_run", "analysis run")):
            hist = HistogramMetricFamily(
                f"{kind}_reconcile",
                f"{what.capitalize()} reconciliation performance.",
                labels=["namespace", "name"],
            )
            errors = UnknownMetricFamily(
                f"{kind}_reconcile_error",
                f"Error occurring during the {what}",
                labels=["namespace", "name"],
            )
            for t in tables:
                for key, counts in sorted(t.counts.items()):
                    if key[0] != kind:
                        continue
                    buckets = [
                        (str(le), float(n))
                        for le, n in zip(RECONCILE_BUCKETS, counts[:-1], strict=True)
                    ]
                    hist.add_metric(
                        [key[1], key[2]], [*buckets, ("+Inf", float(counts[-1]))], t.sums[key]
                    )
                for key, n in sorted(t.errors.items()):
                    if key[0] == kind:
                        errors.add_metric([key[1], key[2]], float(n))
            yield hist
            yield errors


class Metrics:
    """All metrics of one daemon."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.app_info = AppInfoCollector()
        r.register(self.app_info)
        self.rollouts = RolloutCollector()
        r.register(self.rollouts)
        self.cluster_events = ClusterCacheCollector()
        r.register(self.cluster_events)
        # The standard process_* and python_* families, as the default registry has them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.sync_total = Counter(
            "argocd_app_sync",
            "Number of application syncs.",
            ["name", "namespace", "project", "dest_server", "phase", "dry_run"],
            registry=r,
        )
        self.sync_duration = Counter(
            "argocd_app_sync_duration_seconds",
            "Application sync performance in seconds total.",
            ["name", "namespace", "project", "dest_server"],
            registry=r,
        )
        self.reconcile = Histogram(
            "argocd_app_reconcile",
            "Application reconciliation performance in seconds.",
            ["namespace", "dest_server"],
            registry=r,
            buckets=(0.25, 0.5, 1, 2, 4, 8, 16),
        )
        self.k8s_requests = Counter(
            "argocd_app_k8s_request",
            "Number of Kubernetes requests executed.",
            [
                "namespace",
                "name",
                "project",
                "server",
                "response_code",
                "verb",
                "resource_kind",
                "resource_namespace",
                "dry_run",
            ],
            registry=r,
        )
        self.git_requests = Counter(
            "argocd_git_request",
            "Number of git requests performed.",
            ["repo", "request_type"],
            registry=r,
        )
        self.git_duration = Histogram(
            "argocd_git_request_duration_seconds",
            "Git requests duration seconds.",
            ["repo", "request_type"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 10, 20),
        )
        self.cluster_info = Gauge(
            "argocd_cluster_info",
            "Information about cluster.",
            ["name", "server", "k8s_version"],
            registry=r,
        )
        self.cluster_connection = Gauge(
            "argocd_cluster_connection_status",
            "The k8s cluster current connection status (1 reachable, 0 unreachable).",
            ["name", "server", "k8s_version"],
            registry=r,
        )
        self.queue_depth = Gauge("gitopsd_queue_depth", "Apps waiting for a sync slot.", registry=r)
        self.shard_apps = Gauge(
            "gitopsd_shard_apps", "Apps assigned to this replica (sharding).", registry=r
        )
        self.shard_members = Gauge(
            "gitopsd_shard_members", "Live replicas this one sees (sharding).", registry=r
        )
        self.syncs_in_use = Gauge("gitopsd_sync_pool_in_use", "Syncs running now.", registry=r)
        self.sync_pool_size = Gauge("gitopsd_sync_pool_size", "maxConcurrentSyncs.", registry=r)
        self.queue_wait = Histogram(
            "gitopsd_queue_wait_seconds",
            "Time an app waited for a sync slot.",
            registry=r,
            buckets=(0.01, 0.1, 0.5, 1, 5, 30, 120),
        )
        self.config_reload_errors = Counter(
            "gitopsd_config_reload_errors", "Config edits rejected as invalid.", registry=r
        )
        self.backup_last_success = Gauge(
            "gitopsd_backup_last_success_timestamp_seconds",
            "When the last backup archive was written (settings.backup or the API).",
            registry=r,
        )
        self.backup_failures = Counter(
            "gitopsd_backup_failures", "Backups that failed.", registry=r
        )
        self.config_valid = Gauge(
            "gitopsd_config_last_reload_successful",
            "1 when the last config (re)load was valid.",
            registry=r,
        )
        self.last_sync = Gauge(
            "gitopsd_app_last_successful_sync_timestamp_seconds",
            "Unix time of the app's last successful sync.",
            ["name"],
            registry=r,
        )
        self.orphaned = Gauge(
            "argocd_app_orphaned_resources_count",
            "Number of orphaned resources per application.",
            ["name", "namespace", "project"],
            registry=r,
        )
        self.notify_deliveries = Counter(
            "argocd_notifications_deliveries",
            "Number of delivered notifications.",
            ["notifier", "succeeded", "trigger"],
            registry=r,
        )
        self.notify_evals = Counter(
            "argocd_notifications_trigger_eval",
            "Number of trigger evaluations.",
            ["name", "triggered"],
            registry=r,
        )
        self.webhooks = Counter(
            "gitopsd_webhook_requests",
            "Webhook deliveries.",
            ["provider", "result"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
