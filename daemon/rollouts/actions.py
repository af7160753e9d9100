"""User operations on a Rollout, as the writes `kubectl argo rollouts` makes (pure).

Each action is one or two JSON merge patches: of the status subresource (promote, abort, retry,
promote --full) or of the spec (pause, restart, undo). The controller sees them on its next
reconcile, exactly as if the kubectl plugin had written them.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Any

from daemon.rollouts.plan import ReplicaSet
from daemon.rollouts.spec import HASH_LABEL, Body

ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume", "undo", "restart")


class ActionError(ValueError):
    """The action cannot be applied to this Rollout as it is."""


@dataclass
class Writes:
    """The patches of one action (None: nothing to write)."""

    status: Body | None = None  # merge patch of the status subresource
    spec: Body | None = None  # merge patch of spec
    template: Body | None = None  # a whole new spec.template (JSON patch replace)
    message: str = ""


def plan_action(
    action: str,
    ro: Body,
    *,
    sets: list[ReplicaSet] | None = None,
    to_revision: int | None = None,
    now: dt.datetime | None = None,
    current_template: Body | None = None,
) -> Writes:
    """The writes of `action` on Rollout `ro` (`sets`: its ReplicaSets, for undo;
    `current_template`: the pod template in force, the workloadRef Deployment's if it has one)."""
    spec: Body = ro.get("spec") or {}
    status: Body = ro.get("status") or {}
    name = (ro.get("metadata") or {}).get("name", "")
    if action in ("promote", "resume"):
        return _promote(ro, spec, status)
    if action == "promote-full":
        out = Writes(status={"promoteFull": True}, message=f"rollout '{name}' fully promoted")
        if spec.get("paused"):
            out.spec = {"paused": False}
        return out
    if action == "abort":
        return Writes(status={"abort": True}, message=f"rollout '{name}' aborted")
    if action == "retry":
        return Writes(status={"abort": False}, message=f"rollout '{name}' retried")
    if action == "pause":
        return Writes(spec={"paused": True}, message=f"rollout '{name}' paused")
    if action == "undo":
        current = current_template if current_template is not None else spec.get("template")
        return _undo(ro, current, sets or [], to_revision)
    if action == "restart":
        at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Writes(spec={"restartAt": at}, message=f"rollout '{name}' restarts pods at {at}")
    raise ActionError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")


def _promote(ro: Body, spec: Body, status: Body) -> Writes:
    """Unpause; clear the pause conditions; on a canary with none (a running analysis step),
    skip to the next step."""
    name = (ro.get("metadata") or {}).get("name", "")
    out = Writes(message=f"rollout '{name}' promoted")
    if spec.get("paused"):
        out.spec = {"paused": False}
    canary = "canary" in (spec.get("strategy") or {})
    if status.get("pauseConditions"):
        out.status = {"pauseConditions": None}
    elif canary:
        steps = (spec.get("strategy") or {}).get("canary", {}).get("steps") or []
        index = int(status.get("currentStepIndex") or 0)
        if index >= len(steps) and out.spec is None:
            raise ActionError(f"rollout '{name}' is not paused and has no step left to skip")
        if index < len(steps):
            out.status = {"pauseConditions": None, "currentStepIndex": index + 1}
    elif out.spec is None:
        raise ActionError(f"rollout '{name}' is not paused")
    return out


def _undo(ro: Body, current: Any, sets: list[ReplicaSet], to_revision: int | None) -> Writes:
    """Put a previous revision's pod template back into spec.template, or the workloadRef
    Deployment's (the second newest revision by default); nothing to do when it is already
    there."""
    name = (ro.get("metadata") or {}).get("name", "")
    ordered = sorted(sets, key=lambda s: s.revision, reverse=True)
    if to_revision:
        target = next((s for s in ordered if s.revision == to_revision), None)
        if target is None:
            raise ActionError(f"rollout '{name}' has no revision {to_revision}")
    else:
        if len(ordered) < 2:
            raise ActionError(f"rollout '{name}' has no previous revision")
        target = ordered[1]
    template = copy.deepcopy(target.template)
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    if template == current:
        return Writes(
            message=f"skipped rollback (current template already matches revision "
            f"{target.revision})"
        )
    return Writes(
        template=template,
        message=f"rollout '{name}' rolled back to revision {target.revision}",
    )
