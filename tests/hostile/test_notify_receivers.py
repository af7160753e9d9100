"""Notifications against hostile receivers and tenant-written app data: real servers on
loopback (an SMTP server and web servers that answer a byte at a time, an endless answer, an
answer echoing credentials) and the real delivery code (`daemon.notify.send`), with templates
rendered by the real engine from an app's annotations."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from daemon.notify import config, engine, send

Handler = Callable[["Hostile", socket.socket], None]


class Hostile:
    """A TCP server on 127.0.0.1 running `handler` for each connection in a thread; it counts
    open connections and the bytes the handler wrote."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.lock = threading.Lock()
        self.open = 0
        self.connections = 0
        self.written = 0
        self.stopped = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.connections += 1
        try:
            self.handler(self, conn)
        except OSError:
            pass  # the client went away
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.written += len(data)

    def drip(self, conn: socket.socket, line: bytes, *, seconds: float) -> None:
        """`line` over and over, one byte every 0.2 s, for `seconds` (each byte well within
        any per-read timeout)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopped.is_set():
            for byte in line:
                self.send(conn, bytes([byte]))
                time.sleep(0.2)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    """One HTTP request (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head


@pytest.fixture
def servers() -> Iterator[list[Hostile]]:
    """Hostile servers made by a test, closed after it."""
    made: list[Hostile] = []
    yield made
    for s in made:
        s.close()


def note(service: str, recipient: str = "", **template: Any) -> engine.Notification:
    return engine.Notification(
        "web", "on-sync-succeeded", engine.Destination(service, recipient), (template,)
    )


def service(key: str, options: str, secret: dict[str, str] | None = None) -> config.Service:
    """One service parsed as the ConfigMap's `service.<key>` entry."""
    cfg = config.parse({f"service.{key}": options}, secret or {}, where="t", warnings=[])
    return next(iter(cfg.services.values()))


def smtp_drip(srv: Hostile, conn: socket.socket) -> None:
    """A greeting of continuation lines that never ends, a byte at a time."""
    srv.drip(conn, b"220-gitopsd is almost ready\r\n", seconds=40)


def http_drip(srv: Hostile, conn: socket.socket) -> None:
    """Reads the request, then answers its status line a byte at a time."""
    read_request(conn)
    srv.drip(conn, b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\n", seconds=40)


def http_endless(srv: Hostile, conn: socket.socket) -> None:
    """Reads the request, then answers 200 with a chunked body of up to 200 MB."""
    read_request(conn)
    srv.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(200 * 16):
        srv.send(conn, b"%x\r\n%s\r\n" % (len(chunk), chunk))
    srv.send(conn, b"0\r\n\r\n")


@pytest.mark.parametrize("kind", ["email", "apprise"])
async def test_a_shutdown_never_waits_for_a_hanging_receiver(
    servers: list[Hostile], kind: str
) -> None:
    """An SMTP server, or an Apprise target, answering a byte at a time (each delivered by a
    blocking library in a thread): cancelling the delivery (a shutdown) returns at once; the
    SMTP connection is closed, not left to the server."""
    srv = Hostile(smtp_drip if kind == "email" else http_drip)
    servers.append(srv)
    if kind == "email":
        svc = service("email.mail", f"host: 127.0.0.1\nport: {srv.port}\nfrom: g@example.com")
        n = note("mail", "ops@example.com", message="hi")
    else:
        url = f"json://127.0.0.1:{srv.port}/x"
        with warnings.catch_warnings():  # its plugins import imghdr (deprecated): load them now
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            apprise.Apprise().add(url)
        svc = service("apprise.ntfy", f"urls: ['{url}']")
        n = note("ntfy", message="hi")
    started = time.monotonic()
    with anyio.move_on_after(1):
        await send.deliver(svc, n)
    assert time.monotonic() - started < 3, "the cancelled delivery waited for the server"
    assert srv.connections == 1
    if kind == "email":
        await anyio.sleep(1)
        assert srv.open == 0, "the SMTP connection stayed open after the delivery was cancelled"


async def test_receivers_answering_a_byte_at_a_time_meet_the_total_deadline(
    servers: list[Hostile],
) -> None:
    """An SMTP server and a webhook that answer a byte at a time (never tripping a per-read
    timeout): each delivery fails within its total deadline (30 s, every attempt included),
    naming the service and not the secrets, and leaves no connection open."""
    smtp, hook = Hostile(smtp_drip), Hostile(http_drip)
    servers += [smtp, hook]
    mail = service("email.mail", f"host: 127.0.0.1\nport: {smtp.port}\nfrom: g@example.com")
    web = service("webhook.hooks", f"url: {hook.url}/x")
    errors: dict[str, str] = {}

    async def one(svc: config.Service, n: engine.Notification) -> None:
        started = time.monotonic()
        with pytest.raises(send.DeliveryError) as e:
            await send.deliver(svc, n)
        errors[svc.name] = f"{time.monotonic() - started:.1f} s: {e.value}"

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, mail, note("mail", "ops@example.com", message="hi"))
        tg.start_soon(one, web, note("hooks", message="hi"))
    for name, error in errors.items():
        took = float(error.split(" s:", 1)[0])
        assert took < 33, f"{name} took {error}"
        assert f"service '{name}'" in error and "30 s" in error, error
    await anyio.sleep(1)
    assert (smtp.open, hook.open) == (0, 0), "a connection outlived its delivery"


async def test_an_endless_answer_is_not_read(servers: list[Hostile]) -> None:
    """A webhook answering 200 with a 200 MB body: the delivery reads at most 64 KiB of it
    and returns at once; the server could write only what the socket buffers hold."""
    srv = Hostile(http_endless)
    servers.append(srv)
    started = time.monotonic()
    await send.deliver(service("webhook.hooks", f"url: {srv.url}/x"), note("hooks", message="hi"))
    assert time.monotonic() - started < 5
    await anyio.sleep(0.5)
    assert srv.written < 32 * 2**20, f"the daemon read {srv.written} bytes of the answer"


class Echo:
    """An HTTP server answering 401 with the request's Authorization header in the body, as
    API gateways do in their error pages; records request paths."""

    def __init__(self, status: int = 401) -> None:
        self.paths: list[str] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.paths.append(self.path)
                answer = f"denied: {self.headers.get('Authorization')}".encode()
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", str(outer.redirect))
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.redirect = ""
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


async def test_delivery_errors_never_show_the_services_secrets(echo: Echo) -> None:
    """Tokens and passwords from argocd-notifications-secret (and credentials written inline:
    a token, a header's value) stay out of delivery errors (the log line of a failed
    delivery): neither an HTTP library's complaint about a value ending in a newline nor a
    receiver echoing the credentials back shows them."""
    secret = {"tok": "xoxb-SECRET-1\n", "pw": "hunter2-SECRET-2"}
    slack = service("slack", f"token: $tok\napiURL: {echo.url}/api/", secret)
    hook = service(
        "webhook.hooks",
        f"url: {echo.url}/hook\nbasicAuth: {{username: bot, password: $pw}}",
        secret,
    )
    clean = service("slack.clean", f"token: xoxb-SECRET-3\napiURL: {echo.url}/api/")
    keyed = service(
        "webhook.keyed",
        f'url: {echo.url}/hook\nheaders: [{{name: X-Api-Key, value: "key-SECRET-4\\n"}}]',
    )
    messages = []
    for svc in (slack, hook, clean, keyed):
        with pytest.raises(send.DeliveryError) as e:
            await send.deliver(svc, note(svc.name, "#ch", message="hi"), backoff=0.01)
        messages.append(str(e.value))
    assert "denied" in messages[2], messages  # the receiver's answer is still shown
    for message in messages:
        assert "SECRET" not in message and "Ym90Omh1bnRlcj" not in message, message


async def test_a_tenants_app_data_cannot_send_a_webhook_elsewhere() -> None:
    """A webhook template's path rendered from an app's annotation (tenant-written) stays on
    the service's host, as Argo CD joins URL and path with a `/`; a redirect to another host
    is not followed."""
    home, other, redirecting = Echo(status=200), Echo(status=200), Echo(status=302)
    redirecting.redirect = f"{other.url}/redirected"
    try:
        cfg = config.parse(
            {
                "service.webhook.hooks": f"url: {home.url}",
                "service.webhook.moved": f"url: {redirecting.url}",
                "template.app-sync-succeeded": (
                    "message: hi\nwebhook:\n"
                    "  hooks: {method: POST, path: '{{index .app.metadata.annotations \"p\"}}'}\n"
                ),
            },
            {},
            where="t",
            warnings=[],
        )
        host = other.url.removeprefix("http://")
        app = {
            "metadata": {
                "name": "web",
                "annotations": {
                    "p": f"@{host}/stolen",
                    "notifications.argoproj.io/subscribe.on-sync-succeeded.hooks": "",
                    "notifications.argoproj.io/subscribe.on-sync-succeeded.moved": "",
                },
            },
            "status": {"operationState": {"phase": "Succeeded"}},
        }
        sent = {n.destination.service: n for n in engine.decide(cfg, app, {}).send}
        await send.deliver(cfg.services["hooks"], sent["hooks"], backoff=0.01)
        with pytest.raises(send.DeliveryError, match="HTTP 302"):
            await send.deliver(cfg.services["moved"], sent["moved"], backoff=0.01)
        assert other.paths == [], "the tenant's annotation sent the webhook to another host"
        assert home.paths == [f"/@{host}/stolen"], home.paths
    finally:
        for server in (home, other, redirecting):
            server.close()
