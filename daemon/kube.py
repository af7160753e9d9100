"""The only door to the Kubernetes API: discovery, get/list, server-side apply, delete, watch.

Requests go over one pooled aiohttp client session per cluster (see the README's dependency
table for why aiohttp and not httpx on this path: on 1,000 server-side applies it spent 1.1 CPU
seconds where httpx spent 17, most of them scanning its connection pool). Credentials come
from `daemon.kubeconfig`. Client errors are translated into `KubeError`s that name the resource
and verb, and never leak upward.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio

from daemon import __version__, kubeconfig
from daemon.errors import KubeError, KubeNotFound
from daemon.kubeconfig import Credentials, Headers
from daemon.livecache import LiveCache
from daemon.model import Body, ResourceKey, ResourceType
from daemon.settings import IN_CLUSTER_NAME, IN_CLUSTER_SERVER, ClusterConfig

FIELD_MANAGER = "gitopsd"
UNGATED = "gitopsd-ungated"  # a params key: this write is the fence's own (a Lease renewal)
_APPLY = "application/apply-patch+yaml"
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_NAMESPACE_IN_PATH = re.compile(r"/namespaces/([^/]+)/")
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


# The Application a request is made for (name, namespace, project), set by the worker that
# reconciles it: `argocd_app_k8s_request_total` carries it, as Argo CD's does.
@dataclass(frozen=True, slots=True)
class Epoch:
    """The replica incarnation and app claim a unit of work (one reconcile) runs under."""

    incarnation: str
    app: str


# Set around one app's reconcile (and one Rollout's, for its app), inherited by the tasks it
# starts: the write gate checks every write against the incarnation and claim it began under.
write_epoch: contextvars.ContextVar[Epoch | None] = contextvars.ContextVar(
    "gitopsd_write_epoch", default=None
)


@contextlib.contextmanager
def writes_under(epoch: Epoch | None) -> Iterator[None]:
    """Run the block's writes (and those of tasks it starts) under `epoch`."""
    token = write_epoch.set(epoch)
    try:
        yield
    finally:
        write_epoch.reset(token)


# Set by the replicas' membership task: its Lease traffic never queues behind the apps' request
# budget (`qps`), or a busy member would miss its own renewals and evict itself.
unthrottled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gitopsd_unthrottled", default=False
)
acting_for: contextvars.ContextVar[tuple[str, str, str]] = contextvars.ContextVar(
    "acting_for", default=("", "", "")
)


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One answered API request, for the listeners (metrics)."""

    verb: str  # the Kubernetes verb: get, list, watch, create, update, patch, delete
    kind: str
    namespace: str  # the resource's namespace ("" for cluster-scoped or unknown)
    status: int
    dry_run: bool
    app: tuple[str, str, str]  # acting_for at the time of the request


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event from a watch stream."""

    type: str
    object: Body


@dataclass(frozen=True, slots=True)
class Response:
    """One API answer, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def message(self) -> str:
        """The API's `message` (a Status object), or the start of the body."""
        try:
            data = self.json()
        except ValueError:
            return f"HTTP {self.status}: {self.body[:500].decode(errors='replace')}"
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
        return f"HTTP {self.status}"


Items = list[Body]


@dataclass
class _Flight:
    """One LIST in flight that concurrent callers share (`KubeClient.list_fresh`)."""

    started: int
    done: anyio.Event = field(default_factory=anyio.Event)
    items: Items = field(default_factory=list)
    error: KubeError | None = None
    complete: bool = False


