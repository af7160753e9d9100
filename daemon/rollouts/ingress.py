"""The nginx canary Ingress of a traffic-routed canary, as a pure function of the Rollout, its
stable Ingress and the weight to route (Argo Rollouts' rules, ../shared/research/rollouts.md
§1.5):

- one canary Ingress per stable Ingress, named `<rollout>-<stable ingress>-canary`, owned by
  the Rollout (so it is garbage-collected with it);
- it copies the stable Ingress's TLS, class and the rules that send a path to the stable
  Service, with those backends pointed at the canary Service;
- annotations: `additionalIngressAnnotations` (the prefix added), then
  `canaryIngressAnnotations` (verbatim), then `canary: "true"` and `canary-weight`, and
  `canary-weight-total` when `maxTrafficWeight` is set. A header route of a `setHeaderRoute`
  step becomes `canary-by-header` with `-value` (exact) or `-pattern` (regex, prefix): nginx's
  header routing, which takes precedence over the weight.

An existing canary Ingress is merge-patched, so annotations someone else added stay; one
controlled by another object is refused.
"""

from __future__ import annotations

import copy
import re

from daemon.rollouts.spec import Body, Canary, HeaderMatch, InvalidSpec, owner_reference

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
NAME_LIMIT = 253


class IngressConflict(InvalidSpec):
    """The canary Ingress's name is taken by an object this Rollout does not control."""


def canary_name(rollout: str, stable: str) -> str:
    """`<rollout>-<stable>-canary`, the Rollout's name cut short when the whole is too long."""
    suffix = f"-{stable}-canary"
    return rollout[: max(0, NAME_LIMIT - len(suffix))] + suffix


def check_stable(ingress: Body | None, name: str, stable_service: str, subject: str) -> None:
    """The stable Ingress exists and routes some path to the stable Service."""
    if ingress is None:
        raise InvalidSpec(f"{subject}: stable Ingress {name!r} not found")
    if not any(_uses(rule, stable_service) for rule in _rules(ingress)):
        raise InvalidSpec(
            f"{subject}: ingress `{name}` has no rules using service {stable_service} backend"
        )


def _rules(ingress: Body) -> list[Body]:
    rules = (ingress.get("spec") or {}).get("rules") or []
    return [r for r in rules if isinstance(r, dict)]


def _backend_service(path: Body) -> Body:
    service = (path.get("backend") or {}).get("service")
    return service if isinstance(service, dict) else {}


def _uses(rule: Body, service: str) -> bool:
    paths = (rule.get("http") or {}).get("paths") or []
    return any(_backend_service(p).get("name") == service for p in paths)


def header_annotations(match: HeaderMatch | None) -> dict[str, str]:
    """nginx's canary-by-header annotations (without prefix) for a header route."""
    if match is None:
        return {}
    out = {"canary-by-header": match.header}
    if match.how == "exact":
        out["canary-by-header-value"] = match.value
    elif match.how == "regex":
        out["canary-by-header-pattern"] = match.value
    else:
        out["canary-by-header-pattern"] = "^" + re.escape(match.value) + ".*"
    return out


def _prefixed(prefix: str, key: str) -> str:
    return key if key.startswith(prefix + "/") else f"{prefix}/{key}"


def canary_annotations(canary: Canary, weight: int, header: HeaderMatch | None) -> dict[str, str]:
    """The canary Ingress's annotations in Argo Rollouts' order (a later one wins)."""
    nginx = canary.nginx
    assert nginx is not None
    prefix = nginx.annotation_prefix
    out = {_prefixed(prefix, k): v for k, v in nginx.additional_annotations}
    if header is not None:
        # A step's header route replaces the static header routing while it is active.
        for key in ("canary-by-header", "canary-by-header-value", "canary-by-header-pattern"):
            out.pop(f"{prefix}/{key}", None)
        out.update({f"{prefix}/{k}": v for k, v in header_annotations(header).items()})
    out.update(dict(nginx.canary_annotations))
    out[f"{prefix}/canary"] = "true"
    out[f"{prefix}/canary-weight"] = str(weight)
    if nginx.weight_total is not None:
        out[f"{prefix}/canary-weight-total"] = str(nginx.weight_total)
    return out


def desired(
    ro: Body, canary: Canary, stable: Body, weight: int, header: HeaderMatch | None = None
) -> Body:
    """The canary Ingress built from `stable` for the weight (and header route) to apply."""
    meta = ro.get("metadata") or {}
    smeta = stable.get("metadata") or {}
    sspec = stable.get("spec") or {}
    rules = []
    for rule in _rules(stable):
        if not _uses(rule, canary.stable_service):
            continue
        rule = copy.deepcopy(rule)
        for path in (rule.get("http") or {}).get("paths") or []:
            service = _backend_service(path)
            if service.get("name") == canary.stable_service:
                service["name"] = canary.canary_service
        rules.append(rule)
    spec: Body = {"rules": rules}
    for key in ("ingressClassName", "tls"):
        if sspec.get(key):
            spec[key] = copy.deepcopy(sspec[key])
    notes = canary_annotations(canary, weight, header)
    stable_class = (smeta.get("annotations") or {}).get(CLASS_ANNOTATION)
    if stable_class:
        notes[CLASS_ANNOTATION] = stable_class
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": canary_name(str(meta.get("name", "")), str(smeta.get("name", ""))),
            "namespace": meta.get("namespace"),
            "annotations": notes,
            "ownerReferences": [owner_reference(ro)],
        },
        "spec": spec,
    }


def check_owner(existing: Body, uid: str) -> None:
    """IngressConflict unless the Rollout with `uid` controls this canary Ingress."""
    meta = existing.get("metadata") or {}
    controllers = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    if not any(r.get("uid") == uid for r in controllers):
        name = meta.get("name")
        raise IngressConflict(
            f"Ingress/{meta.get('namespace')}/{name}: controlled by different object"
            if controllers
            else f"Ingress/{meta.get('namespace')}/{name}: exists and is not owned by the Rollout"
        )


def patch(existing: Body, want: Body, uid: str) -> Body | None:
    """The merge patch that brings an existing canary Ingress to `want` (None: nothing to do),
    keeping annotations others added; IngressConflict if another object controls it."""
    check_owner(existing, uid)
    meta = existing.get("metadata") or {}
    out: Body = {}
    have = meta.get("annotations") or {}
    changed = {k: v for k, v in want["metadata"]["annotations"].items() if have.get(k) != v}
    # Header annotations this controller set before and no longer wants are removed.
    prefix_keys = ("canary-by-header", "canary-by-header-value", "canary-by-header-pattern")
    for key in list(have):
        if key.rsplit("/", 1)[-1] in prefix_keys and key not in want["metadata"]["annotations"]:
            changed[key] = None
    if changed:
        out["metadata"] = {"annotations": changed}
    spec = existing.get("spec") or {}
    spec_changes = {k: v for k, v in want["spec"].items() if spec.get(k) != v}
    if spec_changes:
        out["spec"] = spec_changes
    return out or None
