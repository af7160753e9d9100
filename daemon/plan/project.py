"""AppProject rules applied to an app, as Argo CD applies them: which repositories,
destinations and resources a project permits.

Pure: no I/O. Pattern dialects follow Argo CD exactly (see `daemon.globs`): gobwas/glob for
sourceRepos and destinations, Go's `path/filepath.Match` for resource white/blacklists. Sync
windows and roles live with the project model in `daemon.appproject`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from daemon.appproject import AppProject
from daemon.globs import filepath_match, glob_match
from daemon.model import ResourceKey
from daemon.settings import Application, ClusterConfig
from daemon.stages import Desired

# --- violations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a project refuses something: the spec field (`rule`), what was refused, a sentence."""

    rule: str
    subject: str
    message: str

    def __str__(self) -> str:
        return self.message


# --- sources -------------------------------------------------------------------------------

_SSH_URL = re.compile(r"^(ssh://)?([^/:]*?)@[^@]+$")
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


def normalize_git_url(url: str) -> str:
    """Argo CD's `git.NormalizeGitURL`: lowercase, trimmed, no `.git`, scp form as `user@host/path`.

    `git@github.com:org/repo.git` becomes `git@github.com/org/repo` (the user stays, only the
    `ssh://` scheme is dropped). Returns "" where Go's url.Parse fails (control characters, bad
    percent escapes).
    """
    repo = url.strip().lower()
    if _SSH_URL.match(repo) and not repo.startswith("ssh://"):
        repo = "ssh://" + repo.replace(":", "/", 1)
    repo = repo.removesuffix(".git")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in repo) or _BAD_ESCAPE.search(repo):
        return ""
    return repo.removeprefix("ssh://")


def check_source(project: AppProject, repo_url: str) -> Violation | None:
    """Whether `repo_url` is permitted by the project's `sourceRepos` (None = permitted).

    A `!pattern` whose body matches denies at once; a `!pattern` that does not match counts as
    a match, so `['!x']` alone permits every other repository (Argo CD's behaviour).
    """
    src = normalize_git_url(repo_url)
    any_matched = False
    for raw in project.source_repos:
        deny = raw.startswith("!")
        pattern = "!" + normalize_git_url(raw[1:]) if deny else normalize_git_url(raw)
        if glob_match(pattern, src, separators="/", negation=True):
            any_matched = True
        elif deny:
            return Violation(
                "sourceRepos",
                repo_url,
                f"repository {repo_url} is denied by sourceRepos entry {raw!r} "
                f"in project {project.name}",
            )
    if any_matched:
        return None
    return Violation(
        "sourceRepos",
        repo_url,
        f"repository {repo_url} is not permitted in project {project.name} (sourceRepos)",
    )


# --- destinations --------------------------------------------------------------------------


def _destination_denied_by(project: AppProject, server: str, name: str, namespace: str) -> str:
    """'' when permitted, else a description of why (Argo CD's `isDestinationMatched`)."""
    any_matched = False
    for item in project.destinations:
        p_server, p_name, p_ns = (
            item.get("server", ""),
            item.get("name", ""),
            item.get("namespace", ""),
        )
        name_ok = name != "" and glob_match(p_name, name, negation=True)
        server_ok = server != "" and glob_match(p_server, server, negation=True)
        ns_ok = glob_match(p_ns, namespace, negation=True)
        if (server_ok or name_ok) and ns_ok:
            any_matched = True
        elif (
            (not name_ok and p_name.startswith("!"))
            or (not server_ok and p_server.startswith("!") and ns_ok)
            or (not ns_ok and p_ns.startswith("!") and server_ok)
        ):
            shown = ", ".join(f"{k}: {v}" for k, v in item.items())
            return f"is denied by destinations entry {{{shown}}}"
    return "" if any_matched else "is not permitted"


def _cluster_label(server: str, name: str) -> str:
    if name and server:
        return f"{name} ({server})"
    return name or server


def check_destination(
    project: AppProject, *, server: str, name: str, namespace: str
) -> Violation | None:
    """Whether the app destination is permitted by `destinations` (None = permitted).

    Pass both `server` and `name` of the resolved cluster (as Argo CD's controller does); an
    entry matches when its server or its name matches and its namespace matches.
    """
    why = _destination_denied_by(project, server, name, namespace)
    if not why:
        return None
    cluster = _cluster_label(server, name)
    return Violation(
        "destinations",
        f"{name or server}/{namespace}",
        f"destination namespace {namespace!r} on cluster {cluster} {why} "
        f"in project {project.name} (destinations)",
    )


# --- resources -----------------------------------------------------------------------------


