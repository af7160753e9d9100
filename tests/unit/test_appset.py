"""Unit tests for ApplicationSet generators and templating (daemon.appset).

These are tests of pure logic: git is an in-memory fake `GitReader` and clusters are plain
`ClusterConfig`s, so no repository, cluster or network is involved.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from daemon.appset import (
    APPSET_ANNOTATION,
    GenerationError,
    TemplateError,
    generate,
    preserve_resources_on_deletion,
    render_template,
)
from daemon.settings import ClusterConfig

# Copied from the seed (/work/shared/seed), "Blue-Green Deployment with Argo CD".
SEED_BLUE_GREEN = """
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata:
  name: blue-green-app
  namespace: argocd
spec:
  generators:
    - list:
        elements:
          - environment: blue
            color: "blue"
            weight: 100
          - environment: green
            color: "green"
            weight: 0
  template:
    metadata:
      name: webapp-{{environment}}
    spec:
      project: default
      source:
        repoURL: https://github.com/your-org/webapp.git
        targetRevision: main
        path: manifests
        helm:
          values: |
            replicaCount: 3
            environment: {{environment}}
            color: {{color}}
      destination:
        server: https://kubernetes.default.svc
        namespace: webapp-{{environment}}
      syncPolicy:
        automated:
          prune: true
          selfHeal: true
        syncOptions:
          - CreateNamespace=true
"""

# Copied from the seed (/work/shared/seed), "Multi-Cluster Architecture".
SEED_MULTI_CLUSTER = """
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata:
  name: multi-cluster-apps
  namespace: argocd
spec:
  generators:
    - clusters:
        selector:
          matchLabels:
            environment: production
  template:
    metadata:
      name: '{{name}}-webapp'
      labels:
        app: webapp
    spec:
      project: production
      source:
        repoURL: https://github.com/your-org/webapp.git
        targetRevision: main
        path: manifests
        helm:
          values: |
            environment: {{metadata.labels.environment}}
            cluster: {{name}}
            region: {{metadata.labels.region}}
      destination:
        server: '{{server}}'
        namespace: webapp
      syncPolicy:
        automated:
          prune: true
          selfHeal: true
        syncOptions:
          - CreateNamespace=true
"""

REPO = "https://git.example.com/platform.git"

CLUSTERS = (
    ClusterConfig(
        name="prod-east",
        server="https://east.example.com",
        labels=(("environment", "production"), ("region", "us-east-1")),
    ),
    ClusterConfig(
        name="prod-west",
        server="https://west.example.com",
        labels=(("environment", "production"), ("region", "eu-west-1"), ("tier", "gold")),
        annotations=(("owner", "team-west"),),
    ),
    ClusterConfig(
        name="Staging_1",
        server="https://staging.example.com",
        labels=(("environment", "staging"), ("region", "us-east-1")),
    ),
)


class FakeGit:
    """An in-memory GitReader: one file tree per (repo, revision), counting reads."""

    def __init__(self, trees: dict[tuple[str, str], dict[str, str]]) -> None:
        self.trees = trees
        self.reads = 0

    def _tree(self, repo_url: str, revision: str) -> dict[str, str]:
        self.reads += 1
        return self.trees[(repo_url, revision)]

    async def list_dirs(self, repo_url: str, revision: str) -> list[str]:
        """Every parent directory of every file."""
        dirs: set[str] = set()
        for path in self._tree(repo_url, revision):
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(dirs)

    async def read_files(self, repo_url: str, revision: str) -> dict[str, bytes]:
        """Every file's bytes."""
        return {p: c.encode() for p, c in self._tree(repo_url, revision).items()}


NO_GIT = FakeGit({})


def appset(
    generators: list[dict[str, Any]],
    *,
    name: str = "{{name}}",
    project: str = "default",
    go: bool = False,
    extra_spec: dict[str, Any] | None = None,
    options: list[str] | None = None,
) -> dict[str, Any]:
    """A minimal ApplicationSet with one templated name and destination namespace."""
    spec: dict[str, Any] = {
        "generators": generators,
        "template": {
            "metadata": {"name": name},
            "spec": {
                "project": project,
                "source": {"repoURL": REPO, "path": "apps", "targetRevision": "main"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "x"},
                **(extra_spec or {}),
            },
        },
    }
    if go:
        spec["goTemplate"] = True
        spec["goTemplateOptions"] = options if options is not None else ["missingkey=error"]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "test-set", "namespace": "argocd"},
        "spec": spec,
    }


