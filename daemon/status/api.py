"""The HTTP API: health probes, metrics, Argo CD-shaped applications, sync/refresh/rollback,
and git webhooks (GitHub, GitLab, Gitea/Gogs, Bitbucket) — all on one port.

Mutating calls always need a token: a configured admin token, or the daemon's local token
(`daemon.status.localtoken`, a file only its user can read); reads are open on loopback when no
tokens are configured. Tokens are compared by hash and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import anyio
import structlog
from aiohttp import web

from daemon.appproject import AppProject
from daemon.appproject.roles import authorize
from daemon.appsets import Expansion
from daemon.errors import ConfigError, GitopsdError, KubeError
from daemon.labels import parse_selector
from daemon.model import Manifest, ResourceKey
from daemon.plan.diff import redact_secret
from daemon.settings import Application, Config
from daemon.stages import Comparison, Desired, SyncRequest
from daemon.status import localtoken, ui
from daemon.status.build import application_document
from daemon.status.metrics import Metrics

log = structlog.get_logger("gitopsd.api")


class AppView(Protocol):
    """One managed app as the API sees it."""

    app: Application
    last_status: dict[str, Any]


class Control(Protocol):
    """What the API needs from the daemon (`daemon.runner.Control` provides it); the API never
    imports the runner."""

    config: Config
    config_path: str
    config_error: str
    ready: bool
    clusters_ok: set[str]
    metrics: Metrics
    expansion: Expansion
    api_address: str

    @property
    def workers(self) -> Mapping[str, AppView]: ...

    @property
    def unreachable_clusters(self) -> dict[str, str]: ...

    def project_for(self, app: Application) -> AppProject | None:
        """The project `app` is judged by (None when it does not exist)."""

    async def diff(
        self, app: Application, local: Sequence[Manifest] | None = None
    ) -> tuple[Desired, Comparison]:
        """Desired and live state of `app` now."""

    def request(self, name: str, sync: SyncRequest | None, reason: str) -> bool:
        """Queue a reconcile (and a sync when `sync` is given) of app `name`."""

    def owner_of(self, name: str) -> str:
        """The replica that reconciles app `name` when it is not this one, else ""."""

    def owner_address(self, name: str) -> str:
        """That replica's API address, when known."""

    def sharding(self) -> dict[str, Any]:
        """This replica's view of the members (settings.sharding)."""

    async def backup_now(self) -> dict[str, Any]:
        """Write a backup archive into settings.backup.dir now; its path and size."""

    def hard_refresh(self, name: str) -> None:
        """Re-resolve app `name`'s revisions (ignoring the poll cache) and compare now."""

    def effective_app(self, name: str) -> Application:
        """App `name` as reconciled (its document plus parameter overrides)."""

    async def set_overrides(
        self, name: str, changes: dict[str, str], removed: list[str]
    ) -> dict[str, str]:
        """Change app `name`'s parameter overrides (persisted); the new overrides."""

    def terminate(self, name: str) -> bool:
        """Stop app `name`'s running operation; False when none runs."""

    async def delete(self, name: str, *, cascade: bool) -> None:
        """Delete app `name` (its resources too with `cascade`); it stays deleted until
        its document changes."""

    def refresh_matching(self, urls: set[str], branch: str, *, reason: str) -> list[str]:
        """Refresh the apps following one of `urls` at `branch`; their names."""

    async def rollout_get(self, app_name: str, namespace: str, name: str) -> dict[str, Any]:
        """The live Rollout `namespace/name` of app `app_name`."""

    async def rollout_action(
        self, app_name: str, namespace: str, name: str, action: str, to_revision: int | None
    ) -> str:
        """Apply a user operation to a Rollout of app `app_name`; what was done."""


MAX_WEBHOOK_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES = 1024 * 1024
_PRINCIPAL = "gitopsd.principal"  # request key: the request's (role, groups), once looked up
FORWARDED = "X-Gitopsd-Forwarded"  # set on a request one replica passes to an app's owner


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _session_mac(token_hash: str, expiry: int) -> str:
    """The status page's session value for a token: keyed by the token's hash, so replicas
    agree and a rotated token ends its sessions; the token itself never goes into a cookie."""
    key = hashlib.sha256(b"gitopsd-session\n" + token_hash.encode()).digest()
    return hmac.new(key, str(expiry).encode(), hashlib.sha256).hexdigest()


