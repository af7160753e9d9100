"""Go's `time.ParseDuration` format (`90s`, `1h30m`, `1.5h`, `250ms`), as Argo CD and the settings
file write durations.

Hand-written: the grammar is a dozen lines and must match Go's exactly; the Python duration
parsers read other dialects (ISO 8601, "1 hour") and would accept what Argo CD refuses.
"""

from __future__ import annotations

import re


def format_duration(seconds: float) -> str:
    """Seconds as a Go duration string (`1h30m`, `45s`)."""
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
