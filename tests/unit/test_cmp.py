"""Config management plugins without running one: the ConfigManagementPlugin document, which
plugin a source gets, and the environment its commands see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import cmp, settings
from daemon.errors import ConfigError


def plugin_doc(name: str = "envsubst", **spec: Any) -> dict[str, Any]:
    """A ConfigManagementPlugin document as Argo CD's sidecar reads it."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ConfigManagementPlugin",
        "metadata": {"name": name},
        "spec": {"generate": {"command": ["sh", "-c"], "args": ["cat *.yaml"]}, **spec},
    }


def test_plugin_document_is_parsed_as_argo_cd_reads_it() -> None:
    """command and args join; the versioned name is `<name>-<version>`; only the first of
    fileName, find.glob and find.command counts; unknown spec fields are warned about."""
    warnings: list[str] = []
    p = cmp.parse_plugin(
        plugin_doc(
            version="v1.0",
            init={"command": ["sh"], "args": ["-c", "echo init"]},
            discover={"fileName": "./*.env", "find": {"glob": "**/x", "command": ["true"]}},
            colour="blue",
        ),
        "plugins.yaml: document 1",
        warnings,
    )
    assert p.full_name == "envsubst-v1.0"
    assert p.generate.argv == ("sh", "-c", "cat *.yaml")
    assert p.init.argv == ("sh", "-c", "echo init")
    assert (p.discover_file_name, p.discover_glob, p.discover_command.argv) == ("./*.env", "", ())
    assert warnings == [
        "plugins.yaml: document 1 (ConfigManagementPlugin/envsubst).spec.colour: "
        "unknown field (ignored)"
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {}}, r"\(ConfigManagementPlugin/envsubst\)\.spec\.generate: required"),
        ({"spec": {"generate": {"command": []}}}, r"spec\.generate\.command: must not be empty"),
        ({"spec": {"generate": {"command": "sh -c x"}}}, r"generate\.command: expected a list"),
        ({"apiVersion": "v1"}, r"apiVersion must be argoproj\.io/v1alpha1"),
        ({"metadata": {}}, r"metadata\.name: required"),
        (
            {"spec": {"generate": {"command": ["x"]}, "discover": {"fileName": "../*.yaml"}}},
            r"discover\.fileName: '\.\./\*\.yaml' must stay inside the source path",
        ),
    ],
)
def test_bad_plugin_documents_are_refused(change: dict[str, Any], message: str) -> None:
    """A broken plugin document is an error naming the document, the plugin and the field."""
    with pytest.raises(ConfigError, match=message):
        cmp.parse_plugin({**plugin_doc(), **change}, "f.yaml: document 2", [])


def test_a_named_plugin_is_used_unless_its_discover_rule_fails() -> None:
    """Named: the plugin of that name, if its rule matches or it has none. Unnamed: the first
    plugin by name whose rule matched; plugins without a rule are never discovered."""
    plain = cmp.Plugin("plain", "", cmp.Command(("true",)))
    env = cmp.Plugin("env", "v2", cmp.Command(("true",)), discover_file_name="*.env")
    tmpl = cmp.Plugin("tmpl", "", cmp.Command(("true",)), discover_glob="**/*.tmpl")
    plugins = [tmpl, plain, env]
    assert cmp.select(plugins, "plain", {}) is plain
    assert cmp.select(plugins, "env-v2", {"env-v2": True}) is env
    assert cmp.select(plugins, "env-v2", {"env-v2": False}) is None
    assert cmp.select(plugins, "env", {"env-v2": True}) is None  # the version is part of it
    assert cmp.select(plugins, "", {"env-v2": True, "tmpl": True}) is env
    assert cmp.select(plugins, "", {"env-v2": False, "tmpl": False}) is None


