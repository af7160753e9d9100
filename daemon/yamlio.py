"""YAML reading with libyaml when present; `safe_load` semantics always.

Aliases are bounded: a document whose anchors and aliases would expand to more than
`max_nodes` nodes (a "billion laughs" bomb: a few hundred bytes that expand to gigabytes) is
refused before it is built, by counting the expansion over the parser's events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


DEFAULT_MAX_NODES = 1_000_000


class ExpansionError(yaml.YAMLError):
    """The YAML would expand past the node limit through its aliases."""

    def __init__(self, limit: int, line: int) -> None:
        super().__init__(
            f"aliases expand this YAML past {limit} nodes by line {line} "
            "(an alias bomb?); raise settings.maxYamlNodes if it is real"
        )
        self.problem = str(self)
        self.problem_mark = yaml.Mark("", 0, line - 1, 0, "", 0)


def check_expansion(text: str, *, max_nodes: int = DEFAULT_MAX_NODES) -> int:
    """Raise ExpansionError when the documents of `text`, aliases expanded, hold more than
    `max_nodes` nodes in all; else the expanded node count (0 when `text` has no alias, which
    is not scanned: without aliases the size of the text bounds the documents)."""
    if "*" not in text:
        return 0
    sizes: dict[str, int] = {}  # anchor -> expanded size of its node
    frames: list[list[Any]] = [[None, 0]]  # [anchor, size] of each open collection
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            frames.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            anchor, size = frames.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(str(event.anchor), 1)
        else:
            continue
        if anchor is not None:
            sizes[str(anchor)] = size
        frames[-1][1] += size
        if sum(f[1] for f in frames) > max_nodes:
            mark = event.start_mark
            raise ExpansionError(max_nodes, mark.line + 1 if mark is not None else 0)
    return int(frames[0][1])


def load_all(text: str, *, max_nodes: int | None = DEFAULT_MAX_NODES) -> Iterator[Any]:
    """Yield every document of a multi-document YAML string (None for empty ones);
    `max_nodes=None` when the caller already ran `check_expansion`."""
    if max_nodes is not None:
        check_expansion(text, max_nodes=max_nodes)
    yield from yaml.load_all(text, Loader=_Loader)


def load(text: str, *, max_nodes: int = DEFAULT_MAX_NODES) -> Any:
    """Load one YAML document."""
    check_expansion(text, max_nodes=max_nodes)
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
