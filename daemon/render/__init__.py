"""Render a checked-out source into manifests: plain directory, Kustomize or Helm.

`Renderer.render(...)` picks the tool the way Argo CD does (explicit `helm`/`kustomize`/
`directory` block, else Chart.yaml → Helm, kustomization.yaml → Kustomize, else directory),
keeps every path inside the repository, and caches results by (commit, path, options).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import yaml

from daemon import cmp, proc, yamlio
from daemon.errors import RenderError, SourceError
from daemon.model import Manifest, ResourceKey
from daemon.render import jsonnet, plugins
from daemon.settings import Source
from daemon.sources.git import UNSAFE_LINKS_FILE, safe_path

if TYPE_CHECKING:
    from daemon.sources.helmrepo import ChartRepos

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Argo CD's directory apps read these; other files (README.md, *.libsonnet, ...) are skipped.
_MANIFEST_EXT = re.compile(r"^.*\.(yaml|yml|json|jsonnet)$")
_DOC_SPLIT = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)
_HELM_SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """Everything that determines one render's output (and so its cache key)."""

    sha: str
    source: Source
    app_name: str
    namespace: str
    kube_version: str = ""
    # Multi-source `ref` sources: name -> (commit SHA, checkout root), for `$name/...` paths.
    refs: tuple[tuple[str, str, str], ...] = ()
    # For config management plugins' build environment.
    project: str = ""
    api_versions: tuple[str, ...] = ()

    def cache_key(self) -> str:
        opts = {
            "refs": [(name, sha) for name, sha, _ in self.refs],
            "path": self.source.path,
            "helm": self.source.helm,
            "kustomize": self.source.kustomize,
            "directory": self.source.directory,
            "plugin": self.source.plugin,
            "project": self.project,
            "app": self.app_name,
            "ns": self.namespace,
            "kv": self.kube_version,
        }
        blob = json.dumps(opts, sort_keys=True, default=str)
        return f"{self.sha}:{hashlib.sha256(blob.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The result of one render."""

    manifests: tuple[Manifest, ...]
    tool: str  # Directory | Kustomize | Helm


