"""The status page: server-rendered HTML built from the daemon's own state.

Pure functions from Argo CD-shaped dicts to HTML strings: no build step, no external assets
(inline CSS and a few lines of script that re-fetch the page's main section every few seconds),
every value escaped. `daemon.status.ui` serves them with the API's authentication.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2733;
background:#f4f6f8}
header{background:#1d2733;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header .brand{font-weight:700;color:#fff}
header .who{margin-left:auto;color:#9fb0c2}main{padding:16px 20px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 18px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e8ee;vertical-align:top}
th{background:#eef2f6;font-weight:600}h1{font-size:20px;margin:4px 0 12px}
h2{font-size:16px;margin:18px 0 6px}.badge{display:inline-block;padding:1px 8px;
border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:#8a96a3}
.Synced,.Healthy,.Succeeded{background:#18be52}.OutOfSync{background:#f4c030;color:#1d2733}
.Progressing,.Running{background:#0dadea}.Degraded,.Failed,.Error,.SyncFailed{background:#e96d76}
.Missing,.Unknown,.Suspended,.Terminating{background:#8a96a3}.Pruned{background:#6b7b8c}
.cond{color:#b3261e}pre{background:#fff;border:1px solid #e3e8ee;padding:8px;overflow:auto;
font-size:12px}pre .add{color:#116329}pre .del{color:#b3261e}form.inline{display:inline}
button{background:#1d6ae5;color:#fff;border:0;border-radius:4px;padding:4px 10px;
cursor:pointer}button.secondary{background:#6b7b8c}.muted{color:#6b7b8c}
.filters{margin-bottom:8px}.filters select,.filters input{margin-right:8px}
.flash{background:#e8f4ff;border:1px solid #b6d8ff;padding:6px 10px;margin-bottom:10px}
.wave{font-weight:600;background:#eef2f6}
"""

# Re-fetch the main section every 5 s, and apply a filter as soon as it is chosen
# (progressive: without script the page still works, with the Filter button). No inline
# handlers: the Content-Security-Policy allows this one script by its hash.
_SCRIPT = """
document.addEventListener('change',function(e){var t=e.target;
if(t.matches&&t.matches('form.filters select'))t.form.submit();});
(function(){var m=document.querySelector('main[data-refresh]');if(!m)return;
setInterval(function(){if(document.hidden)return;fetch(location.href,{credentials:'same-origin',
headers:{'X-Gitopsd-Fragment':'1'}}).then(function(r){return r.ok?r.text():null})
.then(function(t){if(t!==null){m.innerHTML=t;m.dataset.refreshed=Date.now();}});},5000);})();
"""


# The only script the pages run, allowed by hash in the Content-Security-Policy.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()


def esc(value: Any) -> str:
    """HTML-escaped text of any value (None as empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def badge(status: Any) -> str:
    """A coloured status badge (Synced, Healthy, Degraded, ...)."""
    text = str(status or "Unknown")
    return f'<span class="badge {esc(text)}">{esc(text)}</span>'


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: what they may do, and the CSRF token their forms carry."""

    name: str = ""  # "" when access is open (loopback without tokens)
    csrf: str = ""
    can_login: bool = False  # tokens exist: show log in / log out


def layout(title: str, main: str, viewer: Viewer, *, refresh: bool = True) -> str:
    """A whole page around `main`."""
    if viewer.name:
        who = (
            f'{esc(viewer.name)} <form class="inline" method="post" action="/ui/logout">'
            f'<input type="hidden" name="csrf" value="{esc(viewer.csrf)}">'
            '<button class="secondary" type="submit">Log out</button></form>'
        )
    elif viewer.can_login:
        who = '<a href="/ui/login">Log in</a>'
    else:
        who = "open access (loopback)"
    nav = (
        '<a class="brand" href="/">gitopsd</a><a href="/">Applications</a>'
        '<a href="/ui/applicationsets">ApplicationSets</a><a href="/ui/clusters">Clusters</a>'
    )
    data = " data-refresh" if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · gitopsd</title><style>{_CSS}</style></head><body>"
        f'<header>{nav}<span class="who">{who}</span></header>'
        f"<main{data}>{main}</main><script>{_SCRIPT}</script></body></html>"
    )


def _status(app: Mapping[str, Any]) -> Mapping[str, Any]:
    return app.get("status") or {}