def test_application_env_and_parameters_reach_the_plugin_as_argo_cd_passes_them() -> None:
    """env entries become ARGOCD_ENV_<name> with build variables interpolated; parameters go
    whole into ARGOCD_APP_PARAMETERS and one by one into PARAM_* names."""
    build = cmp.build_env(
        app_name="guestbook",
        namespace="web",
        project="default",
        revision="0123456789abcdef",
        repo_url="https://git.example/x.git",
        path="apps/gb",
        target_revision="main",
        kube_version="1.31.0",
        api_versions=("apps/v1", "v1"),
    )
    assert build["ARGOCD_APP_REVISION_SHORT"] == "0123456"
    assert build["ARGOCD_APP_REVISION_SHORT_8"] == "01234567"
    assert build["KUBE_API_VERSIONS"] == "apps/v1,v1"
    params = [
        {"name": "values-files", "array": ["a.yaml", "b.yaml"]},
        {"name": "helm-parameters", "map": {"image.tag": "v1.2.3"}},
        {"name": "mode", "string": "fast"},
    ]
    block = {
        "env": [
            {"name": "REV", "value": "rev-$ARGOCD_APP_REVISION_SHORT-${ARGOCD_APP_NAME}"},
            {"name": "PATH", "value": "/evil"},
            {"name": "FLAG", "value": True},
        ],
        "parameters": params,
    }
    env = cmp.plugin_env(block, build)
    assert env["ARGOCD_ENV_REV"] == "rev-0123456-guestbook"
    assert env["ARGOCD_ENV_PATH"] == "/evil" and "PATH" not in env
    assert env["ARGOCD_ENV_FLAG"] == "true"
    assert json.loads(env["ARGOCD_APP_PARAMETERS"]) == params
    assert env["PARAM_VALUES_FILES_0"] == "a.yaml" and env["PARAM_VALUES_FILES_1"] == "b.yaml"
    assert env["PARAM_HELM_PARAMETERS_IMAGE_TAG"] == "v1.2.3"
    assert env["PARAM_MODE"] == "fast"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"env": [{"value": "x"}]}, r"\.plugin\.env\[0\]: expected \{name: NAME, value: VALUE\}"),
        ({"parameters": [{"name": "p", "string": "a", "array": []}]}, r"set one of string"),
        ({"parameters": [{"name": "p", "map": []}]}, r"parameters\[0\]\.map: expected a mapping"),
        ({"nmae": "typo"}, r"\.plugin\.nmae: unknown field"),
    ],
)
def test_bad_source_plugin_blocks_are_refused(block: dict[str, Any], message: str) -> None:
    """An Application's plugin block is checked when the config loads."""
    with pytest.raises(ConfigError, match=message):
        cmp.check_source_plugin(block, "app.yaml (Application/x).spec.source.plugin")


def _config(tmp_path: Path, docs: list[dict[str, Any]]) -> Path:
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "all.yaml").write_text(yaml.safe_dump_all(docs))
    cfg = tmp_path / "gitopsd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "applications": ["apps/*.yaml"],
                "clusters": [{"name": "in-cluster", "server": "https://kubernetes.default.svc"}],
                "settings": {"stateDir": str(tmp_path / "state")},
            }
        )
    )
    return cfg


def _app(plugin: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "gb"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/x.git", "path": "gb", "plugin": plugin},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"},
        },
    }


def test_config_accepts_plugin_documents_and_sidecar_configmaps(tmp_path: Path) -> None:
    """A ConfigManagementPlugin document, and a ConfigMap holding plugin.yaml (the form Argo CD
    mounts into its sidecar), both load; `plugin: {}` means "discover a plugin"."""
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tmpl-plugin"},
        "data": {"plugin.yaml": yaml.safe_dump(plugin_doc("tmpl", version="v1"))},
    }
    config = settings.load(_config(tmp_path, [plugin_doc(), cm, _app({})]))
    assert [p.full_name for p in config.plugins] == ["envsubst", "tmpl-v1"]
    assert config.app("gb").sources[0].plugin == {}


def test_two_plugins_with_one_name_are_refused(tmp_path: Path) -> None:
    """Two plugins answering to the same name make the whole config invalid."""
    with pytest.raises(ConfigError, match="plugin name 'envsubst' is already defined in"):
        settings.load(_config(tmp_path, [plugin_doc(), plugin_doc()]))
