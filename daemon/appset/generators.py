"""ApplicationSet generators (list, clusters, git, matrix, merge) and Application generation.

`generate()` turns one ApplicationSet document into the Application documents it stands for.
It is pure apart from reading git through the injected `GitReader`; the caller decides what to
create, update or delete, and reads `preserve_resources_on_deletion()` for the finalizer.

Every generator yields `ParamSet`s holding both parameter forms: `nested` for Go templates
(`.metadata.labels.env`, `.path.basename`) and `flat` dotted string keys for fasttemplate
(`metadata.labels.env`, `path.basename`, `path[0]`). The two are not mechanical translations of
each other (the git generator's `path` is a string in one and a mapping in the other), so each
generator builds both, exactly as Argo CD builds the one its template mode needs.

Deliberate differences from Argo CD, all in the direction of refusing or accepting more clearly:
- a templated `spec.template.spec.project` is refused (a tenant could escape its project);
- fasttemplate list elements may hold numbers, booleans and nested maps (stringified and
  flattened); Argo CD rejects anything but strings ("error parsing value as string");
- unsupported generators, `templatePatch`, `flatList` and deeper-than-Argo nesting are errors;
- a matrix / merge keeps the first generator's order (Argo CD's merge order is random);
- the implicit `in-cluster` cluster exists only when no clusters are configured, as elsewhere in
  gitopsd; child `selector`s are always applied (Argo CD's `applyNestedSelectors`).
"""

from __future__ import annotations

import copy
import functools
import json
import posixpath
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from daemon import yamlio
from daemon.appset.template import normalize, render_string, render_template, scalar_text
from daemon.errors import ConfigError
from daemon.settings import ARGO_API, IN_CLUSTER_NAME, IN_CLUSTER_SERVER, ClusterConfig

APPSET_ANNOTATION = "gitopsd.io/application-set"
"""Annotation on every generated Application naming its ApplicationSet (Argo CD: ownerReference)."""

_GENERATORS = ("list", "clusters", "git", "matrix", "merge")
_UNSUPPORTED = ("scmProvider", "pullRequest", "clusterDecisionResource", "plugin")
_MAX_NESTING = 1  # matrix / merge inside matrix / merge, one level deep like Argo CD


class GitReader(Protocol):
    """Read access to a git repository at a revision, implemented by the daemon's repo cache."""

    async def list_dirs(self, repo_url: str, revision: str) -> list[str]:
        """Every directory path in the repository, relative and '/'-separated."""
        ...

    async def read_files(self, repo_url: str, revision: str) -> dict[str, bytes]:
        """Every file in the repository by relative '/'-separated path."""
        ...


class GenerationError(ConfigError):
    """An ApplicationSet could not be expanded; the message names the ApplicationSet and field."""


@dataclass(frozen=True, slots=True)
class ParamSet:
    """One generator result in both template forms."""

    nested: dict[str, Any] = field(default_factory=dict)
    flat: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Ctx:
    name: str
    subject: str
    go_template: bool
    options: tuple[str, ...]
    clusters: Sequence[ClusterConfig]
    git: GitReader
    cache: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def form(self, params: ParamSet) -> dict[str, Any]:
        return params.nested if self.go_template else dict(params.flat)

    async def cached(self, key: tuple[str, str, str], read: Callable[[], Awaitable[Any]]) -> Any:
        if key not in self.cache:
            self.cache[key] = await read()
        return self.cache[key]


def preserve_resources_on_deletion(appset: Mapping[str, Any]) -> bool:
    """`spec.syncPolicy.preserveResourcesOnDeletion`: if true, generated apps get no finalizer."""
    policy = (appset.get("spec") or {}).get("syncPolicy") or {}
    value = policy.get("preserveResourcesOnDeletion", False) if isinstance(policy, dict) else False
    return value is True or (isinstance(value, str) and value.lower() == "true")


