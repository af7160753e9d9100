"""`gitopsd app ...`: a command-line client of the daemon's HTTP API."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from daemon import yamlio
from daemon.errors import ConfigError, GitopsdError
from daemon.status import localtoken

# Exit codes as the argocd CLI's (util/errors): 1 is kept for a command's own meaning (a diff
# found, a sync that failed), 2 for a diff that could not be made.
EXIT_CONNECTION = 11
EXIT_API = 12
EXIT_NOT_FOUND = 13
EXIT_GENERIC = 20
DEFAULT_LOCAL_TOKEN = "/var/lib/gitopsd/local-api-token"  # the default stateDir's


class ApiError(GitopsdError):
    """The API answered with an error (or could not be reached); `exit_code` as argocd's."""

    def __init__(self, message: str, *, exit_code: int = EXIT_API) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class ApiClient:
    """Talks to one daemon."""

    server: str
    token: str = ""
    timeout: float = 15.0

    @classmethod
    def from_args(cls, server: str | None, token_file: str | None) -> ApiClient:
        url = server or os.environ.get("GITOPSD_SERVER") or "http://127.0.0.1:8080"
        token = os.environ.get("GITOPSD_TOKEN", "")
        if token_file:
            token = Path(token_file).read_text().strip()
        return cls(url.rstrip("/"), token)

    def _local_token(self) -> str:
        """The daemon's local token when the daemon is on this host (loopback) and this user
        may read it: from $GITOPSD_LOCAL_TOKEN_FILE or the default path, never from a path the
        server names (a program squatting the port could name any file). The file must be a
        regular file only its owner can read, as the daemon writes it; "" otherwise."""
        host = urlsplit(self.server).hostname or ""
        if host not in ("127.0.0.1", "::1", "localhost"):
            return ""
        path = os.environ.get("GITOPSD_LOCAL_TOKEN_FILE") or DEFAULT_LOCAL_TOKEN
        try:
            return localtoken.read(Path(path), mine=False)
        except ConfigError as e:
            raise ApiError(
                f"writes need a token: {e} (run as the daemon's user, set "
                "GITOPSD_LOCAL_TOKEN_FILE, or pass --token-file)",
                exit_code=EXIT_API,
            ) from e

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.request(
                method, self.server + path, json=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as e:
            raise ApiError(
                f"cannot reach gitopsd at {self.server}: {e}", exit_code=EXIT_CONNECTION
            ) from e
        try:
            data = r.json()
        except ValueError:
            data = {"error": r.text}
        if r.status_code == 401 and not self.token and isinstance(data, dict):
            local = self._local_token()
            if local:
                return dataclasses.replace(self, token=local).call(method, path, body)
        if r.status_code >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            raise ApiError(
                f"{method} {path}: HTTP {r.status_code}: {msg or r.text[:300]}",
                exit_code=EXIT_NOT_FOUND if r.status_code == 404 else EXIT_API,
            )
        return data


def _out(obj: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2))
    else:
        sys.stdout.write(yamlio.dump(obj))


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def _row(app: dict[str, Any]) -> list[str]:
    st = app.get("status") or {}
    src = (app.get("spec") or {}).get("source") or {}
    dest = (app.get("spec") or {}).get("destination") or {}
    return [
        app["metadata"]["name"],
        f"{dest.get('server') or dest.get('name', '')}/{dest.get('namespace', '')}",
        (st.get("sync") or {}).get("status", "Unknown"),
        (st.get("health") or {}).get("status", "Unknown"),
        str((st.get("sync") or {}).get("revision", ""))[:12],
        src.get("repoURL", ""),
        src.get("path", ""),
    ]


