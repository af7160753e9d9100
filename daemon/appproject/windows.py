"""AppProject sync windows: parsing (Argo CD's ValidateProject rules) and Argo CD's `CanSync`
verdict for one app at one instant. Pure: callers pass `now`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.appproject import AppProject, project_where
from daemon.appproject.cron import NEXT_HORIZON, instants, parse_cron
from daemon.appproject.cron import slack as zone_slack
from daemon.durations import format_duration, parse_go_duration
from daemon.globs import glob_match


class WindowKind(enum.StrEnum):
    """Whether a sync window permits or blocks syncs while active."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class SyncWindow:
    """One `spec.syncWindows[]` entry; `duration` in seconds, `time_zone` an IANA name."""

    kind: WindowKind
    schedule: str
    duration: float
    applications: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    manual_sync: bool = False
    time_zone: str = "UTC"
    use_and_operator: bool = False  # `andOperator`: every non-empty selector must match
    sync_overrun: bool = False  # a sync permitted when it started may continue
    description: str = ""

    def __str__(self) -> str:
        return (
            f"{self.kind} window {self.schedule!r} for {format_duration(self.duration)}"
            f"{'' if self.time_zone == 'UTC' else f' ({self.time_zone})'}"
        )


def _zone(name: str) -> tzinfo:
    return UTC if name in ("", "UTC") else ZoneInfo(name)


_WINDOW_KEYS = frozenset(
    {
        "kind",
        "schedule",
        "duration",
        "applications",
        "namespaces",
        "clusters",
        "manualSync",
        "timeZone",
        "andOperator",
        "syncOverrun",
        "description",
    }
)


