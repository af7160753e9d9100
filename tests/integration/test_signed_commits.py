"""AppProject signatureKeys: only commits signed by a listed key sync. Real gpg keys made for
the test, real signed commits, `git verify-commit` against the keyring of settings.gpgKeys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster


def new_key(home: Path, name: str) -> str:
    """A passphrase-less ed25519 signing key in `home`; its fingerprint."""
    home.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--homedir",
            str(home),
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <{name}@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--with-colons", "--list-keys", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def commit(repo: GitRepo, home: Path, files: dict[str, str], key: str = "") -> str:
    """Commit and push `files`, signed with `key` when given."""
    for rel, content in files.items():
        (repo.work / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.work / rel).write_text(content)
    repo.git("add", "-A")
    if key:
        signing = ["-c", f"user.signingkey={key}", "-c", f"gpg.program={home / 'gpg.sh'}"]
        repo.git(*signing, "commit", "-S", "-q", "-m", "signed change")
    else:
        repo.git("commit", "-q", "-m", "unsigned change")
    repo.git("push", "-q", "origin", "HEAD:main")
    return repo.git("rev-parse", "HEAD")


def test_only_commits_signed_by_a_project_key_sync(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A project with signatureKeys: a commit signed by its key syncs; an unsigned commit and
    one signed by a key the keyring holds but the project does not list are refused, naming
    the commit and the reason, and the cluster keeps the last verified state."""
    home = tmp_path / "gnupg"
    trusted = new_key(home, "release")
    other = new_key(home, "intruder")
    script = home / "gpg.sh"  # git calls gpg with our throwaway keyring
    script.write_text(f'#!/bin/sh\nexec gpg --homedir "{home}" "$@"\n')
    script.chmod(0o755)
    keys = tmp_path / "keys.asc"
    keys.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--homedir", str(home), "--armor", "--export", trusted, other],
            check=True,
            capture_output=True,
        ).stdout
    )
    signed = commit(git_repo, home, {"a/cm.yaml": configmap("signed", data="v1")}, trusted)
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "secure", "namespace": "argocd"},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "signatureKeys": [{"keyID": trusted[-16:]}],
        },
    }
    app = application("signed", git_repo.url, "a", namespace)
    app["spec"]["project"] = "secure"
    cfg = write_config(tmp_path, cluster, [app], gpgKeys=[str(keys)], reconcileInterval="2s")
    (tmp_path / "apps" / "project.yaml").write_text(yaml.safe_dump(project))
    with running(cfg) as d:
        wait_for(lambda: d.synced("signed", signed), timeout=60, what="the signed commit synced")

        def refused() -> str:
            return str(d.status("signed").get("conditions") or "")

        unsigned = commit(git_repo, home, {"a/cm.yaml": configmap("signed", data="v2")})
        wait_for(lambda: "it is not signed" in refused(), timeout=30, what="unsigned refused")
        assert unsigned[:12] in refused()
        commit(git_repo, home, {"a/cm.yaml": configmap("signed", data="v3")}, other)
        wait_for(
            lambda: f"is signed by {other[-16:]}, which is not among" in refused(),
            timeout=30,
            what="a commit by an unlisted key refused",
        )
        data = (get(cluster, namespace, "configmap/signed") or {}).get("data")
        assert data == {"key": "v1"}, "nothing unverified was applied"