async def run(doc: dict[str, Any], git: FakeGit = NO_GIT) -> list[dict[str, Any]]:
    """Generate with the three test clusters."""
    return await generate(doc, clusters=CLUSTERS, git=git, where="apps.yaml: document 1")


def names(apps: list[dict[str, Any]]) -> list[str]:
    """Generated Application names in order."""
    return [a["metadata"]["name"] for a in apps]


# --- the seed ---------------------------------------------------------------------------------


async def test_seed_blue_green_list() -> None:
    """The seed's list ApplicationSet yields webapp-blue and webapp-green with their values."""
    apps = await run(yaml.safe_load(SEED_BLUE_GREEN))
    assert names(apps) == ["webapp-blue", "webapp-green"]
    blue, green = apps
    assert blue["apiVersion"] == "argoproj.io/v1alpha1"
    assert blue["kind"] == "Application"
    assert blue["metadata"]["namespace"] == "argocd"
    assert blue["metadata"]["annotations"] == {APPSET_ANNOTATION: "blue-green-app"}
    assert blue["spec"]["destination"]["namespace"] == "webapp-blue"
    assert green["spec"]["destination"]["namespace"] == "webapp-green"
    assert blue["spec"]["source"]["helm"]["values"] == (
        "replicaCount: 3\nenvironment: blue\ncolor: blue\n"
    )
    assert "color: green\n" in green["spec"]["source"]["helm"]["values"]
    assert blue["spec"]["syncPolicy"]["syncOptions"] == ["CreateNamespace=true"]


async def test_seed_multi_cluster_clusters_generator() -> None:
    """The seed's clusters ApplicationSet yields one app per production cluster from labels."""
    apps = await run(yaml.safe_load(SEED_MULTI_CLUSTER))
    assert names(apps) == ["prod-east-webapp", "prod-west-webapp"]
    east, west = apps
    assert east["spec"]["destination"] == {
        "server": "https://east.example.com",
        "namespace": "webapp",
    }
    assert west["spec"]["destination"]["server"] == "https://west.example.com"
    assert west["spec"]["project"] == "production"
    assert west["metadata"]["labels"] == {"app": "webapp"}
    assert west["spec"]["source"]["helm"]["values"] == (
        "environment: production\ncluster: prod-west\nregion: eu-west-1\n"
    )


# --- clusters ---------------------------------------------------------------------------------


async def test_cluster_match_expressions() -> None:
    """matchExpressions In / NotIn / Exists / DoesNotExist filter clusters by label."""

    def select(*exprs: dict[str, Any]) -> dict[str, Any]:
        return appset([{"clusters": {"selector": {"matchExpressions": list(exprs)}}}])

    in_op = {"key": "region", "operator": "In", "values": ["us-east-1"]}
    assert names(await run(select(in_op))) == ["prod-east", "Staging_1"]
    not_in = {"key": "environment", "operator": "NotIn", "values": ["staging"]}
    assert names(await run(select(not_in))) == ["prod-east", "prod-west"]
    not_gold = {"key": "tier", "operator": "NotIn", "values": ["gold"]}
    assert names(await run(select(not_gold))) == ["prod-east", "Staging_1"]
    exists = {"key": "tier", "operator": "Exists"}
    assert names(await run(select(exists))) == ["prod-west"]
    absent = {"key": "tier", "operator": "DoesNotExist"}
    assert names(await run(select(absent, in_op, not_in))) == ["prod-east"]


