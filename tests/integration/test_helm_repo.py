"""Helm chart repositories (`repoURL` + `chart` + `targetRevision`): a real `helm package` /
`helm repo index` repository served on loopback, real `helm template`, the real control
plane. Exact versions and constraints, digests, basic auth, and a repository that went down
after its chart was cached."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import Daemon, running
from tests.integration.test_sync import get

pytestmark = pytest.mark.cluster


class ChartServer:
    """A directory served over HTTP on 127.0.0.1, optionally behind basic auth."""

    def __init__(self, root: Path, auth: tuple[str, str] | None = None) -> None:
        self.root = root
        self.hits: list[str] = []
        expected = (
            "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else ""
        )
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if expected and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                    self.end_headers()
                    return
                hits.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def publish(helm: str, repo: Path, work: Path, name: str, version: str, data: str) -> None:
    """`helm package` a one-ConfigMap chart into `repo` and re-index it."""
    chart = work / f"{name}-{version}" / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    (chart / "values.yaml").write_text(f"greeting: {data}\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n  chart: {{ .Chart.Version | quote }}\n"
    )
    subprocess.run([helm, "package", str(chart), "-d", str(repo)], check=True, capture_output=True)
    subprocess.run([helm, "repo", "index", str(repo)], check=True, capture_output=True)


@pytest.fixture
def chart_repo(tmp_path: Path, helm_binary: str) -> Iterator[tuple[ChartServer, Path]]:
    repo = tmp_path / "charts"
    repo.mkdir()
    for version, data in (("1.0.0", "one"), ("1.2.0", "one-two"), ("2.0.0", "two")):
        publish(helm_binary, repo, tmp_path / "build", "hello", version, data)
    server = ChartServer(repo)
    yield server, repo
    server.close()


def chart_app(name: str, url: str, version: str, namespace: str, **helm: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"repoURL": url, "chart": "hello", "targetRevision": version}
    if helm:
        source["helm"] = helm
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": source,
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }


def cm_data(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    return dict((get(cluster, namespace, f"configmap/{name}") or {}).get("data") or {})


def healed_while_down(
    d: Daemon, cluster: Cluster, namespace: str, cm: str, want: tuple[str, str], warning: str
) -> None:
    """Once a poll has found the source down (`warning` logged), a hand edit of ConfigMap `cm`
    is still healed back to `want` (key, value) from what is cached."""
    wait_for(lambda: warning in d.log.read_text(), timeout=30, what="a poll finding it down")
    key, value = want
    patch = json.dumps({"data": {key: "changed by hand"}})
    cluster.kubectl("patch", "cm", cm, "-n", namespace, "-p", patch)
    wait_for(
        lambda: cm_data(cluster, namespace, cm).get(key) == value,
        timeout=30,
        what=f"{cm} healed with the source down",
    )


def test_a_chart_from_a_helm_repository_syncs_by_version_and_by_constraint(
    cluster: Cluster, namespace: str, tmp_path: Path, chart_repo: tuple[ChartServer, Path]
) -> None:
    """An exact version and a constraint (`1.*` -> 1.2.0, the highest 1.x) each render with
    real helm and sync; the status shows the chart version as the revision; helm values from
    the Application apply; index.yaml is read once per poll, each chart file once."""
    server, _ = chart_repo
    apps = [
        chart_app("exact", server.url, "1.0.0", namespace),
        chart_app("ranged", server.url, "1.*", namespace, valuesObject={"greeting": "hi"}),
    ]
    cfg = write_config(tmp_path, cluster, apps, reconcileInterval="60s")
    with running(cfg) as d:
        wait_for(lambda: d.synced("exact") and d.synced("ranged"), timeout=60, what="synced")
        assert cm_data(cluster, namespace, "exact-cm") == {"greeting": "one", "chart": "1.0.0"}
        assert cm_data(cluster, namespace, "ranged-cm") == {"greeting": "hi", "chart": "1.2.0"}
        assert d.status("ranged")["sync"]["revision"] == "1.2.0"
        assert d.status("exact")["sourceType"] == "Helm"
    assert server.hits.count("/index.yaml") == 1, server.hits
    assert server.hits.count("/hello-1.2.0.tgz") == 1 and "/hello-2.0.0.tgz" not in server.hits


def test_bad_chart_references_fail_with_the_reason_and_apply_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path, chart_repo: tuple[ChartServer, Path]
) -> None:
    """A version the index does not have names the versions it has; a chart archive whose
    digest differs from the index's is refused; nothing of either app is applied."""
    server, repo = chart_repo
    index = yaml.safe_load((repo / "index.yaml").read_text())
    for entry in index["entries"]["hello"]:
        if entry["version"] == "2.0.0":
            entry["digest"] = "0" * 64
    (repo / "index.yaml").write_text(yaml.safe_dump(index))
    apps = [
        chart_app("missing", server.url, "3.1.0", namespace),
        chart_app("tampered", server.url, "2.0.0", namespace),
    ]
    cfg = write_config(tmp_path, cluster, apps)
    with running(cfg) as d:

        def error(app: str) -> str:
            conds = d.status(app).get("conditions") or []
            return " ".join(c.get("message", "") for c in conds if c["type"] == "ComparisonError")

        wait_for(lambda: error("missing") and error("tampered"), timeout=30, what="errors")
        assert "no version matches '3.1.0' (available: 2.0.0, 1.2.0, 1.0.0)" in error("missing")
        assert "the index says sha256:" + "0" * 64 in error("tampered")
    assert get(cluster, namespace, "configmap/missing-cm") is None
    assert get(cluster, namespace, "configmap/tampered-cm") is None


