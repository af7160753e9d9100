"""App of apps: Argo CD documents found in an app's rendered manifests become child apps.

An Application (or AppProject) rendered by a parent is not applied to the cluster — gitopsd
manages it itself, so the cluster needs no Argo CD CRDs. This module keeps the registry of which
parent owns which child, validates children (same project as the parent, no cycles, no name
clashes) and remembers them across restarts through the parent's saved state.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.appproject import AppProject
from daemon.errors import GitopsdError, PlanError
from daemon.model import ANN_TRACKING_ID, Body, Manifest, ResourceKey, SyncStatus
from daemon.settings import ARGO_API, Application, parse_application, parse_project
from daemon.stages import Comparison

log = structlog.get_logger("gitopsd.children")

ARGO_GROUP = "argoproj.io"
CONTROL_NAMESPACE = "argocd"  # where Argo CD documents take effect
CHILD_KINDS = frozenset({"Application", "AppProject", "ApplicationSet"})

# The chain of parents of the reconcile running in this task (cycle detection).
ANCESTRY: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "gitopsd_ancestry", default=()
)


def is_child_kind(key: ResourceKey) -> bool:
    """True for Argo CD documents that gitopsd manages itself instead of applying."""
    return key.group == ARGO_GROUP and key.kind in CHILD_KINDS


def clean(body: Body) -> Body:
    """A child document as the user wrote it (without the tracking annotation we add)."""
    out = dict(body)
    meta = dict(out.get("metadata") or {})
    anns = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ANN_TRACKING_ID}
    if anns:
        meta["annotations"] = anns
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


@dataclass
class ChildRegistry:
    """Which parent owns which child app or project, with the document that defined it."""

    apps: dict[str, tuple[str, Application, Body]] = field(default_factory=dict)
    projects: dict[str, tuple[str, AppProject, Body]] = field(default_factory=dict)

    def children_of(self, parent: str) -> dict[str, Application]:
        return {n: a for n, (p, a, _) in self.apps.items() if p == parent}

    def parent_of(self, name: str) -> str | None:
        entry = self.apps.get(name)
        return entry[0] if entry else None

    def document(self, name: str) -> Body | None:
        entry = self.apps.get(name)
        return entry[2] if entry else None

    def project(self, name: str) -> AppProject | None:
        entry = self.projects.get(name)
        return entry[1] if entry else None

    def saved(self, parent: str) -> dict[str, Any]:
        """What to persist in the parent's state to restore its children after a restart."""
        return {
            "apps": [doc for n, (p, _, doc) in sorted(self.apps.items()) if p == parent],
            "projects": [doc for n, (p, _, doc) in sorted(self.projects.items()) if p == parent],
        }

    def parse_child(self, parent: Application, body: Body, *, top_level: set[str]) -> Application:
        """Validate a child Application document from `parent`'s manifests."""
        doc = clean(body)
        doc.setdefault("apiVersion", ARGO_API)
        where = f"Application/{parent.name} (app of apps)"
        child = parse_application(doc, where=where, warnings=[])
        chain = (*ANCESTRY.get(), parent.name)
        if child.name in chain:
            cycle = " -> ".join((*chain, child.name))
            raise PlanError(f"Application/{child.name}: app-of-apps cycle: {cycle}")
        if child.project != parent.project:
            raise PlanError(
                f"Application/{child.name}: a child of {parent.name} must stay in its parent's "
                f"project {parent.project!r}, not {child.project!r}"
            )
        if child.name in top_level:
            raise PlanError(
                f"Application/{child.name}: the name is already used by another Application "
                "(config files, an ApplicationSet or another parent); a child app cannot take it"
            )
        if child.namespace != CONTROL_NAMESPACE:
            raise PlanError(
                f"Application/{child.name}: child Applications must be in namespace "
                f"{CONTROL_NAMESPACE!r} (got {child.namespace!r})"
            )
        owner = self.parent_of(child.name)
        if owner is not None and owner != parent.name:
            raise PlanError(
                f"Application/{child.name}: already a child of {owner}; two parents cannot "
                "own the same app"
            )
        return child

    def parse_project(self, parent: Application, body: Body, *, top_level: set[str]) -> AppProject:
        """Validate a child AppProject document from `parent`'s manifests."""
        doc = clean(body)
        project = parse_project(doc, where=f"Application/{parent.name} (app of apps)", warnings=[])
        namespace = str((doc.get("metadata") or {}).get("namespace") or CONTROL_NAMESPACE)
        if namespace != CONTROL_NAMESPACE:
            raise PlanError(
                f"AppProject/{project.name}: child AppProjects must be in namespace "
                f"{CONTROL_NAMESPACE!r} (got {namespace!r}); elsewhere they have no effect"
            )
        if project.name in top_level or project.name == "default":
            raise PlanError(
                f"AppProject/{project.name}: defined in the config files (or built in); "
                f"Application/{parent.name} cannot redefine it"
            )
        owner = self.projects.get(project.name)
        if owner is not None and owner[0] != parent.name:
            raise PlanError(f"AppProject/{project.name}: already defined by {owner[0]}")
        return project

    def register(self, parent: str, child: Application, doc: Body) -> bool:
        """Record `child` under `parent`; True when it is new or changed."""
        previous = self.apps.get(child.name)
        self.apps[child.name] = (parent, child, doc)
        return previous is None or previous[2] != doc

    def register_project(self, parent: str, project: AppProject, doc: Body) -> None:
        self.projects[project.name] = (parent, project, doc)

    def unregister(self, name: str) -> Application | None:
        entry = self.apps.pop(name, None)
        return entry[1] if entry else None

    def unregister_project(self, name: str) -> None:
        self.projects.pop(name, None)

    def restore(
        self,
        parent: Application,
        saved: dict[str, Any],
        *,
        top_level_projects: set[str],
        taken: set[str],
    ) -> list[Application]:
        """Re-register what `parent` had before a restart (from its saved state); documents that
        no longer validate are logged and left out. Returns the child apps registered."""
        for doc in saved.get("projects") or []:
            try:
                proj = self.parse_project(parent, doc, top_level=top_level_projects)
            except GitopsdError as e:
                log.warning("child project not restored", parent=parent.name, error=str(e))
                continue
            self.register_project(parent.name, proj, doc)
        restored = []
        for doc in saved.get("apps") or []:
            try:
                child = self.parse_child(parent, doc, top_level=taken)
            except GitopsdError as e:
                log.warning("child app not restored", parent=parent.name, error=str(e))
                continue
            self.register(parent.name, child, doc)
            restored.append(child)
        return restored


