"""One reconcile of one Application, as a pipeline of stages:

    resolve + render (`desired`) -> project check (`plan.project`) -> compare (`compare`)
    -> decide (`decide`) -> sync operation (`sync`) -> status (`status.build`) -> save

Read `Reconciler._run` top to bottom: it is the whole pipeline. Each stage lives in its own module
with typed values in and out (`daemon.stages`); this class only holds what outlives one run (the
last state per app, the self-heal backoff, the app-of-apps registry) and orders the stages.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import structlog

from daemon import decide, overrides
from daemon.appproject import AppProject
from daemon.children import ChildRegistry, is_child_kind
from daemon.compare import compare
from daemon.compare.inventory import Inventory
from daemon.customizations import aggregated_roles_rule
from daemon.deletion import delete_hooks, delete_resources, run_delete_hooks
from daemon.desired import inputs_key, prepare, render_desired, source_shas, uses_rollouts
from daemon.errors import (
    ConfigError,
    Fenced,
    GitopsdError,
    PlanError,
    ProjectViolation,
    SyncFailed,
)
from daemon.health import lua
from daemon.health.checks import set_custom_checks
from daemon.kube import Clusters, KubeClient
from daemon.model import Body, HookType, Manifest, ResourceKey, ResourceResult
from daemon.plan import diff as diffing
from daemon.plan.project import app_violations, resource_violation
from daemon.plan.tracking import TrackingMethod, is_owned_by, owner_of
from daemon.render import Renderer
from daemon.rollouts import policy as analysis_policy
from daemon.rollouts.controller import Rollouts
from daemon.rollouts.egress import Policy
from daemon.settings import Application, ClusterConfig, Config
from daemon.sources.git import RepoCache
from daemon.sources.lastgood import LastGood
from daemon.sources.signatures import Keyring
from daemon.stages import Comparison, Desired, Operation, SyncRequest
from daemon.status import build
from daemon.status.state import Store
from daemon.sync import SyncContext, run_operation
from daemon.sync.children import ChildTasks
from daemon.sync.hooks import hook_places, release_stale

log = structlog.get_logger("gitopsd.reconcile")

__all__ = ["Reconciler", "SyncRequest"]


@dataclass
class Target:
    """Where an app goes and by which rules: its project, cluster and API client."""

    project: AppProject
    cluster: ClusterConfig
    client: KubeClient


@dataclass
class RunState:
    """One run's working copy of the app's record; the previous record stays intact."""

    status: dict[str, Any]
    fingerprints: dict[str, list[str]]
    conditions: list[dict[str, str]] = field(default_factory=list)
    # [group, kind, namespace] where the app's hooks live (to release their finalizers later,
    # even on deletion when nothing is rendered any more).
    hook_places: list[list[str]] = field(default_factory=list)
    delete_hooks: bool = False  # the app renders PreDelete/PostDelete hooks


class Reconciler:
    """Runs reconciles for the apps of one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        repos: RepoCache,
        renderer: Renderer,
        clusters: Clusters,
        store: Store,
    ) -> None:
        self.repos = repos
        self.renderer = renderer
        # The settings' gpgKeys, for projects with signatureKeys (rebuilt when they change).
        self.keyring: Keyring | None = None
        self.clusters = clusters
        self.store = store
        self.inventory = Inventory(config.settings.inventory_namespace)
        self.config = config
        self.stopping = False  # set on shutdown: running syncs stop at the next wave boundary
        self.operating: set[str] = set()  # apps whose sync operation is running now
        self._notified: dict[str, dict[str, float]] = {}  # notification records, newest
        self.orphaned: dict[str, int] = {}  # app -> orphaned resources (projects that monitor)
        self.terminating: set[str] = set()  # of those, the ones asked to terminate
        self._states: dict[str, dict[str, Any]] = {}  # last record per app, as saved
        self._digests: dict[str, str] = {}  # build.meaningful() of that record
        self._inputs: dict[str, str] = {}  # app -> desired.inputs last compared
        self._saved: set[str] = set()
        self._locks: dict[str, anyio.Lock] = {}
        self.backoff = decide.HealBackoff()
        self.heal_retry_in = self.backoff.retry_in  # app -> seconds until self-heal may run
        self.children = ChildRegistry()
        self.generated: dict[str, str] = {}  # ApplicationSet-generated app -> its set
        self.known: dict[str, Application] = {}  # instance name -> the app last reconciled
        # With several replicas (daemon.ha): whether this one owns the app now.
        self.owns: Callable[[str], bool] = lambda app: True
        # Argo Rollouts kinds in an app: CRDs installed and a controller run (set by Engine).
        self.rollouts: Rollouts | None = None
        self._restored: set[str] = set()
        # The last good render per app, for when a source is unreachable (set by Engine).
        self.last_good: LastGood | None = None
        # Called with (app name, Argo CD-shaped operationState) while a sync runs.
        self.progress: Callable[[str, dict[str, Any]], None] | None = None
        self.child_tasks = ChildTasks(
            registry=self.children,
            reconcile=self.reconcile,
            delete_app=self.delete_app,
            top_level_projects=lambda: {p.name for p in self.config.projects},
            taken_names=lambda parent: self.taken_names(except_parent=parent),
            stopping=self.stop_requested,
            health_timeout=lambda: self.settings.health_timeout,
            health_gate=lambda: self.settings.app_of_apps_health_gate,
        )

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A reloaded configuration takes effect from the next run."""
        self._config = config
        self.settings = config.settings
        self.inventory.namespace = config.settings.inventory_namespace
        custom = config.customizations
        set_custom_checks({gk: lua.check(script) for gk, script in custom.health.items()})
        self.system_rules = system_rules(config)
        self.tracking = TrackingMethod(
            config.settings.resource_tracking_method or custom.tracking_method or "annotation"
        )
        self.renderer.kustomize_options = config.settings.kustomize_build_options
        keys = config.settings.gpg_keys
        if self.keyring is None or self.keyring.key_files != keys:
            self.keyring = Keyring(Path(config.settings.cache_dir) / "gpg", keys)
        self.renderer.kustomize_paths = dict(custom.kustomize_paths)
        self.renderer.plugins = config.plugins

    def project_for(self, app: Application) -> AppProject | None:
        """The project `app` is judged by. A project defined by a parent app (app of apps) only
        counts for children of that same parent, and never shadows a configured one."""
        configured = self.config.project(app.project)
        if configured is not None:
            return configured
        entry = self.children.projects.get(app.project)
        if entry is not None and self.children.parent_of(app.name) == entry[0]:
            return entry[1]
        return None

    def taken_names(self, *, except_parent: str = "") -> set[str]:
        """Every app name in use — config files, ApplicationSets, other parents' children — so
        no source can claim (and later delete) another's app."""
        names = {a.name for a in self.config.applications} | set(self.generated)
        names |= {n for n, (p, _, _) in self.children.apps.items() if p != except_parent}
        return names

    def stop_requested(self) -> bool:
        """True once shutdown began (read between waves; set from the signal handler)."""
        return self.stopping

    # === the pipeline ========================================================================

    async def reconcile(
        self,
        app: Application,
        *,
        sync: SyncRequest | None = None,
        auto: bool = True,
        poll_max_age: float = 0.0,
    ) -> dict[str, Any]:
        """Compare `app` with its cluster, sync when asked or when its policy says so, and
        return (and persist) its Argo CD-shaped status. One run per app at a time."""
        async with self._locks.setdefault(app.name, anyio.Lock()):
            return await self._reconcile(app, sync=sync, auto=auto, poll_max_age=poll_max_age)

    async def _reconcile(
        self, app: Application, *, sync: SyncRequest | None, auto: bool, poll_max_age: float
    ) -> dict[str, Any]:
        previous = self._states.get(app.name) or self.store.load(app.name)
        run = RunState(
            status=dict(previous.get("status") or {}),
            fingerprints=dict(previous.get("fingerprints") or {}),
            hook_places=list(previous.get("hookPlaces") or []),
            delete_hooks=bool(previous.get("deleteHooks")),
        )
        started = time.monotonic()
        bound = log.bind(app=app.name, run=uuid.uuid4().hex[:8])
        if app.name not in self._restored:
            self._restored.add(app.name)
            self._restore_children(app, previous.get("children") or {})
        if sync is None and auto:
            sync = decide.resume_request(run.status)
        if sync is not None and await self._stale_retry(app, sync, poll_max_age):
            bound.info("retry dropped: the desired revision moved", revision=sync.revision[:12])
            sync = None
        try:
            # `app set -p` overrides; inapplicable ones (the app was edited) fail the run.
            app = overrides.apply(app, previous.get("overrides") or {})
            self.known[app.instance_name] = app
            run.status = await self._run(app, run, sync, auto, poll_max_age, bound)
        except* GitopsdError as group:
            error = _first(group)
            bound.warning("reconcile failed", error=str(error))
            run.conditions.append(build.condition(_error_kind(error), str(error)))
            run.status = build.error_status(app, run.status, run.conditions)
        except* Exception as crash:  # a bug must not take the daemon down with it
            error = _first(crash)
            bound.exception("reconcile crashed")
            message = f"{type(error).__name__}: {error}"
            run.conditions.append(build.condition("UnknownError", message))
            run.status = build.error_status(app, run.status, run.conditions)
        finally:
            run.status["reconciledAt"] = build.now_iso()
            run.status["reconcileDuration"] = round(time.monotonic() - started, 3)
            with anyio.CancelScope(shield=True):  # a cancelled run still records its state
                await self._record(app, previous, run, bound)
        return run.status

    async def _run(
        self,
        app: Application,
        run: RunState,
        sync: SyncRequest | None,
        auto: bool,
        poll_max_age: float,
        bound: Any,
    ) -> dict[str, Any]:
        """The stages, in order, for one app."""
        revision = sync.revision if sync and sync.revision else ""
        target, desired = await self.checked_desired(
            app, revision=revision, max_age=poll_max_age, prepare_kinds=True
        )
        bound = bound.bind(revision=desired.revision[:12])
        if desired.offline:
            run.conditions.append(offline_condition(run.status, desired.offline))
            bound.warning("source unreachable; using the last good render", detail=desired.offline)
        desired = self._without_excluded(desired, target, run)
        if desired.warnings:
            message = "; ".join(desired.warnings)
            run.conditions.append(build.condition("RepeatedResourceWarning", message))
        comparison = await self.compare(app, target.client, desired, run.fingerprints)
        comparison.owned_extra = self._prunable(comparison, target)
        if comparison.shared:
            message = "; ".join(comparison.shared.values())
            run.conditions.append(build.condition("SharedResourceWarning", message))
        self._orphans(app, target, run)
        request = sync or (self._auto_request(app, run, desired, comparison) if auto else None)
        request = self._admit(app, target, request, run, bound)
        if request is not None and not request.dry_run and not request.operation_id:
            request = replace(request, operation_id=uuid.uuid4().hex[:12])
        run.delete_hooks = any(
            delete_hooks(desired, t) for t in (HookType.PRE_DELETE, HookType.POST_DELETE)
        )
        known = {(p[0], p[1], p[2]) for p in run.hook_places if len(p) == 3}
        known |= {(rt.group, rt.kind, ns) for rt, ns in hook_places(desired)}
        run.hook_places = [list(p) for p in sorted(known)]
        operation: Operation | None = None
        if request is not None:
            bound.info(
                "sync starting", initiated_by=request.initiated_by, self_heal=request.self_heal
            )
            self.operating.add(app.name)
            try:
                operation = await run_operation(
                    self._sync_context(run, target, app.name),
                    app,
                    target.client,
                    desired,
                    comparison,
                    request,
                    run.fingerprints,
                    bound,
                )
            finally:
                self.operating.discard(app.name)
                self.terminating.discard(app.name)
            bound.info("sync finished", phase=str(operation.phase), message=operation.message)
            if not request.dry_run:
                comparison = await self.compare(app, target.client, desired, run.fingerprints)
        return build.build_status(
            app, run.status, desired, comparison, operation, run.conditions, request
        )

    async def _stale_retry(self, app: Application, sync: SyncRequest, max_age: float) -> bool:
        """A retry of revision A once the source has moved on (B): Argo CD retries an
        operation's revision only while it is still the one to sync, never rolling B back."""
        if sync.retry_count == 0 or sync.initiated_by != "automated" or not sync.revision:
            return False  # a manual sync of a chosen revision is retried as asked
        if len(app.manifest_sources) != 1:
            return False
        src = app.manifest_sources[0]
        try:
            if src.chart:
                ref = await self.repos.charts.resolve(
                    src.repo_url, src.chart, src.target_revision, max_age=max_age
                )
                return ref.revision != sync.revision
            current = await self.repos.resolve(src.repo_url, src.target_revision, max_age=max_age)
        except GitopsdError:
            return False  # the reconcile reports the source error
        return current.sha != sync.revision

    # === the stages ==========================================================================

    def app_of(self, body: Body) -> Application | None:
        """The app that deploys `body` (by its tracking id), once reconciled here."""
        owner = owner_of(body, self.tracking) or owner_of(body, TrackingMethod.ANNOTATION)
        # The tracking id must name the object itself: a copy of another app's id on an object
        # made outside gitopsd gets nothing of that app (its policy, its claim).
        if not owner or not any(
            is_owned_by(body, owner, namespaced=True, method=m)
            for m in (self.tracking, TrackingMethod.ANNOTATION)
        ):
            return None
        return self.known.get(owner) or next(
            (a for a in self.config.applications if a.instance_name == owner), None
        )

    def analysis_policy(self, ro: Body) -> Policy | None:
        """What the analyses of Rollout `ro` may reach and read: its app's policy (settings
        and project allow-lists, the project's Secret and Job rules); the settings' alone for
        a Rollout no app deploys; None while its app has not been reconciled yet."""
        s = self.config.settings
        if not (owner_of(ro, self.tracking) or owner_of(ro, TrackingMethod.ANNOTATION)):
            return analysis_policy.unowned(allowed=s.analysis_allowed, listen=s.listen)
        app = self.app_of(ro)
        project = self.project_for(app) if app is not None else None
        if app is None or project is None:
            return None
        cluster = self.clusters.lookup(server=app.destination.server, name=app.destination.name)
        return analysis_policy.for_app(
            app, project, cluster, allowed=s.analysis_allowed, listen=s.listen
        )

    def tracks(self, body: Body) -> bool:
        """True when `body` is tracked by one of this daemon's apps (configured, generated
        by an ApplicationSet, or a registered child)."""
        owner = owner_of(body, self.tracking) or owner_of(body, TrackingMethod.ANNOTATION)
        if not owner:
            return False
        names = {a.instance_name for a in self.config.applications}
        names |= set(self.generated) | set(self.children.apps)
        return owner in names and self.owns(owner)

    async def checked_desired(
        self,
        app: Application,
        *,
        revision: str = "",
        max_age: float = 0.0,
        prepare_kinds: bool = False,
    ) -> tuple[Target, Desired]:
        """The app's desired state, only after its AppProject allowed the source and destination
        (before git is contacted) and every rendered resource (after). Every caller — sync,
        diff, render, check — goes through here, so none can skip the project."""
        target = await self._target(app, PlanError, "nothing is synced until it does")
        early = app_violations(app, target.project, target.cluster, None)
        if early:
            raise ProjectViolation("; ".join(early))

        async def before_prepare(manifests: Sequence[Manifest]) -> None:
            # An app with Rollouts gets their CRDs (when allowed) and a controller; only a
            # reconcile does this, never a read-only render, diff or check.
            if prepare_kinds and self.rollouts is not None and uses_rollouts(manifests):
                await self.rollouts.prepare(target.client)

        desired = await render_desired(
            app,
            target.client,
            repos=self.repos,
            renderer=self.renderer,
            revision=revision,
            max_age=max_age,
            tracking_method=self.tracking,
            before_prepare=before_prepare,
            # Only a reconcile falls back to the last good render; a diff or render asked
            # for by a person reports the unreachable source.
            last_good=self.last_good if prepare_kinds else None,
            signature_keys=target.project.signature_keys,
            keyring=self.keyring,
        )
        self._inputs[app.name] = desired.inputs
        violations = app_violations(app, target.project, target.cluster, desired)
        if violations:
            raise ProjectViolation("; ".join(violations))
        return target, desired

    async def _target(
        self, app: Application, error: type[GitopsdError], consequence: str
    ) -> Target:
        """The app's project, cluster and client; `error` when its project does not exist."""
        project = self.project_for(app)
        if project is None:
            raise error(
                f"Application/{app.name}: project {app.project!r} does not exist; {consequence}"
            )
        cluster = self.clusters.lookup(server=app.destination.server, name=app.destination.name)
        return Target(project, cluster, await self.clusters.client(cluster))

    async def compare(
        self,
        app: Application,
        client: KubeClient,
        desired: Desired,
        fingerprints: dict[str, list[str]],
    ) -> Comparison:
        """Live vs desired for `app` (see `daemon.compare`)."""
        return await compare(
            app,
            client,
            desired,
            fingerprints,
            inventory=self.inventory,
            children=self.children,
            child_status=self._child_status,
            parallelism=self.settings.kube_parallelism,
            system_rules=self.system_rules,
            tracking_method=self.tracking,
        )

    def _without_excluded(self, desired: Desired, target: Target, run: RunState) -> Desired:
        """argocd-cm `resource.exclusions`/`inclusions`: excluded kinds are left alone (not
        applied, compared or pruned), with a warning naming them."""
        custom = self.config.customizations
        server = target.cluster.server
        excluded = [
            m for m in desired.manifests if custom.excluded(m.key.group, m.key.kind, server)
        ]
        if not excluded:
            return desired
        names = ", ".join(str(m.key) for m in excluded)
        run.conditions.append(
            build.condition("ExcludedResourceWarning", f"excluded by resource.exclusions: {names}")
        )
        keep = [m for m in desired.manifests if m not in excluded]
        return replace(desired, manifests=keep)

    async def diff(
        self, app: Application, local: Sequence[Manifest] | None = None
    ) -> tuple[Desired, Comparison]:
        """Desired and live state of `app` now, for the diff views (no state is touched).
        With `local`, those manifests (rendered from a local directory by the CLI) stand for
        the desired state instead of git; the project still judges every one."""
        app = self.effective(app)
        if local is None:
            target, desired = await self.checked_desired(app)
        else:
            target = await self._target(app, PlanError, "nothing can be compared")
            prepared, types, warnings = await prepare(app, target.client, local, self.tracking)
            desired = Desired("local", ["local"], prepared, types, "Local", warnings=warnings)
            violations = app_violations(app, target.project, target.cluster, desired)
            if violations:
                raise ProjectViolation("; ".join(violations))
        return desired, await self.compare(app, target.client, desired, {})

    def _child_status(self, name: str) -> dict[str, Any] | None:
        """A child app's status as its parent sees it: with the health gate on, its health
        counts like any resource's; off (Argo CD's default), a child has no health (None)."""
        if not self.settings.app_of_apps_health_gate:
            return None
        return dict((self._states.get(name) or {}).get("status") or {})

    def _prunable(self, comparison: Comparison, target: Target) -> dict[ResourceKey, Body]:
        """Objects the project does not permit are never pruned."""
        out: dict[ResourceKey, Body] = {}
        for key, body in comparison.owned_extra.items():
            rt = target.client.preferred(key.group, key.kind)
            namespaced = True if rt is None else rt.namespaced
            if self.config.customizations.excluded(key.group, key.kind, target.cluster.server):
                continue  # excluded kinds are never pruned
            if is_child_kind(key) or (
                resource_violation(target.project, target.cluster, key, namespaced=namespaced)
                is None
            ):
                out[key] = body
        return out

    def _auto_request(
        self, app: Application, run: RunState, desired: Desired, comparison: Comparison
    ) -> SyncRequest | None:
        return decide.auto_sync_request(
            app,
            run.status,
            desired.revision,
            comparison,
            backoff=self.backoff,
            now=time.monotonic(),
        )

    def _admit(
        self,
        app: Application,
        target: Target,
        request: SyncRequest | None,
        run: RunState,
        bound: Any,
    ) -> SyncRequest | None:
        """Nothing new starts during shutdown; sync windows may hold a (non dry-run) sync."""
        if request is None or self.stop_requested():
            return None
        if request.dry_run:
            return request
        allowed, why = decide.window_allows(
            app, target.project, target.cluster, request, now=dt.datetime.now(dt.UTC)
        )
        if not allowed:
            bound.info("sync blocked by sync window", reason=why)
            run.conditions.append(build.condition("SyncBlocked", why))
            return None
        return request

    def _saved_record(self, name: str) -> dict[str, Any]:
        return self._states.get(name) or self.store.load(name)

    def effective(self, app: Application) -> Application:
        """`app` with its parameter overrides (as written when they no longer apply)."""
        try:
            return overrides.apply(app, self._saved_record(app.name).get("overrides") or {})
        except ConfigError:
            return app

    async def set_overrides(
        self, app: Application, changes: dict[str, str], removed: list[str]
    ) -> dict[str, str]:
        """Add `changes` to and drop `removed` from the app's parameter overrides; persisted
        in its state record before this returns. The new overrides."""
        async with self._locks.setdefault(app.name, anyio.Lock()):
            record = dict(self._saved_record(app.name))
            params = {**(record.get("overrides") or {}), **changes}
            for key in removed:
                params.pop(key, None)
            if params:
                overrides.check(app)  # unsetting stale overrides always works
            record["overrides"] = params
            if not params:
                record.pop("overrides")
            await self.store.save(app.name, record)
            self._states[app.name] = record
            self._saved.add(app.name)
            return params

    def notified(self, name: str) -> dict[str, float]:
        """The notification records of app `name` (what was sent, see daemon.notify)."""
        if name in self._notified:
            return dict(self._notified[name])
        return dict(self._saved_record(name).get("notified") or {})

    async def save_notified(self, name: str, records: dict[str, float]) -> None:
        """Keep the notification records before the notifications go out. During a sync
        they are held here and saved with the run's record (waiting for the app's lock
        would hold an on-sync-running notification until the sync ends); otherwise they are
        saved now."""
        self._notified[name] = dict(records)
        if name in self.operating:
            return
        async with self._locks.setdefault(name, anyio.Lock()):
            record = {**self._saved_record(name), "notified": dict(records)}
            await self.store.save(name, record)
            self._states[name] = record
            self._saved.add(name)

    async def _forget_state(self, name: str) -> None:
        """Drop everything kept about app `name` (its state record and last good render)."""
        await self.store.delete(name)
        self._notified.pop(name, None)
        if self.last_good is not None:
            self.last_good.forget(name)
        self._states.pop(name, None)
        self._digests.pop(name, None)
        self._saved.discard(name)

    async def forget_app(self, app: Application) -> None:
        """Stop owning what `app` deployed without deleting it (a non-cascading delete): its
        inventory and state go; its resources stay, still carrying its tracking."""
        async with self._locks.setdefault(app.name, anyio.Lock()):
            target = await self._target(app, SyncFailed, "its inventory stays")
            await self.inventory.delete(app.name, target.client)
            await self._forget_state(app.name)

    def _orphans(self, app: Application, target: Target, run: RunState) -> None:
        """AppProject orphanedResources: count objects in the app's namespace that no app
        tracks and nothing owns (among the types gitopsd watches there), and warn."""
        settings = target.project.orphaned_resources
        namespace = app.destination.namespace
        if settings is None or not namespace:
            self.orphaned.pop(app.name, None)
            return
        found = target.client.cache.untracked(namespace)
        if found is None:
            return  # the namespace's watches are not established yet: no count to give
        names = sorted(
            f"{kind}/{(body.get('metadata') or {}).get('name', '')}"
            for group, kind, body in found
            if not settings.ignores(group, kind, str((body.get("metadata") or {}).get("name", "")))
        )
        self.orphaned[app.name] = len(names)
        if names and settings.warn:
            shown = ", ".join(names[:10]) + (
                f" and {len(names) - 10} more" if len(names) > 10 else ""
            )
            run.conditions.append(
                build.condition(
                    "OrphanedResourceWarning",
                    f"Application has {len(names)} orphaned resources: {shown}",
                )
            )

    def terminate(self, name: str) -> bool:
        """Ask the running operation of `name` to stop at its next step (`terminate-op`);
        False when none is running."""
        if name not in self.operating:
            return False
        self.terminating.add(name)
        return True

    def _sync_context(self, run: RunState, target: Target, name: str = "") -> SyncContext:
        async def checkpoint(name: str, operation_state: dict[str, Any]) -> None:
            """Persist the Running operation before its first write."""
            status = {**run.status, "operationState": operation_state}
            record = {**self._saved_record(name), "status": status}
            record["fingerprints"] = run.fingerprints
            if name in self._notified:
                record["notified"] = self._notified[name]
            record["hookPlaces"] = run.hook_places
            await self.store.save(name, record)
            self._saved.discard(name)  # the run's end must overwrite it, changed or not

        return SyncContext(
            checkpoint=checkpoint,
            settings=self.settings,
            project=target.project,
            cluster=target.cluster,
            inventory=self.inventory,
            children=self.child_tasks,
            stopping=self.stop_requested,
            progress=self.progress,
            system_rules=self.system_rules,
            terminated=lambda: name in self.terminating,
        )

    async def _record(
        self, app: Application, previous: dict[str, Any], run: RunState, bound: Any
    ) -> None:
        """Persist the run's record (skipping the disk when nothing meaningful changed)."""
        record = {
            "status": run.status,
            "fingerprints": run.fingerprints,
            "children": self.children.saved(app.name),
            "hookPlaces": run.hook_places,
            "deleteHooks": run.delete_hooks,
        }
        if previous.get("overrides"):
            record["overrides"] = previous["overrides"]
        notified = self._notified.get(app.name, previous.get("notified"))
        if notified:
            record["notified"] = notified
        digest = build.meaningful(record)
        changed = digest != self._digests.get(app.name, build.meaningful(previous))
        self._digests[app.name] = digest
        if changed or app.name not in self._saved:
            try:
                await self.store.save(app.name, record)
                self._saved.add(app.name)
            except OSError as e:
                bound.error("state not saved", error=str(e))
                run.status.setdefault("conditions", []).append(
                    build.condition("UnknownError", f"state not saved: {e}")
                )
            except Fenced as e:
                # Another replica may own the app now: this run's record is not the app's
                # state, here or in memory (a later claim re-reads it from the cluster).
                bound.error("state not saved", error=str(e))
                return
        self._states[app.name] = record
        (bound.info if changed else bound.debug)(
            "reconciled",
            sync=run.status.get("sync", {}).get("status"),
            health=run.status.get("health", {}).get("status"),
            seconds=run.status["reconcileDuration"],
        )

    def forget(self, name: str) -> None:
        """Drop what this process remembers of app `name`'s last run, so the next reconcile
        starts from the store (a replica taking over an app another one ran)."""
        self._states.pop(name, None)
        self._digests.pop(name, None)
        self._saved.discard(name)
        self._notified.pop(name, None)

    # === quick path, children, deletion ======================================================

    async def unchanged(self, app: Application, *, max_age: float) -> dict[str, Any] | None:
        """The last status, if nothing an app's compare depends on can have changed: the app is
        Synced and Healthy, its spec and every source's revision are as last compared. The
        caller vouches for the live side (the daemon's watches saw no event for the app)."""
        state = self._states.get(app.name)
        if not state or app.name not in self._inputs:
            return None
        status = state.get("status") or {}
        if (
            (status.get("sync") or {}).get("status") != "Synced"
            or ((status.get("health") or {}).get("status") != "Healthy")
            or status.get("conditions")
        ):
            return None
        try:
            shas = await source_shas(app, self.repos, max_age=max_age)
        except GitopsdError:
            return None  # let the full reconcile report it
        if inputs_key(app, shas) != self._inputs[app.name]:
            return None
        status["reconciledAt"] = build.now_iso()
        return status

    def _restore_children(self, app: Application, saved: dict[str, Any]) -> None:
        """Re-register the children a parent had before a restart."""
        restored = self.children.restore(
            app,
            saved,
            top_level_projects={p.name for p in self.config.projects},
            taken=self.taken_names(except_parent=app.name),
        )
        for child in restored:
            if self.child_tasks.on_added is not None:
                self.child_tasks.on_added(child)

    async def _desired_for_deletion(
        self, app: Application, saved: dict[str, Any]
    ) -> Desired | None:
        """The app's rendered state, for its PreDelete/PostDelete hooks. When it cannot be
        rendered: deletion is blocked if the app had such hooks (they must run), else it
        proceeds without them."""
        try:
            _, desired = await self.checked_desired(app)
        except GitopsdError as e:
            if saved.get("deleteHooks"):
                raise SyncFailed(
                    f"Application/{app.name}: cannot render it to run its PreDelete/PostDelete "
                    f"hooks ({e}); deletion is blocked until it renders"
                ) from e
            log.warning("deleting without rendering (no delete hooks known)", app=app.name)
            return None
        return desired

    async def delete_app(self, app: Application) -> list[ResourceResult]:
        """Cascade-delete what `app` owns (see `daemon.deletion`) and forget its state."""
        async with self._locks.setdefault(app.name, anyio.Lock()):
            target = await self._target(
                app, SyncFailed, "refusing to delete resources it cannot vouch for"
            )
            saved = self.store.load(app.name)
            places = [
                (rt, p[2])
                for p in saved.get("hookPlaces") or []
                if len(p) == 3 and (rt := target.client.preferred(p[0], p[1])) is not None
            ]
            await release_stale(target.client, app.name, places)
            desired = await self._desired_for_deletion(app, saved)
            timeout = self.settings.health_timeout
            if desired is not None:
                await run_delete_hooks(
                    target.client, app, desired, HookType.PRE_DELETE, timeout=timeout
                )
            results = await delete_resources(
                app,
                target.project,
                target.cluster,
                target.client,
                inventory=self.inventory,
                fingerprints=saved.get("fingerprints", {}),
                parallelism=self.settings.kube_parallelism,
                tracking_method=self.tracking,
            )
            if desired is not None:
                await run_delete_hooks(
                    target.client, app, desired, HookType.POST_DELETE, timeout=timeout
                )
            await self._forget_state(app.name)
            log.info("app resources deleted", app=app.name, deleted=len(results))
            return results


