"""Ownership: Argo CD's resource tracking, and the inventory of what an app owns.

Argo CD's `application.resourceTrackingMethod`:
- `annotation` (the default): the tracking id `<app>:<group>/<kind>:<namespace>/<name>`; an
  object belongs to an app only when its tracking id names the app AND the object itself (a
  copied annotation does not make an object prunable);
- `label`: the `app.kubernetes.io/instance` label names the app (Argo CD's legacy method);
- `annotation+label`: the annotation decides, the label is also written (for tools that
  select by it).
Pure functions.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass

from daemon.model import ANN_TRACKING_ID, Body, ResourceKey, annotations_of

LABEL_INSTANCE = "app.kubernetes.io/instance"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class TrackingMethod(enum.StrEnum):
    """Argo CD's `application.resourceTrackingMethod`."""

    ANNOTATION = "annotation"
    LABEL = "label"
    ANNOTATION_LABEL = "annotation+label"

    @property
    def writes_label(self) -> bool:
        return self is not TrackingMethod.ANNOTATION

    @property
    def writes_annotation(self) -> bool:
        return self is not TrackingMethod.LABEL


def is_label_value(value: str) -> bool:
    """Whether `value` is a valid Kubernetes label value (at most 63 characters)."""
    return len(value) <= 63 and _LABEL_VALUE.match(value) is not None


def label_value(app: str) -> str:
    """`app` as the instance label value; ValueError when the name cannot be one (label
    tracking needs app names of at most 63 characters, as in Argo CD)."""
    if not is_label_value(app):
        raise ValueError(
            f"application name {app!r} cannot be a label value (at most 63 characters); "
            "label tracking needs a shorter name"
        )
    return app


def _labels_of(body: Body) -> dict[str, str]:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


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


def owner_of(body: Body, method: TrackingMethod = TrackingMethod.ANNOTATION) -> str | None:
    """The app an object is tracked by, if any."""
    if method is TrackingMethod.LABEL:
        return _labels_of(body).get(LABEL_INSTANCE)
    value = annotations_of(body).get(ANN_TRACKING_ID)
    tid = parse(value) if value else None
    return tid.app if tid else None


def is_owned_by(
    body: Body,
    app: str,
    *,
    namespaced: bool,
    method: TrackingMethod = TrackingMethod.ANNOTATION,
) -> bool:
    """True when `body` is tracked by `app`: its tracking id names `app` and the object itself
    (or, with label tracking, its instance label names `app`)."""
    if method is TrackingMethod.LABEL:
        return _labels_of(body).get(LABEL_INSTANCE) == app
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


def with_tracking(
    body: Body, tracking_id: str, method: TrackingMethod = TrackingMethod.ANNOTATION
) -> Body:
    """A copy of `body` tracked as `tracking_id` says, by annotation and/or label."""
    out = dict(body)
    meta = dict(out.get("metadata") or {})
    if method.writes_annotation:
        anns = dict(meta.get("annotations") or {})
        anns[ANN_TRACKING_ID] = tracking_id
        meta["annotations"] = anns
    if method.writes_label:
        labels = dict(meta.get("labels") or {})
        labels[LABEL_INSTANCE] = label_value(tracking_id.split(":", 1)[0])
        meta["labels"] = labels
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
