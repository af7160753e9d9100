"""Replica arithmetic of a canary, as Argo Rollouts does it (pure functions).

Basic canary (no traffic router): the weight is approximated by pod counts, choosing among a
total of `replicas` (or `replicas + 1` when surge is allowed) the canary count whose share is
closest to the weight (ties go to the larger canary), never leaving either side empty for a
weight strictly between 0 and the maximum. Those targets are then approached within the
fenceposts: at most `replicas + maxSurge` pods exist, at least `replicas - maxUnavailable` stay
available; stable scales up first, older sets drain before stable or canary scale down.

Traffic-routed canary: the canary runs `ceil(weight * replicas / max)` pods and stable stays at
100% (the router, not the pod count, splits traffic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SetState:
    """One ReplicaSet as the arithmetic needs it: desired (spec) and available pods."""

    replicas: int
    available: int = 0


def int_or_percent(value: int | str | None, total: int, *, round_up: bool, default: str) -> int:
    """Kubernetes' legacy IntOrString reading: an int is a count, any string is a percent of
    `total` ("25%" or "25"), rounded up for surge and down for unavailability."""
    v: int | str = default if value is None else value
    if isinstance(v, bool):
        raise ValueError(f"invalid int or percent: {v!r}")
    if isinstance(v, int):
        return v
    text = v.strip().removesuffix("%")
    try:
        pct = int(text)
    except ValueError as e:
        raise ValueError(f"invalid int or percent: {v!r}") from e
    exact = pct * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def fenceposts(
    max_surge: int | str | None, max_unavailable: int | str | None, replicas: int
) -> tuple[int, int]:
    """(surge, unavailable) for a canary: 25% each by default; when both resolve to 0 the
    unavailability becomes 1 (surge might be impossible under a quota)."""
    surge = int_or_percent(max_surge, replicas, round_up=True, default="25%")
    unavailable = int_or_percent(max_unavailable, replicas, round_up=False, default="25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def weighted_counts(replicas: int, weight: int, max_weight: int, surge: int) -> tuple[int, int]:
    """(canary, stable) pod counts closest to `weight` out of `max_weight`."""
    if replicas == 0:
        return 0, 0
    zero_allowed = weight in (0, max_weight) or (replicas == 1 and surge == 0)
    totals = [replicas, replicas + 1] if surge > 0 else [replicas]
    candidates: list[tuple[int, int]] = []  # (canary, total), in preference order
    for total in totals:
        exact = replicas * weight / max_weight
        low, high = math.floor(exact), math.ceil(exact)
        tied = (total * weight / max_weight) % 1 == 0.5
        if high < total or zero_allowed or total > replicas:
            candidates.append((high, total))
        if not tied and (low != 0 or zero_allowed):
            candidates.append((low, total))

    def error(c: tuple[int, int]) -> float:
        return abs(c[0] * max_weight / c[1] - weight)

    best = candidates[0] if candidates else (0, replicas)
    for c in candidates[1:]:
        if error(c) < error(best):
            best = c
    return best[0], best[1] - best[0]


@dataclass(frozen=True, slots=True)
class Targets:
    """What the canary's ReplicaSets should be scaled to now."""

    canary: int
    stable: int
    old: tuple[int, ...] = ()  # each older set, in the order given (they drain first)


def basic_canary(
    *,
    replicas: int,
    weight: int,
    max_weight: int,
    max_surge: int | str | None,
    max_unavailable: int | str | None,
    canary: SetState | None,
    stable: SetState | None,
    old: list[SetState],
) -> Targets:
    """The next pod counts of a canary without a traffic router. `stable` is None when there is
    no stable set distinct from the canary: then the canary goes to 100%."""
    surge, unavailable = fenceposts(max_surge, max_unavailable, replicas)
    want_canary, want_stable = weighted_counts(replicas, weight, max_weight, surge)
    canary_n = canary.replicas if canary else 0
    if stable is None:
        want_canary, want_stable = replicas, 0
        stable_n = 0
    else:
        stable_n = stable.replicas
    ceiling = replicas + surge
    room = ceiling - (canary_n + stable_n + sum(s.replicas for s in old))

    # Scale up, stable first, only as far as the surge allows.
    if stable is not None and stable_n < want_stable and room > 0:
        step = min(room, want_stable - stable_n)
        stable_n += step
        room -= step
    if canary is not None and canary_n < want_canary and room > 0:
        canary_n += min(room, want_canary - canary_n)

    if sum(s.replicas for s in old) > 0:
        # Older sets serve traffic too: they drain before stable or canary shrink.
        everyone = [*old, *(x for x in (canary, stable) if x is not None)]
        available = sum(min(x.available, x.replicas) for x in everyone)
        return Targets(canary_n, stable_n, drain_old(old, available, replicas - unavailable))

    floor = replicas - unavailable
    zeros = tuple(0 for _ in old)
    growing = canary is None or want_canary >= canary.replicas
    # Pods that count towards availability: the side we shrink counts whole, the other only
    # with the pods it really has available.
    counted = _counted(canary, not growing) + _counted(stable, growing)
    if counted <= floor:
        return Targets(canary_n, stable_n, zeros)
    spare = counted - floor
    if not growing and canary is not None:
        if canary.replicas > want_canary:
            canary_n = max(want_canary, canary.replicas - spare)
        canary_n, stable_n = _within(canary, stable, canary_n, stable_n, ceiling, floor)
    elif growing and stable is not None:
        if stable.replicas > want_stable:
            stable_n = max(want_stable, stable.replicas - spare)
        stable_n, canary_n = _within(stable, canary, stable_n, canary_n, ceiling, floor)
    return Targets(canary_n, stable_n, zeros)


def _counted(s: SetState | None, whole: bool) -> int:
    if s is None:
        return 0
    return s.replicas if whole else min(s.available, s.replicas)


def _within(
    drain: SetState | None,
    adjust: SetState | None,
    drain_n: int,
    adjust_n: int,
    ceiling: int,
    floor: int,
) -> tuple[int, int]:
    """Keep the pair within the surge ceiling, giving back to `adjust` the availability the
    trim would cost below the floor."""
    over = max(0, adjust_n + drain_n - ceiling)
    available = min(drain.available, drain_n) if drain is not None else 0
    if adjust is not None:
        adjust_n -= over
        available += min(adjust.available, adjust_n)
        lost = max(0, adjust.available - adjust_n)
        adjust_n += min(lost, max(0, floor - available))
    return drain_n, adjust_n


def drain_old(old: list[SetState], available: int, floor: int) -> tuple[int, ...]:
    """Older sets (newest first) scaled down: their unavailable pods go at once, then as many
    available ones as keep `floor` pods available across all sets (`available` counts them)."""
    budget = available - floor
    out: list[int] = []
    for s in old:
        n = min(s.replicas, s.available)  # unhealthy pods never count, so they go first
        if budget > 0 and n > 0:
            cut = min(n, budget)
            n -= cut
            budget -= cut
        out.append(n)
    return tuple(out)


def traffic_routed_canary(
    *, replicas: int, weight: int, max_weight: int, canary_scale: int | None, min_pods: int = 1
) -> Targets:
    """Pods of a canary behind a traffic router: the canary sized to its weight (or an explicit
    setCanaryScale), the stable set kept whole."""
    if canary_scale is not None:
        n = canary_scale
    else:
        n = math.ceil(weight * replicas / max_weight)
        if weight > 0 and min_pods and n < min_pods:
            n = min_pods
    return Targets(n, replicas)
