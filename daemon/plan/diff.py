"""Decide whether a live object matches what git wants, the way Argo CD's server-side diff does.

The caller hands in the result of a server-side-apply dry run of the desired manifest (what the
object would become) and the live object; this module normalises both, applies the app's
`ignoreDifferences` rules and compares. Everything here is pure: no I/O, no clock, no client.
"""

from __future__ import annotations

import base64
import copy
import difflib
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jq
import yaml

from daemon.model import Body, ResourceKey

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_CHANGES = 50

# Fields the API server writes on its own; they never come from git, so they never count.
_SERVER_METADATA = (
    "creationTimestamp",
    "resourceVersion",
    "uid",
    "generation",
    "managedFields",
    "selfLink",
)

_RULE_FIELDS = frozenset(
    {
        "group",
        "kind",
        "name",
        "namespace",
        "jsonPointers",
        "jqPathExpressions",
        "managedFieldsManagers",
    }
)


# --------------------------------------------------------------------------- ignore rules


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """One `spec.ignoreDifferences[]` entry.

    `group` and `kind` are globs (`*`, `?`) as in Argo CD; `name` and `namespace` match exactly,
    and an empty value matches everything.
    """

    kind: str
    group: str = ""
    name: str = ""
    namespace: str = ""
    json_pointers: tuple[str, ...] = ()
    jq_path_expressions: tuple[str, ...] = ()
    managed_fields_managers: tuple[str, ...] = ()


