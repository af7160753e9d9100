"""Resource hooks (PreSync, Sync, PostSync, SyncFail) in a sync operation: naming `generateName`
hooks, replacing them under `BeforeHookCreation`, holding them with Argo CD's hook finalizer while
the operation runs, and deleting them by their delete policy when it ends.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import anyio
import structlog

from daemon.apply import HOOK_FINALIZER, apply_one
from daemon.errors import KubeError
from daemon.kube import KubeClient
from daemon.model import (
    Action,
    Body,
    HookDeletePolicy,
    ResourceKey,
    ResourceResult,
    ResourceType,
    ResultCode,
)
from daemon.plan.options import SyncOptions, delete_policies, is_hook
from daemon.plan.order import SyncTask
from daemon.plan.tracking import is_label_value
from daemon.stages import Desired

log = structlog.get_logger("gitopsd.sync")

REPLACE_POLLS = 120  # x 0.5 s: how long a replaced hook may take to disappear
ANN_OPERATION = "gitopsd.io/operation"  # the operation that created a hook
LABEL_HOOK_OF = "gitopsd.io/hook-of"  # the app a hook belongs to (selectable)


def hook_label(app: str) -> str:
    """The app's name as a label value (a digest when the name does not fit one)."""
    if is_label_value(app):
        return app
    return "h-" + hashlib.sha256(app.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class CreatedHook:
    """A hook object this operation created (cleaned up when the operation ends)."""

    key: ResourceKey
    type: ResourceType
    body: Body


def hook_body(
    task: SyncTask, *, app: str, revision: str, run_stamp: str, operation_id: str = ""
) -> Body:
    """The object to create for a hook task: `generateName` resolved to a name unique to this
    revision, phase and operation (the same again when the operation resumes after a crash),
    marked with its app and operation, and the hook finalizer added so that it cannot vanish
    before the operation has seen its outcome."""
    assert task.target is not None
    body = copy.deepcopy(task.target)
    meta = body["metadata"]
    if not meta.get("name"):
        suffix = f"{revision[:7]}-{str(task.phase).lower()}-{run_stamp}"
        meta["name"] = (str(meta.pop("generateName")) + suffix).lower()[:253]
    meta["labels"] = {**(meta.get("labels") or {}), LABEL_HOOK_OF: hook_label(app)}
    if operation_id:
        meta["annotations"] = {**(meta.get("annotations") or {}), ANN_OPERATION: operation_id}
    meta.setdefault("finalizers", [])
    if HOOK_FINALIZER not in meta["finalizers"]:
        meta["finalizers"].append(HOOK_FINALIZER)
    return body


async def run_hook(
    client: KubeClient,
    rt: ResourceType,
    task: SyncTask,
    opts: SyncOptions,
    *,
    app: str,
    revision: str,
    run_stamp: str,
    created: list[CreatedHook],
    operation_id: str = "",
) -> ResourceResult:
    """Create one hook (replacing a previous one under BeforeHookCreation), or adopt the one
    this same operation created before a restart: a hook never runs twice in one operation."""
    body = hook_body(
        task, app=app, revision=revision, run_stamp=run_stamp, operation_id=operation_id
    )
    key = ResourceKey.of(body)
    existing = await client.get(rt, key.namespace, key.name)
    if existing is not None and operation_id and _operation_of(existing) == operation_id:
        created.append(CreatedHook(key, rt, body))
        return ResourceResult(
            key,
            str(existing.get("apiVersion", "")).rpartition("/")[2],
            Action.UNCHANGED,
            ResultCode.SYNCED,
            f"{key.kind.lower()}/{key.name} already created by this operation (adopted)",
            task.phase,
            task.wave,
            task.hook_type,
            existing,
        )
    if existing is not None and HookDeletePolicy.BEFORE_HOOK_CREATION in delete_policies(body):
        await remove_finalizer(client, rt, key)
        await client.delete(rt, key.namespace, key.name, propagation="Background")
        for _ in range(REPLACE_POLLS):
            if await client.get(rt, key.namespace, key.name) is None:
                break
            await anyio.sleep(0.5)
        existing = None
    hook_task = SyncTask(key, task.phase, task.wave, body, None, True, task.hook_type)
    result = await apply_one(client, rt, hook_task, options=opts, existed=existing is not None)
    if not result.failed:
        created.append(CreatedHook(key, rt, body))
    return result


async def remove_finalizer(client: KubeClient, rt: ResourceType, key: ResourceKey) -> None:
    """Drop Argo CD's hook finalizer from a hook (compare-and-swap on resourceVersion)."""
    live = await client.get(rt, key.namespace, key.name)
    if live is None:
        return
    finalizers = list((live.get("metadata") or {}).get("finalizers") or [])
    if HOOK_FINALIZER not in finalizers:
        return
    finalizers.remove(HOOK_FINALIZER)
    patch = {
        "metadata": {
            "finalizers": finalizers or None,
            "resourceVersion": live["metadata"]["resourceVersion"],
        }
    }
    await client.patch_merge(rt, key.namespace, key.name, patch)


def _operation_of(body: Body) -> str:
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(ANN_OPERATION, ""))


def hook_places(desired: Desired) -> set[tuple[ResourceType, str]]:
    """(type, namespace) of every hook the app renders: where its hooks can be found."""
    return {
        (rt, m.key.namespace)
        for m in desired.manifests
        if is_hook(m.body) and (rt := desired.types.get(m.key)) is not None
    }


async def release_stale(
    client: KubeClient,
    app: str,
    places: Iterable[tuple[ResourceType, str]],
    *,
    keep: str = "",
) -> list[ResourceKey]:
    """Drop the hook finalizer from every hook of `app` that an earlier operation (one killed
    before it could clean up) left behind; hooks of operation `keep` are left to it. Returns
    the hooks released."""
    released = []
    for rt, namespace in places:
        try:
            items, _ = await client.list(
                rt, namespace, label_selector=f"{LABEL_HOOK_OF}={hook_label(app)}"
            )
            for item in items:
                meta = item.get("metadata") or {}
                if HOOK_FINALIZER in (meta.get("finalizers") or []) and (
                    not keep or _operation_of(item) != keep
                ):
                    key = ResourceKey(rt.group, rt.kind, namespace, str(meta.get("name")))
                    await remove_finalizer(client, rt, key)
                    released.append(key)
        except KubeError as e:
            log.warning("stale hooks not released", app=app, kind=rt.kind, error=str(e))
    if released:
        log.info("released hooks left by an earlier operation", app=app, hooks=len(released))
    return released


def should_delete(body: Body, *, succeeded: bool) -> bool:
    """Whether a hook's delete policy asks for deletion after this outcome."""
    policies = delete_policies(body)
    if succeeded:
        return HookDeletePolicy.HOOK_SUCCEEDED in policies
    return HookDeletePolicy.HOOK_FAILED in policies


async def cleanup(client: KubeClient, hooks: Sequence[CreatedHook], *, succeeded: bool) -> None:
    """Drop hook finalizers; delete hooks whose delete policy matches the outcome."""
    for hook in hooks:
        try:
            await remove_finalizer(client, hook.type, hook.key)
            if should_delete(hook.body, succeeded=succeeded):
                await client.delete(
                    hook.type, hook.key.namespace, hook.key.name, propagation="Background"
                )
        except KubeError as e:
            log.warning("hook cleanup failed", resource=str(hook.key), error=str(e))
