"""Fault-injection suites: the daemon against an API server behind a proxy that misbehaves."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Cluster, write_config


def proxied_config(
    tmp_path: Path,
    cluster: Cluster,
    port: int,
    apps: list[dict[str, Any]],
    *,
    ca_pem: bytes | None = None,
) -> Path:
    """A config whose only cluster is reached through a proxy on `port` (whose CA is `ca_pem`
    when it terminates TLS itself), probed every second, unreachable after 3 s of failures."""
    kc = yaml.safe_load(cluster.kubeconfig.read_text())
    kc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    if ca_pem is not None:
        kc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
            ca_pem
        ).decode()
    kubeconfig = tmp_path / "proxied.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(kc))
    cfg = write_config(
        tmp_path, cluster, apps, clusterProbeInterval="1s", clusterUnreachableAfter="3s"
    )
    data = yaml.safe_load(cfg.read_text())
    data["clusters"][0]["kubeconfig"] = str(kubeconfig)
    cfg.write_text(yaml.safe_dump(data))
    return cfg
