"""Ownership: Argo CD's tracking-id annotation, and the inventory of what an app owns.

The tracking id is `<app>:<group>/<kind>:<namespace>/<name>`. An object belongs to an app only
when its tracking id names the app AND the object itself (a copied annotation does not make an
object prunable). Pure functions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from daemon.model import ANN_TRACKING_ID, Body, ResourceKey, annotations_of


@dataclass(frozen=True, slots=True)
class TrackingId:
    """A parsed tracking id."""

    app: str
    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.app}:{self.group}/{self.kind}:{self.namespace}/{self.name}"


def build(app: str, key: ResourceKey, *, namespaced: bool, dest_namespace: str) -> str:
    """The tracking id gitopsd writes on `key` for `app`."""
    ns = key.namespace if namespaced else dest_namespace
    return str(TrackingId(app, key.group, key.kind, ns, key.name))


def parse(value: str) -> TrackingId | None:
    """Parse a tracking id; None when malformed."""
    parts = value.split(":", 2)
    if len(parts) != 3:
        return None
    app, gk, nsn = parts
    group, sep1, kind = gk.partition("/")
    ns, sep2, name = nsn.partition("/")
    if not sep1 or not sep2 or not app or not kind or not name or "/" in kind or "/" in name:
        return None
    return TrackingId(app, group, kind, ns, name)


def owner_of(body: Body) -> str | None:
    """The app named by an object's tracking id, if any."""
    value = annotations_of(body).get(ANN_TRACKING_ID)
    tid = parse(value) if value else None
    return tid.app if tid else None


def is_owned_by(body: Body, app: str, *, namespaced: bool) -> bool:
    """True when `body` carries a tracking id naming `app` and the object itself."""
    value = annotations_of(body).get(ANN_TRACKING_ID)
    tid = parse(value) if value else None
    if tid is None or tid.app != app:
        return False
    key = ResourceKey.of(body)
    if (tid.group, tid.kind, tid.name) != (key.group, key.kind, key.name):
        return False
    # Cluster-scoped objects carry the app's destination namespace, which says nothing about
    # the object; only namespaced ones must match.
    return not namespaced or tid.namespace == key.namespace


def with_tracking(body: Body, tracking_id: str) -> Body:
    """A copy of `body` carrying the tracking annotation."""
    out = dict(body)
    meta = dict(out.get("metadata") or {})
    anns = dict(meta.get("annotations") or {})
    anns[ANN_TRACKING_ID] = tracking_id
    meta["annotations"] = anns
    out["metadata"] = meta
    return out


def fingerprint(body: Body) -> str:
    """Stable hash of a manifest as gitopsd would send it."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


def manager_fields(live: Body, manager: str) -> str:
    """Hash of the fields `manager` owns (Apply, or Update for Replace=true writes); it changes
    when anyone takes one of them over."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    owned = [
        [e.get("operation"), e.get("fieldsV1")]
        for e in entries
        if isinstance(e, dict)
        and e.get("manager") == manager
        and e.get("operation") in ("Apply", "Update")
        and not e.get("subresource")
    ]
    if not owned:
        return ""
    return hashlib.sha256(json.dumps(owned, sort_keys=True).encode()).hexdigest()[:32]


def key_to_str(key: ResourceKey) -> str:
    """Inventory entry for a key: `group|kind|namespace|name`."""
    return f"{key.group}|{key.kind}|{key.namespace}|{key.name}"


def key_from_str(value: str) -> ResourceKey | None:
    """Parse an inventory entry."""
    parts = value.split("|")
    if len(parts) != 4 or not parts[1] or not parts[3]:
        return None
    return ResourceKey(*parts)