async def generate(
    appset: Mapping[str, Any],
    *,
    clusters: Sequence[ClusterConfig],
    git: GitReader,
    where: str,
) -> list[dict[str, Any]]:
    """The Application documents `appset` generates, in generator order.

    Each carries the ApplicationSet's namespace and the `APPSET_ANNOTATION`; no finalizer is
    added (the caller adds `resources-finalizer.argocd.argoproj.io` unless
    `preserve_resources_on_deletion(appset)`).
    """
    meta = appset.get("metadata") or {}
    name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
    if not name or not isinstance(meta, dict):
        raise GenerationError(f"{where}: ApplicationSet metadata.name: required field is missing")
    namespace = str(meta.get("namespace") or "argocd")
    subject = f"{where} (ApplicationSet/{name})" if where else f"ApplicationSet/{name}"
    spec = appset.get("spec")
    if not isinstance(spec, dict):
        raise GenerationError(f"{subject}.spec: expected a mapping")
    if spec.get("templatePatch"):
        raise GenerationError(f"{subject}.spec.templatePatch: not supported by gitopsd")
    options = spec.get("goTemplateOptions") or []
    if not isinstance(options, list):
        raise GenerationError(f"{subject}.spec.goTemplateOptions: expected a list")
    ctx = _Ctx(
        name=name,
        subject=subject,
        go_template=spec.get("goTemplate") is True,
        options=tuple(str(o) for o in options),
        clusters=clusters,
        git=git,
    )
    base = spec.get("template")
    if not isinstance(base, dict):
        raise GenerationError(f"{subject}.spec.template: required mapping is missing")
    _check_template(base, f"{subject}.spec.template")
    generators = spec.get("generators")
    if not isinstance(generators, list) or not generators:
        raise GenerationError(f"{subject}.spec.generators: at least one generator is required")

    apps: list[dict[str, Any]] = []
    for i, entry in enumerate(generators):
        path = f"spec.generators[{i}]"
        kind, config = _kind_of(entry, f"{subject}.{path}")
        template = base
        override = config.get("template")
        if override:
            if not isinstance(override, dict):
                raise GenerationError(f"{subject}.{path}.{kind}.template: expected a mapping")
            template = merge_template(override, base)
            _check_template(template, f"{subject}.{path}.{kind}.template")
        for n, params in enumerate(await _params(entry, ctx, path, depth=0, outer=None)):
            rendered = render_template(
                template,
                ctx.form(params),
                go_template=ctx.go_template,
                options=ctx.options,
                where=f"{subject}.{path} (parameter set {n})",
            )
            apps.append(_application(rendered, namespace, ctx, f"{path} (parameter set {n})"))
    _check_names(apps, subject)
    return apps


