"""Metric providers of AnalysisRuns: where a measurement's value comes from.

- `prometheus`: an instant query (`/api/v1/query`) or `rangeQuery`, over httpx; a vector is a
  list of floats (even with one sample), a scalar a float, a matrix all samples flattened.
- `web`: an HTTP request whose JSON answer is read at `jsonPath` (`{$.data.ok}`).

Every request goes only to an address the app's policy allows (`daemon.rollouts.egress`),
connected to the address that was checked, without environment proxies or redirects, within
its timeout as a whole, and reads at most MAX_BODY bytes.

The `job` provider needs the cluster, so the controller runs it (a Job per measurement). Any
other provider is a measurement Error that names it, so a run never passes a metric it did not
measure.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from daemon.rollouts.egress import DEFAULT_PORTS, Address, Policy

Body = dict[str, Any]
MAX_BODY = 4 * 1024 * 1024  # bytes of an answer read at most
DEFAULT_TIMEOUT = 30.0
RESOLVE_TIMEOUT = 5.0


class ProviderError(Exception):
    """The measurement could not be taken; the message is the measurement's."""


@dataclass(frozen=True, slots=True)
class Value:
    """A measured value: what conditions see, and its text for the run's status."""

    result: Any
    text: str


def _float(raw: Any) -> float:
    text = str(raw)
    if text in ("NaN", "+Inf", "-Inf", "Inf"):
        return {"NaN": math.nan, "+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf}[text]
    return float(text)


def _format(value: Any) -> str:
    def one(x: float) -> str:
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        return repr(x) if x != int(x) else str(int(x)) if abs(x) < 1e15 else repr(x)

    if isinstance(value, list):
        return "[" + " ".join(one(x) for x in value) + "]"
    return one(value)


async def prometheus(spec: Body, policy: Policy, timeout_default: float = 30.0) -> Value:
    """Run a Prometheus query; raises ProviderError with Argo Rollouts' messages."""
    address = str(spec.get("address") or os.environ.get("ARGO_ROLLOUTS_PROMETHEUS_ADDRESS", ""))
    if not address:
        raise ProviderError("prometheus address is not configured")
    if not re.match(r"^https?://", address):
        raise ProviderError(f"prometheus address is not is url format: {address!r}")
    timeout = spec.get("timeout", timeout_default)
    try:
        seconds = float(timeout)
    except (TypeError, ValueError) as e:
        raise ProviderError(f"prometheus timeout is not a number: {timeout!r}") from e
    if seconds < 0:
        raise ProviderError("prometheus timeout should not be negative")
    headers = {str(h.get("key")): str(h.get("value")) for h in spec.get("headers") or []}
    auth = None
    basic = (spec.get("authentication") or {}).get("basicAuth") or {}
    if basic:
        auth = httpx.BasicAuth(str(basic.get("username", "")), str(basic.get("password", "")))
    query = str(spec.get("query") or "")
    params: dict[str, str] = {"query": query}
    path = "/api/v1/query"
    if spec.get("rangeQuery"):
        rq = spec["rangeQuery"]
        path = "/api/v1/query_range"
        params.update(start=str(rq.get("start")), end=str(rq.get("end")), step=str(rq.get("step")))
    url = httpx.URL(address.rstrip("/") + path, params=params)
    answer = await _request(
        policy,
        "GET",
        url,
        headers=headers,
        verify=not spec.get("insecure"),
        timeout=seconds or DEFAULT_TIMEOUT,
        auth=auth,
    )
    try:
        data = json.loads(answer.body)
    except ValueError as e:
        # Not echoed: the body of an answer the tenant chose may repeat what was sent.
        raise ProviderError(
            f"prometheus answered HTTP {answer.status} with a body that is not JSON"
        ) from e
    if not isinstance(data, dict):
        raise ProviderError("prometheus answered JSON that is not an object")
    if data.get("status") != "success":
        raise ProviderError(f"prometheus: {data.get('errorType', '')}: {data.get('error', '')}")
    result = data.get("data") or {}
    kind, raw = result.get("resultType"), result.get("result")
    if kind == "vector":
        values = [_float(s["value"][1]) for s in raw or []]
        return Value(values, _format(values))
    if kind == "scalar" and isinstance(raw, list) and len(raw) == 2:
        v = _float(raw[1])
        return Value(v, _format(v))
    if kind == "matrix":
        values = [_float(v[1]) for series in raw or [] for v in series.get("values") or []]
        return Value(values, _format(values))
    raise ProviderError("Prometheus metric type not supported")


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read whole (at most MAX_BODY bytes)."""

    status: int
    body: bytes


def _local(ip: Address) -> bool:
    """Whether `ip` is one of this host's addresses (binding to it succeeds)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((str(ip), 0))
    except OSError:
        return False
    return True


async def _pinned(policy: Policy, url: httpx.URL) -> httpx.URL:
    """`url` with its host replaced by the first of its addresses the policy allows, so the
    connection goes where it was checked (a second DNS answer cannot move it)."""
    host = url.host
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        port = url.port or DEFAULT_PORTS.get(url.scheme, 0)
        try:
            with anyio.fail_after(RESOLVE_TIMEOUT):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as e:
            raise ProviderError(f"cannot resolve {host!r}: {e}") from e
        addresses = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
    refusals = []
    for ip in addresses:
        why = policy.url_refusal(str(url.copy_with(query=None)), ip, local=_local(ip))
        if not why:
            return url.copy_with(host=str(ip))
        refusals.append(why)
    raise ProviderError(f"refused: {refusals[0] if refusals else 'no address'}")


async def _request(
    policy: Policy,
    method: str,
    url: httpx.URL,
    *,
    headers: dict[str, str],
    verify: bool,
    timeout: float,
    content: bytes | None = None,
    auth: httpx.Auth | None = None,
) -> Answer:
    """One request to an allowed address: no proxies from the environment, no redirects
    followed, the whole exchange within `timeout`, the answer at most MAX_BODY bytes."""
    if url.scheme not in DEFAULT_PORTS:
        raise ProviderError(f"{url.scheme!r} is not http or https")
    pinned = await _pinned(policy, url)
    host = f"[{url.host}]" if ":" in url.host else url.host
    sent = {**headers, "Host": host if url.port is None else f"{host}:{url.port}"}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    try:
        with anyio.fail_after(timeout):
            async with (
                httpx.AsyncClient(
                    verify=verify,
                    timeout=timeout,
                    auth=auth,
                    trust_env=False,
                    follow_redirects=False,
                ) as client,
                client.stream(
                    method, pinned, headers=sent, content=content, extensions=extensions
                ) as r,
            ):
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise ProviderError(f"the answer is larger than {MAX_BODY} bytes")
                return Answer(r.status_code, bytes(body))
    except TimeoutError as e:
        raise ProviderError(f"no complete answer within {timeout:g}s") from e
    except httpx.HTTPError as e:
        raise ProviderError(f"{type(e).__name__}: {e}".rstrip(": ")) from e


_JSON_PATH = re.compile(r"^\{\s*\$(?P<path>(?:\.[A-Za-z0-9_-]+|\[\d+\])*)\s*\}$")


async def web(spec: Body, policy: Policy) -> Value:
    """An HTTP request; the value is the JSON answer at `jsonPath` (the whole answer without)."""
    url = str(spec.get("url") or "")
    if not url:
        raise ProviderError("web provider: url is required")
    method = str(spec.get("method") or "GET").upper()
    headers = {str(h.get("key")): str(h.get("value")) for h in spec.get("headers") or []}
    try:
        timeout = float(spec.get("timeoutSeconds") or 10)
    except (TypeError, ValueError) as e:
        raise ProviderError(f"web provider: timeoutSeconds is not a number: {e}") from e
    body = spec.get("jsonBody") if spec.get("jsonBody") is not None else spec.get("body")
    if isinstance(body, dict | list):
        content: bytes | None = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    else:
        content = None if body is None else str(body).encode()
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ProviderError(f"web provider: invalid url: {e}") from e
    answer = await _request(
        policy,
        method,
        target,
        headers=headers,
        verify=not spec.get("insecure"),
        timeout=timeout,
        content=content,
    )
    if answer.status >= 300:
        raise ProviderError(f"received non 2xx response code: {answer.status}")
    try:
        data: Any = json.loads(answer.body)
    except ValueError as e:
        raise ProviderError(f"could not parse JSON body: {e}") from e
    path = str(spec.get("jsonPath") or "{$}")
    m = _JSON_PATH.match(path)
    if not m:
        raise ProviderError(f"unsupported jsonPath {path!r} (use {{$.a.b[0]}})")
    for part in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", m.group("path")):
        key, index = part
        if key and isinstance(data, dict) and key in data:
            data = data[key]
        elif index and isinstance(data, list) and int(index) < len(data):
            data = data[int(index)]
        else:
            raise ProviderError(f"jsonPath {path!r} not found in the response")
    return Value(data, json.dumps(data) if not isinstance(data, str) else data)


async def measure(provider: Body, policy: Policy) -> Value:
    """Take one measurement with the metric's provider, within the app's `policy`. Whatever a
    tenant's template holds ends as a ProviderError, never a crash of the controller."""
    ((kind, spec),) = provider.items()
    try:
        if kind == "prometheus":
            return await prometheus(spec or {}, policy)
        if kind == "web":
            return await web(spec or {}, policy)
    except (UnicodeError, ValueError, TypeError) as e:
        raise ProviderError(f"{kind} provider: {type(e).__name__}: {e}") from e
    raise ProviderError(f"metric provider {kind!r} is not supported by this gitopsd")