def parse_ignore_differences(items: object, *, where: str) -> list[IgnoreRule]:
    """Validate `ignoreDifferences` read from YAML; errors name `where`, the entry and the field."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"{where}: must be a list, got {type(items).__name__}")
    rules: list[IgnoreRule] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{at}: must be a mapping, got {type(item).__name__}")
        unknown = sorted(set(item) - _RULE_FIELDS)
        if unknown:
            raise ValueError(f"{at}: unknown field {unknown[0]!r}")
        kind = _optional_str(item, "kind", at)
        if not kind:
            raise ValueError(f"{at}.kind: is required")
        pointers = _str_list(item, "jsonPointers", at)
        for j, pointer in enumerate(pointers):
            try:
                _pointer_tokens(pointer)
            except ValueError as err:
                raise ValueError(f"{at}.jsonPointers[{j}]: {err}") from None
        expressions = _str_list(item, "jqPathExpressions", at)
        for j, expression in enumerate(expressions):
            try:
                _compile_jq(expression)
            except ValueError as err:
                raise ValueError(f"{at}.jqPathExpressions[{j}]: {err}") from None
        managers = _str_list(item, "managedFieldsManagers", at)
        rules.append(
            IgnoreRule(
                kind=kind,
                group=_optional_str(item, "group", at),
                name=_optional_str(item, "name", at),
                namespace=_optional_str(item, "namespace", at),
                json_pointers=pointers,
                jq_path_expressions=expressions,
                managed_fields_managers=managers,
            )
        )
    return rules


def _optional_str(item: dict[str, Any], field: str, at: str) -> str:
    value = item.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{at}.{field}: must be a string, got {type(value).__name__}")
    return value


def _str_list(item: dict[str, Any], field: str, at: str) -> tuple[str, ...]:
    value = item.get(field)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{at}.{field}: must be a list of strings, got {type(value).__name__}")
    for j, entry in enumerate(value):
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"{at}.{field}[{j}]: must be a non-empty string, got {entry!r}")
    return tuple(value)


# Fields a controller inside gitopsd owns on objects that git also describes: the Rollout
# controller points a Service's selector at a pod-template hash (Service selectors are atomic
# maps, so an apply from git would drop the key). They never count as drift and every sync keeps
# their live values, whatever RespectIgnoreDifferences says.
CONTROLLER_OWNED: tuple[IgnoreRule, ...] = (
    IgnoreRule(
        kind="Service",
        json_pointers=(
            "/spec/selector/rollouts-pod-template-hash",
            "/metadata/annotations/argo-rollouts.argoproj.io~1managed-by-rollouts",
        ),
    ),
    # The in-daemon Rollout controller scales a workloadRef Deployment down (scaleDown
    # onsuccess / progressively); what it wrote, under its field manager, is not drift.
    IgnoreRule(kind="Deployment", group="apps", managed_fields_managers=("gitopsd-rollouts",)),
)


def rule_matches(rule: IgnoreRule, key: ResourceKey) -> bool:
    """Whether `rule` applies to the object at `key` (Argo CD globs group and kind alike)."""
    return (
        _glob(rule.group).fullmatch(key.group) is not None
        and _glob(rule.kind).fullmatch(key.kind) is not None
        and (not rule.name or rule.name == key.name)
        and (not rule.namespace or rule.namespace == key.namespace)
    )


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    # Not fnmatch: it also treats `[` as a class, and kinds are case-sensitive everywhere.
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


# --------------------------------------------------------------------------- normalisation


def managed_fields_of(live: Body) -> list[Body]:
    """The `metadata.managedFields` of a live object (empty when absent or malformed)."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def normalize(
    obj: Body,
    *,
    rules: Sequence[IgnoreRule],
    key: ResourceKey,
    managed_fields: Sequence[Body] | None = None,
) -> Body:
    """Return a copy of `obj` stripped of what must not count in a comparison.

    `managed_fields` is the LIVE object's `metadata.managedFields`; it is passed explicitly because
    the same ownership must be removed from the desired side, which has its own (different) list.
    Ignore-rule steps run in Argo CD's order after the always-on ones; a jq expression that fails
    on this object (e.g. iterating over a missing list without `?`) is skipped, as Argo CD does.
    """
    out = copy.deepcopy(obj)
    out.pop("status", None)  # Argo CD default: ignoreResourceStatusField = all
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for field in _SERVER_METADATA:
            meta.pop(field, None)
        for field in ("annotations", "labels"):
            values = meta.get(field)
            if isinstance(values, dict):
                values.pop(LAST_APPLIED, None)
            if field in meta and not values:
                del meta[field]
    if key.group == "" and key.kind == "Secret":
        _merge_string_data(out)

    matching = [rule for rule in rules if rule_matches(rule, key)]
    managers = {m for rule in matching for m in rule.managed_fields_managers}
    for entry in managed_fields or ():
        fields = entry.get("fieldsV1")
        if entry.get("manager") in managers and isinstance(fields, dict):
            _remove_owned(out, fields)
    for rule in matching:
        for pointer in rule.json_pointers:
            _remove_pointer(out, _pointer_tokens(pointer))
    for rule in matching:
        for expression in rule.jq_path_expressions:
            try:
                paths = _jq_paths(_compile_jq(expression), out)
            except _JqRuntimeError:
                continue
            _delete_paths(out, paths)
    return out


def _merge_string_data(secret: Body) -> None:
    string_data = secret.pop("stringData", None)
    if not isinstance(string_data, dict):
        return
    data = secret.get("data")
    merged: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    # The API server does the same on write: stringData wins over data for the same key.
    for k, v in string_data.items():
        merged[k] = base64.b64encode(v.encode()).decode() if isinstance(v, str) else v
    secret["data"] = merged


# --------------------------------------------------------------------------- JSON pointers


def _pointer_tokens(pointer: str) -> tuple[str, ...]:
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise ValueError(f"JSON pointer {pointer!r} has an invalid '~' escape")
    # RFC 6901 order: ~1 first, so that "~01" means the literal "~1".
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def _remove_pointer(obj: Any, tokens: tuple[str, ...]) -> None:
    parent = obj
    for token in tokens[:-1]:
        parent = _pointer_child(parent, token)
        if parent is None:
            return
    last = tokens[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list):
        index = _pointer_index(last, len(parent))
        if index is not None:
            del parent[index]