def app_rows(apps: Sequence[Mapping[str, Any]], filters: Mapping[str, str]) -> list[Any]:
    """The apps that pass the project / sync / health / name filters."""
    out = []
    for app in apps:
        st = _status(app)
        values = {
            "project": (app.get("spec") or {}).get("project", ""),
            "sync": (st.get("sync") or {}).get("status", "Unknown"),
            "health": (st.get("health") or {}).get("status", "Unknown"),
        }
        if any(filters.get(k) and filters[k] != v for k, v in values.items()):
            continue
        if filters.get("q") and filters["q"].lower() not in app["metadata"]["name"].lower():
            continue
        out.append(app)
    return out


def _select(name: str, options: Sequence[str], chosen: str) -> str:
    opts = [f'<option value="">all {esc(name)}</option>']
    for o in options:
        sel = " selected" if o == chosen else ""
        opts.append(f'<option value="{esc(o)}"{sel}>{esc(o)}</option>')
    return f'<select name="{esc(name)}">{"".join(opts)}</select>'


def app_list(apps: Sequence[Mapping[str, Any]], filters: Mapping[str, str], flash: str = "") -> str:
    """The application list with sync/health badges, revision, last sync and conditions."""
    projects = sorted({(a.get("spec") or {}).get("project", "") for a in apps})
    form = (
        '<form class="filters" method="get" action="/">'
        + _select("project", projects, filters.get("project", ""))
        + _select("sync", ["Synced", "OutOfSync", "Unknown"], filters.get("sync", ""))
        + _select(
            "health",
            ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"],
            filters.get("health", ""),
        )
        + f'<input name="q" placeholder="name" value="{esc(filters.get("q", ""))}">'
        + '<button type="submit">Filter</button></form>'
    )
    rows = []
    for app in app_rows(apps, filters):
        name = app["metadata"]["name"]
        st = _status(app)
        op = st.get("operationState") or {}
        conds = "<br>".join(
            f'<span class="cond">{esc(c.get("type"))}: {esc(c.get("message"))}</span>'
            for c in st.get("conditions") or []
        )
        last = op.get("finishedAt") or (op.get("startedAt") and "running since " + op["startedAt"])
        rows.append(
            f'<tr data-app="{esc(name)}"><td><a href="/ui/applications/{quote(name)}">'
            f"{esc(name)}</a></td><td>{esc((app.get('spec') or {}).get('project'))}</td>"
            f"<td>{badge((st.get('sync') or {}).get('status'))}</td>"
            f"<td>{badge((st.get('health') or {}).get('status'))}</td>"
            f"<td><code>{esc(str((st.get('sync') or {}).get('revision', ''))[:12])}</code></td>"
            f"<td>{badge(op.get('phase')) if op else ''} {esc(last or '')}</td>"
            f"<td>{conds}</td></tr>"
        )
    flash_html = f'<div class="flash">{esc(flash)}</div>' if flash else ""
    return (
        f"{flash_html}<h1>Applications ({len(rows)} of {len(apps)})</h1>{form}"
        "<table><thead><tr><th>Name</th><th>Project</th><th>Sync</th><th>Health</th>"
        "<th>Revision</th><th>Last sync</th><th>Conditions</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _diff_html(text: str) -> str:
    lines = []
    for line in text.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        lines.append(f'<span class="{cls}">{esc(line)}</span>' if cls else esc(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _post_button(action: str, label: str, csrf: str, extra: Mapping[str, str] = {}) -> str:
    fields = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in extra.items()
    )
    return (
        f'<form class="inline" method="post" action="{esc(action)}">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">{fields}'
        f'<button type="submit">{esc(label)}</button></form>'
    )


@dataclass(frozen=True, slots=True)
class Detail:
    """What the detail page shows besides the app itself."""

    diffs: Sequence[Mapping[str, Any]] = ()
    diff_error: str = ""
    can_sync: bool = False
    automated: bool = False
    flash: str = ""
    rollouts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # ns/name -> live


def app_detail(app: Mapping[str, Any], detail: Detail, viewer: Viewer) -> str:
    """One application: status, actions, resources by sync wave, the live operation wave by
    wave, history with rollback, the diff of what is out of sync, and its Rollouts."""
    name = app["metadata"]["name"]
    st = _status(app)
    spec = app.get("spec") or {}
    src = spec.get("source") or (spec.get("sources") or [{}])[0]
    dest = spec.get("destination") or {}
    base = f"/ui/applications/{quote(name)}"
    parts = [f'<div class="flash">{esc(detail.flash)}</div>' if detail.flash else ""]
    parts.append(
        f"<h1>{esc(name)} {badge((st.get('sync') or {}).get('status'))} "
        f"{badge((st.get('health') or {}).get('status'))}</h1>"
        f"<p>Project <b>{esc(spec.get('project'))}</b> · {esc(src.get('repoURL'))} "
        f"<code>{esc(src.get('path') or src.get('chart') or '')}</code> at "
        f"<code>{esc(src.get('targetRevision', 'HEAD'))}</code> → "
        f"{esc(dest.get('server') or dest.get('name'))}/{esc(dest.get('namespace'))} · "
        f"revision <code>{esc(str((st.get('sync') or {}).get('revision', ''))[:12])}</code> · "
        f"{'auto-sync' if detail.automated else 'manual sync'}</p>"
    )
    if detail.can_sync:
        parts.append(
            "<p>"
            + _post_button(f"{base}/sync", "Sync", viewer.csrf)
            + " "
            + _post_button(f"{base}/sync", "Sync with prune", viewer.csrf, {"prune": "true"})
            + " "
            + _post_button(f"{base}/refresh", "Refresh", viewer.csrf)
            + "</p>"
        )
    for c in st.get("conditions") or []:
        parts.append(f'<p class="cond">{esc(c.get("type"))}: {esc(c.get("message"))}</p>')
    parts.append(_resources(st))
    parts.append(_operation(st.get("operationState") or {}))
    parts.append(_history(st, base, detail, viewer))
    parts.append(_rollouts(st, detail.rollouts))
    parts.append("<h2>Diff</h2>")
    if detail.diff_error:
        parts.append(f'<p class="cond">{esc(detail.diff_error)}</p>')
    elif not detail.diffs:
        parts.append('<p class="muted">Live matches git.</p>')
    for item in detail.diffs:
        parts.append(
            f'<h3>{esc(item.get("resource"))} <span class="muted">'
            f"({esc(item.get('status'))})</span> {esc(item.get('error', ''))}</h3>"
            + _diff_html(str(item.get("diff") or ""))
        )
    return "".join(parts)


def _resources(st: Mapping[str, Any]) -> str:
    resources = sorted(
        st.get("resources") or [],
        key=lambda r: (int(r.get("syncWave", 0) or 0), r.get("kind", ""), r.get("name", "")),
    )
    rows, wave = [], None
    for r in resources:
        w = int(r.get("syncWave", 0) or 0)
        if w != wave:
            wave = w
            rows.append(f'<tr class="wave"><td colspan="5">Sync wave {w}</td></tr>')
        health = r.get("health") or {}
        rows.append(
            f"<tr><td>{esc(r.get('kind'))}</td><td>{esc(r.get('namespace'))}</td>"
            f"<td>{esc(r.get('name'))}</td><td>{badge(r.get('status'))}</td>"
            f"<td>{badge(health.get('status')) if health else ''} "
            f"{esc(health.get('message', ''))}</td></tr>"
        )
    return (
        "<h2>Resources</h2><table><thead><tr><th>Kind</th><th>Namespace</th><th>Name</th>"
        "<th>Sync</th><th>Health</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _operation(op: Mapping[str, Any]) -> str:
    if not op:
        return '<h2>Operation</h2><p class="muted">No operation yet.</p>'
    results = (op.get("syncResult") or {}).get("resources") or []
    rows, step = [], None
    for r in results:
        here = (r.get("syncPhase", "Sync"), int(r.get("syncWave", 0) or 0))
        if here != step:
            step = here
            rows.append(f'<tr class="wave"><td colspan="4">{esc(here[0])} wave {here[1]}</td></tr>')
        rows.append(
            f"<tr><td>{esc(r.get('kind'))}/{esc(r.get('name'))}</td>"
            f"<td>{badge(r.get('status'))}</td><td>{esc(r.get('hookPhase', ''))}</td>"
            f"<td>{esc(r.get('message', ''))}</td></tr>"
        )
    return (
        f"<h2>Operation {badge(op.get('phase'))}</h2><p>{esc(op.get('message'))} "
        f'<span class="muted">started {esc(op.get("startedAt"))}'
        f"{', finished ' + esc(op.get('finishedAt')) if op.get('finishedAt') else ''}</span></p>"
        "<table><thead><tr><th>Resource</th><th>Result</th><th>Hook</th><th>Message</th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _history(st: Mapping[str, Any], base: str, detail: Detail, viewer: Viewer) -> str:
    rows = []
    for h in reversed(st.get("history") or []):
        if detail.can_sync and not detail.automated:
            action = _post_button(f"{base}/rollback", "Rollback", viewer.csrf, {"id": str(h["id"])})
        elif detail.can_sync:
            action = '<span class="muted">rollback needs auto-sync off</span>'
        else:
            action = ""
        rows.append(
            f"<tr><td>{esc(h.get('id'))}</td><td>{esc(h.get('deployedAt'))}</td>"
            f"<td><code>{esc(str(h.get('revision', ''))[:12])}</code></td>"
            f"<td>{esc((h.get('initiatedBy') or {}).get('username', ''))}</td>"
            f"<td>{action}</td></tr>"
        )
    if not rows:
        return '<h2>History</h2><p class="muted">Nothing deployed yet.</p>'
    return (
        "<h2>History</h2><table><thead><tr><th>ID</th><th>Deployed</th><th>Revision</th>"
        "<th>Initiated by</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _rollouts(st: Mapping[str, Any], live: Mapping[str, Mapping[str, Any]]) -> str:
    """The app's Argo Rollouts: strategy, step and weight, phase, pause reasons, images and
    replicas from the live object (health only when it could not be read)."""
    rollouts = [
        r
        for r in st.get("resources") or []
        if r.get("group") == "argoproj.io" and r.get("kind") == "Rollout"
    ]
    if not rollouts:
        return ""
    rows = []
    for r in rollouts:
        key = f"{r.get('namespace', '')}/{r.get('name', '')}"
        health = r.get("health") or {}
        ro = live.get(key) or {}
        spec, status = ro.get("spec") or {}, ro.get("status") or {}
        strategy = spec.get("strategy") or {}
        steps = (strategy.get("canary") or {}).get("steps")
        kind = "Canary" if "canary" in strategy else "BlueGreen" if strategy else ""
        weight = ((status.get("canary") or {}).get("weights") or {}).get("canary") or {}
        step = (
            f"step {status.get('currentStepIndex', 0)}/{len(steps)}, weight "
            f"{weight.get('weight', 0)}%"
            if steps is not None
            else ""
        )
        pauses = ", ".join(str(c.get("reason", "")) for c in status.get("pauseConditions") or [])
        pod = (spec.get("template") or {}).get("spec") or {}
        images = ", ".join(str(c.get("image")) for c in pod.get("containers") or [])
        replicas = (
            f"{status.get('updatedReplicas', 0)} updated, {status.get('availableReplicas', 0)} "
            f"available of {spec.get('replicas', 1)}"
            if ro
            else ""
        )
        rows.append(
            f'<tr data-rollout="{esc(key)}"><td>{esc(key)}</td><td>{esc(kind)}</td>'
            f"<td>{badge(status.get('phase') or health.get('status'))} "
            f"{esc(status.get('message') or health.get('message', ''))}</td>"
            f"<td>{esc(step)}</td><td>{esc(pauses)}</td><td>{esc(images)}</td>"
            f"<td>{esc(replicas)}</td></tr>"
        )
    return (
        "<h2>Rollouts</h2><table><thead><tr><th>Rollout</th><th>Strategy</th><th>Phase</th>"
        "<th>Step</th><th>Paused for</th><th>Images</th><th>Replicas</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def appsets_page(items: Sequence[Mapping[str, Any]]) -> str:
    """ApplicationSets with the apps they generated and their errors."""
    rows = []
    for a in items:
        apps = ", ".join(
            f'<a href="/ui/applications/{quote(n)}">{esc(n)}</a>' for n in a["applications"]
        )
        rows.append(
            f"<tr><td>{esc(a['name'])}</td><td>{apps or '<span class=muted>none</span>'}</td>"
            f'<td class="cond">{esc(a.get("error", ""))}</td></tr>'
        )
    return (
        f"<h1>ApplicationSets ({len(rows)})</h1><table><thead><tr><th>Name</th>"
        "<th>Applications</th><th>Error</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def clusters_page(rows: Sequence[Mapping[str, Any]]) -> str:
    """Destination clusters: reachability and the apps on each."""
    body = []
    for c in rows:
        state = "Healthy" if c["reachable"] else "Degraded"
        body.append(
            f"<tr><td>{esc(c['name'])}</td><td>{esc(c['server'])}</td><td>{badge(state)} "
            f"{esc(c.get('error', ''))}</td><td>{esc(c['apps'])}</td></tr>"
        )
    return (
        f"<h1>Clusters ({len(body)})</h1><table><thead><tr><th>Name</th><th>Server</th>"
        "<th>Connection</th><th>Apps</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def login_page(error: str = "", next_url: str = "/") -> str:
    """The token form (the token is kept in an HttpOnly cookie)."""
    err = f'<p class="cond">{esc(error)}</p>' if error else ""
    return (
        f"<h1>Log in</h1>{err}"
        f'<form method="post" action="/ui/login?{urlencode({"next": next_url})}">'
        '<p><label>API token <input type="password" name="token" autocomplete="off" '
        'size="40"></label></p><p><button type="submit">Log in</button></p></form>'
    )