def _in_list(entries: Sequence[Mapping[str, str]], group: str, kind: str, name: str | None) -> bool:
    """Whether an entry matches; `name=None` ignores entry names (namespace lists are
    GroupKind-only)."""
    for item in entries:
        if not filepath_match(item.get("kind", ""), kind):
            continue
        if not filepath_match(item.get("group", ""), group):
            continue
        wanted = item.get("name", "")
        if name is None or wanted == "" or filepath_match(wanted, name):
            return True
    return False


def check_resource(
    project: AppProject,
    *,
    group: str,
    kind: str,
    name: str = "",
    namespace: str,
    namespaced: bool,
    server: str,
    cluster_name: str,
) -> Violation | None:
    """Whether the project permits one resource (None = permitted).

    Cluster-scoped kinds need a clusterResourceWhitelist match (empty list: nothing) and no
    clusterResourceBlacklist match; entries with `name` also match the resource `name`.
    Namespaced kinds pass namespaceResourceWhitelist (None: all; empty: nothing) minus the
    blacklist, and their `namespace` (already defaulted to the app's) must be permitted by
    `destinations` on the app's cluster (`server`, `cluster_name`): the destination check is
    folded in here, so callers need no second call.
    """
    key = f"{kind}/{namespace}/{name}" if namespaced and namespace else f"{kind}/{name}"
    subject = key if name else kind
    if namespaced:
        white: Sequence[Mapping[str, str]] | None = project.namespace_resource_whitelist
        black: Sequence[Mapping[str, str]] = project.namespace_resource_blacklist
        lists = ("namespaceResourceWhitelist", "namespaceResourceBlacklist")
        whitelisted = white is None or _in_list(white, group, kind, None)
        blacklisted = _in_list(black, group, kind, None)
    else:
        lists = ("clusterResourceWhitelist", "clusterResourceBlacklist")
        whitelisted = _in_list(project.cluster_resource_whitelist, group, kind, name)
        blacklisted = _in_list(project.cluster_resource_blacklist, group, kind, name)
    if not whitelisted or blacklisted:
        rule = lists[0] if not whitelisted else lists[1]
        return Violation(
            rule,
            subject,
            f"resource {group}:{kind} ({subject}) is not permitted in project "
            f"{project.name} ({rule})",
        )
    if namespaced:
        why = _destination_denied_by(project, server, cluster_name, namespace)
        if why:
            cluster = _cluster_label(server, cluster_name)
            return Violation(
                "destinations",
                subject,
                f"namespace {namespace!r} of {subject} on cluster {cluster} {why} "
                f"in project {project.name} (destinations)",
            )
    return None


# --- one app -------------------------------------------------------------------------------


def app_violations(
    app: Application, project: AppProject, cluster: ClusterConfig, desired: Desired | None
) -> list[str]:
    """Every way `app` breaks its project's rules: sources and destination (checked before git
    is contacted, `desired` None), then every rendered resource."""
    out: list[str] = []
    for src in app.sources:
        v = check_source(project, src.repo_url)
        if v is not None:
            out.append(v.message)
    v = check_destination(
        project, server=cluster.server, name=cluster.name, namespace=app.destination.namespace
    )
    if v is not None:
        out.append(v.message)
    if desired is None:
        return out
    for m in desired.manifests:
        rt = desired.types.get(m.key)
        # No type yet (a CRD in this app, or an Argo CD document): prepare() gave
        # namespaced objects a namespace and stripped it from cluster-scoped ones.
        namespaced = bool(m.key.namespace) if rt is None else rt.namespaced
        v = resource_violation(project, cluster, m.key, namespaced=namespaced)
        if v is not None:
            out.append(f"{m.source}: {v.message}")
    return out


def namespace_violation(project: AppProject, cluster: ClusterConfig, name: str) -> Violation | None:
    """Whether the project permits the sync to write `Namespace/<name>` itself
    (CreateNamespace=true, managedNamespaceMetadata): the same cluster-resource rule as a
    Namespace manifest (Argo CD's permission validator sees the namespace task like any other),
    and the namespace must be one the project's `destinations` permit on this cluster."""
    v = resource_violation(
        project, cluster, ResourceKey("", "Namespace", "", name), namespaced=False
    )
    if v is not None:
        return v
    return check_destination(project, server=cluster.server, name=cluster.name, namespace=name)


def resource_violation(
    project: AppProject, cluster: ClusterConfig, key: ResourceKey, *, namespaced: bool
) -> Violation | None:
    """`check_resource` for one object of an app on `cluster`."""
    return check_resource(
        project,
        group=key.group,
        kind=key.kind,
        name=key.name,
        namespace=key.namespace if namespaced else "",
        namespaced=namespaced,
        server=cluster.server,
        cluster_name=cluster.name,
    )
