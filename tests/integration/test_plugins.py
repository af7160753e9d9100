"""Config management plugins run for real: sh scripts as Argo CD sidecar plugins, through the
renderer and through a running daemon syncing into the test control plane."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import cmp
from daemon.errors import RenderError
from daemon.render import Renderer, RenderRequest
from daemon.settings import Source
from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import get

# Prints one ConfigMap whose data shows what the plugin saw.
_GENERATE = """cat <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: $ARGOCD_APP_NAME-out
data:
  app: "$ARGOCD_APP_NAME"
  ns: "$ARGOCD_APP_NAMESPACE"
  project: "$ARGOCD_APP_PROJECT_NAME"
  rev: "$ARGOCD_APP_REVISION_SHORT"
  path: "$ARGOCD_APP_SOURCE_PATH"
  env: "$ARGOCD_ENV_GREETING"
  param: "$PARAM_REPLICAS"
  params: '$ARGOCD_APP_PARAMETERS'
  kube: "$KUBE_VERSION"
  secret: "${GITOPSD_TEST_SECRET:-unset}"
  init: "$(cat init.txt 2>/dev/null || echo none)"
  files: "$(ls | tr '\\n' ' ')"
EOF
"""


def plugin(name: str, *, init: str = "", generate: str = _GENERATE, **spec: Any) -> cmp.Plugin:
    """A plugin made from shell snippets."""
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ConfigManagementPlugin",
        "metadata": {"name": name},
        "spec": {"generate": {"command": ["sh", "-c", generate]}, **spec},
    }
    if init:
        doc["spec"]["init"] = {"command": ["sh", "-c"], "args": [init]}
    return cmp.parse_plugin(doc, f"{name}.yaml", [])


def request(path: str, block: dict[str, Any] | None, **extra: Any) -> RenderRequest:
    """A render request for `path` with the given plugin block."""
    return RenderRequest(
        sha="0123456789abcdef0123456789abcdef01234567",
        source=Source(repo_url="https://git.example/r.git", path=path, plugin=block),
        app_name="gb",
        namespace="web",
        project="team",
        kube_version="1.31.0",
        **extra,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with an app directory holding a values file and a kustomization."""
    root = tmp_path / "checkout"
    (root / "gb").mkdir(parents=True)
    (root / "gb" / "app.env").write_text("x=1\n")
    (root / "gb" / "kustomization.yaml").write_text("resources: []\n")
    return root


def data(rendered: Any) -> dict[str, str]:
    """The data of the one ConfigMap a plugin printed."""
    (m,) = rendered.manifests
    return dict(m.body["data"])


