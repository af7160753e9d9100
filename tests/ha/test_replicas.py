"""Several `gitopsd run` processes sharing apps through Leases on the real control plane: the
apps are spread over the members, a member killed with -9 mid-sync is replaced within
leaseDuration plus a poll, no app ever has two operations at once, a fourth member takes only
its share, and a member cut off from the API stops writing before the others take over."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, write_config
from tests.integration.test_daemon import Daemon, running, wait_for
from tests.integration.test_sync import configmap, deployment, get

pytestmark = pytest.mark.cluster
LEASE = 6.0
APPS = 15


def member_config(base: Path, member: str, namespace: str, kubeconfig: str = "") -> Path:
    """A copy of the shared config for one member: its own state and cache, its member id."""
    home = base / member
    home.mkdir()
    shutil.copytree(base / "apps", home / "apps")
    data = yaml.safe_load((base / "gitopsd.yaml").read_text())
    data["settings"].update(
        stateDir=str(home / "state"),
        cacheDir=str(home / "cache"),
        localTokenFile=str(base / "local-api-token"),  # replicas on one host share it
        reconcileInterval="20s",
        stateStore="kubernetes",
        sharding={
            "enabled": True,
            "namespace": namespace,
            "memberId": member,
            "leaseDuration": f"{LEASE:g}s",
            "renewInterval": "2s",
        },
    )
    if kubeconfig:
        data["clusters"][0]["kubeconfig"] = kubeconfig
    (home / "gitopsd.yaml").write_text(yaml.safe_dump(data))
    return home / "gitopsd.yaml"


def sharding(d: Daemon) -> dict[str, Any]:
    return dict(d.api("/api/v1/sharding").json())


def operations(daemons: dict[str, Daemon]) -> list[tuple[str, str, float, float]]:
    """(app, member, start, end) of every sync in the members' JSON logs; an operation a kill
    cut short ends at the kill (infinity until then)."""
    out = []
    for member, d in daemons.items():
        started: dict[str, float] = {}
        for line in d.log.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            stamp = dt.datetime.fromisoformat(str(ev.get("timestamp")).replace("Z", "+00:00"))
            t = stamp.timestamp()
            if ev.get("event") == "sync starting":
                started[ev["app"]] = t
            elif ev.get("event") == "sync finished" and ev.get("app") in started:
                out.append((ev["app"], member, started.pop(ev["app"]), t))
        killed_at = getattr(d, "killed_at", None)
        for app, t in started.items():
            out.append((app, member, t, killed_at if killed_at is not None else float("inf")))
    return out


def assert_no_overlap(ops: list[tuple[str, str, float, float]]) -> None:
    for i, (app, member, start, end) in enumerate(ops):
        for app2, member2, start2, end2 in ops[i + 1 :]:
            if app == app2 and member != member2:
                assert end <= start2 or end2 <= start, (
                    f"{app}: {member} [{start}, {end}] overlaps {member2} [{start2}, {end2}]"
                )


@contextlib.contextmanager
def members(cfgs: dict[str, Path]) -> Iterator[dict[str, Daemon]]:
    with contextlib.ExitStack() as stack:
        yield {m: stack.enter_context(running(cfg, extra_args=())) for m, cfg in cfgs.items()}


def test_replicas_share_apps_fail_over_and_rebalance(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Three members split fifteen apps and, with the state in the cluster, each shows every
    app; killing (-9) the owner of a slow app mid-sync hands it to a survivor within
    leaseDuration plus a poll, which resumes the Running operation and converges it; the
    operations of all members never overlap per app; a fourth member takes only apps it
    gains."""
    files = {f"app{i}/cm.yaml": configmap(f"cm-{i}") for i in range(APPS)}
    files["app0/slow.yaml"] = deployment("slow", "nginx:1", wave=1, min_ready=8)
    files["app0/cm.yaml"] = configmap("cm-0", wave=2)
    git_repo.write(files)
    apps = [application(f"app{i}", git_repo.url, f"app{i}", namespace) for i in range(APPS)]
    write_config(tmp_path, cluster, apps)
    cfgs = {m: member_config(tmp_path, m, namespace) for m in ("m1", "m2", "m3")}
    with members(cfgs) as ds:
        wait_for(
            lambda: all(get(cluster, namespace, f"configmap/cm-{i}") for i in range(APPS)),
            timeout=90,
            what="every app synced by some member",
        )
        views = {m: sharding(d) for m, d in ds.items()}
        owned = {m: set(v["owned"]) for m, v in views.items()}
        assert all(v["members"] == ["m1", "m2", "m3"] for v in views.values()), views
        assert set().union(*owned.values()) == {f"app{i}" for i in range(APPS)}
        assert sum(len(o) for o in owned.values()) == APPS, "each app has exactly one owner"
        assert all(owned.values()), f"every member got apps: {owned}"
        assert sum(v["leader"] for v in views.values()) == 1
        # The state is in the cluster: every member shows every app's status.
        wait_for(
            lambda: all(d.synced(f"app{i}") for d in ds.values() for i in range(APPS)),
            timeout=30,
            what="every member to show every app Synced",
        )

        # A sync sent to a replica that does not own the app reaches the owner.
        owner, app = next((m, a) for m, o in owned.items() for a in sorted(o) if a != "app0")
        other = next(m for m in ds if m != owner)
        r = ds[other].api(
            f"/api/v1/applications/{app}/sync",
            method="POST",
            json={},
            token=ds[other].local_token(),
        )
        assert r.status_code == 202, r.text
        wait_for(
            lambda: any(
                '"trigger": "api sync"' in line and f'"app": "{app}"' in line
                for line in ds[owner].log.read_text().splitlines()
            ),
            timeout=20,
            what="the owner to run the forwarded sync",
        )

        # Kill -9 the owner of app0 while it syncs (wave 2 waits for wave 1's 8 s of
        # minReadySeconds).
        victim = next(m for m, o in owned.items() if "app0" in o)
        get_victim = ds[victim]
        git_repo.write(
            {
                "app0/slow.yaml": deployment("slow", "nginx:2", wave=1, min_ready=8),
                "app0/cm.yaml": configmap("cm-0", wave=2, data="v2"),
            }
        )
        get_victim.api("/api/v1/applications/app0/refresh", method="POST")
        wait_for(
            lambda: any(
                o[0] == "app0" and o[1] == victim and o[3] == float("inf")
                for o in operations({victim: get_victim})
            ),
            timeout=30,
            what="the victim's sync of app0 to start",
        )
        time.sleep(1)
        get_victim.proc.send_signal(signal.SIGKILL)
        get_victim.proc.wait(10)
        killed = time.monotonic()
        get_victim.killed_at = time.time()  # type: ignore[attr-defined]
        survivors = {m: d for m, d in ds.items() if m != victim}
        heir = None

        def taken() -> bool:
            nonlocal heir
            for m, d in survivors.items():
                if "app0" in sharding(d)["claimed"]:
                    heir = m
                    return True
            return False

        wait_for(taken, timeout=40, what="a survivor to claim app0")
        failover = time.monotonic() - killed
        assert heir is not None
        assert failover < LEASE + 2 * 2 + 4, f"failover took {failover:.1f}s"
        wait_for(
            lambda: (
                ((get(cluster, namespace, "deployment/slow") or {}).get("spec") or {})
                .get("template", {})
                .get("spec", {})
                .get("containers", [{}])[0]
                .get("image")
                == "nginx:2"
                and survivors[heir].synced("app0")
            ),
            timeout=60,
            what="the heir to converge app0",
        )
        wait_for(
            lambda: all(
                sorted(sharding(d)["members"]) == sorted(survivors) for d in survivors.values()
            ),
            timeout=10,
            what="every survivor to see the victim gone",
        )
        print(f"failover of app0 after kill -9: {failover:.1f}s (leaseDuration {LEASE:g}s)")
        assert "resuming the previous owner's operation" in survivors[heir].log.read_text(), (
            "the heir resumed the Running operation from the state in the cluster"
        )

        # A fourth member joins: only the apps it gains move.
        before = {a: m for m, d in survivors.items() for a in sharding(d)["owned"]}
        cfgs["m4"] = member_config(tmp_path, "m4", namespace)
        with running(cfgs["m4"]) as d4:
            wait_for(
                lambda: (
                    sorted(sharding(d4)["members"]) == sorted([*survivors, "m4"])
                    and all(len(sharding(d)["members"]) == 3 for d in survivors.values())
                ),
                timeout=30,
                what="everyone to see the fourth member",
            )
            after = {a: m for m, d in {**survivors, "m4": d4}.items() for a in sharding(d)["owned"]}
            moved = {a for a in after if before.get(a) != after[a]}
            assert moved and all(after[a] == "m4" for a in moved), (before, after)
            wait_for(
                lambda: all(d4.synced(a) for a in moved),
                timeout=60,
                what="the fourth member to reconcile its share",
            )
            assert_no_overlap(operations({**ds, "m4": d4}))


