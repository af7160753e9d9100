"""The status page's routes: `/` and `/ui/...`, served beside the API with its authentication.

A token is given once in the login form and kept in an HttpOnly, SameSite=Strict cookie (or
sent as the API's Authorization header); readonly tokens see the pages, tokens that may sync an
app get its buttons. Every form that changes something carries a CSRF token tied to the
session, and a cross-site Origin is refused. The cookie is honoured on these routes only, never
by the JSON API.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import anyio
from aiohttp import web

from daemon.errors import GitopsdError
from daemon.stages import SyncRequest
from daemon.status import pages

if TYPE_CHECKING:
    from daemon.status.api import Auth, Control

COOKIE = "gitopsd_token"
SESSION_SECONDS = 8 * 3600  # a log-in lasts this long (the cookie holds a MAC, not the token)
UI_FLAG = "gitopsd.ui"  # request key: the cookie may authenticate this request
DIFF_TIMEOUT = 15.0
DIFF_CACHE = 64  # diffs kept (app, reconcile) for the detail page's refreshes


def _local_path(target: str) -> str:
    """`target` when it is a path on this server, else "/" (no open redirect: `//host`,
    `/\\host`, schemes and control characters are refused)."""
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or parts.scheme
        or parts.netloc
        or "\\" in target
        or any(ord(c) < 0x20 or c == "\x7f" for c in target)
        or target.startswith("//")
    ):
        return "/"
    return target


class Session:
    """CSRF tokens: an HMAC of the session's cookie. With API tokens the key derives from
    them (every replica and restart agrees); in open mode it is made at start."""

    def __init__(self, tokens: Any) -> None:
        self.tokens = tokens  # () -> the token hashes
        self.random = os.urandom(32)

    def csrf(self, request: web.Request) -> str:
        hashes = sorted(self.tokens())
        key = hashlib.sha256(("gitopsd-csrf\n" + "\n".join(hashes)).encode()).digest()
        seed = request.cookies.get(COOKIE, "") or "open"
        return hmac.new(key if hashes else self.random, seed.encode(), hashlib.sha256).hexdigest()[
            :32
        ]

    def check(self, request: web.Request, form: Any) -> None:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="cross-site request refused")
        given = str(form.get("csrf") or "")
        if not hmac.compare_digest(given, self.csrf(request)):
            raise web.HTTPForbidden(text="invalid or missing CSRF token; reload the page")


def add_routes(
    routes: web.RouteTableDef,
    daemon: Control,
    auth: Auth,
    diff_items: Any,
    app_json: Any,
) -> None:
    """Register the status page on `routes` (`diff_items` and `app_json` are the API's, passed
    in so this module never imports it)."""
    session = Session(auth.tokens)
    diff_cache: dict[tuple[str, str], tuple[list[dict[str, Any]], str]] = {}

    def viewer(request: web.Request) -> pages.Viewer:
        p = auth.principal(request)
        name = ""
        if p is not None:
            name = p[0] if p[0] != "none" else "project token"
        can_login = bool(daemon.config.api_tokens or auth.local_hash)
        return pages.Viewer(name, session.csrf(request), can_login)

    def gate(request: web.Request) -> None:
        """Any page needs read access: open loopback, or a token (cookie or header)."""
        request[UI_FLAG] = True
        if auth.open_access(mutating=False) or auth.principal(request) is not None:
            return
        if daemon.config.api_tokens:
            raise web.HTTPFound(f"/ui/login?next={quote(request.path_qs)}")
        raise web.HTTPUnauthorized(
            text="the status page needs apiTokens when the API listens beyond loopback"
        )

    def page(request: web.Request, title: str, main: str, *, refresh: bool = True) -> web.Response:
        if request.headers.get("X-Gitopsd-Fragment"):
            return web.Response(text=main, content_type="text/html")
        return web.Response(
            text=pages.layout(title, main, viewer(request), refresh=refresh),
            content_type="text/html",
            headers={
                "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                f"script-src '{pages.SCRIPT_HASH}'; form-action 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    def visible(request: web.Request) -> list[str]:
        return [n for n in sorted(daemon.workers) if auth.may(request, "get", n)]

    def app_doc(name: str) -> dict[str, Any]:
        return dict(app_json(daemon, name))

    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        gate(request)
        filters = {k: request.query.get(k, "") for k in ("project", "sync", "health", "q")}
        apps = [app_doc(n) for n in visible(request)]
        main = pages.app_list(apps, filters, request.query.get("flash", ""))
        return page(request, "Applications", main)

    @routes.get("/ui/applications/{name}")
    async def detail(request: web.Request) -> web.Response:
        gate(request)
        name = request.match_info["name"]
        if name not in daemon.workers or not auth.may(request, "get", name):
            raise web.HTTPNotFound(text=f"no application {name!r} you may read")
        doc = app_doc(name)
        app = daemon.workers[name].app
        diffs: list[dict[str, Any]] = []
        error = ""
        status = doc.get("status") or {}
        if (status.get("sync") or {}).get("status") != "Synced":
            # One diff per reconcile of the app, however many tabs refresh meanwhile.
            key = (name, str(status.get("reconciledAt", "")))
            if key not in diff_cache:
                try:
                    with anyio.fail_after(DIFF_TIMEOUT):
                        desired, cmp = await daemon.diff(app)
                    diff_cache[key] = (diff_items(desired, cmp), "")
                except (GitopsdError, TimeoutError) as e:
                    diff_cache[key] = ([], f"diff unavailable: {e or 'timed out'}")
                while len(diff_cache) > DIFF_CACHE:
                    diff_cache.pop(next(iter(diff_cache)))
            diffs, error = diff_cache[key]
        live: dict[str, dict[str, Any]] = {}
        for r in status.get("resources") or []:
            if r.get("group") != "argoproj.io" or r.get("kind") != "Rollout":
                continue
            ns, ro_name = str(r.get("namespace", "")), str(r.get("name", ""))
            try:
                with anyio.fail_after(5):
                    live[f"{ns}/{ro_name}"] = await daemon.rollout_get(name, ns, ro_name)
            except (GitopsdError, TimeoutError):
                pass  # the table falls back to the Rollout's health
        info = pages.Detail(
            rollouts=live,
            diffs=diffs,
            diff_error=error,
            can_sync=auth.may(request, "sync", name),
            automated=app.sync_policy.automated is not None,
            flash=request.query.get("flash", ""),
        )
        return page(request, name, pages.app_detail(doc, info, viewer(request)))

    @routes.post("/ui/applications/{name}/{action}")
    async def act(request: web.Request) -> web.Response:
        gate(request)
        name, action = request.match_info["name"], request.match_info["action"]
        form = await request.post()
        session.check(request, form)
        if name not in daemon.workers or not auth.may(request, "sync", name):
            raise web.HTTPForbidden(text=f"not allowed to {action} application {name}")
        who = viewer(request).name or "status page"
        worker = daemon.workers[name]
        if action == "sync":
            prune = str(form.get("prune", "")) == "true"
            req = SyncRequest(prune=True if prune else None, initiated_by=who)
            ok = daemon.request(name, req, "status page sync")
            flash = "sync requested" if ok else "another replica reconciles this app"
        elif action == "refresh":
            daemon.hard_refresh(name)
            flash = "refresh requested"
        elif action == "rollback":
            if worker.app.sync_policy.automated is not None:
                flash = "rollback cannot be initiated when auto-sync is enabled"
            else:
                wanted = str(form.get("id", ""))
                history = worker.last_status.get("history") or []
                entry = next((h for h in history if str(h.get("id")) == wanted), None)
                if entry is None:
                    flash = f"history id {wanted} not found"
                else:
                    req = SyncRequest(revision=entry["revision"], initiated_by=who)
                    daemon.request(name, req, f"rollback to {wanted}")
                    flash = f"rollback to {wanted} requested"
        else:
            raise web.HTTPNotFound(text=f"unknown action {action!r}")
        raise web.HTTPSeeOther(f"/ui/applications/{quote(name)}?flash={quote(flash)}")

    @routes.get("/ui/applicationsets")
    async def appsets(request: web.Request) -> web.Response:
        gate(request)
        auth.check_global_read(request)  # as the API: readonly or admin tokens
        names = set(visible(request))
        items = [
            {
                "name": a.name,
                "applications": sorted(
                    n for n, o in daemon.expansion.owner.items() if o == a.name and n in names
                ),
                "error": daemon.expansion.errors.get(a.name, ""),
            }
            for a in daemon.config.application_sets
        ]
        return page(request, "ApplicationSets", pages.appsets_page(items))

    @routes.get("/ui/clusters")
    async def clusters(request: web.Request) -> web.Response:
        gate(request)
        unreachable = daemon.unreachable_clusters
        rows = []
        for c in daemon.config.clusters:
            apps = [
                n
                for n in visible(request)
                if daemon.workers[n].app.destination.server == c.server
                or daemon.workers[n].app.destination.name == c.name
            ]
            rows.append(
                {
                    "name": c.name,
                    "server": c.server,
                    "reachable": c.name not in unreachable,
                    "error": unreachable.get(c.name, ""),
                    "apps": ", ".join(apps),
                }
            )
        return page(request, "Clusters", pages.clusters_page(rows))

    @routes.get("/ui/login")
    async def login_form(request: web.Request) -> web.Response:
        next_url = request.query.get("next", "/")
        return page(request, "Log in", pages.login_page("", next_url), refresh=False)

    @routes.post("/ui/login")
    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        next_url = _local_path(request.query.get("next", "/"))
        if not token or not auth.valid(token):
            main = pages.login_page("That token is not valid.", next_url)
            return page(request, "Log in", main, refresh=False)
        response = web.HTTPSeeOther(next_url)
        behind_tls = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        response.set_cookie(
            COOKIE,
            auth.session_cookie(token),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="Strict",
            secure=request.secure or behind_tls,
            path="/",
        )
        raise response

    @routes.post("/ui/logout")
    async def logout(request: web.Request) -> web.Response:
        request[UI_FLAG] = True
        form = await request.post()
        session.check(request, form)
        response = web.HTTPSeeOther("/ui/login")
        response.del_cookie(COOKIE, path="/")
        raise response