def compare_children(
    parent: str,
    manifests: Sequence[Manifest],
    registry: ChildRegistry,
    child_status: Callable[[str], dict[str, Any] | None],
    comparison: Comparison,
) -> None:
    """Compare `parent`'s rendered Argo CD documents with the registry: a child is Synced when
    registered exactly as rendered; registered children no longer rendered are the prune set.
    A child app's pseudo live object carries its status (so its health gates waves), unless
    `child_status` gives None: then the child has no health, as in Argo CD by default."""
    desired_keys = set()
    for m in manifests:
        desired_keys.add(m.key)
        doc = clean(m.body)
        if m.key.kind == "Application":
            mine = registry.parent_of(m.key.name) == parent
            synced = mine and registry.document(m.key.name) == doc
            if mine:
                live = registry.document(m.key.name) or {}
                status = child_status(m.key.name)
                if status is None:
                    comparison.no_health.add(m.key)
                    comparison.live[m.key] = live
                else:
                    comparison.live[m.key] = {**live, "status": status}
        elif m.key.kind == "AppProject":
            entry = registry.projects.get(m.key.name)
            mine = entry is not None and entry[0] == parent
            synced = mine and entry is not None and entry[2] == doc
            if mine:
                comparison.live[m.key] = doc
        else:
            comparison.errors[m.key] = (
                f"{m.key}: ApplicationSets inside an app are not supported yet; "
                "define them in the config files"
            )
            synced = False
        comparison.status[m.key] = SyncStatus.SYNCED if synced else SyncStatus.OUT_OF_SYNC
    for name in registry.children_of(parent):
        doc = registry.document(name) or {}
        key = ResourceKey.of({**doc, "apiVersion": ARGO_API, "kind": "Application"})
        if key not in desired_keys:
            comparison.owned_extra[key] = doc
    for name, (owner, _, doc) in registry.projects.items():
        namespace = str((doc.get("metadata") or {}).get("namespace") or CONTROL_NAMESPACE)
        key = ResourceKey(ARGO_GROUP, "AppProject", namespace, name)
        if owner == parent and key not in desired_keys:
            comparison.owned_extra[key] = doc
