"""Config management plugins: Argo CD's `ConfigManagementPlugin` (the v2 sidecar format).

gitopsd has no sidecars: a plugin's `init`, `generate` and `discover.find.command` run as
subprocesses of the daemon (see `daemon.render.plugins`). This module is the pure part: the
plugin document, which plugin an Application source gets, and the environment its commands see
(Argo CD's build environment, the Application's `plugin.env` prefixed `ARGOCD_ENV_`, and its
`plugin.parameters` as `ARGOCD_APP_PARAMETERS` and `PARAM_*`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.errors import ConfigError

PLUGIN_API = "argoproj.io/v1alpha1"
_ENV_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True, slots=True)
class Command:
    """`command` + `args` of one plugin step."""

    argv: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.argv)


@dataclass(frozen=True, slots=True)
class Plugin:
    """One ConfigManagementPlugin document."""

    name: str
    version: str
    generate: Command
    init: Command = Command(())
    discover_file_name: str = ""
    discover_glob: str = ""
    discover_command: Command = Command(())
    preserve_file_mode: bool = False
    where: str = ""

    @property
    def full_name(self) -> str:
        """What an Application's `plugin.name` must say: `<name>-<version>`, or `<name>`."""
        return f"{self.name}-{self.version}" if self.version else self.name

    @property
    def discovers(self) -> bool:
        """True when the plugin has a discover rule (else it is used only when named)."""
        return bool(self.discover_file_name or self.discover_glob or self.discover_command)


def _command(data: Any, where: str) -> Command:
    if data is None:
        return Command(())
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with command and args")
    argv: list[str] = []
    for key in ("command", "args"):
        part = data.get(key) or []
        if not isinstance(part, list) or not all(isinstance(a, str | int | float) for a in part):
            raise ConfigError(f"{where}.{key}: expected a list of strings")
        argv += [str(a) for a in part]
    unknown = set(data) - {"command", "args"}
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if not argv:
        raise ConfigError(f"{where}.command: must not be empty")
    return Command(tuple(argv))


_SPEC_FIELDS = frozenset(
    {
        "version",
        "init",
        "generate",
        "discover",
        "parameters",
        "preserveFileMode",
        "provideGitCreds",
        "lockRepo",
        "allowConcurrency",
    }
)


def parse_plugin(doc: Mapping[str, Any], where: str, warnings: list[str]) -> Plugin:
    """A ConfigManagementPlugin document, validated; errors name `where` and the field."""
    if doc.get("apiVersion") != PLUGIN_API:
        got = doc.get("apiVersion")
        raise ConfigError(f"{where}: apiVersion must be {PLUGIN_API}, got {got!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} (ConfigManagementPlugin).metadata.name: required")
    where = f"{where} (ConfigManagementPlugin/{name})"
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}.spec: required")
    for key in spec:
        if key not in _SPEC_FIELDS:
            warnings.append(f"{where}.spec.{key}: unknown field (ignored)")
    if spec.get("provideGitCreds"):
        warnings.append(
            f"{where}.spec.provideGitCreds: git credentials are never given to plugins (ignored)"
        )
    generate = _command(spec.get("generate"), f"{where}.spec.generate")
    if not generate:
        raise ConfigError(f"{where}.spec.generate: required")
    discover = spec.get("discover") or {}
    if not isinstance(discover, dict):
        raise ConfigError(f"{where}.spec.discover: expected a mapping")
    find = discover.get("find") or {}
    if not isinstance(find, dict):
        raise ConfigError(f"{where}.spec.discover.find: expected a mapping")
    file_name = str(discover.get("fileName") or "")
    glob = str(find.get("glob") or "")
    find_cmd = Command(())
    if find.get("command"):
        find_cmd = _command({"command": find.get("command")}, f"{where}.spec.discover.find")
    for pattern, key in ((file_name, "fileName"), (glob, "find.glob")):
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise ConfigError(
                f"{where}.spec.discover.{key}: {pattern!r} must stay inside the source path"
            )
    version = spec.get("version") or ""
    return Plugin(
        name=name,
        version=str(version),
        generate=generate,
        init=_command(spec.get("init"), f"{where}.spec.init"),
        # Argo CD evaluates only the first of fileName, find.glob, find.command.
        discover_file_name=file_name,
        discover_glob="" if file_name else glob,
        discover_command=Command(()) if file_name or glob else find_cmd,
        preserve_file_mode=bool(spec.get("preserveFileMode", False)),
        where=where,
    )


def check_plugins(plugins: Sequence[Plugin]) -> None:
    """Refuse two plugins answering to the same name."""
    seen: dict[str, Plugin] = {}
    for p in plugins:
        if p.full_name in seen:
            raise ConfigError(
                f"{p.where}: plugin name {p.full_name!r} is already defined in "
                f"{seen[p.full_name].where}"
            )
        seen[p.full_name] = p