def _str_list(item: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = item.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}.{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _flag(item: Mapping[str, Any], key: str, where: str) -> bool:
    value = item.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def parse_sync_windows(raw_spec: Mapping[str, Any], *, where: str) -> list[SyncWindow]:
    """Validate `syncWindows` of an AppProject `spec` mapping; errors read `<where>.syncWindows[i]
    .<field>: ...`.

    Enforces Argo CD's ValidateProject rules (kind, cron, Go duration, at least one selector,
    no duplicate kind+schedule+duration) plus a known time zone and a positive duration.
    """
    raw = raw_spec.get("syncWindows") or []
    if not isinstance(raw, list):
        raise ValueError(f"{where}.syncWindows: expected a list, got {type(raw).__name__}")
    windows: list[SyncWindow] = []
    seen: set[tuple[str, str, str]] = set()
    for i, item in enumerate(raw):
        at = f"{where}.syncWindows[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{at}: expected a mapping, got {type(item).__name__}")
        unknown = sorted(set(item) - _WINDOW_KEYS)
        if unknown:
            raise ValueError(f"{at}: unknown field(s) {', '.join(unknown)}")
        kind = item.get("kind")
        if kind not in ("allow", "deny"):
            raise ValueError(f"{at}.kind: must be allow or deny, got {kind!r}")
        schedule = item.get("schedule")
        if not isinstance(schedule, str):
            raise ValueError(f"{at}.schedule: expected a cron expression, got {schedule!r}")
        try:
            parse_cron(schedule)
        except ValueError as e:
            raise ValueError(f"{at}.schedule: cannot parse {schedule!r}: {e}") from None
        duration_text = item.get("duration")
        if not isinstance(duration_text, str):
            raise ValueError(
                f"{at}.duration: expected a Go duration such as '1h', got {duration_text!r}"
            )
        try:
            duration = parse_go_duration(duration_text)
        except ValueError as e:
            raise ValueError(f"{at}.duration: {e}") from None
        if duration <= 0:
            raise ValueError(f"{at}.duration: must be positive, got {duration_text!r}")
        tz_name = item.get("timeZone") or "UTC"
        if not isinstance(tz_name, str):
            raise ValueError(f"{at}.timeZone: expected an IANA time zone name, got {tz_name!r}")
        try:
            _zone(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{at}.timeZone: unknown time zone {tz_name!r}") from None
        window = SyncWindow(
            kind=WindowKind(kind),
            schedule=schedule,
            duration=duration,
            applications=_str_list(item, "applications", at),
            namespaces=_str_list(item, "namespaces", at),
            clusters=_str_list(item, "clusters", at),
            manual_sync=_flag(item, "manualSync", at),
            time_zone=tz_name,
            use_and_operator=_flag(item, "andOperator", at),
            sync_overrun=_flag(item, "syncOverrun", at),
            description=str(item.get("description") or ""),
        )
        if not (window.applications or window.namespaces or window.clusters):
            raise ValueError(f"{at}: requires one of applications, namespaces or clusters")
        ident = (kind, schedule, duration_text)
        if ident in seen:
            raise ValueError(
                f"{at}: window {kind} {schedule!r} {duration_text} is defined more than once"
            )
        seen.add(ident)
        windows.append(window)
    return windows


def project_sync_windows(project: AppProject) -> list[SyncWindow]:
    """The project's sync windows, validated (see `parse_sync_windows`)."""
    spec = project.raw.get("spec") or {}
    if not isinstance(spec, dict):
        return []
    return parse_sync_windows(spec, where=f"{project_where(project)}.spec")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def window_opening(window: SyncWindow, now: datetime) -> datetime | None:
    """Start of the window's current opening: the latest firing t with t <= now < t + duration,
    schedule read on the window's time-zone wall clock; None when the window is closed."""
    now_utc = _aware(now)
    zone = _zone(window.time_zone)
    cron = parse_cron(window.schedule)
    span = timedelta(seconds=window.duration)
    slack = zone_slack(zone)
    local_now = now_utc.astimezone(zone).replace(tzinfo=None)
    earliest = (now_utc - span).astimezone(zone).replace(tzinfo=None) - slack
    best: datetime | None = None
    best_wall: datetime | None = None
    for wall in cron.walk(local_now + slack, backward=True):
        if wall < earliest or (best_wall is not None and wall < best_wall - slack):
            break
        for t in instants(wall, zone):
            if t <= now_utc < t + span and (best is None or t > best):
                best, best_wall = t, wall
    return best


def window_active(window: SyncWindow, now: datetime) -> bool:
    """Whether the window is open at `now` (see `window_opening`)."""
    return window_opening(window, now) is not None


def window_next_opening(window: SyncWindow, now: datetime) -> datetime | None:
    """First firing strictly after `now` (None if none within five years)."""
    now_utc = _aware(now)
    zone = _zone(window.time_zone)
    cron = parse_cron(window.schedule)
    slack = zone_slack(zone)
    local_now = now_utc.astimezone(zone).replace(tzinfo=None)
    best: datetime | None = None
    best_wall: datetime | None = None
    for wall in cron.walk(local_now - slack, backward=False):
        if wall > local_now + NEXT_HORIZON or (best_wall is not None and wall > best_wall + slack):
            break
        for t in instants(wall, zone):
            if t > now_utc and (best is None or t < best):
                best, best_wall = t, wall
    return best


def window_applies(
    window: SyncWindow, *, app: str, namespace: str, cluster: str, server: str = ""
) -> bool:
    """Argo CD's `SyncWindows.Matches` for one window: globs (no negation) on the app name, the
    destination namespace, and the destination cluster name or server; OR-ed unless
    `andOperator`, where every non-empty selector must match."""

    def any_glob(patterns: tuple[str, ...], *values: str) -> bool:
        return any(glob_match(p, v) for p in patterns for v in values if v)

    by_app = any_glob(window.applications, app) if window.applications else None
    by_cluster = any_glob(window.clusters, cluster, server) if window.clusters else None
    by_ns = any(glob_match(p, namespace) for p in window.namespaces) if window.namespaces else None
    results = [r for r in (by_app, by_cluster, by_ns) if r is not None]
    if window.use_and_operator:
        return bool(results) and all(results)
    return any(results)


def windows_for_app(
    windows: Sequence[SyncWindow], *, app: str, namespace: str, cluster: str, server: str = ""
) -> list[SyncWindow]:
    """The windows that apply to one app (see `window_applies`)."""
    return [
        w
        for w in windows
        if window_applies(w, app=app, namespace=namespace, cluster=cluster, server=server)
    ]


def _local(when: datetime, window: SyncWindow) -> str:
    return when.astimezone(_zone(window.time_zone)).isoformat()


def _verdict(
    windows: Sequence[SyncWindow], now: datetime, manual: bool
) -> tuple[bool, str, list[SyncWindow]]:
    """CanSync on already-matched windows: (allowed, reason, windows that decided a block)."""
    if not windows:
        return True, "no sync windows apply", []
    openings = [(w, window_opening(w, now)) for w in windows]
    active_denies = [(w, t) for w, t in openings if w.kind is WindowKind.DENY and t]
    if active_denies:
        denies = [w for w, _ in active_denies]
        if manual and all(w.manual_sync for w in denies):
            return True, f"manual sync permitted during {denies[0]} (manualSync)", []
        w, opened = active_denies[0]
        end = opened + timedelta(seconds=w.duration)
        extra = "" if not manual else " and manual sync is not enabled on it"
        return False, f"sync blocked by active {w} until {_local(end, w)}{extra}", denies
    active_allows = [w for w, t in openings if w.kind is WindowKind.ALLOW and t]
    if active_allows:
        return True, f"sync permitted by active {active_allows[0]}", []
    inactive_allows = [w for w in windows if w.kind is WindowKind.ALLOW]
    if inactive_allows:
        if manual and all(w.manual_sync for w in inactive_allows):
            return True, "manual sync permitted outside allow windows (manualSync)", []
        upcoming = [(window_next_opening(w, now), w) for w in inactive_allows]
        dated = sorted(((t, w) for t, w in upcoming if t is not None), key=lambda p: p[0])
        if dated:
            t, w = dated[0]
            when = f"; next {w} opens at {_local(t, w)}"
        else:
            when = ""
        return False, f"sync blocked: no allow window is active{when}", inactive_allows
    return True, "no active deny window and no allow windows", []


def sync_allowed(
    windows: Sequence[SyncWindow],
    *,
    app: str,
    namespace: str,
    cluster: str,
    now: datetime,
    manual: bool,
    server: str = "",
    started_at: datetime | None = None,
) -> tuple[bool, str]:
    """Argo CD's `CanSync` for one app: (allowed, reason naming the deciding window).

    Windows apply when `window_applies`; an active deny blocks unless the sync is manual and
    every active deny has manualSync; otherwise an active allow permits; otherwise existing
    allow windows block unless manual and every one has manualSync. `started_at` is when a
    running operation began: it may continue if it was permitted then and every window that
    now blocks it has syncOverrun (deny windows that opened since, or allow windows that
    were open at the start and have closed).
    """
    matched = windows_for_app(windows, app=app, namespace=namespace, cluster=cluster, server=server)
    allowed, reason, blockers = _verdict(matched, now, manual)
    if allowed or started_at is None:
        return allowed, reason
    was_allowed, _, _ = _verdict(matched, started_at, manual)
    if not was_allowed:
        return allowed, reason
    if blockers[0].kind is WindowKind.ALLOW:
        blockers = [w for w in blockers if window_active(w, started_at)]
    if blockers and all(w.sync_overrun for w in blockers):
        return True, f"{reason}; the running sync continues (syncOverrun)"
    return allowed, reason
