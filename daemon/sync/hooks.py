"""Resource hooks (PreSync, Sync, PostSync, SyncFail) in a sync operation: naming `generateName`
hooks, replacing them under `BeforeHookCreation`, holding them with Argo CD's hook finalizer while
the operation runs, and deleting them by their delete policy when it ends.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import structlog

from daemon.apply import HOOK_FINALIZER, apply_one
from daemon.errors import KubeError
from daemon.kube import KubeClient
from daemon.model import Body, HookDeletePolicy, ResourceKey, ResourceResult, ResourceType
from daemon.plan.options import SyncOptions, delete_policies
from daemon.plan.order import SyncTask

log = structlog.get_logger("gitopsd.sync")

REPLACE_POLLS = 120  # x 0.5 s: how long a replaced hook may take to disappear


@dataclass(frozen=True, slots=True)
class CreatedHook:
    """A hook object this operation created (cleaned up when the operation ends)."""

    key: ResourceKey
    type: ResourceType
    body: Body


def hook_body(task: SyncTask, *, revision: str, run_stamp: str) -> Body:
    """The object to create for a hook task: `generateName` resolved to a name unique to this
    revision, phase and run, and the hook finalizer added so it outlives nothing unnoticed."""
    assert task.target is not None
    body = copy.deepcopy(task.target)
    meta = body["metadata"]
    if not meta.get("name"):
        suffix = f"{revision[:7]}-{str(task.phase).lower()}-{run_stamp}"
        meta["name"] = (str(meta.pop("generateName")) + suffix).lower()[:253]
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
    revision: str,
    run_stamp: str,
    created: list[CreatedHook],
) -> ResourceResult:
    """Create one hook (replacing a previous one under BeforeHookCreation)."""
    body = hook_body(task, revision=revision, run_stamp=run_stamp)
    key = ResourceKey.of(body)
    existing = await client.get(rt, key.namespace, key.name)
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