def cmd_app(args: Any) -> int:
    """Dispatch `gitopsd app <verb>`."""
    api = ApiClient.from_args(args.server, args.token_file)
    fmt = args.output
    verb = args.verb
    if verb == "list":
        query = urlencode(
            [("selector", args.selector)] * bool(args.selector)
            + [("projects", p) for p in args.project]
        )
        items = api.call("GET", "/api/v1/applications" + (f"?{query}" if query else ""))["items"]
        if fmt != "table":
            _out(items, fmt)
            return 0
        _table(
            [_row(a) for a in items],
            ["NAME", "DESTINATION", "SYNC", "HEALTH", "REVISION", "REPO", "PATH"],
        )
        return 0
    name = args.name
    handler = _VERBS.get(verb)
    if handler is not None:
        return handler(api, args, fmt)
    if verb == "get":
        app = (
            _refreshed(api, name)
            if args.refresh
            else api.call("GET", f"/api/v1/applications/{name}")
        )
        if fmt != "table":
            _out(app, fmt)
            return 0
        st = app.get("status") or {}
        _table([_row(app)], ["NAME", "DESTINATION", "SYNC", "HEALTH", "REVISION", "REPO", "PATH"])
        for c in st.get("conditions") or []:
            print(f"\nCONDITION {c.get('type')}: {c.get('message')}")
        op = st.get("operationState") or {}
        if op:
            print(f"\nLAST OPERATION: {op.get('phase')}: {op.get('message', '')}")
        print()
        rows = []
        for r in st.get("resources") or []:
            health = r.get("health") or {}
            rows.append(
                [
                    str(r.get("syncWave", 0)),
                    r["kind"],
                    r.get("namespace", ""),
                    r["name"],
                    r.get("status", ""),
                    health.get("status", ""),
                    health.get("message", "")[:60],
                ]
            )
        _table(rows, ["WAVE", "KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH", "MESSAGE"])
        return 0
    if verb == "diff":
        try:
            if args.local:
                local = {"manifests": _render_local(api, name, args.local)}
                items = api.call("POST", f"/api/v1/applications/{name}/diff", local)["items"]
            else:
                items = api.call("GET", f"/api/v1/applications/{name}/diff")["items"]
        except GitopsdError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2  # argocd app diff: 2 when no diff could be made
        if fmt != "table":
            _out(items, fmt)
            return 1 if items else 0
        for it in items:
            print(f"===== {it['resource']} ({it['status']}) {it.get('error', '')}")
            print(it["diff"])
        return 1 if items else 0
    if verb == "history":
        app = api.call("GET", f"/api/v1/applications/{name}")
        history = (app.get("status") or {}).get("history") or []
        if fmt != "table":
            _out(history, fmt)
            return 0
        _table(
            [
                [
                    str(h.get("id")),
                    h.get("deployedAt", ""),
                    str(h.get("revision", ""))[:12],
                    (h.get("initiatedBy") or {}).get("username", ""),
                ]
                for h in history
            ],
            ["ID", "DEPLOYED", "REVISION", "INITIATED BY"],
        )
        return 0
    if verb == "rollback":
        result = api.call(
            "POST",
            f"/api/v1/applications/{name}/rollback",
            {"id": int(args.id), "prune": bool(args.prune)},
        )
        print(f"rollback to history {args.id} ({str(result['revision'])[:12]}) requested")
        return _wait(api, name, fmt) if args.wait else 0
    if verb == "refresh":
        api.call("POST", f"/api/v1/applications/{name}/refresh")
        print(f"refresh of {name} requested")
        return 0
    if verb == "sync":
        before = (api.call("GET", f"/api/v1/applications/{name}").get("status") or {}).get(
            "operationState"
        ) or {}
        body: dict[str, Any] = {"dryRun": bool(args.dry_run)}
        if args.revision:
            body["revision"] = args.revision
        if args.prune:
            body["prune"] = True
        api.call("POST", f"/api/v1/applications/{name}/sync", body)
        print(f"sync of {name} requested")
        if not args.wait:
            return 0
        return _wait(api, name, fmt, previous_start=before.get("startedAt"))
    raise GitopsdError(f"unknown verb {verb}")


def _wait(
    api: ApiClient, name: str, fmt: str, previous_start: str | None = None, timeout: float = 900.0
) -> int:
    """Follow an operation wave by wave until it finishes; exit 0 only if it Succeeded."""
    deadline = time.monotonic() + timeout
    printed: set[tuple[str, str, str]] = set()
    last_msg = ""
    while time.monotonic() < deadline:
        st = api.call("GET", f"/api/v1/applications/{name}").get("status") or {}
        op = st.get("operationState") or {}
        if op.get("startedAt") and op.get("startedAt") != previous_start:
            for r in (op.get("syncResult") or {}).get("resources") or []:
                key = (
                    f"{r.get('syncPhase')}/{r.get('syncWave')}",
                    f"{r['kind']}/{r.get('namespace', '')}/{r['name']}",
                    r.get("status", ""),
                )
                if key not in printed:
                    printed.add(key)
                    print(
                        f"  {r.get('syncPhase', 'Sync'):<8} wave {r.get('syncWave', 0):>3}  "
                        f"{r.get('status', ''):<12} {key[1]}  {r.get('message', '')}"
                    )
            if op.get("message") and op["message"] != last_msg and op.get("phase") == "Running":
                last_msg = op["message"]
                print(f"  ... {last_msg}")
            if op.get("finishedAt") and op.get("phase") != "Running":
                print(f"{op.get('phase')}: {op.get('message', '')}")
                health = (st.get("health") or {}).get("status", "")
                sync = (st.get("sync") or {}).get("status", "")
                print(f"app {name}: sync {sync}, health {health}")
                if fmt != "table":
                    _out(op, fmt)
                return 0 if op.get("phase") == "Succeeded" else 1
        time.sleep(0.5)
    print(f"timed out waiting for {name}'s sync", file=sys.stderr)
    return 1