class RateLimiter:
    """Token bucket: at most `qps` requests per second on average, bursts up to `burst`."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = anyio.Lock()

    async def acquire(self) -> None:
        if self.qps <= 0:
            return
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.qps)
            self.updated = now
            if self.tokens < 1:
                await anyio.sleep((1 - self.tokens) / self.qps)
                self.tokens = 1.0
                self.updated = time.monotonic()
            self.tokens -= 1


@dataclass
class Reachability:
    """Whether a cluster answers, judged from the outcomes of real requests (a timeout, a reset
    or refused connection, a 5xx or 429 counts against it; any other answer for it)."""

    failing_since: float | None = None  # monotonic time of the first failure in a row
    last_error: str = ""
    last_ok: float = 0.0

    def answered(self) -> None:
        self.failing_since = None
        self.last_error = ""
        self.last_ok = time.monotonic()

    def failed(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = error

    def down_for(self) -> float:
        """Seconds the cluster has failed every request (0 while it answers)."""
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since


class KubeClient:
    """A client for one cluster (its own connection pool, discovery cache and rate limit)."""

    def __init__(
        self,
        *,
        name: str,
        credentials: Credentials,
        timeout: float = 30.0,
        max_connections: int = 64,
        qps: float = 500.0,
        burst: int = 1000,
    ) -> None:
        self.name = name
        self.limiter = RateLimiter(qps, burst)
        self.credentials = credentials
        self.server = credentials.server.rstrip("/")
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._headers: Headers | None = None
        self._headers_at = 0.0
        self._types: dict[tuple[str, str], list[ResourceType]] = {}  # (group, kind) -> versions
        self._by_gvk: dict[tuple[str, str, str], ResourceType] = {}
        self._discovered_at = 0.0
        self._discovery_lock = anyio.Lock()
        self.requests: Counter[str] = Counter()  # verb -> count, read by benchmarks and metrics
        self.listeners: list[Callable[[RequestEvent], None]] = []
        # (group, kind) -> watch events received, for argocd_cluster_events_total.
        self.events: Counter[tuple[str, str]] = Counter()
        self.server_version = ""
        self.reachability = Reachability()
        # Called before every write that is not a dry run (and again right before each send):
        # raises to refuse it, else returns the seconds the write may take (None: no limit).
        # Several replicas sharing apps (daemon.ha) fence a member whose Lease lapsed this way.
        self.write_gate: Callable[[str, str], float | None] | None = None
        self._lists: dict[str, _Flight] = {}  # LISTs in flight by path, for list_fresh
        self._list_seq = 0
        # What the drift watches hold, for compares; every write here is recorded into it.
        self.cache = LiveCache()

    # --- construction -----------------------------------------------------------------------

    @classmethod
    async def from_kubeconfig(
        cls, *, name: str, path: str | None, context: str | None = None
    ) -> KubeClient:
        """A client from a kubeconfig file ($KUBECONFIG / ~/.kube/config when path is None)."""
        creds = await kubeconfig.from_kubeconfig(f"cluster {name}", path, context)
        return cls(name=name, credentials=creds)

    @classmethod
    async def in_cluster(cls, *, name: str) -> KubeClient:
        """A client using the pod's service account."""
        return cls(name=name, credentials=kubeconfig.in_cluster(f"cluster {name}"))

    @classmethod
    def from_token(
        cls, *, name: str, server: str, token_file: str, ca_file: str, insecure: bool
    ) -> KubeClient:
        """A client with a bearer token file (re-read when it rotates and after a 401)."""
        creds = kubeconfig.from_token_file(
            server=server, token_file=token_file, ca_file=ca_file, insecure=insecure
        )
        return cls(name=name, credentials=creds)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- requests ---------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The cluster's pooled session, created on first use (it needs the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.credentials.verify,
                limit=self.max_connections,
                keepalive_timeout=30.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": f"gitopsd/{__version__}", "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10.0),
                raise_for_status=False,
            )
        return self._session

    async def headers(self, *, refresh: bool = False) -> Headers:
        """The Authorization header: cached, re-read every minute (rotated token files) and
        refreshed after a 401 (exec plugins, expired tokens)."""
        now = time.monotonic()
        if refresh and self.credentials.refresh is not None:
            self._headers, self._headers_at = await self.credentials.refresh(), now
        elif self._headers is None or now - self._headers_at > 60.0:
            self._headers, self._headers_at = await self.credentials.auth(), now
        return self._headers

    def _gate(self, subject: str, verb: str) -> float:
        """The time a write may take: the client timeout, or less when the write gate (the
        HA fence) closes sooner; the gate raises when it is shut already."""
        if self.write_gate is None:
            return self.timeout
        left = self.write_gate(subject, verb)
        return self.timeout if left is None else max(0.05, min(self.timeout, left))

    def _request_kwargs(self) -> dict[str, Any]:
        name = self.credentials.tls_server_name
        return {"server_hostname": name} if name else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        subject: str,
        verb: str,
        kind: str = "",
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        ok404: bool = False,
    ) -> Response | None:
        url = self.server + path
        ungated = bool((params or {}).get(UNGATED))
        gated = method != "GET" and not (params or {}).get("dryRun") and not ungated
        if gated:
            self._gate(subject, verb)  # fail fast, before waiting for the rate limiter
        if params and UNGATED in params:
            params = {k: v for k, v in params.items() if k != UNGATED}
        refresh = False
        for attempt in range(3):
            if not ungated and not unthrottled.get():
                await self.limiter.acquire()
            self.requests[verb] += 1
            headers = dict(await self.headers(refresh=refresh))
            if content_type:
                headers["Content-Type"] = content_type
            # Checked again at the last moment, on every attempt: a replica stalled while it
            # waited (SIGSTOP, a long GC, the limiter) must not write after its fence closed,
            # and the request may not outlive the fence.
            timeout = self._gate(subject, verb) if gated else self.timeout
            try:
                async with self.session().request(
                    method,
                    url,
                    params=params,
                    data=content,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout)),
                    **self._request_kwargs(),
                ) as resp:
                    r = Response(resp.status, dict(resp.headers), await resp.read())
            except TimeoutError as e:
                self.reachability.failed(f"timed out after {timeout:g}s")
                raise KubeError(subject, verb, f"timed out after {timeout:g}s") from e
            except (aiohttp.ClientError, OSError) as e:
                error = f"{type(e).__name__}: {e}".rstrip(": ")
                self.reachability.failed(error)
                if attempt < 2:
                    await anyio.sleep(0.2 * (attempt + 1))
                    continue
                raise KubeError(subject, verb, f"cluster {self.name} unreachable: {error}") from e
            if r.status >= 500 or r.status == 429:
                self.reachability.failed(f"HTTP {r.status} from the API server")
            else:
                self.reachability.answered()
            if self.listeners:
                self._tell(method, path, verb, kind, r.status, bool((params or {}).get("dryRun")))
            if r.status == 401 and self.credentials.refresh is not None and attempt == 0:
                refresh = True
                continue
            refresh = False
            retriable = r.status == 429 or (r.status >= 500 and method == "GET")
            if retriable and attempt < 2:
                await anyio.sleep(float(r.headers.get("Retry-After", "0.5") or 0.5))
                continue
            if r.status == 404 and ok404:
                return None
            if r.status >= 400:
                exc = KubeNotFound if r.status == 404 else KubeError
                raise exc(subject, verb, r.message(), status=r.status)
            return r
        raise KubeError(subject, verb, "retries exhausted")  # pragma: no cover

    def _tell(
        self, method: str, path: str, verb: str, kind: str, status: int, dry_run: bool
    ) -> None:
        k8s_verb = _METHOD_VERBS.get(method) or ("list" if verb == "list" else verb)
        if k8s_verb not in ("list", "watch") and method == "GET":
            k8s_verb = "get"
        m = _NAMESPACE_IN_PATH.search(path)
        event = RequestEvent(
            k8s_verb, kind, m.group(1) if m else "", status, dry_run, acting_for.get()
        )
        for fn in self.listeners:
            fn(event)

    async def probe(self, *, timeout: float = 5.0) -> bool:
        """Ask the API server for its version with a short timeout; feeds `reachability` so a
        blackholed cluster is noticed even while no other request is in flight."""
        try:
            async with self.session().get(
                self.server + "/version",
                headers=await self.headers(),
                timeout=aiohttp.ClientTimeout(total=timeout),
                **self._request_kwargs(),
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError:
            self.reachability.failed(f"timed out after {timeout:g}s")
            return False
        except (aiohttp.ClientError, OSError) as e:
            self.reachability.failed(f"{type(e).__name__}: {e}".rstrip(": "))
            return False
        if status >= 500 or status == 429:
            self.reachability.failed(f"HTTP {status} from the API server")
            return False
        self.reachability.answered()
        return True

    # --- discovery --------------------------------------------------------------------------

    async def discover(self, *, force: bool = False) -> None:
        """Load (or reload) the API resource list; cheap when recently done."""
        async with self._discovery_lock:
            if self._types and not force:
                return
            if force and time.monotonic() - self._discovered_at < 1.0:
                return
            types: dict[tuple[str, str], list[ResourceType]] = {}
            by_gvk: dict[tuple[str, str, str], ResourceType] = {}
            r = await self._request("GET", "/version", subject="/version", verb="discover")
            assert r is not None
            self.server_version = str(r.json().get("gitVersion", ""))
            group_versions: list[tuple[str, str, bool]] = []  # group, version, preferred
            core = await self._request("GET", "/api", subject="/api", verb="discover")
            assert core is not None
            for v in core.json().get("versions", []):
                group_versions.append(("", v, True))
            apis = await self._request("GET", "/apis", subject="/apis", verb="discover")
            assert apis is not None
            for g in apis.json().get("groups", []):
                preferred = g.get("preferredVersion", {}).get("version")
                for v in g.get("versions", []):
                    group_versions.append((g["name"], v["version"], v["version"] == preferred))

            async def load(group: str, version: str, preferred: bool) -> None:
                try:
                    found = await self._group_version(group, version)
                except KubeError:
                    return  # an unavailable aggregated API must not break discovery
                for rt in found:
                    by_gvk[(group, version, rt.kind)] = rt
                    lst = types.setdefault((group, rt.kind), [])
                    lst.insert(0, rt) if preferred else lst.append(rt)

            async with anyio.create_task_group() as tg:
                for g, v, p in group_versions:
                    tg.start_soon(load, g, v, p)
            self._types, self._by_gvk = types, by_gvk
            self._discovered_at = time.monotonic()

    @property
    def api_versions(self) -> tuple[str, ...]:
        """Every served group/version (`v1`, `apps/v1`, ...), sorted, from the last discovery."""
        return tuple(sorted({f"{g}/{v}" if g else v for g, v, _ in self._by_gvk}))

    async def _group_version(self, group: str, version: str) -> list[ResourceType]:
        """The resource types one group version serves (subresources left out)."""
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        resp = await self._request("GET", path, subject=path, verb="discover")
        assert resp is not None
        return [
            ResourceType(
                group=group,
                version=version,
                kind=res["kind"],
                plural=res["name"],
                namespaced=bool(res.get("namespaced")),
                verbs=frozenset(res.get("verbs", [])),
            )
            for res in resp.json().get("resources", [])
            if "/" not in res["name"]
        ]

    async def discover_group(self, group: str, version: str) -> list[ResourceType]:
        """(Re)load one group version into the discovery cache now, e.g. right after its CRD
        became Established; a full rediscovery would be throttled and cost every group."""
        await self.discover()
        try:
            found = await self._group_version(group, version)
        except KubeNotFound:
            return []
        async with self._discovery_lock:
            types = dict(self._types)
            by_gvk = dict(self._by_gvk)
            for rt in found:
                by_gvk[(group, version, rt.kind)] = rt
                versions = [t for t in types.get((group, rt.kind), []) if t.version != version]
                types[(group, rt.kind)] = [*versions, rt]
            self._types, self._by_gvk = types, by_gvk
        return found

    async def resource_for(self, api_version: str, kind: str, *, subject: str) -> ResourceType:
        """The resource type of (apiVersion, kind); rediscovers once (new CRDs) before failing."""
        group, _, version = api_version.rpartition("/")
        await self.discover()
        rt = self._by_gvk.get((group, version, kind))
        if rt is None and group:
            await self.discover_group(group, version)  # a CRD installed since discovery
            rt = self._by_gvk.get((group, version, kind))
        if rt is None:
            await self.discover(force=True)
            rt = self._by_gvk.get((group, version, kind))
        if rt is None:
            known = [t.api_version for t in self._types.get((group, kind), [])]
            hint = f" (served versions: {', '.join(known)})" if known else ""
            raise KubeNotFound(
                subject,
                "resolve kind",
                f"the server has no resource type {kind} in {api_version}{hint}; "
                "is its CustomResourceDefinition installed?",
                status=404,
            )
        return rt

    def preferred(self, group: str, kind: str) -> ResourceType | None:
        """The preferred version's type of (group, kind), if discovered."""
        lst = self._types.get((group, kind))
        return lst[0] if lst else None

    def known(self, api_version: str, kind: str) -> ResourceType | None:
        """The type of (apiVersion, kind) if discovered, without any request."""
        group, _, version = api_version.rpartition("/")
        return self._by_gvk.get((group, version, kind))

    # --- verbs ------------------------------------------------------------------------------

    async def get(self, rt: ResourceType, namespace: str, name: str) -> Body | None:
        """The live object, or None when it does not exist."""
        subject = str(ResourceKey(rt.group, rt.kind, namespace, name))
        r = await self._request(
            "GET", rt.path(namespace, name), subject=subject, verb="get", kind=rt.kind, ok404=True
        )
        return None if r is None else dict(r.json())

    async def list(
        self, rt: ResourceType, namespace: str = "", *, label_selector: str = ""
    ) -> tuple[list[Body], str]:
        """All objects of a type (in a namespace or cluster-wide) and the list's resourceVersion."""
        params = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        items: list[Body] = []
        rv = ""
        while True:
            r = await self._request(
                "GET",
                rt.path(namespace),
                subject=f"{rt.kind} list in {namespace or 'all namespaces'}",
                verb="list",
                kind=rt.kind,
                params=params,
                ok404=True,
            )
            if r is None:
                return [], ""
            data = r.json()
            for item in data.get("items", []):
                item.setdefault("apiVersion", rt.api_version)
                item.setdefault("kind", rt.kind)
                items.append(item)
            rv = data.get("metadata", {}).get("resourceVersion", "")
            cont = data.get("metadata", {}).get("continue")
            if not cont:
                return items, rv
            params["continue"] = cont

    async def list_fresh(self, rt: ResourceType, namespace: str = "") -> Items:
        """Like `list`, shared between concurrent callers without losing freshness: a caller
        joins a LIST only if it *started after* the caller asked, so it sees every write that
        completed before the call, as a LIST of its own would. Callers arriving while a LIST
        runs wait for it and share the next one. Many apps compared at once in one namespace
        then cost the API server one LIST per round instead of one each. The items are shared:
        copy before changing them."""
        key = rt.path(namespace)
        self._list_seq += 1
        asked = self._list_seq
        while True:
            flight = self._lists.get(key)
            if flight is not None and flight.started > asked:
                await flight.done.wait()
                if flight.error is not None:
                    raise flight.error
                if flight.complete:
                    return flight.items
                continue  # its caller was cancelled mid-way: list again
            if flight is not None:
                await flight.done.wait()
                continue
            self._list_seq += 1
            flight = _Flight(self._list_seq)
            self._lists[key] = flight
            try:
                flight.items, _ = await self.list(rt, namespace)
                flight.complete = True
            except KubeError as e:
                flight.error = e
                raise
            finally:
                del self._lists[key]
                flight.done.set()
            return flight.items

    async def apply(
        self,
        rt: ResourceType,
        body: Body,
        *,
        dry_run: bool = False,
        force: bool = True,
        manager: str = FIELD_MANAGER,
        validate: bool = True,
    ) -> Body:
        """Server-side apply `body`; returns the object as the server has (or would have) it."""
        meta = body.get("metadata", {})
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        params = {"fieldManager": manager, "force": "true" if force else "false"}
        params["fieldValidation"] = "Strict" if validate else "Ignore"
        if dry_run:
            params["dryRun"] = "All"
        r = await self._request(
            "PATCH",
            rt.path(ns, name),
            subject=str(ResourceKey(rt.group, rt.kind, ns, name)),
            verb="apply (dry run)" if dry_run else "apply",
            kind=rt.kind,
            params=params,
            content=json.dumps(body).encode(),
            content_type=_APPLY,
        )
        assert r is not None
        out = dict(r.json())
        if not dry_run:
            self.cache.wrote(rt.group, rt.kind, ns, name, out)
        return out

    async def _send(
        self,
        method: str,
        rt: ResourceType,
        namespace: str,
        name: str,
        payload: Body | Sequence[Body],
        *,
        verb: str,
        content_type: str,
        params: dict[str, str] | None = None,
        subresource: str = "",
    ) -> Body:
        """One write of an object body (or a JSON patch); returns the server's object."""
        r = await self._request(
            method,
            rt.path(namespace, name) + (f"/{subresource}" if subresource else ""),
            subject=str(ResourceKey(rt.group, rt.kind, namespace, name or "?")),
            verb=verb,
            kind=rt.kind,
            params=params,
            content=json.dumps(payload).encode(),
            content_type=content_type,
        )
        assert r is not None
        out = dict(r.json())
        if not (params or {}).get("dryRun"):
            written = str((out.get("metadata") or {}).get("name") or name)
            self.cache.wrote(rt.group, rt.kind, namespace, written, out)
        return out

    @staticmethod
    def _write_params(dry_run: bool) -> dict[str, str]:
        params = {"fieldManager": FIELD_MANAGER}
        if dry_run:
            params["dryRun"] = "All"
        return params

    async def create(
        self,
        rt: ResourceType,
        body: Body,
        *,
        dry_run: bool = False,
        validate: bool = True,
        ungated: bool = False,
    ) -> Body:
        """Create `body` (Replace=true on a new object; Validate=false drops unknown fields).
        `ungated`: not subject to `write_gate` (the fence's own Leases)."""
        ns = str(body.get("metadata", {}).get("namespace") or "")
        params = self._write_params(dry_run)
        if ungated:
            params[UNGATED] = "1"
        if not validate:
            params["fieldValidation"] = "Ignore"
        # POST goes to the collection (no name in the path).
        return await self._send(
            "POST",
            rt,
            ns,
            "",
            body,
            verb="create",
            content_type="application/json",
            params=params,
        )

    async def replace(
        self, rt: ResourceType, body: Body, *, dry_run: bool = False, ungated: bool = False
    ) -> Body:
        """PUT `body` over the live object (Replace=true); with `metadata.resourceVersion` set
        it is a compare-and-swap (409 when the object changed since)."""
        meta = body.get("metadata", {})
        params = self._write_params(dry_run)
        if ungated:
            params[UNGATED] = "1"
        return await self._send(
            "PUT",
            rt,
            str(meta.get("namespace") or ""),
            str(meta["name"]),
            body,
            verb="replace",
            content_type="application/json",
            params=params,
        )

    async def write_unvalidated(
        self, rt: ResourceType, body: Body, *, exists: bool, dry_run: bool = False
    ) -> Body:
        """`Validate=false`: create, or JSON-merge-patch, with fieldValidation=Ignore, so fields
        the schema does not know are dropped by the server instead of refusing the object
        (server-side apply cannot: it needs every field in the schema)."""
        if not exists:
            return await self.create(rt, body, dry_run=dry_run, validate=False)
        params = {**self._write_params(dry_run), "fieldValidation": "Ignore"}
        meta = body.get("metadata", {})
        return await self._send(
            "PATCH",
            rt,
            str(meta.get("namespace") or ""),
            str(meta["name"]),
            body,
            verb="patch (dry run)" if dry_run else "patch",
            content_type=_MERGE,
            params=params,
        )

    async def patch_merge(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch: Body,
        *,
        manager: str = FIELD_MANAGER,
        ungated: bool = False,
    ) -> Body:
        """JSON merge patch (hook finalizers, ReplicaSet scale, Service selectors). Unlike a
        PUT it never creates the object, and a `metadata.resourceVersion` in it is a
        precondition (409 when the object changed). `ungated`: the fence's own Leases."""
        params = {"fieldManager": manager}
        if ungated:
            params[UNGATED] = "1"
        return await self._send(
            "PATCH",
            rt,
            namespace,
            name,
            patch,
            verb="patch",
            content_type=_MERGE,
            params=params,
        )

    async def patch_json(
        self, rt: ResourceType, namespace: str, name: str, ops: Sequence[Body], *, manager: str
    ) -> Body:
        """RFC 6902 JSON patch (a whole field replaced, as `undo` replaces spec.template)."""
        return await self._send(
            "PATCH",
            rt,
            namespace,
            name,
            ops,
            verb="patch",
            content_type=_JSON_PATCH,
            params={"fieldManager": manager},
        )

    async def patch_status(
        self, rt: ResourceType, namespace: str, name: str, patch: Body, *, manager: str
    ) -> Body:
        """JSON merge patch of the status subresource."""
        return await self._send(
            "PATCH",
            rt,
            namespace,
            name,
            patch,
            verb="patch status",
            content_type=_MERGE,
            params={"fieldManager": manager},
            subresource="status",
        )

    async def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: str = "Foreground",
        uid: str = "",
        resource_version: str = "",
        ungated: bool = False,
    ) -> bool:
        """Delete an object; False when it was already gone. `uid` / `resource_version` make
        it conditional (409 when the object is another one, or changed)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        preconditions = {"uid": uid} if uid else {}
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        if preconditions:
            body["preconditions"] = preconditions
        r = await self._request(
            "DELETE",
            rt.path(namespace, name),
            subject=str(ResourceKey(rt.group, rt.kind, namespace, name)),
            verb="delete",
            kind=rt.kind,
            params={UNGATED: "1"} if ungated else None,
            content=json.dumps(body).encode(),
            content_type="application/json",
            ok404=True,
        )
        try:
            answer = r.json() if r is not None else None
        except ValueError:
            answer = {"kind": "Status"}
        self.cache.wrote(
            rt.group,
            rt.kind,
            namespace,
            name,
            answer if isinstance(answer, dict) else None,
            delete=True,
        )
        return r is not None

    async def watch(
        self,
        rt: ResourceType,
        namespace: str = "",
        *,
        resource_version: str = "",
        timeout_seconds: int = 290,
        label_selector: str = "",
    ) -> AsyncIterator[WatchEvent]:
        """Stream events of a type until the server closes the watch."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        self.requests["watch"] += 1
        subject = f"{rt.kind} watch"
        try:
            async with self.session().get(
                self.server + rt.path(namespace),
                params=params,
                headers=await self.headers(),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10.0, sock_read=timeout_seconds + 30
                ),
                **self._request_kwargs(),
            ) as resp:
                if self.listeners:
                    self._tell("GET", rt.path(namespace), "watch", rt.kind, resp.status, False)
                if resp.status >= 400:
                    r = Response(resp.status, dict(resp.headers), await resp.read())
                    raise KubeError(subject, "watch", r.message(), status=r.status)
                counted = (rt.group, rt.kind)
                # Split lines ourselves: an event is one line of any length (the stream
                # reader's readline would refuse a large object).
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            ev = json.loads(line)
                            if ev.get("type") != "BOOKMARK":
                                self.events[counted] += 1
                            yield WatchEvent(str(ev.get("type")), dict(ev.get("object") or {}))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise KubeError(subject, "watch", f"{type(e).__name__}: {e}".rstrip(": ")) from e

    def __repr__(self) -> str:
        return f"KubeClient({self.name!r}, {self.server!r})"


