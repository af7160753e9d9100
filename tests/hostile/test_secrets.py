"""Secret values never leak: not in logs, API output, diffs, metrics or state files, in plain text
or base64 (the classes of GHSA-fp89-h8pj-8894, GHSA-47g2-qmh2-749v, GHSA-3v3m-wc6v-x4x3)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap

pytestmark = pytest.mark.cluster

FIRST = "hunter2-first-Zq8v"
SECOND = "hunter2-second-Xk3p"
BROKEN = "hunter2-broken-Wm7r"


def secret(value: str) -> str:
    return f"""apiVersion: v1
kind: Secret
metadata:
  name: creds
type: Opaque
stringData:
  password: {value}
"""


def broken_secret() -> str:
    """`data` that is not base64: the API refuses it; the error must not echo the value."""
    return f"""apiVersion: v1
kind: Secret
metadata:
  name: broken
type: Opaque
data:
  password: "{BROKEN}!!"
"""


def leaks(text: str) -> list[str]:
    """Which secret values (plain or base64) appear in `text`."""
    found = []
    for value in (FIRST, SECOND, BROKEN):
        encoded = base64.b64encode(value.encode()).decode()
        if value in text or encoded in text or encoded.rstrip("=") in text:
            found.append(value)
    return found


def test_secret_values_appear_nowhere(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Sync a Secret, change it (a diff exists), then commit one the API refuses: the daemon's
    logs, app JSON, diff, metrics and state files never contain a secret value."""
    git_repo.write({"a/secret.yaml": secret(FIRST), "a/cm.yaml": configmap("plain")})
    app = application("secrets", git_repo.url, "a", namespace, automated=True)
    cfg = write_config(tmp_path, cluster, [app])
    with running(cfg) as d:
        wait_for(lambda: d.synced("secrets"), timeout=60, what="synced")
        seen = [d.api("/api/v1/applications/secrets").text, d.api("/metrics").text]
        git_repo.write({"a/secret.yaml": secret(SECOND)})
        d.api("/api/v1/applications/secrets/refresh", method="POST")
        wait_for(
            lambda: d.synced("secrets", git_repo.git("rev-parse", "HEAD")),
            timeout=60,
            what="resynced",
        )
        git_repo.write({"a/broken.yaml": broken_secret()})
        d.api("/api/v1/applications/secrets/refresh", method="POST")
        wait_for(
            lambda: any(
                "broken" in c.get("message", "")
                for c in d.status("secrets").get("conditions") or []
            ),
            timeout=60,
            what="the refused Secret reported",
        )
        seen += [
            d.api("/api/v1/applications/secrets").text,
            d.api("/api/v1/applications/secrets/diff").text,
            d.api("/api/v1/applications").text,
            d.api("/metrics").text,
        ]
    seen.append(d.log.read_text(errors="replace"))
    seen += [p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file()]
    for text in seen:
        assert leaks(text) == [], text[:2000]