def cmd_rollout(args: Any) -> int:
    """Dispatch `gitopsd rollout <verb> NAME` (Argo Rollouts' kubectl plugin verbs)."""
    api = ApiClient.from_args(args.server, args.token_file)
    query = {k: v for k, v in (("namespace", args.namespace), ("app", args.app)) if v}
    suffix = f"?{urlencode(query)}" if query else ""
    name = args.name
    if args.verb == "get":
        data = api.call("GET", f"/api/v1/rollouts/{name}{suffix}")
        if args.output != "table":
            _out(data, args.output)
            return 0
        ro = data["rollout"]
        st = ro.get("status") or {}
        strategy = ro.get("spec", {}).get("strategy") or {}
        steps = (strategy.get("canary") or {}).get("steps")
        print(f"Name:         {ro['metadata']['name']}")
        print(f"Namespace:    {ro['metadata']['namespace']}")
        print(f"Application:  {data['application']}")
        print(f"Strategy:     {'Canary' if 'canary' in strategy else 'BlueGreen'}")
        if steps is not None:
            print(f"  Step:       {st.get('currentStepIndex', 0)}/{len(steps)}")
            weights = (st.get("canary") or {}).get("weights") or {}
            print(f"  Weight:     {(weights.get('canary') or {}).get('weight', 0)}")
        print(f"Status:       {st.get('phase', 'Unknown')} {st.get('message', '')}".rstrip())
        for c in st.get("pauseConditions") or []:
            print(f"  Paused:     {c.get('reason')} since {c.get('startTime')}")
        print(f"Images:       {', '.join(_images(ro))}")
        print(
            f"Replicas:     desired {ro.get('spec', {}).get('replicas', 1)}, "
            f"current {st.get('replicas', 0)}, updated {st.get('updatedReplicas', 0)}, "
            f"available {st.get('availableReplicas', 0)}"
        )
        print(f"Stable:       {st.get('stableRS', '')}   Current: {st.get('currentPodHash', '')}")
        return 0
    action = "promote-full" if args.verb == "promote" and args.full else args.verb
    body = {"toRevision": args.to_revision} if getattr(args, "to_revision", None) else {}
    data = api.call("POST", f"/api/v1/rollouts/{name}/{action}{suffix}", body)
    print(data.get("message") or f"{action}: done")
    return 0


def _images(ro: dict[str, Any]) -> list[str]:
    pod = ((ro.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("image")) for c in pod.get("containers") or []]


def _refreshed(api: ApiClient, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """`app get --refresh`: ask for a compare, then the app once it has reconciled since."""
    before = (api.call("GET", f"/api/v1/applications/{name}").get("status") or {}).get(
        "reconciledAt"
    )
    api.call("POST", f"/api/v1/applications/{name}/refresh")
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.5)
        app: dict[str, Any] = api.call("GET", f"/api/v1/applications/{name}")
        if (app.get("status") or {}).get("reconciledAt") != before:
            return app
        if time.monotonic() > deadline:
            raise ApiError(
                f"timed out ({timeout:g}s) waiting for {name} to refresh", exit_code=EXIT_GENERIC
            )


def _resources(api: ApiClient, args: Any, fmt: str) -> int:
    """`app resources NAME`: group, kind, namespace, name, status, health of each resource."""
    st = api.call("GET", f"/api/v1/applications/{args.name}").get("status") or {}
    resources = st.get("resources") or []
    if fmt != "table":
        _out(resources, fmt)
        return 0
    _table(
        [
            [
                r.get("group", ""),
                r.get("kind", ""),
                r.get("namespace", ""),
                r.get("name", ""),
                r.get("status", ""),
                (r.get("health") or {}).get("status", ""),
            ]
            for r in resources
        ],
        ["GROUP", "KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH"],
    )
    return 0