def test_a_member_cut_off_from_the_api_stops_writing_before_it_is_replaced(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """A member whose API connection is cut (a loopback TCP proxy) shuts its own write fence
    (leaseDuration minus a margin after its last renewal) before the other member, which
    watches its Lease unchanged for leaseDuration, evicts it and takes its apps; once the
    connection is back it rejoins as a new incarnation and gets its share again."""
    from urllib.parse import urlparse

    from tests.faults.proxy import FaultProxy

    target = urlparse(cluster.server)
    proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 443)
    try:
        kube = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        for c in kube["clusters"]:
            c["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        proxied = tmp_path / "proxied-kubeconfig"
        proxied.write_text(yaml.safe_dump(kube))
        git_repo.write({f"app{i}/cm.yaml": configmap(f"cm-{i}") for i in range(6)})
        apps = [application(f"app{i}", git_repo.url, f"app{i}", namespace) for i in range(6)]
        write_config(tmp_path, cluster, apps)
        cfgs = {
            "near": member_config(tmp_path, "near", namespace),
            "far": member_config(tmp_path, "far", namespace, kubeconfig=str(proxied)),
        }
        with members(cfgs) as ds:
            wait_for(
                lambda: (
                    all(len(sharding(d)["members"]) == 2 for d in ds.values())
                    and sharding(ds["far"])["claimed"]
                ),
                timeout=60,
                what="both members up, the far one holding apps",
            )
            far_apps = set(sharding(ds["far"])["owned"])
            proxy.set("cut")
            cut = time.monotonic()
            fenced_after = taken_after = None
            while time.monotonic() - cut < 4 * LEASE:
                if fenced_after is None and not sharding(ds["far"])["canWrite"]:
                    fenced_after = time.monotonic() - cut
                if taken_after is None and far_apps <= set(sharding(ds["near"])["owned"]):
                    taken_after = time.monotonic() - cut
                if fenced_after is not None and taken_after is not None:
                    break
                time.sleep(0.1)
            assert fenced_after is not None and taken_after is not None, (fenced_after, taken_after)
            assert fenced_after < taken_after, (fenced_after, taken_after)
            assert fenced_after < LEASE, fenced_after
            print(
                f"partition: fenced after {fenced_after:.1f}s, taken over after {taken_after:.1f}s"
            )
            wait_for(
                lambda: all(ds["near"].synced(a) for a in far_apps),
                timeout=60,
                what="the near member to reconcile the far member's apps",
            )
            proxy.set("pass")
            wait_for(
                lambda: (
                    sharding(ds["far"])["canWrite"] and len(sharding(ds["near"])["members"]) == 2
                ),
                timeout=60,
                what="the far member to rejoin",
            )
            logs = ds["far"].log.read_text()
            assert "rejoining as a new incarnation" in logs
            assert_no_overlap(operations(ds))
    finally:
        proxy.close()


def generator_set(repo_url: str, namespace: str, elements: list[str]) -> dict[str, Any]:
    """An ApplicationSet (list generator): one app `gen-<n>` per element, from path `app<n>`."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "gen", "namespace": "argocd"},
        "spec": {
            "generators": [{"list": {"elements": [{"n": n} for n in elements]}}],
            "template": {
                "metadata": {"name": "gen-{{n}}"},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": repo_url, "targetRevision": "main", "path": "app{{n}}"},
                    "destination": {
                        "server": "https://kubernetes.default.svc",
                        "namespace": namespace,
                    },
                    "syncPolicy": {"automated": {"prune": True}},
                },
            },
        },
    }


def test_only_the_leader_generates_applicationsets(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """With two members, only the leader runs the ApplicationSet generators and publishes
    their output; the follower takes the generated apps from it, so both shard the same six
    apps, each synced by exactly one member. When the leader stops, the other becomes leader
    and generates; an element it drops is removed (its resources deleted) once."""
    git_repo.write({f"app{i}/cm.yaml": configmap(f"gen-cm-{i}") for i in range(6)})
    write_config(tmp_path, cluster, [])
    elements = [str(i) for i in range(6)]
    (tmp_path / "apps" / "appset.yaml").write_text(
        yaml.safe_dump(generator_set(git_repo.url, namespace, elements))
    )
    cfgs = {m: member_config(tmp_path, m, namespace) for m in ("g1", "g2")}
    generated = {f"gen-{i}" for i in range(6)}
    with members(cfgs) as ds:
        wait_for(
            lambda: all(get(cluster, namespace, f"configmap/gen-cm-{i}") for i in range(6)),
            timeout=90,
            what="every generated app synced by some member",
        )
        wait_for(
            lambda: all(
                len(sharding(d)["members"]) == 2 and set(sharding(d)["assignment"]) >= generated
                for d in ds.values()
            ),
            timeout=30,
            what="both members to shard the generated apps",
        )
        views = {m: sharding(d) for m, d in ds.items()}
        assert views["g1"]["assignment"] == views["g2"]["assignment"], views
        owned = {m: set(v["owned"]) & generated for m, v in views.items()}
        assert owned["g1"] | owned["g2"] == generated and not owned["g1"] & owned["g2"]
        leader = next(m for m, v in views.items() if v["leader"])
        follower = next(m for m in ds if m != leader)
        assert "ApplicationSet output published" in ds[leader].log.read_text()
        follower_log = ds[follower].log.read_text()
        assert "ApplicationSet output published" not in follower_log
        assert '"appset": "gen"' in follower_log, "the follower added the leader's apps"
        published = cluster.kubectl(
            "get", "configmap", "gitopsd-appsets", "-n", namespace, "-o", "name"
        )
        assert "gitopsd-appsets" in published

        ds[leader].proc.send_signal(signal.SIGTERM)
        ds[leader].proc.wait(30)
        survivor = ds[follower]
        wait_for(
            lambda: sharding(survivor)["leader"] and generated <= set(sharding(survivor)["owned"]),
            timeout=40,
            what="the survivor to lead and own every generated app",
        )
        (cfgs[follower].parent / "apps" / "appset.yaml").write_text(
            yaml.safe_dump(generator_set(git_repo.url, namespace, elements[:5]))
        )
        wait_for(
            lambda: get(cluster, namespace, "configmap/gen-cm-5") is None,
            timeout=60,
            what="the new leader to remove the dropped app's resources",
        )
        assert "ApplicationSet output published" in survivor.log.read_text()
        assert "gen-5" not in sharding(survivor)["assignment"]
        assert_no_overlap(operations(ds))


def reconcile_count(d: Daemon) -> float:
    """argocd_app_reconcile_count summed over the member's apps."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in d.api("/metrics").text.splitlines()
        if line.startswith("argocd_app_reconcile_count{")
    )