class Clusters:
    """One client per configured cluster, created lazily; resolves Application destinations."""

    def __init__(self, configs: Sequence[ClusterConfig]) -> None:
        self.configs = list(configs)
        self._clients: dict[str, KubeClient] = {}
        self._lock = anyio.Lock()
        self._write_gate: Callable[[str, str], float | None] | None = None

    def update(self, configs: Sequence[ClusterConfig]) -> list[KubeClient]:
        """Take a reloaded config's clusters: added ones resolve at once; a cluster whose entry
        changed (kubeconfig moved, token file, server) or went away loses its client, so the
        next request makes one from the new entry; qps/burst alone change in place. Returns
        the dropped clients, for the caller to close once their requests are done."""
        new = {c.name: c for c in configs}
        old = {c.name: c for c in self.configs}
        dropped = []
        for name, client in list(self._clients.items()):
            before, after = old.get(name), new.get(name)
            if after is not None and before is not None:
                rate = (before.qps, before.burst) != (after.qps, after.burst)
                if rate and dataclasses.replace(before, qps=after.qps, burst=after.burst) == after:
                    client.limiter = RateLimiter(after.qps, after.burst)
                    continue
                if before == after:
                    continue
            dropped.append(self._clients.pop(name))
        self.configs = list(configs)
        return dropped

    def fence(self, gate: Callable[[str, str], float | None] | None) -> None:
        """Put `gate` before every write of every client, present and future."""
        self._write_gate = gate
        for c in self._clients.values():
            c.write_gate = gate

    def lookup(self, *, server: str, name: str) -> ClusterConfig:
        """The cluster an Application's destination names (server or name)."""
        for c in self.configs:
            if (name and c.name == name) or (server and c.server == server.rstrip("/")):
                return c
        if not self.configs and (
            server.rstrip("/") == IN_CLUSTER_SERVER or name == IN_CLUSTER_NAME
        ):
            return ClusterConfig(name=IN_CLUSTER_NAME, server=IN_CLUSTER_SERVER)
        wanted = f"server {server!r}" if server else f"name {name!r}"
        raise KubeError(
            f"destination {wanted}",
            "resolve cluster",
            "no cluster with that " + ("server" if server else "name") + " is configured",
        )

    async def client(self, cluster: ClusterConfig) -> KubeClient:
        """The (shared) client of `cluster`."""
        async with self._lock:
            existing = self._clients.get(cluster.name)
            if existing is not None:
                return existing
            if cluster.kubeconfig:
                client = await KubeClient.from_kubeconfig(
                    name=cluster.name, path=cluster.kubeconfig, context=cluster.context
                )
            elif cluster.bearer_token_file:
                client = KubeClient.from_token(
                    name=cluster.name,
                    server=cluster.server,
                    token_file=cluster.bearer_token_file,
                    ca_file=cluster.ca_file,
                    insecure=cluster.insecure,
                )
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                client = await KubeClient.in_cluster(name=cluster.name)
            else:
                client = await KubeClient.from_kubeconfig(name=cluster.name, path=None)
            client.limiter = RateLimiter(cluster.qps, cluster.burst)
            client.write_gate = self._write_gate
            self._clients[cluster.name] = client
            return client

    def clients(self) -> dict[str, KubeClient]:
        """The clients created so far, by cluster name."""
        return dict(self._clients)

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()
