"""One reconcile of one Application: source → render → plan → (sync: waves of apply and
health gates) → status.

Read top to bottom, `Reconciler.reconcile` is the whole pipeline. Each stage lives in its own
module; this file only orders them, turns their results into Argo CD-shaped status, and decides
whether an automated sync should run.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from daemon import yamlio
from daemon.apply import ResourceResult, apply_one, prune_one, run_bounded
from daemon.children import ANCESTRY, ChildRegistry, clean, is_child_kind
from daemon.errors import GitopsdError, KubeError, KubeNotFound, PlanError, SyncFailed
from daemon.health.checks import aggregate, assess
from daemon.health.wait import WaitItem, wait_healthy
from daemon.kube import FIELD_MANAGER, Clusters, KubeClient, ResourceType
from daemon.model import (
    ANN_IGNORE_HEALTHCHECK,
    ANN_SYNC_OPTIONS,
    Action,
    Body,
    Health,
    HealthStatus,
    HookDeletePolicy,
    Manifest,
    OperationPhase,
    ResourceKey,
    ResultCode,
    SyncPhase,
    SyncStatus,
    annotations_of,
)
from daemon.plan import diff as diffing
from daemon.plan import project as projects
from daemon.plan import tracking
from daemon.plan.options import (
    SyncOptions,
    delete_policies,
    is_hook,
    is_skipped,
    parse_sync_options,
    resource_sync_options,
)
from daemon.plan.order import SyncTask, build_tasks, group_steps, split_syncfail
from daemon.render import Renderer, RenderRequest
from daemon.settings import Application, AppProject, ClusterConfig, Config
from daemon.sources.git import RepoCache
from daemon.status.state import StateStore

log = structlog.get_logger("gitopsd.reconcile")


class ProjectViolation(PlanError):
    """The app breaks its AppProject's rules; nothing of it is synced."""


INVENTORY_PREFIX = "gitopsd-inventory."


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A request to sync (from the CLI/API) or the automated policy's decision."""

    revision: str = ""
    prune: bool | None = None
    dry_run: bool = False
    initiated_by: str = "automated"
    self_heal: bool = False
    options: tuple[str, ...] = ()
    retry_count: int = 0


@dataclass
class Desired:
    """The rendered, prepared desired state of an app at one revision."""

    revision: str
    revisions: list[str]
    manifests: list[Manifest]
    types: dict[ResourceKey, ResourceType | None]  # None: kind defined by a CRD in this app
    tool: str


@dataclass
class Comparison:
    """Live vs desired for one app: per-resource status, live objects, and dry-run errors."""

    live: dict[ResourceKey, Body]
    owned_extra: dict[ResourceKey, Body]  # owned live objects git no longer has
    status: dict[ResourceKey, SyncStatus]
    diffs: dict[ResourceKey, diffing.DiffResult] = field(default_factory=dict)
    errors: dict[ResourceKey, str] = field(default_factory=dict)
    shared: dict[ResourceKey, str] = field(default_factory=dict)

    @property
    def sync_status(self) -> SyncStatus:
        if any(s is SyncStatus.OUT_OF_SYNC for s in self.status.values()) or self.owned_extra:
            return SyncStatus.OUT_OF_SYNC
        return SyncStatus.SYNCED


@dataclass
class Operation:
    """The result of one sync operation."""

    phase: OperationPhase
    message: str
    results: list[ResourceResult]
    started_at: str
    finished_at: str = ""
    revision: str = ""


