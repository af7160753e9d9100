"""Names derived from an app's name (Lease, state ConfigMap, inventory, files) that are always
within their limit and never shared by two apps.

Truncation alone makes two long names that share a beginning one name (one app then shows the
other's history, or two apps share one claim); substituting characters does the same for
`a_b` and `a-b`. So whenever the name had to change, a hash of the exact name is appended. A
name that fits as it is stays as it is (existing objects keep their names). Pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

OBJECT_NAME_MAX = 253  # a Kubernetes object name (DNS subdomain)
FILE_STEM_MAX = 180  # leaves room for suffixes and temp-file decorations within NAME_MAX 255
_OBJECT_UNSAFE = re.compile(r"[^a-z0-9.-]")
_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
DIGEST = 10
# The object names derived from an app's name (its claim Lease, state ConfigMap, inventory).
APP_LEASE_PREFIX = "gitopsd-app."
STATE_PREFIX = "gitopsd-state."
INVENTORY_PREFIX = "gitopsd-inventory."


def _derived(name: str, safe: str, prefix: str, limit: int) -> str:
    if safe == name and len(prefix) + len(safe) <= limit:
        return prefix + safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST]
    room = max(0, limit - len(prefix) - DIGEST - 1)
    head = safe[:room].rstrip(".-_")
    return f"{prefix}{head}-{digest}" if head else f"{prefix}{digest}"


def object_name(prefix: str, name: str, *, limit: int = OBJECT_NAME_MAX) -> str:
    """`prefix` + `name` as a Kubernetes object name: lower case, `[a-z0-9.-]`, at most
    `limit` characters, distinct for distinct names."""
    return _derived(name, _OBJECT_UNSAFE.sub("-", name.lower()), prefix, limit)


def file_stem(name: str, *, limit: int = FILE_STEM_MAX) -> str:
    """`name` as a file name stem: `[A-Za-z0-9._-]`, no leading dot, at most `limit`
    characters, distinct for distinct names."""
    safe = _FILE_UNSAFE.sub("_", name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return _derived(name, safe, "", limit)


def clashes(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of different app names that would derive one object or file name. A name that
    fits is kept as it is, so an app named exactly like another's hashed form would share its
    Lease, state and inventory: such a pair is refused, not run."""
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for name in sorted(set(names)):
        derived = [object_name(p, name) for p in (APP_LEASE_PREFIX, STATE_PREFIX, INVENTORY_PREFIX)]
        for key in {*derived, "file:" + file_stem(name)}:
            other = seen.setdefault(key, name)
            if other != name and (other, name) not in out:
                out.append((other, name))
    return out
