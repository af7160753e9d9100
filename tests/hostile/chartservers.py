"""Hostile chart sources for tests/hostile/test_charts.py: crafted chart archives (bombs,
links, escaping paths), a chart repository whose index.yaml is written by hand (helm's own
`helm repo index` refuses such archives), and a garbage OCI registry on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

CHART_YAML = b"apiVersion: v2\nname: hello\nversion: 1.0.0\n"
CM = (
    b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
    b"data:\n  chart: {{ .Chart.Version | quote }}\n"
)


def chart_yaml(version: str) -> bytes:
    return CHART_YAML.replace(b"1.0.0", version.encode())


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Any:
    """A (TarInfo, data) pair for `write_archive`."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o644
    return info, data


def write_archive(path: Path, members: list[Any]) -> bytes:
    """A gzipped tar of `members` (written raw: tarfile's add() would clean the names)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for info, data in members:
            gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
            gz.write(data + bytes(-len(data) % 512))
        gz.write(bytes(1024))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def write_bomb(path: Path, size: int, version: str = "1.0.0") -> None:
    """A chart archive of `version` whose one template is `size` zero bytes: 1.5 GB packs into
    about 1.5 MB. Written streaming, so building it takes no memory."""
    with path.open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        info, data = member("hello/Chart.yaml", chart_yaml(version))
        gz.write(info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512))
        big = tarfile.TarInfo("hello/templates/big.yaml")
        big.size, big.mode = size, 0o644
        gz.write(big.tobuf(format=tarfile.GNU_FORMAT))
        zeros, left = bytes(1 << 20), size
        while left:
            gz.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
        gz.write(bytes(-size % 512) + bytes(1024))


def index_entry(repo: Path, version: str) -> dict[str, Any]:
    """An index.yaml entry for `repo/hello-<version>.tgz` with its true digest."""
    digest = hashlib.sha256((repo / f"hello-{version}.tgz").read_bytes()).hexdigest()
    return {
        "apiVersion": "v2",
        "name": "hello",
        "version": version,
        "digest": digest,
        "urls": [f"hello-{version}.tgz"],
    }


def write_index_entries(repo: Path, chart: str, versions: list[str]) -> None:
    """Rewrite chart `chart`'s entries in `repo/index.yaml` (the others stay)."""
    index = yaml.safe_load((repo / "index.yaml").read_text())
    index["entries"][chart] = [index_entry(repo, v) for v in versions]
    (repo / "index.yaml").write_text(yaml.safe_dump(index))


def big_index(target: int) -> bytes:
    """A realistic index.yaml of about `target` bytes: many charts of 50 versions each."""
    parts, size, c = [b"apiVersion: v1\nentries:\n"], 0, 0
    while size < target:
        block = "".join(
            f"  - apiVersion: v2\n    appVersion: 1.{v}.0\n    created: '2024-01-01T00:00:00Z'\n"
            f"    description: Chart number {c} for Kubernetes, with a longer description\n"
            f"    digest: {'ab' * 32}\n    name: chart{c}\n    type: application\n"
            f"    urls:\n    - https://example.com/charts/chart{c}-1.{v}.0.tgz\n"
            f"    version: 1.{v}.0\n"
            for v in range(50)
        )
        data = f"  chart{c}:\n{block}".encode()
        parts.append(data)
        size, c = size + len(data), c + 1
    return b"".join(parts)


Route = Callable[[http.server.BaseHTTPRequestHandler, bool], None]


class HostileServer:
    """HTTP on 127.0.0.1 whose answers are `route(path)` functions (longest prefix wins);
    `sent` counts the body bytes it wrote."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.sent = 0
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def _serve(self, *, head: bool) -> None:
                outer.hits.append(self.path)
                match = max(
                    (p for p in outer.routes if self.path.startswith(p)), key=len, default=""
                )
                if not match:
                    send(self, 404, b"{}", head=head)
                    return
                try:
                    outer.routes[match](self, head)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.host = self.url.removeprefix("http://")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(
    h: http.server.BaseHTTPRequestHandler,
    code: int,
    body: bytes,
    *,
    head: bool = False,
    ctype: str = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in headers:
        h.send_header(k, v)
    h.end_headers()
    if not head:
        h.wfile.write(body)


def endless(
    server: HostileServer, chunk: bytes, *, every: float = 0.0, length: int = 1 << 40
) -> Route:
    """A 200 whose body never ends (a chunk every `every` seconds), announced as `length`."""

    def route(h: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(length))
        h.end_headers()
        deadline = time.monotonic() + 120
        while not head and time.monotonic() < deadline:
            h.wfile.write(chunk)
            server.sent += len(chunk)
            if every:
                time.sleep(every)

    return route


def redirect(to: str) -> Route:
    return lambda h, head: send(h, 302, b"", head=head, headers=(("Location", to),))


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry(layer: bytes, *, mode: str = "") -> HostileServer:
    """An OCI registry for `charts/hello:1.0.0` whose chart layer is `layer`; `mode` makes it
    hostile: `bigblob` (declares and streams a 3 GB layer), `wrongdigest` (serves other bytes
    than the manifest's digest), `hang` (never answers), `redirect` (manifests redirect to a
    closed port), `bigmanifest` (an endless manifest)."""
    config = json.dumps({"apiVersion": "v2", "name": "hello", "version": "1.0.0"}).encode()
    size = 3 * 1024**3 if mode == "bigblob" else len(layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.cncf.helm.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    "digest": digest(layer),
                    "size": size,
                }
            ],
        }
    ).encode()
    mtype = "application/vnd.oci.image.manifest.v1+json"
    server = HostileServer({})

    def manifests(h: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        if mode == "hang":
            time.sleep(120)
        elif mode == "redirect":
            redirect("http://127.0.0.1:1/v2/")(h, head)
        elif mode == "bigmanifest":
            endless(server, b" " * 65536, length=2 * 1024**3)(h, head)
        else:
            send(
                h,
                200,
                manifest,
                head=head,
                ctype=mtype,
                headers=(("Docker-Content-Digest", digest(manifest)),),
            )

    def blobs(h: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        if h.path.endswith(digest(config)):
            send(h, 200, config, head=head)
        elif mode == "bigblob":
            endless(server, bytes(65536), length=size)(h, head)
        elif mode == "wrongdigest":
            send(h, 200, b"garbage" + layer[7:], head=head, ctype="application/octet-stream")
        else:
            send(h, 200, layer, head=head, ctype="application/octet-stream")

    server.routes.update(
        {
            "/v2/": lambda h, head: send(h, 200, b"{}", head=head),
            "/v2/charts/hello/manifests/": manifests,
            "/v2/charts/hello/blobs/": blobs,
            "/v2/charts/hello/tags/list": lambda h, head: send(
                h, 200, json.dumps({"name": "charts/hello", "tags": ["1.0.0"]}).encode(), head=head
            ),
        }
    )
    return server
