"""The configuration contract: settings file + Argo CD documents, parsed into frozen dataclasses.

`load(path)` reads the settings file and every file its `applications` globs match, validates
everything, and returns a `Config`. Errors name file, document and field; unknown fields are
collected as warnings. Pure apart from reading the files.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon import cmp, configfiles, customizations, names, yamlio
from daemon.appproject import DEFAULT_PROJECT, AppProject, OrphanedResources
from daemon.appproject.roles import parse_roles
from daemon.appproject.windows import project_sync_windows
from daemon.customizations import Customizations
from daemon.durations import parse_go_duration
from daemon.errors import ConfigError
from daemon.notify import config as notify_config
from daemon.rollouts import egress

IN_CLUSTER_SERVER = "https://kubernetes.default.svc"
IN_CLUSTER_NAME = "in-cluster"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
RESOURCES_FINALIZER_BG = "resources-finalizer.argocd.argoproj.io/background"
ARGO_API = "argoproj.io/v1alpha1"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def parse_duration(value: Any, *, where: str) -> float:
    """Seconds from a Go-style duration ('90s', '3m', '1h30m') or a bare number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        raise ConfigError(
            f"{where}: invalid duration {value!r} (examples: 30s, 3m, 1h30m)"
        ) from None
    if seconds < 0:
        raise ConfigError(f"{where}: a duration must not be negative, got {value!r}")
    return seconds


