"""`gitopsd import argocd`: an Argo CD installation's backup files -> a gitopsd config tree.

Reads what the seed's backup CronJob writes (`kubectl get applications / appprojects / cm -o
yaml`, and the cluster Secrets), or `argocd admin export` output: any mix of YAML files holding
`List`s or documents. Converts, by kind:

- Application, AppProject, ApplicationSet: kept as documents (gitopsd reads Argo CD's own
  YAML), stripped of what the API server added (status, uid, resourceVersion, managedFields,
  last-applied annotation) and of a pending `operation`;
- cluster Secrets (`argocd.argoproj.io/secret-type: cluster`): a `clusters` entry each, with a
  kubeconfig written from the Secret's `config` (bearer token, client certificate, CA, insecure,
  exec provider); AWS / Azure / GCP auth configs cannot be carried and are reported;
- repository Secrets (`repository`, `repo-creds`): `repositories` entries, the password or SSH
  key written to a file;
- `argocd-cm`: kept as a document (gitopsd reads its resource customizations and tracking
  method); `timeout.reconciliation` becomes `settings.reconcileInterval`; its legacy
  `repositories` list becomes `repositories` entries when the Secrets it names are present;
- everything else (argocd-rbac-cm, argocd-cmd-params-cm, other ConfigMaps and Secrets) is
  listed in the report with the reason it is not carried over.

Pure: documents in, files (path -> bytes, mode) and a report out; `daemon.cli` writes them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from daemon.errors import ConfigError
from daemon.settings import IN_CLUSTER_NAME, IN_CLUSTER_SERVER

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


@dataclass
class Imported:
    """The config tree to write (relative path -> (content, file mode)) and the report."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """An Argo CD document as a user would write it: no status, no server bookkeeping."""
    meta = dict(doc.get("metadata") or {})
    for k in _SERVER_FIELDS:
        meta.pop(k, None)
    anns = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
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
    for k, v in (doc.get("data") or {}).items():
        try:
            out[str(k)] = base64.b64decode(str(v), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: data.{k} is not base64 text: {e}") from e
    for k, v in (doc.get("stringData") or {}).items():
        out[str(k)] = str(v)
    return out


def _name(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name", ""))


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-") or "x"


def _kubeconfig(name: str, server: str, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A kubeconfig for one Argo CD cluster Secret's `config`; what it could not express."""
    missing: list[str] = []
    tls = config.get("tlsClientConfig") or {}
    cluster: dict[str, Any] = {"server": server}
    if tls.get("caData"):
        cluster["certificate-authority-data"] = tls["caData"]
    if tls.get("insecure"):
        cluster["insecure-skip-tls-verify"] = True
    if tls.get("serverName"):
        cluster["tls-server-name"] = tls["serverName"]
    user: dict[str, Any] = {}
    if config.get("bearerToken"):
        user["token"] = config["bearerToken"]
    if config.get("username"):
        user["username"] = config["username"]
        user["password"] = config.get("password", "")
    if tls.get("certData"):
        user["client-certificate-data"] = tls["certData"]
    if tls.get("keyData"):
        user["client-key-data"] = tls["keyData"]
    exec_cfg = config.get("execProviderConfig")
    if exec_cfg:
        user["exec"] = {
            "apiVersion": exec_cfg.get("apiVersion", "client.authentication.k8s.io/v1beta1"),
            "command": exec_cfg.get("command", ""),
            "args": list(exec_cfg.get("args") or []),
            "env": [{"name": k, "value": v} for k, v in (exec_cfg.get("env") or {}).items()],
            "installHint": exec_cfg.get("installHint", ""),
            "interactiveMode": "Never",
        }
    for provider in ("awsAuthConfig", "azureAuthConfig", "gcpAuthConfig"):
        if config.get(provider):
            missing.append(
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
    return doc, missing


def convert(
    documents: list[tuple[str, dict[str, Any]]], *, in_cluster_kubeconfig: str = ""
) -> Imported:
    """Convert `(file, document)` pairs (Lists already flattened) into a gitopsd config tree.
    `in_cluster_kubeconfig`: how to reach Argo CD's in-cluster destination from where gitopsd
    runs (empty: the pod's service account, as Argo CD does)."""
    out = Imported()
    kept: dict[str, list[dict[str, Any]]] = {k: [] for k in ARGO_KINDS}
    clusters: list[dict[str, Any]] = []
    repositories: list[dict[str, Any]] = []
    secrets: dict[str, dict[str, str]] = {}  # name -> decoded data (for argocd-cm references)
    settings: dict[str, Any] = {"stateDir": "state", "cacheDir": "cache"}
    argocd_cm: dict[str, Any] | None = None
    for where, doc in documents:
        if doc.get("kind") == "Secret":
            secrets[_name(doc)] = _secret_data(doc, f"{where} (Secret/{_name(doc)})")
    for where, doc in documents:
        kind, name = str(doc.get("kind", "")), _name(doc)
        at = f"{where} ({kind or '?'}/{name or '?'})"
        if kind in ARGO_KINDS:
            if doc.get("operation"):
                out.report.append(f"{at}: its pending operation is not carried over")
            kept[kind].append(_clean(doc))
        elif kind == "Secret":
            labels = (doc.get("metadata") or {}).get("labels") or {}
            stype = labels.get(SECRET_TYPE, "")
            data = secrets[name]
            if stype == "cluster":
                clusters.append(_cluster(name, data, labels, doc, out, at))
            elif stype in ("repository", "repo-creds"):
                repositories.append(_repository(name, data, out, at))
            else:
                out.report.append(f"{at}: not carried over (not a cluster or repository Secret)")
        elif kind == "ConfigMap" and name == "argocd-cm":
            argocd_cm = _clean(doc)
        elif kind == "ConfigMap" and name == "argocd-rbac-cm":
            lines = str((doc.get("data") or {}).get("policy.csv", "")).strip().splitlines()
            out.report.append(
                f"{at}: not carried over ({len(lines)} policy.csv lines): gitopsd's API uses "
                "apiTokens with the roles admin / readonly and AppProject roles; give each "
                "token its role"
            )
        elif kind in ("ConfigMap", "Secret"):
            out.report.append(f"{at}: not carried over (gitopsd has no use for it)")
        else:
            out.report.append(f"{at}: not carried over (unexpected kind)")
    if argocd_cm is not None:
        data = dict(argocd_cm.get("data") or {})
        interval = data.pop("timeout.reconciliation", None)
        if interval:
            settings["reconcileInterval"] = str(interval)
        legacy = data.pop("repositories", None)
        if legacy:
            repositories.extend(_legacy_repositories(str(legacy), secrets, out))
        for key in ("url", "dex.config", "oidc.config", "users.anonymous.enabled"):
            if key in data:
                out.report.append(f"argocd-cm: {key} not carried over (no UI or SSO in gitopsd)")
        argocd_cm["data"] = data
        out.files["apps/argocd-cm.yaml"] = (
            yaml.safe_dump(argocd_cm, sort_keys=False).encode(),
            0o644,
        )
    if not any(c["server"] == IN_CLUSTER_SERVER for c in clusters) and any(
        _targets_in_cluster(a) for a in kept["Application"] + kept["ApplicationSet"]
    ):
        entry: dict[str, Any] = {"name": IN_CLUSTER_NAME, "server": IN_CLUSTER_SERVER}
        if in_cluster_kubeconfig:
            entry["kubeconfig"] = in_cluster_kubeconfig
        clusters.insert(0, entry)
    for kind, docs in kept.items():
        out.counts[kind] = len(docs)
        if docs:
            text = yaml.safe_dump_all(docs, sort_keys=False)
            out.files[f"apps/{kind.lower()}s.yaml"] = (text.encode(), 0o644)
    config: dict[str, Any] = {"applications": ["apps/*.yaml"], "settings": settings}
    if clusters:
        config["clusters"] = clusters
    if repositories:
        config["repositories"] = repositories
    out.counts["clusters"] = len(clusters)
    out.counts["repositories"] = len(repositories)
    out.files["gitopsd.yaml"] = (yaml.safe_dump(config, sort_keys=False).encode(), 0o644)
    return out


def _targets_in_cluster(doc: dict[str, Any]) -> bool:
    text = json.dumps(doc)
    return IN_CLUSTER_SERVER in text or f'"name": "{IN_CLUSTER_NAME}"' in text


def _cluster(
    secret: str,
    data: dict[str, str],
    labels: dict[str, str],
    doc: dict[str, Any],
    out: Imported,
    at: str,
) -> dict[str, Any]:
    server = data.get("server", "").rstrip("/")
    name = data.get("name") or secret
    if not server:
        raise ConfigError(f"{at}: a cluster Secret needs data.server")
    try:
        config = json.loads(data.get("config") or "{}")
    except ValueError as e:
        raise ConfigError(f"{at}: data.config is not JSON: {e}") from e
    kube, missing = _kubeconfig(name, server, config if isinstance(config, dict) else {})
    for m in missing:
        out.report.append(f"{at}: {m}")
    if data.get("namespaces") or data.get("clusterResources"):
        out.report.append(
            f"{at}: namespaces / clusterResources (a namespace-scoped cluster) not carried "
            "over: gitopsd uses what the credentials allow"
        )
    path = f"credentials/cluster-{_slug(name)}.kubeconfig"
    out.files[path] = (yaml.safe_dump(kube, sort_keys=False).encode(), 0o600)
    entry: dict[str, Any] = {"name": name, "server": server, "kubeconfig": path}
    extra = {k: v for k, v in labels.items() if k != SECRET_TYPE}
    if extra:
        entry["labels"] = extra
    anns = {
        k: v
        for k, v in ((doc.get("metadata") or {}).get("annotations") or {}).items()
        if k != _LAST_APPLIED
    }
    if anns:
        entry["annotations"] = anns
    return entry


def _repository(secret: str, data: dict[str, str], out: Imported, at: str) -> dict[str, Any]:
    url = data.get("url", "")
    if not url:
        raise ConfigError(f"{at}: a repository Secret needs data.url")
    entry: dict[str, Any] = {"url": url}
    slug = _slug(secret)
    if data.get("username"):
        entry["username"] = data["username"]
    if data.get("password"):
        path = f"credentials/repo-{slug}.password"
        out.files[path] = (data["password"].encode(), 0o600)
        entry["passwordFile"] = path
    if data.get("sshPrivateKey"):
        path = f"credentials/repo-{slug}.key"
        out.files[path] = (data["sshPrivateKey"].rstrip("\n").encode() + b"\n", 0o600)
        entry["sshPrivateKeyFile"] = path
    if data.get("insecure", "").lower() == "true":
        entry["insecure"] = True
    if data.get("type") == "helm":
        entry["type"] = "helm"
    if data.get("name"):
        entry["name"] = data["name"]  # what charts' dependencies call it (@name, alias:name)
    if data.get("enableOCI", "").lower() == "true":
        entry["enableOCI"] = True
    if data.get("insecureOCIForceHttp", "").lower() == "true":
        entry["insecureOCIForceHttp"] = True
    if data.get("tlsClientCertData") and data.get("tlsClientCertKey"):
        for key, suffix, field_name in (
            ("tlsClientCertData", "crt", "tlsClientCertFile"),
            ("tlsClientCertKey", "key", "tlsClientKeyFile"),
        ):
            path = f"credentials/repo-{slug}.{suffix}"
            out.files[path] = (data[key].encode(), 0o600)
            entry[field_name] = path
    for key in ("githubAppPrivateKey", "gcpServiceAccountKey", "proxy"):
        if data.get(key):
            out.report.append(f"{at}: {key} not carried over (not supported by gitopsd)")
    return entry


def _legacy_repositories(
    text: str, secrets: dict[str, dict[str, str]], out: Imported
) -> list[dict[str, Any]]:
    """argocd-cm's legacy `repositories` list; credentials come from the Secrets it names."""
    try:
        items = yaml.safe_load(text) or []
    except yaml.YAMLError as e:
        raise ConfigError(f"argocd-cm: repositories is not YAML: {e}") from e
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or not item.get("url"):
            continue
        data: dict[str, str] = {"url": str(item["url"])}
        for field_name, key in (
            ("usernameSecret", "username"),
            ("passwordSecret", "password"),
            ("sshPrivateKeySecret", "sshPrivateKey"),
        ):
            ref = item.get(field_name)
            if isinstance(ref, dict):
                value = secrets.get(str(ref.get("name")), {}).get(str(ref.get("key")))
                if value is None:
                    out.report.append(
                        f"argocd-cm: repositories[{i}] ({item['url']}): {field_name} names "
                        f"Secret {ref.get('name')} key {ref.get('key')}, not among the files"
                    )
                else:
                    data[key] = value
        if item.get("insecure"):
            data["insecure"] = "true"
        entries.append(_repository(f"cm-{i}", data, out, f"argocd-cm: repositories[{i}]"))
    return entries
