"""Stage 1 of a reconcile: resolve every source to a commit, render it, and prepare the manifests
for the destination cluster (kinds resolved, namespaces defaulted, tracking ids added).

A bad manifest fails the whole stage with a `PlanError` naming file and resource, so nothing of a
half-understood render is ever applied or pruned.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence

import structlog

from daemon.children import CONTROL_NAMESPACE, is_child_kind
from daemon.errors import KubeNotFound, PlanError, SourceError, SourceUnreachable
from daemon.kube import KubeClient
from daemon.model import ANN_SYNC_OPTIONS, Body, Manifest, ResourceKey, ResourceType
from daemon.plan import tracking
from daemon.plan.options import is_hook, is_skipped, resource_sync_options
from daemon.plan.tracking import TrackingMethod
from daemon.render import Renderer, RenderRequest
from daemon.settings import DNS1123_LABEL, Application
from daemon.sources.git import RepoCache
from daemon.sources.lastgood import LastGood, Rendered
from daemon.sources.signatures import Keyring
from daemon.stages import Desired

log = structlog.get_logger("gitopsd.desired")


def inputs_key(app: Application, shas: Sequence[str]) -> str:
    """What a compare depends on besides the live side: the spec and every source's commit."""
    return json.dumps(
        [app.raw.get("spec"), app.finalizers, list(shas)], sort_keys=True, default=str
    )


async def source_shas(app: Application, repos: RepoCache, *, max_age: float) -> list[str]:
    """The commit every source (ref sources first) resolves to now."""
    shas = []
    for src in [*(s for s in app.sources if s.ref), *app.manifest_sources]:
        if src.chart:
            ref = await repos.charts.resolve(
                src.repo_url, src.chart, src.target_revision, max_age=max_age
            )
            shas.append(ref.revision)  # as render_desired records it
            continue
        resolved = await repos.resolve(src.repo_url, src.target_revision, max_age=max_age)
        shas.append(resolved.sha)
    return shas


async def render_desired(
    app: Application,
    client: KubeClient,
    *,
    repos: RepoCache,
    renderer: Renderer,
    revision: str = "",
    max_age: float = 0.0,
    tracking_method: TrackingMethod = TrackingMethod.ANNOTATION,
    before_prepare: Callable[[Sequence[Manifest]], Awaitable[None]] | None = None,
    last_good: LastGood | None = None,
    signature_keys: tuple[str, ...] = (),
    keyring: Keyring | None = None,
) -> Desired:
    """Resolve, check out and render every source; prepare manifests for the cluster.
    `before_prepare` sees the rendered manifests before their kinds are resolved (it may
    install CustomResourceDefinitions they need). With `last_good`, every render is kept, and
    an unreachable source falls back to the kept render (`Desired.offline` says so)."""
    await client.discover()
    kube_version = client.server_version.lstrip("v").split("-")[0].split("+")[0]
    offline = ""
    try:
        rendered = await _render_sources(
            app,
            repos,
            renderer,
            revision,
            max_age,
            kube_version,
            signature_keys,
            keyring,
            client.api_versions,
        )
    except SourceUnreachable as e:
        kept, why = last_good.load(app) if last_good is not None else (None, "")
        if kept is not None and signature_keys:
            # Keys added to (or removed from) the project since: the kept commits must pass
            # the project's keys as they are now, as a fresh render would have to.
            why = kept.signed_for(signature_keys)
            kept = None if why else kept
        if kept is None or (revision and revision not in kept.revisions):
            raise SourceUnreachable(f"{e}; {why or 'nothing else to apply'}") from e
        rendered = kept
        revs = ", ".join(r[:12] for r in kept.revisions) or "?"
        offline = f"applying revision {revs} from the last good render ({kept.rendered_at}): {e}"
    else:
        if last_good is not None:
            await last_good.keep(app, rendered)
    manifests = argo_rollouts_version(rendered.manifests)
    if before_prepare is not None:
        await before_prepare(manifests)
    prepared, types, warnings = await prepare(app, client, manifests, tracking_method)
    revisions = rendered.revisions
    return Desired(
        revision=revisions[0] if revisions else "",
        revisions=revisions,
        manifests=prepared,
        types=types,
        tool=",".join(rendered.tools),
        inputs=inputs_key(app, rendered.ref_shas + revisions),
        warnings=warnings,
        offline=offline,
    )


