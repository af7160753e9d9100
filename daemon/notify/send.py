"""Deliver rendered notifications: generic webhooks, Slack, email over SMTP, and every service
Apprise knows (Teams, Discord, Telegram, Mattermost, ntfy, ...).

A delivery is retried with backoff within one total deadline, and never raises into the daemon
(the caller counts and logs the outcome). Receivers are not trusted: every network step has a
timeout, every attempt and the whole delivery a deadline (a server answering a byte at a time
included), answers are read up to `MAX_ANSWER` bytes, redirects are not followed, and error
messages never carry the service's secrets. Webhooks and Slack are plain HTTP requests (httpx);
email is the standard library's smtplib and the rest goes through the Apprise library, both
blocking, so they run in threads of their own that a deadline or a shutdown does not wait for.
"""

from __future__ import annotations

import email.message
import functools
import json
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from daemon.notify.config import Service
from daemon.notify.engine import Notification

if TYPE_CHECKING:
    import httpx

TIMEOUT = 10.0  # one network step: connect, one read, one write
ATTEMPT_TIMEOUT = 15.0  # one attempt, every step of it
DEADLINE = 30.0  # one delivery: every attempt and the backoff between them
ATTEMPTS = 3
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (Slack's JSON, an error's text)
# Blocking deliveries (email, Apprise) still running, cancelled ones included: a receiver that
# never lets go cannot pile up threads.
MAX_THREADS = 8
_THREADS = threading.BoundedSemaphore(MAX_THREADS)
_ADDRESS = re.compile(r"[^\s@<>,;]+@[^\s@<>,;]+")


class DeliveryError(Exception):
    """A notification could not be delivered; the message says where and why."""


async def deliver(
    service: Service, note: Notification, *, backoff: float = 1.0, deadline: float = DEADLINE
) -> None:
    """Send `note` through `service`, retrying (1 s, 2 s backoff by default) until `deadline`
    seconds have passed; DeliveryError (secrets redacted) when it could not."""
    import httpx  # only once a notification is sent (a start stays light)

    retryable = (DeliveryError, httpx.HTTPError, OSError, smtplib.SMTPException, TimeoutError)
    last: BaseException | None = None
    with anyio.move_on_after(deadline) as overall:
        for attempt in range(ATTEMPTS):
            try:
                with anyio.fail_after(min(ATTEMPT_TIMEOUT, deadline)):
                    await _once(service, note)
                return
            except retryable as e:
                last = e
            except Exception as e:  # not worth a retry: a header, an option, a template
                raise DeliveryError(
                    service.redact(f"{service.type} service {service.name!r}: {_text(e)}")
                ) from None
            if attempt < ATTEMPTS - 1:
                await anyio.sleep(backoff * 2**attempt)
    why = _text(last) if last is not None else "no answer"
    if overall.cancelled_caught:
        why = f"gave up after {deadline:g} s ({why})"
    raise DeliveryError(service.redact(f"{service.type} service {service.name!r}: {why}"))


def _text(e: BaseException) -> str:
    return str(e) or type(e).__name__  # TimeoutError() says nothing by itself


async def _once(service: Service, note: Notification) -> None:
    if service.type == "webhook":
        for template in note.templates:
            await _webhook(service, template)
    elif service.type == "slack":
        for template in note.templates:
            await _slack(service, note.destination.recipient, template)
    elif service.type == "email":
        for template in note.templates:
            await _email(service, note.destination.recipient, template)
    else:
        for template in note.templates:
            call = functools.partial(_apprise, service, note.destination.recipient, template)
            await _in_thread(call, abort=None)


async def _in_thread(fn: Callable[[], None], *, abort: Callable[[], None] | None) -> None:
    """Run blocking `fn` in a daemon thread of its own and wait for it. When the wait is
    cancelled (the deadline, a shutdown) `abort` is called (it shuts an SMTP socket: the
    thread ends at once) and the thread is left to end by itself, holding up neither the
    caller nor the process exit. anyio's worker threads are waited for on cancel (or, when
    abandoned, at exit), which let a receiver answering a byte at a time hold both forever."""
    if not _THREADS.acquire(blocking=False):
        raise DeliveryError(f"{MAX_THREADS} deliveries are still running; try again later")
    token = anyio.lowlevel.current_token()
    finished = anyio.Event()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as e:  # handed to the waiting task
            outcome.append(e)
        finally:
            _THREADS.release()
            try:
                anyio.from_thread.run_sync(finished.set, token=token)
            except Exception:  # the event loop is gone (a shutdown): nobody waits
                pass

    threading.Thread(target=run, name="gitopsd-notify", daemon=True).start()
    try:
        await finished.wait()
    finally:
        if not outcome and abort is not None:
            abort()
    if outcome[0] is not None:
        raise outcome[0]


