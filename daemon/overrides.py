"""Parameter overrides (`gitopsd app set NAME -p key=value`), as Argo CD's `argocd app set -p`
writes them into `spec.source.helm.parameters`: kept in the app's state record, applied on top
of the Application as written, and shown in its spec.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from daemon.errors import ConfigError
from daemon.settings import Application


def parse(pairs: list[str]) -> dict[str, str]:
    """`key=value` arguments; ConfigError naming one without `=`."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p {pair!r}: expected key=value")
        out[key.strip()] = value
    return out


def _helm_source(app: Application) -> int:
    """The index of the source the overrides apply to: the only manifest source, which must
    render with Helm (a chart, a `helm` block, or no other tool chosen)."""
    sources = app.manifest_sources
    if len(sources) != 1:
        raise ConfigError(
            f"Application/{app.name}: parameter overrides need exactly one manifest source "
            f"(it has {len(sources)})"
        )
    src = sources[0]
    if src.kustomize is not None or src.directory is not None or src.plugin is not None:
        raise ConfigError(
            f"Application/{app.name}: parameter overrides are Helm parameters; this source "
            "renders with " + ("Kustomize" if src.kustomize is not None else "another tool")
        )
    return app.sources.index(src)


def check(app: Application) -> None:
    """ConfigError when `app` cannot take parameter overrides."""
    _helm_source(app)


def apply(app: Application, params: Mapping[str, str]) -> Application:
    """`app` with `params` as Helm parameters of its source (replacing same-named ones)."""
    if not params:
        return app
    index = _helm_source(app)
    src = app.sources[index]
    helm = copy.deepcopy(src.helm or {})
    kept = [p for p in helm.get("parameters") or [] if p.get("name") not in params]
    helm["parameters"] = kept + [{"name": k, "value": v} for k, v in sorted(params.items())]
    sources = list(app.sources)
    sources[index] = dataclasses.replace(src, helm=helm)
    raw: dict[str, Any] = copy.deepcopy(app.raw)
    spec = raw.setdefault("spec", {})
    if "sources" in spec:
        spec["sources"][index] = {**spec["sources"][index], "helm": helm}
    else:
        spec["source"] = {**spec.get("source", {}), "helm": helm}
    return dataclasses.replace(app, sources=tuple(sources), raw=raw)
