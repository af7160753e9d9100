"""Disaster recovery: an Argo CD installation's backup files, written the way the seed's backup
CronJob writes them, imported into a gitopsd config tree that syncs the same apps."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster
GITOPSD = str(Path(sys.executable).parent / "gitopsd")


def kubectl_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """What `kubectl get ... -o yaml` prints: a List whose items carry server fields."""
    out = []
    for i, item in enumerate(items):
        item = json.loads(json.dumps(item))
        meta = item.setdefault("metadata", {})
        meta.update(
            uid=f"0000-{i}",
            resourceVersion=str(1000 + i),
            creationTimestamp="2026-01-01T00:00:00Z",
            managedFields=[{"manager": "argocd-server", "operation": "Update"}],
        )
        meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = (
            json.dumps(item)
        )
        out.append(item)
    return {"apiVersion": "v1", "kind": "List", "items": out, "metadata": {"resourceVersion": ""}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cluster_secret(name: str, cluster: Cluster) -> dict[str, Any]:
    """An Argo CD cluster Secret for the test control plane (client certificate auth)."""
    kube = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    c, u = kube["clusters"][0]["cluster"], kube["users"][0]["user"]
    config = {
        "tlsClientConfig": {
            "insecure": False,
            "caData": c["certificate-authority-data"],
            "certData": u["client-certificate-data"],
            "keyData": u["client-key-data"],
        }
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"cluster-{name}",
            "namespace": "argocd",
            "labels": {"argocd.argoproj.io/secret-type": "cluster", "env": "edge"},
        },
        "type": "Opaque",
        "data": {"name": b64(name), "server": b64(c["server"]), "config": b64(json.dumps(config))},
    }


def test_argo_cd_backup_files_import_into_a_config_that_syncs_the_same_apps(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """applications.yaml, projects.yaml, clusters.yaml and configmaps.yaml as kubectl writes
    them become a config tree: the cluster Secret a kubeconfig (mode 0600), argocd-cm's
    reconciliation timeout the poll interval, argocd-rbac-cm a line of the report; `run
    --once` on it syncs both apps (one to in-cluster, one to the named cluster)."""
    git_repo.write({"a/cm.yaml": configmap("imported-a"), "b/cm.yaml": configmap("imported-b")})
    app_a = application("imported-a", git_repo.url, "a", namespace)
    app_a["spec"]["project"] = "edge"
    app_a["status"] = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    app_a["operation"] = {"sync": {"revision": "HEAD"}}
    app_b = application("imported-b", git_repo.url, "b", namespace)
    app_b["spec"]["destination"] = {"name": "edge", "namespace": namespace}
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "edge", "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": namespace}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }
    cms = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": "argocd"},
            "data": {
                "timeout.reconciliation": "120s",
                "application.resourceTrackingMethod": "annotation",
                "url": "https://argocd.example.com",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-rbac-cm", "namespace": "argocd"},
            "data": {"policy.csv": "p, role:dev, applications, get, */*, allow\n"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": "argocd"},
            "data": {"ca.crt": "x"},
        },
    ]
    backup = tmp_path / "backup"
    backup.mkdir()
    for name, items in (
        ("applications.yaml", [app_a, app_b]),
        ("projects.yaml", [project]),
        ("clusters.yaml", [cluster_secret("edge", cluster)]),
        ("configmaps.yaml", cms),
    ):
        (backup / name).write_text(yaml.safe_dump(kubectl_list(items)))
    dest = tmp_path / "imported"
    r = subprocess.run(
        [
            GITOPSD,
            "import",
            "argocd",
            *sorted(str(p) for p in backup.iterdir()),
            "--to",
            str(dest),
            "--in-cluster-kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "2 Application, 1 AppProject" in r.stdout, r.stdout
    assert "argocd-rbac-cm" in r.stdout and "policy.csv" in r.stdout
    assert "pending operation is not carried over" in r.stdout
    assert "ConfigMap/kube-root-ca.crt): not carried over" in r.stdout
    report = (dest / "IMPORT-REPORT.txt").read_text()
    assert "url not carried over" in report
    config = yaml.safe_load((dest / "gitopsd.yaml").read_text())
    assert config["settings"]["reconcileInterval"] == "120s"
    edge = next(c for c in config["clusters"] if c["name"] == "edge")
    assert edge["labels"] == {"env": "edge"}
    assert (dest / edge["kubeconfig"]).stat().st_mode & 0o777 == 0o600
    apps = list(yaml.safe_load_all((dest / "apps" / "applications.yaml").read_text()))
    assert all("status" not in a and "uid" not in a["metadata"] for a in apps)
    assert all(
        "kubectl.kubernetes.io/last-applied-configuration"
        not in (a["metadata"].get("annotations") or {})
        for a in apps
    )

    run = subprocess.run(
        [GITOPSD, "run", "-c", str(dest / "gitopsd.yaml"), "--once", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert get(cluster, namespace, "configmap/imported-a") is not None
    assert get(cluster, namespace, "configmap/imported-b") is not None


def test_an_import_into_a_used_directory_or_of_a_broken_secret_writes_nothing(
    tmp_path: Path,
) -> None:
    """A destination that is not empty, or a cluster Secret without a server, is refused with
    the file and resource named, and no directory is left behind."""
    bad = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "cluster-x",
            "labels": {"argocd.argoproj.io/secret-type": "cluster"},
        },
        "data": {"name": b64("x")},
    }
    src = tmp_path / "clusters.yaml"
    src.write_text(yaml.safe_dump(kubectl_list([bad])))
    dest = tmp_path / "out"
    r = subprocess.run(
        [GITOPSD, "import", "argocd", str(src), "--to", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout
    assert (
        f"{src} document 1 items[0] (Secret/cluster-x): a cluster Secret needs data.server"
        in r.stderr
    )
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["clusters.yaml"]
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    src.write_text(yaml.safe_dump(kubectl_list([])))
    r = subprocess.run(
        [GITOPSD, "import", "argocd", str(src), "--to", str(used)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "is not an empty directory" in r.stderr
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


POST_SYNC = """apiVersion: batch/v1
kind: Job
metadata:
  name: smoke
  annotations:
    argocd.argoproj.io/hook: PostSync
    argocd.argoproj.io/hook-delete-policy: BeforeHookCreation
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: "busybox:1"}]
"""
WRITES = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$")


def api_writes(cluster: Cluster) -> dict[tuple[str, str], float]:
    """(verb, resource) -> count of real (not dry-run) writes the API server has answered."""
    with cluster.sync_client() as c:
        text = c.get("/metrics").text
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = WRITES.match(line)
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in re.findall(r'\w+="[^"]*"', m.group(1)))
        labels = {k: v.strip('"') for k, v in labels.items()}
        if labels.get("verb") not in ("POST", "PATCH", "PUT", "DELETE", "APPLY"):
            continue
        if labels.get("dry_run") or labels.get("resource") not in ("configmaps", "jobs"):
            continue
        if labels.get("subresource"):
            continue
        key = (labels["verb"], labels["resource"])
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def test_backup_wipe_restore_converges_without_a_write(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Backup, then lose stateDir, cacheDir and the in-cluster inventory; restore into a new
    config directory: the daemon started on it finds everything right. The API server counts
    no ConfigMap or Job written or deleted (no apply, no hook re-run, no prune), and the
    history is the one backed up."""
    git_repo.write(
        {"a/cm.yaml": configmap("dr-a"), "a/cm2.yaml": configmap("dr-b"), "a/post.yaml": POST_SYNC}
    )
    backups = tmp_path / "backups"
    cfg = write_config(
        tmp_path,
        cluster,
        [application("dr", git_repo.url, "a", namespace)],
        reconcileInterval="2s",
        backup={"dir": str(backups), "keep": 2, "schedule": "0 2 * * *"},
    )
    with running(cfg) as d:
        wait_for(lambda: d.synced("dr"), timeout=60, what="synced")
        wait_for(
            lambda: (
                (get(cluster, namespace, "job/smoke") or {}).get("status", {}).get("succeeded") == 1
            ),
            timeout=30,
            what="the PostSync hook done",
        )
        history = d.status("dr")["history"]
        # The daemon's own backups (POST /api/v1/backup; the schedule uses the same path).
        for _ in range(3):
            r = d.api("/api/v1/backup", method="POST", token=d.local_token())
            assert r.status_code == 201, r.text
            time.sleep(1.1)  # archives are named by the second
        assert len(list(backups.glob("gitopsd-backup-*.tar.gz"))) == 2, "keep: 2"
        assert Path(r.json()["path"]).exists() and r.json()["bytes"] > 0
        assert "gitopsd_backup_last_success_timestamp_seconds" in d.api("/metrics").text
    archive = tmp_path / "backup.tar.gz"
    r = subprocess.run(
        [GITOPSD, "backup", "-c", str(cfg), "-o", str(archive)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "1 inventory" in r.stdout and "1 state" in r.stdout, r.stdout
    assert archive.stat().st_mode & 0o777 == 0o600

    shutil.rmtree(tmp_path / "state")
    shutil.rmtree(tmp_path / "cache")
    cluster.kubectl("delete", "configmap", "gitopsd-inventory.dr", "-n", "gitopsd-test-inventory")
    restored = tmp_path / "restored"
    # The archive is not signed: the operator confirms where its config keeps state.
    state = ["--state-dir", str(tmp_path / "state")]
    dry = subprocess.run(
        [GITOPSD, "restore", str(archive), "--to", str(restored), "--dry-run", *state],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would restore the state of dr" in dry.stdout
    assert "would restore the inventory of dr" in dry.stdout
    assert not restored.exists() and not (tmp_path / "state").exists(), "a dry run writes nothing"
    r = subprocess.run(
        [GITOPSD, "restore", str(archive), "--to", str(restored), *state],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "restored the inventory of dr" in r.stdout, r.stdout
    # Earlier tests' namespaces, deleted without waiting, must be gone: the namespace
    # controller deleting their contents would count as writes here.
    wait_for(
        lambda: "Terminating" not in cluster.kubectl("get", "namespaces", "--no-headers"),
        timeout=120,
        what="no namespace terminating",
    )
    before = api_writes(cluster)
    with running(restored / "gitopsd.yaml") as d:
        wait_for(lambda: d.synced("dr"), timeout=60, what="synced after the restore")
        time.sleep(6)  # a few reconciles (every 2 s)
        assert d.status("dr")["history"] == history, "history intact"
        assert d.synced("dr")
        own = [
            line
            for line in d.api("/metrics").text.splitlines()
            if line.startswith("argocd_app_k8s_request_total{")
            and 'dry_run="false"' in line
            and any(f'verb="{v}"' in line for v in ("update", "create", "delete", "patch"))
        ]
        assert not own, f"the daemon's own writes after the restore: {own}"
    after = api_writes(cluster)
    changed = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    assert not {k: v for k, v in changed.items() if v}, changed
    assert (get(cluster, namespace, "job/smoke") or {}).get("status", {}).get("succeeded") == 1


def test_a_damaged_or_foreign_archive_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """A flipped byte, a truncated file, a newer format version, or a member not in the
    manifest: restore refuses, naming the archive (and the member), and creates nothing."""
    from daemon.dr import archive

    contents = archive.Contents(
        members={"config/gitopsd.yaml": b"applications: []\n", "state/x.json": b"{}"}
    )
    good = archive.pack(contents)
    cases: dict[str, bytes] = {
        "flipped": good[:200] + bytes([good[200] ^ 0xFF]) + good[201:],
        "truncated": good[: len(good) // 2],
    }
    raw = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(good), mode="r:gz") as src,
        tarfile.open(fileobj=raw, mode="w:gz") as dst,
    ):
        for info in src:
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == "manifest.json":
                data = data.replace(b'"version": 1', b'"version": 2')
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    cases["version"] = raw.getvalue()
    expected = {
        "flipped": "",
        "truncated": "not a readable gitopsd backup",
        "version": "backup format version 2; this gitopsd reads version 1",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(data)
        dest = tmp_path / f"out-{name}"
        r = subprocess.run(
            [GITOPSD, "restore", str(path), "--to", str(dest)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, (name, r.stdout)
        assert str(path) in r.stderr and expected[name] in r.stderr, (name, r.stderr)
        assert not dest.exists(), name


def test_secrets_travel_sealed_and_come_back_only_with_the_key(tmp_path: Path) -> None:
    """--include-secrets seals the credential files the config names with the key file; the
    archive does not hold them in the clear; restore without the key refuses a tree whose
    credential files are missing (naming them) and writes nothing; with the key it writes them
    into the restored tree (0600), rewrites the config's absolute references to them, and
    writes nothing at their old paths."""
    creds = tmp_path / "creds"
    creds.mkdir()
    password = creds / "git.password"
    password.write_text("s3cret-value\n")
    token = creds / "api.token"
    token.write_text("token-value\n")
    cfg = tmp_path / "gitopsd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "applications": [],
                "repositories": [
                    {"url": "https://git.example/", "username": "u", "passwordFile": str(password)}
                ],
                "apiTokens": [{"name": "ops", "tokenFile": str(token), "role": "admin"}],
                "settings": {"stateDir": str(tmp_path / "state"), "cacheDir": str(tmp_path / "c")},
            }
        )
    )
    key = tmp_path / "backup.key"

    def gitopsd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GITOPSD, *args], capture_output=True, text=True, timeout=60)

    assert gitopsd("backup", "--new-key", str(key)).returncode == 0
    assert key.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "b.tar.gz"
    r = gitopsd("backup", "-c", str(cfg), "-o", str(out), "--include-secrets")
    assert r.returncode == 2 and "--include-secrets needs --key-file" in r.stderr
    r = gitopsd(
        "backup", "-c", str(cfg), "-o", str(out), "--include-secrets", "--key-file", str(key)
    )
    assert r.returncode == 0, r.stderr
    assert "2 secrets" in r.stdout, r.stdout
    raw = gzip_members(out)
    assert not any(b"s3cret-value" in data for data in raw.values())

    password.unlink()
    r = gitopsd("restore", str(out), "--to", str(tmp_path / "r1"))
    assert r.returncode == 2, r.stdout
    assert f"missing credential files {password}" in r.stderr, r.stderr
    assert "restore with --key-file" in r.stderr, r.stderr
    assert not password.exists() and not (tmp_path / "r1").exists()
    other = tmp_path / "other.key"
    gitopsd("backup", "--new-key", str(other))
    r = gitopsd("restore", str(out), "--to", str(tmp_path / "r2"), "--key-file", str(other))
    assert r.returncode == 2 and "wrong key" in r.stderr
    assert not (tmp_path / "r2").exists(), "a wrong key writes nothing"
    r3 = tmp_path / "r3"
    r = gitopsd("restore", str(out), "--to", str(r3), "--key-file", str(key))
    assert r.returncode == 0, r.stderr
    assert not password.exists(), "nothing written outside the restored tree"
    restored = r3 / "creds" / "git.password"
    assert restored.read_text() == "s3cret-value\n"
    assert restored.stat().st_mode & 0o777 == 0o600
    assert (r3 / "creds" / "api.token").read_text() == "token-value\n"
    assert "2 credential paths in" in r.stdout, r.stdout
    written = yaml.safe_load((r3 / "gitopsd.yaml").read_text())
    assert written["repositories"][0]["passwordFile"] == "creds/git.password"
    assert written["apiTokens"][0]["tokenFile"] == "creds/api.token"


def gzip_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, mode="r:gz") as tar:
        return {i.name: tar.extractfile(i).read() for i in tar if i.isfile()}  # type: ignore[union-attr]
