"""The daemon: one root task group owning the API, config watcher, app workers and drift watches.

Each app has a worker that reconciles on its interval (plus jitter), on a webhook, an API call,
a config change or drift seen by a watch; triggers that arrive during a run coalesce into one
follow-up run. Syncs share a bounded pool. SIGTERM/SIGINT stop taking work, let running syncs
reach a wave boundary (bounded), persist state and exit 0; SIGHUP reloads the config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import signal
import socket
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup

from daemon import appsets, configfiles, kube, names
from daemon import settings as settings_mod
from daemon.appproject import AppProject
from daemon.clusterwatch import ClusterMonitor
from daemon.engine import Engine, keep_restart_only
from daemon.errors import ConfigError, GitopsdError, KubeError
from daemon.health.checks import assess
from daemon.kube import KubeClient
from daemon.model import HealthStatus, Manifest, ResourceType
from daemon.notify import config as notify_config
from daemon.notify import engine as notify_engine
from daemon.notify import send as notify_send
from daemon.reconciler import system_rules
from daemon.removals import PendingRemovals
from daemon.settings import Application, Config, Retry
from daemon.stages import Comparison, Desired, SyncRequest
from daemon.status import build
from daemon.status.metrics import Metrics

if TYPE_CHECKING:
    from daemon.ha.membership import Membership

log = structlog.get_logger("gitopsd.runner")
SHUTDOWN_GRACE = 60.0


WEBHOOK_QUIET = 0.25  # seconds without a push before the apps are refreshed
WEBHOOK_MAX_DELAY = 1.0  # ... but never later than this after the first push


TERMINATED = "Operation terminated"  # daemon.sync's message for terminate-op
NOTIFY_QUEUE = 1000  # notifications waiting for delivery before new ones are dropped
NOTIFY_CONCURRENCY = 4


class Notifier:
    """sd_notify over $NOTIFY_SOCKET (no-op when not run by systemd)."""

    def __init__(self) -> None:
        self.addr = os.environ.get("NOTIFY_SOCKET", "")
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog = int(usec) / 1e6 / 2 if usec.isdigit() else 0.0

    def send(self, message: str) -> None:
        if not self.addr:
            return
        addr = "\0" + self.addr[1:] if self.addr.startswith("@") else self.addr
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.connect(addr)
                s.sendall(message.encode())
            except OSError as e:
                log.warning("sd_notify failed", error=str(e))


@dataclass
class AppWorker:
    """Schedules one app's reconciles; `trigger` coalesces requests into one follow-up run."""

    app: Application
    wake: anyio.Event = field(default_factory=anyio.Event)
    pending: SyncRequest | None = None
    reason: str = ""
    stopped: bool = False
    cancel: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    last_status: dict[str, Any] = field(default_factory=dict)
    keys: set[tuple[str, str, str, str]] = field(default_factory=set)
    done: anyio.Event = field(default_factory=anyio.Event)

    def trigger(self, reason: str, sync: SyncRequest | None = None) -> None:
        self.reason = reason
        if sync is not None:
            self.pending = sync
        self.wake.set()


def _advertised(listen: str) -> str:
    """The URL other replicas reach this one's API at: the listen address, with a wildcard
    host replaced by $POD_IP (set from the Downward API) or the host name."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = os.environ.get("POD_IP") or socket.gethostname()
    return f"http://{host}:{port}"


def _spec_hash(body: dict[str, Any]) -> str:
    """Hash of what a user can change (everything but status and server bookkeeping)."""
    meta = dict(body.get("metadata") or {})
    for k in ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid"):
        meta.pop(k, None)
    anns = dict(meta.get("annotations") or {})
    anns.pop("deployment.kubernetes.io/revision", None)
    meta["annotations"] = anns
    rest = {k: v for k, v in body.items() if k not in ("status", "metadata")}
    return hashlib.sha256(json.dumps([meta, rest], sort_keys=True).encode()).hexdigest()


class DriftWatches:
    """Watches the types/namespaces that apps manage and wakes an app when its objects change."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.scopes: dict[tuple[str, str, str, str], anyio.CancelScope] = {}
        self.established: set[tuple[str, str, str, str]] = set()  # listed and watching
        self.app_scopes: dict[str, set[tuple[str, str, str, str]]] = {}
        self.clean: set[str] = set()  # apps with no event since their last full compare
        self.partial: set[str] = set()  # apps with resources no watch can cover
        self.seq: dict[str, int] = {}  # events seen per app (a change during a run counts)
        self.healths: dict[tuple[str, str, str, str], HealthStatus | None] = {}
        self.owners: dict[tuple[str, str, str, str], str] = {}  # (cluster,group,kind,ns/name)
        self.app_keys: dict[str, set[tuple[str, str, str, str]]] = {}  # app -> its owner keys
        self.users: dict[tuple[str, str, str, str], int] = {}  # watch scope -> apps using it
        self.seen: dict[tuple[str, str, str, str], str] = {}
        self.tg: TaskGroup | None = None

    def update(self, cluster: str, client: KubeClient, worker: AppWorker) -> None:
        """Watch what the app's last status lists. Work per call is proportional to that app's
        resources, not to every app's (a reconcile of one app must not cost more as apps are
        added)."""
        for k in self.app_keys.pop(worker.app.name, set()):
            if self.owners.get(k) == worker.app.name:
                del self.owners[k]
        keys = self.app_keys[worker.app.name] = set()
        wanted: set[tuple[str, str, str, str]] = set()
        self.partial.discard(worker.app.name)
        for r in worker.last_status.get("resources", []):
            rt = client.preferred(r["group"], r["kind"])
            if rt is None or "watch" not in rt.verbs:
                self.partial.add(worker.app.name)  # something we cannot watch
                continue
            ns = r["namespace"] if rt.namespaced else ""
            key = (cluster, r["group"], r["kind"], f"{r['namespace']}/{r['name']}")
            self.owners[key] = worker.app.name
            keys.add(key)
            wanted.add((cluster, r["group"], r["kind"], ns))
        before = self.app_scopes.get(worker.app.name, set())
        self.app_scopes[worker.app.name] = wanted
        for scope_key in wanted - before:
            self.users[scope_key] = self.users.get(scope_key, 0) + 1
        unused = []
        for scope_key in before - wanted:
            self.users[scope_key] -= 1
            if self.users[scope_key] <= 0:
                del self.users[scope_key]
                unused.append(scope_key)
        assert self.tg is not None
        for scope_key in wanted - set(self.scopes):
            group, kind = scope_key[1], scope_key[2]
            rt = client.preferred(group, kind)
            if rt is None:
                continue
            scope = anyio.CancelScope()
            self.scopes[scope_key] = scope
            self.tg.start_soon(self._watch, scope, scope_key, client, rt)
        for scope_key in unused:
            if scope_key in self.scopes:
                self.scopes.pop(scope_key).cancel()
            self.established.discard(scope_key)

    async def _watch(
        self,
        scope: anyio.CancelScope,
        scope_key: tuple[str, str, str, str],
        client: KubeClient,
        rt: ResourceType,
    ) -> None:
        kube.acting_for.set(("", "", ""))  # shared by every app there: credited to none
        cluster, _, _, ns = scope_key
        cached = (rt.group, rt.kind, ns)  # the same scope in the client's LiveCache
        backoff = 1.0
        broken = False  # the last watch ended in an error: events may have been missed
        handle = client.cache.open(cached, rt.api_version)
        try:
            rv = ""  # where the watch resumes; "" = list first
            with scope:
                while True:
                    try:
                        if not rv:
                            items, rv = await client.list(rt, ns)
                            client.cache.fill(cached, items)
                            for item in items:
                                self._note(cluster, rt, item, initial=True)
                            self.established.add(scope_key)
                            if broken:
                                self._recovered(scope_key, f"{rt.kind} watch re-established")
                            broken, backoff = False, 1.0
                        # A watch the server ends (timeoutSeconds) resumes from the last
                        # version seen (events and bookmarks), as client-go's reflector does:
                        # no relist of the scope every few minutes while idle.
                        began = time.monotonic()
                        async for ev in client.watch(rt, ns, resource_version=rv):
                            if ev.type == "ERROR":  # e.g. 410 Gone: relist from scratch
                                rv, broken = "", True
                                client.cache.lost(cached)
                                self._lost(scope_key)
                                break
                            seen = str((ev.object.get("metadata") or {}).get("resourceVersion", ""))
                            rv = seen or rv
                            if ev.type in ("MODIFIED", "DELETED", "ADDED"):
                                gone = ev.type == "DELETED"
                                echo = client.cache.event(cached, ev.object, deleted=gone)
                                self._note(cluster, rt, ev.object, deleted=gone, echo=echo)
                        if time.monotonic() - began < 1.0:
                            await anyio.sleep(1.0)  # a server ending watches at once: no spin
                    except (KubeError, ValueError) as e:
                        rv, broken = "", True
                        client.cache.lost(cached)
                        self._lost(scope_key)
                        # Forbidden or unreachable: back off (up to a minute), never spin.
                        log.debug(
                            "drift watch restarting",
                            kind=rt.kind,
                            namespace=ns,
                            error=str(e),
                            retry_in=backoff,
                        )
                        await anyio.sleep(backoff)
                        backoff = min(60.0, backoff * 2)
        finally:
            client.cache.close(cached, handle)

    def _lost(self, scope_key: tuple[str, str, str, str]) -> None:
        """A watch broke: events may have been missed, so its apps need a full compare."""
        self.established.discard(scope_key)
        for app, scopes in self.app_scopes.items():
            if scope_key in scopes:
                self.clean.discard(app)

    def _recovered(self, scope_key: tuple[str, str, str, str], reason: str) -> None:
        """A broken watch is back: compare its apps now instead of at the next poll, since
        changes (and deletions) made meanwhile were never seen as events."""
        for app, scopes in self.app_scopes.items():
            if scope_key in scopes:
                self.daemon.drift(app, reason)

    def forget_cluster(self, cluster: str) -> None:
        """The cluster's client was replaced: stop its watches; each app's next reconcile
        starts them again on the new client."""
        for scope_key in [k for k in self.scopes if k[0] == cluster]:
            self.scopes.pop(scope_key).cancel()
            self.established.discard(scope_key)

    def covers(self, app: str) -> bool:
        """True when every type/namespace the app manages is being watched."""
        scopes = self.app_scopes.get(app)
        if app in self.partial or scopes is None:
            return False
        return bool(scopes) and scopes <= self.established

    def _note(
        self,
        cluster: str,
        rt: ResourceType,
        obj: dict[str, Any],
        *,
        initial: bool = False,
        deleted: bool = False,
        echo: bool = False,
    ) -> None:
        meta = obj.get("metadata") or {}
        nsn = f"{meta.get('namespace', '') or ''}/{meta.get('name', '')}"
        key = (cluster, rt.group, rt.kind, nsn)
        app = self.owners.get(key)
        h = "deleted" if deleted else _spec_hash(obj)
        previous = self.seen.get(key)
        self.seen[key] = h
        health = None if deleted else assess(obj)
        old_health = self.healths.get(key)
        self.healths[key] = health.status if health else None
        if initial or app is None:
            return
        changed = old_health != self.healths[key]
        if echo and not changed:
            # gitopsd's own write coming back: the run that made it compares after it.
            return
        if previous == h:
            # Status only: compares ignore status, so only a health change matters. Refresh
            # when an object's health changed, or while the app is not yet Healthy (as Argo
            # CD updates app health from its cluster cache).
            if changed or self.daemon.app_health(app) != "Healthy":
                self.seq[app] = self.seq.get(app, 0) + 1
                self.clean.discard(app)
                self.daemon.drift(app, f"{rt.kind}/{nsn} status changed")
            return
        self.seq[app] = self.seq.get(app, 0) + 1
        self.clean.discard(app)  # changed by someone else: compare fully next time
        self.daemon.drift(app, f"{rt.kind}/{nsn} changed")


