"""What the `app` verbs rely on, without a daemon: label selectors in their string form and
Helm parameter overrides applied to an Application."""

from __future__ import annotations

from typing import Any

import pytest

from daemon import overrides
from daemon.errors import ConfigError
from daemon.labels import parse_selector
from daemon.settings import parse_application


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("team=a", {"team": "a"}, True),
        ("team==a", {"team": "b"}, False),
        ("team!=a", {}, True),
        ("team in (a, b),env notin (prod)", {"team": "b", "env": "dev"}, True),
        ("team in (a,b),env notin (prod)", {"team": "b", "env": "prod"}, False),
        ("tier", {"tier": ""}, True),
        ("!tier", {"tier": "x"}, False),
        ("app.kubernetes.io/part-of=shop", {"app.kubernetes.io/part-of": "shop"}, True),
    ],
)
def test_label_selectors_match_as_kubernetes_does(
    selector: str, labels: dict[str, str], matches: bool
) -> None:
    """=, ==, !=, in, notin, exists and !exists; every clause must hold."""
    assert parse_selector(selector).matches(labels) is matches


def test_a_bad_selector_names_the_clause() -> None:
    """A clause that does not parse is a ValueError naming it."""
    with pytest.raises(ValueError, match="cannot parse 'team in a'"):
        parse_selector("env=prod,team in a")


def app(source: dict[str, Any]) -> Any:
    """An Application with one source."""
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "web"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/r.git", "path": "chart", **source},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"},
        },
    }
    return parse_application(doc, where="test", warnings=[])


def test_overrides_become_helm_parameters_in_source_and_spec() -> None:
    """Overrides replace same-named parameters, keep the others, and show in the raw spec."""
    base = app({"helm": {"parameters": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]}})
    got = overrides.apply(base, {"b": "3", "c": "4"})
    params = [{"name": "a", "value": "1"}, {"name": "b", "value": "3"}, {"name": "c", "value": "4"}]
    assert got.sources[0].helm == {"parameters": params}
    assert got.raw["spec"]["source"]["helm"]["parameters"] == params
    assert base.raw["spec"]["source"]["helm"]["parameters"][1]["value"] == "2", "not mutated"
    assert overrides.apply(base, {}) is base


def test_overrides_refuse_sources_that_are_not_helm() -> None:
    """A Kustomize source takes no Helm parameters; a key without = is refused."""
    with pytest.raises(ConfigError, match="renders with Kustomize"):
        overrides.apply(app({"kustomize": {"namePrefix": "x-"}}), {"a": "1"})
    with pytest.raises(ConfigError, match="expected key=value"):
        overrides.parse(["novalue"])