async def _render_sources(
    app: Application,
    repos: RepoCache,
    renderer: Renderer,
    revision: str,
    max_age: float,
    kube_version: str,
    signature_keys: tuple[str, ...] = (),
    keyring: Keyring | None = None,
    api_versions: tuple[str, ...] = (),
) -> Rendered:
    signers: dict[str, str] = {}

    async def verified(url: str, sha: str) -> None:
        # AppProject signatureKeys: only commits signed by one of them are rendered.
        if not signature_keys:
            return
        if keyring is None:
            raise SourceError(f"{app.name}: the project requires signed commits; no keyring")
        signers[sha] = await keyring.verify(
            repos.repo(url).dir, sha, signature_keys, where=f"Application/{app.name} {url}"
        )

    manifests: list[Manifest] = []
    revisions: list[str] = []
    tools: list[str] = []
    refs: list[tuple[str, str, str]] = []
    for src in app.sources:
        if src.ref:
            resolved = await repos.resolve(src.repo_url, src.target_revision, max_age=max_age)
            checkout = await repos.checkout(src.repo_url, resolved.sha)
            await verified(src.repo_url, resolved.sha)
            refs.append((src.ref, resolved.sha, str(checkout)))
    for src in app.manifest_sources:
        rev = revision if revision and len(app.manifest_sources) == 1 else src.target_revision
        if src.chart and signature_keys:
            raise SourceError(
                f"Application/{app.name}: chart {src.chart} from {src.repo_url}: its project "
                "requires signed commits (signatureKeys), which a Helm chart cannot have"
            )
        if src.chart:
            # A chart from a Helm repository: the unpacked chart is the "checkout", its
            # directory the source path, and the chart version the revision (as Argo CD).
            ref = await repos.charts.resolve(src.repo_url, src.chart, rev, max_age=max_age)
            root = (await repos.charts.fetch(ref)).parent
            key, revision_of_source = f"{ref.chart}-{ref.version}@{ref.digest}", ref.revision
            src = dataclasses.replace(src, path=ref.chart, helm=src.helm or {})
        else:
            resolved = await repos.resolve(src.repo_url, rev, max_age=max_age)
            root = await repos.checkout(src.repo_url, resolved.sha)
            await verified(src.repo_url, resolved.sha)
            key = revision_of_source = resolved.sha
        request = RenderRequest(
            sha=key,
            source=src,
            app_name=app.name,
            namespace=app.destination.namespace,
            kube_version=kube_version,
            refs=tuple(refs),
            project=app.project,
            api_versions=api_versions,
        )
        rendered = await renderer.render(request, root)
        manifests.extend(rendered.manifests)
        revisions.append(revision_of_source)
        tools.append(rendered.tool)
    return Rendered(manifests, revisions, [sha for _, sha, _ in refs], tools, signers=signers)


ARGO_ROLLOUTS_KINDS = {"Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun"}
_warned_v1: set[str] = set()


def argo_rollouts_version(manifests: list[Manifest]) -> list[Manifest]:
    """Argo Rollouts kinds written as `argoproj.io/v1` (as the seed document does; no release
    serves it) are read as `argoproj.io/v1alpha1`, with one warning per file."""
    out = []
    for m in manifests:
        if m.api_version == "argoproj.io/v1" and m.key.kind in ARGO_ROLLOUTS_KINDS:
            if m.source not in _warned_v1:
                _warned_v1.add(m.source)
                log.warning(
                    "argoproj.io/v1 is not served by Argo Rollouts: read as argoproj.io/v1alpha1",
                    file=m.source,
                    resource=f"{m.key.kind}/{m.key.name}",
                )
            m = Manifest(m.key, {**m.body, "apiVersion": "argoproj.io/v1alpha1"}, m.source)
        out.append(m)
    return out


def uses_rollouts(manifests: Sequence[Manifest]) -> bool:
    """True when an app contains Argo Rollouts kinds."""
    return any(
        m.key.group == "argoproj.io" and m.key.kind in ARGO_ROLLOUTS_KINDS for m in manifests
    )