class Daemon:
    """The running service."""

    def __init__(self, config_path: str, config: Config, engine: Engine) -> None:
        self.config_path = config_path
        self.config = config
        self.engine = engine
        self.metrics = Metrics()
        self.workers: dict[str, AppWorker] = {}
        self.sync_limiter = anyio.CapacityLimiter(config.settings.max_concurrent_syncs)
        self.stopping = anyio.Event()
        self.config_error = ""
        self.ready = False
        self.clusters_ok: set[str] = set()
        self.deleted: set[str] = set()  # apps deleted through the API (kept out until edited)
        # Notifications wait here for the deliverers, so a slow service never holds a sync.
        self._notes_in, self._notes_out = anyio.create_memory_object_stream[
            tuple[notify_config.Service, notify_engine.Notification]
        ](NOTIFY_QUEUE)
        self._notify_locks: dict[str, anyio.Lock] = {}
        self._notify_errors: dict[str, tuple[str, ...]] = {}  # last logged, per app
        self._metered: weakref.WeakSet[KubeClient] = weakref.WeakSet()  # clients with listeners
        self.notifier = Notifier()
        self.watches = DriftWatches(self)
        self.tg: TaskGroup | None = None
        self.waiting = 0
        self.removals = PendingRemovals()
        self.generated_removals = PendingRemovals()  # ApplicationSet apps, likewise
        self.file_stamps = self._stamps(config)
        self.metrics.sync_pool_size.set(config.settings.max_concurrent_syncs)
        self.metrics.config_valid.set(1)
        self._drift_at: dict[str, float] = {}
        self._last_op: dict[str, str] = {}
        self.expansion = appsets.Expansion()
        self._appset_wake = anyio.Event()
        self._appsets_version = ""  # resourceVersion of the leader's output last followed
        self.api_address = ""
        self._shields: set[anyio.CancelScope] = set()
        # Webhook floods coalesce: apps are refreshed once the pushes stop for a moment.
        self._webhook_batch: dict[str, str] = {}  # app -> reason
        self._webhook_first = 0.0
        self._webhook_last = 0.0
        self._webhook_wake = anyio.Event()
        engine.repos.counter.listeners.append(self._git_metric)
        engine.reconciler.progress = self._progress
        engine.reconciler.child_tasks.on_added = self._child_added
        engine.reconciler.child_tasks.on_removed = self._child_removed
        if engine.reconciler.rollouts is not None:
            self.metrics.rollouts.source = engine.reconciler.rollouts.snapshot
            self.metrics.rollouts.timings = engine.reconciler.rollouts.timings
        self.membership: Membership | None = None  # several replicas (settings.sharding)
        self.assignment: dict[str, str] = {}  # app -> member id
        self._claimed_instances: set[str] = set()
        self.monitor = ClusterMonitor(
            clusters=engine.clusters,
            metrics=self.metrics,
            workers=lambda: self.workers,
            settings=lambda: self.config.settings,
        )

    # --- metrics hooks ----------------------------------------------------------------------

    def _git_metric(self, kind: str, url: str, seconds: float, ok: bool) -> None:
        if kind == "local":
            return
        from daemon.sources.git import redact

        repo = redact(url)
        self.metrics.git_requests.labels(repo, kind).inc()
        self.metrics.git_duration.labels(repo, kind).observe(seconds)

    def _k8s_metric(self, server: str) -> Callable[[kube.RequestEvent], None]:
        def record(e: kube.RequestEvent) -> None:
            name, namespace, project = e.app
            self.metrics.k8s_requests.labels(
                namespace,
                name,
                project,
                server,
                str(e.status),
                e.verb,
                e.kind,
                e.namespace,
                "true" if e.dry_run else "false",
            ).inc()

        return record

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        from daemon.status.api import serve_api

        async with anyio.create_task_group() as tg:
            self.tg = tg
            self.watches.tg = tg
            tg.start_soon(self._signals, tg)
            await tg.start(serve_api, self)
            if self.config.settings.sharding_enabled:
                await self._join(tg)
            if self.config.applications and not self.engine.store.names():
                # A new or lost disk: say what cannot come back by itself.
                log.warning(
                    "no app state found: ownership comes from the in-cluster inventories and "
                    "tracking ids; sync history and finished operations start empty unless a "
                    "backup is restored (gitopsd restore)",
                    state_dir=self.config.settings.state_dir,
                )
            for app in self.config.applications:
                self._start_worker(app)
            self._reshard()
            tg.start_soon(self._appset_loop)
            tg.start_soon(self._backup_loop)
            tg.start_soon(self._config_watcher)
            tg.start_soon(self._heartbeat)
            await self._check_clusters()
            tg.start_soon(self.monitor.run)
            tg.start_soon(self._webhook_flusher)
            tg.start_soon(self._deliver_notifications)
            self.ready = True
            self.notifier.send("READY=1\nSTATUS=serving")
            log.info("gitopsd started", apps=len(self.workers), listen=self.config.settings.listen)
            task_status.started()
            await self.stopping.wait()
            log.info("shutting down: waiting for running syncs to reach a wave boundary")
            self.notifier.send("STOPPING=1")
            with anyio.move_on_after(SHUTDOWN_GRACE):
                for w in list(self.workers.values()):
                    w.stopped = True
                    w.wake.set()
                for w in list(self.workers.values()):
                    await w.done.wait()
            for scope in list(self._shields):
                # Past the grace period: stop syncs that are still waiting (state is saved in
                # the reconcile's finally; the operation resumes on restart).
                log.warning("shutdown grace over; cancelling a running sync")
                scope.shield = False
                scope.cancel()
            if self.membership is not None:
                with anyio.move_on_after(10, shield=True):
                    await self.membership.leave()
            tg.cancel_scope.cancel()
        log.info("gitopsd stopped")

    async def _signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    log.info("SIGHUP: reloading config")
                    await self.reload()
                else:
                    log.info("signal received", signal=signal.Signals(sig).name)
                    self.engine.reconciler.stopping = True
                    self.stopping.set()

    async def _heartbeat(self) -> None:
        while True:
            counts: dict[str, int] = {}
            for w in self.workers.values():
                s = (w.last_status.get("sync") or {}).get("status", "Unknown")
                counts[s] = counts.get(s, 0) + 1
            text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no apps"
            msg = f"STATUS={text}" + (
                f"; config error: {self.config_error[:80]}" if self.config_error else ""
            )
            if self.notifier.watchdog:
                msg += "\nWATCHDOG=1"
            self.notifier.send(msg)
            await anyio.sleep(self.notifier.watchdog or 10)

    async def _check_clusters(self) -> None:
        seen: set[str] = set()
        for app in self.config.applications:
            try:
                cluster = self.engine.clusters.lookup(
                    server=app.destination.server, name=app.destination.name
                )
                if cluster.name in seen:
                    continue
                seen.add(cluster.name)
                client = await self.engine.clusters.client(cluster)
                if client not in self._metered:
                    self._metered.add(client)
                    client.listeners.append(self._k8s_metric(cluster.server or cluster.name))
                    self.metrics.cluster_events.sources[cluster.server or cluster.name] = client
                with anyio.fail_after(10):
                    await client.discover()
                self.clusters_ok.add(cluster.name)
                self.metrics.cluster_info.labels(
                    cluster.name, cluster.server, client.server_version
                ).set(1)
            except (GitopsdError, TimeoutError) as e:
                log.warning("cluster unreachable", error=str(e))

    # --- workers ----------------------------------------------------------------------------

    def _start_worker(self, app: Application) -> None:
        saved = self.engine.store.load(app.name)
        if saved.get("deletedSpec"):
            if saved["deletedSpec"] == _spec_digest(app):
                # Deleted through the API: not managed again until its document changes.
                if app.name not in self.deleted:
                    log.warning(
                        "app was deleted through the API; edit or remove its document to "
                        "manage it again",
                        app=app.name,
                    )
                self.deleted.add(app.name)
                return
            self.deleted.discard(app.name)
            saved = {}
        worker = AppWorker(app)
        worker.last_status = saved.get("status") or {}
        finished = (worker.last_status.get("operationState") or {}).get("finishedAt")
        if finished:
            self._last_op[app.name] = finished
        self.workers[app.name] = worker
        worker.trigger("start")
        assert self.tg is not None
        self.tg.start_soon(self._worker_loop, worker)

    async def _worker_loop(self, worker: AppWorker) -> None:
        settings = self.config.settings
        try:
            with worker.cancel:
                while not worker.stopped:
                    interval = settings.reconcile_interval + random.uniform(
                        0, settings.reconcile_jitter
                    )
                    with anyio.move_on_after(interval):
                        await worker.wake.wait()
                    if worker.stopped or self.stopping.is_set():
                        break
                    worker.wake = anyio.Event()
                    if not await self._owned(worker):
                        continue  # another replica reconciles it (a pending sync waits here)
                    sync, worker.pending = worker.pending, None
                    reason, worker.reason = worker.reason or "interval", ""
                    try:
                        # The run's writes are bound to this incarnation's claim on the app.
                        with kube.writes_under(self._epoch(worker.app.name)):
                            await self._reconcile(worker, sync, reason)
                    except Exception:  # one app's failure must never stop the daemon
                        log.exception("app worker error; will retry", app=worker.app.name)
                        await anyio.sleep(min(30.0, settings.reconcile_interval))
        finally:
            worker.done.set()

    async def _reconcile(self, worker: AppWorker, sync: SyncRequest | None, reason: str) -> None:
        app = worker.app
        # Requests this task (and those it starts) makes are counted for this app.
        kube.acting_for.set((app.name, app.namespace, app.project))
        seq_before = self.watches.seq.get(app.name, 0)
        queued = time.monotonic()
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        async with self.sync_limiter:
            self.waiting -= 1
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.queue_wait.observe(time.monotonic() - queued)
            self.metrics.syncs_in_use.set(self.sync_limiter.borrowed_tokens)
            started = time.monotonic()
            structlog.contextvars.bind_contextvars(app=app.name, trigger=reason)
            try:
                # Shield: a shutdown must let the sync reach a wave boundary, not tear it apart
                # (bounded: run() lifts the shield after the grace period).
                with anyio.CancelScope(shield=True) as scope:
                    self._shields.add(scope)
                    try:
                        quick = None
                        if (
                            sync is None
                            and reason == "interval"
                            and app.name in self.watches.clean
                            and self.watches.covers(app.name)
                            and not self._watches_orphans(app)
                        ):
                            # Argo CD-style: the watches vouch for the live side, so an
                            # unchanged revision needs no API reads at all.
                            quick = await self.engine.reconciler.unchanged(
                                app, max_age=self.config.settings.reconcile_interval
                            )
                        status = quick or await self.engine.reconciler.reconcile(
                            app, sync=sync, poll_max_age=self.config.settings.reconcile_interval
                        )
                    finally:
                        self._shields.discard(scope)
                if scope.cancelled_caught:
                    return
            finally:
                structlog.contextvars.unbind_contextvars("app", "trigger")
                self.metrics.syncs_in_use.set(self.sync_limiter.borrowed_tokens - 1)
        worker.last_status = status
        if self.config.notifications is not None:
            await self._notify(app, status)
        quiet = self.watches.seq.get(app.name, 0) == seq_before  # no event during the run
        if (
            quiet
            and (status.get("sync") or {}).get("status") == "Synced"
            and (status.get("health") or {}).get("status") == "Healthy"
            and not status.get("conditions")
        ):
            self.watches.clean.add(app.name)
        else:
            self.watches.clean.discard(app.name)
        if self._record_metrics(app, status, time.monotonic() - started):
            self._maybe_retry(worker, status, sync)
        wait = self.engine.reconciler.heal_retry_in.pop(app.name, None)
        if wait is not None and self.tg is not None:
            # Self-heal is backing off: look again once the backoff has passed.
            async def heal_later() -> None:
                await anyio.sleep(wait + 0.1)
                if not worker.stopped:
                    worker.trigger("self-heal backoff over")

            self.tg.start_soon(heal_later)
        try:
            cluster = self.engine.clusters.lookup(
                server=app.destination.server, name=app.destination.name
            )
            client = await self.engine.clusters.client(cluster)
            if self.watches.tg is not None:
                self.watches.update(cluster.name, client, worker)
        except GitopsdError:
            pass

    # --- several replicas (settings.sharding) -------------------------------------------------

    async def _join(self, tg: TaskGroup) -> None:
        """Become a member: hold our Lease on the control cluster, fence every client's writes
        on it, and follow membership changes."""
        from daemon.ha.membership import Membership

        s = self.config.settings
        clusters = self.engine.clusters
        control = self.engine.control()
        client = await clusters.client(control)
        member = s.sharding_member_id or os.environ.get("POD_NAME") or socket.gethostname()
        m = Membership(
            client,
            namespace=s.sharding_namespace or s.inventory_namespace,
            member_id=member,
            lease_duration=s.sharding_lease_duration,
            renew_interval=s.sharding_renew_interval,
            algorithm=s.sharding_algorithm,
            address=s.sharding_advertise_url or _advertised(s.listen),
        )
        m.on_change = self._reshard
        m.on_lost = self._reshard
        if hasattr(self.engine.store, "on_change"):
            self.engine.store.on_change = self._state_changed
        self.membership = m
        clusters.fence(m.check)
        self.engine.reconciler.owns = lambda instance: instance in self._claimed_instances
        if self.engine.reconciler.rollouts is not None:
            self.engine.reconciler.rollouts.epoch = self._rollout_epoch
        tg.start_soon(m.run)
        log.info("joining the members", member=member, cluster=control.name)
        await m.joined.wait()
        await m.observe()
        # Replicas started together (a rollout) see each other after one renewal: waiting for
        # it spares a first assignment that would hand most apps over again a moment later.
        await anyio.sleep(m.interval)
        await m.observe()

    def _rollout_epoch(self, ro: dict[str, Any]) -> kube.Epoch | None:
        """A Rollout's writes run under its app's claim, as the app's own reconcile does."""
        app = self.engine.reconciler.app_of(ro)
        return self._epoch(app.name) if app is not None else None

    def _reshard(self) -> None:
        """Recompute which member owns which app; wake the apps that moved (gained ones
        reconcile, lost ones release their claim once idle)."""
        from daemon.ha import shard

        m = self.membership
        if m is None:
            return
        children = self.engine.reconciler.children
        refs = [
            shard.AppRef(
                w.app.name,
                w.app.destination.name or w.app.destination.server,
                str(dict(w.app.annotations).get(shard.PIN_ANNOTATION, "")),
            )
            for w in self.workers.values()
            if children.parent_of(w.app.name) is None
        ]
        assignment = m.assigned(refs)
        # A child app (app of apps) is known only to the replica that renders its parent, so
        # it goes where its top-most parent goes.
        for name in self.workers:
            top, seen = name, {name}
            while (parent := children.parent_of(top)) is not None and parent not in seen:
                top = parent
                seen.add(top)
            if top != name:
                assignment[name] = assignment.get(top, "")
        before, self.assignment = self.assignment, assignment
        mine = sum(1 for owner in self.assignment.values() if owner == m.member_id)
        self.metrics.shard_apps.set(mine)
        self.metrics.shard_members.set(len(m.live))
        for name in shard.moved(before, self.assignment):
            worker = self.workers.get(name)
            if worker is not None and before:
                worker.trigger("shard owner changed")

    async def _owned(self, worker: AppWorker) -> bool:
        """Whether this replica may reconcile the app now: always without sharding; with it,
        when the app is assigned here and its Lease is claimed. An app assigned elsewhere
        releases its claim (after the reconcile that held it)."""
        m = self.membership
        if m is None:
            return True
        app = worker.app
        try:
            if self.assignment.get(app.name) != m.member_id:
                if app.name in m.claims:
                    await m.release(app.name)
                    log.info("handed over", app=app.name, to=self.assignment.get(app.name))
                self._claimed_instances.discard(app.instance_name)
                return False
            held = app.name in m.claims
            if await m.claim(app.name):
                self._claimed_instances.add(app.instance_name)
                if not held:
                    await self._take_over(worker)
                return not worker.stopped
        except KubeError as e:
            log.warning("claiming the app failed", app=app.name, error=str(e))
        self._claimed_instances.discard(app.instance_name)
        # Still held by its previous owner (finishing a reconcile): ask again shortly.
        assert self.tg is not None

        async def again() -> None:
            await anyio.sleep(m.interval)
            if not worker.stopped:
                worker.trigger(worker.reason or "waiting for the previous owner")

        self.tg.start_soon(again)
        return False

    async def _take_over(self, worker: AppWorker) -> None:
        """A newly claimed app: start from the state its last owner left in the cluster (an
        operation it left Running resumes from its recorded wave)."""
        refresh = getattr(self.engine.store, "refresh", None)
        if refresh is None:
            return  # local state: this replica's own view
        state = await refresh(worker.app.name)
        self.engine.reconciler.forget(worker.app.name)
        if self._tombstoned(worker.app, state):
            return
        worker.last_status = dict(state.get("status") or {})
        op = worker.last_status.get("operationState") or {}
        if op.get("phase") in ("Running", "Terminating"):
            log.info("resuming the previous owner's operation", app=worker.app.name)

    def _tombstoned(self, app: Application, state: dict[str, Any]) -> bool:
        """The app was deleted through the API (by any replica) and its document has not
        changed since: stop its worker here too. True when so."""
        if state.get("deletedSpec") != _spec_digest(app):
            return False
        self._stop_worker(app.name)
        self.deleted.add(app.name)
        log.info("app deleted through the API by another replica", app=app.name)
        return True

    def _state_changed(self, app: str, state: dict[str, Any]) -> None:
        """Another replica wrote an app's state: show it here when this one does not own it."""
        worker = self.workers.get(app)
        if worker is not None and self._tombstoned(worker.app, state):
            return
        if worker is not None and self.owner_of(app):
            worker.last_status = dict(state.get("status") or {})

    def owner_address(self, name: str) -> str:
        """The API address of the replica that owns app `name` ("" when unknown or this)."""
        owner = self.owner_of(name)
        return self.membership.addresses.get(owner, "") if owner and self.membership else ""

    def owner_of(self, name: str) -> str:
        """The member that reconciles app `name` if not this one ("" when it is this one, or
        without sharding)."""
        m = self.membership
        if m is None:
            return ""
        owner = self.assignment.get(name, "")
        return "" if owner == m.member_id else owner

    def sharding(self) -> dict[str, Any]:
        """This replica's view of the members, for the API."""
        m = self.membership
        if m is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "member": m.member_id,
            "incarnation": m.incarnation,
            "leader": m.leader,
            "canWrite": m.may_write(),
            "members": sorted(m.live),
            "algorithm": m.algorithm,
            "owned": sorted(a for a, owner in self.assignment.items() if owner == m.member_id),
            "claimed": sorted(m.claims),
            "assignment": dict(sorted(self.assignment.items())),  # app -> member
        }

    def _maybe_retry(
        self, worker: AppWorker, status: dict[str, Any], sync: SyncRequest | None
    ) -> None:
        """After a failed sync, schedule a retry with Argo CD's backoff (syncPolicy.retry)."""
        op = status.get("operationState") or {}
        if op.get("phase") not in ("Failed", "Error") or op.get("message") == TERMINATED:
            return  # a terminated operation is not retried, as in Argo CD
        app = worker.app
        automated = (op.get("operation") or {}).get("initiatedBy", {}).get("automated", False)
        policy = app.sync_policy.retry
        if policy is None and automated and app.sync_policy.automated is not None:
            policy = Retry(limit=5)  # Argo CD's default for automated operations
        if policy is None:
            return
        count = int(op.get("retryCount") or 0)
        if 0 <= policy.limit <= count:
            log.info("sync retries exhausted", app=app.name, retries=count)
            return
        delay = policy.delay(count)
        revision = "" if policy.refresh else str((op.get("syncResult") or {}).get("revision") or "")
        request = SyncRequest(
            revision=revision,
            prune=sync.prune
            if sync
            else (app.sync_policy.automated.prune if app.sync_policy.automated else None),
            initiated_by=sync.initiated_by if sync else "automated",
            retry_count=count + 1,
        )
        log.info("sync failed; retrying", app=app.name, attempt=count + 1, delay=delay)
        assert self.tg is not None

        failed_at = op.get("startedAt")

        async def later() -> None:
            await anyio.sleep(delay)
            latest = worker.last_status.get("operationState") or {}
            if latest.get("startedAt") != failed_at:
                # Another operation ran since (a newer revision synced, a manual sync): the
                # failed one is not retried any more, as in Argo CD.
                log.info("retry dropped: a newer operation ran", app=app.name, attempt=count + 1)
                return
            if not worker.stopped and worker.app is app:
                worker.trigger(f"retry {count + 1}", request)

        self.tg.start_soon(later)

    def _record_metrics(self, app: Application, status: dict[str, Any], seconds: float) -> bool:
        """Update metrics; True when this reconcile finished a new operation."""
        new_op = False
        dest = app.destination.server or app.destination.name
        self.metrics.reconcile.labels(app.namespace, dest).observe(seconds)
        op = status.get("operationState") or {}
        self.metrics.app_info.apps[app.name] = {
            "namespace": app.namespace,
            "project": app.project,
            "dest_server": dest,
            "dest_namespace": app.destination.namespace,
            "repo": app.sources[0].repo_url,
            "sync_status": (status.get("sync") or {}).get("status", "Unknown"),
            "health_status": (status.get("health") or {}).get("status", "Unknown"),
            "operation": "sync" if op.get("phase") == "Running" else "",
            "autosync": "true" if app.sync_policy.automated else "false",
            "conditions": [c.get("type", "") for c in status.get("conditions", [])],
        }
        orphans = self.engine.reconciler.orphaned.get(app.name)
        if orphans is not None:
            self.metrics.orphaned.labels(app.name, app.namespace, app.project).set(orphans)
        else:
            with contextlib.suppress(KeyError):  # the project stopped monitoring orphans
                self.metrics.orphaned.remove(app.name, app.namespace, app.project)
        finished = op.get("finishedAt")
        if finished and finished != self._last_op.get(app.name):
            new_op = True
            self._last_op[app.name] = finished
            phase = op.get("phase", "")
            sync = (op.get("operation") or {}).get("sync") or {}
            dry_run = "true" if sync.get("dryRun") else "false"
            self.metrics.sync_total.labels(
                app.name, app.namespace, app.project, dest, phase, dry_run
            ).inc()
            took = _seconds_between(op.get("startedAt"), finished)
            if took is not None:
                labels = (app.name, app.namespace, app.project, dest)
                self.metrics.sync_duration.labels(*labels).inc(took)
            if phase == "Succeeded":
                self.metrics.last_sync.labels(app.name).set(time.time())
        return new_op

    def _child_added(self, app: Application) -> None:
        """A parent rendered a child Application: manage it like a configured app."""
        worker = self.workers.get(app.name)
        if worker is None:
            if self.tg is None:
                return
            log.info("child app added", app=app.name)
            self._start_worker(app)
            self._reshard()
        elif app.name in self.engine.reconciler.taken_names(
            except_parent=self.engine.reconciler.children.parent_of(app.name) or ""
        ):
            log.error("child app name collides with another app; ignored", app=app.name)
        elif worker.app != app:
            worker.app = app
            worker.trigger("parent changed child")

    async def _child_removed(self, app: Application) -> None:
        """A parent no longer renders a child: stop it; delete its resources only with the
        resources finalizer."""
        worker = self._stop_worker(app.name)
        log.info("child app removed", app=app.name, cascade=app.cascade_delete)
        if worker is not None:
            with anyio.move_on_after(SHUTDOWN_GRACE):
                await worker.done.wait()  # let a running child sync finish first
        if app.cascade_delete:
            await self.engine.reconciler.delete_app(app)

    async def _backup_loop(self) -> None:
        """settings.backup.schedule: write an archive at every matching minute (UTC). The
        schedule is read again after each wait, so a config edit takes effect."""
        from daemon.dr.backup import next_run

        while True:
            schedule = self.config.settings.backup_schedule
            if not schedule:
                await anyio.sleep(60)
                continue
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            await anyio.sleep(max(1.0, (next_run(schedule, now) - now).total_seconds()))
            if self.config.settings.backup_schedule != schedule:
                continue
            m = self.membership
            if m is not None and not m.leader:
                continue  # one archive per schedule, from the leader
            try:
                await self.backup_now()
            except (GitopsdError, OSError) as e:
                log.error("scheduled backup failed", error=str(e))

    async def backup_now(self) -> dict[str, Any]:
        """Write a backup archive into settings.backup.dir now (scheduled, or POST
        /api/v1/backup); its path and size."""
        from daemon.dr import backup

        if not self.config.settings.backup_dir:
            raise ConfigError("settings.backup.dir is not set: nowhere to write a backup")
        try:
            path = await backup.scheduled(self.config, self.engine)
        except BaseException:
            self.metrics.backup_failures.inc()
            raise
        self.metrics.backup_last_success.set(time.time())
        size = path.stat().st_size
        log.info("backup written", path=str(path), bytes=size)
        return {"path": str(path), "bytes": size}

    async def _appset_loop(self) -> None:
        """Regenerate ApplicationSets every interval (and on reload or webhook). With several
        replicas only the leader generates and publishes its output; the others follow it."""
        published = ""  # what this replica last published as leader
        while True:
            m = self.membership
            wait = self.config.settings.reconcile_interval
            if m is None or m.leader:
                # Generated under this incarnation's lead, published only while it holds (the
                # epoch is set around the write only: tasks the expansion starts must not
                # inherit it).
                lead = m.leader_epoch() if m is not None else None
                await self.expand_appsets()
                if m is not None and (self.config.application_sets or published):
                    with kube.writes_under(lead):
                        published = await self._publish_appsets(published)
                    wait = min(wait, m.interval)  # notice losing the lead
            elif m is not None:
                published = ""
                await self._follow_appsets()
                wait = min(wait, m.interval)  # notice the leader's output, or becoming it
            with anyio.move_on_after(wait):
                await self._appset_wake.wait()
            self._appset_wake = anyio.Event()

    async def _publish_appsets(self, last: str) -> str:
        """As leader: share the generated apps with the other replicas when they changed."""
        from daemon.ha import published

        m = self.membership
        assert m is not None
        e = self.expansion
        try:
            payload = published.encode(e.apps, e.owner, e.errors)
            if payload != last:
                await published.publish(m.client, m.namespace, e.apps, e.owner, e.errors)
                log.info("ApplicationSet output published", apps=len(e.apps))
            return payload
        except GitopsdError as err:
            log.error("publishing ApplicationSet output failed", error=str(err))
            return last

    async def _follow_appsets(self) -> None:
        """As follower: take the generated apps from the leader's last output."""
        from daemon.ha import published

        m = self.membership
        assert m is not None
        try:
            out = await published.fetch(m.client, m.namespace, self._appsets_version)
            if out is None:
                return
            apps, owner = out.applications()
        except GitopsdError as err:
            log.error("reading the leader's ApplicationSet output failed", error=str(err))
            return
        self._appsets_version = out.version
        self._apply_expansion(appsets.Expansion(apps, owner, dict(out.errors)))

    async def expand_appsets(self) -> None:
        """Create, update and remove generated apps as the generators' output changes."""
        if not self.config.application_sets and not self.expansion.apps:
            return
        expansion = await appsets.expand(
            self.config,
            self.engine.repos,
            self.expansion,
            reserved=set(self.engine.reconciler.children.apps),
        )
        self._apply_expansion(expansion)

    def _apply_expansion(self, expansion: appsets.Expansion) -> None:
        old, old_owner = self.expansion.apps, self.expansion.owner
        configured = {a.name for a in self.config.applications}
        for first, second in names.clashes([*configured, *expansion.apps]):
            for name in (first, second):
                if name in expansion.apps and name not in old:  # the newcomer is refused
                    del expansion.apps[name]
                    owner = expansion.owner.pop(name, "")
                    expansion.errors[owner] = (
                        f"generated app {name!r} would share its Lease, state and inventory "
                        f"with {first if name == second else second!r}; not created"
                    )
        for name, app in expansion.apps.items():
            worker = self.workers.get(name)
            if worker is None:
                log.info("generated app added", app=name, appset=expansion.owner[name])
                self._start_worker(app)
            elif app != worker.app or app.raw != worker.app.raw:
                worker.app = app
                worker.trigger("ApplicationSet changed")
        # A generator's input caught mid-write (a truncated file, a repository between commits)
        # must not delete anything: an app stays until a later expansion, at least the grace
        # period later, still lacks it.
        grace = self.config.settings.app_removal_grace_period
        managed = {name: app for name, app in old.items() if name in self.workers}
        settled = self.generated_removals.settle(
            managed, expansion.apps, now=time.monotonic(), grace=grace
        )
        for name in settled.back:
            log.info("generated app back in its ApplicationSet's output; not removed", app=name)
        for app in settled.removed:
            self._remove_app(app, "generated app removed")
        for app in settled.held:
            expansion.apps[app.name], expansion.owner[app.name] = app, old_owner.get(app.name, "")
        for app in settled.noted:
            log.warning(
                "generated app gone from its ApplicationSet's output; removed if still gone "
                "after the grace period",
                app=app.name,
                grace_seconds=grace,
            )
            if self.tg is not None:
                self.tg.start_soon(self._expand_again_after, grace)
        self.expansion = expansion
        self.engine.reconciler.generated = dict(expansion.owner)
        self._reshard()  # the apps changed: assign the new ones

    async def _expand_again_after(self, seconds: float) -> None:
        await anyio.sleep(seconds + 0.5)
        self._appset_wake.set()

    def _progress(self, app_name: str, operation: dict[str, Any]) -> None:
        worker = self.workers.get(app_name)
        if worker is not None:
            worker.last_status = {**worker.last_status, "operationState": operation}
            if self.config.notifications is not None and self.tg is not None:
                self.tg.start_soon(self._notify, worker.app, worker.last_status)

    # --- notifications ----------------------------------------------------------------------

    def _watches_orphans(self, app: Application) -> bool:
        """Its project reports orphaned resources: objects no watch ties to the app may
        appear, so every poll compares in full."""
        project = self.engine.reconciler.project_for(app)
        return project is not None and project.orphaned_resources is not None

    def _app_doc(
        self, app: Application, status: dict[str, Any], *, deleted: bool = False
    ) -> dict[str, Any]:
        """The Application as Argo CD's notification triggers and templates see it."""
        # Argo CD's status always has these (before the first compare: Unknown).
        status = {"sync": {"status": "Unknown"}, "health": {"status": "Unknown"}, **status}
        return build.application_document(
            self.engine.reconciler.effective(app),
            status,
            deleted_at=build.now_iso() if deleted else "",
        )

    async def _notify(
        self,
        app: Application,
        status: dict[str, Any],
        *,
        deleted: bool = False,
        records: dict[str, float] | None = None,
    ) -> None:
        """Queue what the app's subscriptions call for now; the records that say what was
        sent are saved first, so a restart never sends the same notification again."""
        cfg = self.config.notifications
        if cfg is None:
            return
        try:
            await self._notify_now(cfg, app, status, deleted=deleted, records=records)
        except Exception:  # a notification must never stop a reconcile or the daemon
            log.exception("notifications not evaluated", app=app.name)

    async def _notify_now(
        self,
        cfg: notify_config.Notifications,
        app: Application,
        status: dict[str, Any],
        *,
        deleted: bool,
        records: dict[str, float] | None,
    ) -> None:
        async with self._notify_locks.setdefault(app.name, anyio.Lock()):
            if records is None:
                records = self.engine.reconciler.notified(app.name)
            decision = notify_engine.decide(
                cfg, self._app_doc(app, status, deleted=deleted), records
            )
            for trigger, fired in decision.evaluated:
                self.metrics.notify_evals.labels(trigger, "true" if fired else "false").inc()
            if decision.errors and decision.errors != self._notify_errors.get(app.name):
                for error in decision.errors:  # once per change, not every reconcile
                    log.warning("notification not evaluated", app=app.name, error=error)
            self._notify_errors[app.name] = decision.errors
            if decision.notified != records and not deleted:
                await self.engine.reconciler.save_notified(app.name, decision.notified)
            for note in decision.send:
                service = cfg.services[note.destination.service]
                try:
                    self._notes_in.send_nowait((service, note))
                except anyio.WouldBlock:
                    self.metrics.notify_deliveries.labels(service.name, "false", note.trigger).inc()
                    log.error(
                        "notification dropped: queue full", app=app.name, trigger=note.trigger
                    )

    async def _deliver_notifications(self) -> None:
        """Deliver queued notifications, a few at a time; outcomes are metrics and logs."""
        limiter = anyio.CapacityLimiter(NOTIFY_CONCURRENCY)

        async def one(
            service: notify_config.Service, note: notify_engine.Notification, slot: object
        ) -> None:
            try:
                await notify_send.deliver(service, note)
            except Exception as e:  # a notification must never take the daemon down
                self.metrics.notify_deliveries.labels(service.name, "false", note.trigger).inc()
                log.error("notification failed", app=note.app, trigger=note.trigger, error=str(e))
                return
            finally:
                limiter.release_on_behalf_of(slot)
            self.metrics.notify_deliveries.labels(service.name, "true", note.trigger).inc()
            log.info(
                "notification sent",
                app=note.app,
                trigger=note.trigger,
                service=service.name,
                # Apprise targets are URLs that may hold tokens: never logged.
                recipient="" if service.type == "apprise" else note.destination.recipient,
            )

        async with anyio.create_task_group() as tg, self._notes_out:
            async for service, note in self._notes_out:
                # The slot is taken before the task exists: a slow receiver makes the queue
                # push back (it is bounded) instead of piling up waiting tasks.
                slot = object()
                await limiter.acquire_on_behalf_of(slot)
                tg.start_soon(one, service, note, slot)

    def app_health(self, app_name: str) -> str:
        worker = self.workers.get(app_name)
        if worker is None:
            return ""
        return str((worker.last_status.get("health") or {}).get("status", ""))

    def drift(self, app_name: str, reason: str) -> None:
        """Drift on an app's object: refresh it soon (debounced)."""
        worker = self.workers.get(app_name)
        if worker is None:
            return
        now = time.monotonic()
        if now - self._drift_at.get(app_name, 0) < self.config.settings.self_heal_debounce:
            return
        self._drift_at[app_name] = now
        assert self.tg is not None

        async def later() -> None:
            await anyio.sleep(self.config.settings.self_heal_debounce)
            worker.trigger(f"drift: {reason}")

        self.tg.start_soon(later)

    # --- config -----------------------------------------------------------------------------

    def _stamps(self, config: Config) -> dict[str, configfiles.Stamp | None]:
        return configfiles.stamps(config.path, Path(config.path).parent, config.patterns)

    async def _config_watcher(self) -> None:
        while True:
            await anyio.sleep(1.0)
            due = self.removals.due(time.monotonic(), self.config.settings.app_removal_grace_period)
            try:
                current = self._stamps(self.config)
            except OSError:
                continue
            if current != self.file_stamps or (due and not self.config_error):
                await self.reload()  # a read that may confirm the due removals

    async def reload(self) -> None:
        """Load the config again; apply it only if all of it is valid. An app missing from the
        files stays until a read at least `appRemovalGracePeriod` later still lacks it: a file
        caught mid-write never deletes anything."""
        try:
            new = settings_mod.load(self.config_path, previous=self.config)
            system_rules(new)  # argocd-cm rules are checked before anything switches
        except (ConfigError, OSError) as e:
            self.config_error = str(e)
            self.metrics.config_reload_errors.inc()
            self.metrics.config_valid.set(0)
            self.file_stamps = self._stamps(self.config)
            log.error("config reload rejected; keeping the running config", error=str(e))
            return
        self.file_stamps = self._stamps(new)
        for w in new.warnings:
            log.warning("config warning", warning=w)
        self.config_error = ""
        self.metrics.config_valid.set(1)
        old_apps = {a.name: a for a in self.config.applications}
        new_apps = {a.name: a for a in new.applications}
        removed = self._pending_removals(old_apps, new_apps)
        settings, restart = keep_restart_only(self.config.settings, new.settings)
        if restart:
            log.warning(
                "settings changed that take effect only after a restart; keeping the running "
                "values",
                fields=restart,
            )
        new = dataclasses.replace(
            new,
            settings=settings,
            applications=(*new.applications, *self.removals.held()),
        )
        self.config = new
        self._swap_services(new)
        for name, app in new_apps.items():
            if name not in old_apps:
                log.info("app added", app=name)
                self._start_worker(app)
            elif name not in self.workers:
                self._start_worker(app)  # deleted through the API: back only if it changed
            elif app != old_apps[name] or app.raw != old_apps[name].raw:
                log.info("app changed", app=name)
                self.workers[name].app = app
                self.workers[name].trigger("config changed")
        self._appset_wake.set()
        for app in removed:
            self._remove_app(app, "app removed")
        self._reshard()  # the apps changed: assign the new ones

    def _swap_services(self, new: Config) -> None:
        """The services take the new config (`Engine.apply`); the sync pool takes its size;
        clusters whose entry changed lose their watches now and their client once idle."""
        for client in self.engine.apply(new):
            self.watches.forget_cluster(client.name)
            self.clusters_ok.discard(client.name)
            if self.tg is not None:
                self.tg.start_soon(_close_later, client)
        self.sync_limiter.total_tokens = new.settings.max_concurrent_syncs
        self.metrics.sync_pool_size.set(new.settings.max_concurrent_syncs)
        if self.tg is not None:
            self.tg.start_soon(self._check_clusters)  # added clusters show up at once

    def _pending_removals(
        self, old_apps: dict[str, Application], new_apps: dict[str, Application]
    ) -> list[Application]:
        """The apps whose removal this read confirms; the others missing start (or keep)
        waiting for a later read, and those back in the files stop waiting."""
        grace = self.config.settings.app_removal_grace_period
        settled = self.removals.settle(old_apps, new_apps, now=time.monotonic(), grace=grace)
        for name in settled.back:
            log.info("app back in the config files; not removed", app=name)
        for app in settled.noted:
            log.warning(
                "app gone from the config files; removed if still gone after the grace period",
                app=app.name,
                grace_seconds=grace,
            )
        return settled.removed

    def _stop_worker(self, name: str) -> AppWorker | None:
        """Stop managing `name` (its worker finishes its current run and ends)."""
        worker = self.workers.pop(name, None)
        self.metrics.app_info.apps.pop(name, None)
        if worker is not None:
            worker.stopped = True
            worker.wake.set()
            app = worker.app
            with contextlib.suppress(KeyError):
                self.metrics.orphaned.remove(app.name, app.namespace, app.project)
        return worker

    def _remove_app(self, app: Application, what: str) -> None:
        """Stop an app that left the config or its ApplicationSet; with the resources
        finalizer, delete its resources once its worker has finished. A tombstone (deleted
        through the API) goes with the document: added back, the app is managed again."""
        if app.name in self.deleted and self.tg is not None:
            self.deleted.discard(app.name)
            self.tg.start_soon(self.engine.store.delete, app.name)
        worker = self._stop_worker(app.name)
        log.info(what, app=app.name, cascade=app.cascade_delete)
        if app.cascade_delete and worker is not None:
            assert self.tg is not None
            self.tg.start_soon(self._delete_app_resources, app, worker)

    async def _delete_app_resources(self, app: Application, worker: AppWorker) -> None:
        """Cascade delete with retries (backoff up to 5 minutes); never crashes the daemon.
        With several replicas only the leader deletes, once it holds the app's Lease (its last
        owner released it or is dead), so the deletion happens once."""
        await worker.done.wait()
        delay = 5.0
        for attempt in range(1, 11):
            m = self.membership
            try:
                if m is not None and not m.leader:
                    log.info("removed app left to the leader", app=app.name)
                    return
                if m is not None and not await m.claim(app.name):
                    log.info("removed app still held by its owner; waiting", app=app.name)
                    await anyio.sleep(m.interval)
                    continue
                # The deletes run under that claim: a stall that loses it stops them.
                kube.write_epoch.set(self._epoch(app.name))
                await self.engine.reconciler.delete_app(app)
                if m is not None:
                    await m.release(app.name)
                return
            except Exception as e:
                log.error(
                    "deleting app resources failed",
                    app=app.name,
                    error=str(e),
                    attempt=attempt,
                    retry_in=delay,
                )
            await anyio.sleep(delay)
            delay = min(300.0, delay * 2)

    # --- API helpers ------------------------------------------------------------------------

    @property
    def unreachable_clusters(self) -> dict[str, str]:
        """Clusters unreachable now, with what the daemon knows of the outage."""
        return {name: o.message() for name, o in self.monitor.outages.items()}

    async def _webhook_flusher(self) -> None:
        """Trigger the apps webhooks asked for once pushes pause for WEBHOOK_QUIET (at most
        WEBHOOK_MAX_DELAY after the first), so a flood costs a handful of ls-remotes."""
        while True:
            await self._webhook_wake.wait()
            self._webhook_wake = anyio.Event()
            while True:
                now = time.monotonic()
                due = min(
                    self._webhook_last + WEBHOOK_QUIET, self._webhook_first + WEBHOOK_MAX_DELAY
                )
                if now >= due:
                    break
                await anyio.sleep(due - now)
            batch, self._webhook_batch = self._webhook_batch, {}
            self._webhook_first = 0.0
            for name, reason in batch.items():
                worker = self.workers.get(name)
                if worker is not None:
                    worker.trigger(reason)

    def project_for(self, app: Application) -> AppProject | None:
        return self.engine.reconciler.project_for(app)

    async def diff(
        self, app: Application, local: Sequence[Manifest] | None = None
    ) -> tuple[Desired, Comparison]:
        return await self.engine.reconciler.diff(app, local)

    async def rollout_get(self, app_name: str, namespace: str, name: str) -> dict[str, Any]:
        client = await self.engine.client_for(self.workers[app_name].app)
        rt = await client.resource_for(
            "argoproj.io/v1alpha1", "Rollout", subject=f"Rollout/{namespace}/{name}"
        )
        body = await client.get(rt, namespace, name)
        if body is None:
            raise KubeError(f"Rollout/{namespace}/{name}", "get", "not found", status=404)
        return body

    async def rollout_action(
        self, app_name: str, namespace: str, name: str, action: str, to_revision: int | None
    ) -> str:
        client = await self.engine.client_for(self.workers[app_name].app)
        rollouts = self.engine.reconciler.rollouts
        assert rollouts is not None
        with kube.writes_under(self._epoch(app_name)):  # only while the app is ours
            return await rollouts.act(client, namespace, name, action, to_revision=to_revision)

    def _epoch(self, app_name: str) -> kube.Epoch | None:
        m = self.membership
        return m.epoch(app_name) if m is not None else None

    def effective_app(self, name: str) -> Application:
        """The app as reconciled: its document plus `app set` parameter overrides."""
        return self.engine.reconciler.effective(self.workers[name].app)

    async def set_overrides(
        self, name: str, changes: dict[str, str], removed: list[str]
    ) -> dict[str, str]:
        params = await self.engine.reconciler.set_overrides(
            self.workers[name].app, changes, removed
        )
        self.workers[name].trigger("parameters changed")
        return params

    def terminate(self, name: str) -> bool:
        return self.engine.reconciler.terminate(name)

    async def delete(self, name: str, *, cascade: bool) -> None:
        """`app delete`: stop managing the app; with `cascade`, delete its resources (hooks
        and all, as a removed app with the resources finalizer) first. The app stays deleted
        until its document changes (a tombstone in its state record)."""
        worker = self._stop_worker(name)
        if worker is None:
            raise KeyError(name)
        app = worker.app
        records = self.engine.reconciler.notified(name)  # before the state goes
        try:
            with anyio.fail_after(60):
                await worker.done.wait()
            with kube.writes_under(self._epoch(name)):  # only while the app is ours
                if cascade:
                    await self.engine.reconciler.delete_app(app)
                else:
                    await self.engine.reconciler.forget_app(app)
                await self.engine.store.save(name, {"deletedSpec": _spec_digest(app)})
        except TimeoutError:
            # Its current run did not finish in time: it goes on managing the app.
            worker.stopped = False
            self.workers[name] = worker
            raise GitopsdError(f"{name}: its running reconcile did not finish in 60s") from None
        except BaseException:
            self._start_worker(app)  # the deletion failed: keep managing it (delete again)
            raise
        self.deleted.add(name)
        log.info("app deleted through the API", app=name, cascade=cascade)
        await self._notify(app, worker.last_status, deleted=True, records=records)
        self._reshard()

    def hard_refresh(self, name: str) -> None:
        worker = self.workers.get(name)
        if worker is None:
            return
        for src in worker.app.sources:
            self.engine.repos.repo(src.repo_url).invalidate()
        worker.trigger("api refresh")

    def request(self, name: str, sync: SyncRequest | None, reason: str) -> bool:
        worker = self.workers.get(name)
        if worker is None or (sync is not None and self.owner_of(name)):
            return False
        worker.trigger(reason, sync)
        return True

    def refresh_matching(self, urls: set[str], branch: str, *, reason: str) -> list[str]:
        """Refresh apps whose repo matches one of `urls` and whose revision tracks `branch`."""
        from daemon.sources.git import normalize_url

        refreshed: list[str] = []
        for name, w in self.workers.items():
            for src in w.app.sources:
                if normalize_url(src.repo_url) not in urls:
                    continue
                rev = src.target_revision
                if (
                    branch
                    and rev not in ("HEAD", branch, f"refs/heads/{branch}")
                    and not (len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev))
                ):
                    continue
                self.engine.repos.repo(src.repo_url).invalidate()
                self._webhook_batch.setdefault(name, reason)
                refreshed.append(name)
                break
        if refreshed:
            self._webhook_last = time.monotonic()
            self._webhook_first = self._webhook_first or self._webhook_last
            self._webhook_wake.set()
        if any(_appset_uses(a.raw, urls) for a in self.config.application_sets):
            self._appset_wake.set()  # its git generators may see new directories or files
        return refreshed


