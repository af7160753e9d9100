"""The local control plane behaves like a real cluster for the workloads gitopsd deploys."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster


def deployment(name: str, ns: str, image: str, replicas: int = 2) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": image}]},
                },
            },
        }
    )


def test_deployment_becomes_available(cluster: Cluster, namespace: str) -> None:
    """A 2-replica Deployment applied server-side becomes Available within a minute."""
    cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=deployment("web", namespace, "nginx:1.27")
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/web", "--timeout=60s"
    )
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert all(p["spec"]["nodeName"] == "gitopsd-node" for p in pods)


def test_namespace_deletion_completes(cluster: Cluster) -> None:
    """Deleting a namespace with a workload in it finishes (namespace + GC controllers run)."""
    ns = f"t-del-{int(time.time() * 1000) % 10**8}"
    cluster.kubectl("create", "namespace", ns)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", ns, check=False),
        what="default ServiceAccount",
    )
    cluster.kubectl("apply", "--server-side", "-f", "-", input=deployment("web", ns, "nginx:1", 1))
    cluster.kubectl(
        "wait", "-n", ns, "--for=condition=Available", "deployment/web", "--timeout=60s"
    )
    cluster.kubectl("delete", "namespace", ns, "--timeout=90s")
    out = cluster.kubectl("get", "namespace", ns, "--ignore-not-found", "-o", "name")
    assert out.strip() == ""


def test_pvc_becomes_bound(cluster: Cluster, namespace: str) -> None:
    """A PersistentVolumeClaim of the default class gets a provisioned, Bound volume."""
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pvc))
    cluster.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Bound", "pvc/data", "--timeout=60s"
    )


def test_crashloop_image_never_becomes_available(cluster: Cluster, namespace: str) -> None:
    """An image tagged :crashloop leaves pods in CrashLoopBackOff with rising restarts."""
    cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=deployment("bad", namespace, "app:crashloop", 1)
    )

    def restarts() -> int:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
        for p in pods:
            for cs in p.get("status", {}).get("containerStatuses", []):
                assert cs["ready"] is False
                if cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                    return int(cs["restartCount"])
        return 0

    first = wait_for(restarts, timeout=30, what="CrashLoopBackOff pod")
    wait_for(lambda: restarts() > first, timeout=30, what="restart count rising")
    dep = json.loads(cluster.kubectl("get", "deployment", "bad", "-n", namespace, "-o", "json"))
    available = [c for c in dep["status"].get("conditions", []) if c["type"] == "Available"]
    assert available and available[0]["status"] == "False"


def job(name: str, ns: str, image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": image}],
                    }
                },
            },
        }
    )


def test_jobs_complete_or_fail_by_image_tag(cluster: Cluster, namespace: str) -> None:
    """A Job completes, and a Job whose image is tagged :fail fails."""
    cluster.kubectl("apply", "-f", "-", input=job("ok", namespace, "busybox:1"))
    cluster.kubectl("apply", "-f", "-", input=job("broken", namespace, "busybox:fail"))
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/ok", "--timeout=60s")
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Failed", "job/broken", "--timeout=60s"
    )


def test_load_balancer_and_ingress_get_addresses(cluster: Cluster, namespace: str) -> None:
    """LoadBalancer Services and Ingresses are given an address by the simulator."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lb", "namespace": namespace},
        "spec": {"type": "LoadBalancer", "selector": {"a": "b"}, "ports": [{"port": 80}]},
    }
    ing = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"defaultBackend": {"service": {"name": "lb", "port": {"number": 80}}}},
    }
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [svc, ing]}),
    )
    for ref in ("service/lb", "ingress/web"):
        cluster.kubectl(
            "wait",
            "-n",
            namespace,
            "--for=jsonpath={.status.loadBalancer.ingress[0].hostname}",
            ref,
            "--timeout=60s",
        )
