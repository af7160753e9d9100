"""The HA manifests (config/ha/): accepted by the real API server (server-side dry run), and
their settings valid with sharding on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daemon import settings
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster
HA = Path(__file__).resolve().parents[2] / "config" / "ha"


def test_ha_manifests_pass_a_server_side_dry_run(cluster: Cluster) -> None:
    """Every object in config/ha/ (ServiceAccount, RBAC, ConfigMap, Deployment with 3
    replicas, PodDisruptionBudget, Service) is accepted by the API server as written."""
    exists = cluster.kubectl(
        "get", "namespace", "gitopsd-system", "--ignore-not-found", "-o", "name"
    )
    if not exists.strip():
        cluster.kubectl("create", "namespace", "gitopsd-system")
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(HA))
    for kind in (
        "serviceaccount/gitopsd",
        "clusterrole.rbac.authorization.k8s.io/gitopsd",
        "role.rbac.authorization.k8s.io/gitopsd-coordination",
        "configmap/gitopsd",
        "deployment.apps/gitopsd",
        "poddisruptionbudget.policy/gitopsd",
        "service/gitopsd",
    ):
        assert kind in out, out
    docs = [d for f in sorted(HA.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3


def test_ha_settings_load_with_sharding(tmp_path: Path) -> None:
    """The ConfigMap's gitopsd.yaml and Application load: sharding enabled, Leases in
    gitopsd-system, the defaults documented in the README."""
    cm = yaml.safe_load((HA / "configmap.yaml").read_text())
    (tmp_path / "apps").mkdir()
    (tmp_path / "gitopsd.yaml").write_text(cm["data"]["gitopsd.yaml"])
    (tmp_path / "apps" / "example.yaml").write_text(cm["data"]["example.yaml"])
    cfg = settings.load(tmp_path / "gitopsd.yaml")
    s = cfg.settings
    assert s.sharding_enabled and s.sharding_namespace == "gitopsd-system"
    assert s.state_store == "kubernetes"
    assert (s.sharding_lease_duration, s.sharding_renew_interval) == (10.0, 3.0)
    assert [a.name for a in cfg.applications] == ["guestbook"]