def crd_scopes(manifests: Sequence[Manifest]) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, for every CustomResourceDefinition among `manifests`."""
    return {gk: namespaced for gk, (namespaced, _) in crd_kinds(manifests).items()}


def crd_kinds(manifests: Sequence[Manifest]) -> dict[tuple[str, str], tuple[bool, set[str]]]:
    """(group, kind) -> (namespaced, served versions), for every CRD among `manifests`."""
    kinds: dict[tuple[str, str], tuple[bool, set[str]]] = {}
    for m in manifests:
        if m.key.kind == "CustomResourceDefinition":
            spec = m.body.get("spec") or {}
            names = spec.get("names") or {}
            served = {
                str(v.get("name"))
                for v in spec.get("versions") or []
                if isinstance(v, dict) and v.get("served", True)
            }
            kinds[(str(spec.get("group", "")), str(names.get("kind", "")))] = (
                spec.get("scope", "Namespaced") == "Namespaced",
                served,
            )
    return kinds


async def prepare(
    app: Application,
    client: KubeClient,
    manifests: Sequence[Manifest],
    tracking_method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> tuple[list[Manifest], dict[ResourceKey, ResourceType | None], list[str]]:
    """Resolve kinds, default namespaces, add tracking ids; reject what cannot be synced.
    Identical duplicates are a warning (one is kept, as Argo CD keeps the last); duplicates
    that differ are an error naming the fields that differ."""
    crds = crd_kinds(manifests)
    errors: list[str] = []
    warnings: list[str] = []
    out: list[Manifest] = []
    types: dict[ResourceKey, ResourceType | None] = {}
    seen: dict[ResourceKey, str] = {}

    bodies: dict[ResourceKey, Body] = {}

    def unique(key: ResourceKey, source: str, body: Body) -> bool:
        if key not in seen:
            seen[key], bodies[key] = source, body
            return True
        differ = sorted(
            f for f in set(body) | set(bodies[key]) if body.get(f) != bodies[key].get(f)
        )
        if differ:
            errors.append(
                f"{key}: defined more than once, differently ({seen[key]} and {source} differ "
                f"in {', '.join(differ)})"
            )
        else:
            warnings.append(f"{key} is defined more than once ({seen[key]} and {source})")
        return False

    for m in manifests:
        if is_skipped(m.body):
            continue
        if is_child_kind(m.key):
            # Managed by gitopsd itself (app of apps); never applied to the cluster.
            body = copy.deepcopy(m.body)
            body["metadata"].setdefault("namespace", CONTROL_NAMESPACE)
            key = ResourceKey.of(body)
            if unique(key, m.source, body):
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
                error = _unserved(m, crds) if (m.key.group, m.key.kind) in crds else e.api_message
                if error:
                    errors.append(f"{m.source}: {m.key}: {error}")
                    continue
        namespaced = rt.namespaced if rt is not None else crds[(m.key.group, m.key.kind)][0]
        body, error = placed(app, m, namespaced=namespaced, tracking_method=tracking_method)
        if error:
            errors.append(error)
            continue
        key = ResourceKey.of(body)
        if (is_hook(body) and not body["metadata"].get("name")) or unique(key, m.source, body):
            out.append(Manifest(key=key, body=body, source=m.source))
            types[key] = rt
    if errors:
        raise PlanError("; ".join(errors))
    return out, types, warnings


def _unserved(m: Manifest, crds: dict[tuple[str, str], tuple[bool, set[str]]]) -> str:
    """Why a custom resource cannot be applied after its CRD in this app ('' when it can)."""
    _, served = crds[(m.key.group, m.key.kind)]
    version = m.api_version.rpartition("/")[2]
    if version in served:
        return ""
    return (
        f"the CustomResourceDefinition for {m.key.kind}.{m.key.group} in this app does not "
        f"serve version {version} (it serves {', '.join(sorted(served)) or 'none'})"
    )


def placed(
    app: Application,
    m: Manifest,
    *,
    namespaced: bool,
    tracking_method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> tuple[Body, str]:
    """`m`'s body with its namespace defaulted (or dropped when cluster-scoped) and the app's
    tracking id, or an error when a namespaced object has nowhere to go."""
    # Only metadata changes here (and with_tracking copies what it touches): a shallow copy of
    # the two levels is enough, and a deep copy of every object cost a no-op a tenth of its time.
    body = {**m.body, "metadata": dict(m.body["metadata"])}
    meta = body["metadata"]
    given = meta.get("namespace")
    if given and (not isinstance(given, str) or not DNS1123_LABEL.match(given)):
        return body, (
            f"{m.source}: {m.key.kind}/{meta.get('name')}: metadata.namespace {given!r} is not "
            "a valid namespace name (a DNS-1123 label)"
        )
    if namespaced:
        if not meta.get("namespace"):
            if not app.destination.namespace:
                return body, (
                    f"{m.source}: {m.key.kind}/{meta.get('name')}: namespaced resource "
                    "has no metadata.namespace and the Application has no "
                    "spec.destination.namespace"
                )
            meta["namespace"] = app.destination.namespace
    else:
        meta.pop("namespace", None)
    key = ResourceKey.of(body)
    tid = tracking.build(
        app.instance_name, key, namespaced=namespaced, dest_namespace=app.destination.namespace
    )
    try:
        return tracking.with_tracking(body, tid, tracking_method), ""
    except ValueError as e:
        return body, f"Application/{app.name}: {e}"
