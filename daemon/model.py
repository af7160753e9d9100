"""The data gitopsd's pipeline passes between stages: identities, manifests, health and results.

Everything here is pure and immutable; manifest bodies are the only untyped dicts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

ANN_SYNC_WAVE = "argocd.argoproj.io/sync-wave"
ANN_HOOK = "argocd.argoproj.io/hook"
ANN_HOOK_DELETE_POLICY = "argocd.argoproj.io/hook-delete-policy"
ANN_SYNC_OPTIONS = "argocd.argoproj.io/sync-options"
ANN_COMPARE_OPTIONS = "argocd.argoproj.io/compare-options"
ANN_TRACKING_ID = "argocd.argoproj.io/tracking-id"
ANN_IGNORE_HEALTHCHECK = "argocd.argoproj.io/ignore-healthcheck"
ANN_HELM_HOOK = "helm.sh/hook"
ANN_HELM_HOOK_WEIGHT = "helm.sh/hook-weight"
ANN_HELM_HOOK_DELETE_POLICY = "helm.sh/hook-delete-policy"
ANN_HELM_RESOURCE_POLICY = "helm.sh/resource-policy"

Body = dict[str, Any]


class HealthStatus(enum.StrEnum):
    """Argo CD health values; `WORST_FIRST` orders them for aggregation."""

    HEALTHY = "Healthy"
    SUSPENDED = "Suspended"
    PROGRESSING = "Progressing"
    MISSING = "Missing"
    DEGRADED = "Degraded"
    UNKNOWN = "Unknown"

    @property
    def rank(self) -> int:
        """Position in Argo CD's healthOrder (higher is worse)."""
        return _HEALTH_ORDER.index(self)

    def is_worse(self, other: HealthStatus) -> bool:
        """True when this status is worse than `other`."""
        return self.rank > other.rank


_HEALTH_ORDER = [
    HealthStatus.HEALTHY,
    HealthStatus.SUSPENDED,
    HealthStatus.PROGRESSING,
    HealthStatus.MISSING,
    HealthStatus.DEGRADED,
    HealthStatus.UNKNOWN,
]


class SyncStatus(enum.StrEnum):
    """Whether live matches git."""

    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class SyncPhase(enum.StrEnum):
    """Sync phases in execution order (hooks run in PreSync/PostSync/SyncFail)."""

    PRE_SYNC = "PreSync"
    SYNC = "Sync"
    POST_SYNC = "PostSync"
    SYNC_FAIL = "SyncFail"

    @property
    def order(self) -> int:
        """Sort position of the phase."""
        return _PHASE_ORDER[self]


_PHASE_ORDER = {
    SyncPhase.PRE_SYNC: -1,
    SyncPhase.SYNC: 0,
    SyncPhase.POST_SYNC: 1,
    SyncPhase.SYNC_FAIL: 2,
}


class HookType(enum.StrEnum):
    """Argo CD hook types (PreDelete/PostDelete only run on app deletion)."""

    PRE_SYNC = "PreSync"
    SYNC = "Sync"
    POST_SYNC = "PostSync"
    SYNC_FAIL = "SyncFail"
    SKIP = "Skip"
    PRE_DELETE = "PreDelete"
    POST_DELETE = "PostDelete"


class HookDeletePolicy(enum.StrEnum):
    """When a hook object is deleted."""

    HOOK_SUCCEEDED = "HookSucceeded"
    HOOK_FAILED = "HookFailed"
    BEFORE_HOOK_CREATION = "BeforeHookCreation"


class ResultCode(enum.StrEnum):
    """Per-resource outcome of a sync, as in Argo CD's syncResult.resources[].status."""

    SYNCED = "Synced"
    SYNC_FAILED = "SyncFailed"
    PRUNED = "Pruned"
    PRUNE_SKIPPED = "PruneSkipped"


class Action(enum.StrEnum):
    """What the apply stage did to one object."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"


class OperationPhase(enum.StrEnum):
    """Phase of a sync operation."""

    RUNNING = "Running"
    TERMINATING = "Terminating"
    FAILED = "Failed"
    ERROR = "Error"
    SUCCEEDED = "Succeeded"


@dataclass(frozen=True, slots=True, order=True)
class ResourceKey:
    """Identity of one Kubernetes object: group, kind, namespace ('' if cluster-scoped), name."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    @classmethod
    def of(cls, body: Body) -> ResourceKey:
        """Key of a manifest or live object body."""
        api_version = str(body.get("apiVersion", ""))
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        meta = body.get("metadata") or {}
        return cls(
            group=group,
            kind=str(body.get("kind", "")),
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
        )


@dataclass(frozen=True, slots=True)
class Health:
    """Health of one object (or of an app)."""

    status: HealthStatus
    message: str = ""


@dataclass(frozen=True, slots=True)
class Manifest:
    """One rendered desired object with where it came from."""

    key: ResourceKey
    body: Body = field(compare=False, hash=False)
    source: str = ""

    @property
    def api_version(self) -> str:
        """The manifest's apiVersion."""
        return str(self.body.get("apiVersion", ""))

    @property
    def annotations(self) -> dict[str, str]:
        """The manifest's annotations (empty dict when none)."""
        meta = self.body.get("metadata") or {}
        anns = meta.get("annotations") or {}
        return {str(k): str(v) for k, v in anns.items()}


def annotations_of(body: Body) -> dict[str, str]:
    """Annotations of any object body."""
    meta = body.get("metadata") or {}
    anns = meta.get("annotations") or {}
    return {str(k): str(v) for k, v in anns.items()}


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One API resource: how a kind is addressed."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


@dataclass(frozen=True, slots=True)
class ResourceResult:
    """Outcome of one task, shaped like Argo CD's syncResult.resources[]."""

    key: ResourceKey
    version: str
    action: Action
    status: ResultCode
    message: str
    phase: SyncPhase
    wave: int
    hook_type: HookType | None = None
    live: Body | None = field(default=None, compare=False, hash=False)

    @property
    def failed(self) -> bool:
        return self.status is ResultCode.SYNC_FAILED

    def to_status(self) -> dict[str, object]:
        out: dict[str, object] = {
            "group": self.key.group,
            "version": self.version,
            "kind": self.key.kind,
            "namespace": self.key.namespace,
            "name": self.key.name,
            "status": str(self.status),
            "message": self.message,
            "syncPhase": str(self.phase),
            "syncWave": self.wave,
            "action": str(self.action),
        }
        if self.hook_type is not None:
            out["hookType"] = str(self.hook_type)
        return out
