"""The status page in a real browser: headless Chromium (Debian's), driven by Playwright,
against a running daemon with API tokens. Screenshots go to $GITOPSD_SCREENSHOTS when set
(`make screenshots` writes the README's)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]

SECRET = """apiVersion: v1
kind: Secret
metadata:
  name: page-secret
  annotations:
    argocd.argoproj.io/sync-wave: "1"
stringData:
  password: hunter2-plain
"""


def chromium() -> str:
    """Debian's Chromium, installed by tests/testenv/install-chromium.sh (make tools)."""
    out = subprocess.run(
        ["bash", str(ROOT / "tests/testenv/install-chromium.sh")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"chromium is needed for this test: {out.stderr}"
    return out.stdout.strip().splitlines()[-1]


def shot(page: Page, name: str) -> None:
    """Save a screenshot when $GITOPSD_SCREENSHOTS names a directory."""
    target = os.environ.get("GITOPSD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def login(page: Page, url: str, token: str) -> None:
    """Log in through the form."""
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Applications")


def test_status_page_in_a_browser(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """Login with a token; the list shows sync/health badges and filters by sync status; a
    readonly token sees no buttons and the diff masks Secret values; an admin clicks Sync and
    the page refreshes itself to Synced; forms without the CSRF token or from another origin
    are refused, and the cookie never opens the JSON API."""
    git_repo.write(
        {
            "web/cm.yaml": configmap("page-web"),
            "manual/cm.yaml": configmap("page-manual", data="wanted"),
            "manual/secret.yaml": SECRET,
        }
    )
    apps = [
        application("page-web", git_repo.url, "web", namespace),
        application("page-manual", git_repo.url, "manual", namespace, automated=False),
    ]
    cfg = write_config(tmp_path, cluster, apps, reconcileInterval="2s")
    tokens = {"admin": "admin-token-123", "readonly": "reader-token-456"}
    data = yaml.safe_load(cfg.read_text())
    data["apiTokens"] = []
    for role, value in tokens.items():
        (tmp_path / f"{role}.token").write_text(value)
        data["apiTokens"].append(
            {"name": role, "tokenFile": str(tmp_path / f"{role}.token"), "role": role}
        )
    cfg.write_text(yaml.safe_dump(data))
    with running(cfg) as d, sync_playwright() as pw:
        wait_for(lambda: _synced(d.url, tokens["admin"], "page-web"), timeout=60, what="synced")
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})

        login(page, d.url, tokens["readonly"])
        web_row = page.locator("tr[data-app=page-web]")
        expect(web_row.locator(".badge.Synced")).to_be_visible()
        expect(web_row.locator(".badge.Healthy")).to_be_visible()
        expect(page.locator("tr[data-app=page-manual] .badge.OutOfSync")).to_be_visible()
        shot(page, "status-list")
        page.select_option("select[name=sync]", "OutOfSync")
        expect(page.locator("tr[data-app]")).to_have_count(1)
        expect(page.locator("tr[data-app=page-manual]")).to_be_visible()

        page.click("a[href='/ui/applications/page-manual']")
        expect(page.locator("h1")).to_contain_text("page-manual")
        expect(page.locator("button", has_text="Sync")).to_have_count(0)
        diff = page.locator("main").inner_text()
        assert "Secret/" in diff and "++++++++" in diff, diff
        assert "hunter2" not in page.content(), "a Secret value reached the page"

        page.click("text=Log out")
        login(page, d.url, tokens["admin"])
        page.goto(d.url + "/ui/applications/page-manual")
        page.click("button:text-is('Sync')")
        expect(page.locator(".flash")).to_contain_text("sync requested")
        # No reload: the page re-fetches itself every few seconds.
        expect(page.locator("h1 .badge.Synced")).to_be_visible(timeout=30_000)
        # Resources grouped by wave, and the operation's results wave by wave.
        expect(page.locator("tr.wave td", has_text="Sync wave 1")).to_have_count(2)
        expect(page.locator("h2", has_text="History")).to_be_visible()
        expect(page.locator("button", has_text="Rollback")).to_have_count(1)
        shot(page, "status-detail")
        page.goto(d.url + "/ui/clusters")
        expect(page.locator("td", has_text="in-cluster")).to_be_visible()
        page.goto(d.url + "/ui/applicationsets")
        expect(page.locator("h1")).to_contain_text("ApplicationSets (0)")

        cookie = next(c for c in page.context.cookies() if c["name"] == "gitopsd_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # A cookie reaches every port of the host: it carries a session MAC, never the token.
        assert tokens["admin"] not in cookie["value"], "the raw API token is in the cookie"
        jar = {"gitopsd_token": cookie["value"]}
        no_csrf = httpx.post(
            d.url + "/ui/applications/page-manual/sync", cookies=jar, follow_redirects=False
        )
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        html = httpx.get(d.url + "/ui/applications/page-manual", cookies=jar).text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert csrf is not None
        evil = httpx.post(
            d.url + "/ui/applications/page-manual/sync",
            cookies=jar,
            data={"csrf": csrf.group(1)},
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert evil.status_code == 403
        assert httpx.get(d.url + "/api/v1/applications", cookies=jar).status_code == 401
        browser.close()


def _synced(url: str, token: str, name: str) -> bool:
    r = httpx.get(f"{url}/api/v1/applications/{name}", headers={"Authorization": f"Bearer {token}"})
    return r.status_code == 200 and (r.json()["status"].get("sync") or {}).get("status") == (
        "Synced"
    )
