"""The values one reconcile passes from stage to stage (see `daemon.reconciler`).

source/render -> `Desired`; compare -> `Comparison`; decide -> `SyncRequest`; sync -> `Operation`.
Pure data: nothing here talks to git or the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.model import (
    Body,
    Manifest,
    OperationPhase,
    ResourceKey,
    ResourceResult,
    ResourceType,
    SyncStatus,
)
from daemon.plan.diff import DiffResult
from daemon.plan.options import ignore_extraneous


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A request to sync (from the CLI/API) or the automated policy's decision."""

    revision: str = ""
    prune: bool | None = None
    dry_run: bool = False
    initiated_by: str = "automated"
    self_heal: bool = False
    options: tuple[str, ...] = ()
    retry_count: int = 0
    # Names one operation across restarts: hooks it creates carry it, and an operation resumed
    # after a crash adopts them instead of running them again.
    operation_id: str = ""


@dataclass
class Desired:
    """The rendered, prepared desired state of an app at one revision."""

    revision: str
    revisions: list[str]
    manifests: list[Manifest]
    types: dict[ResourceKey, ResourceType | None]  # None: kind defined by a CRD in this app
    tool: str
    inputs: str = ""  # digest of (spec, every source SHA): what the compare depended on
    warnings: list[str] = field(default_factory=list)  # e.g. identical duplicate resources
    offline: str = ""  # set when a source is unreachable and this is the last good render


@dataclass
class Comparison:
    """Live vs desired for one app: per-resource status, live objects, and dry-run errors."""

    live: dict[ResourceKey, Body]
    owned_extra: dict[ResourceKey, Body]  # owned live objects git no longer has
    status: dict[ResourceKey, SyncStatus]
    diffs: dict[ResourceKey, DiffResult] = field(default_factory=dict)
    errors: dict[ResourceKey, str] = field(default_factory=dict)
    shared: dict[ResourceKey, str] = field(default_factory=dict)
    no_health: set[ResourceKey] = field(default_factory=set)  # no health check (child apps)

    @property
    def sync_status(self) -> SyncStatus:
        if any(s is SyncStatus.OUT_OF_SYNC for s in self.status.values()) or any(
            not ignore_extraneous(body) for body in self.owned_extra.values()
        ):
            return SyncStatus.OUT_OF_SYNC
        return SyncStatus.SYNCED


@dataclass
class Operation:
    """The result of one sync operation."""

    phase: OperationPhase
    message: str
    results: list[ResourceResult]
    started_at: str
    finished_at: str = ""
    revision: str = ""
