"""The status page's HTML without a daemon: every value escaped, filters, and buttons only
for those who may use them."""

from __future__ import annotations

from typing import Any

from daemon.status import pages


def app(name: str, sync: str, health: str, project: str = "default") -> dict[str, Any]:
    """An Argo CD-shaped app with one condition whose message holds markup."""
    return {
        "metadata": {"name": name},
        "spec": {"project": project, "source": {"repoURL": "https://git.example/r.git"}},
        "status": {
            "sync": {"status": sync, "revision": "0123456789abcdef"},
            "health": {"status": health},
            "conditions": [{"type": "ComparisonError", "message": "<script>alert(1)</script>"}],
            "history": [{"id": 3, "revision": "0123456789abcdef", "deployedAt": "T"}],
        },
    }


def test_values_are_escaped_and_filters_apply() -> None:
    """Markup in a condition message is shown as text; sync and project filters narrow."""
    apps = [app("web", "Synced", "Healthy"), app("db", "OutOfSync", "Degraded", "data")]
    html = pages.app_list(apps, {"sync": "OutOfSync"})
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-app="db"' in html and 'data-app="web"' not in html
    assert "Applications (1 of 2)" in html
    assert 'data-app="web"' in pages.app_list(apps, {"project": "default"})


def test_buttons_only_for_those_who_may_sync() -> None:
    """A reader gets no forms; a syncer gets Sync and, with auto-sync off, Rollback, each
    form carrying the CSRF token."""
    viewer = pages.Viewer("admin", "csrf-123", True)
    reader = pages.app_detail(app("web", "Synced", "Healthy"), pages.Detail(), viewer)
    assert "<form" not in reader.replace('action="/ui/logout"', "")
    syncer = pages.app_detail(app("web", "Synced", "Healthy"), pages.Detail(can_sync=True), viewer)
    assert syncer.count('name="csrf" value="csrf-123"') == 4  # sync, prune, refresh, rollback
    auto = pages.app_detail(
        app("web", "Synced", "Healthy"), pages.Detail(can_sync=True, automated=True), viewer
    )
    assert "rollback needs auto-sync off" in auto


def test_login_redirects_stay_on_this_server() -> None:
    """Only a local path survives as the login's `next`: no //host, /\\host, scheme or
    control character (an open redirect)."""
    from daemon.status.ui import _local_path

    assert _local_path("/ui/applications/web?x=1") == "/ui/applications/web?x=1"
    for bad in ("//evil.example", "/\\evil.example", "https://evil.example", "/a\r\nb", "x"):
        assert _local_path(bad) == "/"
