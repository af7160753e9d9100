"""The input side of `gitopsd import argocd`: YAML files -> labelled documents of plain data,
and typed reads of their fields. Backup files are hostile input: every wrong type is a
ConfigError naming the file, the document (its index, and its kind/name once known) and the
field, never a traceback.

Pure: text in, documents out.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import yaml

from daemon import yamlio
from daemon.errors import ConfigError

_MAX_DEPTH = 100


def type_name(value: Any) -> str:
    """How an error names the type it found."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)  # as Kubernetes reads YAML: `1: x` -> "1", `true: x` -> "true"
    raise ConfigError(f"{where}: a key is {type_name(key)}, not a string")


def plain(value: Any, where: str, *, depth: int = 0, path: tuple[int, ...] = ()) -> Any:
    """A copy of `value` as JSON data (what the Kubernetes API holds): string keys, dates as
    ISO text; sets, binary, self-referencing aliases and runaway nesting are refused."""
    if depth > _MAX_DEPTH:
        raise ConfigError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, dict | list):
        if id(value) in path:
            raise ConfigError(f"{where}: a YAML alias refers to a node that contains it")
        inner = (*path, id(value))
        if isinstance(value, list):
            return [
                plain(v, f"{where}[{i}]", depth=depth + 1, path=inner) for i, v in enumerate(value)
            ]
        return {
            _key(k, where): plain(v, f"{where}.{k}", depth=depth + 1, path=inner)
            for k, v in value.items()
        }
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise ConfigError(f"{where}: {type_name(value)} is not Kubernetes data (JSON types only)")


def read_documents(file: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects of one input file, Lists flattened, each labelled `FILE document N`
    (`... items[I]` inside a List); empty documents are skipped."""
    try:
        docs = list(yamlio.load_all(text))
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=file) from e
    except RecursionError as e:
        raise ConfigError("invalid YAML: nested too deeply", file=file) from e
    out: list[tuple[str, dict[str, Any]]] = []
    for i, doc in enumerate(docs, 1):
        where = f"{file} document {i}"
        if doc is None:
            continue
        doc = plain(doc, where)
        if not isinstance(doc, dict):
            raise ConfigError(
                f"{where}: expected a Kubernetes object or List, got {type_name(doc)}"
            )
        kind = kind_of(doc, where)
        if not kind.endswith("List"):
            out.append((where, doc))
            continue
        items = doc.get("items")
        if items is None:
            continue
        if not isinstance(items, list):
            raise ConfigError(f"{where} ({kind}): items must be a list, not {type_name(items)}")
        for j, item in enumerate(items):
            at = f"{where} items[{j}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{at}: expected a Kubernetes object, got {type_name(item)}")
            kind_of(item, at)
            out.append((at, item))
    return out


def kind_of(doc: dict[str, Any], where: str) -> str:
    """The document's kind ("" when absent)."""
    kind = doc.get("kind")
    if kind is None:
        return ""
    if not isinstance(kind, str):
        raise ConfigError(f"{where}: kind must be a string, not {type_name(kind)} ({kind!r})")
    return kind


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A mapping field (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type_name(value)}")
    return value


def text(value: Any, where: str) -> str:
    """A string field (absent or null: empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type_name(value)}")
    return value


def scalar_text(value: Any, where: str) -> str:
    """A string field that YAML may have typed as a number or boolean (`port: 22`)."""
    if isinstance(value, dict | list):
        raise ConfigError(f"{where}: expected a string, got {type_name(value)}")
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def strings(value: Any, where: str) -> dict[str, str]:
    """A mapping of strings (labels, annotations, ConfigMap data)."""
    return {k: scalar_text(v, f"{where}.{k}") for k, v in mapping(value, where).items()}


def string_list(value: Any, where: str) -> list[str]:
    """A list of strings (absent or null: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {type_name(value)}")
    return [text(v, f"{where}[{i}]") for i, v in enumerate(value)]


def flag(value: Any, where: str) -> bool:
    """A boolean field (absent or null: false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {type_name(value)}")
    return value
