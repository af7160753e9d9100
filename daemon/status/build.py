"""Stage 6 of a reconcile: the Argo CD-shaped `status` of an app, from the comparison and the
operation (if one ran). Pure: the clock is read only for timestamps.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from daemon.health.checks import aggregate, assess
from daemon.model import (
    ANN_IGNORE_HEALTHCHECK,
    Body,
    Health,
    HealthStatus,
    Manifest,
    OperationPhase,
    ResourceKey,
    SyncStatus,
    annotations_of,
)
from daemon.plan.options import is_hook, sync_wave
from daemon.settings import Application
from daemon.stages import Comparison, Desired, Operation, SyncRequest


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_status(
    app: Application,
    previous: dict[str, Any],
    desired: Desired,
    comparison: Comparison,
    operation: Operation | None,
    conditions: list[dict[str, str]],
    request: SyncRequest | None,
) -> dict[str, Any]:
    """Argo CD-shaped `status` from the comparison and the operation (if one ran)."""
    resources, app_health = resources_and_health(desired, comparison)
    if comparison.errors:
        conditions.append(
            condition("ComparisonError", "; ".join(sorted(comparison.errors.values())))
        )
    source = compared_source(app)
    status: dict[str, Any] = {
        "sync": {
            "status": str(comparison.sync_status),
            "revision": desired.revision,
            "comparedTo": {
                "source": source,
                "destination": app.raw.get("spec", {}).get("destination", {}),
            },
        },
        "health": {"status": str(app_health.status), "message": app_health.message},
        "resources": resources,
        "conditions": conditions,
        "sourceType": desired.tool,
        "observedAt": now_iso(),
        "history": list(previous.get("history") or []),
        "summary": {"images": sorted(images(desired.manifests))},
    }
    if len(desired.revisions) > 1:
        status["sync"]["revisions"] = desired.revisions
    if operation is not None and request is not None:
        status["operationState"] = operation_state(operation, request, source)
        if operation.phase is OperationPhase.SUCCEEDED and not request.dry_run:
            entry = history_entry(operation, request, source)
            status["history"] = trimmed_history(
                status["history"], entry, app.revision_history_limit
            )
        elif operation.phase is OperationPhase.FAILED:
            conditions.append(condition("SyncError", operation.message))
    elif previous.get("operationState") is not None:
        status["operationState"] = previous["operationState"]
    return status


def resources_and_health(
    desired: Desired, comparison: Comparison
) -> tuple[list[dict[str, Any]], Health]:
    """`status.resources` (desired objects, then prune candidates) and the app's health,
    aggregated over the desired objects that do not opt out of health checks."""
    resources: list[dict[str, Any]] = []
    health_items: list[tuple[ResourceKey, Health | None, bool]] = []
    for m in desired.manifests:
        if is_hook(m.body):
            continue
        body = comparison.live.get(m.key)
        h: Health | None = (
            assess(body)
            if body is not None
            else Health(HealthStatus.MISSING, "resource is missing")
        )
        if annotations_of(m.body).get(ANN_IGNORE_HEALTHCHECK) == "true":
            h = None
        if m.key in comparison.no_health:
            h = None
        health_items.append((m.key, h, body is not None))
        sync = comparison.status.get(m.key)
        resources.append(resource_entry(m.key, m.body, sync, h, requires_pruning=False))
    for key, body in comparison.owned_extra.items():
        resources.append(
            resource_entry(key, body, SyncStatus.OUT_OF_SYNC, assess(body), requires_pruning=True)
        )
    app_health = aggregate(health_items) if health_items else Health(HealthStatus.HEALTHY)
    return resources, app_health


def compared_source(app: Application) -> dict[str, Any]:
    """The source as Argo CD echoes it in `comparedTo` (the document's, else the first)."""
    raw = app.raw.get("spec", {}).get("source")
    if raw:
        return dict(raw)
    src = app.sources[0]
    return {"repoURL": src.repo_url, "path": src.path, "targetRevision": src.target_revision}


def _initiated_by(request: SyncRequest) -> dict[str, Any]:
    return {"username": request.initiated_by, "automated": request.initiated_by == "automated"}


def operation_state(
    operation: Operation, request: SyncRequest, source: dict[str, Any]
) -> dict[str, Any]:
    """Argo CD's `status.operationState` for a finished (or interrupted) operation."""
    return {
        "operation": {
            "sync": {
                "revision": operation.revision,
                "prune": bool(request.prune),
                "dryRun": request.dry_run,
                **({"syncOptions": list(request.options)} if request.options else {}),
            },
            "initiatedBy": _initiated_by(request),
            **({"operationId": request.operation_id} if request.operation_id else {}),
        },
        "phase": str(operation.phase),
        "message": operation.message,
        "syncResult": {
            "resources": [r.to_status() for r in operation.results],
            "revision": operation.revision,
            "source": source,
        },
        "startedAt": operation.started_at,
        "finishedAt": operation.finished_at,
        "retryCount": request.retry_count,
    }


def history_entry(
    operation: Operation, request: SyncRequest, source: dict[str, Any]
) -> dict[str, Any]:
    """One `status.history` entry for a successful sync (its id is set when appended)."""
    return {
        "revision": operation.revision,
        "source": source,
        "deployStartedAt": operation.started_at,
        "deployedAt": operation.finished_at,
        "initiatedBy": _initiated_by(request),
    }


def trimmed_history(
    history: list[dict[str, Any]], entry: dict[str, Any], limit: int
) -> list[dict[str, Any]]:
    """`history` with `entry` appended under the next id, keeping the last `limit` entries."""
    next_id = max((h.get("id", 0) for h in history), default=-1) + 1
    grown = [*history, {"id": next_id, **entry}]
    return grown[-limit:] if limit > 0 else []


def error_status(
    app: Application, previous: dict[str, Any], conditions: list[dict[str, str]]
) -> dict[str, Any]:
    """Status after a failed comparison: keep the last known state, mark it Unknown."""
    status = dict(previous)
    sync = dict(status.get("sync") or {})
    sync["status"] = str(SyncStatus.UNKNOWN)
    status["sync"] = sync
    status.setdefault("health", {"status": str(HealthStatus.UNKNOWN), "message": ""})
    if any("unreachable" in c.get("message", "") for c in conditions):
        # The cluster cannot be asked: its health is as unknown as its sync state.
        status["health"] = {
            "status": str(HealthStatus.UNKNOWN),
            "message": "destination cluster unreachable",
        }
    status["conditions"] = conditions
    return status


def condition(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message, "lastTransitionTime": now_iso()}


def resource_entry(
    key: ResourceKey,
    body: Body,
    sync: SyncStatus | None,
    health: Health | None,
    *,
    requires_pruning: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": key.group,
        "version": str(body.get("apiVersion", "")).rpartition("/")[2],
        "kind": key.kind,
        "namespace": key.namespace,
        "name": key.name,
        "status": str(sync or SyncStatus.UNKNOWN),
        "syncWave": sync_wave(body),
    }
    if health is not None:
        out["health"] = {"status": str(health.status), "message": health.message}
    if requires_pruning:
        out["requiresPruning"] = True
    return out


def images(manifests: Sequence[Manifest]) -> set[str]:
    images: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    for c in v:
                        if isinstance(c, dict) and isinstance(c.get("image"), str):
                            images.add(c["image"])
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for m in manifests:
        walk(m.body.get("spec"))
    return images


def meaningful(record: dict[str, Any]) -> str:
    """A state record without the fields that change on every reconcile."""
    status = {
        k: v
        for k, v in (record.get("status") or {}).items()
        if k not in ("reconciledAt", "observedAt", "reconcileDuration")
    }
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
    ]
    status["conditions"] = conditions
    return json.dumps([status, record.get("fingerprints")], sort_keys=True, default=str)


def application_document(
    app: Application, status: dict[str, Any], *, deleted_at: str = ""
) -> dict[str, Any]:
    """`app` as an Argo CD Application object: what the API returns and what notification
    triggers and templates see. `deleted_at` sets metadata.deletionTimestamp."""
    meta: dict[str, Any] = {
        "name": app.name,
        "namespace": app.namespace,
        "labels": dict(app.labels),
        "annotations": dict(app.annotations),
        "finalizers": list(app.finalizers),
    }
    if deleted_at:
        meta["deletionTimestamp"] = deleted_at
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": meta,
        "spec": app.raw.get("spec", {}),
        "status": status,
    }
