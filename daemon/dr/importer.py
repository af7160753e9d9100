"""`gitopsd import argocd`: an Argo CD installation's backup files -> a gitopsd config tree.

Reads what the seed's backup CronJob writes (`kubectl get applications / appprojects / cm -o
yaml`, and the cluster Secrets), or `argocd admin export` output: any mix of YAML files holding
`List`s or documents. Converts, by kind:

- Application, AppProject, ApplicationSet: kept as documents (gitopsd reads Argo CD's own
  YAML), stripped of what the API server added (status, uid, resourceVersion, managedFields,
  last-applied annotation) and of a pending `operation`;
- cluster Secrets (`argocd.argoproj.io/secret-type: cluster`): a `clusters` entry each, with a
  kubeconfig written from the Secret's `config` (bearer token, client certificate, CA,
  insecure) under a name unique to the cluster's exact name; an exec provider (a command the
  daemon would run as its own user) only with `allow_exec`, and reported either way; AWS /
  Azure / GCP auth configs cannot be carried and are reported;
- repository Secrets (`repository`, `repo-creds`): `repositories` entries, the password or SSH
  key written to a file;
- `argocd-cm`: kept as a document (gitopsd reads its resource customizations and tracking
  method); `timeout.reconciliation` becomes `settings.reconcileInterval`; its legacy
  `repositories` list becomes `repositories` entries when the Secrets it names are present;
- everything else (argocd-rbac-cm, argocd-cmd-params-cm, other ConfigMaps and Secrets) is
  listed in the report with the reason it is not carried over.

Pure: documents in (read by daemon.dr.importdocs), files (path -> bytes, mode) and a report
out; `daemon.cli` writes them. Two inputs that would write the same file, or define the same
cluster, are refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from daemon import yamlio
from daemon.dr import importdocs as d
from daemon.errors import ConfigError
from daemon.settings import (
    ARGO_API,
    IN_CLUSTER_NAME,
    IN_CLUSTER_SERVER,
    parse_application,
    parse_duration,
    parse_project,
)

SECRET_TYPE = "argocd.argoproj.io/secret-type"
_SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
)
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SAFE = re.compile(r"[^a-z0-9.-]+")
ARGO_KINDS = ("Application", "AppProject", "ApplicationSet")
_CLOUD_LOGINS = ("awsAuthConfig", "azureAuthConfig", "gcpAuthConfig")


@dataclass
class Imported:
    """The config tree to write (relative path -> (content, file mode)) and the report;
    `owners` names the input document behind each file (to refuse a second writer)."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, content: bytes, mode: int, *, by: str) -> None:
        """Add one file; a second input writing the same path is an error naming both."""
        if path in self.owners:
            raise ConfigError(
                f"{by}: would write {path}, already written for {self.owners[path]}; "
                "rename one of them"
            )
        self.owners[path] = by
        self.files[path] = (content, mode)


def _metadata(doc: dict[str, Any], at: str) -> dict[str, Any]:
    return d.mapping(doc.get("metadata"), f"{at}.metadata")


def _annotations(doc: dict[str, Any], at: str) -> dict[str, str]:
    """The document's annotations, without kubectl's last-applied copy."""
    anns = d.strings(_metadata(doc, at).get("annotations"), f"{at}.metadata.annotations")
    return {k: v for k, v in anns.items() if k != _LAST_APPLIED}


def _clean(doc: dict[str, Any], at: str) -> dict[str, Any]:
    """An Argo CD document as a user would write it: no status, no server bookkeeping."""
    meta = dict(_metadata(doc, at))
    for k in _SERVER_FIELDS:
        meta.pop(k, None)
    anns = _annotations(doc, at)
    if anns:
        meta["annotations"] = anns
    else:
        meta.pop("annotations", None)
    out = {k: v for k, v in doc.items() if k not in ("status", "metadata", "operation")}
    out["metadata"] = meta
    return out


def _secret_data(doc: dict[str, Any], where: str) -> dict[str, str]:
    """A Secret's values, decoded (`data` is base64, `stringData` plain)."""
    out: dict[str, str] = {}
    for k, v in d.mapping(doc.get("data"), f"{where}.data").items():
        try:
            raw = d.text(v, f"{where}.data.{k}")
            out[k] = base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: data.{k} is not base64 text: {e}") from e
    for k, v in d.mapping(doc.get("stringData"), f"{where}.stringData").items():
        out[k] = d.scalar_text(v, f"{where}.stringData.{k}")
    return out


