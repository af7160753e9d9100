"""Deliver rendered notifications: generic webhooks, Slack, email over SMTP, and every service
Apprise knows (Teams, Discord, Telegram, Mattermost, ntfy, ...).

Each delivery has a timeout and is retried with backoff; a delivery never raises into the
daemon (the caller counts and logs the outcome). Webhooks and Slack are plain HTTP requests
(httpx), email is the standard library's smtplib (in a worker thread), the rest goes through
the Apprise library.
"""

from __future__ import annotations

import email.message
import json
import re
import smtplib
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from daemon.notify.config import Service
from daemon.notify.engine import Notification

if TYPE_CHECKING:
    import httpx

TIMEOUT = 10.0
ATTEMPTS = 3
_ADDRESS = re.compile(r"[^\s@<>,;]+@[^\s@<>,;]+")


class DeliveryError(Exception):
    """A notification could not be delivered; the message says where and why."""


async def deliver(service: Service, note: Notification, *, backoff: float = 1.0) -> None:
    """Send `note` through `service`, retrying (1 s, 2 s backoff by default)."""
    import httpx  # only once a notification is sent (a start stays light)

    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            with anyio.fail_after(TIMEOUT * 2):
                await _once(service, note)
            return
        except (DeliveryError, httpx.HTTPError, OSError, smtplib.SMTPException, TimeoutError) as e:
            last = e
            if attempt < ATTEMPTS - 1:
                await anyio.sleep(backoff * 2**attempt)
    raise DeliveryError(f"{service.type} service {service.name!r}: {last}")


async def _once(service: Service, note: Notification) -> None:
    if service.type == "webhook":
        for template in note.templates:
            await _webhook(service, template)
    elif service.type == "slack":
        for template in note.templates:
            await _slack(service, note.destination.recipient, template)
    elif service.type == "email":
        for template in note.templates:
            await anyio.to_thread.run_sync(_email, service, note.destination.recipient, template)
    else:
        for template in note.templates:
            await anyio.to_thread.run_sync(_apprise, service, note.destination.recipient, template)


def _client(options: Mapping[str, Any]) -> httpx.AsyncClient:
    import httpx

    verify = not bool(options.get("insecureSkipVerify"))
    return httpx.AsyncClient(timeout=TIMEOUT, verify=verify, follow_redirects=False)


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code >= 300:
        raise DeliveryError(f"{what}: HTTP {r.status_code}: {r.text[:200]}")


async def _webhook(service: Service, template: Mapping[str, Any]) -> None:
    """Argo CD's webhook service: the template's `webhook.<service name>` {method, path, body}
    against the service's url, headers and basic auth. A template without that section posts
    its message as JSON."""
    opts = service.options
    url = str(opts.get("url") or "")
    if not url:
        raise DeliveryError(f"webhook {service.name!r}: url is not set")
    section = (template.get("webhook") or {}).get(service.name)
    if isinstance(section, dict):
        method = str(section.get("method") or "GET").upper()
        target = url.rstrip("/") + str(section.get("path") or "") if section.get("path") else url
        body = str(section.get("body") or "")
    else:
        method, target = "POST", url
        body = json.dumps({"message": template.get("message", "")})
    headers = {str(h["name"]): str(h["value"]) for h in opts.get("headers") or []}
    basic = opts.get("basicAuth") or {}
    auth = (str(basic["username"]), str(basic.get("password", ""))) if basic else None
    async with _client(opts) as client:
        r = await client.request(method, target, content=body or None, headers=headers, auth=auth)
    _check(r, f"webhook {service.name!r} {method}")  # the URL may hold a secret: not shown


