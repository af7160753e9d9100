"""Where an analysis may reach, and what it may read: the policy of one Rollout's app.

gitopsd runs on a host, not in a pod: a `web` or `prometheus` metric of a tenant's
AnalysisTemplate reaches whatever the host reaches (its loopback, the daemon's own API, cloud
metadata at link-local addresses, other networks). So a provider's address must match an
allow-list entry, from the settings (`settings.rollouts.analysis.allowedAddresses`, every
app) or from the app's AppProject (annotation `gitopsd.io/analysis-allowed-addresses`). An
entry is a URL prefix (`https://prom.example:9090/api/`, host `*.example.com` or `*`; no port
means the scheme's default, `:*` any port) or an IP network (`10.0.0.0/8`, any scheme and port).

A loopback, link-local, unspecified or multicast address, and the daemon's own listen address,
are reached only through an entry that names them (its exact host name, its IP, or a network
other than `0.0.0.0/0` and `::/0` containing it), never through a wildcard. Pure: the caller
resolves names and tells which addresses are the host's own.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANNOTATION = "gitopsd.io/analysis-allowed-addresses"
DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressError(ValueError):
    """An allow-list entry that cannot be read; the message names it."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One allow-list entry, as written."""

    text: str
    scheme: str = ""  # "" for a network entry
    host: str = ""  # lower case; may start with "*." or be "*"
    port: int = 0  # 0: any port (written `:*`)
    path: str = "/"
    network: Network | None = None

    @property
    def wildcard(self) -> bool:
        """True when the entry does not name its hosts (so it never reaches special ones)."""
        if self.network is not None:
            return self.network.prefixlen == 0
        return self.host.startswith("*")

    def matches(self, scheme: str, host: str, port: int, path: str, ip: Address) -> bool:
        """Whether a request to `scheme://host:port/path`, connecting to `ip`, is covered."""
        if self.network is not None:
            return ip in self.network
        if scheme != self.scheme or self.port not in (0, port) or not _under(path, self.path):
            return False
        return self.host == host or (self.host.startswith("*") and fnmatchcase(host, self.host))


