"""An HTTP-aware fault proxy in front of the test API server: it terminates TLS with a
certificate of its own (clients get its CA in their kubeconfig), forwards each request with the
admin client certificate, and can answer instead: 429 with Retry-After, 503, watch streams
dropped after a moment, or 410 Gone for watches that resume from a resourceVersion.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlparse

import httpx

from tests.conftest import _free_port

Mode = Literal["pass", "429", "503", "drop-watch", "gone-watch"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer"}


class HttpFaultProxy:
    """Switch `mode` while the daemon runs; `hits` counts the faults injected."""

    def __init__(self, upstream: str, workdir: Path, client_context: ssl.SSLContext) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode: Mode = "pass"
        self.hits = 0
        self.port = _free_port()
        self._client = httpx.Client(verify=client_context, timeout=httpx.Timeout(330, connect=10))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:  # quiet
                return

            def _forward(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.ca_pem, cert, key = _serving_pki()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "proxy.crt").write_bytes(cert)
        (workdir / "proxy.key").write_bytes(key)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(workdir / "proxy.crt", workdir / "proxy.key")
        self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop accepting. Streams still open end on their own (their threads are daemons):
        closing the upstream client here would drive their TLS from this thread."""
        self._server.shutdown()
        self._server.server_close()

    def _guard(
        self, h: http.server.BaseHTTPRequestHandler, response: httpx.Response, cut: threading.Event
    ) -> None:
        """Reset the client's connection (as a dropped route or a restarted API server would)
        once drop-watch is on and the stream is a second old.

        Only the socket is shut down, at the OS level: the TLS objects belong to the handler's
        thread, and OpenSSL must not be driven from two threads at once (the handler thread
        notices on its next write and closes the upstream response itself)."""
        started = time.monotonic()
        while not response.is_closed:
            if self.mode == "drop-watch" and time.monotonic() - started > 1:
                self.hits += 1
                cut.set()
                try:
                    socket.socket.shutdown(h.connection, socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            time.sleep(0.2)

    def _reply(
        self, h: http.server.BaseHTTPRequestHandler, code: int, body: bytes, **headers: str
    ) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        query = parse_qs(urlparse(h.path).query)
        watch = query.get("watch", ["0"])[0] in ("1", "true")
        mode = self.mode
        if mode in ("429", "503") and not watch:
            self.hits += 1
            status = 429 if mode == "429" else 503
            message = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":%d}' % status
            self._reply(h, status, message, **({"Retry-After": "1"} if status == 429 else {}))
            return
        if mode == "gone-watch" and watch and query.get("resourceVersion"):
            self.hits += 1
            gone = (
                b'{"kind":"Status","apiVersion":"v1","status":"Failure",'
                b'"reason":"Expired","code":410}'
            )
            self._reply(h, 410, gone)
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        request = self._client.build_request(
            h.command, self.upstream + h.path, headers=headers, content=body
        )
        response = self._client.send(request, stream=True)
        cut = None
        if watch:
            # Whenever drop-watch is on, cut this stream (idle or not) a second into it.
            cut = threading.Event()
            guard = threading.Thread(target=self._guard, args=(h, response, cut), daemon=True)
            guard.start()
        try:
            h.send_response(response.status_code)
            for k, v in response.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    h.send_header(k, v)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for chunk in response.iter_raw():
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                h.wfile.flush()
            if cut is not None and cut.is_set():
                h.close_connection = True  # dropped: no clean end of the chunked body
                return
            h.wfile.write(b"0\r\n\r\n")
        except (OSError, httpx.HTTPError, httpx.StreamError):
            h.close_connection = True
        finally:
            response.close()


def _serving_pki() -> tuple[bytes, bytes, bytes]:
    """A throwaway CA and a serving certificate for 127.0.0.1 signed by it (PEM)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fault-proxy-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fault-proxy")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem
