"""AppProject rules as Argo CD applies them: which repositories, destinations and kinds a project
permits, when its sync windows let an app sync, and what its roles let a group do.

Pure: no I/O and no clock (callers pass `now`). Pattern dialects follow Argo CD exactly:
gobwas/glob for sourceRepos, destinations, sync-window selectors and RBAC objects; Go's
`path/filepath.Match` for resource white/blacklists; robfig/cron's five-field parser for windows.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.settings import AppProject

__all__ = [
    "PROJECT_ACTIONS",
    "PROJECT_RESOURCES",
    "CronSchedule",
    "Effect",
    "Policy",
    "Role",
    "SyncWindow",
    "Violation",
    "WindowKind",
    "authorize",
    "check_destination",
    "check_resource",
    "check_source",
    "glob_match",
    "normalize_git_url",
    "parse_cron",
    "parse_go_duration",
    "parse_policy",
    "parse_roles",
    "parse_sync_windows",
    "project_sync_windows",
    "project_where",
    "sync_allowed",
    "window_active",
    "window_applies",
    "window_next_opening",
    "window_opening",
    "windows_for_app",
]

# --- violations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a project refuses something: the spec field (`rule`), what was refused, a sentence."""

    rule: str
    subject: str
    message: str

    def __str__(self) -> str:
        return self.message


# --- pattern dialects ----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _gobwas_regex(pattern: str, separators: str) -> re.Pattern[str] | None:
    """gobwas/glob compiled to a regex; None when gobwas would refuse to compile it."""
    one = f"[^{re.escape(separators)}]" if separators else "."
    out: list[str] = []
    depth = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                out.append(".*")  # `**` crosses separators
                i += 2
            else:
                out.append(one + "*")
                i += 1
            continue
        if c == "?":
            out.append(one)
        elif c == "[":
            end = _char_class(pattern, i + 1, negation="!")
            if end is None:
                return None
            out.append(end[0])
            i = end[1]
            continue
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "," and depth:
            out.append("|")
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        return None
    return re.compile("".join(out), re.DOTALL)


def _char_class(pattern: str, start: int, *, negation: str) -> tuple[str, int] | None:
    """Translate `[...]` whose body begins at `start`; returns (regex, index after `]`)."""
    i, n = start, len(pattern)
    negate = i < n and pattern[i] == negation
    if negate:
        i += 1
    parts: list[str] = []
    while i < n and pattern[i] != "]":
        lo = pattern[i]
        if lo == "\\":
            if i + 1 >= n:
                return None
            lo = pattern[i + 1]
            i += 1
        if i + 2 < n and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            hi = pattern[i + 2]
            if hi == "\\":
                if i + 3 >= n:
                    return None
                hi = pattern[i + 3]
                i += 1
            if lo > hi:
                return None
            parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 3
        else:
            parts.append(re.escape(lo))
            i += 1
    if i >= n or not parts:
        return None
    return f"[{'^' if negate else ''}{''.join(parts)}]", i + 1


def glob_match(pattern: str, value: str, *, separators: str = "", negation: bool = False) -> bool:
    """Argo CD's `globMatch`: `!p` inverts `p` when negation is allowed; `*` matches anything."""
    if negation and pattern.startswith("!"):
        compiled = _gobwas_regex(pattern[1:], separators)
        return not (compiled is not None and compiled.fullmatch(value) is not None)
    if pattern == "*":
        return True
    compiled = _gobwas_regex(pattern, separators)
    return compiled is not None and compiled.fullmatch(value) is not None