class _Fields:
    """Reads one mapping, remembering which keys were used so the rest can be reported."""

    def __init__(self, data: Any, where: str, warnings: list[str]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.where = where
        self.warnings = warnings
        self.used: set[str] = set()

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(f"{self.where}.{key}: required field is missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kind) or (bool not in kinds and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(
                f"{self.where}.{key}: expected {names}, got {type(value).__name__} {value!r}"
            )
        return value

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        v = self._get(key, (str, int, float), default, required)
        return v if isinstance(v, str) else str(v)

    def bool(self, key: str, default: bool = False) -> bool:
        v = self._get(key, (bool, str), default, False)
        if isinstance(v, str):
            if v.lower() not in ("true", "false"):
                raise ConfigError(f"{self.where}.{key}: expected true or false, got {v!r}")
            return v.lower() == "true"
        return bool(v)

    def int(self, key: str, default: int | None = None) -> int | None:
        v = self._get(key, int, default, False)
        return None if v is None else int(v)

    def map(self, key: str) -> dict[str, Any]:
        return dict(self._get(key, dict, {}, False))

    def list(self, key: str) -> list[Any]:
        return list(self._get(key, list, [], False))

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def done(self, *, known_extra: tuple[str, ...] = ()) -> None:
        for key in self.data:
            if key not in self.used and key not in known_extra:
                self.warnings.append(f"{self.where}.{key}: unknown field (ignored)")


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How a destination cluster is reached."""

    name: str
    server: str
    kubeconfig: str = ""
    context: str = ""
    bearer_token_file: str = ""
    ca_file: str = ""
    insecure: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    qps: float = 500.0  # API requests per second to this cluster (token bucket)
    burst: int = 1000


@dataclass(frozen=True, slots=True)
class RepositoryCredentials:
    """Credentials for every repository URL starting with `url`."""

    url: str
    username: str = ""
    password_file: str = ""
    ssh_private_key_file: str = ""
    known_hosts_file: str = ""
    insecure: bool = False
    type: str = "git"  # git | helm (chart repositories; also recognised by `chart:` sources)
    ca_file: str = ""  # helm: the CA bundle that signs the repository's certificate
    tls_client_cert_file: str = ""  # helm: a client certificate (and its key) for mTLS
    tls_client_key_file: str = ""
    enable_oci: bool = False  # Argo CD's `enableOCI`: a scheme-less registry/path is OCI
    force_http: bool = False  # Argo CD's `insecureOCIForceHttp`: the registry speaks plain HTTP
    name: str = ""  # Argo CD's repository name: chart dependencies may say `@name`/`alias:name`


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token for the HTTP API."""

    name: str
    token_file: str
    role: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Daemon-wide settings; every field has a documented default."""

    reconcile_interval: float = 180.0  # seconds between polls of an app's source
    reconcile_jitter: float = 0.0  # up to this many seconds added to each interval
    max_concurrent_syncs: int = 10  # syncs running at once
    max_concurrent_renders: int = 4  # renders (helm/kustomize processes) at once
    kube_parallelism: int = 32  # API writes in flight per sync
    repo_timeout: float = 60.0  # timeout of one git or render command
    health_timeout: float = 300.0  # how long one wave may wait to become healthy
    sync_wave_delay: float = 2.0  # Argo CD's ARGOCD_SYNC_WAVE_DELAY between waves
    max_manifest_bytes: int = 10 * 1024 * 1024  # combined rendered size of one app
    max_yaml_nodes: int = 1_000_000  # nodes one YAML stream may expand to (alias bombs)
    # Helm charts from repositories and registries (helm's own defaults for a chart's size).
    max_chart_bytes: int = 100 * 1024 * 1024  # unpacked size of one chart (and of its archive)
    max_chart_files: int = 10_000  # files and directories in one chart
    max_chart_file_bytes: int = 5 * 1024 * 1024  # one file of a chart
    max_chart_index_bytes: int = 64 * 1024 * 1024  # one chart repository's index.yaml
    cache_dir: str = "/var/cache/gitopsd"
    state_dir: str = "/var/lib/gitopsd"
    inventory_namespace: str = "gitopsd-system"  # where per-app inventories live in-cluster
    listen: str = "127.0.0.1:8080"
    self_heal_debounce: float = 1.0  # seconds to batch drift events before a self-heal
    # An app gone from the config files is removed (its resources deleted, with the finalizer)
    # only if it is still gone when the files are read again this many seconds later.
    app_removal_grace_period: float = 15.0
    # Argo CD gives Application resources no health check: a parent does not wait for its
    # children. True restores the wait (what Argo CD's docs add with a Lua health check).
    app_of_apps_health_gate: bool = False
    metrics_token_file: str = ""  # when set, /metrics needs this bearer token
    # The daemon's local admin token (mode 0600), what API writes need without apiTokens
    # ("": stateDir/local-api-token).
    local_token_file: str = ""
    # Argo CD's application.resourceTrackingMethod: annotation | label | annotation+label
    # ("" = argocd-cm's, else annotation).
    resource_tracking_method: str = ""
    cluster_probe_interval: float = 5.0  # how often each cluster's API server is asked
    cluster_unreachable_after: float = 10.0  # failing this long makes a cluster unreachable
    # Argo Rollouts kinds: install gitopsd's CRDs when an app has such resources and the cluster
    # serves none; run the controller for Rollouts no other controller manages (auto), for all
    # (always) or for none (never).
    rollouts_install_crds: bool = True
    rollouts_controller: str = "auto"
    # settings.rollouts.analysis.allowedAddresses: where every app's analysis metrics may
    # reach (URL prefixes or IP networks); an AppProject's annotation adds its own.
    analysis_allowed: tuple[egress.Entry, ...] = ()
    # Several replicas sharing the apps through Leases (daemon.ha); off: one process owns all.
    sharding_enabled: bool = False
    sharding_cluster: str = ""  # the cluster holding the Leases ("": the first configured one)
    sharding_namespace: str = ""  # their namespace ("": inventoryNamespace)
    sharding_member_id: str = ""  # this replica's id ("": $POD_NAME, else the host name)
    sharding_lease_duration: float = 10.0
    sharding_renew_interval: float = 3.0
    sharding_algorithm: str = "rendezvous"  # rendezvous | legacy | round-robin
    sharding_advertise_url: str = ""  # where the others reach this API ("": from listen)
    # Where app status and operation state live: files under stateDir (local) or one ConfigMap
    # per app in the control cluster (kubernetes), which several replicas need.
    state_store: str = "local"
    # Files of ASCII-armored public keys that signed commits are verified against (projects
    # with signatureKeys); Argo CD keeps them in argocd-gpg-keys-cm.
    gpg_keys: tuple[str, ...] = ()
    # Flags added to every kustomize build (Argo CD's kustomize.buildOptions), checked at load.
    kustomize_build_options: tuple[str, ...] = ()
    # settings.backup: a scheduled backup archive (cron, UTC), the newest `keep` kept in `dir`.
    backup_schedule: str = ""
    backup_dir: str = ""
    backup_keep: int = 7
    backup_include_secrets: bool = False
    backup_key_file: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """A fully validated configuration."""

    path: str
    settings: Settings
    clusters: tuple[ClusterConfig, ...]
    repositories: tuple[RepositoryCredentials, ...]
    applications: tuple[Application, ...]
    projects: tuple[AppProject, ...]
    application_sets: tuple[ApplicationSetDoc, ...] = ()
    api_tokens: tuple[ApiToken, ...] = ()
    webhooks: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()  # the `applications` globs, matched again by the watcher
    documents: dict[str, int] = field(default_factory=dict)  # documents read per app file
    customizations: Customizations = field(default_factory=Customizations)  # from argocd-cm
    plugins: tuple[cmp.Plugin, ...] = ()  # ConfigManagementPlugin documents
    notifications: notify_config.Notifications | None = None  # argocd-notifications-cm

    def app(self, name: str) -> Application:
        """The application called `name`."""
        for app in self.applications:
            if app.name == name:
                return app
        raise KeyError(name)

    def project(self, name: str) -> AppProject | None:
        """The project called `name`; `default` always exists."""
        for p in self.projects:
            if p.name == name:
                return p
        if name == "default":
            return DEFAULT_PROJECT
        return None


# --- Argo CD documents ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One `spec.source` (or entry of `spec.sources`)."""

    repo_url: str
    path: str = ""
    target_revision: str = "HEAD"
    chart: str = ""
    ref: str = ""
    name: str = ""
    helm: dict[str, Any] | None = None
    kustomize: dict[str, Any] | None = None
    directory: dict[str, Any] | None = None
    plugin: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an app's resources go."""

    server: str = ""
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Automated:
    """`syncPolicy.automated`."""

    enabled: bool = True
    prune: bool = False
    self_heal: bool = False
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """`syncPolicy.retry` with Argo CD's defaults (5s x2, capped at 3m)."""

    limit: int = 0
    duration: float = 5.0
    factor: int = 2
    max_duration: float = 180.0
    refresh: bool = False

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        wait = float(self.duration * (self.factor**attempt))
        return min(wait, self.max_duration) if self.max_duration > 0 else wait


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """`spec.syncPolicy`."""

    automated: Automated | None = None
    sync_options: tuple[str, ...] = ()
    retry: Retry | None = None
    managed_namespace_metadata: dict[str, dict[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class Application:
    """An Argo CD Application as gitopsd uses it; `raw` keeps the document for the API."""

    name: str
    namespace: str
    project: str
    sources: tuple[Source, ...]
    destination: Destination
    sync_policy: SyncPolicy
    ignore_differences: tuple[dict[str, Any], ...] = ()
    revision_history_limit: int = 10
    finalizers: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    file: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def instance_name(self) -> str:
        """The name used in tracking ids (Argo CD's InstanceName for the control namespace)."""
        return self.name

    @property
    def cascade_delete(self) -> bool:
        """True when removing the app must delete its resources (resources finalizer)."""
        return any(f in (RESOURCES_FINALIZER, RESOURCES_FINALIZER_BG) for f in self.finalizers)

    @property
    def manifest_sources(self) -> tuple[Source, ...]:
        """Sources that produce manifests (a `ref`-only source just lends files)."""
        return tuple(s for s in self.sources if not (s.ref and not s.path and not s.chart))


@dataclass(frozen=True, slots=True)
class ApplicationSetDoc:
    """An ApplicationSet document; generation happens at run time (it may read git)."""

    name: str
    where: str
    raw: dict[str, Any] = field(compare=False, hash=False)


_APP_SPEC_KNOWN = (
    "source",
    "sources",
    "destination",
    "project",
    "syncPolicy",
    "ignoreDifferences",
    "revisionHistoryLimit",
    "info",
    "sourceHydrator",
)


# The fields Argo CD's ApplicationSource{Helm,Kustomize,Directory} know: others are warned about,
# as unknown top-level fields are (a typo such as `valueFile` would otherwise do nothing).
_SOURCE_BLOCKS: dict[str, frozenset[str]] = {
    "helm": frozenset(
        [
            "valueFiles",
            "values",
            "valuesObject",
            "parameters",
            "fileParameters",
            "releaseName",
            "passCredentials",
            "ignoreMissingValueFiles",
            "skipCrds",
            "skipSchemaValidation",
            "skipTests",
            "version",
            "namespace",
            "kubeVersion",
            "apiVersions",
        ]
    ),
    "kustomize": frozenset(
        [
            "namePrefix",
            "nameSuffix",
            "images",
            "commonLabels",
            "commonAnnotations",
            "commonAnnotationsEnvsubst",
            "forceCommonLabels",
            "forceCommonAnnotations",
            "namespace",
            "version",
            "replicas",
            "patches",
            "components",
            "ignoreMissingComponents",
            "labelWithoutSelector",
            "labelIncludeTemplates",
            "kubeVersion",
            "apiVersions",
        ]
    ),
    "directory": frozenset({"recurse", "jsonnet", "exclude", "include"}),
}
_JSONNET_FIELDS = frozenset({"extVars", "tlas", "libs"})


def _warn_unknown(block: Any, known: frozenset[str], where: str, warnings: list[str]) -> None:
    if isinstance(block, dict):
        for key in block:
            if key not in known:
                warnings.append(f"{where}.{key}: unknown field (ignored)")


def _parse_source(data: Any, where: str, warnings: list[str]) -> Source:
    f = _Fields(data, where, warnings)
    for block, known in _SOURCE_BLOCKS.items():
        _warn_unknown(f.data.get(block), known, f"{where}.{block}", warnings)
    directory = f.data.get("directory")
    if isinstance(directory, dict):
        jsonnet = directory.get("jsonnet")
        _warn_unknown(jsonnet, _JSONNET_FIELDS, f"{where}.directory.jsonnet", warnings)
    src = Source(
        repo_url=f.text("repoURL", required=True),
        path=f.text("path"),
        target_revision=f.text("targetRevision", "HEAD") or "HEAD",
        chart=f.text("chart"),
        ref=f.text("ref"),
        name=f.text("name"),
        helm=f.map("helm") or None,
        kustomize=f.map("kustomize") or None,
        directory=f.map("directory") or None,
        plugin=f.map("plugin") if f.data.get("plugin") is not None else None,
    )
    f.done()
    if not src.repo_url.strip():
        raise ConfigError(f"{where}.repoURL: must not be empty")
    if src.chart and src.path:
        raise ConfigError(f"{where}: set either chart (helm repository) or path (git), not both")
    if src.plugin is not None:
        cmp.check_source_plugin(src.plugin, f"{where}.plugin")
        if src.chart:
            raise ConfigError(f"{where}.plugin: a plugin renders a path in git, not a chart")
    kinds = [k for k in ("helm", "kustomize", "directory") if getattr(src, k)]
    kinds += ["plugin"] if src.plugin is not None else []
    if len(kinds) > 1:
        raise ConfigError(f"{where}: multiple source types {kinds} set; choose one")
    return src


def _parse_sync_policy(data: Any, where: str, warnings: list[str]) -> SyncPolicy:
    f = _Fields(data, where, warnings)
    automated: Automated | None = None
    auto_raw = f.raw("automated")
    if auto_raw is not None:
        a = _Fields(auto_raw, f"{where}.automated", warnings)
        automated = Automated(
            enabled=a.bool("enabled", True),
            prune=a.bool("prune"),
            self_heal=a.bool("selfHeal"),
            allow_empty=a.bool("allowEmpty"),
        )
        a.done()
        if not automated.enabled:
            automated = None
    retry: Retry | None = None
    retry_raw = f.raw("retry")
    if retry_raw is not None:
        r = _Fields(retry_raw, f"{where}.retry", warnings)
        b = _Fields(r.raw("backoff"), f"{where}.retry.backoff", warnings)
        limit = r.int("limit", 0)
        retry = Retry(
            limit=0 if limit is None else limit,
            duration=parse_duration(b.raw("duration") or "5s", where=f"{b.where}.duration"),
            factor=b.int("factor", 2) or 2,
            max_duration=parse_duration(
                b.raw("maxDuration") or "3m", where=f"{b.where}.maxDuration"
            ),
            refresh=r.bool("refresh"),
        )
        b.done()
        r.done()
    options = f.list("syncOptions")
    for i, opt in enumerate(options):
        if not isinstance(opt, str) or "=" not in opt:
            raise ConfigError(f"{where}.syncOptions[{i}]: expected 'Key=Value', got {opt!r}")
    mnm_raw = f.raw("managedNamespaceMetadata")
    mnm: dict[str, dict[str, str]] | None = None
    if mnm_raw is not None:
        m = _Fields(mnm_raw, f"{where}.managedNamespaceMetadata", warnings)
        mnm = {
            "labels": {str(k): str(v) for k, v in m.map("labels").items()},
            "annotations": {str(k): str(v) for k, v in m.map("annotations").items()},
        }
        m.done()
    f.done()
    return SyncPolicy(
        automated=automated,
        sync_options=tuple(str(o).strip() for o in options),
        retry=retry,
        managed_namespace_metadata=mnm,
    )


def parse_application(doc: dict[str, Any], *, where: str, warnings: list[str]) -> Application:
    """Validate one Application document."""
    meta = _Fields(doc.get("metadata"), f"{where}.metadata", warnings)
    name = meta.text("name", required=True)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}.metadata.name: {name!r} is not a valid Kubernetes name")
    namespace = meta.text("namespace", "argocd") or "argocd"
    finalizers = tuple(str(x) for x in meta.list("finalizers"))
    labels = tuple(sorted((str(k), str(v)) for k, v in meta.map("labels").items()))
    annotations = tuple(sorted((str(k), str(v)) for k, v in meta.map("annotations").items()))
    where = f"{where} (Application/{name})"
    spec = _Fields(doc.get("spec"), f"{where}.spec", warnings)
    sources: list[Source] = []
    many = spec.list("sources")
    one = spec.raw("source")
    if many:
        sources = [
            _parse_source(s, f"{where}.spec.sources[{i}]", warnings) for i, s in enumerate(many)
        ]
    elif one is not None:
        sources = [_parse_source(one, f"{where}.spec.source", warnings)]
    else:
        raise ConfigError(f"{where}.spec.source: required field is missing")
    d = _Fields(spec.raw("destination"), f"{where}.spec.destination", warnings)
    destination = Destination(
        server=d.text("server").rstrip("/"), name=d.text("name"), namespace=d.text("namespace")
    )
    d.done()
    if destination.namespace and not DNS1123_LABEL.match(destination.namespace):
        raise ConfigError(
            f"{where}.spec.destination.namespace: {destination.namespace!r} is not a valid "
            "namespace name (a DNS-1123 label: lower-case alphanumerics and '-', at most 63)"
        )
    if destination.server and destination.name:
        raise ConfigError(
            f"{where}.spec.destination: application destination can't have both name and "
            "server defined"
        )
    if not destination.server and not destination.name:
        raise ConfigError(f"{where}.spec.destination: set server or name")
    project = spec.text("project", required=True)
    policy = _parse_sync_policy(spec.raw("syncPolicy"), f"{where}.spec.syncPolicy", warnings)
    ignore = spec.list("ignoreDifferences")
    for i, item in enumerate(ignore):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}.spec.ignoreDifferences[{i}]: expected a mapping")
    limit = spec.int("revisionHistoryLimit", 10)
    spec.done(known_extra=_APP_SPEC_KNOWN)
    meta.done(known_extra=("labels", "annotations", "uid", "resourceVersion", "generation"))
    return Application(
        name=name,
        namespace=namespace,
        project=project,
        sources=tuple(sources),
        destination=destination,
        sync_policy=policy,
        ignore_differences=tuple(ignore),
        revision_history_limit=10 if limit is None else max(0, limit),
        finalizers=finalizers,
        labels=labels,
        annotations=annotations,
        file=where.split(":", 1)[0],
        raw=doc,
    )


def parse_project(doc: dict[str, Any], *, where: str, warnings: list[str]) -> AppProject:
    """Validate one AppProject document (rules are enforced elsewhere)."""
    meta = _Fields(doc.get("metadata"), f"{where}.metadata", warnings)
    name = meta.text("name", required=True)
    where = f"{where} (AppProject/{name})"
    spec = _Fields(doc.get("spec"), f"{where}.spec", warnings)

    def entries(key: str) -> tuple[dict[str, str], ...]:
        out = []
        for i, item in enumerate(spec.list(key)):
            if not isinstance(item, dict):
                raise ConfigError(f"{where}.spec.{key}[{i}]: expected a mapping")
            out.append({str(k): str(v) for k, v in item.items()})
        return tuple(out)

    ns_white_raw = spec.raw("namespaceResourceWhitelist")
    project = AppProject(
        name=name,
        source_repos=tuple(str(s) for s in spec.list("sourceRepos")),
        destinations=entries("destinations"),
        cluster_resource_whitelist=entries("clusterResourceWhitelist"),
        cluster_resource_blacklist=entries("clusterResourceBlacklist"),
        namespace_resource_whitelist=(
            entries("namespaceResourceWhitelist") if ns_white_raw is not None else None
        ),
        namespace_resource_blacklist=entries("namespaceResourceBlacklist"),
        signature_keys=tuple(
            _key_id(k.get("keyID", ""), f"{where}.spec.signatureKeys[{i}]")
            for i, k in enumerate(entries("signatureKeys"))
        ),
        orphaned_resources=_orphaned(spec.raw("orphanedResources"), where),
        analysis_allowed=_egress_entries(
            [str((meta.map("annotations")).get(egress.ANNOTATION) or "")],
            f"{where}.metadata.annotations[{egress.ANNOTATION}]",
        ),
        file=where.split(":", 1)[0],
        raw=doc,
    )
    spec.done(
        known_extra=(
            "description",
            "roles",
            "syncWindows",
            "sourceNamespaces",
            "destinationServiceAccounts",
            "permitOnlyProjectScopedClusters",
        )
    )
    return project


def _orphaned(raw: Any, where: str) -> OrphanedResources | None:
    """`spec.orphanedResources` ({warn, ignore: [{group, kind, name}]}); None when unset."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.spec.orphanedResources: expected a mapping")
    ignore = []
    for i, item in enumerate(raw.get("ignore") or []):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}.spec.orphanedResources.ignore[{i}]: expected a mapping")
        ignore.append(
            (str(item.get("group", "")), str(item.get("kind", "")), str(item.get("name", "")))
        )
    warn = raw.get("warn")
    return OrphanedResources(warn=True if warn is None else bool(warn), ignore=tuple(ignore))


def _resolve(base: Path, value: str) -> str:
    if not value:
        return ""
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def _rollouts(r: _Fields, d: Settings) -> dict[str, Any]:
    """settings.rollouts: {installCRDs, controller}."""
    mode = r.text("controller", d.rollouts_controller)
    if mode not in ("auto", "always", "never"):
        raise ConfigError(f"{r.where}.controller: must be auto, always or never, not {mode!r}")
    a = _Fields(r.raw("analysis") or {}, f"{r.where}.analysis", r.warnings)
    allowed = a.list("allowedAddresses")
    a.done()
    out = {
        "rollouts_install_crds": r.bool("installCRDs", d.rollouts_install_crds),
        "rollouts_controller": mode,
        "analysis_allowed": _egress_entries(
            [str(v) for v in allowed], f"{a.where}.allowedAddresses"
        ),
    }
    r.done()
    return out


def _egress_entries(values: list[str], where: str) -> tuple[egress.Entry, ...]:
    try:
        return egress.parse_entries(values, where=where)
    except egress.EgressError as e:
        raise ConfigError(str(e)) from e


def _backup(b: _Fields, d: Settings, base: Path) -> dict[str, Any]:
    """settings.backup: {schedule, dir, keep, includeSecrets, keyFile}."""
    from daemon.appproject.cron import parse_cron

    schedule = b.text("schedule", d.backup_schedule)
    directory = _resolve(base, b.text("dir", d.backup_dir))
    if schedule:
        try:
            parse_cron(schedule)
        except ValueError as e:
            raise ConfigError(f"{b.where}.schedule: {e}") from e
        if not directory:
            raise ConfigError(f"{b.where}.dir: where scheduled backups go is required")
    keep = b.int("keep", d.backup_keep)
    if keep is None or keep < 1:
        raise ConfigError(f"{b.where}.keep: must be a positive integer")
    include = b.bool("includeSecrets", d.backup_include_secrets)
    key_file = _resolve(base, b.text("keyFile", d.backup_key_file))
    if include and not key_file:
        raise ConfigError(f"{b.where}.keyFile: includeSecrets needs a key file")
    out = {
        "backup_schedule": schedule,
        "backup_dir": directory,
        "backup_keep": keep,
        "backup_include_secrets": include,
        "backup_key_file": key_file,
    }
    b.done()
    return out


KUSTOMIZE_FLAGS = {
    "--enable-helm": False,  # flag -> takes a value
    "--load-restrictor": True,
    "--helm-api-versions": True,
    "--helm-kube-version": True,
    "--reorder": True,
}


def kustomize_options(text: str, where: str) -> tuple[str, ...]:
    """Kustomize build flags, as Argo CD's `kustomize.buildOptions`: only flags that render;
    the ones that run code or containers (exec and container plugins, mounts, network) or pick
    the helm binary are refused, naming the flag."""
    import shlex

    try:
        words = shlex.split(text or "")
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
    out: list[str] = []
    i = 0
    while i < len(words):
        flag, _, inline = words[i].partition("=")
        if flag not in KUSTOMIZE_FLAGS:
            raise ConfigError(
                f"{where}: {flag!r} is not allowed (allowed: {', '.join(sorted(KUSTOMIZE_FLAGS))};"
                " flags that run plugins, containers or other binaries are refused)"
            )
        if KUSTOMIZE_FLAGS[flag] and not inline:
            if i + 1 >= len(words):
                raise ConfigError(f"{where}: {flag} needs a value")
            out += [flag, words[i + 1]]
            i += 2
            continue
        out.append(words[i])
        i += 1
    return tuple(out)


def _key_id(value: str, where: str) -> str:
    from daemon.appproject import normalise_key_id

    return normalise_key_id(value, where=where)


def _state_store(value: str, where: str) -> str:
    if value not in ("local", "kubernetes"):
        raise ConfigError(f"{where}.stateStore: must be local or kubernetes, not {value!r}")
    return value


def _sharding(r: _Fields, d: Settings) -> dict[str, Any]:
    """settings.sharding: {enabled, cluster, namespace, memberId, leaseDuration, renewInterval,
    algorithm}."""

    def dur(key: str, default: float) -> float:
        raw = r.raw(key)
        return default if raw is None else parse_duration(raw, where=f"{r.where}.{key}")

    algorithm = r.text("algorithm", d.sharding_algorithm)
    if algorithm not in ("rendezvous", "legacy", "round-robin"):
        raise ConfigError(
            f"{r.where}.algorithm: must be rendezvous, legacy or round-robin, not {algorithm!r}"
        )
    duration = dur("leaseDuration", d.sharding_lease_duration)
    renew = dur("renewInterval", min(d.sharding_renew_interval, duration / 3))
    if duration < 3 or renew <= 0 or renew * 2 > duration:
        raise ConfigError(
            f"{r.where}: leaseDuration must be at least 3s and renewInterval at most half of it"
        )
    out = {
        "sharding_enabled": r.bool("enabled", d.sharding_enabled),
        "sharding_cluster": r.text("cluster", d.sharding_cluster),
        "sharding_namespace": r.text("namespace", d.sharding_namespace),
        "sharding_member_id": r.text("memberId", d.sharding_member_id),
        "sharding_lease_duration": duration,
        "sharding_renew_interval": renew,
        "sharding_algorithm": algorithm,
        "sharding_advertise_url": r.text("advertiseURL", d.sharding_advertise_url),
    }
    r.done()
    return out


def load(path: str | os.PathLike[str], *, previous: Config | None = None) -> Config:
    """Read and validate the settings file at `path` and every document it references.
    With `previous` (the running config), a file that held documents and is now empty is an
    error rather than an edit that removes them."""
    cfg_path = Path(path).resolve()
    base = cfg_path.parent
    warnings: list[str] = []
    docs = configfiles.read_documents(cfg_path)
    if len(docs) != 1:
        raise ConfigError("expected exactly one settings document", file=str(cfg_path))
    top = _Fields(docs[0][1], str(cfg_path), warnings)

    s = _Fields(top.raw("settings"), f"{cfg_path}: settings", warnings)
    d = Settings()

    def dur(key: str, default: float) -> float:
        raw = s.raw(key)
        return default if raw is None else parse_duration(raw, where=f"{s.where}.{key}")

    def pos_int(key: str, default: int) -> int:
        v = s.int(key, default)
        if v is None or v < 1:
            raise ConfigError(f"{s.where}.{key}: must be a positive integer")
        return v

    settings = Settings(
        reconcile_interval=dur("reconcileInterval", d.reconcile_interval),
        reconcile_jitter=dur("reconcileJitter", d.reconcile_jitter),
        max_concurrent_syncs=pos_int("maxConcurrentSyncs", d.max_concurrent_syncs),
        max_concurrent_renders=pos_int("maxConcurrentRenders", d.max_concurrent_renders),
        kube_parallelism=pos_int("kubeParallelism", d.kube_parallelism),
        repo_timeout=dur("repoTimeout", d.repo_timeout),
        health_timeout=dur("healthTimeout", d.health_timeout),
        sync_wave_delay=dur("syncWaveDelay", d.sync_wave_delay),
        max_manifest_bytes=pos_int("maxManifestBytes", d.max_manifest_bytes),
        max_yaml_nodes=pos_int("maxYamlNodes", d.max_yaml_nodes),
        max_chart_bytes=pos_int("maxChartBytes", d.max_chart_bytes),
        max_chart_files=pos_int("maxChartFiles", d.max_chart_files),
        max_chart_file_bytes=pos_int("maxChartFileBytes", d.max_chart_file_bytes),
        max_chart_index_bytes=pos_int("maxChartIndexBytes", d.max_chart_index_bytes),
        cache_dir=_resolve(base, s.text("cacheDir", d.cache_dir)),
        state_dir=_resolve(base, s.text("stateDir", d.state_dir)),
        inventory_namespace=s.text("inventoryNamespace", d.inventory_namespace),
        listen=s.text("listen", d.listen),
        self_heal_debounce=dur("selfHealDebounce", d.self_heal_debounce),
        app_removal_grace_period=dur("appRemovalGracePeriod", d.app_removal_grace_period),
        app_of_apps_health_gate=s.bool("appOfAppsHealthGate", d.app_of_apps_health_gate),
        resource_tracking_method=_tracking_method(
            s.text("resourceTrackingMethod", d.resource_tracking_method), f"{s.where}"
        ),
        metrics_token_file=_resolve(base, s.text("metricsTokenFile", d.metrics_token_file)),
        local_token_file=_resolve(base, s.text("localTokenFile", d.local_token_file)),
        cluster_probe_interval=dur("clusterProbeInterval", d.cluster_probe_interval),
        cluster_unreachable_after=dur("clusterUnreachableAfter", d.cluster_unreachable_after),
        **_rollouts(_Fields(s.raw("rollouts") or {}, f"{s.where}.rollouts", warnings), d),
        **_sharding(_Fields(s.raw("sharding") or {}, f"{s.where}.sharding", warnings), d),
        state_store=_state_store(s.text("stateStore", d.state_store), s.where),
        gpg_keys=tuple(_resolve(base, str(f)) for f in s.list("gpgKeys")),
        kustomize_build_options=kustomize_options(
            s.text("kustomizeBuildOptions"), f"{s.where}.kustomizeBuildOptions"
        ),
        **_backup(_Fields(s.raw("backup") or {}, f"{s.where}.backup", warnings), d, base),
    )
    s.done()

    clusters: list[ClusterConfig] = []
    for i, raw in enumerate(top.list("clusters")):
        c = _Fields(raw, f"{cfg_path}: clusters[{i}]", warnings)
        cluster = ClusterConfig(
            name=c.text("name", required=True),
            server=c.text("server").rstrip("/"),
            kubeconfig=_resolve(base, c.text("kubeconfig")),
            context=c.text("context"),
            bearer_token_file=_resolve(base, c.text("bearerTokenFile")),
            ca_file=_resolve(base, c.text("caFile")),
            insecure=c.bool("insecure"),
            labels=tuple(sorted((str(k), str(v)) for k, v in c.map("labels").items())),
            annotations=tuple(sorted((str(k), str(v)) for k, v in c.map("annotations").items())),
            qps=float(c.int("qps", 500) or 500),
            burst=c.int("burst", 1000) or 1000,
        )
        c.done()
        if not cluster.server and not cluster.kubeconfig:
            raise ConfigError(f"{c.where}: set server (with credentials) or kubeconfig")
        if any(x.name == cluster.name for x in clusters):
            raise ConfigError(f"{c.where}.name: duplicate cluster name {cluster.name!r}")
        clusters.append(cluster)

    repos: list[RepositoryCredentials] = []
    for i, raw in enumerate(top.list("repositories")):
        r = _Fields(raw, f"{cfg_path}: repositories[{i}]", warnings)
        repos.append(
            RepositoryCredentials(
                url=r.text("url", required=True),
                username=r.text("username"),
                password_file=_resolve(base, r.text("passwordFile")),
                ssh_private_key_file=_resolve(base, r.text("sshPrivateKeyFile")),
                known_hosts_file=_resolve(base, r.text("knownHostsFile")),
                insecure=r.bool("insecure"),
                type=r.text("type", "git") or "git",
                ca_file=_resolve(base, r.text("caFile")),
                tls_client_cert_file=_resolve(base, r.text("tlsClientCertFile")),
                tls_client_key_file=_resolve(base, r.text("tlsClientKeyFile")),
                enable_oci=r.bool("enableOCI"),
                force_http=r.bool("insecureOCIForceHttp"),
                name=r.text("name"),
            )
        )
        if repos[-1].type not in ("git", "helm"):
            raise ConfigError(f"{r.where}.type: must be git or helm, not {repos[-1].type!r}")
        r.done()

    tokens: list[ApiToken] = []
    for i, raw in enumerate(top.list("apiTokens")):
        t = _Fields(raw, f"{cfg_path}: apiTokens[{i}]", warnings)
        role = t.text("role", "readonly")
        if role not in ("admin", "readonly", "none"):
            raise ConfigError(
                f"{t.where}.role: must be admin, readonly or none (only project role policies "
                f"for its groups), got {role!r}"
            )
        tokens.append(
            ApiToken(
                name=t.text("name", required=True),
                token_file=_resolve(base, t.text("tokenFile", required=True)),
                role=role,
                groups=tuple(str(g) for g in t.list("groups")),
            )
        )
        t.done()

    webhooks: dict[str, dict[str, str]] = {}
    for provider, raw in top.map("webhooks").items():
        w = _Fields(raw, f"{cfg_path}: webhooks.{provider}", warnings)
        webhooks[str(provider)] = {"secretFile": _resolve(base, w.text("secretFile"))}
        w.done()

    patterns = [str(p) for p in top.list("applications")]
    top.done()

    files = configfiles.expand(base, patterns, where=str(cfg_path))
    held = previous.documents if previous is not None else {}
    counts: dict[str, int] = {}

    apps: list[Application] = []
    projects: list[AppProject] = []
    appsets: list[ApplicationSetDoc] = []
    cms: list[Customizations] = []
    plugins: list[cmp.Plugin] = []
    notify_cms: list[tuple[str, Any]] = []
    notify_secrets: list[tuple[str, dict[str, str]]] = []
    errors: list[ConfigError] = []  # every bad document is reported, not only the first
    for f in files:
        try:
            documents = configfiles.read_documents(f, held=held.get(str(f), 0))
        except ConfigError as e:
            errors.append(e)
            continue
        counts[str(f)] = len(documents)
        for i, doc in documents:
            try:
                where = f"{f}: document {i}"
                if doc.get("kind") == "ConfigManagementPlugin":
                    plugins.append(cmp.parse_plugin(doc, where, warnings))
                    continue
                if doc.get("kind") == "Secret" and _name_of(doc) == notify_config.SECRET_NAME:
                    notify_secrets.append((where, _secret_data(doc, where)))
                    continue
                if doc.get("kind") == "ConfigMap" and _name_of(doc) == notify_config.CM_NAME:
                    notify_cms.append((where, doc.get("data") or {}))
                    continue
                if doc.get("kind") == "ConfigMap" and doc.get("apiVersion") == "v1":
                    data = doc.get("data")
                    if isinstance(data, dict) and "plugin.yaml" in data:
                        plugins.append(_plugin_cm(doc, where, warnings))
                        continue
                    cms.append(_argocd_cm(doc, where, warnings))
                    continue
                _add_document(doc, where, apps, projects, appsets, warnings)
            except ConfigError as e:
                errors.append(e)
    # Role policies and sync windows are validated now so a bad edit is rejected as a whole.
    for proj in projects:
        try:
            parse_roles(proj)
            project_sync_windows(proj)
        except ValueError as e:
            errors.append(ConfigError(str(e), file=proj.file))
    if len(cms) > 1:
        errors.append(ConfigError(f"argocd-cm defined more than once ({cms[1].source})"))
    try:
        cmp.check_plugins(plugins)
    except ConfigError as e:
        errors.append(e)
    notifications = None
    for what, found in (("ConfigMap", notify_cms), ("Secret", notify_secrets)):
        if len(found) > 1:
            errors.append(
                ConfigError(f"{what} argocd-notifications-* defined twice ({found[1][0]})")
            )
    if notify_cms:
        where, data = notify_cms[0]
        try:
            if not isinstance(data, dict):
                raise ConfigError(
                    f"{where} (ConfigMap/{notify_config.CM_NAME}).data: expected a mapping"
                )
            secret = notify_secrets[0][1] if notify_secrets else {}
            notifications = notify_config.parse(data, secret, where=where, warnings=warnings)
        except ConfigError as e:
            errors.append(e)
    if cms and cms[0].kustomize_build_options and not settings.kustomize_build_options:
        # argocd-cm's kustomize.buildOptions, unless the settings file sets its own.
        try:
            settings = dataclasses.replace(
                settings,
                kustomize_build_options=kustomize_options(
                    cms[0].kustomize_build_options,
                    f"{cms[0].source}.data['kustomize.buildOptions']",
                ),
            )
        except ConfigError as e:
            errors.append(e)
    files_of = {a.name: a.file for a in apps}
    for first, second in names.clashes(files_of):
        errors.append(
            ConfigError(
                f"Application {second!r} would share its Lease, state and inventory with "
                f"{first!r} (their derived names are one); rename one",
                file=files_of[second],
            )
        )
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigError(
            f"{len(errors)} errors:\n" + "\n".join(f"  - {e}" for e in errors),
            file=errors[0].file,
        )
    return Config(
        path=str(cfg_path),
        settings=settings,
        clusters=tuple(clusters),
        repositories=tuple(repos),
        applications=tuple(apps),
        projects=tuple(projects),
        application_sets=tuple(appsets),
        api_tokens=tuple(tokens),
        webhooks=webhooks,
        warnings=tuple(warnings),
        files=(str(cfg_path), *(str(f) for f in files)),
        patterns=tuple(patterns),
        documents=counts,
        customizations=cms[0] if cms else Customizations(),
        plugins=tuple(plugins),
        notifications=notifications,
    )


def _tracking_method(value: str, where: str) -> str:
    if value and value not in customizations.TRACKING_METHODS:
        raise ConfigError(
            f"{where}.resourceTrackingMethod: {value!r} is not one of "
            + ", ".join(customizations.TRACKING_METHODS)
        )
    return value


def _argocd_cm(doc: dict[str, Any], where: str, warnings: list[str]) -> Customizations:
    """An Argo CD `argocd-cm` ConfigMap among the application files: its resource settings."""
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if name != "argocd-cm":
        raise ConfigError(
            f"{where}: the only ConfigMap accepted here is Argo CD's argocd-cm, not {name!r}"
        )
    data = doc.get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} (ConfigMap/argocd-cm).data: expected a mapping")
    return customizations.parse(data, where=f"{where} (ConfigMap/argocd-cm)", warnings=warnings)


def _name_of(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata")
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""


def _secret_data(doc: dict[str, Any], where: str) -> dict[str, str]:
    """A Secret's `data` (base64) and `stringData`, decoded."""
    import base64
    import binascii

    out: dict[str, str] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ConfigError(f"{where} (Secret/{_name_of(doc)}).data.{key}: {e}") from None
    out.update({str(k): str(v) for k, v in (doc.get("stringData") or {}).items()})
    return out


def _plugin_cm(doc: dict[str, Any], where: str, warnings: list[str]) -> cmp.Plugin:
    """A ConfigMap holding a plugin's `plugin.yaml`, as mounted into an Argo CD sidecar."""
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    where = f"{where} (ConfigMap/{name}).data['plugin.yaml']"
    try:
        inner = yamlio.load_all(str(doc["data"]["plugin.yaml"]))
        docs = [d for d in inner if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from e
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ConfigError(f"{where}: expected one ConfigManagementPlugin document")
    if docs[0].get("kind") != "ConfigManagementPlugin":
        kind = docs[0].get("kind")
        raise ConfigError(f"{where}: expected kind ConfigManagementPlugin, got {kind!r}")
    return cmp.parse_plugin(docs[0], where, warnings)


def _add_document(
    doc: dict[str, Any],
    where: str,
    apps: list[Application],
    projects: list[AppProject],
    appsets: list[ApplicationSetDoc],
    warnings: list[str],
) -> None:
    """Validate one Argo CD document of the config files and add it to its list."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if api != ARGO_API and kind in ("Application", "AppProject", "ApplicationSet"):
        raise ConfigError(f"{where}: apiVersion must be {ARGO_API}, got {api!r}")
    if kind == "Application":
        app = parse_application(doc, where=where, warnings=warnings)
        other = next((a for a in apps if a.name == app.name), None)
        if other is not None:
            raise ConfigError(
                f"{where}: duplicate Application name {app.name!r} (also defined in {other.file})"
            )
        apps.append(app)
    elif kind == "AppProject":
        proj = parse_project(doc, where=where, warnings=warnings)
        if any(p.name == proj.name for p in projects):
            raise ConfigError(f"{where}: duplicate AppProject name {proj.name!r}")
        projects.append(proj)
    elif kind == "ApplicationSet":
        meta = _Fields(doc.get("metadata"), f"{where}.metadata", warnings)
        name = meta.text("name", required=True)
        spec = doc.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("generators"), list):
            raise ConfigError(f"{where} (ApplicationSet/{name}).spec.generators: required")
        if not isinstance(spec.get("template"), dict):
            raise ConfigError(f"{where} (ApplicationSet/{name}).spec.template: required")
        if any(a.name == name for a in appsets):
            raise ConfigError(f"{where}: duplicate ApplicationSet name {name!r}")
        appsets.append(
            ApplicationSetDoc(name=name, where=f"{where} (ApplicationSet/{name})", raw=doc)
        )
    else:
        raise ConfigError(
            f"{where}: expected an Argo CD Application, AppProject or ApplicationSet, "
            f"got kind {kind!r}"
        )
