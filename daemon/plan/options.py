"""Sync options and hook annotations read from manifests, with Argo CD's meaning and defaults.

Sync options come from `spec.syncPolicy.syncOptions` (app level) and the
`argocd.argoproj.io/sync-options` annotation (per resource); hooks, delete policies and waves
come from Argo CD annotations with Helm's hook annotations as the fallback.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.model import (
    ANN_COMPARE_OPTIONS,
    ANN_HELM_HOOK,
    ANN_HELM_HOOK_DELETE_POLICY,
    ANN_HELM_HOOK_WEIGHT,
    ANN_HOOK,
    ANN_HOOK_DELETE_POLICY,
    ANN_SYNC_OPTIONS,
    ANN_SYNC_WAVE,
    Body,
    HookDeletePolicy,
    HookType,
    annotations_of,
)


class RemovalPolicy(enum.StrEnum):
    """Value of the `Prune` and `Delete` options: allowed, never, or only once approved."""

    ALLOW = "true"
    NEVER = "false"
    CONFIRM = "confirm"


class PropagationPolicy(enum.StrEnum):
    """Value of `PrunePropagationPolicy`: how deletion treats a pruned object's dependents."""

    FOREGROUND = "foreground"
    BACKGROUND = "background"
    ORPHAN = "orphan"

    @property
    def api_value(self) -> str:
        """The spelling the Kubernetes DeleteOptions.propagationPolicy field expects."""
        return self.value.capitalize()


_BOOL = ("true", "false")

# Allowed values of every option gitopsd understands; any other key is kept but reported.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "Prune": tuple(RemovalPolicy),
    "Delete": tuple(RemovalPolicy),
    "Validate": _BOOL,
    "ApplyOutOfSyncOnly": _BOOL,
    "PrunePropagationPolicy": tuple(PropagationPolicy),
    "PruneLast": _BOOL,
    "Replace": _BOOL,
    "Force": _BOOL,
    "ServerSideApply": _BOOL,
    "ClientSideApplyMigration": _BOOL,
    "CreateNamespace": _BOOL,
    "RespectIgnoreDifferences": _BOOL,
    "FailOnSharedResource": _BOOL,
    "SkipDryRunOnMissingResource": _BOOL,
}

