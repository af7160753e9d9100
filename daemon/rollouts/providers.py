"""Metric providers of AnalysisRuns: where a measurement's value comes from.

- `prometheus`: an instant query (`/api/v1/query`) or `rangeQuery`, over httpx; a vector is a
  list of floats (even with one sample), a scalar a float, a matrix all samples flattened.
- `web`: an HTTP request whose JSON answer is read at `jsonPath` (`{$.data.ok}`).

The `job` provider needs the cluster, so the controller runs it (a Job per measurement). Any
other provider is a measurement Error that names it, so a run never passes a metric it did not
measure.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import httpx

Body = dict[str, Any]


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


async def prometheus(spec: Body, timeout_default: float = 30.0) -> Value:
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
    try:
        async with httpx.AsyncClient(
            verify=not spec.get("insecure"), timeout=seconds or None, auth=auth
        ) as client:
            r = await client.get(address.rstrip("/") + path, params=params, headers=headers)
    except httpx.HTTPError as e:
        raise ProviderError(f"{type(e).__name__}: {e}".rstrip(": ")) from e
    try:
        data = r.json()
    except ValueError as e:
        raise ProviderError(f"prometheus answered HTTP {r.status_code}: {r.text[:200]}") from e
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


_JSON_PATH = re.compile(r"^\{\s*\$(?P<path>(?:\.[A-Za-z0-9_-]+|\[\d+\])*)\s*\}$")


async def web(spec: Body) -> Value:
    """An HTTP request; the value is the JSON answer at `jsonPath` (the whole answer without)."""
    url = str(spec.get("url") or "")
    if not url:
        raise ProviderError("web provider: url is required")
    method = str(spec.get("method") or "GET").upper()
    headers = {str(h.get("key")): str(h.get("value")) for h in spec.get("headers") or []}
    timeout = float(spec.get("timeoutSeconds") or 10)
    body = spec.get("jsonBody") if spec.get("jsonBody") is not None else spec.get("body")
    try:
        async with httpx.AsyncClient(verify=not spec.get("insecure"), timeout=timeout) as client:
            if isinstance(body, dict | list):
                r = await client.request(method, url, headers=headers, json=body)
            else:
                content = None if body is None else str(body).encode()
                r = await client.request(method, url, headers=headers, content=content)
    except httpx.HTTPError as e:
        raise ProviderError(f"{type(e).__name__}: {e}".rstrip(": ")) from e
    if r.status_code >= 300:
        raise ProviderError(f"received non 2xx response code: {r.status_code}")
    try:
        data: Any = r.json()
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


async def measure(provider: Body) -> Value:
    """Take one measurement with the metric's provider."""
    ((kind, spec),) = provider.items()
    if kind == "prometheus":
        return await prometheus(spec or {})
    if kind == "web":
        return await web(spec or {})
    raise ProviderError(f"metric provider {kind!r} is not supported by this gitopsd")
