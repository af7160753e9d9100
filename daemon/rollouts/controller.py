"""The Rollout controller inside the daemon: per cluster, it watches Rollouts and the ReplicaSets
they own, reconciles each Rollout that changed (or whose timer is due: a timed pause) with
`plan.plan_canary`, and makes the plan's writes through `daemon.kube`.

Which Rollouts it acts on (`settings.rollouts.controller`):
- `auto` (default): the Rollouts of this daemon's apps (by their tracking id), unless another
  controller manages them: Argo Rollouts writes a Rollout's status as field manager
  `rollouts-controller`; a Rollout whose managedFields show that manager on the status
  subresource is left alone and reported once. (A user's `kubectl patch --subresource=status`,
  which is how promote and abort are asked for, is not a controller.)
- `always`: every Rollout in the cluster, as Argo Rollouts' controller would.
- `never`: none.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from daemon.errors import KubeError, KubeNotFound
from daemon.kube import Epoch, KubeClient, writes_under
from daemon.model import ResourceType
from daemon.rollouts import analysis as an
from daemon.rollouts import crds, ingress, restart
from daemon.rollouts.actions import ActionError, plan_action
from daemon.rollouts.egress import Policy, job_refusal, redact, repeats_secret
from daemon.rollouts.plan import (
    Plan,
    ReplicaSet,
    RunRequest,
    phase,
    plan_rollout,
    workload_scale,
)
from daemon.rollouts.spec import (
    API_VERSION,
    HASH_LABEL,
    MANAGED_BY,
    AnalysisRef,
    Body,
    InvalidSpec,
    RolloutSpec,
    parse,
    workload_ref,
)
from daemon.rollouts.timings import Timings

log = structlog.get_logger("gitopsd.rollouts")
MANAGER = "gitopsd-rollouts"
USER_MANAGER = "gitopsd-rollouts-cli"  # writes asked for by a person (promote, abort, ...)
RELIST_AFTER_ERROR = 2.0
WORKLOAD_GENERATION = "rollout.argoproj.io/workload-generation"
INVALID_RECHECK = 5.0
JOB_POLL = 1.0  # seconds between looks at a job measurement's Job
POLICY_WAIT = 2.0  # seconds before measuring again when the Rollout's app is not known yet
MAX_VALUE = 1024  # characters of a measured value (or message) written to the run's status


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` (null removes a key)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = merge_patch(old[key], value)
    return out


OTHER_CONTROLLERS = ("rollouts-controller", "argo-rollouts")


def foreign_manager(ro: Body) -> str:
    """The field manager of another Rollout controller that writes this Rollout's status."""
    for entry in (ro.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if entry.get("subresource") == "status" and manager.startswith(OTHER_CONTROLLERS):
            return manager
    return ""


async def ensure_crds(client: KubeClient, *, timeout: float = 60.0) -> list[str]:
    """Install gitopsd's Argo Rollouts CRDs that the cluster does not serve yet; the names of
    those installed. Existing CRDs (Argo Rollouts' own) are never touched."""
    crd_rt = await client.resource_for(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", subject="CRDs"
    )
    installed = []
    for crd in crds.definitions():
        name = crd["metadata"]["name"]
        if await client.get(crd_rt, "", name) is not None:
            continue
        await client.create(crd_rt, crd)
        installed.append(name)
    deadline = time.monotonic() + timeout
    for name in installed:
        while True:
            body = await client.get(crd_rt, "", name) or {}
            conditions = (body.get("status") or {}).get("conditions") or []
            if any(
                c.get("type") == "Established" and c.get("status") == "True" for c in conditions
            ):
                break
            if time.monotonic() > deadline:
                raise KubeError(f"CustomResourceDefinition/{name}", "install", "not Established")
            await anyio.sleep(0.2)
    if installed:
        await client.discover_group("argoproj.io", "v1alpha1")
    return installed


class ClusterRollouts:
    """The controller for one cluster."""

    def __init__(
        self,
        client: KubeClient,
        *,
        mode: str = "auto",
        ours: Callable[[Body], bool] = lambda ro: True,
        policy: Callable[[Body], Policy | None] = lambda ro: None,
        epoch: Callable[[Body], Epoch | None] = lambda ro: None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.mode = mode
        self.ours = ours
        self.policy = policy  # what a Rollout's analyses may reach and read (None: not yet known)
        self.epoch = epoch  # the replica claim a Rollout's writes run under (several replicas)
        self.now = now
        self.dirty: set[tuple[str, str]] = set()
        self.due: dict[tuple[str, str], float] = {}  # monotonic time of a requested requeue
        self.wake = anyio.Event()
        self.skipped: set[tuple[str, str]] = set()
        self.reconciles = 0
        self.types: dict[str, ResourceType] = {}
        # The latest view, for the metrics: Rollouts and their AnalysisRuns by (ns, name).
        self.seen: dict[tuple[str, str], dict[str, str]] = {}
        self.seen_runs: dict[tuple[str, str], dict[str, Any]] = {}
        # workloadRef Deployments: (namespace, deployment) -> the Rollouts that reference it.
        self.workloads: dict[tuple[str, str], set[str]] = {}
        self._watching_deployments = False
        self._tg: TaskGroup | None = None
        self.timings = Timings()
        self.failures: dict[tuple[str, str], int] = {}  # consecutive failed reconciles

    def mark(self, key: tuple[str, str], after: float | None = None) -> None:
        if after is None or after <= 0:
            self.dirty.add(key)
        else:
            at = time.monotonic() + after
            self.due[key] = min(self.due.get(key, at), at)
        self.wake.set()

    async def run(self) -> None:
        """Watch and reconcile until cancelled."""
        c = self.client
        self._watching_deployments = False  # a restarted controller starts its watches anew
        self.types = {
            "rollout": await c.resource_for(API_VERSION, "Rollout", subject="Rollout"),
            "rs": await c.resource_for("apps/v1", "ReplicaSet", subject="ReplicaSet"),
            "svc": await c.resource_for("v1", "Service", subject="Service"),
            "event": await c.resource_for("v1", "Event", subject="Event"),
            "run": await c.resource_for(API_VERSION, "AnalysisRun", subject="AnalysisRun"),
            "template": await c.resource_for(
                API_VERSION, "AnalysisTemplate", subject="AnalysisTemplate"
            ),
            "cluster_template": await c.resource_for(
                API_VERSION, "ClusterAnalysisTemplate", subject="ClusterAnalysisTemplate"
            ),
            "secret": await c.resource_for("v1", "Secret", subject="Secret"),
            "ingress": await c.resource_for("networking.k8s.io/v1", "Ingress", subject="Ingress"),
            "pod": await c.resource_for("v1", "Pod", subject="Pod"),
            "deployment": await c.resource_for("apps/v1", "Deployment", subject="Deployment"),
            "job": await c.resource_for("batch/v1", "Job", subject="Job"),
        }
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._watch, self.types["rollout"], "", self._on_rollout)
            tg.start_soon(self._watch, self.types["rs"], HASH_LABEL, self._on_replica_set)
            await self._work()

    def _on_rollout(self, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        self.mark((str(meta.get("namespace", "")), str(meta.get("name", ""))))

    def _on_deployment(self, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        for rollout in self.workloads.get((namespace, str(meta.get("name", ""))), ()):
            self.mark((namespace, rollout))

    def _follow_workload(self, namespace: str, deployment: str, rollout: str) -> None:
        """Reconcile `rollout` whenever its workloadRef Deployment changes (the Deployment
        watch starts with the first workloadRef seen)."""
        for (ns, _), names in self.workloads.items():
            if ns == namespace:
                names.discard(rollout)  # its workloadRef may have changed
        self.workloads.setdefault((namespace, deployment), set()).add(rollout)
        if not self._watching_deployments and self._tg is not None:
            self._watching_deployments = True
            self._tg.start_soon(self._watch, self.types["deployment"], "", self._on_deployment)

    def _on_replica_set(self, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Rollout" and ref.get("controller"):
                self.mark((str(meta.get("namespace", "")), str(ref.get("name", ""))))

    async def _watch(self, rt: ResourceType, selector: str, on: Callable[[Body], None]) -> None:
        """LIST then WATCH, forever; every object seen marks its Rollout."""
        while True:
            try:
                items, rv = await self.client.list(rt, label_selector=selector)
                for item in items:
                    on(item)
                async for ev in self.client.watch(rt, resource_version=rv, label_selector=selector):
                    if ev.type == "ERROR":
                        break  # 410 Gone: relist
                    if ev.type != "BOOKMARK":
                        on(ev.object)
            except KubeError as e:
                log.info("rollouts watch restarting", kind=rt.kind, error=str(e))
                await anyio.sleep(RELIST_AFTER_ERROR)

    async def _work(self) -> None:
        while True:
            now = time.monotonic()
            for key, at in list(self.due.items()):
                if at <= now:
                    del self.due[key]
                    self.dirty.add(key)
            if not self.dirty:
                self.wake = anyio.Event()
                timeout = min((at - now for at in self.due.values()), default=30.0)
                with anyio.move_on_after(max(0.05, timeout)):
                    await self.wake.wait()
                continue
            key = min(self.dirty)
            self.dirty.discard(key)
            started = time.monotonic()
            try:
                await self.reconcile(*key)
                self.failures.pop(key, None)
            except Exception as e:  # one Rollout's failure must not stop the others
                n = self.failures[key] = self.failures.get(key, 0) + 1
                delay = min(60.0, RELIST_AFTER_ERROR * 2 ** (n - 1))
                where = f"{key[0]}/{key[1]}"
                if isinstance(e, KubeError):
                    log.warning("rollout reconcile failed", rollout=where, error=str(e))
                else:
                    log.exception("rollout reconcile crashed", rollout=where)
                self.timings.error(("rollout", *key))
                self.mark(key, after=delay)
            if key in self.seen:
                self.timings.observe(("rollout", *key), time.monotonic() - started)

    async def reconcile(self, namespace: str, name: str) -> None:
        """One reconcile of one Rollout; its writes are bound to its app's claim (a replica that
        lost the app since, or was stalled and rejoined, writes nothing)."""
        ro = await self.client.get(self.types["rollout"], namespace, name)
        with writes_under(self.epoch(ro) if ro is not None else None):
            await self._reconcile(namespace, name, ro)

    async def _reconcile(self, namespace: str, name: str, ro: Body | None) -> None:
        t = self.types
        key = (namespace, name)
        if ro is None:
            self.due.pop(key, None)
            self.seen.pop(key, None)
            self.timings.forget("rollout", *key)
            for run_key in [k for k, v in self.seen_runs.items() if v["rollout"] == key]:
                del self.seen_runs[run_key]
                self.timings.forget("analysis_run", *run_key)
            return
        other = foreign_manager(ro)
        if other and self.mode != "always":
            if key not in self.skipped:
                self.skipped.add(key)
                log.info(
                    "rollout left to another controller",
                    rollout=f"{namespace}/{name}",
                    manager=other,
                )
            return
        if self.mode == "never":
            return
        if self.mode == "auto" and not self.ours(ro):
            return  # a Rollout no app of this daemon deploys: not ours to run
        self.reconciles += 1
        old_status = ro.get("status") or {}
        workload: Body | None = None
        try:
            ref = workload_ref(ro)
            if ref:
                self._follow_workload(namespace, str(ref["name"]), name)
                workload = await self.client.get(t["deployment"], namespace, str(ref["name"]))
                ro = await self._workload_generation(ro, workload)
            spec = parse(ro, workload=workload)
            await self._check_services(namespace, spec)
            ingresses = await self._ingresses(ro, spec)
        except InvalidSpec as e:
            same = [
                c
                for c in old_status.get("conditions") or []
                if c.get("type") == "InvalidSpec" and c.get("message") == str(e)
            ]
            status = {
                **old_status,
                "conditions": same[:1] or [_condition("InvalidSpec", "InvalidSpec", str(e))],
            }
            status["observedGeneration"] = str((ro.get("metadata") or {}).get("generation", ""))
            status["phase"], status["message"] = "Degraded", f"InvalidSpec: {e}"
            await self._status(ro, old_status, status)
            # What it refers to (an Ingress, a Deployment) may appear: look again later.
            self.mark(key, after=INVALID_RECHECK)
            return
        owned, _ = await self.client.list(t["rs"], namespace, label_selector=HASH_LABEL)
        uid = str((ro.get("metadata") or {}).get("uid", ""))
        mine = [ReplicaSet.of(b) for b in owned if _owned_by(b, uid)]
        runs = await self._runs(namespace, uid)
        wake = None
        policy = self.policy(ro)
        for run in runs:
            timed = ("analysis_run", namespace, str((run.get("metadata") or {}).get("name")))
            started = time.monotonic()
            try:
                after = await self._measure(run, policy)
            except KubeError:
                self.timings.error(timed)
                raise
            self.timings.observe(timed, time.monotonic() - started)
            if after is not None:
                wake = after if wake is None else min(wake, after)
        plan = plan_rollout(ro, spec, mine, self.now(), runs)
        h = str(plan.status.get("currentPodHash", ""))
        revision = next((r.revision for r in mine if r.hash == h), 0) or 1
        for want in plan.want_runs:
            await self._start_run(ro, plan.status, want, revision)
        for run_name in plan.terminate_runs:
            await self.client.patch_merge(
                t["run"], namespace, run_name, {"spec": {"terminate": True}}, manager=MANAGER
            )
        if plan.want_runs or plan.terminate_runs:
            self.mark(key, after=0.2)
        if wake is not None:
            self.mark(key, after=wake)
        await self._route(ro, spec, plan, ingresses)
        if plan.create is not None:
            await self.client.create(t["rs"], plan.create)
        for rs_name, n in plan.scale.items():
            await self.client.patch_merge(
                t["rs"], namespace, rs_name, {"spec": {"replicas": n}}, manager=MANAGER
            )
        for rs_name, changes in plan.annotate.items():
            patch = {"metadata": {"annotations": changes}}
            await self.client.patch_merge(t["rs"], namespace, rs_name, patch, manager=MANAGER)
        for rs_name in plan.delete:
            await self.client.delete(t["rs"], namespace, rs_name, propagation="Background")
        for svc, h in plan.services.items():
            await self._point(namespace, svc, h, name, plan.status)
        if restart.pending(spec, plan.status) and not (plan.scale or plan.create):
            await self._restart(ro, spec, plan, mine)
        plan.status["conditions"] = [
            c for c in plan.status.get("conditions") or [] if c.get("type") != "InvalidSpec"
        ]
        if workload is not None:
            generation = (workload.get("metadata") or {}).get("generation")
            plan.status["workloadObservedGeneration"] = str(generation)
        plan.status["phase"], plan.status["message"] = phase(spec, plan.status, ro)
        if workload is not None:
            await self._scale_workload(ro, spec, plan, mine, workload)
        await self._status(ro, old_status, plan.status)
        self.seen[key] = {
            "namespace": namespace,
            "name": name,
            "strategy": "canary" if spec.canary is not None else "blueGreen",
            "traffic_router": "Nginx" if ingresses else "",
            "phase": str(plan.status.get("phase", "")),
        }
        for run in runs:
            run_meta = run.get("metadata") or {}
            run_status = run.get("status") or {}
            self.seen_runs[(namespace, str(run_meta.get("name")))] = {
                "rollout": key,
                "namespace": namespace,
                "name": str(run_meta.get("name")),
                "phase": str(run_status.get("phase") or "Pending"),
                "metrics": [
                    (
                        str(r.get("name")),
                        _provider_kind(run, str(r.get("name"))),
                        str(r.get("phase") or "Pending"),
                    )
                    for r in run_status.get("metricResults") or []
                ],
            }
        for reason, message in plan.events:
            await self._event(ro, reason, message)
        if plan.requeue_after is not None:
            self.mark(key, after=plan.requeue_after)

    async def _restart(
        self, ro: Body, spec: RolloutSpec, plan: Plan, sets: list[ReplicaSet]
    ) -> None:
        """Delete the next pods created before spec.restartAt; record restartedAt when none is
        left."""
        meta = ro.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        hashes = {s.hash for s in sets if s.replicas > 0}
        items, _ = await self.client.list(self.types["pod"], namespace, label_selector=HASH_LABEL)
        pods = [restart.Pod.of(p) for p in items]
        missing = sum(max(0, s.replicas - s.available) for s in sets)
        step = restart.plan_restart(spec, plan.status, pods, hashes, missing, self.now())
        for pod in step.delete:
            await self.client.delete(self.types["pod"], namespace, pod)
        if step.delete:
            plan.events.append(("RestartingPods", f"Restarting pods: {', '.join(step.delete)}"))
        if step.done:
            plan.status["restartedAt"] = spec.restart_at
            done = f"Restarted pods created before {spec.restart_at}"
            plan.events.append(("RolloutRestarted", done))
        elif step.again_after is not None:
            key = (namespace, str(meta.get("name", "")))
            self.mark(key, after=step.again_after)

    # --- workloadRef ------------------------------------------------------------------------

    async def _workload_generation(self, ro: Body, workload: Body | None) -> Body:
        """Record the Deployment's generation on the Rollout (annotation
        `rollout.argoproj.io/workload-generation`, which Argo CD's Rollout health compares with
        status.workloadObservedGeneration); the Rollout as it is after that write."""
        if workload is None:
            return ro
        meta = ro.get("metadata") or {}
        generation = str((workload.get("metadata") or {}).get("generation", ""))
        if (meta.get("annotations") or {}).get(WORKLOAD_GENERATION) == generation:
            return ro
        patch = {"metadata": {"annotations": {WORKLOAD_GENERATION: generation}}}
        return await self.client.patch_merge(
            self.types["rollout"],
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            patch,
            manager=MANAGER,
        )

    async def _scale_workload(
        self, ro: Body, spec: RolloutSpec, plan: Plan, sets: list[ReplicaSet], workload: Body
    ) -> None:
        """workloadRef scaleDown: onsuccess / progressively."""
        current = int((workload.get("spec") or {}).get("replicas", 1) or 0)
        want = workload_scale(spec, plan.status, sets, current)
        if want is None:
            return
        meta = workload.get("metadata") or {}
        await self.client.patch_merge(
            self.types["deployment"],
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            {"spec": {"replicas": want}},
            manager=MANAGER,
        )
        plan.events.append(
            ("ScalingDeployment", f"Scaled Deployment {meta.get('name')} from {current} to {want}")
        )

    async def _check_services(self, namespace: str, spec: RolloutSpec) -> None:
        """The Services the strategy names exist (InvalidSpec naming the field otherwise, as
        Argo Rollouts validates referenced resources)."""
        if spec.canary is not None:
            fields = {
                "canary.canaryService": spec.canary.canary_service,
                "canary.stableService": spec.canary.stable_service,
            }
        else:
            assert spec.blue_green is not None
            fields = {
                "blueGreen.activeService": spec.blue_green.active_service,
                "blueGreen.previewService": spec.blue_green.preview_service,
            }
        for field, svc in fields.items():
            if svc and await self.client.get(self.types["svc"], namespace, svc) is None:
                raise InvalidSpec(
                    f"{spec.subject}: spec.strategy.{field}: service {svc!r} not found"
                )

    # --- traffic routing --------------------------------------------------------------------

    async def _ingresses(self, ro: Body, spec: RolloutSpec) -> list[tuple[Body, Body | None]]:
        """A traffic-routed canary's stable Ingresses, each with its canary Ingress if one
        exists; InvalidSpec if a stable Ingress is missing or does not route to the stable
        Service, or a canary Ingress's name is held by another object."""
        canary = spec.canary
        if canary is None or canary.nginx is None:
            return []
        meta = ro.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        uid = str(meta.get("uid", ""))
        out = []
        for stable_name in canary.nginx.stable_ingresses:
            stable = await self.client.get(self.types["ingress"], namespace, stable_name)
            ingress.check_stable(stable, stable_name, canary.stable_service, spec.subject)
            assert stable is not None
            existing = await self.client.get(
                self.types["ingress"], namespace, ingress.canary_name(name, stable_name)
            )
            if existing is not None:
                ingress.check_owner(existing, uid)
            out.append((stable, existing))
        return out

    async def _route(
        self, ro: Body, spec: RolloutSpec, plan: Plan, ingresses: list[tuple[Body, Body | None]]
    ) -> None:
        """Create or patch the canary Ingresses for the plan's weight and header route."""
        canary = spec.canary
        if canary is None or plan.weight is None:
            return
        meta = ro.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        for stable, existing in ingresses:
            want = ingress.desired(ro, canary, stable, plan.weight, plan.header)
            name = str(want["metadata"]["name"])
            if existing is None:
                await self.client.create(self.types["ingress"], want)
                plan.events.append(("CreatingCanaryIngress", f"Creating canary ingress `{name}`"))
                continue
            changes = ingress.patch(existing, want, uid)
            if changes is None:
                continue
            await self.client.patch_merge(
                self.types["ingress"],
                str(meta.get("namespace", "")),
                name,
                changes,
                manager=MANAGER,
            )
            weight = (changes.get("metadata") or {}).get("annotations") or {}
            plan.events.append(
                (
                    "PatchingCanaryIngress",
                    f"Patching canary ingress `{name}` (weight {plan.weight})"
                    if any(k.endswith("/canary-weight") for k in weight)
                    else f"Patching canary ingress `{name}`",
                )
            )

    # --- analysis ---------------------------------------------------------------------------

    async def _runs(self, namespace: str, uid: str) -> list[Body]:
        items, _ = await self.client.list(self.types["run"], namespace, label_selector=HASH_LABEL)
        return [r for r in items if _owned_by(r, uid)]

    async def _start_run(self, ro: Body, status: Body, want: RunRequest, revision: int) -> None:
        """Create the AnalysisRun a Rollout asked for; one that cannot be built is created
        with phase Error and the reason, so the Rollout aborts and says why."""
        meta = ro.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        templates: list[Body] = []
        error = ""
        for ref in want.ref.templates:
            rt = self.types["cluster_template" if ref.cluster_scope else "template"]
            body = await self.client.get(rt, "" if ref.cluster_scope else namespace, ref.name)
            if body is None:
                kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
                error = f"{kind} {ref.name!r} not found"
                break
            templates.append(body)
        h = str(status.get("currentPodHash", ""))
        try:
            if error:
                raise an.AnalysisError(error)
            run = an.build_run(
                ro,
                templates,
                want.ref,
                kind=want.kind,
                pod_hash=h,
                revision=revision,
                infix=want.infix,
                stable_hash=str(status.get("stableRS", "")),
            )
        except an.AnalysisError as e:
            error = str(e)
            run = an.build_run(
                ro,
                [],
                AnalysisRef(want.ref.templates),
                kind=want.kind,
                pod_hash=h,
                revision=revision,
                infix=want.infix,
                stable_hash=str(status.get("stableRS", "")),
            )
        base = str(run["metadata"]["name"])
        created: Body | None = None
        for n in range(1, 50):
            run["metadata"]["name"] = base if n == 1 else f"{base}.{n}"
            try:
                created = await self.client.create(self.types["run"], run)
                break
            except KubeError as e:
                if e.status != 409:
                    raise
            existing = await self.client.get(self.types["run"], namespace, run["metadata"]["name"])
            if existing is not None and not (existing.get("spec") or {}).get("terminate"):
                return  # made by an earlier reconcile
            # A terminated run of an earlier attempt (an aborted update, retried): next name.
        if created is None:
            return
        if error:
            await self.client.patch_status(
                self.types["run"],
                namespace,
                str(created["metadata"]["name"]),
                {"status": {"phase": an.ERROR, "message": error}},
                manager=MANAGER,
            )
        await self._event(
            ro, "AnalysisRunRunning", f"Analysis Run '{run['metadata']['name']}' created"
        )

    async def _measure(self, run: Body, policy: Policy | None) -> float | None:
        """Take the run's due measurements within the app's `policy` and write its status;
        seconds until the next is due (None when the run is complete)."""
        meta, spec = run.get("metadata") or {}, run.get("spec") or {}
        old = run.get("status") or {}
        if old.get("phase") in an.COMPLETED:
            return None
        if policy is None:  # the app is not known yet (just started): measure nothing
            return POLICY_WAIT
        now = self.now()
        status: Body = dict(old)
        started = _parse(status.get("startedAt")) or now
        status.setdefault("startedAt", an.iso(now))
        patterns = [str(d.get("metricName", "")) for d in spec.get("dryRun") or []]
        try:
            metrics = [an.Metric.of(m, patterns) for m in spec.get("metrics") or []]
        except an.AnalysisError as e:
            status.update(phase=an.ERROR, message=str(e), completedAt=an.iso(now))
            await self._run_status(run, old, status)
            run["status"] = status
            return None
        results = {str(r.get("name")): r for r in status.get("metricResults") or []}
        terminate = bool(spec.get("terminate"))
        due, wait = ([], None) if terminate else an.due_metrics(metrics, results, started, now)
        # A run is terminating once a counted metric failed: its Jobs in flight stop too.
        terminating = terminate or any(
            not m.dry_run
            and (results.get(m.name) or {}).get("phase") in (an.FAILED, an.ERROR, an.INCONCLUSIVE)
            for m in metrics
        )
        jobs_running = await self._jobs(run, metrics, results, terminate=terminating)
        if due:
            secrets, refused = await self._secrets(str(meta.get("namespace", "")), spec, policy)
            measured: dict[str, Body] = {}

            async def one(m: an.Metric) -> None:
                why = _uses_refused(m, refused)
                if why:
                    measured[m.name] = _refused(why, self.now())
                elif "job" in m.provider:
                    result = results.get(m.name) or {}
                    results[m.name] = await self._start_job(run, m, result, policy)
                else:
                    measured[m.name] = await _take(m, secrets, self.now, policy)

            async with anyio.create_task_group() as tg:
                for m in due:
                    tg.start_soon(one, m)
            for name, measurement in measured.items():
                results[name] = an.record(results.get(name) or {"name": name}, measurement)
            jobs_running = jobs_running or any("job" in m.provider for m in due)
            _, wait = an.due_metrics(metrics, results, started, self.now())
        if jobs_running:
            wait = min(wait, JOB_POLL) if wait is not None else JOB_POLL
        phase_, message, phases = an.run_phase(metrics, results, terminate=terminate)
        for m in metrics:
            r = results.setdefault(m.name, {"name": m.name})
            r["phase"], msg = phases[m.name]
            r["dryRun"] = m.dry_run
            if msg:
                r["message"] = msg
        status["metricResults"] = [results[m.name] for m in metrics]
        summary = {"count": len(metrics)}
        for p in (an.SUCCESSFUL, an.FAILED, an.INCONCLUSIVE, an.ERROR):
            summary[p.lower()] = sum(1 for m in metrics if not m.dry_run and phases[m.name][0] == p)
        status["runSummary"] = summary
        status["phase"] = phase_
        if message:
            status["message"] = message
        if phase_ in an.COMPLETED:
            status["completedAt"] = an.iso(self.now())
            wait = None
        await self._run_status(run, old, status)
        run["status"] = status  # the plan that follows sees this measurement
        return wait if wait is not None else (None if phase_ in an.COMPLETED else 1.0)

    async def _start_job(self, run: Body, m: an.Metric, result: Body, policy: Policy) -> Body:
        """A `job` measurement: create its Job; the measurement runs until the Job ends. The
        Job is made with the daemon's credentials, so it must be one the app's project lets
        the app make, and its pods may not reach into the host."""
        now = self.now()
        number = int(result.get("count") or 0) + int(result.get("error") or 0) + 1
        measurement: Body = {"phase": an.RUNNING, "startedAt": an.iso(now)}
        try:
            job = an.job_for(run, m, number)
            why = policy.job_refusal(str(job["metadata"]["namespace"])) or job_refusal(job)
            if why:
                raise an.AnalysisError(f"job provider refused: {why}")
            try:
                await self.client.create(self.types["job"], job)
            except KubeError as e:
                if e.status != 409:  # made by an earlier reconcile that lost its status write
                    raise
        except (an.AnalysisError, KubeError) as e:
            failed = {**measurement, "phase": an.ERROR, "message": str(e)}
            failed["finishedAt"] = an.iso(self.now())
            return an.record(result or {"name": m.name}, failed)
        measurement["metadata"] = {
            "job-name": job["metadata"]["name"],
            "job-namespace": job["metadata"]["namespace"],
        }
        return an.start(result or {"name": m.name}, measurement)

    async def _jobs(
        self, run: Body, metrics: list[an.Metric], results: dict[str, Body], *, terminate: bool
    ) -> bool:
        """Resume the run's job measurements in flight: finish those whose Job ended (or stop
        them when the run is terminated); True while any is still running."""
        running = False
        for m in metrics:
            r = results.get(m.name) or {}
            current = an.in_flight(r)
            if current is None or "job" not in m.provider:
                continue
            where = current.get("metadata") or {}
            namespace, name = str(where.get("job-namespace", "")), str(where.get("job-name", ""))
            if terminate:
                await self.client.delete(
                    self.types["job"], namespace, name, propagation="Background"
                )
                phase_, message = an.SUCCESSFUL, "Metric Terminated"
            else:
                phase_, message = an.job_phase(
                    await self.client.get(self.types["job"], namespace, name)
                )
            if phase_ == an.RUNNING:
                running = True
                continue
            done = {**current, "phase": phase_, "finishedAt": an.iso(self.now())}
            if message:
                done["message"] = message
            results[m.name] = an.record(r, done)
            await self._collect_jobs(run)
        return running

    async def _collect_jobs(self, run: Body, keep: int = an.HISTORY) -> None:
        """Keep the run's newest `keep` Jobs (with their pods), as Argo Rollouts does."""
        meta = run.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        jobs, _ = await self.client.list(
            self.types["job"], namespace, label_selector=f"{an.JOB_RUN_UID}={meta.get('uid')}"
        )
        jobs.sort(key=lambda j: str((j.get("metadata") or {}).get("creationTimestamp", "")))
        for job in jobs[: max(0, len(jobs) - keep)]:
            await self.client.delete(
                self.types["job"],
                namespace,
                str(job["metadata"]["name"]),
                propagation="Background",
            )

    async def _run_status(self, run: Body, old: Body, new: Body) -> None:
        patch = merge_patch(old, new)
        if not patch:
            return
        meta = run.get("metadata") or {}
        await self.client.patch_status(
            self.types["run"],
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            {"status": patch},
            manager=MANAGER,
        )

    async def _secrets(
        self, namespace: str, spec: Body, policy: Policy
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Values of the run's secretKeyRef args, read only at measurement time, and why each
        refused arg is: only Secrets the app's project lets it manage are read."""
        out: dict[str, str] = {}
        refused: dict[str, str] = {}
        for a in spec.get("args") or []:
            ref = (a.get("valueFrom") or {}).get("secretKeyRef")
            if not ref:
                continue
            why = policy.secret_refusal(namespace, str(ref.get("name")))
            if why:
                refused[str(a.get("name"))] = f"secretKeyRef of arg {a.get('name')!r}: {why}"
                continue
            secret = await self.client.get(self.types["secret"], namespace, str(ref.get("name")))
            raw = ((secret or {}).get("data") or {}).get(str(ref.get("key")))
            if raw is None:
                continue
            out[str(a["name"])] = base64.b64decode(raw).decode(errors="replace")
        return out, refused

    async def _point(self, namespace: str, svc: str, h: str, rollout: str, status: Body) -> None:
        """Point a Service's selector at the pods of template hash `h`."""
        body = await self.client.get(self.types["svc"], namespace, svc)
        if body is None:
            return  # deleted since the check: the next reconcile reports it
        selector = (body.get("spec") or {}).get("selector") or {}
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if selector.get(HASH_LABEL) == h and annotations.get(MANAGED_BY) == rollout:
            return
        patch = {
            "metadata": {"annotations": {MANAGED_BY: rollout}},
            "spec": {"selector": {HASH_LABEL: h}},
        }
        await self.client.patch_merge(self.types["svc"], namespace, svc, patch, manager=MANAGER)

    async def _status(self, ro: Body, old: Body, new: Body) -> None:
        patch = merge_patch(old, new)
        if not patch:
            return
        meta = ro.get("metadata") or {}
        await self.client.patch_status(
            self.types["rollout"],
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            # The resourceVersion makes the write conditional: a promote or abort the user
            # wrote since our read is never overwritten (409, and the next reconcile sees it).
            {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": patch},
            manager=MANAGER,
        )

    async def _event(self, ro: Body, reason: str, message: str) -> None:
        meta = ro.get("metadata") or {}
        stamp = self.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "Rollout",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if reason == "RolloutAborted" else "Normal",
            "source": {"component": MANAGER},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.create(self.types["event"], event)
        except KubeError as e:  # an event is worth a log line, never a failed reconcile
            log.info("rollout event not recorded", reason=reason, error=str(e))


def _parse(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def _take(
    m: an.Metric, secrets: dict[str, str], now: Callable[[], dt.datetime], policy: Policy
) -> Body:
    """One measurement of `m`: its value and phase, or Error with the provider's message.
    Secret values and header values never appear in what is written (the tenant reads it),
    and the value is cut to MAX_VALUE characters."""
    # Imported here: httpx is only needed once an analysis measures (a start stays light).
    from daemon.rollouts import providers

    started = now()
    measurement: Body = {"startedAt": an.iso(started)}
    provider = m.provider
    try:
        provider = an.substitute(m.provider, secrets) if secrets else m.provider
        value = await providers.measure(provider, policy)
        if repeats_secret(f"{value.text}\n{json.dumps(value.result)}", provider, secrets):
            # Not recorded nor judged: a condition on it would let the tenant guess the secret.
            raise providers.ProviderError("the answer repeats a secret value; not recorded")
        measurement["value"] = redact(value.text, provider, secrets)[:MAX_VALUE]
        phase_, message = an.evaluate_result(m, value.result)
    except (providers.ProviderError, an.AnalysisError) as e:
        phase_, message = an.ERROR, str(e)
        if repeats_secret(message, provider, secrets):
            message = "the measurement's error repeats a secret value; not recorded"
    message = redact(message, provider, secrets)[:MAX_VALUE]
    measurement["phase"] = phase_
    if message:
        measurement["message"] = message
    measurement["finishedAt"] = an.iso(now())
    return measurement


def _uses_refused(m: an.Metric, refused: dict[str, str]) -> str:
    """Why `m` may not be measured: it uses a secret arg its app may not read ("" = none)."""
    text = json.dumps(m.provider)
    return next((why for arg, why in refused.items() if f"{{{{args.{arg}}}}}" in text), "")


def _refused(reason: str, now: dt.datetime) -> Body:
    """A measurement the app's policy refused before anything was sent."""
    at = an.iso(now)
    return {"startedAt": at, "finishedAt": at, "phase": an.ERROR, "message": reason}


def _provider_kind(run: Body, metric: str) -> str:
    for m in (run.get("spec") or {}).get("metrics") or []:
        if m.get("name") == metric:
            return next(iter(m.get("provider") or {"": None}), "")
    return ""


def _owned_by(body: Body, uid: str) -> bool:
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _condition(kind: str, reason: str, message: str) -> Body:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


class Rollouts:
    """One controller per cluster that has Rollouts, started on demand by the reconciler
    (`want`) and run by the daemon (`run`)."""

    def __init__(
        self,
        *,
        mode: str = "auto",
        install_crds: bool = True,
        ours: Callable[[Body], bool] = lambda ro: True,
        policy: Callable[[Body], Policy | None] = lambda ro: None,
    ) -> None:
        self.mode = mode
        self.install_crds = install_crds
        self.ours = ours
        self.policy = policy
        self.epoch: Callable[[Body], Epoch | None] = lambda ro: None  # set with several replicas
        self.controllers: dict[str, ClusterRollouts] = {}
        self._wanted: dict[str, KubeClient] = {}
        self._wake = anyio.Event()
        self.installed: dict[str, list[str]] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}

    async def prepare(self, client: KubeClient) -> None:
        """An app of this cluster contains Argo Rollouts kinds: install the CRDs if allowed
        and needed, and have a controller run for the cluster."""
        if client.name not in self.installed:
            if self.install_crds:
                self.installed[client.name] = await ensure_crds(client)
            else:
                self.installed[client.name] = []
        if client.name not in self._wanted:
            self._wanted[client.name] = client
            self._wake.set()

    async def run(self) -> None:
        """Run a controller for every cluster that wants one, until cancelled."""
        async with anyio.create_task_group() as tg:
            while True:
                for name, client in list(self._wanted.items()):
                    if name not in self.controllers:
                        ctl = ClusterRollouts(
                            client,
                            mode=self.mode,
                            ours=self.ours,
                            policy=self.policy,
                            epoch=lambda ro: self.epoch(ro),
                        )
                        self.controllers[name] = ctl
                        self._scopes[name] = scope = anyio.CancelScope()
                        tg.start_soon(self._supervise, ctl, scope)
                self._wake = anyio.Event()
                await self._wake.wait()

    def snapshot(self) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        """Every controller's latest Rollouts and AnalysisRuns, for the metrics."""
        rollouts = [r for c in self.controllers.values() for r in c.seen.values()]
        runs = [r for c in self.controllers.values() for r in c.seen_runs.values()]
        return rollouts, runs

    def timings(self) -> list[Timings]:
        """Every controller's reconcile timings, for the metrics."""
        return [c.timings for c in self.controllers.values()]

    async def act(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        action: str,
        *,
        to_revision: int | None = None,
    ) -> str:
        """Apply a user operation (promote, abort, ...) to a Rollout, as the kubectl plugin
        writes it; the controller picks it up on its next reconcile. Returns what was done."""
        rt = await client.resource_for(API_VERSION, "Rollout", subject=f"Rollout/{namespace}")
        subject = f"Rollout/{namespace}/{name}"
        ro = await client.get(rt, namespace, name)
        if ro is None:
            raise KubeNotFound(subject, action, "not found", status=404)
        sets: list[ReplicaSet] = []
        try:
            ref = workload_ref(ro) if action == "undo" else {}
        except InvalidSpec as e:
            raise KubeError(subject, action, str(e), status=400) from e
        workload_rt = await client.resource_for("apps/v1", "Deployment", subject="Deployment")
        current: Body | None = None
        if ref:
            deployment = await client.get(workload_rt, namespace, str(ref["name"]))
            if deployment is None:
                raise KubeNotFound(f"Deployment/{namespace}/{ref['name']}", action, "not found")
            current = (deployment.get("spec") or {}).get("template") or {}
        if action == "undo":
            rs_rt = await client.resource_for("apps/v1", "ReplicaSet", subject="ReplicaSet")
            owned, _ = await client.list(rs_rt, namespace, label_selector=HASH_LABEL)
            uid = str((ro.get("metadata") or {}).get("uid", ""))
            sets = [ReplicaSet.of(b) for b in owned if _owned_by(b, uid)]
        try:
            writes = plan_action(
                action, ro, sets=sets, to_revision=to_revision, current_template=current
            )
        except ActionError as e:
            raise KubeError(subject, action, str(e), status=400) from e
        if writes.template is not None:
            op = [{"op": "replace", "path": "/spec/template", "value": writes.template}]
            if ref:  # the Deployment holds the template; the Rollout follows it
                await client.patch_json(
                    workload_rt, namespace, str(ref["name"]), op, manager=USER_MANAGER
                )
            else:
                await client.patch_json(rt, namespace, name, op, manager=USER_MANAGER)
        if writes.spec is not None:
            await client.patch_merge(
                rt, namespace, name, {"spec": writes.spec}, manager=USER_MANAGER
            )
        if writes.status is not None:
            await client.patch_status(
                rt, namespace, name, {"status": writes.status}, manager=USER_MANAGER
            )
        ctl = self.controllers.get(client.name)
        if ctl is not None:
            ctl.mark((namespace, name))
        log.info("rollout action", rollout=f"{namespace}/{name}", action=action)
        return writes.message

    def forget(self, cluster: str) -> None:
        """The cluster's client was replaced (its config entry changed) or it is gone: stop its
        controller; the next reconcile of an app there starts one with the new client."""
        scope = self._scopes.pop(cluster, None)
        if scope is not None:
            scope.cancel()
        self.controllers.pop(cluster, None)
        self._wanted.pop(cluster, None)
        self.installed.pop(cluster, None)

    async def _supervise(self, ctl: ClusterRollouts, scope: anyio.CancelScope) -> None:
        with scope:
            await self._keep_running(ctl)

    async def _keep_running(self, ctl: ClusterRollouts) -> None:
        while True:
            try:
                await ctl.run()
            except (KubeError, KubeNotFound) as e:
                log.warning("rollout controller restarting", cluster=ctl.client.name, error=str(e))
                await anyio.sleep(5)
            except Exception:  # a bug must not take the daemon down with it
                log.exception("rollout controller crashed; restarting", cluster=ctl.client.name)
                await anyio.sleep(5)
