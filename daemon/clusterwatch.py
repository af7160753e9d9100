"""Cluster reachability, as the daemon shows it: every cluster is probed on an interval and also
judged by the outcomes of every real request (`kube.Reachability`). A cluster failing for longer
than `clusterUnreachableAfter` is unreachable until it answers again, and while it is:

- every app on it carries a ComparisonError condition saying so (also mid-sync, when the app's
  last status would otherwise still read "running Sync wave N");
- `argocd_cluster_connection_status` is 0 for it;
- a warning is logged when it goes (then once a minute), an info line when it comes back;
- `/readyz` answers 503 naming it (`/healthz` stays green: the process itself is fine).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import structlog

from daemon.errors import GitopsdError
from daemon.kube import Clusters, KubeClient
from daemon.settings import Application, Settings
from daemon.status.metrics import Metrics

log = structlog.get_logger("gitopsd.clusters")

REPEAT_WARNING = 60.0  # seconds between warnings while a cluster stays unreachable
CONDITION_TYPE = "ComparisonError"
MARK = "unreachable since"


class Worker(Protocol):
    app: Application
    last_status: dict[str, Any]

    def trigger(self, reason: str) -> None: ...


@dataclass
class Outage:
    """A cluster that is unreachable now."""

    name: str
    server: str
    since: str  # wall-clock time of the first failure, for people
    error: str
    warned_at: float

    def message(self) -> str:
        return f"cluster {self.name} ({self.server}) {MARK} {self.since}: {self.error}"


def with_outage(status: dict[str, Any], outage: Outage | None) -> dict[str, Any]:
    """`status` with the unreachable-cluster condition set (outage) or removed (None)."""
    kept = [c for c in status.get("conditions") or [] if MARK not in str(c.get("message", ""))]
    if outage is not None:
        kept.append(
            {
                "type": CONDITION_TYPE,
                "message": outage.message(),
                "lastTransitionTime": outage.since,
            }
        )
    return {**status, "conditions": kept}


class ClusterMonitor:
    """Probes the clusters in use and publishes their outages."""

    def __init__(
        self,
        *,
        clusters: Clusters,
        metrics: Metrics,
        workers: Callable[[], Mapping[str, Worker]],
        settings: Callable[[], Settings],
    ) -> None:
        self.clusters = clusters
        self.metrics = metrics
        self.workers = workers
        self.settings = settings
        self.outages: dict[str, Outage] = {}

    def cluster_of(self, app: Application) -> str:
        try:
            return self.clusters.lookup(
                server=app.destination.server, name=app.destination.name
            ).name
        except GitopsdError:
            return ""

    async def run(self) -> None:
        """Probe every client on the interval, forever (cancelled with the daemon)."""
        while True:
            clients = self.clusters.clients()
            async with anyio.create_task_group() as tg:
                for client in clients.values():
                    tg.start_soon(self._probe, client)
            for name, client in clients.items():
                self.assess(name, client)
            await anyio.sleep(self.settings().cluster_probe_interval)

    async def _probe(self, client: KubeClient) -> None:
        with anyio.move_on_after(self.settings().cluster_probe_interval + 5):
            await client.probe(timeout=min(5.0, self.settings().cluster_probe_interval))

    def assess(self, name: str, client: KubeClient) -> None:
        """Move `name` into or out of the outage list from its client's reachability."""
        reach = client.reachability
        down = reach.down_for() >= self.settings().cluster_unreachable_after
        outage = self.outages.get(name)
        labels = (name, client.server, client.server_version)
        if down and outage is None:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=reach.down_for())
            outage = Outage(
                name,
                client.server,
                since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                reach.last_error,
                time.monotonic(),
            )
            self.outages[name] = outage
            self.metrics.cluster_connection.labels(*labels).set(0)
            log.warning(
                "cluster unreachable", cluster=name, since=outage.since, error=reach.last_error
            )
        elif down and outage is not None:
            outage.error = reach.last_error or outage.error
            if time.monotonic() - outage.warned_at >= REPEAT_WARNING:
                outage.warned_at = time.monotonic()
                log.warning(
                    "cluster still unreachable",
                    cluster=name,
                    since=outage.since,
                    error=outage.error,
                )
        elif not down and outage is not None:
            del self.outages[name]
            log.info("cluster reachable again", cluster=name, unreachable_since=outage.since)
        if not down:
            self.metrics.cluster_connection.labels(*labels).set(1)
        self._mark_apps(name, self.outages.get(name), recovered=outage is not None and not down)

    def _mark_apps(self, cluster: str, outage: Outage | None, *, recovered: bool) -> None:
        for worker in self.workers().values():
            if self.cluster_of(worker.app) != cluster:
                continue
            if outage is not None or recovered:
                worker.last_status = with_outage(worker.last_status, outage)
            if recovered:
                worker.trigger("cluster reachable again")