# --- the Application side ------------------------------------------------------------------


def check_source_plugin(block: Mapping[str, Any], where: str) -> None:
    """Validate an Application's `source.plugin` block (name, env, parameters)."""
    for key in block:
        if key not in ("name", "env", "parameters"):
            raise ConfigError(f"{where}.{key}: unknown field")
    if not isinstance(block.get("name") or "", str):
        raise ConfigError(f"{where}.name: expected a string")
    env = block.get("env") or []
    if not isinstance(env, list):
        raise ConfigError(f"{where}.env: expected a list of name/value entries")
    for i, entry in enumerate(env):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not entry["name"]
            or not isinstance(entry.get("value", ""), str | int | float | bool)
        ):
            raise ConfigError(f"{where}.env[{i}]: expected {{name: NAME, value: VALUE}}")
    params = block.get("parameters") or []
    if not isinstance(params, list):
        raise ConfigError(f"{where}.parameters: expected a list")
    for i, p in enumerate(params):
        at = f"{where}.parameters[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            raise ConfigError(f"{at}: expected a mapping with a name")
        kinds = [k for k in ("string", "array", "map") if k in p]
        if len(kinds) > 1:
            raise ConfigError(f"{at} ({p['name']}): set one of string, array or map")
        if "array" in p and not isinstance(p["array"], list):
            raise ConfigError(f"{at}.array: expected a list")
        if "map" in p and not isinstance(p["map"], dict):
            raise ConfigError(f"{at}.map: expected a mapping")


def select(plugins: Sequence[Plugin], name: str, matches: Mapping[str, bool]) -> Plugin | None:
    """The plugin an Application source uses, as Argo CD picks it.

    `name` is the source's `plugin.name` ("" to discover); `matches` says, for each plugin
    with a discover rule, whether it matched the source. A named plugin is used when its rule
    matches or it has none; unnamed, the first matching plugin (by name) is used. None when
    nothing fits."""
    if name:
        found = next((p for p in plugins if p.full_name == name), None)
        if found is None or (found.discovers and not matches.get(found.full_name, False)):
            return None
        return found
    for p in sorted(plugins, key=lambda p: p.full_name):
        if p.discovers and matches.get(p.full_name, False):
            return p
    return None


def build_env(
    *,
    app_name: str,
    namespace: str,
    project: str,
    revision: str,
    repo_url: str,
    path: str,
    target_revision: str,
    kube_version: str,
    api_versions: Sequence[str],
) -> dict[str, str]:
    """Argo CD's standard build environment."""
    return {
        "ARGOCD_APP_NAME": app_name,
        "ARGOCD_APP_NAMESPACE": namespace,
        "ARGOCD_APP_PROJECT_NAME": project,
        "ARGOCD_APP_REVISION": revision,
        "ARGOCD_APP_REVISION_SHORT": revision[:7],
        "ARGOCD_APP_REVISION_SHORT_8": revision[:8],
        "ARGOCD_APP_SOURCE_REPO_URL": repo_url,
        "ARGOCD_APP_SOURCE_PATH": path or ".",
        "ARGOCD_APP_SOURCE_TARGET_REVISION": target_revision,
        "KUBE_VERSION": kube_version,
        "KUBE_API_VERSIONS": ",".join(api_versions),
    }


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """`$VAR` and `${VAR}` replaced from `env` (unknown names become empty, as envsubst)."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _param_name(name: str) -> str:
    return _ENV_NAME_UNSAFE.sub("_", name).upper()


def plugin_env(block: Mapping[str, Any], build: Mapping[str, str]) -> dict[str, str]:
    """The variables a source's `plugin` block adds: `ARGOCD_ENV_<name>` for each `env` entry
    (its value interpolated from the build environment), `ARGOCD_APP_PARAMETERS` (the
    parameters as JSON) and `PARAM_<NAME>[_<INDEX>|_<KEY>]` for each parameter value."""
    out: dict[str, str] = {}
    for entry in block.get("env") or []:
        value = entry.get("value", "")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out[f"ARGOCD_ENV_{entry['name']}"] = _interpolate(text, build)
    params = list(block.get("parameters") or [])
    if params:
        out["ARGOCD_APP_PARAMETERS"] = json.dumps(params, separators=(",", ":"))
    for p in params:
        base = f"PARAM_{_param_name(p['name'])}"
        if "string" in p:
            out[base] = str(p["string"])
        for i, item in enumerate(p.get("array") or []):
            out[f"{base}_{i}"] = str(item)
        for key, item in (p.get("map") or {}).items():
            out[f"{base}_{_param_name(str(key))}"] = str(item)
    return out
