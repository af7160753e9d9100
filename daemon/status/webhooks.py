"""Git push webhooks: recognise the provider, verify the signature, extract repo URLs and branch.

Pure functions: headers + body + configured secrets in, a `PushEvent` (or None for events we do
not act on) out. A bad signature or malformed payload raises `WebhookError` with the HTTP status
to answer; nothing here can stall or crash the daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.sources.git import normalize_url


@dataclass(frozen=True, slots=True)
class PushEvent:
    """A push to `branch` of the repository known by any of `urls` (normalised)."""

    provider: str
    urls: set[str]
    branch: str


class WebhookError(Exception):
    """A delivery we refuse; `status` is the HTTP status to answer."""

    def __init__(self, message: str, *, status: int, provider: str, result: str) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.result = result


def _secret(secrets: dict[str, dict[str, str]], provider: str) -> str:
    path = (secrets.get(provider) or {}).get("secretFile", "")
    if not path:
        return ""
    try:
        secret = Path(path).read_text().strip()
    except OSError as e:
        raise WebhookError(
            f"{provider} webhook secret unreadable", status=500, provider=provider, result="error"
        ) from e
    if not secret:
        # A configured but empty secret must not silently turn verification off.
        raise WebhookError(
            f"{provider} webhook secret file is empty",
            status=500,
            provider=provider,
            result="error",
        )
    return secret


def _verify_hmac(body: bytes, secret: str, given: str, *, provider: str, prefix: str) -> None:
    expected = prefix + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not given or not hmac.compare_digest(expected, given.strip()):
        raise WebhookError(
            f"{provider} webhook signature mismatch",
            status=401,
            provider=provider,
            result="bad_signature",
        )


def _branch(ref: Any) -> str:
    text = str(ref or "")
    return text.removeprefix("refs/heads/") if text.startswith("refs/heads/") else ""


def _urls(*values: Any) -> set[str]:
    return {normalize_url(str(v)) for v in values if isinstance(v, str) and v}


def parse_webhook(
    headers: dict[str, str], body: bytes, secrets: dict[str, dict[str, str]]
) -> PushEvent | None:
    """Interpret one delivery; None when it is not a push we care about (e.g. a ping)."""
    h = {k.lower(): v for k, v in headers.items()}
    if "x-gitea-event" in h or "x-gogs-event" in h:
        provider = "gitea" if "x-gitea-event" in h else "gogs"
        secret = _secret(secrets, "gitea") or _secret(secrets, "gogs")
        if secret:
            sig = h.get("x-gitea-signature") or h.get("x-gogs-signature") or ""
            _verify_hmac(body, secret, sig, provider=provider, prefix="")
        event = h.get("x-gitea-event") or h.get("x-gogs-event")
    elif "x-github-event" in h:
        provider = "github"
        secret = _secret(secrets, "github")
        if secret:
            _verify_hmac(
                body, secret, h.get("x-hub-signature-256", ""), provider=provider, prefix="sha256="
            )
        event = h["x-github-event"]
    elif "x-gitlab-event" in h:
        provider = "gitlab"
        secret = _secret(secrets, "gitlab")
        if secret and not hmac.compare_digest(secret, h.get("x-gitlab-token", "")):
            raise WebhookError(
                "gitlab webhook token mismatch",
                status=401,
                provider=provider,
                result="bad_signature",
            )
        event = h["x-gitlab-event"]
    elif "x-event-key" in h:
        provider = "bitbucket"
        secret = _secret(secrets, "bitbucket") or _secret(secrets, "bitbucketserver")
        if secret:
            _verify_hmac(
                body, secret, h.get("x-hub-signature", ""), provider=provider, prefix="sha256="
            )
        event = h["x-event-key"]
    else:
        raise WebhookError(
            "unknown webhook provider (no event header)",
            status=400,
            provider="unknown",
            result="unknown_provider",
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise WebhookError(
            f"{provider} webhook payload is not JSON",
            status=400,
            provider=provider,
            result="malformed",
        ) from e
    if not isinstance(payload, dict):
        raise WebhookError(
            f"{provider} webhook payload is not an object",
            status=400,
            provider=provider,
            result="malformed",
        )
    try:
        return _extract(provider, str(event), payload)
    except (AttributeError, TypeError, KeyError) as e:
        raise WebhookError(
            f"{provider} webhook payload is malformed: {e}",
            status=400,
            provider=provider,
            result="malformed",
        ) from e


def _extract(provider: str, event: str, p: dict[str, Any]) -> PushEvent | None:
    if provider in ("github", "gitea", "gogs"):
        if event != "push":
            return None
        repo = p.get("repository") or {}
        urls = _urls(
            repo.get("clone_url"),
            repo.get("ssh_url"),
            repo.get("html_url"),
            repo.get("git_url"),
            repo.get("url"),
        )
        return PushEvent(provider, urls, _branch(p.get("ref")))
    if provider == "gitlab":
        if event not in ("Push Hook", "Tag Push Hook", "System Hook"):
            return None
        proj = p.get("project") or {}
        repo = p.get("repository") or {}
        urls = _urls(
            proj.get("git_http_url"),
            proj.get("git_ssh_url"),
            proj.get("web_url"),
            repo.get("git_http_url"),
            repo.get("git_ssh_url"),
            repo.get("homepage"),
        )
        return PushEvent(provider, urls, _branch(p.get("ref")))
    # Bitbucket Cloud (repo:push) and Server (repo:refs_changed)
    if event not in ("repo:push", "repo:refs_changed"):
        return None
    repo = p.get("repository") or {}
    links = repo.get("links") or {}
    found: set[str] = set()
    html = links.get("html")
    if isinstance(html, dict):
        found |= _urls(html.get("href"))
    for clone in links.get("clone") or []:
        if isinstance(clone, dict):
            found |= _urls(clone.get("href"))
    branch = ""
    for change in (p.get("push") or {}).get("changes") or []:
        new = (change or {}).get("new") or {}
        if new.get("type") == "branch":
            branch = str(new.get("name", ""))
    for change in p.get("changes") or []:
        ref = (change or {}).get("ref") or {}
        if ref.get("type") == "BRANCH":
            branch = str(ref.get("displayId", ""))
    return PushEvent(provider, found, branch)