def system_rules(config: Config) -> list[diffing.IgnoreRule]:
    """The argocd-cm ignoreDifferences of `config`, parsed; ConfigError naming the key."""
    custom = config.customizations
    rules = list(custom.ignore_differences)
    if custom.ignore_aggregated_roles:
        rules.append(aggregated_roles_rule())
    where = f"{custom.source or 'argocd-cm'} resource.customizations.ignoreDifferences"
    try:
        return [*diffing.parse_ignore_differences(rules, where=where), *diffing.CONTROLLER_OWNED]
    except ValueError as e:
        raise ConfigError(str(e)) from None


OFFLINE = "SourceUnreachable"


def offline_condition(previous: dict[str, Any], detail: str) -> dict[str, str]:
    """The condition of an app running from its last good render; its transition time (and
    the "since" it names) is when the source was first found unreachable."""
    since = next(
        (
            str(c.get("lastTransitionTime", ""))
            for c in previous.get("conditions") or []
            if c.get("type") == OFFLINE
        ),
        "",
    )
    cond = build.condition(OFFLINE, "")
    since = since or cond["lastTransitionTime"]
    cond["lastTransitionTime"] = since
    cond["message"] = f"source unreachable since {since}: {detail}"
    return cond


def _error_kind(error: BaseException) -> str:
    """The Argo CD condition type for a failed reconcile."""
    if isinstance(error, ProjectViolation) or (
        isinstance(error, PlanError) and "project" in str(error)
    ):
        return "InvalidSpecError"
    return "ComparisonError"


def _first(group: BaseException) -> BaseException:
    """The first leaf of a (possibly nested) exception group: task groups wrap errors."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