@functools.lru_cache(maxsize=1024)
def _filepath_regex(pattern: str) -> re.Pattern[str] | None:
    """Go `path/filepath.Match` compiled to a regex; None for ErrBadPattern."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            if i + 1 < n and pattern[i + 1] in "-]":
                return None
            cls = _char_class(pattern, i + 1, negation="^")
            if cls is None:
                return None
            out.append(cls[0])
            i = cls[1]
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _filepath_match(pattern: str, value: str) -> bool:
    compiled = _filepath_regex(pattern)
    return compiled is not None and compiled.fullmatch(value) is not None


# --- sources -------------------------------------------------------------------------------

_SSH_URL = re.compile(r"^(ssh://)?([^/:]*?)@[^@]+$")
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


def normalize_git_url(url: str) -> str:
    """Argo CD's `git.NormalizeGitURL`: lowercase, trimmed, no `.git`, scp form as `user@host/path`.

    `git@github.com:org/repo.git` becomes `git@github.com/org/repo` (the user stays, only the
    `ssh://` scheme is dropped). Returns "" where Go's url.Parse fails (control characters, bad
    percent escapes).
    """
    repo = url.strip().lower()
    if _SSH_URL.match(repo) and not repo.startswith("ssh://"):
        repo = "ssh://" + repo.replace(":", "/", 1)
    repo = repo.removesuffix(".git")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in repo) or _BAD_ESCAPE.search(repo):
        return ""
    return repo.removeprefix("ssh://")


def check_source(project: AppProject, repo_url: str) -> Violation | None:
    """Whether `repo_url` is permitted by the project's `sourceRepos` (None = permitted).

    A `!pattern` whose body matches denies at once; a `!pattern` that does not match counts as
    a match, so `['!x']` alone permits every other repository (Argo CD's behaviour).
    """
    src = normalize_git_url(repo_url)
    any_matched = False
    for raw in project.source_repos:
        deny = raw.startswith("!")
        pattern = "!" + normalize_git_url(raw[1:]) if deny else normalize_git_url(raw)
        if glob_match(pattern, src, separators="/", negation=True):
            any_matched = True
        elif deny:
            return Violation(
                "sourceRepos",
                repo_url,
                f"repository {repo_url} is denied by sourceRepos entry {raw!r} "
                f"in project {project.name}",
            )
    if any_matched:
        return None
    return Violation(
        "sourceRepos",
        repo_url,
        f"repository {repo_url} is not permitted in project {project.name} (sourceRepos)",
    )


# --- destinations --------------------------------------------------------------------------


def _destination_denied_by(project: AppProject, server: str, name: str, namespace: str) -> str:
    """'' when permitted, else a description of why (Argo CD's `isDestinationMatched`)."""
    any_matched = False
    for item in project.destinations:
        p_server, p_name, p_ns = (
            item.get("server", ""),
            item.get("name", ""),
            item.get("namespace", ""),
        )
        name_ok = name != "" and glob_match(p_name, name, negation=True)
        server_ok = server != "" and glob_match(p_server, server, negation=True)
        ns_ok = glob_match(p_ns, namespace, negation=True)
        if (server_ok or name_ok) and ns_ok:
            any_matched = True
        elif (
            (not name_ok and p_name.startswith("!"))
            or (not server_ok and p_server.startswith("!") and ns_ok)
            or (not ns_ok and p_ns.startswith("!") and server_ok)
        ):
            shown = ", ".join(f"{k}: {v}" for k, v in item.items())
            return f"is denied by destinations entry {{{shown}}}"
    return "" if any_matched else "is not permitted"


def _cluster_label(server: str, name: str) -> str:
    if name and server:
        return f"{name} ({server})"
    return name or server


def check_destination(
    project: AppProject, *, server: str, name: str, namespace: str
) -> Violation | None:
    """Whether the app destination is permitted by `destinations` (None = permitted).

    Pass both `server` and `name` of the resolved cluster (as Argo CD's controller does); an
    entry matches when its server or its name matches and its namespace matches.
    """
    why = _destination_denied_by(project, server, name, namespace)
    if not why:
        return None
    cluster = _cluster_label(server, name)
    return Violation(
        "destinations",
        f"{name or server}/{namespace}",
        f"destination namespace {namespace!r} on cluster {cluster} {why} "
        f"in project {project.name} (destinations)",
    )


# --- resources -----------------------------------------------------------------------------


def _in_list(entries: Sequence[Mapping[str, str]], group: str, kind: str, name: str | None) -> bool:
    """Whether an entry matches; `name=None` ignores entry names (namespace lists are
    GroupKind-only)."""
    for item in entries:
        if not _filepath_match(item.get("kind", ""), kind):
            continue
        if not _filepath_match(item.get("group", ""), group):
            continue
        wanted = item.get("name", "")
        if name is None or wanted == "" or _filepath_match(wanted, name):
            return True
    return False


def check_resource(
    project: AppProject,
    *,
    group: str,
    kind: str,
    name: str = "",
    namespace: str,
    namespaced: bool,
    server: str,
    cluster_name: str,
) -> Violation | None:
    """Whether the project permits one resource (None = permitted).

    Cluster-scoped kinds need a clusterResourceWhitelist match (empty list: nothing) and no
    clusterResourceBlacklist match; entries with `name` also match the resource `name`.
    Namespaced kinds pass namespaceResourceWhitelist (None: all; empty: nothing) minus the
    blacklist, and their `namespace` (already defaulted to the app's) must be permitted by
    `destinations` on the app's cluster (`server`, `cluster_name`): the destination check is
    folded in here, so callers need no second call.
    """
    key = f"{kind}/{namespace}/{name}" if namespaced and namespace else f"{kind}/{name}"
    subject = key if name else kind
    if namespaced:
        white: Sequence[Mapping[str, str]] | None = project.namespace_resource_whitelist
        black: Sequence[Mapping[str, str]] = project.namespace_resource_blacklist
        lists = ("namespaceResourceWhitelist", "namespaceResourceBlacklist")
        whitelisted = white is None or _in_list(white, group, kind, None)
        blacklisted = _in_list(black, group, kind, None)
    else:
        lists = ("clusterResourceWhitelist", "clusterResourceBlacklist")
        whitelisted = _in_list(project.cluster_resource_whitelist, group, kind, name)
        blacklisted = _in_list(project.cluster_resource_blacklist, group, kind, name)
    if not whitelisted or blacklisted:
        rule = lists[0] if not whitelisted else lists[1]
        return Violation(
            rule,
            subject,
            f"resource {group}:{kind} ({subject}) is not permitted in project "
            f"{project.name} ({rule})",
        )
    if namespaced:
        why = _destination_denied_by(project, server, cluster_name, namespace)
        if why:
            cluster = _cluster_label(server, cluster_name)
            return Violation(
                "destinations",
                subject,
                f"namespace {namespace!r} of {subject} on cluster {cluster} {why} "
                f"in project {project.name} (destinations)",
            )
    return None


# --- cron ----------------------------------------------------------------------------------

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DOWS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DOWS),
)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed five-field schedule; `*_star` mark fields written as `*`/`?` (robfig's starBit)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool

    def day_matches(self, when: datetime) -> bool:
        """Month and day test; day-of-month OR day-of-week when both are restricted (Vixie)."""
        if when.month not in self.months:
            return False
        dom = when.day in self.days
        dow = (when.weekday() + 1) % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime) -> bool:
        """Whether the schedule fires at the wall-clock minute of `when`."""
        return when.minute in self.minutes and when.hour in self.hours and self.day_matches(when)