async def _close_later(client: KubeClient, grace: float = 60.0) -> None:
    """Close a replaced cluster client once requests still in flight on it are done."""
    try:
        await anyio.sleep(grace)
    finally:  # at shutdown: at once
        with anyio.CancelScope(shield=True):
            await client.aclose()


def _appset_uses(raw: Any, urls: set[str]) -> bool:
    """Whether an ApplicationSet document names any of `urls` as a repoURL."""
    from daemon.sources.git import normalize_url

    if isinstance(raw, dict):
        for k, v in raw.items():
            if k == "repoURL" and isinstance(v, str) and normalize_url(v) in urls:
                return True
            if _appset_uses(v, urls):
                return True
    elif isinstance(raw, list):
        return any(_appset_uses(v, urls) for v in raw)
    return False


async def run_daemon(config_path: str) -> int:
    """Entry point of `gitopsd run`."""
    try:
        config = settings_mod.load(config_path)
    except ConfigError as e:
        log.error("invalid config", error=str(e))
        return 2
    for w in config.warnings:
        log.warning("config warning", warning=w)
    async with Engine.open(config) as engine:
        daemon = Daemon(config_path, config, engine)
        await daemon.run()
    return 0


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds from one RFC 3339 status timestamp to another (None when either is missing)."""
    try:
        a = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def _spec_digest(app: Application) -> str:
    """What an app's document says (a changed document brings a deleted app back)."""
    blob = json.dumps([app.raw.get("spec"), app.finalizers], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