def test_credentials_and_a_repository_that_goes_down(
    cluster: Cluster, namespace: str, tmp_path: Path, helm_binary: str
) -> None:
    """Basic auth from a `repositories` entry (type helm, passwordFile) opens the repository;
    once the chart is cached, the repository going away does not stop the app from rendering
    and self-healing."""
    repo = tmp_path / "private"
    repo.mkdir()
    publish(helm_binary, repo, tmp_path / "build", "hello", "1.0.0", "private")
    server = ChartServer(repo, auth=("reader", "s3cret"))
    try:
        (tmp_path / "pw").write_text("s3cret\n")
        cfg = write_config(
            tmp_path,
            cluster,
            [chart_app("private", server.url, "1.0.0", namespace)],
            reconcileInterval="2s",
        )
        data = yaml.safe_load(cfg.read_text())
        data["repositories"] = [
            {
                "url": server.url,
                "type": "helm",
                "username": "reader",
                "passwordFile": str(tmp_path / "pw"),
            }
        ]
        cfg.write_text(yaml.safe_dump(data))
        with running(cfg) as d:
            wait_for(lambda: d.synced("private"), timeout=60, what="synced with credentials")
            assert cm_data(cluster, namespace, "private-cm")["greeting"] == "private"
            server.close()
            healed_while_down(
                d,
                cluster,
                namespace,
                "private-cm",
                ("greeting", "private"),
                "chart repository unreachable; using its last index",
            )
            assert d.synced("private")
    finally:
        server.close()


def test_wrong_credentials_are_named(
    cluster: Cluster, namespace: str, tmp_path: Path, helm_binary: str
) -> None:
    """Without the right password the error says the repository answered 401."""
    repo = tmp_path / "private"
    repo.mkdir()
    publish(helm_binary, repo, tmp_path / "build", "hello", "1.0.0", "private")
    server = ChartServer(repo, auth=("reader", "s3cret"))
    try:
        cfg = write_config(tmp_path, cluster, [chart_app("denied", server.url, "1.0.0", namespace)])
        with running(cfg) as d:
            wait_for(
                lambda: (
                    "answered 401 (credentials?)" in str(d.status("denied").get("conditions") or "")
                ),
                timeout=30,
                what="the 401 error",
            )
        assert get(cluster, namespace, "configmap/denied-cm") is None
    finally:
        server.close()


