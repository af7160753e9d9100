"""The exception tree of gitopsd. Every error names its subject and the stage it failed in.

GitopsdError
├── ConfigError          a settings file or an Argo CD document is invalid (file, document, field)
├── SourceError          git: unreachable repository, missing revision, unsafe path
│   └── SourceUnreachable  the remote did not answer (ls-remote / fetch failed)
├── RenderError          directory / kustomize / helm rendering failed (file/line or tool stderr)
├── PlanError            the rendered set cannot be synced (duplicates, unknown kind, ...)
│   └── ProjectViolation  the app breaks its AppProject's rules
├── KubeError            the Kubernetes API failed or refused (resource, verb, API message)
│   └── KubeNotFound
└── SyncFailed           a sync operation ended unsuccessfully (summary of the failed resources)
"""

from __future__ import annotations


class GitopsdError(Exception):
    """Base of every error gitopsd raises on purpose."""


class ConfigError(GitopsdError):
    """Invalid configuration; the message names file, document and field."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = file + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


class SourceError(GitopsdError):
    """A git source could not be fetched or read."""


class SourceUnreachable(SourceError):
    """The remote could not be reached or refused (ls-remote or fetch failed); the last good
    render of an app may stand in for it."""


class RenderError(GitopsdError):
    """Manifests could not be generated from the source."""


class PlanError(GitopsdError):
    """The desired state is not syncable as rendered."""


class KubeError(GitopsdError):
    """The API server failed a request; `subject` is `Kind/ns/name` or a path."""

    def __init__(self, subject: str, verb: str, message: str, *, status: int = 0) -> None:
        self.subject = subject
        self.verb = verb
        self.status = status
        self.api_message = message
        super().__init__(f"{subject} {verb} failed: {message}")


class KubeNotFound(KubeError):
    """The object or resource type does not exist."""


class Fenced(KubeError):
    """This replica may not write: its member Lease is not renewed (or was evicted), or the
    work began under an incarnation that no longer holds the app (`daemon.ha.membership`)."""


class SyncFailed(GitopsdError):
    """A sync operation did not succeed."""


class ProjectViolation(PlanError):
    """The app breaks its AppProject's rules; nothing of it is synced."""