def _cron_value(text: str, names: Mapping[str, int], field: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number or name")
    return int(text)


def _cron_field(
    expr: str, field: str, lo: int, hi: int, names: Mapping[str, int]
) -> tuple[set[int], bool]:
    values: set[int] = set()
    star = False
    for part in expr.split(","):
        range_step = part.split("/")
        if len(range_step) > 2:
            raise ValueError(f"{field}: too many slashes in {part!r}")
        bounds = range_step[0].split("-")
        single = len(bounds) == 1
        part_star = False
        if bounds[0] in ("*", "?"):
            if not single:
                raise ValueError(f"{field}: {part!r} mixes '*' and a range")
            start, end, part_star = lo, hi, True
        elif len(bounds) > 2:
            raise ValueError(f"{field}: too many hyphens in {part!r}")
        else:
            start = _cron_value(bounds[0], names, field)
            end = start if single else _cron_value(bounds[1], names, field)
        step = 1
        if len(range_step) == 2:
            if not range_step[1].isdigit():
                raise ValueError(f"{field}: step {range_step[1]!r} is not a number")
            step = int(range_step[1])
            if single:
                end = hi  # robfig: "N/step" means "N-max/step"
            if step > 1:
                part_star = False
        if start < lo:
            raise ValueError(f"{field}: {start} is below the minimum {lo} in {part!r}")
        if end > hi:
            raise ValueError(f"{field}: {end} is above the maximum {hi} in {part!r}")
        if start > end:
            raise ValueError(f"{field}: range start {start} is after its end {end} in {part!r}")
        if step == 0:
            raise ValueError(f"{field}: step must be positive in {part!r}")
        values.update(range(start, end + 1, step))
        star = star or part_star
    return values, star


@functools.lru_cache(maxsize=512)
def parse_cron(spec: str) -> CronSchedule:
    """Parse `minute hour day-of-month month day-of-week` as robfig/cron's standard parser does.

    Supports `*`, `?`, lists, ranges, steps and JAN-DEC / SUN-SAT names; day-of-week is 0-6.
    Descriptors (`@daily`) and `TZ=` prefixes are refused, as in Argo CD's parser options.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty schedule")
    if text.startswith("@"):
        raise ValueError(f"descriptors such as {text.split()[0]!r} are not accepted; use 5 fields")
    if text.startswith(("TZ=", "CRON_TZ=")):
        raise ValueError("a TZ= prefix is not accepted; set timeZone on the window instead")
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"expected exactly 5 fields (minute hour day-of-month month day-of-week), "
            f"found {len(parts)}: {spec!r}"
        )
    parsed = [_cron_field(p, *meta) for p, meta in zip(parts, _CRON_FIELDS, strict=True)]
    return CronSchedule(
        minutes=frozenset(parsed[0][0]),
        hours=frozenset(parsed[1][0]),
        days=frozenset(parsed[2][0]),
        months=frozenset(parsed[3][0]),
        weekdays=frozenset(parsed[4][0]),
        days_star=parsed[2][1],
        weekdays_star=parsed[4][1],
    )


def _minute_floor(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def _matches_backward(cron: CronSchedule, start: datetime, stop: datetime) -> Iterator[datetime]:
    """Naive wall-clock minutes matching `cron`, from `start` down to `stop`, skipping whole
    days and hours that cannot match."""
    minutes_desc = sorted(cron.minutes, reverse=True)
    t = _minute_floor(start)
    while t >= stop:
        if not cron.day_matches(t):
            t = datetime.combine(t.date(), time(23, 59)) - timedelta(days=1)
        elif t.hour not in cron.hours:
            t = t.replace(minute=59) - timedelta(hours=1)
        else:
            m = next((m for m in minutes_desc if m <= t.minute), None)
            if m is None:
                t = t.replace(minute=59) - timedelta(hours=1)
                continue
            t = t.replace(minute=m)
            if t >= stop:
                yield t
            t -= timedelta(minutes=1)


def _matches_forward(cron: CronSchedule, start: datetime, stop: datetime) -> Iterator[datetime]:
    """Naive wall-clock minutes matching `cron`, from `start` up to `stop`."""
    minutes_asc = sorted(cron.minutes)
    t = _minute_floor(start)
    while t <= stop:
        if not cron.day_matches(t):
            t = datetime.combine(t.date(), time(0, 0)) + timedelta(days=1)
        elif t.hour not in cron.hours:
            t = t.replace(minute=0) + timedelta(hours=1)
        else:
            m = next((m for m in minutes_asc if m >= t.minute), None)
            if m is None:
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            t = t.replace(minute=m)
            if t <= stop:
                yield t
            t += timedelta(minutes=1)


def _instants(wall: datetime, zone: tzinfo) -> list[datetime]:
    """UTC instants at which wall-clock `wall` occurs in `zone`: none in a DST gap, two in an
    overlap."""
    found: list[datetime] = []
    for fold in (0, 1):
        aware = wall.replace(tzinfo=zone, fold=fold)
        utc = aware.astimezone(UTC)
        if utc.astimezone(zone).replace(tzinfo=None) == wall and utc not in found:
            found.append(utc)
    return found


# Largest UTC offset change in any zone (DST or otherwise) bounds how far wall-clock order and
# instant order can disagree.
_SLACK = timedelta(hours=3)


def _slack(zone: tzinfo) -> timedelta:
    return timedelta(0) if zone is UTC else _SLACK


_NEXT_HORIZON = timedelta(days=5 * 366)  # robfig gives up after five years too


# --- sync windows --------------------------------------------------------------------------


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
            f"{self.kind} window {self.schedule!r} for {_format_duration(self.duration)}"
            f"{'' if self.time_zone == 'UTC' else f' ({self.time_zone})'}"
        )


def _format_duration(seconds: float) -> str:
    hours = int(seconds // 3600)
    minutes = int(seconds % 3600 // 60)
    rest = seconds - hours * 3600 - minutes * 60
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if minutes else ""
    text += f"{rest:g}s" if rest else ""
    return text or "0s"


_GO_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go `time.ParseDuration` string such as `1h30m`, `90s` or `1.5h`."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    if s.startswith(("-", "+")):
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _GO_DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            if re.match(r"\d*\.?\d*$", s[pos:]):
                raise ValueError(f"missing unit in duration {text!r} (examples: 30m, 1h30m)")
            raise ValueError(f"invalid duration {text!r} (examples: 30m, 1h30m)")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


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


def project_where(project: AppProject) -> str:
    """How errors name a project: `<file>: AppProject/<name>` (file omitted when unknown)."""
    return (
        f"{project.file}: AppProject/{project.name}"
        if project.file
        else f"AppProject/{project.name}"
    )


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
    slack = _slack(zone)
    local_now = now_utc.astimezone(zone).replace(tzinfo=None)
    earliest = (now_utc - span).astimezone(zone).replace(tzinfo=None) - slack
    best: datetime | None = None
    best_wall: datetime | None = None
    for wall in _matches_backward(cron, local_now + slack, earliest):
        if best_wall is not None and wall < best_wall - slack:
            break
        for t in _instants(wall, zone):
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
    slack = _slack(zone)
    local_now = now_utc.astimezone(zone).replace(tzinfo=None)
    best: datetime | None = None
    best_wall: datetime | None = None
    for wall in _matches_forward(cron, local_now - slack, local_now + _NEXT_HORIZON):
        if best_wall is not None and wall > best_wall + slack:
            break
        for t in _instants(wall, zone):
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


# --- roles and policies --------------------------------------------------------------------


class Effect(enum.StrEnum):
    """Outcome a policy line grants when it matches."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Policy:
    """One `p, proj:<project>:<role>, <resource>, <action>, <object>, <effect>` line."""

    subject: str
    resource: str
    action: str
    object: str
    effect: Effect

    def matches(self, *, resource: str, action: str, obj: str) -> bool:
        """Casbin's matcher with Argo CD's default glob mode (gobwas, no separators)."""
        return (
            glob_match(self.resource, resource)
            and glob_match(self.action, action)
            and glob_match(self.object, obj)
        )


@dataclass(frozen=True, slots=True)
class Role:
    """A project role: its policies and the groups bound to it."""

    project: str
    name: str
    policies: tuple[Policy, ...]
    groups: tuple[str, ...]
    description: str = ""

    @property
    def subject(self) -> str:
        """The casbin subject of the role."""
        return f"proj:{self.project}:{self.name}"


PROJECT_RESOURCES = frozenset(
    {"applications", "applicationsets", "repositories", "exec", "logs", "clusters"}
)
PROJECT_ACTIONS = frozenset(
    {"get", "create", "update", "delete", "sync", "override", "rollback", "*"}
)
# Unanchored, like Argo CD's MatchString on these patterns.
_ACTION_PATTERNS = (re.compile(r"action/.*"), re.compile(r"update/.*"), re.compile(r"delete/.*"))
_ROLE_NAME = re.compile(r"^[a-zA-Z0-9]([-_a-zA-Z0-9]*[a-zA-Z0-9])?$")
_GROUP_BAD = re.compile(r"[,\n\r\t]")


def parse_policy(line: str, *, project: str, role: str) -> Policy:
    """Validate one role policy line as Argo CD's `validatePolicy` does (ValueError if invalid).

    The subject must be this project's role and the object `<project>/<app>`,
    `<project>/<namespace>/<app>` or `<project>/*`, so a role cannot grant on other projects.
    """
    parts = [p.strip(" ") for p in line.split(",")]
    if len(parts) != 6 or parts[0] != "p":
        raise ValueError("must be of the form 'p, sub, res, act, obj, eft'")
    _, subject, resource, action, obj, effect = parts
    expected = f"proj:{project}:{role}"
    if subject != expected:
        raise ValueError(f"policy subject must be {expected!r}, not {subject!r}")
    if resource not in PROJECT_RESOURCES:
        allowed = ", ".join(sorted(PROJECT_RESOURCES))
        raise ValueError(f"project resource must be one of {allowed}, not {resource!r}")
    if action not in PROJECT_ACTIONS and not any(p.search(action) for p in _ACTION_PATTERNS):
        raise ValueError(f"invalid action {action!r}")
    obj_re = re.compile(rf"^{re.escape(project)}/[*\w\-.]+(/[*\w\-.]+)?$", re.ASCII)
    if not obj_re.match(obj):
        raise ValueError(
            f"object must be of form '{project}/*', '{project}/<APPNAME>' or "
            f"'{project}/<NAMESPACE>/<APPNAME>', not {obj!r}"
        )
    if effect not in ("allow", "deny"):
        raise ValueError(f"effect must be allow or deny, not {effect!r}")
    return Policy(subject, resource, action, obj, Effect(effect))


def parse_roles(project: AppProject) -> list[Role]:
    """The project's `spec.roles`, validated as Argo CD's ValidateProject does.

    Raises ValueError naming the project and role for a bad role name, a duplicate role,
    policy or group, an empty or malformed group, or an invalid policy line.
    """
    where = project_where(project)
    spec = project.raw.get("spec") or {}
    raw = spec.get("roles") if isinstance(spec, dict) else None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}.spec.roles: expected a list, got {type(raw).__name__}")
    roles: list[Role] = []
    for i, item in enumerate(raw):
        at = f"{where}.spec.roles[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{at}: expected a mapping, got {type(item).__name__}")
        name = str(item.get("name") or "")
        if not _ROLE_NAME.match(name):
            raise ValueError(
                f"{at}.name: invalid role name {name!r} in project {project.name}: use "
                "alphanumerics, '-' or '_', starting and ending with an alphanumeric"
            )
        at = f"{at} (role {name} of project {project.name})"
        if any(r.name == name for r in roles):
            raise ValueError(f"{at}: role {name!r} already exists")
        policies: list[Policy] = []
        lines = item.get("policies") or []
        if not isinstance(lines, list):
            raise ValueError(f"{at}.policies: expected a list of policy lines")
        for j, line in enumerate(lines):
            if not isinstance(line, str):
                raise ValueError(f"{at}.policies[{j}]: expected a string, got {line!r}")
            try:
                policy = parse_policy(line, project=project.name, role=name)
            except ValueError as e:
                raise ValueError(f"{at}.policies[{j}]: invalid policy rule {line!r}: {e}") from None
            if line in lines[:j]:
                raise ValueError(f"{at}.policies[{j}]: policy {line!r} already exists")
            policies.append(policy)
        groups = item.get("groups") or []
        if not isinstance(groups, list):
            raise ValueError(f"{at}.groups: expected a list of group names")
        for j, group in enumerate(groups):
            if not isinstance(group, str) or not group.strip():
                raise ValueError(f"{at}.groups[{j}]: group {group!r} is empty")
            if _GROUP_BAD.search(group):
                raise ValueError(f"{at}.groups[{j}]: group {group!r} contains invalid characters")
            if group in groups[:j]:
                raise ValueError(f"{at}.groups[{j}]: group {group!r} already exists")
        roles.append(
            Role(
                project=project.name,
                name=name,
                policies=tuple(policies),
                groups=tuple(groups),
                description=str(item.get("description") or ""),
            )
        )
    return roles


