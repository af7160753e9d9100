"""Kubernetes label selectors in their string form (`app=web,tier!=db,env in (a,b),!legacy`),
as `kubectl -l` and `argocd app list -l` take them.

Hand-written: the grammar is five operators, and the Kubernetes Python clients only pass
the string to the API server, which is not who filters here (the daemon's own app list).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*$")
_EQ = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One clause: key, operator (=, !=, in, notin, exists, !exists) and values."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy this clause (Kubernetes semantics: != and notin also
        match objects without the key)."""
        have = self.key in labels
        if self.op == "exists":
            return have
        if self.op == "!exists":
            return not have
        if self.op in ("=", "in"):
            return have and labels[self.key] in self.values
        return not have or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """Every clause must hold; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy every clause."""
        return all(r.matches(labels) for r in self.requirements)


def _clauses(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def parse_selector(text: str) -> Selector:
    """A selector from its string form; ValueError naming the clause that does not parse."""
    if not text.strip():
        return Selector()
    reqs = []
    for clause in _clauses(text):
        if m := _SET.match(clause):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            reqs.append(Requirement(m["key"], "in" if m["op"] == "in" else "notin", values))
        elif m := _EQ.match(clause):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(Requirement(m["key"], op, frozenset({m["value"]})))
        elif m := _EXISTS.match(clause):
            reqs.append(Requirement(m["key"], "!exists" if m["neg"] else "exists"))
        else:
            raise ValueError(f"cannot parse {clause.strip()!r}")
    return Selector(tuple(reqs))