# Argo CD reads these only from the Application, so a resource annotation must not change them.
APP_ONLY_OPTIONS = frozenset(
    {
        "ApplyOutOfSyncOnly",
        "PrunePropagationPolicy",
        "ClientSideApplyMigration",
        "CreateNamespace",
        "RespectIgnoreDifferences",
        "FailOnSharedResource",
    }
)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Sync options as raw `Key=Value` pairs in first-seen order, validated on construction.

    Each key appears once. Values of known keys must be one of the allowed spellings (exact
    case, as Argo CD matches option strings exactly); unknown keys are kept so callers can warn.
    """

    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for key, value in self.pairs:
            if key in seen:
                raise ValueError(f"sync option {key} is given more than once")
            seen.add(key)
            allowed = _ALLOWED.get(key)
            if allowed is not None and value not in allowed:
                raise ValueError(
                    f"sync option {key}={value} is invalid; allowed values: {', '.join(allowed)}"
                )

    def get(self, key: str) -> str | None:
        """The raw value of `key`, or None when the option is not set."""
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def merged(self, override: SyncOptions) -> SyncOptions:
        """These (app-level) options with `override` (a resource's annotation) taking precedence.

        App-only options in `override` are ignored, as Argo CD ignores them on resources.
        """
        values = dict(self.pairs)
        for key, value in override.pairs:
            if key not in APP_ONLY_OPTIONS:
                values[key] = value
        return SyncOptions(tuple(values.items()))

    def unknown(self) -> tuple[str, ...]:
        """Keys gitopsd does not understand (probably typos), in the order given."""
        return tuple(k for k, _ in self.pairs if k not in _ALLOWED)

    def _flag(self, key: str, *, default: bool) -> bool:
        value = self.get(key)
        return default if value is None else value == "true"

    @property
    def prune(self) -> RemovalPolicy:
        """`Prune`: whether objects gone from git may be deleted (default true)."""
        return RemovalPolicy(self.get("Prune") or RemovalPolicy.ALLOW)

    @property
    def delete(self) -> RemovalPolicy:
        """`Delete`: whether cascade deletion of the app deletes the object (default true)."""
        return RemovalPolicy(self.get("Delete") or RemovalPolicy.ALLOW)

    @property
    def validate(self) -> bool:
        """`Validate`: server-side schema validation on apply (default true)."""
        return self._flag("Validate", default=True)

    @property
    def apply_out_of_sync_only(self) -> bool:
        """`ApplyOutOfSyncOnly`: apply only objects that differ from git (default false)."""
        return self._flag("ApplyOutOfSyncOnly", default=False)

    @property
    def prune_propagation_policy(self) -> PropagationPolicy:
        """`PrunePropagationPolicy`: deletion propagation for prunes (default foreground)."""
        return PropagationPolicy(self.get("PrunePropagationPolicy") or PropagationPolicy.FOREGROUND)

    @property
    def prune_last(self) -> bool:
        """`PruneLast`: prune in an implicit wave after all others (default false)."""
        return self._flag("PruneLast", default=False)

    @property
    def replace(self) -> bool:
        """`Replace`: replace/create instead of apply (default false)."""
        return self._flag("Replace", default=False)

    @property
    def force(self) -> bool:
        """`Force`: delete and re-create when an update is rejected (default false)."""
        return self._flag("Force", default=False)

    @property
    def server_side_apply(self) -> bool:
        """`ServerSideApply`: use server-side apply (default false)."""
        return self._flag("ServerSideApply", default=False)

    @property
    def client_side_apply_migration(self) -> bool:
        """`ClientSideApplyMigration`: migrate client-side apply field ownership (default true)."""
        return self._flag("ClientSideApplyMigration", default=True)

    @property
    def create_namespace(self) -> bool:
        """`CreateNamespace`: create the destination namespace (default false)."""
        return self._flag("CreateNamespace", default=False)

    @property
    def respect_ignore_differences(self) -> bool:
        """`RespectIgnoreDifferences`: keep live values of ignored fields (default false)."""
        return self._flag("RespectIgnoreDifferences", default=False)

    @property
    def fail_on_shared_resource(self) -> bool:
        """`FailOnSharedResource`: fail when another app tracks the object (default false)."""
        return self._flag("FailOnSharedResource", default=False)

    @property
    def skip_dry_run_on_missing_resource(self) -> bool:
        """`SkipDryRunOnMissingResource`: skip dry-run when the kind is unknown (default false)."""
        return self._flag("SkipDryRunOnMissingResource", default=False)


def parse_sync_options(values: Iterable[str]) -> SyncOptions:
    """Parse `Key=Value` strings; empty entries are skipped and exact repeats collapse."""
    parsed: dict[str, str] = {}
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"sync option {text!r} is invalid; expected Key=Value")
        previous = parsed.setdefault(key, value)
        if previous != value:
            raise ValueError(f"sync option {key} is given conflicting values {previous}, {value}")
    return SyncOptions(tuple(parsed.items()))


def resource_sync_options(body: Body) -> SyncOptions:
    """The options in an object's `argocd.argoproj.io/sync-options` annotation."""
    return parse_sync_options(_csv(annotations_of(body).get(ANN_SYNC_OPTIONS, "")))


def live_sync_options(body: Body) -> SyncOptions:
    """Options of a LIVE object, leniently: invalid entries are dropped (as Argo CD ignores
    option strings it does not recognise) so a bad annotation in the cluster never breaks a sync
    or a prune; desired manifests are validated strictly instead."""
    kept: dict[str, str] = {}
    for raw in _csv(annotations_of(body).get(ANN_SYNC_OPTIONS, "")):
        key, sep, value = raw.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or key in kept:
            continue
        allowed = _ALLOWED.get(key)
        if allowed is not None and value not in allowed:
            continue
        kept[key] = value
    return SyncOptions(tuple(kept.items()))


_ARGO_HOOK_TYPES = {t.value: t for t in HookType}

# Helm hooks Argo CD can honour; pre/post-rollback and tests have no equivalent and are dropped.
_HELM_HOOK_TYPES = {
    "pre-install": HookType.PRE_SYNC,
    "pre-upgrade": HookType.PRE_SYNC,
    "post-install": HookType.POST_SYNC,
    "post-upgrade": HookType.POST_SYNC,
    "pre-delete": HookType.PRE_DELETE,
    "post-delete": HookType.POST_DELETE,
}

# Helm 2's crd-install marks an ordinary CRD, not a hook.
_HELM_NOT_A_HOOK = "crd-install"

_ARGO_DELETE_POLICIES = {p.value: p for p in HookDeletePolicy}
_HELM_DELETE_POLICIES = {
    "before-hook-creation": HookDeletePolicy.BEFORE_HOOK_CREATION,
    "hook-succeeded": HookDeletePolicy.HOOK_SUCCEEDED,
    "hook-failed": HookDeletePolicy.HOOK_FAILED,
}

# strconv.Atoi's grammar: Python's int() would also accept spaces, underscores and non-ASCII digits.
_INT = re.compile(r"[+-]?[0-9]+")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def hook_types(body: Body) -> frozenset[HookType]:
    """Recognised hook types; Helm's annotation counts only when no Argo CD type is present."""
    anns = annotations_of(body)
    argo = frozenset(
        _ARGO_HOOK_TYPES[v] for v in _csv(anns.get(ANN_HOOK, "")) if v in _ARGO_HOOK_TYPES
    )
    if argo:
        return argo
    return frozenset(
        _HELM_HOOK_TYPES[v] for v in _csv(anns.get(ANN_HELM_HOOK, "")) if v in _HELM_HOOK_TYPES
    )


def _has_hook_annotation(body: Body) -> bool:
    anns = annotations_of(body)
    if ANN_HOOK in anns:
        return True
    # Like Helm, any value but crd-install (even an empty one) marks a hook.
    return ANN_HELM_HOOK in anns and set(_csv(anns[ANN_HELM_HOOK])) != {_HELM_NOT_A_HOOK}


def is_hook(body: Body) -> bool:
    """True when the object runs as a hook: it has hook types and is not only `Skip`."""
    types = hook_types(body)
    return bool(types) and types != {HookType.SKIP}


def is_skipped(body: Body) -> bool:
    """True when the object is never applied: `Skip`-only, or a hook with no recognised type."""
    types = hook_types(body)
    if types == {HookType.SKIP}:
        return True
    return not types and _has_hook_annotation(body)


def delete_policies(body: Body) -> frozenset[HookDeletePolicy]:
    """A hook's delete policies from both annotations; `BeforeHookCreation` when none is given."""
    anns = annotations_of(body)
    policies = {
        _ARGO_DELETE_POLICIES[v]
        for v in _csv(anns.get(ANN_HOOK_DELETE_POLICY, ""))
        if v in _ARGO_DELETE_POLICIES
    }
    policies.update(
        _HELM_DELETE_POLICIES[v]
        for v in _csv(anns.get(ANN_HELM_HOOK_DELETE_POLICY, ""))
        if v in _HELM_DELETE_POLICIES
    )
    return frozenset(policies or {HookDeletePolicy.BEFORE_HOOK_CREATION})


def sync_wave(body: Body) -> int:
    """The object's wave: `sync-wave`, else `helm.sh/hook-weight`, else 0 (non-integers ignored)."""
    anns = annotations_of(body)
    for key in (ANN_SYNC_WAVE, ANN_HELM_HOOK_WEIGHT):
        text = anns.get(key)
        if text is not None and _INT.fullmatch(text):
            return int(text)
    return 0


def ignore_extraneous(body: Body) -> bool:
    """`argocd.argoproj.io/compare-options: IgnoreExtraneous`: an object git no longer has does
    not make the app OutOfSync (it still requires pruning, and a sync with prune removes it)."""
    options = annotations_of(body).get(ANN_COMPARE_OPTIONS, "")
    return "IgnoreExtraneous" in _csv(options)
