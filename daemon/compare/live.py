"""Read the live objects a compare needs: from the drift watches' cache (`daemon.livecache`) when
they hold the type and namespace, else one LIST per (type, namespace), or GETs where the type
cannot be listed; the listing also finds objects carrying the app's tracking id that nothing
recorded (extraneous: an inventory lost or edited, a copy of a manifest applied by hand)."""

from __future__ import annotations

import copy
from collections import defaultdict

import anyio
import structlog

from daemon.errors import KubeError
from daemon.kube import KubeClient
from daemon.model import Body, ResourceKey, ResourceType
from daemon.plan import tracking
from daemon.plan.tracking import TrackingMethod

log = structlog.get_logger("gitopsd.compare")

READ_PARALLELISM = 16


async def fetch_live(
    client: KubeClient,
    keys: dict[ResourceKey, ResourceType],
    *,
    owner: str = "",
    method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> dict[ResourceKey, Body]:
    """Live objects for `keys` (absent ones are simply missing from the result), plus, when
    `owner` is given, every other object of the same types and namespaces whose tracking id
    names `owner`. Objects the client may not read are left out: if desired, their dry-run
    apply fails next with the API's own Forbidden message naming the resource."""
    groups: dict[tuple[ResourceType, str], list[ResourceKey]] = defaultdict(list)
    for key, rt in keys.items():
        groups[(rt, key.namespace)].append(key)
    live: dict[ResourceKey, Body] = {}
    limiter = anyio.CapacityLimiter(READ_PARALLELISM)

    async def group(rt: ResourceType, ns: str, wanted: list[ResourceKey]) -> None:
        async with limiter:
            try:
                live.update(await _read_group(client, rt, ns, wanted, owner, method))
            except KubeError as e:
                if e.status != 403:
                    raise
                log.debug("live state forbidden", kind=rt.kind, namespace=ns, error=str(e))

    async with anyio.create_task_group() as tg:
        for (rt, ns), wanted in groups.items():
            tg.start_soon(group, rt, ns, wanted)
    return live


async def _read_group(
    client: KubeClient,
    rt: ResourceType,
    ns: str,
    wanted: list[ResourceKey],
    owner: str,
    method: TrackingMethod,
) -> dict[ResourceKey, Body]:
    found: dict[ResourceKey, Body] = {}
    names = {k.name for k in wanted}
    cached = client.cache.read(rt.group, rt.kind, rt.api_version, ns, names, owner)
    if cached is not None:
        # The drift watch holds this scope: no LIST. What gitopsd wrote after the watch last
        # saw it is read from the API server, so a compare right after an apply sees it.
        bodies: dict[str, Body | None] = dict(cached.objects)
        for name in cached.stale:
            bodies[name] = await client.get(rt, ns, name)
        for name, body in bodies.items():
            if body is not None and (
                name in names
                or tracking.is_owned_by(body, owner, namespaced=rt.namespaced, method=method)
            ):
                body.setdefault("apiVersion", rt.api_version)
                body.setdefault("kind", rt.kind)
                found[ResourceKey(rt.group, rt.kind, ns, name)] = body
        return found
    if "list" in rt.verbs:
        # Shared with other compares of the same type and namespace running now (never older
        # than this call), so the items are copied before anyone may change them.
        items = await client.list_fresh(rt, ns)
        for item in items:
            k = ResourceKey.of(item)
            key = ResourceKey(k.group or rt.group, k.kind, ns or k.namespace, k.name)
            mine = owner and tracking.is_owned_by(
                item, owner, namespaced=rt.namespaced, method=method
            )
            if k.name in names or mine:
                found[key] = copy.deepcopy(item)
        return found
    for k in wanted:
        body = await client.get(rt, k.namespace, k.name)
        if body is not None:
            body.setdefault("apiVersion", rt.api_version)
            body.setdefault("kind", rt.kind)
            found[k] = body
    return found
