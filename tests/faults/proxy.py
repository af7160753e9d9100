"""A fault-injecting TCP proxy in front of the test API server.

Modes, switchable while connections are open: `pass` (forward), `cut` (refuse new connections and
reset open ones), `blackhole` (accept and keep connections, forward nothing either way: requests
hang as behind a dead route), `latency` (forward every chunk after a delay).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

from tests.conftest import _free_port

Mode = Literal["pass", "cut", "blackhole", "latency"]


class FaultProxy:
    """Loopback proxy to (host, port) whose behaviour the test switches with `mode`."""

    def __init__(self, target_host: str, target_port: int, *, latency: float = 0.5) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.mode: Mode = "pass"
        self.latency = latency
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = threading.Event()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(128)
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: Mode) -> None:
        """Switch mode; `cut` also resets every open connection."""
        self.mode = mode
        if mode == "cut":
            with self._lock:
                conns, self._conns = self._conns, []
            for c in conns:
                _close(c)

    def close(self) -> None:
        self._closed.set()
        self.set("cut")
        _close(self._server)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "cut":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(0.2)
            while not self._closed.is_set():
                if self.mode == "blackhole":
                    time.sleep(0.1)  # leave the data in the socket: nothing moves
                    continue
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if self.mode == "latency":
                    time.sleep(self.latency)
                if self.mode == "blackhole":
                    continue  # dropped on the floor, as a dead route would
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
