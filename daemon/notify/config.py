"""The `argocd-notifications-cm` ConfigMap (and `argocd-notifications-secret`) as written for
Argo CD: services, templates, triggers, default subscriptions and context, validated when the
config loads so a broken edit is refused as a whole.

`service.<type>[.<name>]` values may say `$key` to take a value from the secret, as Argo CD
does. When the ConfigMap does not define the standard triggers (`on-sync-succeeded`, ...),
gitopsd's own definitions of them (the same conditions as Argo CD's catalog) and plain
templates are used, so an annotation subscription works without the catalog.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.customizations import yaml_field
from daemon.errors import ConfigError
from daemon.rollouts.expr import ExprError, compile_condition

CM_NAME = "argocd-notifications-cm"
SECRET_NAME = "argocd-notifications-secret"
SERVICE_TYPES = ("webhook", "slack", "email", "apprise")
_SECRET_REF = re.compile(r"\$([A-Za-z0-9_.-]+)")
# Options that hold credentials even when written in the ConfigMap itself (a Slack incoming
# webhook's URL is its credential; Apprise URLs embed tokens).
_SECRET_OPTIONS = frozenset({"password", "token", "webhookURL", "urls"})


@dataclass(frozen=True, slots=True)
class Condition:
    """One entry of a trigger: send `send` templates when `when` holds (once per `once_per`)."""

    when: str
    send: tuple[str, ...]
    once_per: str = ""
    error: str = ""  # why gitopsd cannot evaluate it (an expression it does not support)


@dataclass(frozen=True, slots=True)
class Service:
    """A configured notification service: its type, the name subscriptions use, options, and
    the values no message may show (taken from the secret, tokens, passwords, webhook URLs)."""

    type: str
    name: str
    options: Mapping[str, Any]
    secrets: frozenset[str] = frozenset()

    def redact(self, text: str) -> str:
        """`text` with every secret value (as given and trimmed: an HTTP library quotes a
        header value with its trailing newline escaped) replaced by `******`."""
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "******")
        return text


@dataclass(frozen=True, slots=True)
class Subscription:
    """A default subscription of the ConfigMap's `subscriptions`."""

    recipients: tuple[str, ...]  # service:recipient
    triggers: tuple[str, ...]
    selector: str = ""


@dataclass(frozen=True, slots=True)
class Notifications:
    """Everything the notifications engine needs."""

    services: Mapping[str, Service] = field(default_factory=dict)
    templates: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    triggers: Mapping[str, tuple[Condition, ...]] = field(default_factory=dict)
    subscriptions: tuple[Subscription, ...] = ()
    default_triggers: tuple[str, ...] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    # Services of Argo CD types gitopsd does not deliver to (teams, github, ...): subscriptions
    # to them are skipped; the config load warned about each.
    unsupported: frozenset[str] = frozenset()


_OPERATION = "app.status.operationState != nil and app.status.operationState.phase in "
# Argo CD's catalog conditions (facts about when each fires); messages are gitopsd's own.
BUILTIN_TRIGGERS: dict[str, tuple[Condition, ...]] = {
    "on-created": (Condition("true", ("app-created",), "app.metadata.name"),),
    "on-deleted": (Condition("app.metadata.deletionTimestamp != nil", ("app-deleted",)),),
    "on-deployed": (
        Condition(
            _OPERATION + "['Succeeded'] and app.status.health.status == 'Healthy'",
            ("app-deployed",),
            "app.status.sync.revision",
        ),
    ),
    "on-health-degraded": (
        Condition("app.status.health.status == 'Degraded'", ("app-health-degraded",)),
    ),
    "on-sync-failed": (Condition(_OPERATION + "['Error', 'Failed']", ("app-sync-failed",)),),
    "on-sync-running": (Condition(_OPERATION + "['Running']", ("app-sync-running",)),),
    "on-sync-status-unknown": (
        Condition("app.status.sync.status == 'Unknown'", ("app-sync-status-unknown",)),
    ),
    "on-sync-succeeded": (Condition(_OPERATION + "['Succeeded']", ("app-sync-succeeded",)),),
}
_LINK = "{{.context.argocdUrl}}/applications/{{.app.metadata.name}}"
BUILTIN_TEMPLATES: dict[str, dict[str, Any]] = {
    "app-created": {"message": "Application {{.app.metadata.name}} was created.\n" + _LINK},
    "app-deleted": {"message": "Application {{.app.metadata.name}} was deleted."},
    "app-deployed": {
        "message": "Application {{.app.metadata.name}} is now running revision "
        "{{.app.status.sync.revision}}.\n" + _LINK,
        "email": {"subject": "Deployed: {{.app.metadata.name}}"},
    },
    "app-health-degraded": {
        "message": "Application {{.app.metadata.name}} is Degraded: "
        "{{.app.status.health.message}}\n" + _LINK,
        "email": {"subject": "Degraded: {{.app.metadata.name}}"},
    },
    "app-sync-failed": {
        "message": "Sync of {{.app.metadata.name}} failed at "
        "{{.app.status.operationState.finishedAt}}: {{.app.status.operationState.message}}\n"
        + _LINK,
        "email": {"subject": "Sync failed: {{.app.metadata.name}}"},
    },
    "app-sync-running": {
        "message": "Sync of {{.app.metadata.name}} started at "
        "{{.app.status.operationState.startedAt}}.\n" + _LINK,
    },
    "app-sync-status-unknown": {
        "message": "Application {{.app.metadata.name}} sync status is Unknown.\n"
        "{{range .app.status.conditions}}{{.type}}: {{.message}}\n{{end}}" + _LINK,
    },
    "app-sync-succeeded": {
        "message": "Application {{.app.metadata.name}} synced revision "
        "{{.app.status.sync.revision}} at {{.app.status.operationState.finishedAt}}.\n" + _LINK,
        "email": {"subject": "Synced: {{.app.metadata.name}}"},
    },
}


def _substitute(value: Any, secret: Mapping[str, str], where: str, used: set[str]) -> Any:
    """`$key` references in service options replaced from the notifications secret; the
    values taken are added to `used`."""
    if isinstance(value, str):

        def one(m: re.Match[str]) -> str:
            if m.group(1) not in secret:
                raise ConfigError(f"{where}: ${m.group(1)} is not a key of {SECRET_NAME}")
            used.add(secret[m.group(1)])
            return secret[m.group(1)]

        return _SECRET_REF.sub(one, value)
    if isinstance(value, dict):
        return {k: _substitute(v, secret, f"{where}.{k}", used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, secret, f"{where}[{i}]", used) for i, v in enumerate(value)]
    return value


def _credentials(options: Any, secret_key: bool = False) -> set[str]:
    """The values of credential options (`_SECRET_OPTIONS`), at any depth."""
    if isinstance(options, dict):
        return {v for k, item in options.items() for v in _credentials(item, k in _SECRET_OPTIONS)}
    if isinstance(options, list):
        return {v for item in options for v in _credentials(item, secret_key)}
    return {str(options)} if secret_key and options not in (None, "") else set()


def _service(
    kind: str, name: str, raw: dict[str, Any], secret: Mapping[str, str], at: str
) -> Service:
    used: set[str] = set()
    options = _substitute(raw, secret, at, used)
    hidden = used | _credentials(options)
    for header in options.get("headers") or []:  # a webhook's API key, written inline
        if isinstance(header, dict) and header.get("value"):
            hidden.add(str(header["value"]))
    basic = options.get("basicAuth")
    if isinstance(basic, dict) and basic.get("password"):
        # As the Authorization header carries it (a receiver may echo it back).
        pair = f"{basic.get('username', '')}:{basic['password']}".encode()
        hidden.add(base64.b64encode(pair).decode())
    # Also trimmed: a value from a file often ends in a newline that a message shows escaped.
    hidden |= {v.strip() for v in hidden}
    return Service(kind, name, options, frozenset(v for v in hidden if v))


def _condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with when and send")
    when = str(raw.get("when") or "")
    send = raw.get("send") or []
    if not when or not isinstance(send, list) or not send:
        raise ConfigError(f"{where}: needs `when` and a non-empty `send` list")
    error = ""
    for text, what in ((when, "when"), (str(raw.get("oncePer") or ""), "oncePer")):
        if text and not error:
            try:
                compile_condition(text)
            except ExprError as e:
                # Argo CD's expression language is larger than gitopsd's subset (time.*,
                # repo.* helpers): the condition is kept, never evaluated, and reported.
                error = f"{where}.{what}: {e}"
    return Condition(when, tuple(str(t) for t in send), str(raw.get("oncePer") or ""), error)