async def test_cluster_selector_rejects_unknown_operator() -> None:
    """A matchExpressions operator outside the four Kubernetes ones is a named error."""
    doc = appset(
        [{"clusters": {"selector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}}]
    )
    with pytest.raises(GenerationError, match=r"matchExpressions\[0\]\.operator: 'Gt'"):
        await run(doc)


async def test_cluster_params_and_templated_values() -> None:
    """Cluster params include nameNormalized and annotations; values are templated per cluster."""
    doc = appset(
        [
            {
                "clusters": {
                    "selector": {"matchLabels": {"tier": "gold"}},
                    "values": {"ns": "team-{{metadata.labels.region}}", "plain": "fixed"},
                }
            }
        ],
        name="{{nameNormalized}}-{{metadata.annotations.owner}}",
        extra_spec={"info": [{"name": "ns", "value": "{{values.ns}}/{{values.plain}}"}]},
    )
    (app,) = await run(doc)
    assert app["metadata"]["name"] == "prod-west-team-west"
    assert app["spec"]["info"] == [{"name": "ns", "value": "team-eu-west-1/fixed"}]


async def test_clusters_without_configured_clusters_yield_in_cluster() -> None:
    """With no clusters configured and no selector, the implicit in-cluster destination is used."""
    doc = appset([{"clusters": {}}], name="{{name}}-app")
    apps = await generate(doc, clusters=(), git=NO_GIT, where="w")
    assert names(apps) == ["in-cluster-app"]


# --- git --------------------------------------------------------------------------------------


GIT_TREE = {
    "apps/frontend/kustomization.yaml": "",
    "apps/My_Backend/kustomization.yaml": "",
    "apps/experimental/kustomization.yaml": "",
    "apps/.hidden/kustomization.yaml": "",
    "apps/frontend/overlays/dev/kustomization.yaml": "",
    "README.md": "",
    "config/dev/config.json": '{"cluster": {"name": "dev", "address": "https://dev.example.com"}}',
    "config/prod/config.yaml": "cluster:\n  name: prod\n  address: https://prod.example.com\n",
    "config/multi/config.yaml": "- cluster: {name: m1}\n- cluster: {name: m2}\n",
    "config/ignored/other.txt": "not: matched\n",
}


def git_gen(**kwargs: Any) -> dict[str, Any]:
    """A git generator entry on the test repository."""
    return {"git": {"repoURL": REPO, "revision": "main", **kwargs}}


async def test_git_directories_with_exclude() -> None:
    """Directory globs stop at '/', skip dot-directories, and `exclude: true` subtracts."""
    git = FakeGit({(REPO, "main"): GIT_TREE})
    doc = appset(
        [git_gen(directories=[{"path": "apps/*"}, {"path": "apps/exp*", "exclude": True}])],
        name="{{path.basenameNormalized}}",
        extra_spec={"info": [{"name": "{{path[0]}}", "value": "{{path}}|{{path.basename}}"}]},
    )
    apps = await run(doc, git)
    assert names(apps) == ["my-backend", "frontend"]
    assert apps[0]["spec"]["info"] == [{"name": "apps", "value": "apps/My_Backend|My_Backend"}]


async def test_git_files_flatten_json_and_yaml() -> None:
    """Files generator: each JSON/YAML object (or list item) becomes flattened params plus path."""
    git = FakeGit({(REPO, "main"): GIT_TREE})
    doc = appset(
        [git_gen(files=[{"path": "config/*/config.*"}])],
        name="{{cluster.name}}-{{path.basename}}",
        extra_spec={
            "info": [{"name": "{{path.filename}}", "value": "{{path}} {{path.filenameNormalized}}"}]
        },
    )
    apps = await run(doc, git)
    assert names(apps) == ["dev-dev", "m1-multi", "m2-multi", "prod-prod"]
    assert apps[0]["spec"]["info"] == [{"name": "config.json", "value": "config/dev config.json"}]
    assert apps[3]["spec"]["info"][0]["name"] == "config.yaml"


async def test_git_files_glob_is_greedy_and_exclude_applies() -> None:
    """A file glob's `*` crosses directories (Argo CD's default) and excluded files drop out."""
    git = FakeGit({(REPO, "main"): GIT_TREE})
    doc = appset(
        [git_gen(files=[{"path": "config/*.yaml"}, {"path": "config/multi/*", "exclude": True}])],
        name="{{cluster.name}}",
    )
    assert names(await run(doc, git)) == ["prod"]


async def test_git_invalid_file_is_named() -> None:
    """A matched file that is not a mapping or list of mappings is an error naming the file."""
    git = FakeGit({(REPO, "main"): {"c/bad.yaml": "just a string\n"}})
    doc = appset([git_gen(files=[{"path": "c/*.yaml"}])])
    with pytest.raises(GenerationError, match=r"file c/bad\.yaml: expected a mapping"):
        await run(doc, git)


# --- matrix and merge -------------------------------------------------------------------------


async def test_matrix_git_directories_by_clusters() -> None:
    """A matrix is the Cartesian product of its two children, with both children's params."""
    git = FakeGit({(REPO, "main"): GIT_TREE})
    doc = appset(
        [
            {
                "matrix": {
                    "generators": [
                        git_gen(directories=[{"path": "apps/f*"}, {"path": "apps/M*"}]),
                        {"clusters": {"selector": {"matchLabels": {"environment": "production"}}}},
                    ]
                }
            }
        ],
        name="{{path.basenameNormalized}}-{{name}}",
        extra_spec={"destination": {"server": "{{server}}", "namespace": "{{path.basename}}"}},
    )
    apps = await run(doc, git)
    assert names(apps) == [
        "my-backend-prod-east",
        "my-backend-prod-west",
        "frontend-prod-east",
        "frontend-prod-west",
    ]
    assert apps[1]["spec"]["destination"] == {
        "server": "https://west.example.com",
        "namespace": "My_Backend",
    }
    assert git.reads == 1


async def test_matrix_second_child_uses_first_child_params() -> None:
    """A matrix's 2nd child templates its git path with the 1st's params; git is read once."""
    git = FakeGit({(REPO, "main"): GIT_TREE})
    doc = appset(
        [
            {
                "matrix": {
                    "generators": [
                        {"list": {"elements": [{"root": "apps/frontend"}, {"root": "apps/x"}]}},
                        git_gen(directories=[{"path": "{{root}}/overlays/*"}]),
                    ]
                }
            }
        ],
        name="{{path.basename}}-{{path[1]}}",
    )
    assert names(await run(doc, git)) == ["dev-frontend"]
    assert git.reads == 1


async def test_matrix_conflicting_flat_params_are_refused() -> None:
    """In fasttemplate mode two matrix children may not set one param to different values."""
    doc = appset(
        [
            {
                "matrix": {
                    "generators": [
                        {"list": {"elements": [{"name": "a"}]}},
                        {"list": {"elements": [{"name": "b"}]}},
                    ]
                }
            }
        ]
    )
    with pytest.raises(GenerationError, match="both generators set parameter 'name'"):
        await run(doc)


async def test_matrix_needs_exactly_two_generators() -> None:
    """A matrix with three children is refused, naming the generator."""
    lists = [{"list": {"elements": [{"a": str(i)}]}} for i in range(3)]
    with pytest.raises(GenerationError, match=r"matrix\.generators: .*exactly two"):
        await run(appset([{"matrix": {"generators": lists}}]))


async def test_merge_overrides_by_merge_key() -> None:
    """Merge: later generators override params of base sets with an equal merge key."""
    doc = appset(
        [
            {
                "merge": {
                    "mergeKeys": ["server"],
                    "generators": [
                        {"clusters": {"values": {"replicas": "1"}}},
                        {
                            "list": {
                                "elements": [
                                    {"server": "https://west.example.com", "values.replicas": "5"},
                                    {"server": "https://nowhere.example", "values.replicas": "9"},
                                ]
                            }
                        },
                    ],
                }
            }
        ],
        name="{{name}}-{{values.replicas}}",
    )
    assert names(await run(doc)) == ["prod-east-1", "prod-west-5", "Staging_1-1"]


# --- generator-level template and ownership ---------------------------------------------------


async def test_generator_template_overrides_spec_template() -> None:
    """A generator's `template` is merged over spec.template; empty fields fall back."""
    doc = appset(
        [
            {
                "list": {
                    "elements": [{"env": "qa"}],
                    "template": {
                        "metadata": {"name": "qa-{{env}}", "labels": {"team": "{{env}}"}},
                        "spec": {"destination": {"namespace": "ns-{{env}}", "server": ""}},
                    },
                }
            },
            {"list": {"elements": [{"name": "plain"}]}},
        ]
    )
    qa, plain = await run(doc)
    assert qa["metadata"]["name"] == "qa-qa"
    assert qa["metadata"]["labels"] == {"team": "qa"}
    assert qa["spec"]["destination"] == {
        "server": "https://kubernetes.default.svc",
        "namespace": "ns-qa",
    }
    assert plain["metadata"]["name"] == "plain"
    assert plain["spec"]["destination"]["namespace"] == "x"


def test_preserve_resources_on_deletion() -> None:
    """preserveResourcesOnDeletion is read from spec.syncPolicy and defaults to false."""
    doc = appset([])
    assert preserve_resources_on_deletion(doc) is False
    doc["spec"]["syncPolicy"] = {"preserveResourcesOnDeletion": True}
    assert preserve_resources_on_deletion(doc) is True


# --- Go templates -----------------------------------------------------------------------------


async def test_go_template_functions_on_cluster_params() -> None:
    """goTemplate renders index / default / lower / printf / if-else / eq over nested params."""
    name = (
        '{{ printf "%s-%s" .nameNormalized (index .metadata.labels "region") | lower }}'
        '{{- if eq .metadata.labels.environment "staging" }}-stg{{ else }}-prd{{ end }}'
    )
    doc = appset(
        [{"clusters": {"values": {"tier": '{{ index .metadata.labels "tier" | default "std" }}'}}}],
        name=name,
        go=True,
        extra_spec={
            "info": [
                {
                    "name": "{{ .values.tier | upper }}",
                    "value": '{{ if index .metadata.annotations "owner" }}owned{{ end }}',
                }
            ]
        },
        options=[],
    )
    apps = await run(doc)
    assert names(apps) == [
        "prod-east-us-east-1-prd",
        "prod-west-eu-west-1-prd",
        "staging-1-us-east-1-stg",
    ]
    assert [a["spec"]["info"][0]["name"] for a in apps] == ["STD", "GOLD", "STD"]
    assert apps[1]["spec"]["info"][0]["value"] == "owned"


async def test_go_template_git_path_params() -> None:
    """goTemplate git params are nested: .path.path, .path.basenameNormalized, .path.segments."""
    git = FakeGit({(REPO, "main"): GIT_TREE})
    doc = appset(
        [git_gen(directories=[{"path": "apps/My_*"}])],
        name="{{.path.basenameNormalized}}",
        go=True,
        extra_spec={"info": [{"name": "{{ index .path.segments 0 }}", "value": "{{.path.path}}"}]},
    )
    (app,) = await run(doc, git)
    assert app["metadata"]["name"] == "my-backend"
    assert app["spec"]["info"] == [{"name": "apps", "value": "apps/My_Backend"}]


def test_go_template_trim_markers_quote_and_replace() -> None:
    """`{{-`/`-}}` trim whitespace; quote, replace, normalize and toJson format values."""
    params = {"app": {"name": "My_App"}, "labels": {"b": "2", "a": "1"}}
    template = {
        "a": "x  {{- .app.name | normalize -}}  y",
        "b": '{{ .app.name | replace "_" "." | quote }}',
        "c": "{{ toJson .labels }}",
    }
    out = render_template(template, params, go_template=True, options=[], where="w")
    assert out == {"a": "xmy-appy", "b": '"My.App"', "c": '{"a":"1","b":"2"}'}


def test_go_template_missing_key_is_an_error() -> None:
    """A Go-template reference to a missing key fails, naming the field and the key."""
    with pytest.raises(TemplateError, match=r"w: spec\.x: map has no entry for key 'nope'"):
        render_template(
            {"spec": {"x": "{{ .nope }}"}},
            {"a": 1},
            go_template=True,
            options=["missingkey=error"],
            where="w",
        )


def test_go_template_index_of_missing_key_cannot_be_printed() -> None:
    """Under missingkey=error, printing a nil (e.g. index of an absent label) is an error."""
    with pytest.raises(TemplateError, match=r"w: x: the action produced no value"):
        render_template(
            {"x": '{{ index .labels "env" }}'},
            {"labels": {}},
            go_template=True,
            options=[],
            where="w",
        )


def test_go_template_missingkey_default_prints_no_value() -> None:
    """goTemplateOptions missingkey=default restores Go's `<no value>` output."""
    out = render_template(
        {"x": "{{ .nope }}"}, {}, go_template=True, options=["missingkey=default"], where="w"
    )
    assert out == {"x": "<no value>"}


def test_go_template_unsupported_construct_is_named() -> None:
    """An unsupported Go-template action such as define is refused by name."""
    with pytest.raises(TemplateError, match=r"\{\{define\}\} is not supported"):
        render_template(
            {"x": '{{ define "x" }}{{ end }}'},
            {"items": []},
            go_template=True,
            options=[],
            where="w",
        )


def test_go_template_range_and_with() -> None:
    """range over lists (index and element variables) and maps (in key order), with `.` the
    element and $ the root; else when empty; with narrows `.` when the value is set."""
    data = {"items": ["a", "b"], "env": {"z": 1, "y": 2}, "name": "app", "none": []}
    out = render_template(
        {
            "list": "{{range $i, $v := .items}}{{$i}}={{$v}}/{{.}}-{{$.name}};{{end}}",
            "map": "{{range $k, $v := .env}}{{$k}}:{{$v}} {{end}}",
            "empty": "{{range .none}}x{{else}}none{{end}}",
            "with": "{{with .env}}{{.y}}{{end}}|{{with .none}}x{{else}}unset{{end}}",
        },
        data,
        go_template=True,
        options=[],
        where="w",
    )
    assert out == {
        "list": "0=a/a-app;1=b/b-app;",
        "map": "y:2 z:1 ",
        "empty": "none",
        "with": "2|unset",
    }


# --- errors -----------------------------------------------------------------------------------


async def test_fasttemplate_missing_parameter_is_an_error() -> None:
    """A fasttemplate tag naming no generator param fails, naming the param and ApplicationSet."""
    doc = appset([{"list": {"elements": [{"name": "a"}]}}], name="{{ nmae }}-web")
    with pytest.raises(TemplateError) as info:
        await run(doc)
    message = str(info.value)
    assert "ApplicationSet/test-set" in message
    assert "metadata.name: parameter 'nmae' is not defined" in message


async def test_go_template_missing_parameter_names_appset() -> None:
    """A goTemplate app referencing a missing param fails, naming the ApplicationSet."""
    doc = appset([{"list": {"elements": [{"name": "a"}]}}], name="{{ .nmae }}", go=True)
    with pytest.raises(TemplateError, match=r"ApplicationSet/test-set.*'nmae'"):
        await run(doc)


async def test_duplicate_generated_names_are_refused() -> None:
    """Two parameter sets rendering the same Application name are an error naming it."""
    doc = appset(
        [{"list": {"elements": [{"name": "a", "x": "1"}, {"name": "a", "x": "2"}]}}],
    )
    with pytest.raises(GenerationError, match=r"ApplicationSet/test-set.*duplicate names: a"):
        await run(doc)


async def test_templated_project_is_refused() -> None:
    """spec.template.spec.project containing `{{` is refused so tenants cannot pick a project."""
    doc = appset([{"list": {"elements": [{"name": "a", "proj": "admin"}]}}], project="{{proj}}")
    with pytest.raises(GenerationError, match=r"spec\.template\.spec\.project: .* templated"):
        await run(doc)


async def test_templated_project_in_generator_template_is_refused() -> None:
    """A generator-level template may not template the project either."""
    override = {"spec": {"project": "{{proj}}"}}
    doc = appset([{"list": {"elements": [{"name": "a", "proj": "x"}], "template": override}}])
    with pytest.raises(GenerationError, match=r"list\.template\.spec\.project"):
        await run(doc)


async def test_unsupported_generator_is_refused() -> None:
    """Generators gitopsd does not implement are refused by name, not silently skipped."""
    doc = appset([{"pullRequest": {"github": {"owner": "o", "repo": "r"}}}])
    with pytest.raises(GenerationError, match="pullRequest generator is not supported"):
        await run(doc)


def test_go_template_field_after_a_group_only_when_adjacent() -> None:
    """`(index .s 0).x` reads a field of the group's value; `eq (index .a 0) .b` compares
    two operands (the space makes `.b` its own argument)."""
    out = render_template(
        {"x": "{{ if eq (index .a 0) .b }}yes{{ end }} {{ (index .s 0).x }}"},
        {"a": ["q"], "b": "q", "s": [{"x": 1}]},
        go_template=True,
        options=[],
        where="w",
    )
    assert out == {"x": "yes 1"}
