"""What an Argo CD `argocd-cm` ConfigMap says about resources, for users who carry theirs over:
custom health checks in Lua, system-wide ignoreDifferences, resource exclusions/inclusions and
compare options. Parsing only (pure); the Lua checks run in `daemon.health.lua`.

Keys read (as Argo CD documents them):
- `resource.customizations.health.<group>_<kind>`: a Lua script (`obj` in, `{status, message}`
  out); the legacy `resource.customizations` YAML blob with `<group>/<kind>: {health.lua: ...}`.
- `resource.customizations.ignoreDifferences.<group>_<kind>` and `.all`: YAML with
  jsonPointers, jqPathExpressions, managedFieldsManagers.
- `resource.exclusions`, `resource.inclusions`: YAML lists of {apiGroups, kinds, clusters}.
- `resource.compareoptions`: YAML {ignoreAggregatedRoles, ignoreResourceStatusField}.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from daemon import yamlio
from daemon.errors import ConfigError
from daemon.globs import glob_match

HEALTH_PREFIX = "resource.customizations.health."
IGNORE_PREFIX = "resource.customizations.ignoreDifferences."
KNOWN_KEYS = frozenset(
    {
        "resource.customizations",
        "resource.exclusions",
        "resource.inclusions",
        "resource.compareoptions",
    }
)
TRACKING_KEY = "application.resourceTrackingMethod"
TRACKING_METHODS = ("annotation", "label", "annotation+label")


@dataclass(frozen=True, slots=True)
class ResourceFilter:
    """One `resource.exclusions` / `resource.inclusions` entry."""

    api_groups: tuple[str, ...]
    kinds: tuple[str, ...]
    clusters: tuple[str, ...]

    def matches(self, group: str, kind: str, server: str) -> bool:
        """Argo CD's FilteredResource match: every list's globs (empty list: anything)."""

        def any_of(patterns: tuple[str, ...], value: str) -> bool:
            return not patterns or any(glob_match(p, value) for p in patterns)

        return (
            any_of(self.api_groups, group)
            and any_of(self.kinds, kind)
            and any_of(self.clusters, server)
        )


@dataclass(frozen=True, slots=True)
class Customizations:
    """The resource settings of one argocd-cm."""

    health: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (group, kind) -> Lua
    ignore_differences: tuple[dict[str, Any], ...] = ()  # as spec.ignoreDifferences entries
    exclusions: tuple[ResourceFilter, ...] = ()
    inclusions: tuple[ResourceFilter, ...] = ()
    ignore_aggregated_roles: bool = False
    tracking_method: str = ""  # application.resourceTrackingMethod, when set
    kustomize_build_options: str = ""  # kustomize.buildOptions, when set
    kustomize_paths: Mapping[str, str] = field(default_factory=dict)  # kustomize.path.<version>
    source: str = ""

    def excluded(self, group: str, kind: str, server: str) -> bool:
        """Whether gitopsd must leave a kind alone on a cluster (never apply, compare or prune
        it): excluded, or not included when inclusions are given."""
        if any(f.matches(group, kind, server) for f in self.exclusions):
            return True
        return bool(self.inclusions) and not any(
            f.matches(group, kind, server) for f in self.inclusions
        )


def _group_kind(suffix: str, where: str) -> tuple[str, str]:
    """`apps_Deployment` -> ("apps", "Deployment"); `_Service` or `Service` -> ("", "Service")."""
    group, sep, kind = suffix.rpartition("_")
    if not kind:
        raise ConfigError(f"{where}: cannot read a group and kind from {suffix!r}")
    return (group if sep else ""), kind


def yaml_field(text: Any, where: str) -> Any:
    """A ConfigMap value that holds YAML, parsed; ConfigError naming `where`."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string holding YAML")
    try:
        return yamlio.load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None


def _filters(raw: Any, where: str) -> tuple[ResourceFilter, ...]:
    items = yaml_field(raw, where) or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: expected a list of {{apiGroups, kinds, clusters}}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}[{i}]: expected a mapping")
        out.append(
            ResourceFilter(
                api_groups=tuple(str(g) for g in item.get("apiGroups") or []),
                kinds=tuple(str(k) for k in item.get("kinds") or []),
                clusters=tuple(str(c) for c in item.get("clusters") or []),
            )
        )
    return tuple(out)


def parse(data: Mapping[str, Any], *, where: str, warnings: list[str]) -> Customizations:
    """An argocd-cm's `data` as Customizations; errors name the key."""
    health: dict[tuple[str, str], str] = {}
    ignores: list[dict[str, Any]] = []
    for key, value in data.items():
        at = f"{where}.data[{key!r}]"
        if key.startswith(HEALTH_PREFIX):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{at}: expected a Lua script")
            health[_group_kind(key[len(HEALTH_PREFIX) :], at)] = value
        elif key.startswith(IGNORE_PREFIX):
            suffix = key[len(IGNORE_PREFIX) :]
            group, kind = ("*", "*") if suffix == "all" else _group_kind(suffix, at)
            rule = yaml_field(value, at) or {}
            if not isinstance(rule, dict):
                raise ConfigError(f"{at}: expected jsonPointers / jqPathExpressions / ...")
            ignores.append({"group": group, "kind": kind, **rule})
        elif key == "resource.customizations":
            for group_kind, entry in (yaml_field(value, at) or {}).items():
                group, _, kind = str(group_kind).rpartition("/")
                if isinstance(entry, dict) and isinstance(entry.get("health.lua"), str):
                    health[(group, kind)] = entry["health.lua"]
        elif key not in KNOWN_KEYS and key.startswith("resource."):
            warnings.append(f"{at}: not used by gitopsd (ignored)")
    tracking = str(data.get(TRACKING_KEY) or "")
    if tracking and tracking not in TRACKING_METHODS:
        raise ConfigError(
            f"{where}.data[{TRACKING_KEY!r}]: {tracking!r} is not one of "
            + ", ".join(TRACKING_METHODS)
        )
    options = yaml_field(data.get("resource.compareoptions", "{}"), f"{where}.data.compareoptions")
    options = options or {}
    status_field = str(options.get("ignoreResourceStatusField", "all")).lower()
    if status_field not in ("all", "crd"):
        warnings.append(
            f"{where}: resource.compareoptions.ignoreResourceStatusField {status_field!r}: "
            "gitopsd always ignores status (its diff is a server-side dry run)"
        )
    return Customizations(
        health=health,
        ignore_differences=tuple(ignores),
        exclusions=_filters(data.get("resource.exclusions", "[]"), f"{where}.exclusions"),
        inclusions=_filters(data.get("resource.inclusions", "[]"), f"{where}.inclusions"),
        ignore_aggregated_roles=bool(options.get("ignoreAggregatedRoles", False)),
        tracking_method=tracking,
        kustomize_build_options=str(data.get("kustomize.buildOptions") or ""),
        kustomize_paths={
            key.removeprefix("kustomize.path."): str(value)
            for key, value in data.items()
            if key.startswith("kustomize.path.")
        },
        source=where,
    )


def aggregated_roles_rule() -> dict[str, Any]:
    """`ignoreAggregatedRoles`: the rules of aggregated ClusterRoles are filled in by the
    controller, so they never count as a difference."""
    return {
        "group": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "jqPathExpressions": ["select(.aggregationRule != null) | .rules"],
    }
