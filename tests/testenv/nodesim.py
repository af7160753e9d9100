"""A node simulator standing in for the kubelet, a scheduler and a storage/LB provisioner.

There is no container runtime here, so this registers one Ready Node, binds pending pods to it,
reports pods Running and Ready (Job and other run-to-completion pods Succeeded) after a short
delay, finishes pod deletions, provisions a bound PersistentVolume for pending claims and gives
LoadBalancer Services and Ingresses an address. Failure on purpose goes by image tag:
`:crashloop` keeps a pod in CrashLoopBackOff with a rising restart count, `:fail` makes the pod
terminate with an error. Everything else is done by the real controllers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

NODE = "gitopsd-node"
STORAGE_CLASS = "standard"
PROVISIONER = "gitopsd.local/nodesim"
START_DELAY = 0.3
CRASH_PERIOD = 5.0
MERGE = {"Content-Type": "application/merge-patch+json"}

Obj = dict[str, Any]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def image_tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1].split("@")[0] if ":" in last else ""


class NodeSimulator:
    """Watches pods, claims, services and ingresses and plays the missing node-side parts."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.ready = asyncio.Event()
        self.started: set[str] = set()  # pod uids whose status we already drove
        self.crashing: dict[str, tuple[str, str, int]] = {}  # uid -> (ns, name, restarts)
        self.pod_seq = 0
        self.tasks: set[asyncio.Task[None]] = set()

    # --- plumbing --------------------------------------------------------------------------

    def _later(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"nodesim: task failed: {task.exception()!r}", file=sys.stderr, flush=True)

    async def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        r = await self.api.request(method, url, timeout=30, **kw)
        if r.status_code >= 400 and r.status_code not in (404, 409, 422):
            print(f"nodesim: {method} {url} -> {r.status_code} {r.text[:300]}", file=sys.stderr)
        return r

    async def _watch(self, path: str, handle: Callable[[str, Obj], Awaitable[None]]) -> None:
        """List then watch `path` forever, re-listing when the watch expires or breaks."""
        while True:
            try:
                r = await self.api.get(path, timeout=60)
                r.raise_for_status()
                listing = r.json()
                for item in listing.get("items", []):
                    await handle("ADDED", item)
                rv = listing["metadata"]["resourceVersion"]
                params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "240"}
                async with self.api.stream("GET", path, params=params, timeout=300) as s:
                    async for line in s.aiter_lines():
                        if not line:
                            continue
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":
                            break
                        if ev["type"] != "BOOKMARK":
                            await handle(ev["type"], ev["object"])
            except (httpx.HTTPError, json.JSONDecodeError, KeyError) as e:
                print(f"nodesim: watch {path}: {e!r}", file=sys.stderr, flush=True)
                await asyncio.sleep(1)

    # --- node ------------------------------------------------------------------------------

    async def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE,
                "labels": {
                    "kubernetes.io/hostname": NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "simulated",
                },
            },
        }
        await self._call("POST", "/api/v1/nodes", json=node)
        await self._node_status()
        sc = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        await self._call("POST", "/apis/storage.k8s.io/v1/storageclasses", json=sc)

    async def _node_status(self) -> None:
        ts = now()
        conds = [
            ("Ready", "True", "KubeletReady", "node simulator is ready"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
        ]
        res = {"cpu": "64", "memory": "256Gi", "pods": "2000", "ephemeral-storage": "1Ti"}
        status = {
            "status": {
                "capacity": res,
                "allocatable": res,
                "conditions": [
                    {
                        "type": t,
                        "status": s,
                        "reason": r,
                        "message": m,
                        "lastHeartbeatTime": ts,
                        "lastTransitionTime": ts,
                    }
                    for t, s, r, m in conds
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": NODE},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": "",
                    "containerRuntimeVersion": "nodesim://1",
                    "kernelVersion": "",
                    "kubeProxyVersion": "",
                    "kubeletVersion": "v1.36.3",
                    "machineID": "",
                    "operatingSystem": "linux",
                    "osImage": "gitopsd node simulator",
                    "systemUUID": "",
                },
            }
        }
        await self._call("PATCH", f"/api/v1/nodes/{NODE}/status", json=status, headers=MERGE)

    async def heartbeat(self) -> None:
        """Keep the node Lease fresh, as a kubelet does."""
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        while True:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": NODE, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": NODE,
                    "leaseDurationSeconds": 40,
                    "renewTime": micro_now(),
                },
            }
            r = await self._call("PUT", f"{path}/{NODE}", json=lease)
            if r.status_code == 404:
                await self._call("POST", path, json=lease)
            with contextlib.suppress(httpx.HTTPError):
                await self._node_status()
            await asyncio.sleep(10)

    # --- pods ------------------------------------------------------------------------------

    async def on_pod(self, typ: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        if typ == "DELETED":
            self.started.discard(uid)
            self.crashing.pop(uid, None)
            return
        if meta.get("deletionTimestamp"):
            self.crashing.pop(uid, None)
            body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
            self._later(self._call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", json=body))
            return
        node = spec.get("nodeName")
        if not node:
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            }
            self._later(
                self._call("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", json=binding)
            )
            return
        if node != NODE or uid in self.started:
            return
        if pod.get("status", {}).get("phase") not in (None, "Pending"):
            self.started.add(uid)
            return
        self.started.add(uid)
        self._later(self._start(pod))

    async def _start(self, pod: Obj) -> None:
        await asyncio.sleep(START_DELAY)
        meta, spec = pod["metadata"], pod["spec"]
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        containers = spec.get("containers", [])
        tags = {image_tag(c.get("image", "")) for c in containers}
        tags |= {image_tag(c.get("image", "")) for c in spec.get("initContainers", [])}
        restart = spec.get("restartPolicy", "Always")
        self.pod_seq += 1
        ip = f"127.0.{(self.pod_seq // 250) % 250 + 1}.{self.pod_seq % 250 + 1}"
        ts = now()
        base: Obj = {
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": ts,
            "qosClass": "BestEffort",
        }
        inits = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": ts,
                        "finishedAt": ts,
                    }
                },
            }
            for c in spec.get("initContainers", [])
        ]
        if inits:
            base["initContainerStatuses"] = inits

        def cond(ready: bool, reason: str = "") -> list[Obj]:
            out = []
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"):
                ok = ready or t in ("PodReadyToStartContainers", "Initialized")
                c: Obj = {"type": t, "status": "True" if ok else "False", "lastTransitionTime": ts}
                if not ok and reason:
                    c["reason"] = reason
                out.append(c)
            out.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": ts})
            return out

        def cstatus(state: Obj, *, ready: bool, restarts: int = 0, last: Obj | None = None) -> Obj:
            return {
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "containerID": f"nodesim://{uid}-{c['name']}",
                        "ready": ready,
                        "started": ready,
                        "restartCount": restarts,
                        "state": state,
                        "lastState": last or {},
                    }
                    for c in containers
                ]
            }

        if "fail" in tags:
            term = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "simulated failure (image tag :fail)",
                    "startedAt": ts,
                    "finishedAt": ts,
                }
            }
            if restart == "Always":
                # A long-running container that keeps failing: the kubelet would back off.
                self.crashing[uid] = (ns, name, 1)
                status = {
                    **base,
                    "phase": "Running",
                    "conditions": cond(False, "ContainersNotReady"),
                    **cstatus(self._backoff(name), ready=False, restarts=1, last=term),
                }
            else:
                status = {
                    **base,
                    "phase": "Failed",
                    "conditions": cond(False, "PodFailed"),
                    **cstatus(term, ready=False),
                }
        elif "crashloop" in tags:
            self.crashing[uid] = (ns, name, 1)
            term = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "startedAt": ts,
                    "finishedAt": ts,
                }
            }
            status = {
                **base,
                "phase": "Running",
                "conditions": cond(False, "ContainersNotReady"),
                **cstatus(self._backoff(name), ready=False, restarts=1, last=term),
            }
        elif restart in ("Never", "OnFailure"):
            term = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": ts,
                    "finishedAt": ts,
                }
            }
            status = {
                **base,
                "phase": "Succeeded",
                "conditions": cond(False, "PodCompleted"),
                **cstatus(term, ready=False),
            }
        else:
            status = {
                **base,
                "phase": "Running",
                "conditions": cond(True),
                **cstatus({"running": {"startedAt": ts}}, ready=True),
            }
        await self._call(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            json={"status": status},
            headers=MERGE,
        )

    @staticmethod
    def _backoff(name: str) -> Obj:
        return {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off restarting failed container {name} (simulated)",
            }
        }

    async def crashloops(self) -> None:
        """Raise the restart count of crash-looping pods, as a real kubelet would."""
        while True:
            await asyncio.sleep(CRASH_PERIOD)
            for uid, (ns, name, n) in list(self.crashing.items()):
                self.crashing[uid] = (ns, name, n + 1)
                r = await self.api.get(f"/api/v1/namespaces/{ns}/pods/{name}", timeout=30)
                if r.status_code != 200:
                    self.crashing.pop(uid, None)
                    continue
                pod = r.json()
                statuses = pod.get("status", {}).get("containerStatuses", [])
                for cs in statuses:
                    cs["restartCount"] = n + 1
                patch = {"status": {"containerStatuses": statuses}}
                await self._call(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/pods/{name}/status",
                    json=patch,
                    headers=MERGE,
                )

    # --- storage ---------------------------------------------------------------------------

    async def on_pvc(self, typ: str, pvc: Obj) -> None:
        if typ == "DELETED" or pvc["metadata"].get("deletionTimestamp"):
            return
        spec = pvc.get("spec", {})
        if spec.get("volumeName") or pvc.get("status", {}).get("phase") == "Bound":
            return
        meta = pvc["metadata"]
        sc = spec.get("storageClassName")
        if sc not in (None, STORAGE_CLASS):
            return  # another provisioner's class (or "" = static binding only)
        size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"pvc-{meta['uid']}",
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": f"/tmp/gitopsd-nodesim/{meta['uid']}"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        await self._call("POST", "/api/v1/persistentvolumes", json=pv)

    async def on_pv(self, typ: str, pv: Obj) -> None:
        if typ == "DELETED":
            return
        ann = pv["metadata"].get("annotations", {})
        released = pv.get("status", {}).get("phase") in ("Released", "Failed")
        if released and ann.get("pv.kubernetes.io/provisioned-by") == PROVISIONER:
            await self._call("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

    # --- addresses -------------------------------------------------------------------------

    async def on_service(self, typ: str, svc: Obj) -> None:
        if typ == "DELETED" or svc.get("spec", {}).get("type") != "LoadBalancer":
            return
        if svc.get("status", {}).get("loadBalancer", {}).get("ingress"):
            return
        meta = svc["metadata"]
        patch = {"status": {"loadBalancer": {"ingress": [{"hostname": "lb.nodesim.local"}]}}}
        await self._call(
            "PATCH",
            f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
            json=patch,
            headers=MERGE,
        )

    async def on_ingress(self, typ: str, ing: Obj) -> None:
        if typ == "DELETED" or ing.get("status", {}).get("loadBalancer", {}).get("ingress"):
            return
        meta = ing["metadata"]
        patch = {"status": {"loadBalancer": {"ingress": [{"hostname": "ingress.nodesim.local"}]}}}
        await self._call(
            "PATCH",
            f"/apis/networking.k8s.io/v1/namespaces/{meta['namespace']}/ingresses/"
            f"{meta['name']}/status",
            json=patch,
            headers=MERGE,
        )

    async def run(self) -> None:
        """Register the node and run every watch until cancelled."""
        await self.register()
        loops = [
            self.heartbeat(),
            self.crashloops(),
            self._watch("/api/v1/pods", self.on_pod),
            self._watch("/api/v1/persistentvolumeclaims", self.on_pvc),
            self._watch("/api/v1/persistentvolumes", self.on_pv),
            self._watch("/api/v1/services", self.on_service),
            self._watch("/apis/networking.k8s.io/v1/ingresses", self.on_ingress),
        ]
        runners = [asyncio.ensure_future(c) for c in loops]
        self.ready.set()
        try:
            await asyncio.gather(*runners)
        finally:
            for t in [*runners, *self.tasks]:
                t.cancel()
            await asyncio.gather(*runners, *self.tasks, return_exceptions=True)