def test_members_keep_reconciling_their_apps_on_the_interval(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """After the first syncs, every member goes on reconciling the apps it owns every poll
    interval (none stalls waiting on a claim it already holds)."""
    git_repo.write({f"app{i}/cm.yaml": configmap(f"poll-{i}") for i in range(6)})
    apps = [application(f"app{i}", git_repo.url, f"app{i}", namespace) for i in range(6)]
    write_config(tmp_path, cluster, apps)
    cfgs = {m: member_config(tmp_path, m, namespace) for m in ("p1", "p2")}
    for cfg in cfgs.values():
        data = yaml.safe_load(cfg.read_text())
        data["settings"].update(reconcileInterval="2s", reconcileJitter="0s")
        cfg.write_text(yaml.safe_dump(data))
    with members(cfgs) as ds:
        wait_for(
            lambda: (
                all(get(cluster, namespace, f"configmap/poll-{i}") for i in range(6))
                and all(len(sharding(d)["members"]) == 2 for d in ds.values())
            ),
            timeout=60,
            what="synced, both members up",
        )
        time.sleep(3)
        before = {m: reconcile_count(d) for m, d in ds.items()}
        owned = {m: len(sharding(d)["owned"]) for m, d in ds.items()}
        time.sleep(8)
        after = {m: reconcile_count(d) for m, d in ds.items()}
        for m in ds:
            # about 4 rounds of 2 s each per owned app; at least 2 rounds is the bar
            assert after[m] - before[m] >= 2 * owned[m], (m, owned, before, after)
