"""Helm repository version selection, as Argo CD resolves targetRevision against index.yaml:
exact versions, Masterminds-style constraints, pre-releases only when asked for."""

from __future__ import annotations

import pytest

from daemon.errors import SourceError
from daemon.sources.helmrepo import pick_version

VERSIONS = ["1.0.0", "1.2.0", "1.2.3", "1.10.0", "2.0.0", "2.1.0-rc.1"]


@pytest.mark.parametrize(
    ("wanted", "picked"),
    [
        ("1.2.0", "1.2.0"),
        ("1.2.*", "1.2.3"),
        ("1.*", "1.10.0"),
        (">=1.0 <2", "1.10.0"),
        (">=1.0, <2", "1.10.0"),
        ("~1.2", "1.2.3"),
        ("^1.2.0", "1.10.0"),
        ("*", "2.0.0"),
        (">=2.1.0-rc.0", "2.1.0-rc.1"),
    ],
)
def test_targetrevision_selects_a_version(wanted: str, picked: str) -> None:
    """The exact version when listed, else the highest the constraint admits; a release
    candidate only when the constraint itself names a pre-release."""
    assert pick_version(VERSIONS, wanted, where="hello") == picked


def test_no_match_names_what_is_available() -> None:
    """A constraint nothing satisfies fails naming the versions the index has."""
    with pytest.raises(SourceError, match=r"hello: no version matches '3\.\*' \(available: "):
        pick_version(VERSIONS, "3.*", where="hello")