class Registry:
    """A real OCI registry (CNCF distribution, Debian's docker-registry) on 127.0.0.1 over
    plain HTTP, optionally with htpasswd (bcrypt) basic auth."""

    def __init__(self, work: Path, auth: tuple[str, str] | None = None) -> None:
        import socket
        import time
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # bcrypt through the system's libxcrypt, for the htpasswd file

        binary = (
            subprocess.run(
                ["bash", str(Path(__file__).parents[1] / "testenv" / "install-registry.sh")],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config: dict[str, Any] = {
            "version": 0.1,
            "storage": {"filesystem": {"rootdirectory": str(work / "store")}},
            "http": {"addr": f"127.0.0.1:{port}"},
            "log": {"level": "error"},
        }
        if auth:
            hashed = crypt.crypt(auth[1], crypt.mksalt(crypt.METHOD_BLOWFISH))
            (work / "htpasswd").write_text(f"{auth[0]}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "charts", "path": str(work / "htpasswd")}}
        (work / "registry.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [binary, "serve", str(work / "registry.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.host = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("registry did not start")

    def push(
        self, helm: str, work: Path, version: str, data: str, auth: tuple[str, str] | None = None
    ) -> None:
        repo = work / "pkg"
        repo.mkdir(exist_ok=True)
        publish(helm, repo, work / f"b-{version}", "hello", version, data)
        env = {**os.environ, "HELM_REGISTRY_CONFIG": str(work / "reg.json")}
        if auth:
            subprocess.run(
                [
                    helm,
                    "registry",
                    "login",
                    self.host,
                    "--plain-http",
                    "-u",
                    auth[0],
                    "--password-stdin",
                ],
                input=auth[1],
                text=True,
                check=True,
                capture_output=True,
                env=env,
            )
        subprocess.run(
            [
                helm,
                "push",
                str(repo / f"hello-{version}.tgz"),
                f"oci://{self.host}/charts",
                "--plain-http",
            ],
            check=True,
            capture_output=True,
            env=env,
        )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_oci_charts_sync_by_constraint_with_credentials_and_survive_the_registry_going_down(
    cluster: Cluster, namespace: str, tmp_path: Path, helm_binary: str
) -> None:
    """A chart pushed with `helm push` to a real registry behind htpasswd: `oci://` with a
    constraint, and Argo CD's scheme-less form with `enableOCI`, both sync with the
    credentials of a repositories entry; the password never appears in a process argument
    (login reads it on stdin); with the registry stopped, the cached chart keeps healing."""
    auth = ("puller", "0ci-s3cret")
    registry = Registry(tmp_path, auth)
    try:
        registry.push(helm_binary, tmp_path, "1.0.0", "oci-one", auth)
        registry.push(helm_binary, tmp_path, "1.1.0", "oci-one-one", auth)
        (tmp_path / "pw").write_text(auth[1] + "\n")
        scheme = chart_app("oci-ranged", f"oci://{registry.host}/charts", "~1.0", namespace)
        bare = chart_app("oci-bare", f"{registry.host}/charts", "1.1.0", namespace)
        cfg = write_config(tmp_path, cluster, [scheme, bare], reconcileInterval="2s")
        data = yaml.safe_load(cfg.read_text())
        data["repositories"] = [
            {
                "url": f"{registry.host}/charts",
                "type": "helm",
                "enableOCI": True,
                "insecureOCIForceHttp": True,
                "username": auth[0],
                "passwordFile": str(tmp_path / "pw"),
            }
        ]
        cfg.write_text(yaml.safe_dump(data))
        with running(cfg) as d:
            wait_for(
                lambda: d.synced("oci-ranged") and d.synced("oci-bare"), timeout=90, what="synced"
            )
            assert cm_data(cluster, namespace, "oci-ranged-cm")["chart"] == "1.0.0"
            assert cm_data(cluster, namespace, "oci-bare-cm")["greeting"] == "oci-one-one"
            assert d.status("oci-ranged")["sync"]["revision"] == "1.0.0"
            registry.close()
            healed_while_down(
                d,
                cluster,
                namespace,
                "oci-ranged-cm",
                ("chart", "1.0.0"),
                "OCI registry unreachable",
            )
            assert auth[1] not in d.log.read_text()
    finally:
        if registry.proc.poll() is None:
            registry.close()


def test_an_oci_chart_without_credentials_or_with_a_bad_reference_is_refused(
    cluster: Cluster, namespace: str, tmp_path: Path, helm_binary: str
) -> None:
    """No credentials for a registry that wants them, or a scheme-less repoURL without
    enableOCI: each fails with the reason, nothing applied."""
    auth = ("puller", "0ci-s3cret")
    registry = Registry(tmp_path, auth)
    try:
        registry.push(helm_binary, tmp_path, "1.0.0", "x", auth)
        denied = chart_app("oci-denied", f"oci://{registry.host}/charts", "1.0.0", namespace)
        bare = chart_app("oci-unknown", f"{registry.host}/other", "1.0.0", namespace)
        cfg = write_config(tmp_path, cluster, [denied, bare])
        data = yaml.safe_load(cfg.read_text())
        data["repositories"] = [
            {"url": f"{registry.host}/charts", "type": "helm", "insecureOCIForceHttp": True}
        ]
        cfg.write_text(yaml.safe_dump(data))
        with running(cfg) as d:

            def error(app: str) -> str:
                return str(d.status(app).get("conditions") or "")

            wait_for(
                lambda: "OCI chart" in error("oci-denied") and "enableOCI" in error("oci-unknown"),
                timeout=60,
                what="both errors",
            )
            assert "credential" in error("oci-denied").lower(), error("oci-denied")
        assert get(cluster, namespace, "configmap/oci-denied-cm") is None
        assert get(cluster, namespace, "configmap/oci-unknown-cm") is None
    finally:
        registry.close()


def test_a_chart_in_git_gets_its_dependencies_from_the_repository(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    git_repo: GitRepo,
    chart_repo: tuple[ChartServer, Path],
) -> None:
    """A chart in git whose Chart.yaml depends on `hello` from a chart repository (constraint
    `~1.2`) and on a file:// chart beside it, without charts/ committed: the dependencies are
    fetched (cached like any chart) or copied, and rendered as subcharts with the parent's
    values for them, as `helm dependency build` would (the repository named by URL, or as
    `@name` of a `repositories` entry); a dependency version the repository lacks fails the
    app naming it, nothing applied."""
    server, _ = chart_repo

    def umbrella(version: str, repository: str) -> dict[str, str]:
        return {
            "umbrella/Chart.yaml": (
                "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n"
                f'  - name: hello\n    version: "{version}"\n    repository: "{repository}"\n'
                "  - name: local\n    version: 0.1.0\n    repository: file://../local\n"
            ),
            "local/Chart.yaml": "apiVersion: v2\nname: local\nversion: 0.1.0\n",
            "local/templates/cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-dep\ndata:\n  a: b\n"
            ),
            "umbrella/values.yaml": "hello:\n  greeting: from-umbrella\n",
            "umbrella/templates/own.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: umbrella-own\ndata:\n  x: y\n"
            ),
        }

    git_repo.write(umbrella("~1.2", "@charts"))
    app = application("umbrella", git_repo.url, "umbrella", namespace)
    cfg = write_config(tmp_path, cluster, [app])
    data = yaml.safe_load(cfg.read_text())
    data["repositories"] = [{"url": server.url, "type": "helm", "name": "charts"}]
    cfg.write_text(yaml.safe_dump(data))
    with running(cfg) as d:
        wait_for(lambda: d.synced("umbrella"), timeout=60, what="synced")
        assert cm_data(cluster, namespace, "umbrella-cm") == {
            "greeting": "from-umbrella",
            "chart": "1.2.0",
        }
        assert get(cluster, namespace, "configmap/umbrella-own") is not None
        assert get(cluster, namespace, "configmap/local-dep") is not None, "file:// dependency"
        git_repo.write(umbrella("9.9.9", server.url))
        d.api("/api/v1/applications/umbrella/refresh", method="POST")
        wait_for(
            lambda: "no version matches '9.9.9'" in str(d.status("umbrella").get("conditions")),
            timeout=30,
            what="the missing dependency version named",
        )
        assert cm_data(cluster, namespace, "umbrella-cm")["chart"] == "1.2.0", "nothing applied"


def test_kustomize_helm_charts_with_build_options(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    git_repo: GitRepo,
    chart_repo: tuple[ChartServer, Path],
) -> None:
    """A kustomization with `helmCharts:` renders with `kustomizeBuildOptions: --enable-helm`
    (Argo CD's kustomize.buildOptions), pulling the chart from the repository and leaving the
    checkout as committed; without the option kustomize's own error says what is missing; a
    flag that would run plugins is refused when the config loads, naming it."""
    server, _ = chart_repo
    git_repo.write(
        {
            "kz/kustomization.yaml": (
                "helmCharts:\n  - name: hello\n"
                f"    repo: {server.url}\n    version: 1.2.0\n    releaseName: kz\n"
                "    valuesInline:\n      greeting: kustomized\n"
            )
        }
    )
    app = application("kz", git_repo.url, "kz", namespace)
    cfg = write_config(tmp_path, cluster, [app], kustomizeBuildOptions="--enable-helm")
    with running(cfg) as d:
        wait_for(lambda: d.synced("kz"), timeout=60, what="synced")
        assert cm_data(cluster, namespace, "kz-cm") == {"greeting": "kustomized", "chart": "1.2.0"}
    checkouts = list((tmp_path / "cache").rglob("kz/charts"))
    assert not checkouts, f"kustomize wrote into the shared checkout: {checkouts}"

    (tmp_path / "plain").mkdir()
    (tmp_path / "bad").mkdir()
    plain = write_config(tmp_path / "plain", cluster, [app])
    with running(plain) as d:
        wait_for(
            lambda: "enable-helm" in str(d.status("kz").get("conditions") or ""),
            timeout=30,
            what="kustomize's error about --enable-helm",
        )

    bad = write_config(tmp_path / "bad", cluster, [app], kustomizeBuildOptions="--enable-exec")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "gitopsd"), "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "'--enable-exec' is not allowed" in r.stderr, r.stderr
