"""AppProject roles: policy lines validated as Argo CD's ValidateProject does, and the
casbin-style verdict for a group asking to act on an app. Pure.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.appproject import AppProject, project_where
from daemon.globs import glob_match


class Effect(enum.StrEnum):
    """Outcome a policy line grants when it matches."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Policy:
    """One `p, proj:<project>:<role>, <resource>, <action>, <object>, <effect>` line."""

    subject: str
    resource: str
    action: str
    object: str
    effect: Effect

    def matches(self, *, resource: str, action: str, obj: str) -> bool:
        """Casbin's matcher with Argo CD's default glob mode (gobwas, no separators)."""
        return (
            glob_match(self.resource, resource)
            and glob_match(self.action, action)
            and glob_match(self.object, obj)
        )


@dataclass(frozen=True, slots=True)
class Role:
    """A project role: its policies and the groups bound to it."""

    project: str
    name: str
    policies: tuple[Policy, ...]
    groups: tuple[str, ...]
    description: str = ""

    @property
    def subject(self) -> str:
        """The casbin subject of the role."""
        return f"proj:{self.project}:{self.name}"


PROJECT_RESOURCES = frozenset(
    {"applications", "applicationsets", "repositories", "exec", "logs", "clusters"}
)
PROJECT_ACTIONS = frozenset(
    {"get", "create", "update", "delete", "sync", "override", "rollback", "*"}
)
# Unanchored, like Argo CD's MatchString on these patterns.
_ACTION_PATTERNS = (re.compile(r"action/.*"), re.compile(r"update/.*"), re.compile(r"delete/.*"))
_ROLE_NAME = re.compile(r"^[a-zA-Z0-9]([-_a-zA-Z0-9]*[a-zA-Z0-9])?$")
_GROUP_BAD = re.compile(r"[,\n\r\t]")


def parse_policy(line: str, *, project: str, role: str) -> Policy:
    """Validate one role policy line as Argo CD's `validatePolicy` does (ValueError if invalid).

    The subject must be this project's role and the object `<project>/<app>`,
    `<project>/<namespace>/<app>` or `<project>/*`, so a role cannot grant on other projects.
    """
    parts = [p.strip(" ") for p in line.split(",")]
    if len(parts) != 6 or parts[0] != "p":
        raise ValueError("must be of the form 'p, sub, res, act, obj, eft'")
    _, subject, resource, action, obj, effect = parts
    expected = f"proj:{project}:{role}"
    if subject != expected:
        raise ValueError(f"policy subject must be {expected!r}, not {subject!r}")
    if resource not in PROJECT_RESOURCES:
        allowed = ", ".join(sorted(PROJECT_RESOURCES))
        raise ValueError(f"project resource must be one of {allowed}, not {resource!r}")
    if action not in PROJECT_ACTIONS and not any(p.search(action) for p in _ACTION_PATTERNS):
        raise ValueError(f"invalid action {action!r}")
    obj_re = re.compile(rf"^{re.escape(project)}/[*\w\-.]+(/[*\w\-.]+)?$", re.ASCII)
    if not obj_re.match(obj):
        raise ValueError(
            f"object must be of form '{project}/*', '{project}/<APPNAME>' or "
            f"'{project}/<NAMESPACE>/<APPNAME>', not {obj!r}"
        )
    if effect not in ("allow", "deny"):
        raise ValueError(f"effect must be allow or deny, not {effect!r}")
    return Policy(subject, resource, action, obj, Effect(effect))


def parse_roles(project: AppProject) -> list[Role]:
    """The project's `spec.roles`, validated as Argo CD's ValidateProject does.

    Raises ValueError naming the project and role for a bad role name, a duplicate role,
    policy or group, an empty or malformed group, or an invalid policy line.
    """
    where = project_where(project)
    spec = project.raw.get("spec") or {}
    raw = spec.get("roles") if isinstance(spec, dict) else None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}.spec.roles: expected a list, got {type(raw).__name__}")
    roles: list[Role] = []
    for i, item in enumerate(raw):
        at = f"{where}.spec.roles[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{at}: expected a mapping, got {type(item).__name__}")
        name = str(item.get("name") or "")
        if not _ROLE_NAME.match(name):
            raise ValueError(
                f"{at}.name: invalid role name {name!r} in project {project.name}: use "
                "alphanumerics, '-' or '_', starting and ending with an alphanumeric"
            )
        at = f"{at} (role {name} of project {project.name})"
        if any(r.name == name for r in roles):
            raise ValueError(f"{at}: role {name!r} already exists")
        policies: list[Policy] = []
        lines = item.get("policies") or []
        if not isinstance(lines, list):
            raise ValueError(f"{at}.policies: expected a list of policy lines")
        for j, line in enumerate(lines):
            if not isinstance(line, str):
                raise ValueError(f"{at}.policies[{j}]: expected a string, got {line!r}")
            try:
                policy = parse_policy(line, project=project.name, role=name)
            except ValueError as e:
                raise ValueError(f"{at}.policies[{j}]: invalid policy rule {line!r}: {e}") from None
            if line in lines[:j]:
                raise ValueError(f"{at}.policies[{j}]: policy {line!r} already exists")
            policies.append(policy)
        groups = item.get("groups") or []
        if not isinstance(groups, list):
            raise ValueError(f"{at}.groups: expected a list of group names")
        for j, group in enumerate(groups):
            if not isinstance(group, str) or not group.strip():
                raise ValueError(f"{at}.groups[{j}]: group {group!r} is empty")
            if _GROUP_BAD.search(group):
                raise ValueError(f"{at}.groups[{j}]: group {group!r} contains invalid characters")
            if group in groups[:j]:
                raise ValueError(f"{at}.groups[{j}]: group {group!r} already exists")
        roles.append(
            Role(
                project=project.name,
                name=name,
                policies=tuple(policies),
                groups=tuple(groups),
                description=str(item.get("description") or ""),
            )
        )
    return roles


def authorize(
    projects: Sequence[AppProject],
    *,
    groups: Sequence[str],
    action: str,
    app_project: str,
    app_name: str,
    app_namespace: str = "",
    resource: str = "applications",
) -> bool:
    """Whether any of `groups` may do `action` on app `app_project/app_name` via project roles.

    Only the app's own project's roles count (Argo CD builds one enforcer per project). A
    group gets every policy of each role listing it; the request is allowed when some allow
    policy matches and no deny policy does. The object is `<project>/<app>`, or
    `<project>/<namespace>/<app>` when `app_namespace` is given (apps outside the control
    namespace). A project whose roles are invalid grants nothing, as Argo CD falls back to
    the global policy; validate with `parse_roles` when loading configuration.
    """
    wanted = set(groups)
    if not wanted:
        return False
    obj = (
        f"{app_project}/{app_namespace}/{app_name}"
        if app_namespace
        else f"{app_project}/{app_name}"
    )
    allowed = False
    for project in projects:
        if project.name != app_project:
            continue
        try:
            roles = parse_roles(project)
        except ValueError:
            continue
        for role in roles:
            if not wanted.intersection(role.groups):
                continue
            for policy in role.policies:
                if policy.matches(resource=resource, action=action, obj=obj):
                    if policy.effect is Effect.DENY:
                        return False
                    allowed = True
    return allowed