class Auth:
    """Bearer tokens from the config's `apiTokens`, held only as hashes."""

    def __init__(self, daemon: Control, *, local_token: str = "", token_file: str = "") -> None:
        self.daemon = daemon
        self.local_hash = _hash(local_token) if local_token else ""
        self.token_file = token_file  # where the local token is, named in 401 answers

    def tokens(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        out = {}
        for t in self.daemon.config.api_tokens:
            try:
                value = Path(t.token_file).read_text().strip(" \t\r\n")
                if not value:
                    # An empty file (a secret not provisioned yet) must not become a token that
                    # an empty Authorization header matches.
                    log.error("api token file is empty; token disabled", token=t.name)
                    continue
                out[_hash(value)] = (t.role, t.groups)
            except OSError as e:
                log.error("api token file unreadable", token=t.name, error=e.strerror)
        return out

    def valid(self, token: str) -> bool:
        """Whether `token` is one of the configured API tokens or the local token."""
        if self.local_hash and hmac.compare_digest(_hash(token), self.local_hash):
            return True
        return _hash(token) in self.tokens()

    def loopback_only(self) -> bool:
        host = self.daemon.config.settings.listen.rsplit(":", 1)[0].strip("[]")
        if host in ("localhost", ""):
            return host == "localhost"
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def principal(self, request: web.Request) -> tuple[str, tuple[str, ...]] | None:
        """(role, groups) of the request's token, or None (no or bad token). The status
        page's cookie counts only on its own routes (never for the JSON API, which a
        cross-site form could otherwise reach with the browser's cookie)."""
        if _PRINCIPAL in request:  # once per request: a page checks every app it lists
            found: tuple[str, tuple[str, ...]] | None = request[_PRINCIPAL]
            return found
        found = self._principal(request)
        request[_PRINCIPAL] = found
        return found

    def _principal(self, request: web.Request) -> tuple[str, tuple[str, ...]] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            cookie = request.cookies.get(ui.COOKIE, "") if request.get(ui.UI_FLAG) else ""
            return self._from_session(cookie.strip())
        value = header[7:].strip(" \t")  # ASCII only: no Unicode whitespace games
        if not value:
            return None
        if self.local_hash and hmac.compare_digest(_hash(value), self.local_hash):
            return ("admin", ())
        return self.tokens().get(_hash(value))

    def session_cookie(self, token: str) -> str:
        """The cookie value a log-in with `token` gets: an expiry and a MAC, not the token
        (a cookie reaches every port of the host; the raw token would work on the JSON API)."""
        expiry = int(time.time()) + ui.SESSION_SECONDS
        return f"{expiry}.{_session_mac(_hash(token), expiry)}"

    def _from_session(self, value: str) -> tuple[str, tuple[str, ...]] | None:
        stamp, _, mac = value.partition(".")
        if not stamp.isdigit() or int(stamp) < time.time() or not mac:
            return None
        candidates = dict(self.tokens())
        if self.local_hash:
            candidates[self.local_hash] = ("admin", ())
        for token_hash, principal in candidates.items():
            if hmac.compare_digest(_session_mac(token_hash, int(stamp)), mac):
                return principal
        return None

    def role(self, request: web.Request) -> str | None:
        p = self.principal(request)
        return p[0] if p else None

    def open_access(self, *, mutating: bool) -> bool:
        """No tokens configured: loopback is open for reading; beyond loopback nothing is (app
        data names every tenant's repositories and resources). Writes always need a token: the
        local one (`daemon.status.localtoken`) when none is configured."""
        if mutating or self.daemon.config.api_tokens:
            return False
        return self.loopback_only()

    def unauthorized(self) -> web.HTTPUnauthorized:
        """401, saying where the local token is when the API is open for reading."""
        body: dict[str, str] = {"error": "a valid bearer token is required"}
        if self.token_file and self.open_access(mutating=False):
            body["error"] = (
                "writes need a bearer token; without apiTokens the daemon's local token is in "
                f"{self.token_file} (readable by the daemon's user only)"
            )
            body["tokenFile"] = self.token_file
        return web.HTTPUnauthorized(text=json.dumps(body), content_type="application/json")

    def metrics_allowed(self, request: web.Request) -> bool:
        """/metrics: open unless `metricsTokenFile` is set; then that token (or an admin or
        readonly API token) is needed. An unreadable or empty token file fails closed."""
        path = self.daemon.config.settings.metrics_token_file
        if not path:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:].strip(" \t") if header.startswith("Bearer ") else ""
        if not given:
            return False
        try:
            wanted = Path(path).read_text().strip(" \t\r\n")
        except OSError as e:
            log.error("metrics token file unreadable", error=e.strerror)
            return False
        if wanted and hmac.compare_digest(_hash(given), _hash(wanted)):
            return True
        return self.role(request) in ("admin", "readonly")

    def may(self, request: web.Request, action: str, app_name: str) -> bool:
        """Whether the request may do `action` (get, sync, ...) on an app: admin may do all,
        readonly may get, and AppProject role policies grant the token's groups more (deny wins)."""
        if self.open_access(mutating=action != "get"):
            return True
        p = self.principal(request)
        if p is None:
            return False
        role, groups = p
        if role == "admin":
            return True
        worker = self.daemon.workers.get(app_name)
        if worker is None:
            return False
        app = worker.app
        # Only the project the app is really judged by: a child-defined project never counts
        # for apps outside its parent, nor shadows a configured one.
        project = self.daemon.project_for(app)
        granted = project is not None and authorize(
            [project],
            groups=groups,
            action=action,
            app_project=app.project,
            app_name=app.name,
        )
        # The built-in readonly role gets every app (project policies can only add to it).
        return granted or (role == "readonly" and action == "get")

    def check_global_read(self, request: web.Request) -> None:
        """Reads that are not about one app (ApplicationSets, daemon status) need a readonly or
        admin token; project-scoped (`none`) tokens see only their apps."""
        if self.open_access(mutating=False):
            return
        role = self.role(request)
        if role is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "a valid bearer token is required"}),
                content_type="application/json",
            )
        if role not in ("admin", "readonly"):
            raise web.HTTPForbidden(
                text=json.dumps({"error": "this call needs a readonly or admin token"}),
                content_type="application/json",
            )

    def check_app(self, request: web.Request, action: str, app_name: str) -> None:
        if self.may(request, action, app_name):
            return
        if self.principal(request) is None:
            raise self.unauthorized()
        raise web.HTTPForbidden(
            text=json.dumps({"error": f"not allowed to {action} application {app_name}"}),
            content_type="application/json",
        )

    def check(self, request: web.Request, *, mutating: bool) -> None:
        role = self.role(request)
        if self.open_access(mutating=mutating):
            return
        if role is None:
            raise self.unauthorized()
        if mutating and role != "admin":
            raise web.HTTPForbidden(
                text=json.dumps({"error": "this call needs an admin token"}),
                content_type="application/json",
            )