async def test_named_plugin_sees_argo_cd_build_env_and_works_on_a_copy(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init runs before generate in the source path; the build environment, ARGOCD_ENV_* and
    PARAM_* arrive; the daemon's own environment does not; init's writes stay in a scratch
    copy, never in the shared checkout."""
    monkeypatch.setenv("GITOPSD_TEST_SECRET", "leaked")
    r = Renderer(timeout=30)
    r.plugins = (plugin("gen", init="echo initialised > init.txt"),)
    block = {
        "name": "gen",
        "env": [{"name": "GREETING", "value": "hi-$ARGOCD_APP_NAME"}],
        "parameters": [{"name": "replicas", "string": "3"}],
    }
    out = await r.render(request("gb", block), repo)
    assert out.tool == "Plugin"
    got = data(out)
    assert got["app"] == "gb" and got["ns"] == "web" and got["project"] == "team"
    assert got["rev"] == "0123456" and got["path"] == "gb" and got["kube"] == "1.31.0"
    assert got["env"] == "hi-gb" and got["param"] == "3"
    assert yaml.safe_load(got["params"]) == [{"name": "replicas", "string": "3"}]
    assert got["secret"] == "unset", "the daemon's environment reached the plugin"
    assert got["init"] == "initialised"
    assert not (repo / "gb" / "init.txt").exists(), "init wrote into the shared checkout"


async def test_discovery_picks_the_plugin_whose_rule_matches(repo: Path) -> None:
    """`plugin: {}` and a source with no type at all take the plugin whose discover rule
    matches (before Kustomize, as Argo CD); no match leaves the source to the built-in tools,
    or, with `plugin: {}`, is an error listing the configured plugins."""
    r = Renderer(timeout=30)
    r.plugins = (
        plugin("never", discover={"fileName": "*.nothing"}),
        plugin("envfiles", discover={"find": {"glob": "**/*.env"}}),
    )
    assert (await r.render(request("gb", {}), repo)).tool == "Plugin"
    assert (await r.render(request("gb", None), repo)).tool == "Plugin"
    (repo / "other").mkdir()
    (repo / "other" / "kustomization.yaml").write_text("resources: []\n")
    assert (await r.render(request("other", None), repo)).tool == "Kustomize"
    with pytest.raises(RenderError, match="no configured plugin's discover rule matches 'other'"):
        await r.render(request("other", {}), repo)
    r.plugins = (plugin("cmd", discover={"find": {"command": ["sh", "-c", "ls *.env"]}}),)
    assert (await r.render(request("gb", {}), repo)).tool == "Plugin"


@pytest.mark.parametrize(
    ("make", "block", "message"),
    [
        (lambda: plugin("gen"), {"name": "missing"}, r"plugin 'missing' is not configured"),
        (
            lambda: plugin("gen", discover={"fileName": "*.nothing"}),
            {"name": "gen"},
            r"plugin 'gen': its discover rule does not match 'gb'",
        ),
        (
            lambda: plugin("gen", init="echo broken >&2; exit 3"),
            {"name": "gen"},
            r"plugin gen step init exited 3: broken",
        ),
        (
            lambda: plugin("gen", generate="echo 'kind: [' "),
            {"name": "gen"},
            r"gb \(plugin gen\)",
        ),
        (
            lambda: plugin("gen", generate="sleep 30"),
            {"name": "gen"},
            r"plugin gen step generate timed out after 1s",
        ),
        (
            lambda: plugin("gen", generate="head -c 100000 /dev/zero | tr '\\0' a"),
            {"name": "gen"},
            r"plugin gen step generate: output exceeds the size limit of 50000 bytes",
        ),
    ],
)
async def test_plugin_failures_are_render_errors_naming_the_plugin_step(
    repo: Path, make: Any, block: dict[str, Any], message: str
) -> None:
    """Unknown plugin, failed discovery, a failing init, unparsable output, a hang and a flood
    each stop the render with an error naming the plugin and the step."""
    r = Renderer(timeout=1, max_bytes=50_000)
    r.plugins = (make(),)
    with pytest.raises(RenderError, match=message):
        await r.render(request("gb", block), repo)


async def test_file_modes_are_stripped_unless_the_plugin_asks(repo: Path) -> None:
    """Executable files reach a plugin without their x bit unless preserveFileMode is set."""
    script = repo / "gb" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    probe = "printf 'kind: ConfigMap\\napiVersion: v1\\nmetadata: {name: m}\\n"
    probe += 'data: {x: "%s"}\\n\' '
    probe += '"$(test -x run.sh && echo exec || echo plain)"'
    r = Renderer(timeout=30)
    r.plugins = (plugin("a", generate=probe), plugin("b", generate=probe, preserveFileMode=True))
    assert data(await r.render(request("gb", {"name": "a"}), repo))["x"] == "plain"
    assert data(await r.render(request("gb", {"name": "b"}), repo))["x"] == "exec"
    assert os.access(script, os.X_OK), "the checkout's own modes are untouched"


@pytest.mark.cluster
def test_a_plugin_app_syncs_and_a_broken_plugin_applies_nothing(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """End to end: an Application with `plugin.name` syncs what the plugin printed; when a new
    commit makes generate fail, the app reports a ComparisonError naming the plugin and the
    cluster keeps the last synced objects."""
    git_repo.write({"gb/app.env": "GREETING=one\n"})
    app = application(
        "plugged",
        git_repo.url,
        "gb",
        namespace,
        source_extra={"plugin": {"name": "gen-v1", "env": [{"name": "GREETING", "value": "v1"}]}},
    )
    gen = 'test -f fail && { echo "values are broken" >&2; exit 1; }; ' + _GENERATE.replace(
        "$ARGOCD_APP_NAME-out", "plugged-out"
    )
    cfg = write_config(tmp_path, cluster, [app], reconcileInterval="2s")
    (tmp_path / "apps" / "plugin.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "gen-plugin"},
                "data": {
                    "plugin.yaml": yaml.safe_dump(
                        {
                            "apiVersion": "argoproj.io/v1alpha1",
                            "kind": "ConfigManagementPlugin",
                            "metadata": {"name": "gen"},
                            "spec": {
                                "version": "v1",
                                "generate": {"command": ["sh", "-c", gen]},
                                "discover": {"fileName": "*.env"},
                            },
                        }
                    )
                },
            }
        )
    )
    with running(cfg) as d:
        wait_for(lambda: d.synced("plugged"), timeout=60, what="the plugin app synced")
        cm = get(cluster, namespace, "configmap/plugged-out") or {}
        assert cm["data"]["env"] == "v1" and cm["data"]["ns"] == namespace
        git_repo.write({"gb/fail": "1"})

        def conditions() -> str:
            return str(d.status("plugged").get("conditions") or "")

        wait_for(
            lambda: "plugin gen-v1 step generate exited 1: values are broken" in conditions(),
            timeout=30,
            what="the failing plugin reported",
        )
        assert get(cluster, namespace, "configmap/plugged-out") is not None
