"""Hostile Helm chart sources against the real daemon, real helm and the real control plane:
archive bombs, links and escaping paths, oversized, slow and aliased index.yaml files, and a
garbage OCI registry. Each leaves its app a ComparisonError naming the chart and the reason,
applies and prunes nothing, and the daemon stays small and responsive."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Cluster, wait_for, write_config
from tests.hostile import chartservers as cs
from tests.integration.test_daemon import Daemon, running
from tests.integration.test_helm_repo import ChartServer, Registry, chart_app, cm_data
from tests.integration.test_sync import get

pytestmark = pytest.mark.cluster
MB = 1024 * 1024


def comparison_error(d: Daemon, app: str) -> str:
    conds = d.status(app).get("conditions") or []
    return " ".join(c.get("message", "") for c in conds if c["type"] == "ComparisonError")


def peak_rss(d: Daemon) -> int:
    """The daemon's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def named(app: dict[str, Any], chart: str) -> dict[str, Any]:
    app["spec"]["source"]["chart"] = chart
    return app


# name -> (members of <name>-1.0.0.tgz, what the error must say)
ARCHIVES: dict[str, tuple[list[Any], str]] = {
    "symlink": (
        [cs.member("symlink/templates/cm.yaml", kind=tarfile.SYMTYPE, link="/etc/passwd")],
        "archive member 'symlink/templates/cm.yaml' is a symbolic link (to '/etc/passwd')",
    ),
    "hardlink": (
        [cs.member("hardlink/templates/x.yaml", kind=tarfile.LNKTYPE, link="hardlink/Chart.yaml")],
        "archive member 'hardlink/templates/x.yaml' is a hard link (to 'hardlink/Chart.yaml')",
    ),
    "device": (
        [cs.member("device/templates/tty", kind=tarfile.CHRTYPE)],
        "archive member 'device/templates/tty' is a device file",
    ),
    "absolute": (
        [cs.member("/tmp/gitopsd-chart-escape.yaml", b"x: 1\n")],
        "archive member '/tmp/gitopsd-chart-escape.yaml' is an absolute path",
    ),
    "dotdot": (
        [cs.member("dotdot/../../gitopsd-chart-escape.yaml", b"x: 1\n")],
        "archive member 'dotdot/../../gitopsd-chart-escape.yaml' has an empty, '.' or '..' "
        "component",
    ),
    "emptypart": (
        [cs.member("emptypart//templates/cm.yaml", cs.CM)],
        "archive member 'emptypart//templates/cm.yaml' has an empty, '.' or '..' component",
    ),
    "manyfiles": (
        [cs.member(f"manyfiles/files/f{i}.txt", b"x") for i in range(30)],
        "the archive has more than 20 files (maxChartFiles; at member 'manyfiles/files/f19.txt')",
    ),
    "toobig": (
        [cs.member(f"toobig/files/f{i}.bin", bytes(3 * MB)) for i in range(5)],
        "the archive unpacks past 10485760 bytes (maxChartBytes; at member 'toobig/files/f3.bin')",
    ),
}


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Iterator[tuple[ChartServer, Path]]:
    """A chart repository with `hello` 1.0.0 (good) and one chart per ARCHIVES case."""
    repo = tmp_path / "repo"
    repo.mkdir()
    entries = {}
    for name, (members, _) in ARCHIVES.items():
        chart = cs.member(f"{name}/Chart.yaml", cs.CHART_YAML.replace(b"hello", name.encode()))
        data = cs.write_archive(repo / f"{name}-1.0.0.tgz", [chart, *members])
        entries[name] = [
            {
                "name": name,
                "version": "1.0.0",
                "digest": cs.digest(data)[7:],
                "urls": [f"{name}-1.0.0.tgz"],
            }
        ]
    cs.write_archive(
        repo / "hello-1.0.0.tgz",
        [cs.member("hello/Chart.yaml", cs.CHART_YAML), cs.member("hello/templates/cm.yaml", cs.CM)],
    )
    entries["hello"] = [cs.index_entry(repo, "1.0.0")]
    (repo / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": entries}))
    server = ChartServer(repo)
    yield server, repo
    server.close()


def test_hostile_chart_archives_are_refused_naming_chart_version_and_member(
    cluster: Cluster, namespace: str, tmp_path: Path, hostile_repo: tuple[ChartServer, Path]
) -> None:
    """A 1.5 MB chart with a matching digest that unpacks to 1.5 GB, links, a device file,
    absolute, `..` and empty path components, too many files and too many bytes: each app
    shows a ComparisonError naming the chart, the version and the member; the synced app whose
    new version is the bomb keeps its resources; the daemon's peak RSS stays small."""
    server, repo = hostile_repo
    apps = [named(chart_app(name, server.url, "1.0.0", namespace), name) for name in ARCHIVES]
    apps.append(chart_app("bomb", server.url, "*", namespace))
    cfg = write_config(
        tmp_path,
        cluster,
        apps,
        reconcileInterval="2s",
        maxChartFiles=20,
        maxChartBytes=10 * MB,
        maxChartFileBytes=5 * MB,
    )
    with running(cfg) as d:
        wait_for(lambda: d.synced("bomb"), timeout=60, what="bomb synced at 1.0.0")
        for name, (_, expected) in ARCHIVES.items():
            text = wait_for(lambda n=name: comparison_error(d, n), timeout=30, what=name)
            assert f"chart {name} 1.0.0: {expected}" in text, text
        cs.write_bomb(repo / "hello-2.0.0.tgz", 1500 * MB, version="2.0.0")
        assert (repo / "hello-2.0.0.tgz").stat().st_size < 2 * MB
        cs.write_index_entries(repo, "hello", ["1.0.0", "2.0.0"])
        text = wait_for(lambda: comparison_error(d, "bomb"), timeout=90, what="the bomb refused")
        assert (
            "chart hello 2.0.0: archive member 'hello/templates/big.yaml' is larger than "
            "5242880 bytes (maxChartFileBytes)"
        ) in text, text
        assert cm_data(cluster, namespace, "bomb-cm") == {"chart": "1.0.0"}  # nothing pruned
        rss = peak_rss(d)
        print(f"daemon peak RSS with the 1.5 GB chart bomb: {rss / MB:.0f} MB")
        assert rss < 400 * MB, f"daemon peak RSS {rss / MB:.0f} MB"
        assert d.api("/healthz").status_code == 200
    for name in ARCHIVES:
        assert get(cluster, namespace, f"configmap/{name}-cm") is None
    assert not Path("/tmp/gitopsd-chart-escape.yaml").exists()
    assert not (tmp_path / "cache" / "gitopsd-chart-escape.yaml").exists()


class Latency:
    """Polls the daemon's /healthz every 50 ms and keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.stop = url, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                httpx.get(self.url + "/healthz", timeout=60)
            except httpx.HTTPError:
                pass
            self.worst = max(self.worst, time.monotonic() - start)
            time.sleep(0.05)

    def close(self) -> float:
        self.stop.set()
        self.thread.join(70)
        return self.worst


def test_index_yaml_is_bounded_parsed_off_the_loop_and_may_redirect(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A 16 MB index.yaml is parsed without stalling the API (every /healthz answers within
    3 s; parsed on the event loop it stalled 8 s) and its chart syncs; an endless index stops
    at maxChartIndexBytes, a trickling one at repoTimeout, an alias bomb at maxYamlNodes, a
    redirect loop after a few hops, each error naming the repository URL; a redirect to
    another host is followed (as helm does)."""
    good_dir = tmp_path / "good"
    good_dir.mkdir()
    cs.write_archive(
        good_dir / "hello-1.0.0.tgz",
        [cs.member("hello/Chart.yaml", cs.CHART_YAML), cs.member("hello/templates/cm.yaml", cs.CM)],
    )
    entry = yaml.safe_dump({"hello": [cs.index_entry(good_dir, "1.0.0")]}).encode()
    big = cs.big_index(16 * MB) + b"\n".join(b"  " + line for line in entry.splitlines()) + b"\n"
    (good_dir / "index.yaml").write_bytes(big)
    good = ChartServer(good_dir)
    endless = cs.HostileServer({})
    endless.routes["/index.yaml"] = cs.endless(endless, b"# padding\n" * 6554)
    slow = cs.HostileServer({})
    slow.routes["/index.yaml"] = cs.endless(slow, b"#", every=0.5)
    bomb = cs.HostileServer({})
    bomb_text = "entries:\n" + "".join(
        f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '0'}]\n" for i in range(9)
    )
    bomb.routes["/index.yaml"] = lambda h, head: cs.send(h, 200, bomb_text.encode(), head=head)
    loop = cs.HostileServer({})
    loop.routes["/"] = lambda h, head: cs.redirect(loop.url + h.path + "x")(h, head)
    moved = cs.HostileServer({})
    moved.routes["/"] = lambda h, head: cs.redirect(good.url + h.path)(h, head)
    servers = {"big": good.url, "endless": endless.url, "slow": slow.url, "aliases": bomb.url}
    servers |= {"loop": loop.url, "moved": moved.url}
    apps = [chart_app(name, url, "1.0.0", namespace) for name, url in servers.items()]
    cfg = write_config(
        tmp_path,
        cluster,
        apps,
        repoTimeout="5s",
        maxChartIndexBytes=24 * MB,
        reconcileInterval="5s",
    )
    try:
        with running(cfg) as d:
            latency = Latency(d.url)
            try:
                wait_for(lambda: d.synced("big") and d.synced("moved"), timeout=120, what="synced")
                errors: dict[str, str] = {}

                def all_failed() -> bool:
                    for name in ("endless", "slow", "aliases", "loop"):
                        errors[name] = comparison_error(d, name)
                    return all(errors.values())

                wait_for(all_failed, timeout=60, what=f"errors (so far {errors})")
                time.sleep(12)  # two more reads of the big index (every reconcileInterval)
            finally:
                worst = latency.close()
            print(f"slowest /healthz while reading a 16 MB index: {worst:.2f}s")
            assert worst < 3.0, f"/healthz took {worst:.1f}s while index.yaml was parsed"
            assert cm_data(cluster, namespace, "moved-cm") == {"chart": "1.0.0"}
            assert (
                f"{endless.url}/index.yaml is larger than 25165824 bytes (maxChartIndexBytes); "
                "stopped reading"
            ) in errors["endless"]
            reads = endless.hits.count("/index.yaml")
            # It stopped reading: the limit plus what socket buffers hold, far below what 5 s
            # of an unbounded read at loopback speed would take.
            assert endless.sent / reads < 64 * MB, (endless.sent, reads)
            assert (
                f"{slow.url}/index.yaml did not answer in full within 5s (repoTimeout)"
                in errors["slow"]
            )
            assert f"Helm repository {bomb.url}: index.yaml" in errors["aliases"]
            assert "aliases expand this YAML past" in errors["aliases"]
            assert (
                f"{loop.url}/index.yaml" in errors["loop"] and "redirect" in errors["loop"].lower()
            )
    finally:
        for s in (good, endless, slow, bomb, loop, moved):
            s.close()
    for name in ("endless", "slow", "aliases", "loop"):
        assert get(cluster, namespace, f"configmap/{name}-cm") is None