def _brace_expand(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(_brace_expand(pattern[: m.start()] + alt + pattern[m.end() :]))
    return out


def glob_match(pattern: str, path: str) -> bool:
    """Argo CD's directory include/exclude matching: `*` also crosses '/', `{a,b}` works."""
    return any(fnmatchcase(path, p) for p in _brace_expand(pattern))


class NodeBudget:
    """How many more YAML nodes aliases may expand to in one render (all its files)."""

    def __init__(self, nodes: int = yamlio.DEFAULT_MAX_NODES) -> None:
        self.left = nodes


def decoded(data: bytes, *, source: str) -> str:
    """`data` as UTF-8; invalid bytes are an error naming `source` and the offset, never
    silently replaced (a replaced byte would be applied as U+FFFD)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RenderError(
            f"{source}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


# Every kustomization field whose entries name a file or a kustomization directory.
_KUSTOMIZE_LIST_FIELDS = (
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "patchesStrategicMerge",
)
_KUSTOMIZE_PATH_ITEMS = ("patches", "patchesJson6902", "replacements")


def _kustomize_refs(data: dict[str, Any]) -> list[str]:
    """Every path a kustomization names (inline documents, which hold a newline, left out)."""
    refs: list[str] = []
    for key in _KUSTOMIZE_LIST_FIELDS:
        refs += [r for r in data.get(key) or [] if isinstance(r, str)]
    for key in _KUSTOMIZE_PATH_ITEMS:
        for item in data.get(key) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                refs.append(item["path"])
    openapi = data.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        refs.append(openapi["path"])
    helm = data.get("helmGlobals")
    if isinstance(helm, dict):
        refs += [helm[k] for k in ("chartHome", "configHome") if isinstance(helm.get(k), str)]
    for chart in data.get("helmCharts") or []:
        if isinstance(chart, dict):
            files = [chart.get("valuesFile"), *(chart.get("additionalValuesFiles") or [])]
            refs += [f for f in files if isinstance(f, str)]
    for gen in (data.get("configMapGenerator") or []) + (data.get("secretGenerator") or []):
        if isinstance(gen, dict):
            entries = [*(gen.get("files") or []), *(gen.get("envs") or []), gen.get("env")]
            refs += [f.split("=", 1)[-1] for f in entries if isinstance(f, str)]
    return [r for r in refs if "\n" not in r]


def _refuse_out_of_bounds_links(root: Path, path: str) -> None:
    """Refuse to render when the source path holds a symlink pointing outside the repository,
    as Argo CD does (CVE-2022-24904): such links are never extracted into the checkout, so
    rendering without them would silently drop whatever they stood for."""
    unsafe = root / UNSAFE_LINKS_FILE
    if not unsafe.exists():
        return
    base = os.path.normpath(path)
    found = [
        entry
        for entry in unsafe.read_text().splitlines()
        if base == "." or entry.split(" -> ", 1)[0] == base or entry.startswith(base + "/")
    ]
    if found:
        raise RenderError(
            f"symlink {found[0]} points outside the repository; refusing to render "
            f"{path!r} (out-of-bounds symlinks are not allowed)"
            + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
        )


def parse_stream(
    text: str, *, source: str, budget: NodeBudget | None = None
) -> list[dict[str, Any]]:
    """Parse YAML/JSON documents, expanding `List` kinds; errors name file and line."""
    docs: list[dict[str, Any]] = []
    budget = budget or NodeBudget()
    try:
        budget.left -= yamlio.check_expansion(text, max_nodes=budget.left)
        loaded = list(yamlio.load_all(text, max_nodes=None))
    except yaml.YAMLError as e:
        line = yamlio.error_line(e)
        where = f"{source}:{line}" if line else source
        problem = getattr(e, "problem", None) or str(e)
        raise RenderError(f"{where}: invalid YAML: {problem}") from e
    for i, doc in enumerate(loaded, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise RenderError(f"{source}: document {i} is not a mapping (got {type(doc).__name__})")
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
            for j, item in enumerate(doc["items"]):
                if not isinstance(item, dict):
                    raise RenderError(f"{source}: document {i} items[{j}] is not a mapping")
                docs.append(item)
        else:
            docs.append(doc)
    return docs


def to_manifests(docs: Iterable[tuple[str, dict[str, Any]]]) -> list[Manifest]:
    """Validate the basics every object needs and wrap them as Manifests."""
    out: list[Manifest] = []
    for source, doc in docs:
        api, kind = doc.get("apiVersion"), doc.get("kind")
        meta = doc.get("metadata")
        if not isinstance(api, str) or not api:
            raise RenderError(f"{source}: object of kind {kind!r} has no apiVersion")
        if not isinstance(kind, str) or not kind:
            raise RenderError(f"{source}: object with apiVersion {api!r} has no kind")
        if not isinstance(meta, dict):
            raise RenderError(f"{source}: {kind} has no metadata")
        name = meta.get("name")
        if not name and not meta.get("generateName"):
            raise RenderError(f"{source}: {kind} has no metadata.name")
        if name is not None and not isinstance(name, str):
            raise RenderError(f"{source}: {kind} metadata.name must be a string")
        out.append(Manifest(key=ResourceKey.of(doc), body=doc, source=source))
    return out


class Renderer:
    """Runs renders with a bounded pool and an LRU cache keyed by commit and options."""

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        max_bytes: int = 10 * 1024 * 1024,
        max_nodes: int = yamlio.DEFAULT_MAX_NODES,
        concurrency: int = 4,
        cache_size: int = 256,
        helm: str | None = None,
        kubectl: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_nodes = max_nodes
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.cache: OrderedDict[str, Rendered] = OrderedDict()
        self.cache_size = cache_size
        self.helm = helm or os.environ.get("GITOPSD_HELM") or shutil.which("helm") or "helm"
        self.kubectl = kubectl or os.environ.get("GITOPSD_KUBECTL") or shutil.which("kubectl")
        self.renders = 0  # renders actually executed (cache misses)
        # Chart dependencies from chart repositories and OCI registries (set by Engine).
        self.charts: ChartRepos | None = None
        # settings.kustomizeBuildOptions (else argocd-cm's), and kustomize.path.<version>.
        self.kustomize_options: tuple[str, ...] = ()
        self.kustomize_paths: dict[str, str] = {}
        self.index_max_age = 60.0  # how stale a repository index may be for a dependency
        self.plugins: tuple[cmp.Plugin, ...] = ()  # ConfigManagementPlugin documents

    async def render(self, req: RenderRequest, checkout: Path) -> Rendered:
        """Render `req.source` from `checkout`, from cache when this exact input was seen."""
        key = req.cache_key()
        if self.kustomize_options:
            key += ":" + " ".join(self.kustomize_options)
        if self.plugins:
            # A plugin's output depends on its definition and the cluster's API versions.
            blob = repr((self.plugins, req.api_versions)).encode()
            key += ":" + hashlib.sha256(blob).hexdigest()
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        async with self.limiter:
            if key in self.cache:
                return self.cache[key]
            result = await self._render(req, checkout)
        self.renders += 1
        self.cache[key] = result
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return result

    async def _render(self, req: RenderRequest, root: Path) -> Rendered:
        src = req.source
        try:
            app_dir = safe_path(root, src.path or ".", what="source path")
        except SourceError as e:
            raise RenderError(str(e)) from e
        if not app_dir.is_dir():
            raise RenderError(f"source path {src.path!r} does not exist in the repository")
        _refuse_out_of_bounds_links(root, src.path or ".")
        has_kustomization = any((app_dir / f).exists() for f in KUSTOMIZATION_FILES)
        has_chart = (app_dir / "Chart.yaml").exists()
        explicit = src.helm is not None or src.kustomize is not None or src.directory is not None
        discovering = any(p.discovers for p in self.plugins)
        # Explicit settings decide; else Argo CD's discovery: a plugin whose discover rule
        # matches first, then Kustomize, then Helm, then a directory.
        if src.plugin is not None or (not explicit and discovering):
            generated = await self._plugin(req, root, src.plugin is not None)
            if generated is not None:
                return Rendered(tuple(generated), "Plugin")
        if src.helm is not None and src.kustomize is None:
            return Rendered(tuple(await self._helm(req, root, app_dir)), "Helm")
        if src.kustomize is not None or (has_kustomization and src.directory is None):
            return Rendered(tuple(await self._kustomize(req, root, app_dir)), "Kustomize")
        if has_chart and src.directory is None:
            return Rendered(tuple(await self._helm(req, root, app_dir)), "Helm")
        docs, programs = await anyio.to_thread.run_sync(self._directory, req, root, app_dir)
        if programs:
            args = jsonnet.options((src.directory or {}).get("jsonnet"), root=root)
            for path, rel in programs:
                found = await jsonnet.render_file(
                    path,
                    root=root,
                    rel=rel,
                    args=args,
                    timeout=self.timeout,
                    max_bytes=self.max_bytes,
                )
                docs.extend((rel, d) for d in found)
        return Rendered(tuple(to_manifests(docs)), "Directory")

    # --- directory --------------------------------------------------------------------------

    def _directory(
        self, req: RenderRequest, root: Path, app_dir: Path
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[Path, str]]]:
        """The YAML/JSON documents of a directory source, and its Jsonnet programs (evaluated
        by the caller, in a worker process)."""
        opts = req.source.directory or {}
        recurse = bool(opts.get("recurse", False))
        include = str(opts.get("include") or "")
        exclude = str(opts.get("exclude") or "")
        files: list[Path] = []
        programs: list[tuple[Path, str]] = []
        walker = os.walk(app_dir, followlinks=False) if recurse else [(str(app_dir), [], None)]
        for dirpath, dirnames, filenames in walker:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = filenames if filenames is not None else os.listdir(dirpath)
            for name in sorted(names):
                p = Path(dirpath) / name
                rel = str(p.relative_to(app_dir))
                if name.startswith(".") or not _MANIFEST_EXT.match(name):
                    continue
                if include and not glob_match(include, rel):
                    continue
                if exclude and glob_match(exclude, rel):
                    continue
                files.append(p)
        total = 0
        budget = NodeBudget(self.max_nodes)
        out: list[tuple[str, dict[str, Any]]] = []
        for p in files:
            rel_repo = str(p.relative_to(root)) if not p.is_symlink() else str(p)
            try:
                real = safe_path(root, str(p.relative_to(root)), what="manifest file")
            except SourceError as e:
                raise RenderError(str(e)) from e
            if not real.is_file():
                continue
            if p.suffix == ".jsonnet":
                programs.append((real, rel_repo))
                continue
            total += real.stat().st_size
            if total > self.max_bytes:
                raise RenderError(
                    f"manifests under {req.source.path or '.'!r} exceed the size limit of "
                    f"{self.max_bytes} bytes"
                )
            text = decoded(real.read_bytes(), source=rel_repo)
            if p.suffix == ".json":
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError as e:
                    raise RenderError(f"{rel_repo}:{e.lineno}: invalid JSON: {e.msg}") from e
                items = parse_stream(json.dumps(doc), source=rel_repo, budget=budget)
            else:
                items = parse_stream(text, source=rel_repo, budget=budget)
            out.extend((rel_repo, d) for d in items)
        return out, programs

    # --- kustomize --------------------------------------------------------------------------

    def _check_kustomize_paths(self, root: Path, kdir: Path, seen: set[Path]) -> None:
        """Refuse kustomizations that reach outside the repository.

        kustomize confines the *files* a kustomization reads to its own directory, but follows
        *directory* references anywhere (that is how `../base` works), and every field that
        names a kustomization directory or a file can be pointed at the host: so every such
        field is resolved here, and every directory it names is checked the same way."""
        """Refuse kustomizations that reach outside the repository."""
        if kdir in seen:
            return
        seen.add(kdir)
        kfile = next((kdir / f for f in KUSTOMIZATION_FILES if (kdir / f).exists()), None)
        if kfile is None:
            return
        try:
            data = yamlio.load(kfile.read_text()) or {}
        except yaml.YAMLError as e:
            raise RenderError(f"{kfile.relative_to(root)}: invalid YAML: {e}") from e
        if not isinstance(data, dict):
            raise RenderError(f"{kfile.relative_to(root)}: not a mapping")
        refs = _kustomize_refs(data)
        for ref in refs:
            if re.match(r"^[a-z0-9+.-]+://", ref) or ref.startswith(("git@", "github.com/")):
                raise RenderError(
                    f"{kfile.relative_to(root)}: remote resource {ref!r} is not allowed "
                    "(gitopsd renders from the repository only)"
                )
            if "\n" in ref:
                continue  # inline patch
            rel = os.path.relpath(os.path.normpath(kdir / ref), root)
            try:
                target = safe_path(root, rel, what=f"{kfile.relative_to(root)} reference")
            except SourceError as e:
                why = "goes through a symlink that leaves" if "symlink" in str(e) else "is outside"
                raise RenderError(
                    f"{kfile.relative_to(root)}: reference {ref!r} {why} the repository; "
                    "kustomizations may only use files and directories of their own repository"
                ) from e
            if target.is_dir():
                self._check_kustomize_paths(root, target, seen)

    async def _kustomize(self, req: RenderRequest, root: Path, app_dir: Path) -> list[Manifest]:
        try:
            return await self._kustomize_build(req, root, app_dir)
        except RenderError as e:
            # kustomize names files by absolute path: never show where the cache lives.
            raise RenderError(str(e).replace(str(root.resolve()), "<repo>")) from None

    async def _kustomize_build(
        self, req: RenderRequest, root: Path, app_dir: Path
    ) -> list[Manifest]:
        if not self.kubectl:
            raise RenderError("kustomize: kubectl is not installed")
        self._check_kustomize_paths(root, app_dir, set())
        opts = dict(req.source.kustomize or {})
        flags = list(self.kustomize_options)
        version = str(opts.get("version") or "")
        binary = [self.kubectl, "kustomize"]
        if version:
            # Argo CD's kustomize.path.<version>: a kustomize binary of that version.
            path = self.kustomize_paths.get(version)
            if not path:
                raise RenderError(
                    f"kustomize.version {version!r}: argocd-cm has no kustomize.path.{version}"
                )
            binary = [path, "build"]
        helm_charts = "--enable-helm" in flags
        with tempfile.TemporaryDirectory(prefix="gitopsd-kustomize-") as tmp:
            target = app_dir
            env: dict[str, str] = {}
            if helm_charts:
                # helmCharts: kustomize pulls charts into the kustomization's charts/ (and helm
                # keeps caches): work on a copy so the shared checkout stays as committed.
                work = Path(tmp) / "repo"
                await anyio.to_thread.run_sync(lambda: shutil.copytree(root, work, symlinks=True))
                target = work / app_dir.relative_to(root.resolve())
                flags += ["--helm-command", self.helm]
                env = {
                    "HELM_CACHE_HOME": f"{tmp}/helm/cache",
                    "HELM_CONFIG_HOME": f"{tmp}/helm/config",
                    "HELM_DATA_HOME": f"{tmp}/helm/data",
                }
            if any(opts.get(k) for k in _KUSTOMIZE_OVERLAY_KEYS):
                # Argo CD edits the kustomization in a scratch copy; we add an overlay instead.
                work = Path(tmp) / "repo"
                if not work.exists():
                    await anyio.to_thread.run_sync(
                        lambda: shutil.copytree(root, work, symlinks=True)
                    )
                base = work / app_dir.relative_to(root.resolve())
                target = Path(tmp) / "overlay"
                target.mkdir()
                rel = os.path.relpath(base, target)
                (target / "kustomization.yaml").write_text(yamlio.dump(_overlay(opts, rel)))
            result = await self._exec(
                [*binary, str(target), *flags], tool="kustomize", cwd=app_dir, env=env or None
            )
        text = decoded(result, source=f"kustomize build {req.source.path or '.'}")
        docs = parse_stream(
            text,
            source=f"kustomize build {req.source.path or '.'}",
            budget=NodeBudget(self.max_nodes),
        )
        return to_manifests((f"{req.source.path or '.'} (kustomize)", d) for d in docs)

    # --- config management plugins -----------------------------------------------------------

    async def _plugin(
        self, req: RenderRequest, root: Path, explicit: bool
    ) -> list[Manifest] | None:
        """Render with the plugin the source names or discovers; None when the source set
        no `plugin` block and no plugin's discover rule matched."""
        block = req.source.plugin or {}
        name = str(block.get("name") or "")
        where = f"plugin {name}" if name else "plugin"
        path = req.source.path or "."
        if not explicit and not plugins.may_match(self.plugins, root / path):
            return None  # no file rule matches and no find command to ask: not a plugin app
        # The whole repository reaches the plugin, so no link may leave it anywhere.
        _refuse_out_of_bounds_links(root, ".")
        build = cmp.build_env(
            app_name=req.app_name,
            namespace=req.namespace,
            project=req.project,
            revision=req.sha,
            repo_url=req.source.repo_url,
            path=req.source.path,
            target_revision=req.source.target_revision,
            kube_version=req.kube_version,
            api_versions=req.api_versions,
        )

        async def run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> bytes:
            return await plugins.run_command(
                argv, cwd, env, what, timeout=self.timeout, max_bytes=self.max_bytes
            )

        async with plugins.Scratch() as scratch:
            env = {**plugins.base_env(scratch.path), **build, **cmp.plugin_env(block, build)}
            named = next((p for p in self.plugins if p.full_name == name), None)
            preserve = named.preserve_file_mode if named is not None else False
            work = scratch.path / "repo"
            await anyio.to_thread.run_sync(
                lambda: plugins.copy_checkout(root, work, preserve_modes=preserve)
            )
            app_dir = work / path
            candidates = [named] if named is not None else list(self.plugins)
            matches = await plugins.discover(
                [p for p in candidates if p.discovers], app_dir, env, run
            )
            chosen = cmp.select(self.plugins, name, matches)
            if chosen is None:
                if not explicit:
                    return None
                raise RenderError(_no_plugin(name, self.plugins, path))
            if not name and chosen.preserve_file_mode:
                # Discovered: copy again with the modes this plugin asked for.
                await anyio.to_thread.run_sync(shutil.rmtree, work)
                await anyio.to_thread.run_sync(
                    lambda: plugins.copy_checkout(root, work, preserve_modes=True)
                )
            output = await plugins.generate(chosen, app_dir, env, run)
        source = f"{path} ({where if name else f'plugin {chosen.full_name}'})"
        text = decoded(output, source=source)
        docs = parse_stream(text, source=source, budget=NodeBudget(self.max_nodes))
        return to_manifests((source, d) for d in docs)

    # --- helm -------------------------------------------------------------------------------

    async def _helm(self, req: RenderRequest, root: Path, chart: Path) -> list[Manifest]:
        opts = dict(req.source.helm or {})
        if not (chart / "Chart.yaml").exists():
            raise RenderError(f"helm: {req.source.path!r} has no Chart.yaml")
        missing = self._missing_dependencies(chart, root)
        release = str(opts.get("releaseName") or req.app_name)
        namespace = str(opts.get("namespace") or req.namespace or "default")
        argv = [self.helm, "template", release, str(chart), "--namespace", namespace]
        if not opts.get("skipCrds"):
            argv.append("--include-crds")
        if opts.get("skipSchemaValidation"):
            argv.append("--skip-schema-validation")
        kube_version = str(opts.get("kubeVersion") or req.kube_version or "")
        if kube_version:
            argv += ["--kube-version", kube_version]
        for api in opts.get("apiVersions") or []:
            argv += ["--api-versions", str(api)]
        with tempfile.TemporaryDirectory(prefix="gitopsd-helm-") as tmp:
            if missing:
                # As `helm dependency build`: a copy of the chart with its dependencies in
                # charts/ (the checkout is shared and stays untouched).
                argv[3] = str(await self._with_dependencies(chart, root, missing, Path(tmp)))
            refs = {name: Path(checkout) for name, _, checkout in req.refs}
            for vf in opts.get("valueFiles") or []:
                vf = str(vf)
                if re.match(r"^[a-z0-9+.-]+://", vf):
                    raise RenderError(f"helm.valueFiles: remote value file {vf!r} is not allowed")
                try:
                    if vf.startswith("$"):
                        # Multi-source: `$ref/path` is a file of the source with `ref: ref`.
                        name, _, inner = vf[1:].partition("/")
                        if name not in refs:
                            raise RenderError(
                                f"helm.valueFiles: {vf!r} names ref {name!r}, but no source of "
                                "the app has that `ref`"
                            )
                        path = safe_path(refs[name], inner or ".", what="helm value file")
                    else:
                        rel = os.path.relpath(os.path.normpath(chart / vf), root.resolve())
                        path = safe_path(root, rel, what="helm value file")
                except SourceError as e:
                    raise RenderError(str(e)) from e
                if not path.is_file():
                    if opts.get("ignoreMissingValueFiles"):
                        continue
                    raise RenderError(f"helm.valueFiles: {vf!r} does not exist")
                argv += ["--values", str(path)]
            inline: Any = None
            if opts.get("valuesObject") is not None:
                inline = opts["valuesObject"]
            elif opts.get("values"):
                raw = opts["values"]
                try:
                    inline = yamlio.load(raw) if isinstance(raw, str) else raw
                except yaml.YAMLError as e:
                    raise RenderError(f"helm.values: invalid YAML: {e}") from e
            if inline is not None:
                if not isinstance(inline, dict):
                    raise RenderError("helm.values must be a mapping")
                vpath = Path(tmp) / "values.yaml"
                vpath.write_text(yamlio.dump(inline))
                argv += ["--values", str(vpath)]
            for i, p in enumerate(opts.get("parameters") or []):
                if not isinstance(p, dict) or "name" not in p:
                    raise RenderError(f"helm.parameters[{i}]: needs name and value")
                flag = "--set-string" if p.get("forceString") else "--set"
                argv += [flag, f"{p['name']}={p.get('value', '')}"]
            for i, p in enumerate(opts.get("fileParameters") or []):
                if not isinstance(p, dict) or "name" not in p or "path" not in p:
                    raise RenderError(f"helm.fileParameters[{i}]: needs name and path")
                rel = os.path.relpath(os.path.normpath(chart / str(p["path"])), root.resolve())
                try:
                    fpath = safe_path(root, rel, what="helm file parameter")
                except SourceError as e:
                    raise RenderError(str(e)) from e
                argv += ["--set-file", f"{p['name']}={fpath}"]
            env = {
                "HELM_CACHE_HOME": f"{tmp}/cache",
                "HELM_CONFIG_HOME": f"{tmp}/config",
                "HELM_DATA_HOME": f"{tmp}/data",
                "KUBECONFIG": "/dev/null",
            }
            out = await self._exec(argv, tool="helm template", cwd=chart, env=env)
        where = req.source.path or "."
        return self._split_helm(decoded(out, source=f"helm template {where}"), where)

    def _missing_dependencies(self, chart: Path, root: Path) -> list[dict[str, str]]:
        """Chart.yaml's dependencies that charts/ does not hold (file:// ones confined to the
        repository)."""
        try:
            meta = yamlio.load((chart / "Chart.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise RenderError(f"{chart.relative_to(root.resolve())}/Chart.yaml: {e}") from e
        deps = meta.get("dependencies") if isinstance(meta, dict) else None
        missing = []
        for dep in deps or []:
            if not isinstance(dep, dict):
                continue
            name, repo = str(dep.get("name", "")), str(dep.get("repository", ""))
            if repo.startswith("file://"):
                rel = os.path.relpath(os.path.normpath(chart / repo[7:]), root.resolve())
                try:
                    safe_path(root, rel, what=f"chart dependency {name}")
                except SourceError as e:
                    raise RenderError(str(e)) from e
            vendored = (
                list((chart / "charts").glob(f"{name}*")) if (chart / "charts").is_dir() else []
            )
            if not vendored:
                missing.append(
                    {"name": name, "repository": repo, "version": str(dep.get("version") or "*")}
                )
        return missing

    async def _with_dependencies(
        self, chart: Path, root: Path, missing: list[dict[str, str]], tmp: Path
    ) -> Path:
        """A copy of `chart` under `tmp` whose charts/ holds every missing dependency: from
        the repository (file://) or from a chart repository / OCI registry through the chart
        cache (fetched once per version, as any chart)."""
        work = tmp / "chart" / chart.name
        await anyio.to_thread.run_sync(_copy_tree, chart, work)
        (work / "charts").mkdir(exist_ok=True)
        for dep in missing:
            name, repo, version = dep["name"], dep["repository"], dep["version"]
            target = work / "charts" / name
            if repo.startswith(("@", "alias:")):
                alias = repo[1:] if repo.startswith("@") else repo[len("alias:") :]
                url = self.charts.aliased(alias) if self.charts is not None else ""
                if not url:
                    raise RenderError(
                        f"helm: chart dependency {name!r} from {repo!r}: no repositories entry "
                        f"is named {alias!r}"
                    )
                repo = url
            if repo.startswith("file://"):
                rel = os.path.relpath(os.path.normpath(chart / repo[7:]), root.resolve())
                try:
                    source = safe_path(root, rel, what=f"chart dependency {name}")
                except SourceError as e:
                    raise RenderError(str(e)) from e
            elif repo.startswith(("http://", "https://", "oci://")):
                if self.charts is None:
                    raise RenderError(f"helm: chart dependency {name!r}: no chart cache")
                ref = await self.charts.resolve(repo, name, version, max_age=self.index_max_age)
                source = await self.charts.fetch(ref)
            else:
                raise RenderError(
                    f"helm: chart dependency {name!r} from {repo!r}: use the repository's URL "
                    "(http(s):// or oci://), file://, or @name of a repositories entry"
                )
            await anyio.to_thread.run_sync(_copy_tree, source, target)
        return work

    def _split_helm(self, text: str, path: str) -> list[Manifest]:
        budget = NodeBudget(self.max_nodes)
        out: list[tuple[str, dict[str, Any]]] = []
        for chunk in _DOC_SPLIT.split(text):
            if not chunk.strip():
                continue
            m = _HELM_SOURCE.search(chunk)
            source = f"{path}/{m.group(1).split('/', 1)[-1]}" if m else f"{path} (helm)"
            out.extend((source, d) for d in parse_stream(chunk, source=source, budget=budget))
        return to_manifests(out)

    async def _exec(
        self,
        argv: list[str],
        *,
        tool: str,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> bytes:
        try:
            result = await proc.run(
                argv, cwd=cwd, env=env, timeout=self.timeout, max_output=self.max_bytes
            )
        except proc.CommandTimeout as e:
            raise RenderError(f"{tool} timed out after {self.timeout:g}s") from e
        except proc.OutputTooLarge as e:
            raise RenderError(
                f"{tool} output exceeds the size limit of {self.max_bytes} bytes"
            ) from e
        except FileNotFoundError as e:
            raise RenderError(f"{tool}: {argv[0]} is not installed") from e
        if result.returncode != 0:
            raise RenderError(f"{tool} failed: {result.err_text}")
        return result.stdout


def _no_plugin(name: str, available: tuple[cmp.Plugin, ...], path: str) -> str:
    names = ", ".join(sorted(p.full_name for p in available)) or "none"
    if not name:
        return (
            f"plugin: no configured plugin's discover rule matches {path!r} "
            f"(configured plugins: {names})"
        )
    found = next((p for p in available if p.full_name == name), None)
    if found is None:
        return f"plugin {name!r} is not configured (configured plugins: {names})"
    return f"plugin {name!r}: its discover rule does not match {path!r}"


_KUSTOMIZE_OVERLAY_KEYS = (
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "commonAnnotations",
    "images",
    "namespace",
    "replicas",
    "patches",
    "components",
    "labelWithoutSelector",
)


def _overlay(opts: dict[str, Any], base: str) -> dict[str, Any]:
    """A kustomization applying an Application's `kustomize` options over the `base` dir."""
    k: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
    }
    for key in ("namePrefix", "nameSuffix", "namespace", "patches"):
        if opts.get(key):
            k[key] = opts[key]
    if opts.get("commonLabels"):
        k["labels"] = [
            {
                "pairs": opts["commonLabels"],
                "includeSelectors": not opts.get("labelWithoutSelector", False),
                "includeTemplates": bool(opts.get("labelIncludeTemplates", False)),
            }
        ]
    if opts.get("commonAnnotations"):
        k["commonAnnotations"] = opts["commonAnnotations"]
    if opts.get("components"):
        k["components"] = [f"{base}/{c}" for c in opts["components"]]
    if opts.get("images"):
        images = []
        for img in opts["images"]:
            # Argo CD format: [old=]new[:tag|@digest]
            text = str(img)
            old, _, new = text.partition("=") if "=" in text else (text, "", text)
            name = re.split(r"[:@]", old.rsplit("/", 1)[-1])[0]
            old_name = old.split("@")[0]
            old_name = (
                old_name.rsplit(":", 1)[0] if ":" in old_name.rsplit("/", 1)[-1] else old_name
            )
            entry: dict[str, str] = {"name": old_name or name}
            if "@" in new:
                new_name, digest = new.split("@", 1)
                entry["newName"], entry["digest"] = new_name, digest
            elif ":" in new.rsplit("/", 1)[-1]:
                new_name, tag = new.rsplit(":", 1)
                entry["newName"], entry["newTag"] = new_name, tag
            else:
                entry["newName"] = new
            images.append(entry)
        k["images"] = images
    if opts.get("replicas"):
        k["replicas"] = [{"name": r["name"], "count": int(r["count"])} for r in opts["replicas"]]
    return k


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a chart: links are followed only as copies (the checkout already refused links
    leaving the repository)."""
    shutil.copytree(source, target, symlinks=False)
