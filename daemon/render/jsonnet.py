"""Jsonnet in directory sources, as Argo CD evaluates it: every `*.jsonnet` file of the directory
(`*.libsonnet` only imported), with `directory.jsonnet.extVars`, `tlas` (`code: true` for Jsonnet
code instead of a string) and `libs` (library folders, relative to the repository root).

Evaluated by go-jsonnet (`gojsonnet`, the implementation Argo CD uses) in a worker process, so a
runaway program is killed at the render timeout instead of hanging or exhausting the daemon.
Imports are confined to the repository.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process

from daemon.errors import RenderError

MAX_STACK = 500  # go-jsonnet's default; deep recursion fails fast instead of growing


def options(raw: Mapping[str, Any] | None, *, root: Path) -> dict[str, Any]:
    """`directory.jsonnet` as evaluator arguments; errors name the field."""
    raw = raw or {}
    args: dict[str, Any] = {"ext_vars": {}, "ext_codes": {}, "tla_vars": {}, "tla_codes": {}}
    for field, plain, code in (
        ("extVars", "ext_vars", "ext_codes"),
        ("tlas", "tla_vars", "tla_codes"),
    ):
        for i, item in enumerate(raw.get(field) or []):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RenderError(f"directory.jsonnet.{field}[{i}]: needs a name and a value")
            target = code if item.get("code") else plain
            args[target][item["name"]] = str(item.get("value", ""))
    libs = []
    for i, lib in enumerate(raw.get("libs") or []):
        path = (root / str(lib)).resolve()
        if not str(path).startswith(str(root.resolve()) + os.sep) and path != root.resolve():
            raise RenderError(f"directory.jsonnet.libs[{i}]: {lib!r} is outside the repository")
        libs.append(str(path))
    args["libs"] = libs
    return args


def evaluate(path: str, root: str, args: dict[str, Any]) -> str:
    """Evaluate one file (in a worker process); imports must stay inside `root`."""
    import _gojsonnet

    real_root = os.path.realpath(root)

    def confined(base: str, rel: str) -> tuple[str, bytes]:
        candidates = [os.path.join(base, rel)] + [os.path.join(lib, rel) for lib in args["libs"]]
        for candidate in candidates:
            real = os.path.realpath(candidate)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise RuntimeError(f"import {rel!r} is outside the repository")
            if os.path.isfile(real):
                with open(real, "rb") as f:
                    return candidate, f.read()
        raise RuntimeError(f"import {rel!r} not found")

    try:
        result: str = _gojsonnet.evaluate_file(
            path,
            max_stack=MAX_STACK,
            ext_vars=args["ext_vars"],
            ext_codes=args["ext_codes"],
            tla_vars=args["tla_vars"],
            tla_codes=args["tla_codes"],
            import_callback=confined,
        )
    except UnicodeDecodeError as e:
        # gojsonnet 0.22 appends stray bytes to importer errors; keep the readable message.
        raw = e.object if isinstance(e.object, bytes) else bytes(e.object)
        text = raw.decode("utf-8", "replace")
        raise RuntimeError(re.sub(r"[^\x20-\x7e\n\t]", "", text)) from None
    return result


def objects(value: Any, *, source: str) -> Iterator[dict[str, Any]]:
    """Kubernetes objects in a Jsonnet result: an object, an array (nested arrays flattened),
    or a `*List` object's items."""
    if isinstance(value, list):
        for item in value:
            yield from objects(item, source=source)
    elif isinstance(value, dict):
        kind = value.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(value.get("items"), list):
            yield from objects(value["items"], source=source)
        else:
            yield value
    else:
        raise RenderError(f"{source}: Jsonnet produced {type(value).__name__}, not objects")


async def render_file(
    path: Path, *, root: Path, rel: str, args: dict[str, Any], timeout: float, max_bytes: int
) -> list[dict[str, Any]]:
    """The objects one `.jsonnet` file evaluates to; errors name the file."""
    try:
        with anyio.fail_after(timeout):
            text = await anyio.to_process.run_sync(
                evaluate, str(path), str(root), args, cancellable=True
            )
    except TimeoutError:
        raise RenderError(f"{rel}: Jsonnet evaluation took longer than {timeout:g}s") from None
    except RuntimeError as e:
        message = str(e).replace(str(root.resolve()) + os.sep, "").replace(str(root) + os.sep, "")
        raise RenderError(f"{rel}: Jsonnet error: {message.strip()}") from None
    if len(text) > max_bytes:
        raise RenderError(f"{rel}: Jsonnet output exceeds the size limit of {max_bytes} bytes")
    return list(objects(json.loads(text), source=rel))