def _client(options: Mapping[str, Any]) -> httpx.AsyncClient:
    import httpx

    verify = not bool(options.get("insecureSkipVerify"))
    return httpx.AsyncClient(timeout=TIMEOUT, verify=verify, follow_redirects=False)


async def _send(
    options: Mapping[str, Any],
    method: str,
    url: str,
    *,
    what: str,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> bytes:
    """One request; the answer's body up to MAX_ANSWER bytes (as sent: no decompression, so a
    small compressed answer cannot unpack into a large one), DeliveryError unless 2xx."""
    sent = {**(headers or {}), "Accept-Encoding": "identity"}
    body = bytearray()
    async with (
        _client(options) as client,
        client.stream(method, url, content=content, headers=sent, auth=auth) as r,
    ):
        async for chunk in r.aiter_raw():
            body += chunk[: MAX_ANSWER + 1 - len(body)]
            if len(body) > MAX_ANSWER:
                break  # the rest is never read
    if r.status_code >= 300:
        # The URL may hold a secret: not shown; the answer's text is, shortened.
        text = bytes(body[:200]).decode(errors="replace")
        raise DeliveryError(f"{what}: HTTP {r.status_code}: {text}")
    return bytes(body)


def webhook_target(url: str, path: str) -> str:
    """Argo CD's webhook URL for a template's `path`: the service's URL, one `/`, the path. The
    path is rendered from app data a tenant may write; joined this way it cannot name another
    host (`url` + `.evil.example` or `@evil.example` could)."""
    import httpx

    target = url.rstrip("/") + "/" + path.lstrip("/") if path else url
    base, joined = httpx.URL(url), httpx.URL(target)
    if (joined.scheme, joined.userinfo, joined.host, joined.port) != (
        base.scheme,
        base.userinfo,
        base.host,
        base.port,
    ):
        raise DeliveryError(f"the template's webhook path {path!r} leaves the service's host")
    return target


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
        target = webhook_target(url, str(section.get("path") or ""))
        body = str(section.get("body") or "")
    else:
        method, target = "POST", url
        body = json.dumps({"message": template.get("message", "")})
    headers = {str(h["name"]): str(h["value"]) for h in opts.get("headers") or []}
    basic = opts.get("basicAuth") or {}
    auth = (str(basic["username"]), str(basic.get("password", ""))) if basic else None
    content = body.encode() if body else None
    what = f"webhook {service.name!r} {method}"
    await _send(opts, method, target, what=what, content=content, headers=headers, auth=auth)


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
    headers = {"Content-Type": "application/json"}
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
    what = f"slack {service.name!r}"
    answer = await _send(
        opts, "POST", url, what=what, content=json.dumps(payload).encode(), headers=headers
    )
    if not opts.get("webhookURL"):
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = {}  # not Slack's JSON (or over MAX_ANSWER): the 2xx stands
        if isinstance(parsed, dict) and parsed.get("ok") is False:
            raise DeliveryError(f"slack {service.name!r}: {str(parsed.get('error'))[:200]}")


class _SMTP(smtplib.SMTP):
    """smtplib's client whose socket another thread can shut down. smtplib's timeout bounds
    each read, not a server that answers a byte at a time (or sends reply lines forever), and
    a thread cannot be cancelled: shutting its socket down is what ends it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aborted = False
        self._raw: socket.socket | None = None
        super().__init__(timeout=TIMEOUT)  # no host: connect() comes in the thread

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's hook for the connection's socket (SMTP_SSL overrides it too); not in
        # typeshed. Seen here, the socket can be shut down even before connect() returns.
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        with self._lock:
            self._raw = sock
            aborted = self._aborted
        if aborted:
            _shutdown(sock)
        return sock  # type: ignore[no-any-return]

    def abort(self) -> None:
        """Shut the connection down from another thread: every read and write fails now."""
        with self._lock:
            self._aborted = True
            socks = [self._raw, self.sock]  # after STARTTLS, sock is the TLS socket
        for sock in socks:
            if sock is not None:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the descriptor, under any TLS layer
    except OSError:
        pass  # already closed


async def _email(service: Service, to: str, template: Mapping[str, Any]) -> None:
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
    subject = str((template.get("email") or {}).get("subject") or "gitopsd notification")
    msg["Subject"] = " ".join(subject.splitlines())  # app data in a subject adds no header
    body = str((template.get("email") or {}).get("body") or template.get("message") or "")
    msg.set_content(body, subtype="html" if opts.get("html") else "plain")
    smtp = _SMTP()
    await _in_thread(functools.partial(_smtp_send, smtp, host, port, opts, msg), abort=smtp.abort)


def _smtp_send(
    smtp: _SMTP, host: str, port: int, opts: Mapping[str, Any], msg: email.message.EmailMessage
) -> None:
    with smtp:
        code, greeting = smtp.connect(host, port)
        if code != 220:  # what SMTP(host) checks; connect() alone does not
            raise smtplib.SMTPConnectError(code, greeting)
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
