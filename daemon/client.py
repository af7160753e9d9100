"""`gitopsd app ...`: a command-line client of the daemon's HTTP API."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from daemon import yamlio
from daemon.errors import GitopsdError


class ApiError(GitopsdError):
    """The API answered with an error."""


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

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.request(
                method, self.server + path, json=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as e:
            raise ApiError(f"cannot reach gitopsd at {self.server}: {e}") from e
        try:
            data = r.json()
        except ValueError:
            data = {"error": r.text}
        if r.status_code >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            raise ApiError(f"{method} {path}: HTTP {r.status_code}: {msg or r.text[:300]}")
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
        items = api.call("GET", "/api/v1/applications")["items"]
        if fmt != "table":
            _out(items, fmt)
            return 0
        _table(
            [_row(a) for a in items],
            ["NAME", "DESTINATION", "SYNC", "HEALTH", "REVISION", "REPO", "PATH"],
        )
        return 0
    name = args.name
    if verb == "get":
        app = api.call("GET", f"/api/v1/applications/{name}")
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
        items = api.call("GET", f"/api/v1/applications/{name}/diff")["items"]
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
    from urllib.parse import urlencode

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
