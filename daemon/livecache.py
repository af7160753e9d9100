"""The live objects the drift watches already hold, kept so a compare can read them instead of
LISTing a whole namespace per app (the LIST-per-compare made a cold start of many apps sharing a
namespace cost O(apps x objects) decoded items; an informer is how Argo CD and Flux avoid it).

A scope (one type in one namespace, or cluster-wide) is readable only while its watch is
established: listed and streaming. Objects are held as compact JSON, decoded only when a compare
asks for them (a reader always gets its own copy, and memory stays near the wire size).

Read-your-writes: the watch lags the API server by a few milliseconds, and a compare right after
gitopsd's own apply must see that apply. Every write the client makes is recorded with the
resourceVersion the server answered; a cached object older than gitopsd's last write of it (or
still present after gitopsd deleted it, or absent after gitopsd created it) is reported stale,
and the caller reads it from the API server. Writes by others are seen as the watch delivers
them, as Argo CD's cluster cache sees them; each such event also triggers a compare of its app.

Pure bookkeeping: the watches (runner) fill it, the client (kube) records writes into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from daemon.model import ANN_TRACKING_ID, Body
from daemon.plan.tracking import LABEL_INSTANCE

Scope = tuple[str, str, str]  # (group, kind, namespace or "" for cluster-scoped types)


@dataclass(frozen=True)
class Write:
    """gitopsd's last write of one object: the resourceVersion the server answered, and whether
    the object is gone after it (a delete that needed no finalizer)."""

    rv: str
    gone: bool
    deleted: bool = False  # it was a delete (gone now, or held by finalizers)


@dataclass
class _Entry:
    rv: str
    raw: bytes
    hints: tuple[str, ...]  # app names the object's tracking label / annotation mention


@dataclass
class _Scope:
    api_version: str
    readable: bool = False
    entries: dict[str, _Entry] = field(default_factory=dict)  # name -> entry
    by_app: dict[str, set[str]] = field(default_factory=dict)  # hint -> names


@dataclass(frozen=True)
class Read:
    """What the cache answers for one scope: decoded objects by name, and the names that must
    be read from the API server instead (gitopsd wrote them after the cache last saw them)."""

    objects: dict[str, Body]
    stale: frozenset[str]


def _older(cached: str, written: str) -> bool:
    """True unless `cached` is known to be at least as new as `written`. resourceVersions are
    etcd revisions (integers) on every real API server; anything else counts as older, which
    only costs a read."""
    try:
        return int(cached) < int(written)
    except ValueError:
        return cached != written


def _newer(seen: str, written: str) -> bool:
    """True when `seen` is known to be newer than `written` ("" after a delete that found
    nothing: any object seen since is a later one)."""
    if not written:
        return True
    try:
        return int(seen) > int(written)
    except ValueError:
        return False


def _hints(obj: Body) -> tuple[str, ...]:
    meta = obj.get("metadata") or {}
    out = []
    label = (meta.get("labels") or {}).get(LABEL_INSTANCE)
    if isinstance(label, str) and label:
        out.append(label)
    tid = (meta.get("annotations") or {}).get(ANN_TRACKING_ID)
    if isinstance(tid, str) and ":" in tid:
        out.append(tid.split(":", 1)[0])
    return tuple(out)


class LiveCache:
    """Objects of the watched scopes of one cluster, and gitopsd's writes into those scopes."""

    def __init__(self) -> None:
        self._scopes: dict[Scope, _Scope] = {}
        self._writes: dict[tuple[str, str, str, str], Write] = {}  # (group, kind, ns, name)
        self.hits = 0  # objects answered from the cache (read by benchmarks and tests)
        self.misses = 0  # objects the caller had to read itself (stale)

    def sizes(self) -> tuple[int, int]:
        """(API resource types with a readable scope, objects held): Argo CD's
        argocd_cluster_api_resources and argocd_cluster_api_resource_objects."""
        readable = [(scope, s) for scope, s in self._scopes.items() if s.readable]
        types = {(g, k) for (g, k, _), _ in readable}
        return len(types), sum(len(s.entries) for _, s in readable)

    def untracked(self, namespace: str) -> list[tuple[str, str, Body]] | None:
        """Objects in `namespace` (of the watched types) that carry no app's tracking label
        or annotation and have no owner: Argo CD's orphaned-resource candidates. None when
        no scope of that namespace is readable."""
        scopes = [
            (g, k, s) for (g, k, ns), s in self._scopes.items() if ns == namespace and s.readable
        ]
        if not scopes:
            return None
        out = []
        for group, kind, s in scopes:
            for entry in s.entries.values():
                if entry.hints:
                    continue
                obj = json.loads(entry.raw)
                if not (obj.get("metadata") or {}).get("ownerReferences"):
                    out.append((group, kind, obj))
        return out

    # --- fed by the watches -------------------------------------------------------------------

    def open(self, scope: Scope, api_version: str) -> object:
        """A watch of `scope` starts (before its LIST): writes into it are recorded from now.
        Returns the handle its `close` takes (a watch ending late does not close its
        successor's scope)."""
        s = self._scopes[scope] = _Scope(api_version)
        return s

    def fill(self, scope: Scope, items: list[Body]) -> None:
        """The watch's LIST: the scope holds exactly `items` and is readable."""
        s = self._scopes.get(scope)
        if s is None:
            return
        s.entries.clear()
        s.by_app.clear()
        for obj in items:
            self._put(scope, s, obj)
        s.readable = True

    def event(self, scope: Scope, obj: Body, *, deleted: bool) -> bool:
        """A watch event for `scope`. True when it is the echo of gitopsd's own last write
        (the version its write produced, or the removal it asked for): nothing anyone else
        did, so nothing to react to."""
        s = self._scopes.get(scope)
        if s is None:
            return False
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        write = self._writes.get((*scope, name))
        if deleted:
            self._drop(s, name)
            self._writes.pop((*scope, name), None)  # whatever gitopsd wrote last, it is gone
            return write is not None and write.deleted
        self._put(scope, s, obj)
        rv = str(meta.get("resourceVersion", ""))
        return write is not None and not write.gone and bool(rv) and rv == write.rv

    def lost(self, scope: Scope) -> None:
        """The watch broke: events may be missing until it lists again."""
        s = self._scopes.get(scope)
        if s is not None:
            s.readable = False

    def close(self, scope: Scope, handle: object) -> None:
        """The watch that opened `handle` ended for good: forget the scope and the writes
        recorded into it."""
        if self._scopes.get(scope) is not handle:
            return
        del self._scopes[scope]
        group, kind, ns = scope
        for key in [k for k in self._writes if k[:2] == (group, kind) and (not ns or k[2] == ns)]:
            del self._writes[key]

    # --- fed by the client ------------------------------------------------------------------

    def wrote(
        self, group: str, kind: str, ns: str, name: str, body: Body | None, *, delete: bool = False
    ) -> None:
        """gitopsd wrote an object (`delete`: deleted it); `body` is the server's answer (None
        when a delete found nothing). Only writes into scopes being watched are kept: a scope
        listed later already includes them."""
        if (group, kind, ns) not in self._scopes:
            return
        meta = (body or {}).get("metadata") or {}
        # A delete answers with a Status, or with the object: still there while finalizers
        # (foreground deletion's included) hold it, gone when it had none.
        gone = delete and (
            body is None or body.get("kind") == "Status" or not meta.get("finalizers")
        )
        self._writes[(group, kind, ns, name)] = Write(
            str(meta.get("resourceVersion", "")), gone, delete
        )

    # --- read by compares -------------------------------------------------------------------

    def read(
        self, group: str, kind: str, api_version: str, ns: str, names: set[str], app: str
    ) -> Read | None:
        """The objects of one scope named in `names`, plus those whose tracking label or
        annotation mentions `app` (candidates: the caller checks ownership exactly). None when
        the scope is not readable at this version."""
        s = self._scopes.get((group, kind, ns))
        if s is None or not s.readable or s.api_version != api_version:
            return None
        wanted = set(names)
        if app:
            wanted |= s.by_app.get(app, set())
        objects: dict[str, Body] = {}
        stale: set[str] = set()
        for name in wanted:
            entry = s.entries.get(name)
            write = self._writes.get((group, kind, ns, name))
            if write is not None and (
                (entry is None and not write.gone)  # written by gitopsd, not seen yet
                or (entry is not None and write.gone)  # deleted by gitopsd, still seen
                or (entry is not None and _older(entry.rv, write.rv))
            ):
                stale.add(name)
                continue
            if entry is not None:
                objects[name] = json.loads(entry.raw)
        self.hits += len(objects)
        self.misses += len(stale)
        return Read(objects, frozenset(stale))

    # --- internals --------------------------------------------------------------------------

    def _put(self, scope: Scope, s: _Scope, obj: Body) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        self._drop(s, name)
        entry = _Entry(
            str(meta.get("resourceVersion", "")),
            json.dumps(obj, separators=(",", ":")).encode(),
            _hints(obj),
        )
        s.entries[name] = entry
        for hint in entry.hints:
            s.by_app.setdefault(hint, set()).add(name)
        self._settle(scope, name, entry.rv)

    def _drop(self, s: _Scope, name: str) -> None:
        entry = s.entries.pop(name, None)
        if entry is None:
            return
        for hint in entry.hints:
            names = s.by_app.get(hint)
            if names is not None:
                names.discard(name)
                if not names:
                    del s.by_app[hint]

    def _settle(self, scope: Scope, name: str, rv: str) -> None:
        """The cache has caught up with gitopsd's write of `name` once it sees that version
        (or a newer one): the record is no longer needed."""
        group, kind, ns = scope
        key = (group, kind, ns, name)
        write = self._writes.get(key)
        if write is None or not rv:
            return
        # After a delete, only a newer object (created again since) settles it.
        if (not write.gone and not _older(rv, write.rv)) or (write.gone and _newer(rv, write.rv)):
            del self._writes[key]