def _name(doc: dict[str, Any], at: str) -> str:
    return d.scalar_text(_metadata(doc, at).get("name"), f"{at}.metadata.name")


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-")[:40] or "x"


def file_stem(kind: str, identity: str) -> str:
    """A credentials file name for `identity` that no other identity shares: names that slug
    alike (`edge/1`, `edge-1`) differ in the hash of the exact text."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return f"credentials/{kind}-{_slug(identity)}-{digest}"


def _describe(doc: dict[str, Any], where: str) -> str:
    """`where (Kind/name)` for messages, tolerant of the fields it describes being wrong."""
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else ""
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    name = name if isinstance(name, str) else ""
    return f"{where} ({kind or '?'}/{name or '?'})"


def _exec_user(exec_cfg: dict[str, Any], at: str) -> tuple[dict[str, Any], str]:
    """The kubeconfig `exec` block for an Argo CD execProviderConfig, and its command line."""
    command = d.text(exec_cfg.get("command"), f"{at}.command")
    if not command:
        raise ConfigError(f"{at}.command: an exec provider needs a command")
    args = d.string_list(exec_cfg.get("args"), f"{at}.args")
    env = d.strings(exec_cfg.get("env"), f"{at}.env")
    block = {
        "apiVersion": d.text(exec_cfg.get("apiVersion"), f"{at}.apiVersion")
        or "client.authentication.k8s.io/v1beta1",
        "command": command,
        "args": args,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "installHint": d.text(exec_cfg.get("installHint"), f"{at}.installHint"),
        "interactiveMode": "Never",
    }
    line = shlex.join([command, *args])
    if env:
        line += f" (environment: {', '.join(sorted(env))})"
    return block, line


def _kubeconfig(
    name: str, server: str, config: dict[str, Any], at: str, *, allow_exec: bool
) -> tuple[dict[str, Any], list[str]]:
    """A kubeconfig for one Argo CD cluster Secret's `config`; report lines for what it could
    not (or would not) carry."""
    notes: list[str] = []
    tls = d.mapping(config.get("tlsClientConfig"), f"{at}.tlsClientConfig")
    cluster: dict[str, Any] = {"server": server}
    user: dict[str, Any] = {}
    for src, dst, target in (
        ("caData", "certificate-authority-data", cluster),
        ("serverName", "tls-server-name", cluster),
        ("certData", "client-certificate-data", user),
        ("keyData", "client-key-data", user),
    ):
        value = d.text(tls.get(src), f"{at}.tlsClientConfig.{src}")
        if value:
            target[dst] = value
    if d.flag(tls.get("insecure"), f"{at}.tlsClientConfig.insecure"):
        cluster["insecure-skip-tls-verify"] = True
    token = d.text(config.get("bearerToken"), f"{at}.bearerToken")
    if token:
        user["token"] = token
    username = d.text(config.get("username"), f"{at}.username")
    if username:
        user["username"] = username
        user["password"] = d.text(config.get("password"), f"{at}.password")
    exec_cfg = d.mapping(config.get("execProviderConfig"), f"{at}.execProviderConfig")
    if exec_cfg:
        block, line = _exec_user(exec_cfg, f"{at}.execProviderConfig")
        if allow_exec:
            user["exec"] = block
            notes.append(
                f"cluster {name!r}: exec credential command ALLOWED (runs as gitopsd's own "
                f"user whenever it connects): {line}"
            )
        else:
            notes.append(
                f"cluster {name!r}: exec credential command REFUSED, not carried over (it "
                f"would run as gitopsd's own user): {line}; check it and import again with "
                "--allow-exec-credentials to carry it"
            )
    for provider in _CLOUD_LOGINS:
        if config.get(provider):
            notes.append(
                f"{provider} (Argo CD's built-in cloud login; give the cluster an exec "
                "provider or a token instead)"
            )
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return doc, notes


def _cluster(
    secret: str,
    data: dict[str, str],
    doc: dict[str, Any],
    out: Imported,
    at: str,
    *,
    allow_exec: bool,
) -> dict[str, Any]:
    server = data.get("server", "").rstrip("/")
    name = data.get("name") or secret
    if not server:
        raise ConfigError(f"{at}: a cluster Secret needs data.server")
    try:
        config = json.loads(data.get("config") or "{}")
    except ValueError as e:
        raise ConfigError(f"{at}: data.config is not JSON: {e}") from e
    config = d.mapping(config, f"{at}: data.config")
    kube, notes = _kubeconfig(name, server, config, f"{at}: data.config", allow_exec=allow_exec)
    out.report.extend(f"{at}: {n}" for n in notes)
    if data.get("namespaces") or data.get("clusterResources"):
        out.report.append(
            f"{at}: namespaces / clusterResources (a namespace-scoped cluster) not carried "
            "over: gitopsd uses what the credentials allow"
        )
    path = f"{file_stem('cluster', name)}.kubeconfig"
    out.add(path, yaml.safe_dump(kube, sort_keys=False).encode(), 0o600, by=at)
    entry: dict[str, Any] = {"name": name, "server": server, "kubeconfig": path}
    labels = d.strings(_metadata(doc, at).get("labels"), f"{at}.metadata.labels")
    extra = {k: v for k, v in labels.items() if k != SECRET_TYPE}
    if extra:
        entry["labels"] = extra
    anns = _annotations(doc, at)
    if anns:
        entry["annotations"] = anns
    return entry


def _repository(identity: str, data: dict[str, str], out: Imported, at: str) -> dict[str, Any]:
    """A repositories entry; `identity` names its credential files (unique per input)."""
    url = data.get("url", "")
    if not url:
        raise ConfigError(f"{at}: a repository Secret needs data.url")
    entry: dict[str, Any] = {"url": url}
    stem = file_stem("repo", identity)
    if data.get("username"):
        entry["username"] = data["username"]
    if data.get("password"):
        out.add(f"{stem}.password", data["password"].encode(), 0o600, by=at)
        entry["passwordFile"] = f"{stem}.password"
    if data.get("sshPrivateKey"):
        ssh_key = data["sshPrivateKey"].rstrip("\n").encode() + b"\n"
        out.add(f"{stem}.key", ssh_key, 0o600, by=at)
        entry["sshPrivateKeyFile"] = f"{stem}.key"
    for key in ("insecure", "enableOCI", "insecureOCIForceHttp"):
        if data.get(key, "").lower() == "true":
            entry[key] = True
    if data.get("type") == "helm":
        entry["type"] = "helm"
    if data.get("name"):
        entry["name"] = data["name"]  # what charts' dependencies call it (@name, alias:name)
    if data.get("tlsClientCertData") and data.get("tlsClientCertKey"):
        for key, suffix, field_name in (
            ("tlsClientCertData", "tls.crt", "tlsClientCertFile"),
            ("tlsClientCertKey", "tls.key", "tlsClientKeyFile"),
        ):
            out.add(f"{stem}.{suffix}", data[key].encode(), 0o600, by=at)
            entry[field_name] = f"{stem}.{suffix}"
    for key in ("githubAppPrivateKey", "gcpServiceAccountKey", "proxy"):
        if data.get(key):
            out.report.append(f"{at}: {key} not carried over (not supported by gitopsd)")
    return entry


@dataclass
class _Collected:
    """What the documents hold, sorted by what becomes of them."""

    kept: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {k: [] for k in ARGO_KINDS}
    )
    names: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> where
    clusters: list[dict[str, Any]] = field(default_factory=list)
    cluster_at: dict[str, str] = field(default_factory=dict)  # cluster name -> where
    repositories: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # for argocd-cm
    argocd_cm: tuple[str, dict[str, Any]] | None = None


def convert(
    documents: list[tuple[str, dict[str, Any]]],
    *,
    in_cluster_kubeconfig: str = "",
    allow_exec: bool = False,
) -> Imported:
    """Convert `(where, document)` pairs (Lists already flattened, see importdocs) into a
    gitopsd config tree. `in_cluster_kubeconfig`: how to reach Argo CD's in-cluster
    destination from where gitopsd runs (empty: the pod's service account, as Argo CD does).
    `allow_exec`: carry cluster exec providers (commands gitopsd would run) over."""
    out = Imported()
    seen = _Collected()
    described = [(_describe(doc, where), doc) for where, doc in documents]
    for at, doc in described:
        if d.kind_of(doc, at) == "Secret":
            seen.secrets[_name(doc, at)] = _secret_data(doc, at)
    for at, doc in described:
        _sort(doc, at, seen, out, allow_exec=allow_exec)
    settings: dict[str, Any] = {"stateDir": "state", "cacheDir": "cache"}
    if seen.argocd_cm is not None:
        _carry_argocd_cm(*seen.argocd_cm, settings, seen, out)
    if not any(c["server"] == IN_CLUSTER_SERVER for c in seen.clusters) and any(
        _targets_in_cluster(a) for a in seen.kept["Application"] + seen.kept["ApplicationSet"]
    ):
        if IN_CLUSTER_NAME in seen.cluster_at:
            raise ConfigError(
                f"{seen.cluster_at[IN_CLUSTER_NAME]}: the cluster name {IN_CLUSTER_NAME!r} "
                f"is taken by another server, and applications target {IN_CLUSTER_SERVER}"
            )
        entry: dict[str, Any] = {"name": IN_CLUSTER_NAME, "server": IN_CLUSTER_SERVER}
        if in_cluster_kubeconfig:
            entry["kubeconfig"] = in_cluster_kubeconfig
        seen.clusters.insert(0, entry)
    for kind, docs in seen.kept.items():
        out.counts[kind] = len(docs)
        if docs:
            text = yaml.safe_dump_all(docs, sort_keys=False)
            out.add(f"apps/{kind.lower()}s.yaml", text.encode(), 0o644, by=f"the {kind}s")
    config: dict[str, Any] = {"applications": ["apps/*.yaml"], "settings": settings}
    if seen.clusters:
        config["clusters"] = seen.clusters
    if seen.repositories:
        config["repositories"] = seen.repositories
    out.counts["clusters"] = len(seen.clusters)
    out.counts["repositories"] = len(seen.repositories)
    out.add("gitopsd.yaml", yaml.safe_dump(config, sort_keys=False).encode(), 0o644, by="config")
    return out


def _sort(
    doc: dict[str, Any], at: str, seen: _Collected, out: Imported, *, allow_exec: bool
) -> None:
    """Take one document: keep it, turn it into config, or report why it is left out."""
    kind, name = d.kind_of(doc, at), _name(doc, at)
    if kind in ARGO_KINDS:
        _check_argo(kind, name, doc, at, seen)
        if doc.get("operation"):
            out.report.append(f"{at}: its pending operation is not carried over")
        seen.kept[kind].append(_clean(doc, at))
    elif kind == "Secret":
        labels = d.strings(_metadata(doc, at).get("labels"), f"{at}.metadata.labels")
        stype, data = labels.get(SECRET_TYPE, ""), _secret_data(doc, at)
        if stype == "cluster":
            cluster = data.get("name") or name
            if cluster in seen.cluster_at:
                raise ConfigError(
                    f"{at}: cluster name {cluster!r} is also defined by {seen.cluster_at[cluster]}"
                )
            seen.cluster_at[cluster] = at
            seen.clusters.append(_cluster(name, data, doc, out, at, allow_exec=allow_exec))
        elif stype in ("repository", "repo-creds"):
            namespace = d.scalar_text(_metadata(doc, at).get("namespace"), f"{at}.metadata")
            seen.repositories.append(_repository(f"{namespace}/{name}", data, out, at))
        else:
            out.report.append(f"{at}: not carried over (not a cluster or repository Secret)")
    elif kind == "ConfigMap" and name == "argocd-cm":
        if seen.argocd_cm is not None:
            raise ConfigError(f"{at}: a second argocd-cm (the first is {seen.argocd_cm[0]})")
        seen.argocd_cm = (at, _clean(doc, at))
    elif kind == "ConfigMap" and name == "argocd-rbac-cm":
        data = d.strings(doc.get("data"), f"{at}.data")
        lines = data.get("policy.csv", "").strip().splitlines()
        out.report.append(
            f"{at}: not carried over ({len(lines)} policy.csv lines): gitopsd's API uses "
            "apiTokens with the roles admin / readonly and AppProject roles; give each "
            "token its role"
        )
    elif kind in ("ConfigMap", "Secret"):
        out.report.append(f"{at}: not carried over (gitopsd has no use for it)")
    else:
        out.report.append(f"{at}: not carried over (unexpected kind)")


def _check_argo(kind: str, name: str, doc: dict[str, Any], at: str, seen: _Collected) -> None:
    """Validate a kept document as gitopsd will read it, naming the input document, and
    refuse a second one of the same kind and name."""
    where = at.split(" (", 1)[0]
    if doc.get("apiVersion") != ARGO_API:
        raise ConfigError(f"{at}: apiVersion must be {ARGO_API}, got {doc.get('apiVersion')!r}")
    if kind == "Application":
        parse_application(doc, where=where, warnings=[])
    elif kind == "AppProject":
        parse_project(doc, where=where, warnings=[])
    else:
        spec = d.mapping(doc.get("spec"), f"{at}.spec")
        if not isinstance(spec.get("generators"), list):
            raise ConfigError(f"{at}.spec.generators: required (a list)")
        if not isinstance(spec.get("template"), dict):
            raise ConfigError(f"{at}.spec.template: required (a mapping)")
    if (kind, name) in seen.names:
        raise ConfigError(f"{at}: {kind} {name!r} is also defined by {seen.names[kind, name]}")
    seen.names[kind, name] = at


def _carry_argocd_cm(
    at: str, cm: dict[str, Any], settings: dict[str, Any], seen: _Collected, out: Imported
) -> None:
    """argocd-cm: the poll interval and legacy repositories into the config, the rest kept."""
    data = d.strings(cm.get("data"), f"{at}.data")
    interval = data.pop("timeout.reconciliation", "")
    if interval:
        parse_duration(interval, where=f"{at}.data.timeout.reconciliation")
        settings["reconcileInterval"] = interval
    legacy = data.pop("repositories", "")
    if legacy:
        seen.repositories.extend(_legacy_repositories(legacy, seen.secrets, out, at))
    for key in ("url", "dex.config", "oidc.config", "users.anonymous.enabled"):
        if key in data:
            out.report.append(f"argocd-cm: {key} not carried over (no UI or SSO in gitopsd)")
    cm["data"] = data
    out.add("apps/argocd-cm.yaml", yaml.safe_dump(cm, sort_keys=False).encode(), 0o644, by=at)


def _targets_in_cluster(doc: dict[str, Any]) -> bool:
    text = json.dumps(doc)
    return IN_CLUSTER_SERVER in text or f'"name": "{IN_CLUSTER_NAME}"' in text


def _legacy_repositories(
    text: str, secrets: dict[str, dict[str, str]], out: Imported, cm_at: str
) -> list[dict[str, Any]]:
    """argocd-cm's legacy `repositories` list; credentials come from the Secrets it names."""
    where = f"{cm_at}.data.repositories"
    try:
        items = d.plain(yamlio.load(text), where)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not YAML: {e}") from e
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or not item.get("url"):
            out.report.append(f"{at}: not carried over (not a mapping with a url)")
            continue
        data: dict[str, str] = {"url": d.text(item["url"], f"{at}.url")}
        for field_name, key in (
            ("usernameSecret", "username"),
            ("passwordSecret", "password"),
            ("sshPrivateKeySecret", "sshPrivateKey"),
        ):
            ref = d.mapping(item.get(field_name), f"{at}.{field_name}")
            if not ref:
                continue
            secret = d.scalar_text(ref.get("name"), f"{at}.{field_name}.name")
            wanted = d.scalar_text(ref.get("key"), f"{at}.{field_name}.key")
            value = secrets.get(secret, {}).get(wanted)
            if value is None:
                out.report.append(
                    f"argocd-cm: repositories[{i}] ({data['url']}): {field_name} names "
                    f"Secret {secret} key {wanted}, not among the files"
                )
            else:
                data[key] = value
        if item.get("insecure"):
            data["insecure"] = "true"
        entries.append(_repository(f"argocd-cm/repositories[{i}]", data, out, at))
    return entries
