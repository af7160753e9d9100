"""Which member reconciles which app (pure).

- `rendezvous` (default): highest random weight hashing of (member, app). Every member computes
  the same owner from the same member list, and when a member joins or leaves only the apps it
  gains or held move: about 1/N of them, the least any assignment can move.
- `legacy` and `round-robin`: Argo CD's cluster sharding, where all apps of a destination
  cluster go to one member. `legacy` is FNV-32a of the cluster's id modulo the member count;
  `round-robin` numbers the clusters in sorted order and deals them out.
- A pin (the Application annotation `gitopsd.io/shard: <member id>`) wins while that member is
  alive; otherwise the app falls back to the algorithm, so a pin never orphans an app.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALGORITHMS = ("rendezvous", "legacy", "round-robin")
PIN_ANNOTATION = "gitopsd.io/shard"


@dataclass(frozen=True, slots=True)
class AppRef:
    """What sharding needs of an app: its name, destination cluster and pin."""

    name: str
    cluster: str = ""
    pin: str = ""


def _weight(member: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest())


def rendezvous(key: str, members: Sequence[str]) -> str:
    """The member with the highest weight for `key`."""
    return max(members, key=lambda m: (_weight(m, key), m))


def fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def assign(
    apps: Sequence[AppRef], members: Sequence[str], algorithm: str = "rendezvous"
) -> dict[str, str]:
    """The owner of every app among the live `members` ({} when there is none)."""
    live = sorted(set(members))
    if not live:
        return {}
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown sharding algorithm {algorithm!r}")
    clusters = sorted({a.cluster for a in apps})
    out: dict[str, str] = {}
    for app in apps:
        if app.pin and app.pin in live:
            out[app.name] = app.pin
        elif algorithm == "rendezvous":
            out[app.name] = rendezvous(app.name, live)
        elif algorithm == "legacy":
            out[app.name] = live[fnv32a(app.cluster) % len(live)]
        else:
            out[app.name] = live[clusters.index(app.cluster) % len(live)]
    return out


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """Apps whose owner changed."""
    return {a for a in after if before.get(a) != after[a]}
