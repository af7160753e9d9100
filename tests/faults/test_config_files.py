"""Config files that go briefly wrong (emptied by an editor or `cat >`, a dangling symlink, a
glob's directory emptied and filled again) never delete an app's resources, and a real removal
is acted on only once it has held across reads some seconds apart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get

pytestmark = pytest.mark.cluster
FINALIZER = "resources-finalizer.argocd.argoproj.io"


def _cascading(name: str, url: str, path: str, namespace: str) -> dict[str, Any]:
    app = application(name, url, path, namespace)
    app["metadata"]["finalizers"] = [FINALIZER]
    return app


def test_emptied_file_and_dangling_symlink_keep_the_running_config(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An app file emptied for two seconds, and an app file that is a symlink whose target went
    away, are config errors naming the file: the apps stay managed and nothing is deleted."""
    git_repo.write({"a/cm.yaml": configmap("keep-a"), "b/cm.yaml": configmap("keep-b")})
    cfg = write_config(tmp_path, cluster, [_cascading("keep-a", git_repo.url, "a", namespace)])
    data = yaml.safe_load(cfg.read_text())
    data["settings"]["appRemovalGracePeriod"] = "4s"
    cfg.write_text(yaml.safe_dump(data))
    target = tmp_path / "elsewhere" / "keep-b.yaml"
    target.parent.mkdir()
    target.write_text(yaml.safe_dump(_cascading("keep-b", git_repo.url, "b", namespace)))
    (tmp_path / "apps" / "keep-b.yaml").symlink_to(target)
    with running(cfg) as d:
        wait_for(lambda: d.synced("keep-a") and d.synced("keep-b"), timeout=60, what="synced")
        app_file = tmp_path / "apps" / "keep-a.yaml"
        good = app_file.read_text()
        app_file.write_text("")  # an editor or `cat >` mid-write
        wait_for(
            lambda: "keep-a.yaml" in str(d.api("/readyz").json().get("configError")),
            timeout=10,
            what="the emptied file reported",
        )
        err = str(d.api("/readyz").json()["configError"])
        assert "empty" in err, err
        time.sleep(2)
        app_file.write_text(good)
        wait_for(lambda: not d.api("/readyz").json().get("configError"), timeout=10, what="ok")

        target.unlink()  # the symlink now points nowhere
        wait_for(
            lambda: "keep-b.yaml" in str(d.api("/readyz").json().get("configError")),
            timeout=10,
            what="the dangling symlink reported",
        )
        assert "symlink" in str(d.api("/readyz").json()["configError"])
        time.sleep(6)  # longer than the removal grace period
        assert d.app("keep-a") is not None and d.app("keep-b") is not None
        assert get(cluster, namespace, "configmap/keep-a") is not None
        assert get(cluster, namespace, "configmap/keep-b") is not None


def test_removal_waits_for_a_second_read_and_new_files_in_an_empty_glob_are_seen(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An app whose file is deleted stays managed (resources kept) until its absence has held
    for the grace period, and is then removed with its resources; a file added to the glob's
    directory after it became empty is picked up."""
    git_repo.write({"a/cm.yaml": configmap("gone-a"), "c/cm.yaml": configmap("late-c")})
    cfg = write_config(tmp_path, cluster, [_cascading("gone-a", git_repo.url, "a", namespace)])
    data = yaml.safe_load(cfg.read_text())
    data["settings"]["appRemovalGracePeriod"] = "5s"
    cfg.write_text(yaml.safe_dump(data))
    with running(cfg) as d:
        wait_for(lambda: d.synced("gone-a"), timeout=60, what="gone-a synced")
        (tmp_path / "apps" / "gone-a.yaml").unlink()
        removed_at = time.monotonic()
        time.sleep(2.5)
        assert d.app("gone-a") is not None, "removed before the grace period passed"
        assert get(cluster, namespace, "configmap/gone-a") is not None
        wait_for(lambda: d.app("gone-a") is None, timeout=30, what="gone-a removed")
        assert time.monotonic() - removed_at >= 4.5
        wait_for(
            lambda: get(cluster, namespace, "configmap/gone-a") is None,
            timeout=30,
            what="gone-a's resources deleted once the removal held",
        )
        late = _cascading("late-c", git_repo.url, "c", namespace)
        (tmp_path / "apps" / "late-c.yaml").write_text(yaml.safe_dump(late))
        wait_for(lambda: d.synced("late-c"), timeout=30, what="a file added to an empty glob")


def test_a_truncated_applicationset_deletes_no_generated_app(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An ApplicationSet file caught mid-write (still valid YAML, one list element lost) keeps
    the generated app and its resources; written whole again within the grace period, nothing
    was removed; cut again and left so, the app goes once the grace period has passed."""
    git_repo.write({"a/cm.yaml": configmap("gen-a"), "b/cm.yaml": configmap("gen-b")})
    cfg = write_config(tmp_path, cluster, [])
    data = yaml.safe_load(cfg.read_text())
    data["settings"]["appRemovalGracePeriod"] = "6s"
    cfg.write_text(yaml.safe_dump(data))
    template = {
        "metadata": {"name": "gen-{{p}}", "finalizers": [FINALIZER]},
        "spec": {
            "project": "default",
            "source": {"repoURL": git_repo.url, "path": "{{p}}", "targetRevision": "HEAD"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            "syncPolicy": {"automated": {}},
        },
    }
    aset = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "gen"},
        # The template first and the elements last, so a cut after one element stays valid.
        "spec": {
            "template": template,
            "generators": [{"list": {"elements": [{"p": "a"}, {"p": "b"}]}}],
        },
    }
    f = tmp_path / "apps" / "appset.yaml"
    f.write_text(yaml.safe_dump(aset, sort_keys=False))
    with running(cfg) as d:
        wait_for(lambda: d.synced("gen-a") and d.synced("gen-b"), timeout=60, what="synced")
        full = f.read_text()
        cut = full[: full.index("- p: b")]
        assert yaml.safe_load(cut)
        f.write_text(cut)
        time.sleep(4)
        assert d.app("gen-b") is not None and get(cluster, namespace, "configmap/gen-b")
        f.write_text(full)
        time.sleep(6)
        assert d.app("gen-b") is not None, "removed although the file came back in time"
        assert get(cluster, namespace, "configmap/gen-b") is not None
        f.write_text(cut)
        wait_for(lambda: d.app("gen-b") is None, timeout=60, what="gen-b removed after the grace")
        wait_for(
            lambda: get(cluster, namespace, "configmap/gen-b") is None,
            timeout=30,
            what="gen-b's resources deleted once its removal held",
        )
