"""A real Prometheus on loopback and an exporter it scrapes, for the analysis tests and the demo.

`Exporter` serves `http_requests_total{service, status}` counters that grow at 20 requests a
second, a share `success` of them answered 200 and the rest 500 (the seed's success-rate query
reads exactly that). `running_prometheus` starts Debian's Prometheus (unpacked by
install-prometheus.sh) scraping it every second.
"""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.testenv.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


class Exporter:
    """`http_requests_total` for one service, with a success share the caller sets."""

    def __init__(self, service: str = "webapp") -> None:
        self.service = service
        self.success = 1.0
        self.ok = 0.0
        self.failed = 0.0
        self.stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                s = outer.service
                body = (
                    "# TYPE http_requests_total counter\n"
                    f'http_requests_total{{service="{s}",status="200"}} {outer.ok}\n'
                    f'http_requests_total{{service="{s}",status="500"}} {outer.failed}\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._traffic, daemon=True).start()

    def _traffic(self) -> None:
        while not self.stop.wait(0.1):
            self.ok += 2 * self.success
            self.failed += 2 * (1 - self.success)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()


def prometheus_binary() -> str:
    """The Prometheus binary, installed (cached) by install-prometheus.sh."""
    out = subprocess.run(
        ["bash", str(ROOT / "tests/testenv/install-prometheus.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


@contextlib.contextmanager
def running_prometheus(
    work: Path,
    exporter: Exporter | None = None,
    *,
    jobs: dict[str, str] | None = None,
    rule_files: tuple[Path, ...] = (),
    ready: str = "count_over_time(http_requests_total[10s])",
) -> Iterator[str]:
    """Prometheus scraping `exporter` (job webapp) and the `jobs` (name -> host:port) every
    second, evaluating `rule_files`; yields its URL once `ready` returns data (by default:
    the exporter was scraped twice)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = work / "prometheus.yml"
    targets = dict(jobs or {})
    if exporter is not None:
        targets["webapp"] = f"127.0.0.1:{exporter.port}"
    lines = ["global: {scrape_interval: 1s, evaluation_interval: 1s}"]
    if rule_files:
        lines += ["rule_files:"] + [f"  - '{f}'" for f in rule_files]
    lines.append("scrape_configs:")
    for job, target in targets.items():
        lines += [f"  - job_name: {job}", f"    static_configs: [{{targets: ['{target}']}}]"]
    config.write_text("\n".join(lines) + "\n")
    log = work / "prometheus.log"
    proc = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        query = url + "/api/v1/query?" + urllib.parse.urlencode({"query": ready})
        while True:
            try:
                with urllib.request.urlopen(query, timeout=2) as r:
                    if b'"value":[' in r.read():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"prometheus not ready: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