async def _slack(service: Service, channel: str, template: Mapping[str, Any]) -> None:
    """Slack's chat.postMessage (token, apiURL) or an incoming webhook (`webhookURL`): the
    message as text, the template's `slack.attachments` / `slack.blocks` (JSON strings)."""
    opts = service.options
    slack = template.get("slack") or {}
    payload: dict[str, Any] = {"text": str(template.get("message", ""))}
    for key in ("attachments", "blocks"):
        if slack.get(key):
            try:
                payload[key] = json.loads(slack[key]) if isinstance(slack[key], str) else slack[key]
            except ValueError as e:
                raise DeliveryError(f"slack template {key}: not JSON: {e}") from None
    if opts.get("username"):
        payload["username"] = opts["username"]
    icon = str(opts.get("icon") or "")
    if icon:
        payload["icon_url" if icon.startswith("http") else "icon_emoji"] = icon
    headers: dict[str, str] = {}
    if opts.get("webhookURL"):
        url = str(opts["webhookURL"])
        if channel:
            payload["channel"] = channel
    else:
        if not opts.get("token"):
            raise DeliveryError(f"slack {service.name!r}: set token (or webhookURL)")
        base = str(opts.get("apiURL") or "https://slack.com/api/")
        url = base.rstrip("/") + "/chat.postMessage"
        payload["channel"] = channel
        headers["Authorization"] = f"Bearer {opts['token']}"
    async with _client(opts) as client:
        r = await client.post(url, json=payload, headers=headers)
    _check(r, f"slack {service.name!r}")
    if not opts.get("webhookURL"):
        answer = (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        )
        if isinstance(answer, dict) and answer.get("ok") is False:
            raise DeliveryError(f"slack {service.name!r}: {answer.get('error', 'not ok')}")


def _email(service: Service, to: str, template: Mapping[str, Any]) -> None:
    """Argo CD's email service: host, port, from, username/password; STARTTLS when the server
    offers it (verified unless insecure_skip_verify). Subject from `email.subject`."""
    opts = service.options
    host = str(opts.get("host") or "")
    if not host:
        raise DeliveryError(f"email {service.name!r}: host is not set")
    try:
        port = int(opts.get("port") or 587)
    except (TypeError, ValueError):
        port_text = opts.get("port")
        raise DeliveryError(f"email {service.name!r}: port {port_text!r} is not a number") from None
    if not _ADDRESS.fullmatch(to):
        raise DeliveryError(f"email {service.name!r}: {to!r} is not an email address")
    msg = email.message.EmailMessage()
    msg["From"] = str(opts.get("from") or "gitopsd@localhost")
    msg["To"] = to
    msg["Subject"] = str((template.get("email") or {}).get("subject") or "gitopsd notification")
    body = str((template.get("email") or {}).get("body") or template.get("message") or "")
    msg.set_content(body, subtype="html" if opts.get("html") else "plain")
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            context = ssl.create_default_context()
            if opts.get("insecure_skip_verify"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            smtp.starttls(context=context)
            smtp.ehlo()
        if opts.get("username"):
            smtp.login(str(opts["username"]), str(opts.get("password") or ""))
        smtp.send_message(msg)


def _apprise(service: Service, recipient: str, template: Mapping[str, Any]) -> None:
    """Any service Apprise reaches: `urls` (Apprise URLs; the recipient, when given, is one
    more). Title from `email.subject` or the trigger's template, body the message."""
    import apprise  # only when an apprise service is configured

    urls = [str(u) for u in service.options.get("urls") or []]
    if recipient:
        # Recipients come from Application annotations (tenants): they must not make the
        # daemon call URLs of their choosing. Targets are the service's own `urls`.
        raise DeliveryError(
            f"apprise {service.name!r}: recipients are not accepted; list targets in its urls"
        )
    if not urls:
        raise DeliveryError(f"apprise {service.name!r}: no urls")
    sender = apprise.Apprise()
    for url in urls:
        if not sender.add(url):
            raise DeliveryError(
                f"apprise {service.name!r}: {url.split('://')[0]}:// is not an Apprise URL"
            )
    title = str((template.get("email") or {}).get("subject") or "")
    if not sender.notify(body=str(template.get("message", "")), title=title):
        raise DeliveryError(f"apprise {service.name!r}: delivery failed")
