"""Which notifications an app's new status calls for, as Argo CD's notifications engine decides.

Subscriptions come from the Application's annotations
(`notifications.argoproj.io/subscribe.<trigger>.<service>: recipient1;recipient2`, or
`subscribe.<service>` for the default triggers) and the ConfigMap's `subscriptions`. For each
(trigger condition, service, recipient) a notification is sent when the condition becomes true
and not again while it stays true; when it turns false the record is dropped so the next time
counts. With `oncePer`, the record is kept per value (one notification per revision, say). The
records live in the app's state, so a restart sends nothing twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.appset.template import TemplateError, render_template
from daemon.labels import parse_selector
from daemon.notify.config import Notifications
from daemon.rollouts.expr import ExprError, evaluate_in, value_in

ANNOTATION_PREFIX = "notifications.argoproj.io/subscribe."
MAX_ONCE_PER_RECORDS = 200
# Characters of one notification's rendered templates: app data (annotations, messages a
# tenant's objects produce) expanded by a template must not become a huge request or email.
MAX_RENDERED = 256 * 1024
# (trigger, service, recipient) subscriptions one app's annotations may make: annotations are
# written by whoever writes the app (a tenant's app-of-apps child, an ApplicationSet's
# generator), and each is a message through the operator's services on every state change.
MAX_ANNOTATION_SUBSCRIPTIONS = 64


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one notification goes."""

    service: str
    recipient: str


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification to deliver: rendered templates, for one destination."""

    app: str
    trigger: str
    destination: Destination
    templates: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to send, the new records, and what went wrong evaluating (logged, counted)."""

    send: tuple[Notification, ...]
    notified: dict[str, float]
    errors: tuple[str, ...]
    evaluated: tuple[tuple[str, bool], ...]  # (trigger, triggered) per evaluation


def subscriptions(
    cfg: Notifications,
    annotations: Mapping[str, str],
    labels: Mapping[str, str],
    errors: list[str] | None = None,
) -> list[tuple[str, Destination]]:
    """(trigger, destination) pairs the app is subscribed to; annotations make at most
    MAX_ANNOTATION_SUBSCRIPTIONS of them (the rest are reported in `errors`)."""
    out: list[tuple[str, Destination]] = []
    for key, value in annotations.items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        rest = key.removeprefix(ANNOTATION_PREFIX)
        trigger, _, service = rest.rpartition(".")
        triggers = [trigger] if trigger else list(cfg.default_triggers)
        recipients = [r.strip() for r in value.split(";") if r.strip()] or [""]
        out += [(t, Destination(service, r)) for t in triggers for r in recipients]
    out = list(dict.fromkeys(out))
    if len(out) > MAX_ANNOTATION_SUBSCRIPTIONS:
        if errors is not None:
            errors.append(
                f"the app's annotations subscribe {len(out)} (trigger, service, recipient) "
                f"destinations; only the first {MAX_ANNOTATION_SUBSCRIPTIONS} are used"
            )
        out = out[:MAX_ANNOTATION_SUBSCRIPTIONS]
    for sub in cfg.subscriptions:
        try:
            if not parse_selector(sub.selector).matches(labels):
                continue
        except ValueError:
            continue
        for recipient in sub.recipients:
            service, _, to = recipient.partition(":")
            out += [(t, Destination(service, to)) for t in sub.triggers or cfg.default_triggers]
    return list(dict.fromkeys(out))


def _key(trigger: str, index: int, when: str, dest: Destination, once: str) -> str:
    digest = hashlib.sha256(when.encode()).hexdigest()[:8]
    key = f"{trigger}:[{index}].{digest}:{dest.service}:{dest.recipient}"
    return f"once/{key}|{once}" if once else key