def authorize(
    projects: Sequence[AppProject],
    *,
    groups: Sequence[str],
    action: str,
    app_project: str,
    app_name: str,
    app_namespace: str = "",
    resource: str = "applications",
) -> bool:
    """Whether any of `groups` may do `action` on app `app_project/app_name` via project roles.

    Only the app's own project's roles count (Argo CD builds one enforcer per project). A
    group gets every policy of each role listing it; the request is allowed when some allow
    policy matches and no deny policy does. The object is `<project>/<app>`, or
    `<project>/<namespace>/<app>` when `app_namespace` is given (apps outside the control
    namespace). A project whose roles are invalid grants nothing, as Argo CD falls back to
    the global policy; validate with `parse_roles` when loading configuration.
    """
    wanted = set(groups)
    if not wanted:
        return False
    obj = (
        f"{app_project}/{app_namespace}/{app_name}"
        if app_namespace
        else f"{app_project}/{app_name}"
    )
    allowed = False
    for project in projects:
        if project.name != app_project:
            continue
        try:
            roles = parse_roles(project)
        except ValueError:
            continue
        for role in roles:
            if not wanted.intersection(role.groups):
                continue
            for policy in role.policies:
                if policy.matches(resource=resource, action=action, obj=obj):
                    if policy.effect is Effect.DENY:
                        return False
                    allowed = True
    return allowed
