"""gitopsd: an Argo CD-compatible GitOps daemon in one async process."""

__version__ = "0.1.0"