def decide(
    cfg: Notifications,
    app: Mapping[str, Any],
    notified: Mapping[str, float],
    *,
    now: float | None = None,
) -> Decision:
    """The notifications `app` (Argo CD-shaped: metadata, spec, status) calls for now."""
    now = time.time() if now is None else now
    meta = app.get("metadata") or {}
    records = dict(notified)
    send: list[Notification] = []
    errors: list[str] = []
    evaluated: list[tuple[str, bool]] = []
    env = {"app": dict(app)}
    for trigger, dest in subscriptions(
        cfg, meta.get("annotations") or {}, meta.get("labels") or {}, errors
    ):
        conditions = cfg.triggers.get(trigger)
        if conditions is None:
            errors.append(f"trigger {trigger!r} is not defined")
            continue
        if dest.service in cfg.unsupported:
            continue  # a service type gitopsd does not deliver to (warned at load)
        if dest.service not in cfg.services:
            errors.append(f"service {dest.service!r} (trigger {trigger}) is not configured")
            continue
        for i, cond in enumerate(conditions):
            if cond.error:
                errors.append(f"trigger {trigger}[{i}] cannot be evaluated: {cond.error}")
                continue
            try:
                fired = evaluate_in(cond.when, env)
                once = str(value_in(cond.once_per, env) or "") if cond.once_per else ""
            except ExprError as e:
                errors.append(f"trigger {trigger}[{i}] `{cond.when}`: {e}")
                continue
            evaluated.append((trigger, fired))
            key = _key(trigger, i, cond.when, dest, once)
            if not fired:
                if not cond.once_per:
                    records.pop(key, None)
                continue
            if key in records:
                continue
            records[key] = now
            try:
                rendered = _rendered(cfg, cond.send, app, dest, trigger)
            except (TemplateError, ValueError, TypeError) as e:
                # A template that cannot render for this app is reported, never raised.
                errors.append(f"trigger {trigger}: {e}")
                continue
            send.append(Notification(str(meta.get("name", "")), trigger, dest, rendered))
    return Decision(tuple(send), _capped(records), tuple(errors), tuple(evaluated))


def _rendered(
    cfg: Notifications,
    names: tuple[str, ...],
    app: Mapping[str, Any],
    dest: Destination,
    trigger: str,
) -> tuple[Mapping[str, Any], ...]:
    """The templates `names` rendered for one destination; ValueError when they come to more
    than MAX_RENDERED characters (nothing is sent)."""
    out: list[Mapping[str, Any]] = []
    size = 0
    for name in names:
        out.append(_render(cfg, name, app, dest, trigger))
        size += _size(out[-1])
        if size > MAX_RENDERED:
            raise ValueError(
                f"template {name!r} for {dest.service}: the rendered notification is over "
                f"{MAX_RENDERED} characters; not sent"
            )
    return tuple(out)


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(k)) + _size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value)
    return len(str(value))


def _render(
    cfg: Notifications, name: str, app: Mapping[str, Any], dest: Destination, trigger: str
) -> Mapping[str, Any]:
    service = cfg.services[dest.service]
    data = {
        "app": app,
        "context": dict(cfg.context),
        "serviceType": service.type,
        "recipient": dest.recipient,
        "trigger": trigger,
    }
    return render_template(
        cfg.templates[name],
        data,
        go_template=True,
        options=["missingkey=default"],
        where=f"{cfg.source}.data['template.{name}']",
    )


def _capped(records: dict[str, float]) -> dict[str, float]:
    """At most MAX_ONCE_PER_RECORDS oncePer records per trigger condition and destination (the
    newest), so state stays small and one busy trigger never evicts another's records (an
    `on-created` sent once must stay recorded however many revisions deploy)."""
    groups: dict[str, list[str]] = {}
    for k in records:
        if k.startswith("once/"):
            groups.setdefault(k.split("|", 1)[0], []).append(k)
    for keys in groups.values():
        keys.sort(key=lambda k: records[k])
        for k in keys[: max(0, len(keys) - MAX_ONCE_PER_RECORDS)]:
            records.pop(k)
    return records