def _under(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it, whole segments only (`/api` covers `/api/x`,
    not `/api-x`)."""
    if prefix.endswith("/") or path == prefix:
        return path.startswith(prefix)
    return path.startswith(prefix + "/")


def parse_entry(text: str, *, where: str) -> Entry:
    """One entry: a URL prefix or an IP network; EgressError naming `where` otherwise."""
    raw = text.strip()
    try:
        return Entry(text=raw, network=ipaddress.ip_network(raw, strict=False))
    except ValueError:
        pass
    any_port = urlsplit(raw).netloc.endswith(":*")
    parts = urlsplit(raw.replace(":*", "", 1) if any_port else raw)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EgressError(f"{where}: {raw!r} is neither an http(s) URL prefix nor an IP network")
    try:
        port = 0 if any_port else parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as e:
        raise EgressError(f"{where}: {raw!r}: {e}") from e
    return Entry(
        text=raw,
        scheme=parts.scheme,
        host=parts.hostname.lower(),
        port=port,
        path=parts.path or "/",
    )


def parse_entries(values: list[str] | tuple[str, ...], *, where: str) -> tuple[Entry, ...]:
    """Entries from a list (settings) or comma/space separated text (an annotation)."""
    out: list[Entry] = []
    for value in values:
        for piece in str(value).replace(",", " ").split():
            out.append(parse_entry(piece, where=where))
    return tuple(out)


def special(ip: Address) -> str:
    """Why an address is reached only when named ("" when it is not special)."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    mapped = getattr(ip, "ipv4_mapped", None)
    return special(mapped) if mapped is not None else ""


@dataclass(frozen=True, slots=True)
class Policy:
    """What one app's analyses may do. `owner` names the app and project for messages."""

    owner: str
    entries: tuple[Entry, ...] = ()
    # The daemon's own API: (address, port); address None means every address of the host.
    own_api: tuple[Address | None, int] | None = None
    # (namespace, name) -> why a Secret may not be read ("" = it may); None: any may.
    secret_check: Callable[[str, str], str] | None = field(default=None, compare=False)
    # namespace -> why the `job` provider may not create a Job there ("" = it may); None: any.
    job_check: Callable[[str], str] | None = field(default=None, compare=False)

    def job_refusal(self, namespace: str) -> str:
        """Why a `job` measurement may not create its Job in `namespace` ("" = it may)."""
        return self.job_check(namespace) if self.job_check is not None else ""

    def secret_refusal(self, namespace: str, name: str) -> str:
        """Why a `secretKeyRef` to Secret/namespace/name is refused ("" = allowed)."""
        return self.secret_check(namespace, name) if self.secret_check is not None else ""

    def url_refusal(self, url: str, ip: Address, *, local: bool) -> str:
        """Why a request to `url` connecting to `ip` is refused ("" = allowed). `local`: the
        address is one of the host's own."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, (parts.hostname or "").lower()
        ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
        if scheme not in DEFAULT_PORTS or not host:
            return f"{url!r} is not an http(s) URL"
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            return f"{url!r} has an invalid port"
        path = unquote(parts.path or "/")
        if any(segment in (".", "..") for segment in path.split("/")):
            return f"{url!r} has dot segments in its path"
        matched = [e for e in self.entries if e.matches(scheme, host, port, path, ip)]
        target = f"{scheme}://{host}:{port} ({ip})"
        if not matched:
            return (
                f"{target} is not in the allowed analysis addresses of {self.owner} "
                f"(settings.rollouts.analysis.allowedAddresses or the AppProject's "
                f"{ANNOTATION} annotation)"
            )
        why = special(ip)
        if self._is_own_api(ip, port, local=local):
            why = "the daemon's own API"
            named = [e for e in matched if not e.wildcard and e.network is None and e.port == port]
        else:
            named = [e for e in matched if not e.wildcard and _names(e, ip)]
        if why and not named:
            return f"{target} is {why}: only an entry naming it allows it, not {matched[0].text!r}"
        return ""

    def _is_own_api(self, ip: Address, port: int, *, local: bool) -> bool:
        if self.own_api is None or port != self.own_api[1]:
            return False
        address = self.own_api[0]
        if address is not None:
            address = getattr(address, "ipv4_mapped", None) or address
        return (local or ip.is_loopback) if address is None else ip == address


def _names(entry: Entry, ip: Address) -> bool:
    """Whether `entry` names the special address `ip`: a host entry does (it matched by name or
    by the literal IP); a network only when it lies within the same special range."""
    net = entry.network
    if net is None:
        return True
    kind = special(ip)
    return special(net.network_address) == kind and special(net.broadcast_address) == kind


def job_refusal(job: dict[str, Any]) -> str:
    """Why a `job` measurement's Job may not run ("" = it may): its pods would reach into the
    node (host namespaces, host paths or ports, privileged containers). gitopsd creates the
    Job with its own credentials, so these are refused whatever the namespace allows."""
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            return f"spec.template.spec.{key} is set"
    for v in pod.get("volumes") or []:
        if isinstance(v, dict) and "hostPath" in v:
            return f"volume {v.get('name')!r} is a hostPath"
    if pod.get("nodeName"):
        return "spec.template.spec.nodeName picks a node"
    if _host_process(pod.get("securityContext")):
        return "the pod asks for a Windows host process"
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(group) or []:
            why = _container_refusal(c) if isinstance(c, dict) else ""
            if why:
                return why
    return ""


def _host_process(context: Any) -> bool:
    return isinstance(context, dict) and bool(
        (context.get("windowsOptions") or {}).get("hostProcess")
    )


def _container_refusal(c: dict[str, Any]) -> str:
    """Why one container of a `job` measurement reaches into the node ("" = it does not)."""
    name, context = c.get("name"), c.get("securityContext") or {}
    if context.get("privileged") is True:
        return f"container {name!r} is privileged"
    if context.get("allowPrivilegeEscalation") is True:
        return f"container {name!r} allows privilege escalation"
    if (context.get("capabilities") or {}).get("add"):
        return f"container {name!r} adds capabilities"
    if context.get("procMount") == "Unmasked" or _host_process(context):
        return f"container {name!r} asks for the host's view"
    if any(isinstance(p, dict) and p.get("hostPort") for p in c.get("ports") or []):
        return f"container {name!r} asks for a hostPort"
    return ""


def _secret_values(provider: dict[str, Any], secrets: dict[str, str]) -> list[str]:
    """The values an answer must not repeat: secret args, header values, the basic-auth
    password (and `user:password`)."""
    hidden = [v for v in secrets.values() if v]
    ((_, spec),) = provider.items() if len(provider) == 1 else (("", {}),)
    spec = spec if isinstance(spec, dict) else {}
    for h in spec.get("headers") or []:
        value = str((h or {}).get("value") or "") if isinstance(h, dict) else ""
        if len(value) >= 6:
            hidden.append(value)
    basic = (spec.get("authentication") or {}).get("basicAuth") or {}
    if isinstance(basic, dict) and basic.get("password"):
        hidden += [str(basic["password"]), f"{basic.get('username', '')}:{basic['password']}"]
    return hidden


def repeats_secret(text: str, provider: dict[str, Any], secrets: dict[str, str]) -> bool:
    """Whether `text` holds a secret value in any common encoding (as sent, JSON- or
    URL-escaped, Python-quoted, base64): such an answer is an echo of the request."""
    for value in _secret_values(provider, secrets):
        if len(value) < 4:
            continue
        forms = {
            value,
            json.dumps(value)[1:-1],
            quote(value, safe=""),
            quote_plus(value),
            repr(value)[1:-1],
            base64.b64encode(value.encode()).decode().rstrip("="),
        }
        if any(form and form in text for form in forms):
            return True
    return False


def redact(text: str, provider: dict[str, Any], secrets: dict[str, str]) -> str:
    """`text` without the secret values, header values and basic-auth password a provider
    was given (an endpoint that echoes its request must not hand them to the tenant)."""
    for value in sorted(_secret_values(provider, secrets), key=len, reverse=True):
        text = text.replace(value, "*****")
    return text