class Reconciler:
    """Runs reconciles for the apps of one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        repos: RepoCache,
        renderer: Renderer,
        clusters: Clusters,
        store: StateStore,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.repos = repos
        self.renderer = renderer
        self.clusters = clusters
        self.store = store
        self.stopping = False  # set on shutdown: running syncs stop at the next wave boundary
        self._states: dict[str, dict[str, Any]] = {}  # last state per app, as saved
        self._digests: dict[str, str] = {}  # _meaningful() of that state
        self._inputs: dict[str, str] = {}  # app -> hash of (spec, source SHAs) last compared
        self._saved: set[str] = set()
        self._inventories: dict[tuple[str, str], set[ResourceKey]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._heal: dict[str, tuple[str, int, float]] = {}  # app -> (revision, attempts, at)
        self.heal_retry_in: dict[str, float] = {}  # app -> seconds until self-heal may run
        self.children = ChildRegistry()
        self.generated: dict[str, str] = {}  # ApplicationSet-generated app -> its set
        self._restored: set[str] = set()
        # The daemon hooks these to start / stop workers for child apps (app of apps).
        self.on_child_added: Callable[[Application], None] | None = None
        self.on_child_removed: Callable[[Application], Awaitable[None]] | None = None
        # Called with (app name, Argo CD-shaped operationState) while a sync runs.
        self.progress: Callable[[str, dict[str, Any]], None] | None = None

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
        lock = self._locks.setdefault(app.name, anyio.Lock())
        async with lock:
            return await self._reconcile(app, sync=sync, auto=auto, poll_max_age=poll_max_age)

    async def _reconcile(
        self,
        app: Application,
        *,
        sync: SyncRequest | None,
        auto: bool,
        poll_max_age: float,
    ) -> dict[str, Any]:
        run_id = uuid.uuid4().hex[:8]
        state = self._states.get(app.name) or self.store.load(app.name)
        # Shallow copies: the pipeline builds new status values and replaces fingerprint
        # entries rather than mutating them, so the previous record stays intact.
        status: dict[str, Any] = dict(state.get("status") or {})
        fingerprints: dict[str, list[str]] = dict(state.get("fingerprints") or {})
        started = time.monotonic()
        bound = log.bind(app=app.name, run=run_id)
        conditions: list[dict[str, str]] = []
        if app.name not in self._restored:
            self._restored.add(app.name)
            self._restore_children(app, state.get("children") or {})
        if sync is None and auto:
            sync = _resume_request(status)
        try:
            revision_override = sync.revision if sync and sync.revision else ""
            project, cluster, client, desired = await self.checked_desired(
                app, revision=revision_override, max_age=poll_max_age
            )
            bound = bound.bind(revision=desired.revision[:12])
            comparison = await self.compare(app, client, desired, fingerprints)
            comparison.owned_extra = {
                k: b
                for k, b in comparison.owned_extra.items()
                if is_child_kind(k) or self._permitted(project, cluster, client, k)
            }
            if comparison.shared:
                conditions.append(
                    _condition("SharedResourceWarning", "; ".join(comparison.shared.values()))
                )
            operation: Operation | None = None
            request = sync or (
                self.auto_sync_request(app, status, desired, comparison) if auto else None
            )
            if request is not None and self.stop_requested():
                request = None  # shutting down: start nothing new
            if request is not None and not request.dry_run:
                allowed, why = self.window_allows(app, project, cluster, request)
                if not allowed:
                    bound.info("sync blocked by sync window", reason=why)
                    conditions.append(_condition("SyncBlocked", why))
                    request = None
            if request is not None:
                bound.info(
                    "sync starting", initiated_by=request.initiated_by, self_heal=request.self_heal
                )
                operation = await self.sync(
                    app, client, desired, comparison, request, fingerprints, bound
                )
                bound.info("sync finished", phase=str(operation.phase), message=operation.message)
                if not request.dry_run:
                    comparison = await self.compare(app, client, desired, fingerprints)
            status = self.build_status(
                app, status, desired, comparison, operation, conditions, request
            )
        except* GitopsdError as group:
            e = _first(group)
            bound.warning("reconcile failed", error=str(e))
            kind = (
                "InvalidSpecError"
                if isinstance(e, ProjectViolation)
                or (isinstance(e, PlanError) and "project" in str(e))
                else ("ComparisonError")
            )
            conditions.append(_condition(kind, str(e)))
            status = self.error_status(app, status, conditions)
        except* Exception as crash:  # a bug must not take the daemon down with it
            e = _first(crash)
            bound.exception("reconcile crashed")
            conditions.append(_condition("UnknownError", f"{type(e).__name__}: {e}"))
            status = self.error_status(app, status, conditions)
        finally:
            status["reconciledAt"] = now_iso()
            status["reconcileDuration"] = round(time.monotonic() - started, 3)
            record = {
                "status": status,
                "fingerprints": fingerprints,
                "children": self.children.saved(app.name),
            }
            digest = _meaningful(record)
            changed = digest != self._digests.get(app.name, _meaningful(state))
            self._digests[app.name] = digest
            if changed or app.name not in self._saved:
                # Unchanged no-op reconciles skip the disk (an fsync per poll adds up).
                try:
                    self.store.save(app.name, record)
                    self._saved.add(app.name)
                except OSError as e:
                    bound.error("state not saved", error=str(e))
                    status.setdefault("conditions", []).append(
                        _condition("UnknownError", f"state not saved under stateDir: {e}")
                    )
            self._states[app.name] = record
            (bound.info if changed else bound.debug)(
                "reconciled",
                sync=status.get("sync", {}).get("status"),
                health=status.get("health", {}).get("status"),
                seconds=status["reconcileDuration"],
            )
        return status

    # === source + render =====================================================================

    async def checked_desired(
        self, app: Application, *, revision: str = "", max_age: float = 0.0
    ) -> tuple[AppProject, ClusterConfig, KubeClient, Desired]:
        """The app's desired state, only after its AppProject allowed the source and destination
        (before git is contacted) and every rendered resource (after). Every caller — sync,
        diff, render, check — goes through here, so none can skip the project."""
        project = self.project_for(app)
        if project is None:
            raise PlanError(
                f"Application/{app.name}: project {app.project!r} does not exist; "
                "nothing is synced until it does"
            )
        cluster = self.clusters.lookup(server=app.destination.server, name=app.destination.name)
        client = await self.clusters.client(cluster)
        early = self.project_violations(app, project, cluster, None)
        if early:
            raise ProjectViolation("; ".join(early))
        desired = await self.desired(app, client, revision=revision, max_age=max_age)
        violations = self.project_violations(app, project, cluster, desired)
        if violations:
            raise ProjectViolation("; ".join(violations))
        return project, cluster, client, desired

    async def desired(
        self, app: Application, client: KubeClient, *, revision: str = "", max_age: float = 0.0
    ) -> Desired:
        """Resolve, check out and render every source; prepare manifests for the cluster."""
        manifests: list[Manifest] = []
        revisions: list[str] = []
        tools: list[str] = []
        await client.discover()
        kube_version = client.server_version.lstrip("v").split("-")[0].split("+")[0]
        refs: list[tuple[str, str, str]] = []
        for src in app.sources:
            if src.ref:
                resolved = await self.repos.resolve(
                    src.repo_url, src.target_revision, max_age=max_age
                )
                checkout = await self.repos.checkout(src.repo_url, resolved.sha)
                refs.append((src.ref, resolved.sha, str(checkout)))
        for src in app.manifest_sources:
            rev = revision if revision and len(app.manifest_sources) == 1 else src.target_revision
            resolved = await self.repos.resolve(src.repo_url, rev, max_age=max_age)
            checkout = await self.repos.checkout(src.repo_url, resolved.sha)
            rendered = await self.renderer.render(
                RenderRequest(
                    sha=resolved.sha,
                    source=src,
                    app_name=app.name,
                    namespace=app.destination.namespace,
                    kube_version=kube_version,
                    refs=tuple(refs),
                ),
                checkout,
            )
            manifests.extend(rendered.manifests)
            revisions.append(resolved.sha)
            tools.append(rendered.tool)
        prepared, types = await self.prepare(app, client, manifests)
        self._inputs[app.name] = _inputs_key(app, [sha for _, sha, _ in refs] + revisions)
        return Desired(
            revisions[0] if revisions else "", revisions, prepared, types, ",".join(tools)
        )

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
        shas = []
        try:
            for src in [*(s for s in app.sources if s.ref), *app.manifest_sources]:
                resolved = await self.repos.resolve(
                    src.repo_url, src.target_revision, max_age=max_age
                )
                shas.append(resolved.sha)
        except GitopsdError:
            return None  # let the full reconcile report it
        if _inputs_key(app, shas) != self._inputs[app.name]:
            return None
        status["reconciledAt"] = now_iso()
        return status

    async def prepare(
        self, app: Application, client: KubeClient, manifests: Sequence[Manifest]
    ) -> tuple[list[Manifest], dict[ResourceKey, ResourceType | None]]:
        """Resolve kinds, default namespaces, add tracking ids; reject what cannot be synced."""
        crds: dict[tuple[str, str], bool] = {}  # (group, kind) -> namespaced, from CRDs here
        for m in manifests:
            if m.key.kind == "CustomResourceDefinition":
                spec = m.body.get("spec") or {}
                names = spec.get("names") or {}
                crds[(str(spec.get("group", "")), str(names.get("kind", "")))] = (
                    spec.get("scope", "Namespaced") == "Namespaced"
                )
        errors: list[str] = []
        out: list[Manifest] = []
        types: dict[ResourceKey, ResourceType | None] = {}
        seen: dict[ResourceKey, str] = {}
        for m in manifests:
            if is_skipped(m.body):
                continue
            if is_child_kind(m.key):
                # Managed by gitopsd itself (app of apps); never applied to the cluster.
                body = copy.deepcopy(m.body)
                body["metadata"].setdefault("namespace", "argocd")
                key = ResourceKey.of(body)
                if key in seen:
                    errors.append(f"{key}: defined more than once ({seen[key]} and {m.source})")
                    continue
                seen[key] = m.source
                out.append(Manifest(key=key, body=body, source=m.source))
                types[key] = None
                continue
            try:
                resource_sync_options(m.body)
            except ValueError as e:
                errors.append(f"{m.source}: {m.key}: {ANN_SYNC_OPTIONS}: {e}")
                continue
            rt: ResourceType | None = client.known(m.api_version, m.key.kind)
            if rt is None:
                try:
                    rt = await client.resource_for(m.api_version, m.key.kind, subject=str(m.key))
                except KubeNotFound as e:
                    if (m.key.group, m.key.kind) not in crds:
                        errors.append(f"{m.source}: {m.key}: {e.api_message}")
                        continue
                    rt = None
            namespaced = rt.namespaced if rt is not None else crds[(m.key.group, m.key.kind)]
            body = copy.deepcopy(m.body)
            meta = body["metadata"]
            if namespaced:
                if not meta.get("namespace"):
                    if not app.destination.namespace:
                        errors.append(
                            f"{m.source}: {m.key.kind}/{meta.get('name')}: namespaced resource "
                            "has no metadata.namespace and the Application has no "
                            "spec.destination.namespace"
                        )
                        continue
                    meta["namespace"] = app.destination.namespace
            else:
                meta.pop("namespace", None)
            key = ResourceKey.of(body)
            if not is_hook(body) or meta.get("name"):
                if key in seen:
                    errors.append(f"{key}: defined more than once ({seen[key]} and {m.source})")
                    continue
                seen[key] = m.source
            tid = tracking.build(
                app.instance_name,
                key,
                namespaced=namespaced,
                dest_namespace=app.destination.namespace,
            )
            body = tracking.with_tracking(body, tid)
            manifest = Manifest(key=key, body=body, source=m.source)
            out.append(manifest)
            types[key] = rt
        if errors:
            raise PlanError("; ".join(errors))
        return out, types

    # === compare =============================================================================

    async def inventory(self, app: Application, client: KubeClient) -> set[ResourceKey]:
        """What the app owned after its last sync, as recorded in the destination cluster."""
        cached = self._inventories.get((client.name, app.name))
        if cached is not None:
            return set(cached)
        rt = await client.resource_for("v1", "ConfigMap", subject="inventory")
        try:
            cm = await client.get(
                rt, self.settings.inventory_namespace, INVENTORY_PREFIX + app.name
            )
        except KubeError as e:
            if e.status != 403:
                # Unknown is not empty: acting on an empty inventory would forget owned objects.
                raise
            log.warning(
                "inventory not readable (forbidden); using local state only",
                app=app.name,
                error=str(e),
            )
            return set()
        if not cm:
            return set()
        entries = str((cm.get("data") or {}).get("entries", ""))
        keys = {k for k in (tracking.key_from_str(e) for e in entries.splitlines()) if k}
        self._inventories[(client.name, app.name)] = set(keys)
        return keys

    async def save_inventory(
        self, app: Application, client: KubeClient, keys: set[ResourceKey]
    ) -> None:
        """Record what the app owns in its destination cluster (survives losing local disk)."""
        ns_rt = await client.resource_for("v1", "Namespace", subject="inventory")
        cm_rt = await client.resource_for("v1", "ConfigMap", subject="inventory")
        ns = self.settings.inventory_namespace
        if self._inventories.get((client.name, app.name)) == keys:
            return  # already recorded exactly this
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": INVENTORY_PREFIX + app.name,
                "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "gitopsd"},
            },
            "data": {"entries": "\n".join(sorted(tracking.key_to_str(k) for k in keys))},
        }
        try:
            try:
                await client.apply(cm_rt, body, manager="gitopsd-inventory")
            except KubeNotFound:
                await client.apply(
                    ns_rt,
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                    manager="gitopsd-inventory",
                )
                await client.apply(cm_rt, body, manager="gitopsd-inventory")
            self._inventories[(client.name, app.name)] = set(keys)
        except KubeError as e:
            log.warning("inventory not saved", app=app.name, error=str(e))

    async def fetch_live(
        self, client: KubeClient, keys: dict[ResourceKey, ResourceType]
    ) -> dict[ResourceKey, Body]:
        """Live objects for `keys`: one LIST per (type, namespace) when many, else GETs."""
        groups: dict[tuple[ResourceType, str], list[ResourceKey]] = defaultdict(list)
        for key, rt in keys.items():
            groups[(rt, key.namespace)].append(key)
        live: dict[ResourceKey, Body] = {}

        async def fetch_group(rt: ResourceType, ns: str, wanted: list[ResourceKey]) -> None:
            try:
                await fetch_group_unguarded(rt, ns, wanted)
            except KubeError as e:
                if e.status != 403:
                    raise
                # Not allowed to read it: live state unknown. If it is desired, the dry-run
                # apply fails next with the API's own Forbidden message, naming the resource.
                log.debug("live state forbidden", kind=rt.kind, namespace=ns, error=str(e))

        async def fetch_group_unguarded(
            rt: ResourceType, ns: str, wanted: list[ResourceKey]
        ) -> None:
            if len(wanted) > 3 and "list" in rt.verbs:
                items, _ = await client.list(rt, ns)
                names = {k.name for k in wanted}
                for item in items:
                    k = ResourceKey.of(item)
                    if k.name in names:
                        live[ResourceKey(k.group, k.kind, ns, k.name)] = item
                return
            for k in wanted:
                body = await client.get(rt, k.namespace, k.name)
                if body is not None:
                    body.setdefault("apiVersion", rt.api_version)
                    body.setdefault("kind", rt.kind)
                    live[k] = body

        limiter = anyio.CapacityLimiter(16)

        async def guarded(rt: ResourceType, ns: str, wanted: list[ResourceKey]) -> None:
            async with limiter:
                await fetch_group(rt, ns, wanted)

        async with anyio.create_task_group() as tg:
            for (rt, ns), wanted in groups.items():
                tg.start_soon(guarded, rt, ns, wanted)
        return live

    async def compare(
        self,
        app: Application,
        client: KubeClient,
        desired: Desired,
        fingerprints: dict[str, list[str]],
    ) -> Comparison:
        """Per-resource Synced/OutOfSync: fingerprint fast path, else server-side dry-run diff."""
        children = [m for m in desired.manifests if is_child_kind(m.key)]
        targets = [m for m in desired.manifests if not is_hook(m.body) and not is_child_kind(m.key)]
        wanted: dict[ResourceKey, ResourceType] = {}
        for m in targets:
            rt = desired.types.get(m.key)
            if rt is not None:
                wanted[m.key] = rt
        for key in await self.inventory(app, client):
            if key in wanted or is_child_kind(key):
                continue
            rt = client.preferred(key.group, key.kind)
            if rt is not None:
                wanted[key] = rt
        for keystr in fingerprints:
            fkey = tracking.key_from_str(keystr)
            if fkey is not None and fkey not in wanted:
                rt = client.preferred(fkey.group, fkey.kind)
                if rt is not None:
                    wanted[fkey] = rt
        live = await self.fetch_live(client, wanted)
        desired_keys = {m.key for m in targets}
        owned_extra: dict[ResourceKey, Body] = {}
        for key, body in live.items():
            if key in desired_keys or (body.get("metadata") or {}).get("ownerReferences"):
                continue
            rt = wanted[key]
            if tracking.is_owned_by(body, app.instance_name, namespaced=rt.namespaced) and not (
                is_hook(body)
            ):
                owned_extra[key] = body
        rules = diffing.parse_ignore_differences(
            list(app.ignore_differences), where=f"Application/{app.name}.spec.ignoreDifferences"
        )
        comparison = Comparison(live=live, owned_extra=owned_extra, status={})
        self._compare_children(app, children, comparison)
        limiter = anyio.CapacityLimiter(self.settings.kube_parallelism)
        ns_created = {m.key.name for m in targets if m.key.kind == "Namespace" and not m.key.group}
        opts = parse_sync_options(app.sync_policy.sync_options)
        if opts.create_namespace and app.destination.namespace:
            ns_created.add(app.destination.namespace)

        async def one(m: Manifest) -> None:
            rt = desired.types.get(m.key)
            body = live.get(m.key)
            if body is not None:
                owner = tracking.owner_of(body)
                if owner and owner != app.instance_name:
                    comparison.shared[m.key] = (
                        f"{m.key.kind}/{m.key.name} is part of applications {app.name} and {owner}"
                    )
            fp = fingerprints.get(tracking.key_to_str(m.key))
            if (
                body is not None
                and fp is not None
                and fp[0] == tracking.fingerprint(m.body)
                and fp[1]
                and fp[1] == tracking.manager_fields(body, FIELD_MANAGER)
                and fp[2] == str(body["metadata"].get("uid"))
            ):
                comparison.status[m.key] = SyncStatus.SYNCED
                return
            if rt is None:
                comparison.status[m.key] = SyncStatus.OUT_OF_SYNC  # CRD not installed yet
                return
            async with limiter:
                try:
                    predicted = await client.apply(rt, m.body, dry_run=True)
                except KubeError as e:
                    if body is None and e.status == 404 and m.key.namespace in ns_created:
                        comparison.status[m.key] = SyncStatus.OUT_OF_SYNC
                        return
                    force = opts.merged(resource_sync_options(m.body)).force
                    if body is not None and force and e.status == 422:
                        # Force=true recreates the object, so an immutable-field change is
                        # not an error: it is exactly what Force is for (e.g. a Job template).
                        comparison.status[m.key] = SyncStatus.OUT_OF_SYNC
                        return
                    comparison.errors[m.key] = f"{m.key}: {e.api_message}"
                    comparison.status[m.key] = SyncStatus.OUT_OF_SYNC
                    return
            if body is None:
                comparison.status[m.key] = SyncStatus.OUT_OF_SYNC
                return
            result = diffing.diff(predicted, body, rules=rules, key=m.key)
            comparison.diffs[m.key] = result
            comparison.status[m.key] = (
                SyncStatus.OUT_OF_SYNC if result.modified else SyncStatus.SYNCED
            )

        async with anyio.create_task_group() as tg:
            for m in targets:
                tg.start_soon(one, m)
        return comparison

    # === projects ============================================================================

    def project_violations(
        self,
        app: Application,
        project: AppProject,
        cluster: ClusterConfig,
        desired: Desired | None,
    ) -> list[str]:
        """Every way `app` breaks its AppProject's rules (sources, destination, resources)."""
        out: list[str] = []
        for src in app.sources:
            v = projects.check_source(project, src.repo_url)
            if v is not None:
                out.append(v.message)
        v = projects.check_destination(
            project, server=cluster.server, name=cluster.name, namespace=app.destination.namespace
        )
        if v is not None:
            out.append(v.message)
        if desired is None:
            return out
        for m in desired.manifests:
            rt = desired.types.get(m.key)
            # No type yet (a CRD in this app, or an Argo CD document): prepare() gave
            # namespaced objects a namespace and stripped it from cluster-scoped ones.
            namespaced = bool(m.key.namespace) if rt is None else rt.namespaced
            v = projects.check_resource(
                project,
                group=m.key.group,
                kind=m.key.kind,
                name=m.key.name,
                namespace=m.key.namespace if namespaced else "",
                namespaced=namespaced,
                server=cluster.server,
                cluster_name=cluster.name,
            )
            if v is not None:
                out.append(f"{m.source}: {v.message}")
        return out

    def _permitted(
        self, project: AppProject, cluster: ClusterConfig, client: KubeClient, key: ResourceKey
    ) -> bool:
        rt = client.preferred(key.group, key.kind)
        namespaced = True if rt is None else rt.namespaced
        return (
            projects.check_resource(
                project,
                group=key.group,
                kind=key.kind,
                name=key.name,
                namespace=key.namespace,
                namespaced=namespaced,
                server=cluster.server,
                cluster_name=cluster.name,
            )
            is None
        )

    def window_allows(
        self, app: Application, project: AppProject, cluster: ClusterConfig, request: SyncRequest
    ) -> tuple[bool, str]:
        """Whether the project's sync windows let this sync start now."""
        try:
            windows = projects.project_sync_windows(project)
        except ValueError as e:
            return False, f"invalid syncWindows in project {project.name}: {e}"
        if not windows:
            return True, ""
        return projects.sync_allowed(
            windows,
            app=app.name,
            namespace=app.destination.namespace,
            cluster=cluster.name,
            server=cluster.server,
            now=dt.datetime.now(dt.UTC),
            manual=request.initiated_by != "automated",
        )

    # === app of apps =========================================================================

    def _child_live(self, name: str) -> Body:
        """A child app as a pseudo live object whose status carries the child's health."""
        doc = self.children.document(name) or {}
        status = (self._states.get(name) or {}).get("status") or {}
        return {**doc, "status": status}

    def _compare_children(
        self, app: Application, children: Sequence[Manifest], comparison: Comparison
    ) -> None:
        """Child documents are Synced when registered exactly as rendered."""
        desired_keys = set()
        for m in children:
            desired_keys.add(m.key)
            doc = clean(m.body)
            if m.key.kind == "Application":
                registered = self.children.document(m.key.name)
                mine = self.children.parent_of(m.key.name) == app.name
                synced = mine and registered == doc
                if mine:
                    comparison.live[m.key] = self._child_live(m.key.name)
            elif m.key.kind == "AppProject":
                entry = self.children.projects.get(m.key.name)
                synced = entry is not None and entry[0] == app.name and entry[2] == doc
                if entry is not None and entry[0] == app.name:
                    comparison.live[m.key] = doc
            else:
                comparison.errors[m.key] = (
                    f"{m.key}: ApplicationSets inside an app are not supported yet; "
                    "define them in the config files"
                )
                synced = False
            comparison.status[m.key] = SyncStatus.SYNCED if synced else SyncStatus.OUT_OF_SYNC
        for name in self.children.children_of(app.name):
            doc = self.children.document(name) or {}
            key = ResourceKey.of(
                {**doc, "apiVersion": "argoproj.io/v1alpha1", "kind": "Application"}
            )
            if key not in desired_keys:
                comparison.owned_extra[key] = doc
        for name, (parent, _, doc) in self.children.projects.items():
            key = ResourceKey(
                "argoproj.io",
                "AppProject",
                str((doc.get("metadata") or {}).get("namespace") or "argocd"),
                name,
            )
            if parent == app.name and key not in desired_keys:
                comparison.owned_extra[key] = doc

    def _restore_children(self, app: Application, saved: dict[str, Any]) -> None:
        """Re-register the children a parent had before a restart."""
        for doc in saved.get("projects") or []:
            try:
                proj = self.children.parse_project(
                    app, doc, top_level={p.name for p in self.config.projects}
                )
            except GitopsdError as e:
                log.warning("child project not restored", parent=app.name, error=str(e))
                continue
            self.children.register_project(app.name, proj, doc)
        for doc in saved.get("apps") or []:
            try:
                child = self.children.parse_child(
                    app, doc, top_level=self.taken_names(except_parent=app.name)
                )
            except GitopsdError as e:
                log.warning("child app not restored", parent=app.name, error=str(e))
                continue
            self.children.register(app.name, child, doc)
            if self.on_child_added is not None:
                self.on_child_added(child)

    def _child_job(self, parent: Application, task: SyncTask) -> Any:
        async def job() -> ResourceResult:
            assert task.target is not None
            key = task.key

            def result(code: ResultCode, message: str, action: Action) -> ResourceResult:
                return ResourceResult(
                    key, "v1alpha1", action, code, message, task.phase, task.wave, task.hook_type
                )

            try:
                if key.kind == "AppProject":
                    proj = self.children.parse_project(
                        parent, task.target, top_level={p.name for p in self.config.projects}
                    )
                    self.children.register_project(parent.name, proj, clean(task.target))
                    return result(
                        ResultCode.SYNCED, f"appproject/{key.name} registered", Action.CONFIGURED
                    )
                if key.kind != "Application":
                    return result(
                        ResultCode.SYNC_FAILED,
                        f"{key.kind} inside an app is not supported yet",
                        Action.FAILED,
                    )
                child = self.children.parse_child(
                    parent, task.target, top_level=self.taken_names(except_parent=parent.name)
                )
            except GitopsdError as e:
                return result(ResultCode.SYNC_FAILED, str(e), Action.FAILED)
            if self.children.register(parent.name, child, clean(task.target)) and (
                self.on_child_added is not None
            ):
                self.on_child_added(child)
            token = ANCESTRY.set((*ANCESTRY.get(), parent.name))
            try:
                status = await self.reconcile(child)
                deadline = time.monotonic() + self.settings.health_timeout
                while True:
                    sync = (status.get("sync") or {}).get("status")
                    health = (status.get("health") or {}).get("status")
                    op = status.get("operationState") or {}
                    if sync == "Synced" and health == "Healthy":
                        return result(
                            ResultCode.SYNCED,
                            f"application/{child.name} synced and healthy",
                            Action.CONFIGURED,
                        )
                    failed = op.get("phase") in ("Failed", "Error")
                    if (
                        failed
                        or health == "Degraded"
                        or any(
                            c.get("type") in ("ComparisonError", "InvalidSpecError")
                            for c in status.get("conditions") or []
                        )
                    ):
                        why = (
                            op.get("message")
                            if failed
                            else "; ".join(
                                c.get("message", "") for c in status.get("conditions") or []
                            )
                            or f"health {health}"
                        )
                        return result(
                            ResultCode.SYNC_FAILED,
                            f"child application {child.name} failed: {why}",
                            Action.FAILED,
                        )
                    if time.monotonic() > deadline or self.stop_requested():
                        return result(
                            ResultCode.SYNC_FAILED,
                            f"timed out waiting for child application {child.name} "
                            f"(sync {sync}, health {health})",
                            Action.FAILED,
                        )
                    await anyio.sleep(1)
                    status = await self.reconcile(child)
            finally:
                ANCESTRY.reset(token)

        return job

    def _remove_child_job(self, task: SyncTask, *, prune: bool) -> Any:
        async def job() -> ResourceResult:
            key = task.key

            def result(code: ResultCode, message: str, action: Action) -> ResourceResult:
                return ResourceResult(key, "v1alpha1", action, code, message, task.phase, task.wave)

            if not prune:
                return result(
                    ResultCode.PRUNE_SKIPPED, "ignored (requires pruning)", Action.SKIPPED
                )
            if key.kind == "AppProject":
                self.children.unregister_project(key.name)
                return result(ResultCode.PRUNED, "appproject removed", Action.DELETED)
            child = self.children.unregister(key.name)
            if child is None:
                return result(ResultCode.PRUNED, "already removed", Action.DELETED)
            if self.on_child_removed is not None:
                await self.on_child_removed(child)
            elif child.cascade_delete:
                await self.delete_app(child)
            note = " and its resources deleted" if child.cascade_delete else ""
            return result(ResultCode.PRUNED, f"child application removed{note}", Action.DELETED)

        return job

    # === automated policy ====================================================================

    def auto_sync_request(
        self,
        app: Application,
        status: dict[str, Any],
        desired: Desired,
        comparison: Comparison,
    ) -> SyncRequest | None:
        """Argo CD's autoSync decision: sync only OutOfSync apps, never loop on a failure."""
        auto = app.sync_policy.automated
        if auto is None or comparison.sync_status is not SyncStatus.OUT_OF_SYNC:
            return None
        needs_apply = any(s is SyncStatus.OUT_OF_SYNC for s in comparison.status.values())
        if not needs_apply and not auto.prune:
            return None  # only prune-requiring differences, and prune is off
        last = status.get("operationState") or {}
        last_rev = (last.get("syncResult") or {}).get("revision")
        if last_rev == desired.revision and last.get("phase") in ("Failed", "Error"):
            return None  # already tried this revision and failed: wait for a new commit
        self_heal = last_rev == desired.revision and last.get("phase") == "Succeeded"
        if self_heal and not auto.self_heal:
            return None
        if self_heal:
            # Argo CD's self-heal backoff (2s x3, capped at 5m) so a controller fighting us
            # over a field is not answered every second.
            rev, count, last_at = self._heal.get(app.name, (desired.revision, 0, 0.0))
            if rev != desired.revision:
                count = 0
            if count > 0:
                remaining = min(300.0, 2.0 * 3 ** (count - 1)) - (time.monotonic() - last_at)
                if remaining > 0:
                    self.heal_retry_in[app.name] = remaining
                    return None
            self._heal[app.name] = (desired.revision, count + 1, time.monotonic())
        else:
            self._heal.pop(app.name, None)
        return SyncRequest(prune=auto.prune, initiated_by="automated", self_heal=self_heal)

    # === sync ================================================================================

    async def sync(
        self,
        app: Application,
        client: KubeClient,
        desired: Desired,
        comparison: Comparison,
        request: SyncRequest,
        fingerprints: dict[str, list[str]],
        bound: Any,
    ) -> Operation:
        """Run one sync operation: validate everything, then phases and waves with health gates."""
        started = now_iso()
        opts = parse_sync_options([*app.sync_policy.sync_options, *request.options])
        auto = app.sync_policy.automated
        prune = request.prune if request.prune is not None else bool(auto and auto.prune)
        allow_empty = bool(auto and auto.allow_empty)
        revision = desired.revision

        def done(phase: OperationPhase, message: str, results: list[ResourceResult]) -> Operation:
            return Operation(phase, message, results, started, now_iso(), revision)

        targets = [m for m in desired.manifests if not is_hook(m.body)]
        if prune and not allow_empty and not targets and comparison.owned_extra:
            return done(
                OperationPhase.FAILED,
                "refusing to prune every resource of the app: the source rendered zero "
                "resources (set syncPolicy.automated.allowEmpty: true to allow)",
                [],
            )
        if comparison.errors:
            return done(
                OperationPhase.FAILED,
                "one or more objects failed to apply (dry run): "
                + "; ".join(sorted(comparison.errors.values())),
                [],
            )
        if opts.fail_on_shared_resource and comparison.shared:
            return done(
                OperationPhase.FAILED,
                "Shared resource found: " + "; ".join(comparison.shared.values()),
                [],
            )

        selective = (
            request.self_heal
            or opts.apply_out_of_sync_only
            or (request.initiated_by == "automated")
        )
        manifests = [
            m
            for m in desired.manifests
            if (is_hook(m.body) and not request.self_heal)
            or (
                not is_hook(m.body)
                and (not selective or comparison.status.get(m.key) is not SyncStatus.SYNCED)
            )
        ]
        if opts.respect_ignore_differences and app.ignore_differences:
            # Fields the app says to ignore keep their live values instead of being reset.
            rules = diffing.parse_ignore_differences(
                list(app.ignore_differences),
                where=f"Application/{app.name}.spec.ignoreDifferences",
            )
            manifests = [
                Manifest(
                    m.key,
                    diffing.respect_ignored(m.body, comparison.live[m.key], rules=rules, key=m.key),
                    m.source,
                )
                if m.key in comparison.live and not is_child_kind(m.key) and not is_hook(m.body)
                else m
                for m in manifests
            ]
        tasks = build_tasks(manifests, comparison.owned_extra, prune_last=opts.prune_last)
        main, syncfail = split_syncfail(tasks)
        results: list[ResourceResult] = []
        run_stamp = str(int(time.time()))
        hooks_created: list[tuple[ResourceKey, ResourceType, Body]] = []

        if request.dry_run:
            for t in main:
                results.append(
                    ResourceResult(
                        t.key,
                        "",
                        Action.DELETED if t.is_prune else Action.CONFIGURED,
                        ResultCode.PRUNED if t.is_prune else ResultCode.SYNCED,
                        "(dry run)",
                        t.phase,
                        t.wave,
                        t.hook_type,
                    )
                )
            return done(OperationPhase.SUCCEEDED, "successfully synced (dry run)", results)

        # Record intent first: if we die mid-sync, the next run still knows what we may own.
        await self.save_inventory(
            app,
            client,
            set(await self.inventory(app, client))
            | {m.key for m in targets}
            | set(comparison.owned_extra),
        )
        failure = ""
        interrupted = False
        try:
            own_ns = any(
                m.key.kind == "Namespace"
                and not m.key.group
                and m.key.name == app.destination.namespace
                for m in desired.manifests
            )
            if opts.create_namespace and app.destination.namespace and not own_ns:
                # A Namespace manifest of the same name in the app takes precedence.
                await self._create_namespace(app, client)

            steps = group_steps(main)
            multi_step = len(steps) > 1
            for index, step in enumerate(steps):
                if index > 0 and self.stop_requested():
                    interrupted = True
                    failure = (
                        f"interrupted by shutdown before {step.phase} wave {step.wave}; "
                        "the sync resumes when gitopsd restarts"
                    )
                    break
                bound.info("wave", phase=str(step.phase), wave=step.wave, resources=len(step.tasks))
                self._report(app, started, revision, results, f"{step.phase} wave {step.wave}")
                step_results = await self._run_step(
                    app,
                    client,
                    desired,
                    comparison,
                    step.tasks,
                    opts=opts,
                    prune=prune,
                    run_stamp=run_stamp,
                    hooks_created=hooks_created,
                )
                results.extend(step_results)
                if self.stopping:
                    interrupted = True
                    failure = (
                        f"interrupted by shutdown after {step.phase} wave {step.wave}; "
                        "the sync resumes when gitopsd restarts"
                    )
                    break
                bad = [r for r in step_results if r.failed]
                if bad:
                    failure = "one or more objects failed to apply: " + "; ".join(
                        f"{r.key}: {r.message}" for r in bad
                    )
                    break
                last = index == len(steps) - 1
                has_hooks = any(t.is_hook for t in step.tasks)
                waits = self._wait_items(
                    client,
                    desired,
                    step_results,
                    step.tasks,
                    gate_resources=multi_step and (not last or has_hooks),
                )
                if waits:
                    result = await wait_healthy(
                        client,
                        waits,
                        timeout=self.settings.health_timeout,
                        should_stop=lambda: self.stopping,
                    )
                    if self.stop_requested() and not result.failed:
                        interrupted = True
                        failure = (
                            f"interrupted by shutdown in {step.phase} wave {step.wave}; "
                            "the sync resumes when gitopsd restarts"
                        )
                        break
                    if not result.ok:
                        failure = _wait_failure(result, step.phase, step.wave)
                        for r_i, r in enumerate(results):
                            if r.key in result.failed:
                                h = result.healths.get(r.key)
                                results[r_i] = ResourceResult(
                                    r.key,
                                    r.version,
                                    r.action,
                                    ResultCode.SYNC_FAILED,
                                    h.message if h else "failed",
                                    r.phase,
                                    r.wave,
                                    r.hook_type,
                                    r.live,
                                )
                        break
                pruned = [r for r in step_results if r.status is ResultCode.PRUNED]
                if pruned:
                    lingering = await self._wait_deleted(client, comparison, pruned)
                    if lingering and not self.stop_requested():
                        failure = (
                            f"{step.phase} wave {step.wave} failed: deletion of "
                            + ", ".join(str(k) for k in lingering)
                            + " did not complete in time (a finalizer may be holding it)"
                        )
                        break
                if not last and self.settings.sync_wave_delay > 0:
                    await anyio.sleep(self.settings.sync_wave_delay)

            if failure and syncfail and not interrupted:
                bound.info("running SyncFail hooks", count=len(syncfail))
                fail_results = await self._run_step(
                    app,
                    client,
                    desired,
                    comparison,
                    tuple(syncfail),
                    opts=opts,
                    prune=False,
                    run_stamp=run_stamp,
                    hooks_created=hooks_created,
                )
                results.extend(fail_results)
                waits = self._wait_items(
                    client, desired, fail_results, tuple(syncfail), gate_resources=False
                )
                if waits:
                    await wait_healthy(client, waits, timeout=self.settings.health_timeout)
        except GitopsdError as e:
            failure = f"sync failed: {e}"
        except Exception as e:  # a bug or a bad object must end the operation, not the daemon
            log.exception("sync crashed", app=app.name)
            failure = f"sync failed unexpectedly: {type(e).__name__}: {e}"

        await self._hook_cleanup(client, hooks_created, succeeded=not failure)
        self._record_fingerprints(results, desired, fingerprints)
        owned_after = {
            r.key for r in results if r.status is ResultCode.SYNCED and r.hook_type is None
        }
        owned_after |= {m.key for m in targets if comparison.status.get(m.key) is SyncStatus.SYNCED}
        owned_after |= {
            r.key
            for r in results
            if r.status in (ResultCode.PRUNE_SKIPPED,)
            or (r.failed and r.action is Action.FAILED and r.key in comparison.owned_extra)
        }
        if failure:
            owned_after |= {m.key for m in targets} | set(comparison.owned_extra)
        await self.save_inventory(app, client, owned_after)
        if interrupted:
            return done(OperationPhase.TERMINATING, failure, results)
        if failure:
            return done(OperationPhase.FAILED, failure, results)
        return done(OperationPhase.SUCCEEDED, "successfully synced (all tasks run)", results)

    def _report(
        self,
        app: Application,
        started: str,
        revision: str,
        results: Sequence[ResourceResult],
        message: str,
    ) -> None:
        if self.progress is None:
            return
        self.progress(
            app.name,
            {
                "phase": str(OperationPhase.RUNNING),
                "message": f"running {message}",
                "startedAt": started,
                "syncResult": {"revision": revision, "resources": [r.to_status() for r in results]},
            },
        )

    async def _create_namespace(self, app: Application, client: KubeClient) -> None:
        ns = app.destination.namespace
        rt = await client.resource_for("v1", "Namespace", subject=f"Namespace/{ns}")
        meta: dict[str, Any] = {"name": ns}
        mnm = app.sync_policy.managed_namespace_metadata
        if mnm:
            if mnm.get("labels"):
                meta["labels"] = mnm["labels"]
            if mnm.get("annotations"):
                meta["annotations"] = mnm["annotations"]
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
        await client.apply(rt, body, manager="gitopsd-namespace")

    async def _run_step(
        self,
        app: Application,
        client: KubeClient,
        desired: Desired,
        comparison: Comparison,
        tasks: Sequence[SyncTask],
        *,
        opts: SyncOptions,
        prune: bool,
        run_stamp: str,
        hooks_created: list[tuple[ResourceKey, ResourceType, Body]],
    ) -> list[ResourceResult]:
        """One (phase, wave): prunes first, then applies grouped by kind (parallel per group)."""
        limit = self.settings.kube_parallelism
        results: list[ResourceResult] = []
        prunes = [t for t in tasks if t.is_prune]
        if prunes:
            jobs = []
            for t in prunes:
                if is_child_kind(t.key):
                    jobs.append(self._remove_child_job(t, prune=prune))
                    continue
                rt = client.preferred(t.key.group, t.key.kind)
                if rt is None:
                    continue
                jobs.append(_bind_prune(client, rt, t, opts, prune))
            results.extend(await run_bounded(jobs, limit=limit))
        applies = [t for t in tasks if not t.is_prune]
        i = 0
        while i < len(applies):
            j = i
            while j < len(applies) and applies[j].key.kind == applies[i].key.kind:
                j += 1
            group = applies[i:j]
            i = j
            jobs = []
            for t in group:
                jobs.append(
                    self._apply_job(
                        app, client, desired, comparison, t, opts, run_stamp, hooks_created
                    )
                )
            group_results = await run_bounded(jobs, limit=limit)
            results.extend(group_results)
            if any(r.failed for r in group_results):
                break
            for r in group_results:
                if r.key.kind == "CustomResourceDefinition" and not r.failed:
                    await self._wait_crd(client, r.key.name)
        return results

    def _apply_job(
        self,
        app: Application,
        client: KubeClient,
        desired: Desired,
        comparison: Comparison,
        task: SyncTask,
        opts: SyncOptions,
        run_stamp: str,
        hooks_created: list[tuple[ResourceKey, ResourceType, Body]],
    ) -> Any:
        if is_child_kind(task.key):
            return self._child_job(app, task)

        async def job() -> ResourceResult:
            assert task.target is not None
            rt = desired.types.get(task.key) or client.known(
                str(task.target.get("apiVersion")), task.key.kind
            )
            if rt is None:
                try:
                    rt = await client.resource_for(
                        str(task.target.get("apiVersion")), task.key.kind, subject=str(task.key)
                    )
                except KubeError as e:
                    return ResourceResult(
                        task.key,
                        "",
                        Action.FAILED,
                        ResultCode.SYNC_FAILED,
                        e.api_message,
                        task.phase,
                        task.wave,
                        task.hook_type,
                    )
            if not task.is_hook:
                return await apply_one(
                    client, rt, task, options=opts, existed=task.key in comparison.live
                )
            body = copy.deepcopy(task.target)
            meta = body["metadata"]
            if not meta.get("name"):
                suffix = f"{desired.revision[:7]}-{str(task.phase).lower()}-{run_stamp}"
                meta["name"] = (str(meta.pop("generateName")) + suffix).lower()[:253]
            meta.setdefault("finalizers", [])
            if "argocd.argoproj.io/hook-finalizer" not in meta["finalizers"]:
                meta["finalizers"].append("argocd.argoproj.io/hook-finalizer")
            key = ResourceKey.of(body)
            existing = await client.get(rt, key.namespace, key.name)
            if existing is not None and HookDeletePolicy.BEFORE_HOOK_CREATION in delete_policies(
                body
            ):
                await _remove_finalizer(client, rt, key)
                await client.delete(rt, key.namespace, key.name, propagation="Background")
                for _ in range(120):
                    if await client.get(rt, key.namespace, key.name) is None:
                        break
                    await anyio.sleep(0.5)
                existing = None
            hook_task = SyncTask(key, task.phase, task.wave, body, None, True, task.hook_type)
            result = await apply_one(
                client, rt, hook_task, options=opts, existed=existing is not None
            )
            if not result.failed:
                hooks_created.append((key, rt, body))
            return result

        return job

    def _wait_items(
        self,
        client: KubeClient,
        desired: Desired,
        results: Sequence[ResourceResult],
        tasks: Sequence[SyncTask],
        *,
        gate_resources: bool,
    ) -> list[WaitItem]:
        items: list[WaitItem] = []
        for r in results:
            if r.failed or r.status is not ResultCode.SYNCED:
                continue
            hook = r.hook_type is not None
            if not hook and not gate_resources:
                continue
            if r.live is not None and annotations_of(r.live).get(ANN_IGNORE_HEALTHCHECK) == "true":
                continue
            rt = desired.types.get(r.key) or client.preferred(r.key.group, r.key.kind)
            if rt is not None:
                items.append(WaitItem(r.key, rt, is_hook=hook))
        return items

    async def _wait_deleted(
        self, client: KubeClient, comparison: Comparison, pruned: Sequence[ResourceResult]
    ) -> list[ResourceKey]:
        """Wait (bounded; stops on shutdown) until pruned objects are gone; returns those that
        are still there."""
        deadline = time.monotonic() + self.settings.health_timeout
        lingering: list[ResourceKey] = []
        for r in pruned:
            rt = client.preferred(r.key.group, r.key.kind)
            if rt is None or is_child_kind(r.key):
                continue
            while True:
                if await client.get(rt, r.key.namespace, r.key.name) is None:
                    break
                if time.monotonic() >= deadline or self.stop_requested():
                    lingering.append(r.key)
                    break
                await anyio.sleep(0.5)
        return lingering

    async def _wait_crd(self, client: KubeClient, name: str) -> None:
        rt = await client.resource_for(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            subject=f"CustomResourceDefinition/{name}",
        )
        for _ in range(40):
            crd = await client.get(rt, "", name)
            health = assess(crd) if crd else None
            if health is not None and health.status is HealthStatus.HEALTHY:
                await client.discover(force=True)
                return
            await anyio.sleep(0.25)

    async def _hook_cleanup(
        self,
        client: KubeClient,
        hooks: Sequence[tuple[ResourceKey, ResourceType, Body]],
        *,
        succeeded: bool,
    ) -> None:
        """Drop hook finalizers; delete hooks whose delete policy matches the outcome."""
        for key, rt, body in hooks:
            try:
                await _remove_finalizer(client, rt, key)
                policies = delete_policies(body)
                if (succeeded and HookDeletePolicy.HOOK_SUCCEEDED in policies) or (
                    not succeeded and HookDeletePolicy.HOOK_FAILED in policies
                ):
                    await client.delete(rt, key.namespace, key.name, propagation="Background")
            except KubeError as e:
                log.warning("hook cleanup failed", resource=str(key), error=str(e))

    def _record_fingerprints(
        self,
        results: Sequence[ResourceResult],
        desired: Desired,
        fingerprints: dict[str, list[str]],
    ) -> None:
        by_key = {m.key: m for m in desired.manifests}
        for r in results:
            k = tracking.key_to_str(r.key)
            if r.status is ResultCode.PRUNED:
                fingerprints.pop(k, None)
            elif r.status is ResultCode.SYNCED and r.hook_type is None and r.live is not None:
                m = by_key.get(r.key)
                if m is not None:
                    fingerprints[k] = [
                        tracking.fingerprint(m.body),
                        tracking.manager_fields(r.live, FIELD_MANAGER),
                        str((r.live.get("metadata") or {}).get("uid")),
                    ]
        keep = {tracking.key_to_str(m.key) for m in desired.manifests}
        for k in list(fingerprints):
            if k not in keep:
                fingerprints.pop(k)

    # === deletion ============================================================================

    async def delete_app(self, app: Application) -> list[ResourceResult]:
        """Cascade-delete what `app` owns (resources finalizer), in reverse wave order.

        Ownership records are dropped only when every delete went through; otherwise a
        `SyncFailed` is raised and the caller retries."""
        lock = self._locks.setdefault(app.name, anyio.Lock())
        async with lock:
            return await self._delete_app(app)

    async def _delete_app(self, app: Application) -> list[ResourceResult]:
        project = self.project_for(app)
        if project is None:
            raise SyncFailed(
                f"Application/{app.name}: project {app.project!r} does not exist; refusing to "
                "delete resources it cannot vouch for"
            )
        cluster = self.clusters.lookup(server=app.destination.server, name=app.destination.name)
        client = await self.clusters.client(cluster)
        await client.discover()
        state = self.store.load(app.name)
        keys: dict[ResourceKey, ResourceType] = {}
        candidates = set(await self.inventory(app, client))
        candidates |= {
            k for k in (tracking.key_from_str(s) for s in state.get("fingerprints", {})) if k
        }
        for key in candidates:
            rt = client.preferred(key.group, key.kind)
            if rt is not None:
                keys[key] = rt
        live = await self.fetch_live(client, keys)
        owned = {
            k: b
            for k, b in live.items()
            if tracking.is_owned_by(b, app.instance_name, namespaced=keys[k].namespaced)
            and not (b.get("metadata") or {}).get("ownerReferences")
            and annotations_of(b).get("helm.sh/resource-policy") != "keep"
            and k.kind != "CustomResourceDefinition"
            # Only what the app's project permits (Argo CD's getPermittedAppLiveObjects).
            and self._permitted(project, cluster, client, k)
        }
        opts = parse_sync_options([*app.sync_policy.sync_options, "Prune=true"])
        background = "resources-finalizer.argocd.argoproj.io/background" in app.finalizers
        if background:
            opts = opts.merged(parse_sync_options(["PrunePropagationPolicy=background"]))
        tasks = build_tasks([], owned, prune_last=False)
        results: list[ResourceResult] = []
        for step in group_steps(tasks):
            jobs = []
            for t in step.tasks:
                assert t.live is not None
                from daemon.plan.options import RemovalPolicy, live_sync_options

                if live_sync_options(t.live).delete is RemovalPolicy.NEVER:
                    continue
                jobs.append(_bind_prune(client, keys[t.key], t, opts, True))
            results.extend(await run_bounded(jobs, limit=self.settings.kube_parallelism))
        failed = [r for r in results if r.failed]
        if failed:
            raise SyncFailed(
                f"Application/{app.name}: deleting its resources failed: "
                + "; ".join(f"{r.key}: {r.message}" for r in failed)
            )
        cm_rt = await client.resource_for("v1", "ConfigMap", subject="inventory")
        await client.delete(cm_rt, self.settings.inventory_namespace, INVENTORY_PREFIX + app.name)
        self.store.delete(app.name)
        self._inventories.pop((client.name, app.name), None)
        self._states.pop(app.name, None)
        self._digests.pop(app.name, None)
        self._saved.discard(app.name)
        log.info("app resources deleted", app=app.name, deleted=len(results))
        return results

    # === status ==============================================================================

    def build_status(
        self,
        app: Application,
        previous: dict[str, Any],
        desired: Desired,
        comparison: Comparison,
        operation: Operation | None,
        conditions: list[dict[str, str]],
        request: SyncRequest | None,
    ) -> dict[str, Any]:
        """Argo CD-shaped `status` from the comparison and the operation (if one ran)."""
        resources: list[dict[str, Any]] = []
        health_items: list[tuple[ResourceKey, Health | None, bool]] = []
        for m in desired.manifests:
            if is_hook(m.body):
                continue
            body = comparison.live.get(m.key)
            h = (
                assess(body)
                if body is not None
                else Health(HealthStatus.MISSING, "resource is missing")
            )
            if annotations_of(m.body).get(ANN_IGNORE_HEALTHCHECK) == "true":
                h = None
            health_items.append((m.key, h, body is not None))
            resources.append(
                _resource_entry(
                    m.key, m.body, comparison.status.get(m.key), h, requires_pruning=False
                )
            )
        for key, body in comparison.owned_extra.items():
            resources.append(
                _resource_entry(
                    key, body, SyncStatus.OUT_OF_SYNC, assess(body), requires_pruning=True
                )
            )
        app_health = aggregate(health_items) if health_items else Health(HealthStatus.HEALTHY)
        if comparison.errors:
            conditions.append(
                _condition("ComparisonError", "; ".join(sorted(comparison.errors.values())))
            )
        src = app.sources[0]
        status: dict[str, Any] = {
            "sync": {
                "status": str(comparison.sync_status),
                "revision": desired.revision,
                "comparedTo": {
                    "source": app.raw.get("spec", {}).get("source")
                    or {
                        "repoURL": src.repo_url,
                        "path": src.path,
                        "targetRevision": src.target_revision,
                    },
                    "destination": app.raw.get("spec", {}).get("destination", {}),
                },
            },
            "health": {"status": str(app_health.status), "message": app_health.message},
            "resources": resources,
            "conditions": conditions,
            "sourceType": desired.tool,
            "observedAt": now_iso(),
            "history": list(previous.get("history") or []),
            "summary": {"images": sorted(_images(desired.manifests))},
        }
        if len(desired.revisions) > 1:
            status["sync"]["revisions"] = desired.revisions
        status["operationState"] = previous.get("operationState")
        if operation is not None and request is not None:
            status["operationState"] = {
                "operation": {
                    "sync": {
                        "revision": operation.revision,
                        "prune": bool(request.prune),
                        "dryRun": request.dry_run,
                    },
                    "initiatedBy": {
                        "username": request.initiated_by,
                        "automated": request.initiated_by == "automated",
                    },
                },
                "phase": str(operation.phase),
                "message": operation.message,
                "syncResult": {
                    "resources": [r.to_status() for r in operation.results],
                    "revision": operation.revision,
                    "source": status["sync"]["comparedTo"]["source"],
                },
                "startedAt": operation.started_at,
                "finishedAt": operation.finished_at,
                "retryCount": request.retry_count,
            }
            if operation.phase is OperationPhase.SUCCEEDED and not request.dry_run:
                history = status["history"]
                next_id = max((h.get("id", 0) for h in history), default=-1) + 1
                history.append(
                    {
                        "id": next_id,
                        "revision": operation.revision,
                        "source": status["sync"]["comparedTo"]["source"],
                        "deployStartedAt": operation.started_at,
                        "deployedAt": operation.finished_at,
                        "initiatedBy": {
                            "username": request.initiated_by,
                            "automated": request.initiated_by == "automated",
                        },
                    }
                )
                limit = app.revision_history_limit
                status["history"] = history[-limit:] if limit > 0 else []
            elif operation.phase is OperationPhase.FAILED:
                conditions.append(_condition("SyncError", operation.message))
        if status["operationState"] is None:
            del status["operationState"]
        return status

    def error_status(
        self, app: Application, previous: dict[str, Any], conditions: list[dict[str, str]]
    ) -> dict[str, Any]:
        """Status after a failed comparison: keep the last known state, mark it Unknown."""
        status = dict(previous)
        sync = dict(status.get("sync") or {})
        sync["status"] = str(SyncStatus.UNKNOWN)
        status["sync"] = sync
        status.setdefault("health", {"status": str(HealthStatus.UNKNOWN), "message": ""})
        if any("unreachable" in c.get("message", "") for c in conditions):
            # The cluster cannot be asked: its health is as unknown as its sync state.
            status["health"] = {
                "status": str(HealthStatus.UNKNOWN),
                "message": "destination cluster unreachable",
            }
        status["conditions"] = conditions
        return status