def app_json(daemon: Control, name: str) -> dict[str, Any]:
    """App `name` as reconciled (with overrides), with its latest status."""
    return application_document(daemon.effective_app(name), daemon.workers[name].last_status)


def diff_items(desired: Desired, cmp: Comparison) -> list[dict[str, Any]]:
    """What is out of sync, per resource, as unified diffs (Secret values masked)."""
    from daemon.plan import diff as diffing

    items = []
    for m in desired.manifests:
        st = cmp.status.get(m.key)
        if st is None or str(st) == "Synced":
            continue
        d = cmp.diffs.get(m.key)
        items.append(
            {
                "resource": str(m.key),
                "status": "modified" if m.key in cmp.live else "missing",
                "error": cmp.errors.get(m.key, ""),
                "diff": diffing.unified_diff(
                    d.normalized_live if d else None,
                    d.normalized_desired if d else redact_secret(m.body),
                    from_name="live",
                    to_name="desired",
                ),
            }
        )
    for key, body in cmp.owned_extra.items():
        items.append(
            {
                "resource": str(key),
                "status": "requires pruning",
                "error": "",
                "diff": diffing.unified_diff(
                    redact_secret(diffing.normalize(body, rules=[], key=key)),
                    None,
                    from_name="live",
                    to_name="desired",
                ),
            }
        )
    return items


