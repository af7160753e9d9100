"""The only poller of health: wait until a wave's resources are Healthy, one fails, or time
runs out."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from daemon.errors import KubeError
from daemon.health.checks import assess
from daemon.kube import KubeClient
from daemon.model import Body, Health, HealthStatus, ResourceKey, ResourceType


@dataclass(frozen=True, slots=True)
class WaitItem:
    """One object to watch; hooks finish on Healthy (completion), not just readiness."""

    key: ResourceKey
    rt: ResourceType
    is_hook: bool = False


@dataclass(frozen=True, slots=True)
class WaitResult:
    """How a wait ended: per-object health and the objects still waiting (on timeout)."""

    healths: dict[ResourceKey, Health]
    failed: tuple[ResourceKey, ...]
    waiting: tuple[ResourceKey, ...]
    timed_out: bool
    live: dict[ResourceKey, Body]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.timed_out


def _verdict(item: WaitItem, body: Body | None) -> tuple[str, Health]:
    """('done' | 'wait' | 'fail', health) for one object, per Argo CD's gating rules."""
    if body is None:
        return "fail", Health(
            HealthStatus.MISSING, "resource is missing, it might have been deleted"
        )
    health = assess(body)
    if health is None:
        return "done", Health(HealthStatus.HEALTHY, "")
    if health.status is HealthStatus.HEALTHY:
        return "done", health
    if health.status is HealthStatus.DEGRADED:
        return "fail", health
    if item.is_hook and health.status is HealthStatus.UNKNOWN:
        return "fail", health
    return "wait", health


async def _fetch_all(
    client: KubeClient,
    items: Sequence[WaitItem],
    limiter: anyio.CapacityLimiter,
    healths: dict[ResourceKey, Health],
) -> dict[ResourceKey, Body | None]:
    """GET every item (bounded); API errors become Unknown health instead of bodies."""
    bodies: dict[ResourceKey, Body | None] = {}

    async def fetch(item: WaitItem) -> None:
        async with limiter:
            try:
                bodies[item.key] = await client.get(item.rt, item.key.namespace, item.key.name)
            except KubeError as e:
                healths[item.key] = Health(HealthStatus.UNKNOWN, str(e))

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(fetch, item)
    return bodies


async def wait_healthy(
    client: KubeClient,
    items: Sequence[WaitItem],
    *,
    timeout: float,
    interval: float = 0.5,
    should_stop: Callable[[], bool] = lambda: False,
) -> WaitResult:
    """Poll `items` until every one is done, any one fails, or `timeout` passes."""
    pending = {i.key: i for i in items}
    healths: dict[ResourceKey, Health] = {}
    live: dict[ResourceKey, Body] = {}
    failed: list[ResourceKey] = []
    deadline = time.monotonic() + timeout
    delay = min(interval, 0.2)
    limiter = anyio.CapacityLimiter(16)
    while pending:
        bodies = await _fetch_all(client, list(pending.values()), limiter, healths)
        for key, item in list(pending.items()):
            if key not in bodies:
                continue
            body = bodies[key]
            if body is not None:
                live[key] = body
            verdict, health = _verdict(item, body)
            healths[key] = health
            if verdict == "done":
                del pending[key]
            elif verdict == "fail":
                failed.append(key)
                del pending[key]
        if failed:
            break
        if not pending:
            break
        if time.monotonic() >= deadline or should_stop():
            return WaitResult(healths, tuple(failed), tuple(pending), True, live)
        await anyio.sleep(delay)
        delay = min(interval * 2, delay * 1.5)
    return WaitResult(healths, tuple(failed), tuple(pending), False, live)