def merge_template(override: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """A generator's `template` over the ApplicationSet's, as Argo CD's `mergo.Merge` does it.

    Mappings merge key by key; anywhere else the generator's value wins unless it is empty
    (`""`, `0`, `false`, `[]`, `{}`, null), in which case the ApplicationSet's value is kept.
    """
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_template(value, out[key])
        elif value not in (None, "", 0, False, [], {}) or key not in out:
            out[key] = copy.deepcopy(value)
    return out


def _check_template(template: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(template) - {"metadata", "spec"})
    if unknown:
        raise GenerationError(f"{where}: unknown field(s) {unknown} (expected metadata, spec)")
    spec = template.get("spec") or {}
    project = spec.get("project") if isinstance(spec, dict) else None
    if isinstance(project, str) and "{{" in project:
        raise GenerationError(
            f"{where}.spec.project: {project!r} is templated; the project must be a fixed name "
            "because generator data (cluster labels, files in git) would otherwise choose it, "
            "and a tenant could move its Applications into a project with wider permissions"
        )


def _application(
    rendered: Mapping[str, Any], namespace: str, ctx: _Ctx, path: str
) -> dict[str, Any]:
    meta = dict(rendered.get("metadata") or {})
    name = meta.get("name")
    if not isinstance(name, str) or not name.strip():
        raise GenerationError(
            f"{ctx.subject}.{path}: the generated Application has no metadata.name"
        )
    meta["namespace"] = namespace
    annotations = dict(meta.get("annotations") or {})
    annotations[APPSET_ANNOTATION] = ctx.name
    meta["annotations"] = annotations
    return {
        "apiVersion": ARGO_API,
        "kind": "Application",
        "metadata": meta,
        "spec": dict(rendered.get("spec") or {}),
    }


def _check_names(apps: list[dict[str, Any]], subject: str) -> None:
    seen: dict[str, int] = {}
    for app in apps:
        name = app["metadata"]["name"]
        seen[name] = seen.get(name, 0) + 1
    duplicates = sorted(n for n, count in seen.items() if count > 1)
    if duplicates:
        raise GenerationError(
            f"{subject}: generated Applications with duplicate names: {', '.join(duplicates)} "
            "(make metadata.name depend on a parameter that differs between parameter sets)"
        )


# --- dispatch ---------------------------------------------------------------------------------


def _kind_of(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise GenerationError(f"{where}: expected a mapping")
    kinds = [k for k in entry if k != "selector"]
    bad = [k for k in kinds if k in _UNSUPPORTED]
    if bad:
        raise GenerationError(f"{where}: the {bad[0]} generator is not supported by gitopsd")
    unknown = [k for k in kinds if k not in _GENERATORS]
    if unknown:
        raise GenerationError(f"{where}: unknown generator {unknown[0]!r}")
    if len(kinds) != 1:
        raise GenerationError(
            f"{where}: expected exactly one generator (one of {', '.join(_GENERATORS)}), "
            f"got {kinds or 'none'}"
        )
    config = entry[kinds[0]]
    if not isinstance(config, dict):
        raise GenerationError(f"{where}.{kinds[0]}: expected a mapping")
    return kinds[0], config


async def _params(
    entry: Any, ctx: _Ctx, path: str, *, depth: int, outer: ParamSet | None
) -> list[ParamSet]:
    """The parameter sets of one generator entry; `outer` interpolates a matrix's 2nd child."""
    where = f"{ctx.subject}.{path}"
    kind, config = _kind_of(entry, where)
    where = f"{where}.{kind}"
    if outer is not None:
        own = {k: v for k, v in config.items() if k != "template"}
        config = render_template(
            own,
            ctx.form(outer),
            go_template=ctx.go_template,
            options=ctx.options,
            where=where,
            keep_unknown=True,
        )
    if kind == "list":
        result = _list(config, where)
    elif kind == "clusters":
        result = _clusters(config, ctx, where)
    elif kind == "git":
        result = await _git(config, ctx, where)
    elif kind == "matrix":
        result = await _matrix(config, ctx, f"{path}.matrix", depth=depth)
    else:
        result = await _merge(config, ctx, f"{path}.merge", depth=depth)
    selector = entry.get("selector")
    if selector:
        labels = (
            {k: v for k, v in p.nested.items() if isinstance(v, str)} if ctx.go_template else p.flat
            for p in result
        )
        result = [
            p
            for p, lab in zip(result, labels, strict=True)
            if selector_matches(selector, lab, where=f"{ctx.subject}.{path}.selector")
        ]
    return result


# --- list -------------------------------------------------------------------------------------


def _list(config: Mapping[str, Any], where: str) -> list[ParamSet]:
    elements = config.get("elements") or []
    if not isinstance(elements, list):
        raise GenerationError(f"{where}.elements: expected a list")
    raw_yaml = config.get("elementsYaml")
    if raw_yaml:
        try:
            extra = yamlio.load(str(raw_yaml))
        except yaml.YAMLError as e:
            raise GenerationError(f"{where}.elementsYaml: invalid YAML: {e}") from e
        if not isinstance(extra, list):
            raise GenerationError(f"{where}.elementsYaml: expected a YAML list of mappings")
        elements = [*elements, *extra]
    out = []
    for i, element in enumerate(elements):
        if not isinstance(element, dict):
            raise GenerationError(f"{where}.elements[{i}]: expected a mapping")
        out.append(ParamSet(nested=copy.deepcopy(element), flat=flatten(element)))
    return out


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested data as fasttemplate parameters: dotted keys, list items as `.N`, values as text."""
    out: dict[str, str] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(flatten(item, f"{name}."))
        elif isinstance(item, list):
            out.update(flatten({str(i): v for i, v in enumerate(item)}, f"{name}."))
        else:
            out[name] = scalar_text(item)
    return out


# --- clusters ---------------------------------------------------------------------------------


def _clusters(config: Mapping[str, Any], ctx: _Ctx, where: str) -> list[ParamSet]:
    if config.get("flatList"):
        raise GenerationError(f"{where}.flatList: not supported by gitopsd")
    selector = config.get("selector") or {}
    values = config.get("values") or {}
    if not isinstance(values, dict):
        raise GenerationError(f"{where}.values: expected a mapping of strings")
    candidates = list(ctx.clusters)
    if not candidates and not selector:
        candidates = [ClusterConfig(name=IN_CLUSTER_NAME, server=IN_CLUSTER_SERVER)]
    out = []
    for cluster in candidates:
        labels = dict(cluster.labels)
        if selector and not selector_matches(selector, labels, where=f"{where}.selector"):
            continue
        annotations = dict(cluster.annotations)
        base = {
            "name": cluster.name,
            "nameNormalized": normalize(cluster.name),
            "server": cluster.server,
            "project": "",
        }
        flat = dict(base)
        flat.update({f"metadata.labels.{k}": v for k, v in labels.items()})
        flat.update({f"metadata.annotations.{k}": v for k, v in annotations.items()})
        nested: dict[str, Any] = {
            **base,
            "metadata": {"labels": labels, "annotations": annotations},
        }
        out.append(_with_values(ParamSet(nested, flat), values, ctx, where))
    return out


def _with_values(params: ParamSet, values: Mapping[str, Any], ctx: _Ctx, where: str) -> ParamSet:
    """`values.<key>` parameters, each value templated with the generator's own parameters."""
    if not values:
        return params
    rendered = {}
    for key, value in values.items():
        if isinstance(value, dict | list):
            raise GenerationError(f"{where}.values.{key}: expected a string")
        rendered[str(key)] = render_string(
            scalar_text(value),
            ctx.form(params),
            go_template=ctx.go_template,
            options=ctx.options,
            where=f"{where}.values.{key}",
        )
    nested = {**params.nested, "values": rendered}
    flat = {**params.flat, **{f"values.{k}": v for k, v in rendered.items()}}
    return ParamSet(nested, flat)


def selector_matches(selector: Any, labels: Mapping[str, str], *, where: str) -> bool:
    """A Kubernetes LabelSelector (`matchLabels`, `matchExpressions`) against `labels`."""
    if not isinstance(selector, dict):
        raise GenerationError(f"{where}: expected a mapping")
    unknown = sorted(set(selector) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise GenerationError(f"{where}: unknown field(s) {unknown}")
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise GenerationError(f"{where}.matchLabels: expected a mapping")
    for key, value in match_labels.items():
        if labels.get(str(key)) != scalar_text(value):
            return False
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise GenerationError(f"{where}.matchExpressions: expected a list")
    for i, expr in enumerate(expressions):
        if not _expression_matches(expr, labels, f"{where}.matchExpressions[{i}]"):
            return False
    return True


def _expression_matches(expr: Any, labels: Mapping[str, str], where: str) -> bool:
    if not isinstance(expr, dict) or not expr.get("key"):
        raise GenerationError(f"{where}: expected a mapping with key and operator")
    key, op = str(expr["key"]), str(expr.get("operator", ""))
    values = [scalar_text(v) for v in expr.get("values") or []]
    if op in ("In", "NotIn") and not values:
        raise GenerationError(f"{where}: operator {op} needs at least one value")
    if op in ("Exists", "DoesNotExist") and values:
        raise GenerationError(f"{where}: operator {op} takes no values")
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise GenerationError(f"{where}.operator: {op!r} is not one of In, NotIn, Exists, DoesNotExist")


# --- git --------------------------------------------------------------------------------------


async def _git(config: Mapping[str, Any], ctx: _Ctx, where: str) -> list[ParamSet]:
    repo = str(config.get("repoURL") or "")
    revision = str(config.get("revision") or "HEAD")
    if not repo:
        raise GenerationError(f"{where}.repoURL: required field is missing")
    directories = config.get("directories") or []
    files = config.get("files") or []
    if bool(directories) == bool(files):
        raise GenerationError(f"{where}: set exactly one of directories or files")
    items = directories or files
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("path"), str) and i["path"] for i in items
    ):
        raise GenerationError(f"{where}: directories / files must be a list of {{path: glob}}")
    for text, field_name in [(repo, "repoURL"), (revision, "revision")] + [
        (i["path"], "path") for i in items
    ]:
        if "{{" in text:
            raise GenerationError(f"{where}.{field_name}: unresolved parameter in {text!r}")
    values = config.get("values") or {}
    if not isinstance(values, dict):
        raise GenerationError(f"{where}.values: expected a mapping of strings")
    prefix = str(config.get("pathParamPrefix") or "")
    include = [i["path"] for i in items if not i.get("exclude")]
    exclude = [i["path"] for i in items if i.get("exclude")]
    if directories:
        dirs = await ctx.cached((repo, revision, "dirs"), lambda: ctx.git.list_dirs(repo, revision))
        chosen = [
            d
            for d in sorted({str(d).strip("/") for d in dirs})
            if d
            and d != "."
            and not any(seg.startswith(".") for seg in d.split("/"))
            and any(_path_match(p, d, where) for p in include)
            and not any(_path_match(p, d, where) for p in exclude)
        ]
        return [_with_values(_dir_params(d, prefix), values, ctx, where) for d in chosen]
    tree: dict[str, bytes] = await ctx.cached(
        (repo, revision, "files"), lambda: ctx.git.read_files(repo, revision)
    )
    out = []
    for name in sorted(tree):
        path = name.strip("/")
        if any(_glob_match(p, path, where) for p in include) and not any(
            _glob_match(p, path, where) for p in exclude
        ):
            for obj in _file_objects(tree[name], f"{where}: file {path}"):
                out.append(_with_values(_file_params(obj, path, prefix), values, ctx, where))
    return out


def _dir_params(directory: str, prefix: str) -> ParamSet:
    base = posixpath.basename(directory)
    nested_path = {
        "path": directory,
        "basename": base,
        "basenameNormalized": normalize(base),
        "segments": directory.split("/"),
    }
    name = f"{prefix}.path" if prefix else "path"
    flat = {
        name: directory,
        f"{name}.basename": base,
        f"{name}.basenameNormalized": normalize(base),
    }
    flat.update({f"{name}[{i}]": s for i, s in enumerate(directory.split("/")) if s})
    nested = {prefix: {"path": nested_path}} if prefix else {"path": nested_path}
    return ParamSet(nested, flat)


def _file_params(obj: dict[str, Any], file: str, prefix: str) -> ParamSet:
    directory = posixpath.dirname(file) or "."
    params = _dir_params(directory, prefix)
    filename = posixpath.basename(file)
    name = f"{prefix}.path" if prefix else "path"
    flat = {**flatten(obj), **params.flat}
    flat[f"{name}.filename"] = filename
    flat[f"{name}.filenameNormalized"] = normalize(filename)
    nested = {**copy.deepcopy(obj), **params.nested}
    holder = nested[prefix]["path"] if prefix else nested["path"]
    holder["filename"] = filename
    holder["filenameNormalized"] = normalize(filename)
    return ParamSet(nested, flat)


def _file_objects(content: bytes, where: str) -> list[dict[str, Any]]:
    try:
        data = yamlio.load(content.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise GenerationError(f"{where}: not valid JSON or YAML: {e}") from e
    if data is None:
        return [{}]
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(d, dict) for d in data):
        return data
    raise GenerationError(f"{where}: expected a mapping or a list of mappings")


def _path_match(pattern: str, name: str, where: str) -> bool:
    """Go's `path.Match`: `*` and `?` stop at '/', `[...]` classes, `\\` escapes."""
    return _compile(pattern, greedy=False, where=where).fullmatch(name) is not None


def _glob_match(pattern: str, name: str, where: str) -> bool:
    """Argo CD's default file globbing: like `path.Match` but `*` also crosses '/', `{a,b}`."""
    return _compile(pattern, greedy=True, where=where).fullmatch(name) is not None


def _compile(pattern: str, *, greedy: bool, where: str) -> re.Pattern[str]:
    try:
        return _translate(pattern, greedy)
    except ValueError as e:
        raise GenerationError(f"{where}: malformed pattern {pattern!r} ({e})") from None


@functools.lru_cache(maxsize=512)
def _translate(pattern: str, greedy: bool) -> re.Pattern[str]:
    star, one = (".*", ".") if greedy else ("[^/]*", "[^/]")
    out: list[str] = []
    i, depth = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(star)
        elif c == "?":
            out.append(one)
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            close = pattern.find("]", i + 2)
            if close < 0:
                raise ValueError("unclosed '['")
            body = pattern[i + 1 : close]
            negate = body[:1] in ("^", "!")
            body = body[1:] if negate else body
            out.append(("[^" if negate else "[") + body.replace("\\", "\\\\") + "]")
            i = close
        elif greedy and c == "{":
            depth += 1
            out.append("(?:")
        elif greedy and c == "}" and depth:
            depth -= 1
            out.append(")")
        elif greedy and c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError("unclosed '{'")
    try:
        return re.compile("".join(out), re.S)
    except re.error as e:
        raise ValueError(str(e)) from None


# --- matrix and merge -------------------------------------------------------------------------


def _children(config: Mapping[str, Any], where: str, depth: int, kind: str) -> list[Any]:
    if depth >= _MAX_NESTING + 1:
        raise GenerationError(f"{where}: {kind} generators nest only one level deep")
    children = config.get("generators")
    if not isinstance(children, list):
        raise GenerationError(f"{where}.generators: expected a list")
    return children


async def _matrix(config: Mapping[str, Any], ctx: _Ctx, path: str, *, depth: int) -> list[ParamSet]:
    where = f"{ctx.subject}.{path}"
    children = _children(config, where, depth, "matrix")
    if len(children) != 2:
        raise GenerationError(
            f"{where}.generators: a matrix needs exactly two generators, got {len(children)}"
        )
    first = await _params(children[0], ctx, f"{path}.generators[0]", depth=depth + 1, outer=None)
    out: list[ParamSet] = []
    for left in first:
        second = await _params(
            children[1], ctx, f"{path}.generators[1]", depth=depth + 1, outer=left
        )
        for right in second:
            out.append(_combine(left, right, ctx, where))
    return out


def _combine(left: ParamSet, right: ParamSet, ctx: _Ctx, where: str) -> ParamSet:
    """Matrix product of two sets: first wins in nested form; flat duplicates must agree."""
    flat = dict(right.flat)
    for key, value in left.flat.items():
        if not ctx.go_template and key in flat and flat[key] != value:
            raise GenerationError(
                f"{where}: both generators set parameter {key!r} ({value!r} and "
                f"{flat[key]!r}); rename one of them"
            )
        flat[key] = value
    return ParamSet(_deep_merge(right.nested, left.nested), flat)


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it; mappings merge recursively, otherwise `top` wins."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


async def _merge(config: Mapping[str, Any], ctx: _Ctx, path: str, *, depth: int) -> list[ParamSet]:
    where = f"{ctx.subject}.{path}"
    children = _children(config, where, depth, "merge")
    if len(children) < 2:
        raise GenerationError(f"{where}.generators: a merge needs at least two generators")
    keys = config.get("mergeKeys")
    if not isinstance(keys, list) or not keys:
        raise GenerationError(f"{where}.mergeKeys: at least one merge key is required")
    keys = [str(k) for k in keys]
    sets = [
        await _params(child, ctx, f"{path}.generators[{i}]", depth=depth + 1, outer=None)
        for i, child in enumerate(children)
    ]
    result = list(sets[0])
    for i, later in enumerate(sets[1:], start=1):
        by_key: dict[str, ParamSet] = {}
        for params in later:
            key = _merge_key(params, keys, ctx)
            if key in by_key:
                raise GenerationError(
                    f"{where}.generators[{i}]: two parameter sets share the merge key {key}; "
                    "merge keys must be unique in every generator after the first"
                )
            by_key[key] = params
        for n, base in enumerate(result):
            override = by_key.get(_merge_key(base, keys, ctx))
            if override is not None:
                result[n] = ParamSet(
                    _deep_merge(base.nested, override.nested), {**base.flat, **override.flat}
                )
    return result


def _merge_key(params: ParamSet, keys: list[str], ctx: _Ctx) -> str:
    values: list[Any] = []
    for key in keys:
        if not ctx.go_template:
            values.append(params.flat.get(key))
        elif key in params.nested:
            values.append(params.nested[key])
        else:
            node: Any = params.nested
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            values.append(node)
    return json.dumps(values, sort_keys=True, default=str)
