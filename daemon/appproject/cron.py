"""Sync-window schedules: Argo CD's five-field cron dialect, walked with croniter.

Argo CD parses schedules with robfig/cron's standard parser (minute hour day-of-month month
day-of-week; no descriptors, no seconds, day-of-week 0-6, `N/step` meaning `N-max/step`, a range
must not run backwards). croniter accepts more than that (descriptors, a 7 for Sunday, wrapping
ranges), so `parse_cron` checks the dialect first and says what is wrong; croniter then expands
the fields and walks the calendar. Day matching keeps robfig's rule: with both day fields
restricted a day matching either fires, with one written as `*`/`?` both must match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from croniter import CroniterBadDateError, croniter

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DOWS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DOWS),
)
_PART = re.compile(r"^(?P<range>[^/]*)(?:/(?P<step>.*))?$")


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed five-field schedule; `*_star` mark day fields written as `*`/`?` (robfig's
    starBit), which decides whether the two day fields are OR-ed or AND-ed."""

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

    def walk(self, start: datetime, *, backward: bool) -> Iterator[datetime]:
        """Naive wall-clock minutes matching the schedule from `start` (included) onwards, or
        backwards; ends where croniter finds no further match."""
        expr, day_or = _expression(self)
        minute = start.replace(second=0, microsecond=0)
        origin = minute + timedelta(minutes=1) if backward else minute - timedelta(minutes=1)
        it = croniter(expr, origin, day_or=day_or)
        while True:
            try:
                yield it.get_prev(datetime) if backward else it.get_next(datetime)
            except CroniterBadDateError:
                return


@functools.lru_cache(maxsize=512)
def _expression(cron: CronSchedule) -> tuple[str, bool]:
    """The schedule as a croniter expression with explicit lists, and croniter's day_or.

    croniter decides OR/AND from its own view of which day fields are `*`; spelling the
    fields out makes it follow robfig's star bits instead."""

    def spell(values: frozenset[int]) -> str:
        return ",".join(str(v) for v in sorted(values))

    full_days, full_weekdays = len(cron.days) == 31, len(cron.weekdays) == 7
    if cron.days_star or cron.weekdays_star:
        dom = "*" if cron.days_star or full_days else spell(cron.days)
        dow = "*" if cron.weekdays_star or full_weekdays else spell(cron.weekdays)
        day_or = False
    elif full_days or full_weekdays:
        dom, dow, day_or = "*", "*", False  # either field alone matches every day
    else:
        dom, dow, day_or = spell(cron.days), spell(cron.weekdays), True
    fields = (spell(cron.minutes), spell(cron.hours), dom, spell(cron.months), dow)
    return " ".join(fields), day_or


def _value(text: str, names: Mapping[str, int], field: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number or name")
    return int(text)


def _check_part(part: str, field: str, lo: int, hi: int, names: Mapping[str, int]) -> bool:
    """Validate one comma-separated part in robfig's dialect; True when it is a bare star."""
    m = _PART.match(part)
    if m is None or "/" in (m.group("step") or ""):
        raise ValueError(f"{field}: too many slashes in {part!r}")
    bounds = m.group("range").split("-")
    step_text = m.group("step")
    if bounds[0] in ("*", "?"):
        if len(bounds) > 1:
            raise ValueError(f"{field}: {part!r} mixes '*' and a range")
        start, end = lo, hi
    elif len(bounds) > 2:
        raise ValueError(f"{field}: too many hyphens in {part!r}")
    else:
        start = _value(bounds[0], names, field)
        end = start if len(bounds) == 1 else _value(bounds[1], names, field)
    if step_text is not None:
        if not step_text.isdigit():
            raise ValueError(f"{field}: step {step_text!r} is not a number")
        if int(step_text) == 0:
            raise ValueError(f"{field}: step must be positive in {part!r}")
    if start < lo:
        raise ValueError(f"{field}: {start} is below the minimum {lo} in {part!r}")
    if end > hi:
        raise ValueError(f"{field}: {end} is above the maximum {hi} in {part!r}")
    if start > end:
        raise ValueError(f"{field}: range start {start} is after its end {end} in {part!r}")
    return bounds[0] in ("*", "?") and (step_text is None or int(step_text) <= 1)


def _robfig_expr(text: str, hi: int) -> str:
    """robfig reads `N/step` as `N-max/step`; croniter needs the range written out."""
    parts = []
    for part in text.split(","):
        head, slash, step = part.partition("/")
        if slash and "-" not in head and head not in ("*", "?"):
            part = f"{head}-{hi}/{step}"
        parts.append("*" if part == "?" else part)
    return ",".join(parts)


@functools.lru_cache(maxsize=512)
def parse_cron(spec: str) -> CronSchedule:
    """Parse `minute hour day-of-month month day-of-week` as Argo CD (robfig/cron) does.

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
    stars = []
    for part, (field, lo, hi, names) in zip(parts, _FIELDS, strict=True):
        stars.append(any([_check_part(p, field, lo, hi, names) for p in part.split(",")]))
    expr = " ".join(_robfig_expr(p, f[2]) for p, f in zip(parts, _FIELDS, strict=True))
    expanded, _ = croniter.expand(expr)
    sets = [
        frozenset(range(lo, hi + 1)) if values == ["*"] else frozenset(int(v) for v in values)
        for values, (_, lo, hi, _) in zip(expanded, _FIELDS, strict=True)
    ]
    minutes, hours, days, months, weekdays = sets
    return CronSchedule(
        minutes, hours, days, months, weekdays, days_star=stars[2], weekdays_star=stars[4]
    )


def instants(wall: datetime, zone: tzinfo) -> list[datetime]:
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
NEXT_HORIZON = timedelta(days=5 * 366)  # robfig gives up after five years too


def slack(zone: tzinfo) -> timedelta:
    """How far wall-clock order may disagree with instant order in `zone`."""
    return timedelta(0) if zone is UTC else _SLACK