OCI_CASES = {
    # mode -> what the app's error must say (one of, for helm's wording of a refused manifest)
    "bigblob": "passed its memory limit",
    "wrongdigest": "mismatched digest",
    "hang": "the registry did not answer within 5s (repoTimeout); helm was stopped",
    "redirect": "127.0.0.1:1",
    "bigmanifest": "exceeds|manifest does not contain",
    "link": "archive member 'hello/templates/cm.yaml' is a symbolic link (to '/etc/passwd')",
}


def test_a_garbage_oci_registry_leaves_clear_errors_and_a_bounded_helm(
    cluster: Cluster, namespace: str, tmp_path: Path, helm_binary: str
) -> None:
    """OCI registries that declare a 3 GB chart layer, serve bytes other than the digest, never
    answer, redirect elsewhere or send an endless manifest, and a real registry holding a chart
    with a symbolic link: each app shows a ComparisonError naming the chart and the reason
    within the timeout, and helm's memory stays bounded."""
    good = [
        cs.member("hello/Chart.yaml", cs.CHART_YAML),
        cs.member("hello/templates/cm.yaml", cs.CM),
    ]
    layer = cs.write_archive(tmp_path / "good.tgz", good)
    servers = {mode: cs.registry(layer, mode=mode) for mode in OCI_CASES if mode != "link"}
    real = Registry(tmp_path)
    link = [cs.member("hello/Chart.yaml", cs.CHART_YAML)]
    link.append(cs.member("hello/templates/cm.yaml", kind=tarfile.SYMTYPE, link="/etc/passwd"))
    (tmp_path / "pkg").mkdir()
    cs.write_archive(tmp_path / "pkg" / "hello-1.0.0.tgz", link)
    subprocess.run(
        [
            helm_binary,
            "push",
            str(tmp_path / "pkg" / "hello-1.0.0.tgz"),
            f"oci://{real.host}/charts",
            "--plain-http",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "HELM_REGISTRY_CONFIG": str(tmp_path / "reg.json")},
    )
    hosts = {mode: s.host for mode, s in servers.items()} | {"link": real.host}
    apps = [
        chart_app(f"oci-{m}", f"oci://{h}/charts", "1.0.0", namespace) for m, h in hosts.items()
    ]
    cfg = write_config(tmp_path, cluster, apps, repoTimeout="5s", maxChartBytes=10 * MB)
    data = yaml.safe_load(cfg.read_text())
    data["repositories"] = [
        {"url": f"{h}/charts", "type": "helm", "insecureOCIForceHttp": True} for h in hosts.values()
    ]
    cfg.write_text(yaml.safe_dump(data))
    try:
        with running(cfg) as d:
            errors: dict[str, str] = {}

            def all_failed() -> bool:
                errors.update({m: comparison_error(d, f"oci-{m}") for m in OCI_CASES})
                return all(errors.values())

            wait_for(all_failed, timeout=120, what=f"errors (so far {json.dumps(errors)})")
            for mode, expected in OCI_CASES.items():
                assert f"oci://{hosts[mode]}/charts/hello" in errors[mode], (mode, errors[mode])
                assert any(e in errors[mode] for e in expected.split("|")), (mode, errors[mode])
            assert peak_rss(d) < 400 * MB
    finally:
        for s in servers.values():
            s.close()
        real.close()
    for mode in OCI_CASES:
        assert get(cluster, namespace, f"configmap/oci-{mode}-cm") is None