def _pointer_child(value: Any, token: str) -> Any:
    if isinstance(value, dict):
        return value.get(token)
    if isinstance(value, list):
        index = _pointer_index(token, len(value))
        return None if index is None else value[index]
    return None


def _pointer_index(token: str, length: int) -> int | None:
    # RFC 6901 array indices: "0" or no leading zero; a nonexistent one is ignored like Argo CD.
    if re.fullmatch(r"0|[1-9][0-9]*", token) and int(token) < length:
        return int(token)
    return None


# --------------------------------------------------------------------------- managed fields


def _remove_owned(obj: Any, fields: dict[str, Any]) -> None:
    """Remove what a fieldsV1 set owns from `obj`.

    A leaf (`{}`) field is removed whole. A map field with children is only descended into: its
    `.` marks that the manager created the map, which is not a value, and removing it would hide
    every sibling key other managers own. A list item (`k:`, `v:`, `i:`) that the manager owns
    as a unit (`.` or leaf) is removed whole, e.g. an injected sidecar container.
    """
    if isinstance(obj, dict):
        for name, child in fields.items():
            if not name.startswith("f:") or name[2:] not in obj or not isinstance(child, dict):
                continue
            if child:
                _remove_owned(obj[name[2:]], child)
            else:
                del obj[name[2:]]
    elif isinstance(obj, list):
        doomed: set[int] = set()
        for name, child in fields.items():
            if not isinstance(child, dict):
                continue
            for index in _owned_items(obj, name):
                if not child or "." in child:
                    doomed.add(index)
                else:
                    _remove_owned(obj[index], child)
        for index in sorted(doomed, reverse=True):
            del obj[index]


def _owned_items(items: list[Any], name: str) -> list[int]:
    kind, _, raw = name.partition(":")
    if kind == "i":
        return [int(raw)] if raw.isdigit() and int(raw) < len(items) else []
    if kind not in ("k", "v"):
        return []
    try:
        wanted = json.loads(raw)
    except ValueError:
        return []
    if kind == "v":
        return [i for i, item in enumerate(items) if _json_equal(item, wanted)]
    if not isinstance(wanted, dict):
        return []
    return [
        i
        for i, item in enumerate(items)
        if isinstance(item, dict)
        and all(k in item and _json_equal(item[k], v) for k, v in wanted.items())
    ]


# --------------------------------------------------------------------------- jq paths
#
# Argo CD runs `del(<expr>)` through gojq; `del(f)` is `delpaths([path(f)])`, so evaluating
# `[path(<expr>)]` with libjq (the `jq` package) gives exactly the paths Argo CD deletes, and the
# same paths serve RespectIgnoreDifferences. Argo CD bounds each run with a 1 s timeout; libjq
# cannot be interrupted in-process, so the few constructs that can run unbounded or read the host
# (user-defined recursion, generators without end, env/input) are refused when rules are loaded.

PathElement = str | int
JsonPath = tuple[PathElement, ...]

