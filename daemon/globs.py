"""The two pattern dialects Argo CD matches AppProject rules with, compiled to Python regexes.

gobwas/glob (sourceRepos, destinations, sync-window selectors, RBAC objects): `*`, `**`, `?`,
`[...]` / `[!...]`, `{a,b}`, optional separators that `*` does not cross. Go's
`path/filepath.Match` (resource white/blacklists): `*`, `?`, `[...]` / `[^...]`, `\\` escapes.
Hand-written on purpose: no maintained Python library implements either dialect exactly
(fnmatch and wcmatch differ on separators, `**`, negated classes and bad-pattern errors), and a
project rule that matches differently from Argo CD's is a security difference.
"""

from __future__ import annotations

import functools
import re


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


def filepath_match(pattern: str, value: str) -> bool:
    compiled = _filepath_regex(pattern)
    return compiled is not None and compiled.fullmatch(value) is not None