def parse(
    data: Mapping[str, Any], secret: Mapping[str, str], *, where: str, warnings: list[str]
) -> Notifications:
    """The ConfigMap's `data`, validated; ConfigError naming the key and the reason."""
    where = f"{where} (ConfigMap/{CM_NAME})"
    services: dict[str, Service] = {}
    templates: dict[str, Mapping[str, Any]] = dict(BUILTIN_TEMPLATES)
    triggers: dict[str, tuple[Condition, ...]] = dict(BUILTIN_TRIGGERS)
    subscriptions: list[Subscription] = []
    default_triggers: tuple[str, ...] = ()
    context: dict[str, str] = {}
    unsupported: set[str] = set()
    for key, raw in data.items():
        at = f"{where}.data[{key!r}]"
        if key.startswith("service."):
            parts = key.split(".", 2)
            kind, name = parts[1], parts[2] if len(parts) > 2 else parts[1]
            if kind not in SERVICE_TYPES:
                warnings.append(
                    f"{at}: gitopsd does not deliver to service type {kind!r}; its "
                    f"subscriptions are skipped (supported: {', '.join(SERVICE_TYPES)}; an "
                    "`apprise` service reaches most others)"
                )
                unsupported.add(name)
                continue
            options = yaml_field(raw, at) or {}
            if not isinstance(options, dict):
                raise ConfigError(f"{at}: expected a mapping of options")
            services[name] = _service(kind, name, options, secret, at)
        elif key.startswith("template."):
            body = yaml_field(raw, at) or {}
            if not isinstance(body, dict):
                raise ConfigError(f"{at}: expected a mapping (message, email, slack, webhook)")
            templates[key.removeprefix("template.")] = body
        elif key.startswith("trigger."):
            conditions = yaml_field(raw, at) or []
            if not isinstance(conditions, list) or not conditions:
                raise ConfigError(f"{at}: expected a list of conditions")
            triggers[key.removeprefix("trigger.")] = tuple(
                _condition(c, f"{at}[{i}]") for i, c in enumerate(conditions)
            )
            for c in triggers[key.removeprefix("trigger.")]:
                if c.error:
                    warnings.append(f"{c.error} (this condition is never evaluated)")
        elif key == "subscriptions":
            for i, sub in enumerate(yaml_field(raw, at) or []):
                if not isinstance(sub, dict) or not sub.get("recipients"):
                    raise ConfigError(f"{at}[{i}]: needs recipients (service:recipient)")
                subscriptions.append(
                    Subscription(
                        tuple(str(r) for r in sub["recipients"]),
                        tuple(str(t) for t in sub.get("triggers") or []),
                        str(sub.get("selector") or ""),
                    )
                )
        elif key == "defaultTriggers":
            default_triggers = tuple(str(t) for t in yaml_field(raw, at) or [])
        elif key == "context":
            ctx = yaml_field(raw, at) or {}
            if not isinstance(ctx, dict):
                raise ConfigError(f"{at}: expected a mapping")
            context = {str(k): str(v) for k, v in ctx.items()}
        else:
            warnings.append(f"{at}: not used by gitopsd (ignored)")
    for name, conditions in triggers.items():
        for c in conditions:
            missing = [t for t in c.send if t not in templates]
            if missing:
                raise ConfigError(
                    f"{where}.data['trigger.{name}']: template {missing[0]!r} is not defined"
                )
    for sub in subscriptions:
        for t in sub.triggers or default_triggers:
            if t not in triggers:
                raise ConfigError(f"{where}.data['subscriptions']: trigger {t!r} is not defined")
        for r in sub.recipients:
            if r.split(":", 1)[0] not in services and r.split(":", 1)[0] not in unsupported:
                raise ConfigError(
                    f"{where}.data['subscriptions']: recipient {r!r} names no configured service"
                )
    return Notifications(
        services,
        templates,
        triggers,
        tuple(subscriptions),
        default_triggers,
        context,
        where,
        frozenset(unsupported),
    )