_UNBOUNDED = re.compile(
    r"(?<![\w$.])(def|recurse|repeat|while|until|range|combinations|input|inputs|env|\$ENV|"
    r"\$__loc__|input_filename|debug|stderr|halt|halt_error)(?!\w)"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a key jq can write as `.key`
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class _JqRuntimeError(Exception):
    """A jq error on a particular object (jq would abort the whole `del`; Argo CD skips it)."""


@functools.lru_cache(maxsize=256)
def _compile_jq(expression: str) -> Any:
    """The compiled `[path(<expression>)]` program; ValueError naming the expression if jq
    refuses it, if it selects the whole object, or if it could run unbounded."""
    reason = ""
    if not expression.strip():
        reason = "empty expression"
    elif expression.strip() == ".":
        reason = "selects the whole object"
    else:
        found = _UNBOUNDED.search(_STRING.sub('""', expression))
        if found:
            reason = f"{found.group(0)!r} may run unbounded, which ignore rules do not allow"
    if not reason:
        try:
            jq.compile(expression)  # alone first: no closing the path( ) wrapper from inside
            return jq.compile(f"[path({expression})]")
        except ValueError as e:
            reason = " ".join(str(e).split())
    raise ValueError(f"unsupported jq path expression {expression!r}: {reason}")


def _jq_paths(program: Any, root: Any) -> list[JsonPath]:
    """Every path the expression selects in `root` (never the root itself)."""
    try:
        result = program.input_value(root).first()
    except ValueError as e:
        raise _JqRuntimeError(str(e)) from None
    paths: list[JsonPath] = []
    for path in result or []:
        if isinstance(path, list) and path:
            paths.extend(_concrete(root, path))
    return paths


def _concrete(root: Any, path: list[Any]) -> list[JsonPath]:
    """`path` with jq slice elements (`{"start": 1, "end": 2}`) resolved to list indices: a
    slice followed by an index is one element of the list; a trailing slice is each of them."""
    out: list[PathElement] = []
    node = root
    for i, element in enumerate(path):
        if isinstance(element, dict):
            length = len(node) if isinstance(node, list) else 0
            start, stop, _ = slice(element.get("start"), element.get("end")).indices(length)
            if i == len(path) - 1:
                return [(*out, j) for j in range(start, stop)]
            if not isinstance(path[i + 1], int):
                return []
            path[i + 1] += start
            continue
        if not isinstance(element, str | int):
            return []
        out.append(element)
        node = _jq_child(node, element)
    return [tuple(out)]


def _delete_paths(obj: Any, paths: list[JsonPath]) -> None:
    # jq's delpaths: sort, then delete from the last so earlier list indices stay valid.
    unique = {tuple((0, e) if isinstance(e, int) else (1, e) for e in p): p for p in paths}
    for sort_key in sorted(unique, reverse=True):
        path = unique[sort_key]
        parent = obj
        for element in path[:-1]:
            parent = _jq_child(parent, element)
        last = path[-1]
        if isinstance(parent, dict) and isinstance(last, str):
            parent.pop(last, None)
        elif (
            isinstance(parent, list)
            and isinstance(last, int)
            and -len(parent) <= last < len(parent)
        ):
            del parent[last]


def _jq_child(value: Any, element: PathElement) -> Any:
    if isinstance(value, dict) and isinstance(element, str):
        return value.get(element)
    if isinstance(value, list) and isinstance(element, int) and -len(value) <= element < len(value):
        return value[element]
    return None


# --------------------------------------------------------------------------- comparison


class Change(NamedTuple):
    """One differing leaf: a jq-style path (usable in jqPathExpressions) and both values.

    A value of None means the field is absent on that side.
    """

    path: str
    live: Any
    desired: Any


@dataclass(frozen=True, slots=True)
class DiffResult:
    """Outcome of comparing one predicted object with its live object.

    For Secrets the normalised bodies and change values are masked (see `redact_secrets`);
    `modified` is decided on the real values before masking.
    """

    modified: bool
    changes: tuple[Change, ...]
    normalized_live: Body
    normalized_desired: Body
    omitted_changes: int = 0  # changes beyond MAX_CHANGES, counted but not listed


def diff(
    desired_predicted: Body,
    live: Body,
    *,
    rules: Sequence[IgnoreRule],
    key: ResourceKey,
) -> DiffResult:
    """Compare the server-side-apply dry-run result with the live object.

    A missing, null, empty map and empty list all compare equal, since the API server drops
    such fields inconsistently between what it echoes back and what it stores.
    """
    managed = managed_fields_of(live)
    norm_live = normalize(live, rules=rules, key=key, managed_fields=managed)
    norm_desired = normalize(desired_predicted, rules=rules, key=key, managed_fields=managed)
    modified = not _json_equal(_prune_empty(norm_live), _prune_empty(norm_desired))
    if key.group == "" and key.kind == "Secret":
        norm_live, norm_desired = redact_secrets(norm_live, norm_desired)
    changes: list[Change] = []
    if modified:
        _collect_changes(_prune_empty(norm_live), _prune_empty(norm_desired), "", changes)
    return DiffResult(
        modified=modified,
        changes=tuple(changes[:MAX_CHANGES]),
        normalized_live=norm_live,
        normalized_desired=norm_desired,
        omitted_changes=max(0, len(changes) - MAX_CHANGES),
    )


def _prune_empty(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        # List items keep their place even when empty: position is part of the value.
        return [_prune_empty(v) for v in value]
    return value


def _json_equal(a: Any, b: Any) -> bool:
    """Equality by JSON meaning: 1 == 1.0, but true != 1 (Python says otherwise)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _collect_changes(live: Any, desired: Any, path: str, out: list[Change]) -> None:
    # Descend into a map or list that is absent on the other side, so every change is a leaf
    # whose path can be copied into a jqPathExpressions rule.
    if live is None and isinstance(desired, dict | list):
        live = type(desired)()
    elif desired is None and isinstance(live, dict | list):
        desired = type(live)()
    if isinstance(live, dict) and isinstance(desired, dict):
        for k in sorted(live.keys() | desired.keys()):
            child = f"{path}.{k}" if _IDENT.fullmatch(k) else f"{path}[{json.dumps(k)}]"
            _collect_changes(live.get(k), desired.get(k), child, out)
    elif isinstance(live, list) and isinstance(desired, list):
        for i in range(max(len(live), len(desired))):
            _collect_changes(
                live[i] if i < len(live) else None,
                desired[i] if i < len(desired) else None,
                f"{path}[{i}]",
                out,
            )
    elif not _json_equal(live, desired):
        out.append(Change(path or ".", live, desired))


# --------------------------------------------------------------------------- secrets and output


def redact_secret(obj: Body) -> Body:
    """A copy of `obj` with every Secret value masked; other kinds are returned unchanged."""
    return redact_secrets(obj)[0]


def redact_secrets(*objs: Body) -> tuple[Body, ...]:
    """Copies of `objs` with Secret `data`/`stringData` values masked consistently across them.

    Argo CD's scheme (`HideSecretData`): per key, the first distinct value seen becomes
    "++++++++", the next "++++++++++++" and so on, so a diff still shows which keys differ
    while the mask reveals nothing of a value, not even its length. Hash prefixes were ruled
    out: they let anyone holding the diff test guesses of low-entropy secrets offline. The
    last-applied-configuration annotation, which holds the values in plain text, is masked too.
    """
    copies = [copy.deepcopy(obj) for obj in objs]
    maps: list[dict[str, Any]] = []
    rewrites: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for body in copies:
        key = ResourceKey.of(body)
        if key.group != "" or key.kind != "Secret":
            continue
        maps.extend(_secret_maps(body))
        annotations = (body.get("metadata") or {}).get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            try:
                applied = json.loads(annotations[LAST_APPLIED])
            except (TypeError, ValueError):
                applied = None
            if isinstance(applied, dict):
                maps.extend(_secret_maps(applied))
                rewrites.append((annotations, applied))
            else:
                annotations[LAST_APPLIED] = "+" * 8
    masks: dict[str, dict[str, str]] = {}
    for values in maps:
        for k, v in values.items():
            seen = masks.setdefault(k, {})
            identity = json.dumps(v, sort_keys=True, default=str)
            values[k] = seen.setdefault(identity, "+" * (8 + 4 * len(seen)))
    for annotations, applied in rewrites:
        annotations[LAST_APPLIED] = json.dumps(applied, sort_keys=True)
    return tuple(copies)


def _secret_maps(body: Body) -> list[dict[str, Any]]:
    return [body[f] for f in ("data", "stringData") if isinstance(body.get(f), dict)]


def unified_diff(a: Body | None, b: Body | None, *, from_name: str, to_name: str) -> str:
    """A unified diff of two objects as sorted-key YAML; None stands for "no object".

    Secret values are masked here as well, so no caller can leak them by forgetting to.
    """
    present = [obj for obj in (a, b) if obj is not None]
    masked = iter(redact_secrets(*present))
    a_lines = _yaml_lines(next(masked) if a is not None else None)
    b_lines = _yaml_lines(next(masked) if b is not None else None)
    return "".join(difflib.unified_diff(a_lines, b_lines, fromfile=from_name, tofile=to_name))


def _yaml_lines(obj: Body | None) -> list[str]:
    if obj is None:
        return []
    # A very wide line keeps long strings on one line, so a change shows as one changed line.
    text = yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=1 << 20)
    return text.splitlines(keepends=True)


# ----------------------------------------------------------------- RespectIgnoreDifferences


def respect_ignored(
    desired: Body, live: Body, *, rules: Sequence[IgnoreRule], key: ResourceKey
) -> Body:
    """`RespectIgnoreDifferences=true`: a copy of `desired` whose ignored fields (json pointers
    and jq paths of matching rules) carry the live values, so a sync leaves them as they are."""
    out = copy.deepcopy(desired)
    for rule in rules:
        if not rule_matches(rule, key):
            continue
        paths: list[JsonPath] = []
        for pointer in rule.json_pointers:
            tokens = _pointer_tokens(pointer)
            paths.append(tuple(int(t) if t.isdigit() else t for t in tokens))
        for expression in rule.jq_path_expressions:
            steps = _compile_jq(expression)
            for root in (live, out):
                try:
                    paths.extend(_jq_paths(steps, root))
                except _JqRuntimeError:
                    continue
        for entry in managed_fields_of(live):
            fields = entry.get("fieldsV1")
            if entry.get("manager") in rule.managed_fields_managers and isinstance(fields, dict):
                paths.extend(_owned_map_leaves(fields, ()))
        for path in paths:
            if not path:
                continue
            present, value = _lookup(live, path)
            if present:
                _assign(out, path, copy.deepcopy(value))
            else:
                _delete_paths(out, [path])
    return out


def _owned_map_leaves(fields: dict[str, Any], prefix: tuple[str, ...]) -> list[JsonPath]:
    """The map-key paths (`f:` chains, no list items) of the leaves a fieldsV1 set owns."""
    out: list[JsonPath] = []
    for name, child in fields.items():
        if not name.startswith("f:") or not isinstance(child, dict):
            continue
        path = (*prefix, name[2:])
        if child:
            out.extend(_owned_map_leaves(child, path))
        else:
            out.append(path)
    return out


def _lookup(obj: Any, path: JsonPath) -> tuple[bool, Any]:
    current = obj
    for element in path:
        if isinstance(current, dict) and isinstance(element, str) and element in current:
            current = current[element]
        elif isinstance(current, list) and isinstance(element, int):
            if not -len(current) <= element < len(current):
                return False, None
            current = current[element]
        else:
            return False, None
    return True, current


def _assign(obj: Any, path: JsonPath, value: Any) -> None:
    current = obj
    for i, element in enumerate(path[:-1]):
        nxt = _jq_child(current, element)
        if nxt is None:
            if not isinstance(current, dict) or not isinstance(element, str):
                return  # cannot create list slots that do not exist
            nxt = {} if isinstance(path[i + 1], str) else []
            current[element] = nxt
        current = nxt
    last = path[-1]
    if isinstance(current, dict) and isinstance(last, str):  # noqa: SIM114 - typing narrows
        current[last] = value
    elif (
        isinstance(current, list) and isinstance(last, int) and -len(current) <= last < len(current)
    ):
        current[last] = value