def _loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def build_app(daemon: Control, *, local_token: str = "", token_file: str = "") -> web.Application:
    auth = Auth(daemon, local_token=local_token, token_file=token_file)
    routes = web.RouteTableDef()

    def allowed(request: web.Request, action: str) -> str:
        """The app the route names, once it exists and the caller may `action` it."""
        name = request.match_info["name"]
        if name not in daemon.workers:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"application {name!r} not found"}),
                content_type="application/json",
            )
        auth.check_app(request, action, name)
        return name

    async def forward(request: web.Request, name: str) -> web.Response | None:
        """A sync or rollback for an app another replica owns goes to that replica (once:
        a forwarded request is never forwarded again); None when this replica owns it."""
        owner = daemon.owner_of(name)
        if not owner:
            return None
        address = daemon.owner_address(name)
        if address and not request.headers.get(FORWARDED):
            headers = {FORWARDED: "1", "Content-Type": "application/json"}
            if request.headers.get("Authorization"):
                headers["Authorization"] = request.headers["Authorization"]
            body = await request.read()
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.request(
                        request.method, address + request.path_qs, data=body, headers=headers
                    ) as r,
                ):
                    return web.Response(
                        status=r.status, body=await r.read(), content_type="application/json"
                    )
            except (aiohttp.ClientError, TimeoutError) as e:
                log.warning("forwarding to the owner failed", app=name, owner=owner, error=str(e))
        not_here(name)
        return None

    def not_here(name: str) -> None:
        """A sync goes to the replica that owns the app (settings.sharding)."""
        owner = daemon.owner_of(name)
        if owner:
            raise web.HTTPConflict(
                text=json.dumps(
                    {
                        "error": f"application {name!r} is reconciled by replica {owner!r}; "
                        "send the sync to it",
                        "owner": owner,
                    }
                ),
                content_type="application/json",
            )

    async def body_json(request: web.Request) -> dict[str, Any]:
        if request.content_length and request.content_length > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY_BYTES, actual_size=request.content_length
            )
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"invalid JSON: {e}"}), content_type="application/json"
            ) from e
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "expected a JSON object"}),
                content_type="application/json",
            )
        return data

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        # Unready while a destination cluster is unreachable: the daemon cannot do its job for
        # the apps there (liveness, /healthz, stays green).
        unreachable = daemon.unreachable_clusters
        ok = daemon.ready and not unreachable
        body: dict[str, Any] = {"ready": ok}
        if auth.open_access(mutating=False) or auth.principal(request) is not None:
            # Details (cluster names, config errors) only for those who may read the daemon.
            body["configError"] = daemon.config_error
            body["clusters"] = sorted(set(daemon.clusters_ok) - set(unreachable))
            body["unreachableClusters"] = unreachable
        return web.json_response(body, status=200 if ok else 503)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        if not auth.metrics_allowed(request):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "/metrics needs the metrics bearer token"}),
                content_type="application/json",
            )
        return web.Response(
            body=daemon.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    @routes.get("/api/v1/status")
    async def status(request: web.Request) -> web.Response:
        auth.check_global_read(request)
        return web.json_response(
            {
                "configFile": daemon.config_path,
                "configError": daemon.config_error,
                "apps": len(daemon.workers),
                "ready": daemon.ready,
            }
        )

    @routes.get("/api/v1/applicationsets")
    async def list_appsets(request: web.Request) -> web.Response:
        auth.check_global_read(request)
        items = []
        for aset in daemon.config.application_sets:
            apps = sorted(n for n, o in daemon.expansion.owner.items() if o == aset.name)
            items.append(
                {
                    "metadata": aset.raw.get("metadata", {}),
                    "spec": aset.raw.get("spec", {}),
                    "status": {
                        "applications": apps,
                        "error": daemon.expansion.errors.get(aset.name, ""),
                    },
                }
            )
        return web.json_response({"items": items})

    @routes.post("/api/v1/backup")
    async def backup(request: web.Request) -> web.Response:
        """A backup archive now, into settings.backup.dir (admin only)."""
        auth.check(request, mutating=True)
        try:
            written = await daemon.backup_now()
        except GitopsdError as e:
            return web.json_response({"error": str(e)}, status=409)
        except OSError as e:
            return web.json_response({"error": f"backup failed: {e}"}, status=500)
        return web.json_response(written, status=201)

    @routes.get("/api/v1/applications")
    async def list_apps(request: web.Request) -> web.Response:
        if auth.principal(request) is None and not auth.open_access(mutating=False):
            auth.check(request, mutating=False)
        names = [n for n in sorted(daemon.workers) if auth.may(request, "get", n)]
        # Argo CD's list filters: ?selector=<label selector>&projects=<name> (repeatable).
        projects = set(request.query.getall("projects", [])) | set(
            request.query.getall("project", [])
        )
        try:
            selector = parse_selector(request.query.get("selector", ""))
        except ValueError as e:
            return web.json_response({"error": f"selector: {e}"}, status=400)
        items = [
            app_json(daemon, n)
            for n in names
            if (not projects or daemon.workers[n].app.project in projects)
            and selector.matches(dict(daemon.workers[n].app.labels))
        ]
        return web.json_response({"items": items})

    @routes.get("/api/v1/applications/{name}")
    async def get_app(request: web.Request) -> web.Response:
        name = allowed(request, "get")
        return web.json_response(app_json(daemon, name))

    @routes.post("/api/v1/applications/{name}/sync")
    async def sync(request: web.Request) -> web.Response:
        name = allowed(request, "sync")
        data = await body_json(request)
        prune = data.get("prune")
        req = SyncRequest(
            revision=str(data.get("revision") or ""),
            prune=bool(prune) if prune is not None else None,
            dry_run=bool(data.get("dryRun", False)),
            initiated_by=str(data.get("username") or "api"),
        )
        forwarded = await forward(request, name)
        if forwarded is not None:
            return forwarded
        daemon.request(name, req, "api sync")
        return web.json_response({"accepted": True, "application": name}, status=202)

    @routes.post("/api/v1/applications/{name}/refresh")
    async def refresh(request: web.Request) -> web.Response:
        name = allowed(request, "get")
        daemon.hard_refresh(name)
        return web.json_response({"accepted": True, "application": name}, status=202)

    @routes.post("/api/v1/applications/{name}/rollback")
    async def rollback(request: web.Request) -> web.Response:
        name = allowed(request, "sync")
        worker = daemon.workers[name]
        if worker.app.sync_policy.automated is not None:
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {"error": "rollback cannot be initiated when auto-sync is enabled"}
                ),
                content_type="application/json",
            )
        data = await body_json(request)
        try:
            wanted = int(data.get("id", -1))
        except (TypeError, ValueError) as e:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "id must be an integer"}), content_type="application/json"
            ) from e
        history = worker.last_status.get("history") or []
        entry = next((h for h in history if h.get("id") == wanted), None)
        if entry is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"history id {wanted} not found"}),
                content_type="application/json",
            )
        req = SyncRequest(
            revision=entry["revision"],
            prune=bool(data.get("prune", False)),
            initiated_by=str(data.get("username") or "api"),
        )
        forwarded = await forward(request, name)
        if forwarded is not None:
            return forwarded
        daemon.request(name, req, f"rollback to {wanted}")
        return web.json_response({"accepted": True, "revision": entry["revision"]}, status=202)

    @routes.delete("/api/v1/applications/{name}")
    async def delete_app(request: web.Request) -> web.Response:
        """Argo CD's `app delete`: `?cascade=false` leaves the resources in place."""
        name = allowed(request, "delete")
        cascade = request.query.get("cascade", "true").lower() != "false"
        forwarded = await forward(request, name)
        if forwarded is not None:
            return forwarded
        try:
            await daemon.delete(name, cascade=cascade)
        except GitopsdError as e:
            return web.json_response({"error": f"delete failed: {e}"}, status=502)
        return web.json_response({"deleted": name, "cascade": cascade})

    @routes.delete("/api/v1/applications/{name}/operation")
    async def terminate_op(request: web.Request) -> web.Response:
        """Argo CD's `app terminate-op`: the running sync stops at its next step, Failed."""
        name = allowed(request, "sync")
        forwarded = await forward(request, name)
        if forwarded is not None:
            return forwarded
        if not daemon.terminate(name):
            return web.json_response(
                {"error": "Unable to terminate operation. No operation is in progress"},
                status=400,
            )
        return web.json_response({"terminating": name})

    @routes.post("/api/v1/applications/{name}/parameters")
    async def parameters(request: web.Request) -> web.Response:
        """`app set -p` / `app unset -p`: {"set": {key: value}, "unset": [key]}."""
        name = allowed(request, "update")
        forwarded = await forward(request, name)
        if forwarded is not None:
            return forwarded
        data = await body_json(request)
        changes, removed = data.get("set") or {}, data.get("unset") or []
        if not isinstance(changes, dict) or not isinstance(removed, list):
            return web.json_response(
                {"error": "expected {set: {key: value}, unset: [key]}"}, status=400
            )
        try:
            params = await daemon.set_overrides(
                name, {str(k): str(v) for k, v in changes.items()}, [str(k) for k in removed]
            )
        except GitopsdError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"application": name, "parameters": params})

    @routes.get("/api/v1/applications/{name}/diff")
    async def diff(request: web.Request) -> web.Response:
        name = allowed(request, "get")
        try:
            desired, cmp = await daemon.diff(daemon.workers[name].app)
        except GitopsdError as e:
            return web.json_response({"error": str(e)}, status=502)
        return web.json_response({"items": diff_items(desired, cmp)})

    @routes.post("/api/v1/applications/{name}/diff")
    async def diff_local(request: web.Request) -> web.Response:
        """Live vs manifests the caller rendered from a local directory (`app diff --local`)."""
        name = allowed(request, "get")
        data = await body_json(request)
        bodies = data.get("manifests")
        if not isinstance(bodies, list) or not all(
            isinstance(b, dict) and b.get("kind") and isinstance(b.get("metadata"), dict)
            for b in bodies
        ):
            return web.json_response(
                {"error": "manifests: expected a list of Kubernetes objects"}, status=400
            )
        local = [Manifest(ResourceKey.of(b), b, "local") for b in bodies]
        try:
            desired, cmp = await daemon.diff(daemon.workers[name].app, local)
        except GitopsdError as e:
            return web.json_response({"error": str(e)}, status=502)
        return web.json_response({"items": diff_items(desired, cmp)})

    @routes.get("/api/v1/applications/{name}/manifests")
    async def manifests(request: web.Request) -> web.Response:
        """The app's manifests as rendered from git (`?source=git`, the default) or the live
        objects of its resources (`?source=live`), secrets' data redacted."""
        name = allowed(request, "get")
        source = request.query.get("source", "git")
        if source not in ("git", "live"):
            return web.json_response({"error": "source must be git or live"}, status=400)
        try:
            desired, cmp = await daemon.diff(daemon.workers[name].app)
        except GitopsdError as e:
            return web.json_response({"error": str(e)}, status=502)
        if source == "git":
            bodies = [m.body for m in desired.manifests]
        else:
            bodies = [cmp.live[m.key] for m in desired.manifests if m.key in cmp.live]
            bodies += list(cmp.owned_extra.values())
        return web.json_response({"manifests": [redact_secret(b) for b in bodies]})

    def find_rollout(request: web.Request, name: str) -> tuple[str, str]:
        """(app, namespace) of the Rollout `name` among the apps the caller may read, narrowed
        by ?namespace= and ?app=; 404 when none, 409 when several match."""
        ns, only = request.query.get("namespace", ""), request.query.get("app", "")
        found = sorted(
            {
                (app_name, str(r.get("namespace", "")))
                for app_name, worker in daemon.workers.items()
                if (not only or app_name == only) and auth.may(request, "get", app_name)
                for r in (worker.last_status or {}).get("resources") or []
                if r.get("group") == "argoproj.io"
                and r.get("kind") == "Rollout"
                and r.get("name") == name
                and (not ns or r.get("namespace") == ns)
            }
        )
        if not found:
            if auth.principal(request) is None and not auth.open_access(mutating=False):
                raise web.HTTPUnauthorized(
                    text=json.dumps({"error": "a valid bearer token is required"}),
                    content_type="application/json",
                )
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no Rollout {name!r} in an application you may read"}),
                content_type="application/json",
            )
        if len(found) > 1:
            where = ", ".join(f"{a} ({n})" for a, n in found)
            raise web.HTTPConflict(
                text=json.dumps(
                    {"error": f"several Rollouts named {name!r}: {where}; give namespace or app"}
                ),
                content_type="application/json",
            )
        return found[0]

    def kube_failure(e: KubeError) -> web.HTTPException:
        cls = {400: web.HTTPBadRequest, 404: web.HTTPNotFound}.get(e.status, web.HTTPBadGateway)
        return cls(text=json.dumps({"error": str(e)}), content_type="application/json")

    @routes.get("/api/v1/sharding")
    async def sharding(request: web.Request) -> web.Response:
        auth.check(request, mutating=False)
        return web.json_response(daemon.sharding())

    @routes.get("/api/v1/rollouts/{name}")
    async def rollout_get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        app_name, ns = find_rollout(request, name)
        try:
            body = await daemon.rollout_get(app_name, ns, name)
        except KubeError as e:
            raise kube_failure(e) from e
        return web.json_response({"application": app_name, "rollout": body})

    @routes.post("/api/v1/rollouts/{name}/{action}")
    async def rollout_action(request: web.Request) -> web.Response:
        name, action = request.match_info["name"], request.match_info["action"]
        app_name, ns = find_rollout(request, name)
        # Argo CD's RBAC name for a resource action: action/<group>/<kind>/<action>.
        auth.check_app(request, f"action/argoproj.io/Rollout/{action}", app_name)
        forwarded = await forward(request, app_name)  # the app's owner acts (several replicas)
        if forwarded is not None:
            return forwarded
        data = await body_json(request)
        revision = data.get("toRevision")
        try:
            message = await daemon.rollout_action(
                app_name, ns, name, action, int(revision) if revision else None
            )
        except KubeError as e:
            raise kube_failure(e) from e
        return web.json_response({"application": app_name, "message": message})

    @routes.post("/api/webhook")
    async def webhook(request: web.Request) -> web.Response:
        from daemon.status.webhooks import WebhookError, parse_webhook

        if request.content_length and request.content_length > MAX_WEBHOOK_BYTES:
            daemon.metrics.webhooks.labels("unknown", "too_large").inc()
            return web.json_response({"error": "payload too large"}, status=413)
        body = await request.content.read(MAX_WEBHOOK_BYTES + 1)
        if len(body) > MAX_WEBHOOK_BYTES:
            daemon.metrics.webhooks.labels("unknown", "too_large").inc()
            return web.json_response({"error": "payload too large"}, status=413)
        try:
            event = parse_webhook(dict(request.headers), body, daemon.config.webhooks)
        except WebhookError as e:
            daemon.metrics.webhooks.labels(e.provider, e.result).inc()
            return web.json_response({"error": str(e)}, status=e.status)
        if event is None:
            return web.json_response({"ignored": True})
        if not auth.loopback_only() and not (daemon.config.webhooks.get(event.provider) or {}).get(
            "secretFile"
        ):
            # Beyond loopback an unsigned webhook would let anyone trigger refreshes.
            daemon.metrics.webhooks.labels(event.provider, "unauthorized").inc()
            return web.json_response(
                {
                    "error": f"{event.provider} webhooks need webhooks.{event.provider}.secretFile "
                    "when gitopsd listens beyond loopback"
                },
                status=401,
            )
        names = daemon.refresh_matching(
            event.urls, event.branch, reason=f"webhook {event.provider}"
        )
        daemon.metrics.webhooks.labels(event.provider, "ok").inc()
        log.info("webhook", provider=event.provider, branch=event.branch, apps=names)
        return web.json_response({"refreshed": names})

    @web.middleware
    async def same_origin(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Browsers may not drive the daemon from other sites: a write carrying a foreign
        Origin is refused (cross-site forms), and while access is open (loopback, no tokens)
        only loopback Host names are served (DNS rebinding)."""
        if auth.open_access(mutating=False) and not _loopback_host(request.host):
            return web.json_response({"error": "Host not allowed"}, status=403)
        origin = request.headers.get("Origin")
        writes = request.method not in ("GET", "HEAD", "OPTIONS")
        if writes and origin and urlsplit(origin).netloc != request.host:
            return web.json_response({"error": "cross-site request refused"}, status=403)
        return await handler(request)

    app = web.Application(client_max_size=MAX_WEBHOOK_BYTES + 1024, middlewares=[same_origin])
    ui.add_routes(routes, daemon, auth, diff_items, app_json)
    app.add_routes(routes)
    return app


async def serve_api(daemon: Control, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the API until cancelled; reports started once the port is bound."""
    s = daemon.config.settings
    token_file = s.local_token_file or str(Path(s.state_dir) / localtoken.FILE_NAME)
    try:
        token = localtoken.ensure(Path(token_file))
    except ConfigError as e:  # fail closed: without it, writes need configured apiTokens
        log.error("no local API token; writes need apiTokens", error=str(e))
        token, token_file = "", ""
    app = build_app(daemon, local_token=token, token_file=token_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = daemon.config.settings.listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
    await site.start()
    bound = runner.addresses[0] if runner.addresses else None
    daemon.api_address = f"{bound[0]}:{bound[1]}" if bound else daemon.config.settings.listen
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
