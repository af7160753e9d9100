"""YAML reading with libyaml when present; `safe_load` semantics always."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_all(text: str) -> Iterator[Any]:
    """Yield every document of a multi-document YAML string (None for empty ones)."""
    yield from yaml.load_all(text, Loader=_Loader)


def load(text: str) -> Any:
    """Load one YAML document."""
    return yaml.load(text, Loader=_Loader)


def dump(obj: Any) -> str:
    """Block-style YAML with keys in their given order."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def dump_all(objs: list[Any]) -> str:
    """Multi-document YAML."""
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def error_line(exc: yaml.YAMLError) -> int | None:
    """1-based line of a YAML error, when the parser knows it."""
    mark = getattr(exc, "problem_mark", None)
    return None if mark is None else int(mark.line) + 1
