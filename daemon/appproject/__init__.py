"""The AppProject model: what a project document says, parsed and validated.

Sync windows (`windows`, with `cron`) and roles (`roles`) are parsed here too, where the model
lives, so loading settings needs nothing from the planning layer; `daemon.plan.project` applies
the project's rules to an app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from daemon.errors import ConfigError
from daemon.rollouts.egress import Entry


@dataclass(frozen=True, slots=True)
class AppProject:
    """An Argo CD AppProject; enforcement lives in the plan stage."""

    name: str
    source_repos: tuple[str, ...] = ("*",)
    destinations: tuple[dict[str, str], ...] = ({"server": "*", "namespace": "*"},)
    cluster_resource_whitelist: tuple[dict[str, str], ...] = ({"group": "*", "kind": "*"},)
    cluster_resource_blacklist: tuple[dict[str, str], ...] = ()
    namespace_resource_whitelist: tuple[dict[str, str], ...] | None = None
    namespace_resource_blacklist: tuple[dict[str, str], ...] = ()
    # spec.signatureKeys[].keyID: git revisions must be commits signed by one of these.
    signature_keys: tuple[str, ...] = ()
    # spec.orphanedResources: None (not monitored) or (warn, ignore entries).
    orphaned_resources: OrphanedResources | None = None
    # Annotation gitopsd.io/analysis-allowed-addresses: where this project's analyses may reach.
    analysis_allowed: tuple[Entry, ...] = ()
    file: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class OrphanedResources:
    """`spec.orphanedResources`: report objects in an app's namespace no app owns."""

    warn: bool = True  # Argo CD's default when `warn` is not set
    ignore: tuple[tuple[str, str, str], ...] = ()  # (group, kind, name glob)

    def ignores(self, group: str, kind: str, name: str) -> bool:
        """Whether an `ignore` entry (empty fields match anything, name is a glob) or one of
        Argo CD's built-in exclusions covers the object."""
        if (group, kind, name) in (("", "ServiceAccount", "default"),):
            return True
        if (group, kind, name) == ("", "ConfigMap", "kube-root-ca.crt"):
            return True
        return any(
            (not g or g == group) and (not k or k == kind) and (not n or fnmatchcase(name, n))
            for g, k, n in self.ignore
        )


DEFAULT_PROJECT = AppProject(name="default")


def project_where(project: AppProject) -> str:
    """How errors name a project: `<file>: AppProject/<name>` (file omitted when unknown)."""
    return (
        f"{project.file}: AppProject/{project.name}"
        if project.file
        else f"AppProject/{project.name}"
    )


_KEY_ID = re.compile(r"^[0-9A-F]{8}$|^[0-9A-F]{16}$|^[0-9A-F]{40}$")


def normalise_key_id(value: str, *, where: str) -> str:
    """A `signatureKeys` keyID in upper case; ConfigError unless 8, 16 or 40 hex digits."""
    key = value.strip().upper().removeprefix("0X")
    if not _KEY_ID.match(key):
        raise ConfigError(f"{where}: keyID {value!r} is not a GnuPG key ID (16 hex digits)")
    return key