def _manifests(api: ApiClient, args: Any, fmt: str) -> int:
    """`app manifests NAME [--source git|live]`: a YAML stream (or JSON list)."""
    found = api.call("GET", f"/api/v1/applications/{args.name}/manifests?source={args.source}")
    docs = found["manifests"]
    if fmt == "json":
        _out(docs, fmt)
        return 0
    for doc in docs:
        sys.stdout.write("---\n" + yamlio.dump(doc))
    return 0


def _wait_for(api: ApiClient, args: Any, fmt: str) -> int:
    """`app wait NAME`: until every asked-for condition holds (all of health, sync and no
    running operation when none is named), as argocd app wait; exit 20 on timeout."""
    want_health = "Degraded" if args.degraded else "Suspended" if args.suspended else "Healthy"
    checks = {
        "health": args.health or args.degraded or args.suspended,
        "sync": args.sync,
        "operation": args.operation,
    }
    if not any(checks.values()):
        checks = dict.fromkeys(checks, True)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        app = api.call("GET", f"/api/v1/applications/{args.name}")
        st = app.get("status") or {}
        health = (st.get("health") or {}).get("status", "Unknown")
        sync = (st.get("sync") or {}).get("status", "Unknown")
        running = (st.get("operationState") or {}).get("phase") in ("Running", "Terminating")
        done = (
            (not checks["health"] or health == want_health)
            and (not checks["sync"] or sync == "Synced")
            and (not checks["operation"] or not running)
        )
        if done:
            if fmt != "table":
                _out(app, fmt)
            else:
                print(f"app {args.name}: sync {sync}, health {health}")
            return 0
        if deadline is not None and time.monotonic() > deadline:
            raise ApiError(
                f"timed out ({args.timeout}s) waiting for app {args.name!r}: sync {sync}, "
                f"health {health}" + (", an operation is running" if running else ""),
                exit_code=EXIT_GENERIC,
            )
        time.sleep(1.0)


def _terminate(api: ApiClient, args: Any, fmt: str) -> int:
    api.call("DELETE", f"/api/v1/applications/{args.name}/operation")
    print(f"Application '{args.name}' operation terminating")
    return 0


def _delete(api: ApiClient, args: Any, fmt: str) -> int:
    api.call("DELETE", f"/api/v1/applications/{args.name}?cascade={args.cascade}")
    print(f"application '{args.name}' deleted" + (" (resources kept)" * (args.cascade != "true")))
    return 0


def _set(api: ApiClient, args: Any, fmt: str) -> int:
    from daemon import overrides

    if args.verb == "set":
        body: dict[str, Any] = {"set": overrides.parse(args.parameter)}
    else:
        body = {"unset": list(args.parameter)}
    result = api.call("POST", f"/api/v1/applications/{args.name}/parameters", body)
    if fmt != "table":
        _out(result, fmt)
        return 0
    params = result["parameters"]
    print(f"{args.name}: " + (", ".join(f"{k}={v}" for k, v in params.items()) or "no overrides"))
    return 0


def _render_local(api: ApiClient, name: str, directory: str) -> list[dict[str, Any]]:
    """Render `directory` the way the app's source would be rendered (its helm, kustomize,
    directory or plugin options), here, for `app diff --local`."""
    import dataclasses

    import anyio

    from daemon import settings
    from daemon.render import Renderer, RenderRequest

    doc = api.call("GET", f"/api/v1/applications/{name}")
    app = settings.parse_application(
        {**doc, "status": None}, where=f"Application/{name}", warnings=[]
    )
    (src,) = app.manifest_sources[:1] or (None,)
    if src is None or src.chart:
        raise GitopsdError(f"Application/{name}: --local needs a git source with a path")
    root = Path(directory).resolve()
    if not root.is_dir():
        raise GitopsdError(f"--local {directory}: not a directory")
    request = RenderRequest(
        sha="local",
        source=dataclasses.replace(src, path="."),
        app_name=app.name,
        namespace=app.destination.namespace,
        project=app.project,
    )
    rendered = anyio.run(Renderer().render, request, root)
    return [m.body for m in rendered.manifests]


_VERBS: dict[str, Callable[[ApiClient, Any, str], int]] = {
    "resources": _resources,
    "manifests": _manifests,
    "wait": _wait_for,
    "terminate-op": _terminate,
    "delete": _delete,
    "set": _set,
    "unset": _set,
}