def _inputs_key(app: Application, shas: Sequence[str]) -> str:
    return json.dumps(
        [app.raw.get("spec"), app.finalizers, list(shas)], sort_keys=True, default=str
    )


def _resume_request(status: dict[str, Any]) -> SyncRequest | None:
    """An operation interrupted by a shutdown (phase Terminating) runs again after restart."""
    op = status.get("operationState") or {}
    if op.get("phase") != "Terminating":
        return None
    spec = (op.get("operation") or {}).get("sync") or {}
    who = (op.get("operation") or {}).get("initiatedBy") or {}
    return SyncRequest(
        revision=str((op.get("syncResult") or {}).get("revision") or ""),
        prune=bool(spec.get("prune")),
        initiated_by=str(who.get("username") or "automated"),
    )


def _meaningful(record: dict[str, Any]) -> str:
    """A state record without the fields that change on every reconcile."""
    status = {
        k: v
        for k, v in (record.get("status") or {}).items()
        if k not in ("reconciledAt", "observedAt", "reconcileDuration")
    }
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
    ]
    status["conditions"] = conditions
    return json.dumps([status, record.get("fingerprints")], sort_keys=True, default=str)


def _first(group: BaseException) -> BaseException:
    """The first leaf of a (possibly nested) exception group: task groups wrap errors."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _bind_prune(
    client: KubeClient, rt: ResourceType, task: SyncTask, opts: SyncOptions, prune: bool
) -> Any:
    async def job() -> ResourceResult:
        return await prune_one(client, rt, task, options=opts, prune_enabled=prune)

    return job


async def _remove_finalizer(client: KubeClient, rt: ResourceType, key: ResourceKey) -> None:
    live = await client.get(rt, key.namespace, key.name)
    if live is None:
        return
    finalizers = list((live.get("metadata") or {}).get("finalizers") or [])
    if "argocd.argoproj.io/hook-finalizer" not in finalizers:
        return
    finalizers.remove("argocd.argoproj.io/hook-finalizer")
    await client.patch_merge(
        rt,
        key.namespace,
        key.name,
        {
            "metadata": {
                "finalizers": finalizers or None,
                "resourceVersion": live["metadata"]["resourceVersion"],
            }
        },
    )


def _wait_failure(result: Any, phase: SyncPhase, wave: int) -> str:
    parts = []
    for key in result.failed:
        h = result.healths.get(key)
        parts.append(f"{key} is {h.status if h else 'failed'}: {h.message if h else ''}".strip())
    if result.timed_out:
        waiting = ", ".join(
            f"{k} ({result.healths[k].status}: {result.healths[k].message})"
            if k in result.healths
            else str(k)
            for k in result.waiting
        )
        parts.append(f"timed out waiting for health in {phase} wave {wave}: {waiting}")
    return f"{phase} wave {wave} failed: " + "; ".join(parts)


def _condition(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message, "lastTransitionTime": now_iso()}


def _resource_entry(
    key: ResourceKey,
    body: Body,
    sync: SyncStatus | None,
    health: Health | None,
    *,
    requires_pruning: bool,
) -> dict[str, Any]:
    from daemon.plan.options import sync_wave

    out: dict[str, Any] = {
        "group": key.group,
        "version": str(body.get("apiVersion", "")).rpartition("/")[2],
        "kind": key.kind,
        "namespace": key.namespace,
        "name": key.name,
        "status": str(sync or SyncStatus.UNKNOWN),
        "syncWave": sync_wave(body),
    }
    if health is not None:
        out["health"] = {"status": str(health.status), "message": health.message}
    if requires_pruning:
        out["requiresPruning"] = True
    return out


def _images(manifests: Sequence[Manifest]) -> set[str]:
    images: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    for c in v:
                        if isinstance(c, dict) and isinstance(c.get("image"), str):
                            images.add(c["image"])
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for m in manifests:
        walk(m.body.get("spec"))
    return images


def render_yaml(manifests: Sequence[Manifest]) -> str:
    """Manifests as YAML in the order given."""
    return yamlio.dump_all([m.body for m in manifests])
