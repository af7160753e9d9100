"""A Helm repository's index.yaml, read as a stream of parser events: only each chart
version's `version`, `digest` and `urls` are kept, so memory follows what resolving needs, not
the size of the file (a 16 MB index: under a second and a few MB, where building the whole
document took seconds and 500 MB). Callers run it in a worker thread, off the event loop.

An index that uses YAML aliases (helm never writes one) is loaded whole instead, with the
node limit that bounds alias bombs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from daemon import yamlio
from daemon.errors import SourceError

Entries = dict[str, list[dict[str, Any]]]  # chart -> [{"version", "digest", "urls"}]

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's event parser: fast
_NULLS = ("", "~", "null", "Null", "NULL")
_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _Aliased(Exception):
    """The index uses an alias: load it whole, within the node limit."""


def read_index(path: Path, *, where: str, max_nodes: int) -> Entries:
    """The chart versions the index file at `path` lists. SourceError naming `where` (the
    repository) when it is not an index."""
    try:
        try:
            with path.open("rb") as f:
                return _entries(yaml.parse(f, Loader=_LOADER))
        except _Aliased:
            return _whole(path.read_bytes().decode(), max_nodes=max_nodes)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SourceError(f"{where}: index.yaml is not valid YAML: {e}") from e
    except _NoEntries:
        raise SourceError(f"{where}: index.yaml has no entries") from None


class _NoEntries(Exception):
    """The document is not a mapping with an `entries` mapping."""


def _next(events: Iterator[Any]) -> Any:
    event = next(events, None)
    if event is None:
        raise _NoEntries
    if isinstance(event, yaml.AliasEvent):
        raise _Aliased
    return event


def _skip(events: Iterator[Any], event: Any) -> None:
    """Consume the node that starts with `event`."""
    depth = 1 if isinstance(event, _START) else 0
    while depth:
        event = _next(events)
        depth += 1 if isinstance(event, _START) else -1 if isinstance(event, _END) else 0


def _pairs(events: Iterator[Any]) -> Iterator[tuple[str, Any]]:
    """(key, first event of the value) of the mapping just opened; the caller consumes each
    value (or skips it) before the next pair."""
    while not isinstance(key := _next(events), yaml.MappingEndEvent):
        if not isinstance(key, yaml.ScalarEvent):
            _skip(events, key)
            _skip(events, _next(events))
            continue
        yield str(key.value), _next(events)


def _entries(events: Iterator[Any]) -> Entries:
    event = _next(events)
    while not isinstance(event, yaml.MappingStartEvent):
        if not isinstance(event, yaml.StreamStartEvent | yaml.DocumentStartEvent):
            raise _NoEntries
        event = _next(events)
    found: Entries | None = None
    for key, value in _pairs(events):
        if key == "entries" and isinstance(value, yaml.MappingStartEvent):
            found = {}
            for chart, versions in _pairs(events):
                found[chart] = _versions(events, versions)
        else:
            _skip(events, value)
    if found is None:
        raise _NoEntries
    return found


def _versions(events: Iterator[Any], first: Any) -> list[dict[str, Any]]:
    if not isinstance(first, yaml.SequenceStartEvent):
        _skip(events, first)
        return []
    out = []
    while not isinstance(item := _next(events), yaml.SequenceEndEvent):
        if not isinstance(item, yaml.MappingStartEvent):
            _skip(events, item)
            continue
        entry: dict[str, Any] = {}
        for key, value in _pairs(events):
            if key in ("version", "digest") and isinstance(value, yaml.ScalarEvent):
                entry[key] = _scalar(value)
            elif key == "urls" and isinstance(value, yaml.SequenceStartEvent):
                urls = []
                while not isinstance(url := _next(events), yaml.SequenceEndEvent):
                    _skip(events, url)
                    if isinstance(url, yaml.ScalarEvent) and _scalar(url):
                        urls.append(url.value)
                entry["urls"] = urls
            else:
                _skip(events, value)
        out.append(entry)
    return out


def _scalar(event: Any) -> str:
    """A scalar's text; "" for a plain null (`digest: null`, `digest: ~`)."""
    plain = event.implicit[0] and not event.style
    return "" if plain and event.value in _NULLS else str(event.value)


def _whole(text: str, *, max_nodes: int) -> Entries:
    index = yamlio.load(text, max_nodes=max_nodes)
    if not isinstance(index, dict) or not isinstance(index.get("entries"), dict):
        raise _NoEntries
    found: Entries = {}
    for chart, versions in index["entries"].items():
        found[str(chart)] = [
            {
                "version": str(e.get("version")),
                "digest": str(e.get("digest") or ""),
                "urls": [str(u) for u in e.get("urls") or []],
            }
            for e in (versions if isinstance(versions, list) else [])
            if isinstance(e, dict)
        ]
    return found
