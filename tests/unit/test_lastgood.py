"""The last good render kept per app for offline operation: kept atomically and only when it
changed, bounded, tied to the app spec it came from, forgotten with the app; and when the
scheduled backup runs."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from daemon.model import Manifest, ResourceKey
from daemon.settings import Application, parse_application
from daemon.sources.lastgood import LastGood, Rendered


def app(path: str = "a") -> Application:
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "edge", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "git://x/r", "path": path, "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "n"},
        },
    }
    return parse_application(doc, where="test", warnings=[])


def rendered(data: str = "x") -> Rendered:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": data}}
    return Rendered([Manifest(ResourceKey.of(body), body, "a/cm.yaml")], ["a" * 40], [], ["dir"])


async def test_a_kept_render_comes_back_for_the_same_spec_only(tmp_path: Path) -> None:
    """What was kept loads back (manifests, revisions, when); a changed spec refuses it with
    the reason; a missing or corrupt file says so instead of raising."""
    store = LastGood(tmp_path, max_bytes=1 << 20)
    missing, why = store.load(app())
    assert missing is None and "no last good render" in why
    await store.keep(app(), rendered())
    kept, why = LastGood(tmp_path, max_bytes=1 << 20).load(app())  # a restart
    assert kept is not None and why == ""
    assert kept.manifests[0].body["data"] == {"k": "x"} and kept.manifests[0].source == "a/cm.yaml"
    assert kept.revisions == ["a" * 40] and kept.rendered_at.endswith("Z")
    other, why = store.load(app(path="b"))
    assert other is None and "spec changed" in why
    (tmp_path / "last-good" / "edge.json.gz").write_bytes(b"not gzip")
    broken, why = store.load(app())
    assert broken is None and "unreadable" in why


async def test_only_a_changed_render_is_written_and_large_ones_are_not_kept(
    tmp_path: Path,
) -> None:
    """The same render twice is one write; one over the cap is not kept (the old one stays);
    forget removes it; no temporary file is left behind."""
    store = LastGood(tmp_path, max_bytes=1 << 20)
    path = tmp_path / "last-good" / "edge.json.gz"
    await store.keep(app(), rendered())
    first = path.stat().st_mtime_ns
    await store.keep(app(), rendered())
    assert path.stat().st_mtime_ns == first, "unchanged render: not rewritten"
    tiny = LastGood(tmp_path, max_bytes=50)
    await tiny.keep(app(), rendered("y" * 5000))
    assert b'"k":"x"' in gzip.decompress(path.read_bytes()), "the old render stays"
    assert [p.name for p in (tmp_path / "last-good").iterdir()] == ["edge.json.gz"]
    store.forget("edge")
    assert not path.exists()


def test_the_backup_schedule_fires_at_the_next_matching_minute() -> None:
    """settings.backup.schedule: the next run is the first matching minute after now (UTC),
    never now itself."""
    import datetime as dt

    from daemon.dr.backup import next_run

    now = dt.datetime(2026, 12, 2, 1, 59, 30)
    assert next_run("0 2 * * *", now) == dt.datetime(2026, 12, 2, 2, 0)
    assert next_run("0 2 * * *", dt.datetime(2026, 12, 2, 2, 0)) == dt.datetime(2026, 12, 3, 2, 0)
    assert next_run("*/15 * * * *", now) == dt.datetime(2026, 12, 2, 2, 0)


async def test_a_kept_render_stands_in_only_under_the_keys_that_signed_it(tmp_path: Path) -> None:
    """The signer of each kept commit survives a restart; under signatureKeys a kept render is
    usable only when every commit was verified and its signer is still among the keys (an
    unchecked render, or one signed by a key since removed, is refused with the reason)."""
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    store = LastGood(tmp_path, max_bytes=1 << 20)
    signed = Rendered(**{**rendered().__dict__, "signers": {"a" * 40: fpr}})
    await store.keep(app(), signed)
    kept, _ = LastGood(tmp_path, max_bytes=1 << 20).load(app())
    assert kept is not None and kept.signers == {"a" * 40: fpr}
    assert kept.signed_for(["89ABCDEF01234567"]) == ""
    assert "no longer among the project's signatureKeys" in kept.signed_for(["FFFFFFFFFFFFFFFF"])
    assert "was not signature-checked" in rendered().signed_for(["89ABCDEF01234567"])
