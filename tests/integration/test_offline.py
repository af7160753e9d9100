"""The offline edge: with git unreachable, a selfHeal app keeps being healed from its last good
render, says so in a condition, survives a restart while offline, and catches up once git is
back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import Daemon, running
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster


def offline_condition(d: Daemon, app: str) -> dict[str, Any] | None:
    for c in d.status(app).get("conditions") or []:
        if c.get("type") == "SourceUnreachable":
            return dict(c)
    return None


def data(cluster: Cluster, namespace: str) -> str:
    return str(((get(cluster, namespace, "configmap/edge") or {}).get("data") or {}).get("key"))


def test_self_heal_goes_on_from_the_last_good_render_while_git_is_away(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Git's repository moved away: the app gets a SourceUnreachable condition naming the
    revision it applies, a hand edit is still healed, also after a restart while offline (the
    condition keeps its first time); when git is back, a new commit syncs and the condition
    goes."""
    sha = git_repo.write({"a/cm.yaml": configmap("edge", data="from-git")})
    cfg = write_config(
        tmp_path,
        cluster,
        [application("edge", git_repo.url, "a", namespace)],
        reconcileInterval="3s",
        repoTimeout="10s",
    )
    away = git_repo.bare.with_name(git_repo.bare.name + ".away")
    with running(cfg) as d:
        wait_for(lambda: d.synced("edge"), timeout=60, what="synced")
        git_repo.bare.rename(away)
        wait_for(
            lambda: offline_condition(d, "edge") is not None,
            timeout=30,
            what="the SourceUnreachable condition",
        )
        cond = offline_condition(d, "edge")
        assert cond is not None and sha[:12] in cond["message"], cond
        assert "source unreachable since" in cond["message"]
        since = cond["lastTransitionTime"]
        cluster.kubectl("patch", "cm", "edge", "-n", namespace, "-p", '{"data":{"key":"hand"}}')
        wait_for(
            lambda: data(cluster, namespace) == "from-git",
            timeout=30,
            what="the hand edit healed from the last good render",
        )
    with running(cfg) as d:
        wait_for(
            lambda: offline_condition(d, "edge") is not None,
            timeout=30,
            what="the condition after a restart while offline",
        )
        cluster.kubectl("patch", "cm", "edge", "-n", namespace, "-p", '{"data":{"key":"hand"}}')
        wait_for(
            lambda: data(cluster, namespace) == "from-git",
            timeout=30,
            what="healed after the restart, still offline",
        )
        cond = offline_condition(d, "edge")
        assert cond is not None and cond["lastTransitionTime"] == since, (cond, since)
        assert d.status("edge")["sync"]["status"] == "Synced"

        away.rename(git_repo.bare)
        new = git_repo.write({"a/cm.yaml": configmap("edge", data="v2")})
        wait_for(
            lambda: data(cluster, namespace) == "v2" and d.synced("edge", new),
            timeout=60,
            what="the new commit synced once git is back",
        )
        wait_for(
            lambda: offline_condition(d, "edge") is None,
            timeout=10,
            what="the condition cleared",
        )


def test_without_a_last_good_render_an_unreachable_source_is_an_error(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An app never rendered before has nothing to fall back to: the ComparisonError says
    the source is unreachable and that no last good render is kept; nothing is applied."""
    git_repo.write({"a/cm.yaml": configmap("edge")})
    git_repo.bare.rename(git_repo.bare.with_name(git_repo.bare.name + ".away"))
    cfg = write_config(
        tmp_path, cluster, [application("edge", git_repo.url, "a", namespace)], repoTimeout="10s"
    )
    with running(cfg) as d:

        def failed() -> bool:
            conds = d.status("edge").get("conditions") or []
            return any(
                c.get("type") == "ComparisonError"
                and "no last good render of this app is kept" in c.get("message", "")
                for c in conds
            )

        wait_for(failed, timeout=30, what="the ComparisonError")
        assert get(cluster, namespace, "configmap/edge") is None
