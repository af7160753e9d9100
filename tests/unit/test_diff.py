"""Unit tests for daemon.plan.diff: normalisation, ignore rules, comparison and secret masking."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from daemon.model import Body, ResourceKey
from daemon.plan.diff import (
    LAST_APPLIED,
    MAX_CHANGES,
    Change,
    IgnoreRule,
    diff,
    normalize,
    parse_ignore_differences,
    redact_secret,
    redact_secrets,
    rule_matches,
    unified_diff,
)

DEPLOY_KEY = ResourceKey("apps", "Deployment", "shop", "web")
SECRET_KEY = ResourceKey("", "Secret", "shop", "creds")


def deployment(*, replicas: int = 2, image: str = "nginx:1.27") -> Body:
    """A desired Deployment as a dry run would echo it back, minus server-populated fields."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": image, "ports": [{"containerPort": 80}]},
                        {"name": "log", "image": "busybox:1.36"},
                    ]
                },
            },
        },
    }


def live_of(desired: Body, **changes: Any) -> Body:
    """The same object as the API server stores it: server metadata and status added."""
    live = copy.deepcopy(desired)
    live["metadata"].update(
        {
            "uid": "0b6c3c52-61d4-4d39-9c1e-2b7f0a6c4d11",
            "resourceVersion": "48213",
            "generation": 3,
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "selfLink": "/apis/apps/v1/namespaces/shop/deployments/web",
            "annotations": {LAST_APPLIED: json.dumps(desired)},
            "managedFields": [],
        }
    )
    live["status"] = {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3}
    live.update(changes)
    return live


# A realistic managedFields list: argocd-controller applied the Deployment, then the HPA
# controller (manager "kube-controller-manager" via the scale subresource) took over replicas.
HPA_MANAGED_FIELDS: list[Body] = [
    {
        "manager": "argocd-controller",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": "2024-05-01T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:containers": {
                            'k:{"name":"web"}': {
                                ".": {},
                                "f:image": {},
                                "f:name": {},
                                "f:ports": {
                                    'k:{"containerPort":80,"protocol":"TCP"}': {
                                        ".": {},
                                        "f:containerPort": {},
                                    }
                                },
                            },
                            'k:{"name":"log"}': {".": {}, "f:image": {}, "f:name": {}},
                        }
                    },
                },
            },
        },
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2024-05-01T10:05:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
        "subresource": "scale",
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2024-05-01T10:05:01Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:replicas": {}, "f:readyReplicas": {}}},
        "subresource": "status",
    },
]


def rules(*items: dict[str, Any]) -> list[IgnoreRule]:
    """Parse ignoreDifferences entries the way the app loader does."""
    return parse_ignore_differences(list(items), where="spec.ignoreDifferences")


# --------------------------------------------------------------------------- defaults


def test_status_and_server_metadata_are_ignored() -> None:
    """Status, uid, resourceVersion, timestamps, managedFields and last-applied never count."""
    desired = deployment()
    result = diff(desired, live_of(desired), rules=[], key=DEPLOY_KEY)
    assert not result.modified
    assert result.changes == ()
    assert "status" not in result.normalized_live
    assert set(result.normalized_live["metadata"]) == {"name", "namespace", "labels"}


def test_replica_change_is_reported_with_its_path() -> None:
    """A changed replica count makes the object modified and names `.spec.replicas`."""
    result = diff(deployment(replicas=3), live_of(deployment(replicas=2)), rules=[], key=DEPLOY_KEY)
    assert result.modified
    assert result.changes == (Change(".spec.replicas", 2, 3),)


def test_list_item_change_path_uses_index_and_quoted_keys() -> None:
    """Paths index into lists and quote keys that are not identifiers, jq-style."""
    desired = deployment(image="nginx:1.28")
    desired["metadata"]["annotations"] = {"example.com/owner": "team-a"}
    live = live_of(deployment())
    result = diff(desired, live, rules=[], key=DEPLOY_KEY)
    assert [c.path for c in result.changes] == [
        '.metadata.annotations["example.com/owner"]',
        ".spec.template.spec.containers[0].image",
    ]
    assert result.changes[0].live is None


def test_missing_and_empty_maps_and_lists_are_equal() -> None:
    """An empty map, empty list or null on one side equals the field being absent."""
    desired = deployment()
    desired["metadata"]["annotations"] = {}
    desired["spec"]["template"]["spec"]["volumes"] = []
    desired["spec"]["template"]["spec"]["nodeSelector"] = None
    live = live_of(deployment())
    live["spec"]["strategy"] = {}
    assert not diff(desired, live, rules=[], key=DEPLOY_KEY).modified


def test_true_and_one_are_different_values() -> None:
    """JSON equality, not Python's: `true` differs from `1`, while `1` equals `1.0`."""
    desired, live = deployment(), live_of(deployment())
    desired["spec"]["paused"], live["spec"]["paused"] = True, 1
    assert diff(desired, live, rules=[], key=DEPLOY_KEY).modified
    desired["spec"]["paused"], live["spec"]["paused"] = 1.0, 1
    assert not diff(desired, live, rules=[], key=DEPLOY_KEY).modified


def test_normalize_does_not_mutate_its_input() -> None:
    """normalize works on a deep copy, so the caller's live object keeps its status."""
    live = live_of(deployment())
    before = copy.deepcopy(live)
    normalize(live, rules=rules({"kind": "*", "jsonPointers": ["/spec"]}), key=DEPLOY_KEY)
    assert live == before


def test_changes_are_capped() -> None:
    """At most MAX_CHANGES changes are listed; the rest are counted in omitted_changes."""
    desired, live = deployment(), live_of(deployment())
    desired["metadata"]["labels"] = {f"l{i:03}": "new" for i in range(MAX_CHANGES + 7)}
    result = diff(desired, live, rules=[], key=DEPLOY_KEY)
    assert len(result.changes) == MAX_CHANGES
    assert result.omitted_changes == 8  # 57 new labels plus the removed `app` label, minus 50


# --------------------------------------------------------------------------- rule matching

REPLICAS = {"jsonPointers": ["/spec/replicas"]}


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (IgnoreRule(kind="Deployment", group="apps"), True),
        (IgnoreRule(kind="Deploy*", group="apps"), True),
        (IgnoreRule(kind="*", group="*"), True),
        (IgnoreRule(kind="Deployment"), False),  # empty group means the core group only
        (IgnoreRule(kind="StatefulSet", group="apps"), False),
        (IgnoreRule(kind="Deployment", group="apps", name="web", namespace="shop"), True),
        (IgnoreRule(kind="Deployment", group="apps", name="api"), False),
        (IgnoreRule(kind="Deployment", group="apps", namespace="shop-"), False),
    ],
)
def test_rule_matches_globs_group_and_kind_and_exact_name_namespace(
    rule: IgnoreRule, matches: bool
) -> None:
    """Group and kind are globs, name and namespace match exactly or are wildcards when empty."""
    assert rule_matches(rule, DEPLOY_KEY) is matches


def test_rule_for_another_object_is_not_applied() -> None:
    """A rule naming another namespace leaves this object's differences visible."""
    result = diff(
        deployment(replicas=3),
        live_of(deployment()),
        rules=rules({"group": "apps", "kind": "Deployment", "namespace": "other"} | REPLICAS),
        key=DEPLOY_KEY,
    )
    assert result.modified


# --------------------------------------------------------------------------- JSON pointers


def test_json_pointer_removes_field_from_both_sides() -> None:
    """A jsonPointers rule hides a replica difference and removes the field from both sides."""
    result = diff(
        deployment(replicas=3),
        live_of(deployment()),
        rules=rules({"group": "apps", "kind": "Deployment"} | REPLICAS),
        key=DEPLOY_KEY,
    )
    assert not result.modified
    assert "replicas" not in result.normalized_live["spec"]
    assert "replicas" not in result.normalized_desired["spec"]


def test_json_pointer_escapes_and_array_indices() -> None:
    """`~1` stands for `/` and `~0` for `~`; numeric tokens index lists."""
    desired = deployment(image="nginx:1.28")
    desired["metadata"]["annotations"] = {"example.com/rev": "2", "a~b": "x"}
    live = live_of(deployment())
    live["metadata"]["annotations"].update({"example.com/rev": "1"})
    pointers = [
        "/metadata/annotations/example.com~1rev",
        "/metadata/annotations/a~0b",
        "/spec/template/spec/containers/0/image",
    ]
    result = diff(
        desired,
        live,
        rules=rules({"group": "apps", "kind": "Deployment", "jsonPointers": pointers}),
        key=DEPLOY_KEY,
    )
    assert not result.modified, result.changes


def test_json_pointer_to_nonexistent_path_is_ignored() -> None:
    """Pointers through missing keys, bad indices or scalars are no-ops, not errors."""
    pointers = ["/spec/missing/deep", "/spec/template/spec/containers/9", "/spec/replicas/x"]
    pointers += ["/spec/template/spec/containers/01"]
    obj = deployment()
    out = normalize(
        obj,
        rules=rules({"group": "apps", "kind": "Deployment", "jsonPointers": pointers}),
        key=DEPLOY_KEY,
    )
    assert out == obj


# --------------------------------------------------------------------------- jq expressions


def jq(*expressions: str) -> list[IgnoreRule]:
    """Rules applying the given jq path expressions to every kind."""
    return rules({"group": "*", "kind": "*", "jqPathExpressions": list(expressions)})


def test_jq_field_and_quoted_key() -> None:
    """`.spec.replicas` and `.metadata.annotations["a/b"]` delete exactly those fields."""
    obj = deployment()
    obj["metadata"]["annotations"] = {"example.com/rev": "1", "keep": "me"}
    out = normalize(
        obj,
        rules=jq(".spec.replicas", '.metadata.annotations["example.com/rev"]'),
        key=DEPLOY_KEY,
    )
    assert "replicas" not in out["spec"]
    assert out["metadata"]["annotations"] == {"keep": "me"}


def test_jq_select_targets_one_list_item() -> None:
    """`containers[] | select(.name == "web") | .image` drops only that container's image."""
    out = normalize(
        deployment(),
        rules=jq('.spec.template.spec.containers[] | select(.name == "web") | .image'),
        key=DEPLOY_KEY,
    )
    containers = out["spec"]["template"]["spec"]["containers"]
    assert containers[0] == {"name": "web", "ports": [{"containerPort": 80}]}
    assert containers[1]["image"] == "busybox:1.36"


def test_jq_select_with_and_or_and_inequality() -> None:
    """select() supports `!=`, `and` and `or` with JSON literals on either side."""
    out = normalize(
        deployment(),
        rules=jq(
            '.spec.template.spec.containers[] | select(.name != "web" and .image == "busybox:1.36"'
            ' or .name == "nope")'
        ),
        key=DEPLOY_KEY,
    )
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["web"]


def test_jq_iterating_whole_items_deletes_them_all() -> None:
    """`.containers[]` deletes every item, leaving an empty list (equal to absent)."""
    out = normalize(deployment(), rules=jq(".spec.template.spec.containers[]"), key=DEPLOY_KEY)
    assert out["spec"]["template"]["spec"]["containers"] == []


def test_jq_index_and_negative_index() -> None:
    """`[0]` and `[-1]` address list items from the front and the back."""
    out = normalize(
        deployment(),
        rules=jq(".spec.template.spec.containers[0].image", ".spec.template.spec.containers[-1]"),
        key=DEPLOY_KEY,
    )
    assert out["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "ports": [{"containerPort": 80}]}
    ]


def test_jq_optional_iteration_over_missing_list() -> None:
    """`initContainers[]?` is a no-op without initContainers; without `?` the rule is skipped."""
    obj = deployment()
    assert normalize(obj, rules=jq(".spec.template.spec.initContainers[]?"), key=DEPLOY_KEY) == obj
    # Iterating null is a jq error: Argo CD skips that expression for the object, and so do we,
    # while the other expressions of the rule still apply.
    out = normalize(
        obj,
        rules=jq(".spec.template.spec.initContainers[].image", ".spec.replicas"),
        key=DEPLOY_KEY,
    )
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert "replicas" not in out["spec"]
    # `?` only silences the item that fails: the web container's port still goes, where the
    # same expression without `?` fails on the log container and is skipped entirely.
    ports = ".spec.template.spec.containers[].ports[]{}.containerPort"
    web = normalize(obj, rules=jq(ports.format("?")), key=DEPLOY_KEY)
    assert web["spec"]["template"]["spec"]["containers"][0]["ports"] == [{}]
    assert normalize(obj, rules=jq(ports.format("")), key=DEPLOY_KEY) == obj


def test_jq_hides_a_difference_in_diff() -> None:
    """A jq rule on the sidecar image makes a sidecar-only change Synced, but not a web change."""
    live = live_of(deployment())
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "busybox:1.37"
    rule = jq('.spec.template.spec.containers[] | select(.name == "log") | .image')
    assert not diff(deployment(), live, rules=rule, key=DEPLOY_KEY).modified
    assert diff(deployment(image="nginx:1.28"), live, rules=rule, key=DEPLOY_KEY).modified


@pytest.mark.parametrize(
    "expression",
    [
        ".spec..image",
        ".spec.foo-bar",
        ".",
        ".a) | (.b",
        "def f: f; f",
        ".spec | [range(1e9)]",
        "env.HOME",
        "$ENV.PATH",
        "",
    ],
)
def test_invalid_or_unbounded_jq_expression_is_rejected_by_name(expression: str) -> None:
    """jq syntax errors, the whole object, and constructs that can run unbounded or read the host
    raise ValueError naming the expression and the field."""
    with pytest.raises(ValueError, match=r"jqPathExpressions\[0\]") as info:
        jq(expression)
    assert repr(expression) in str(info.value)


def test_full_jq_alternative_slices_and_nested_select() -> None:
    """Real jq (libjq) handles what the old subset refused: `//`, slices, nested conditions."""
    obj = live_of(deployment())
    obj["spec"]["template"]["spec"]["containers"].append({"name": "c", "image": "c:1"})
    out = normalize(
        obj,
        rules=jq(
            ".spec.replicas // .spec.paused",
            ".spec.template.spec.containers[1:2][] | .image",
            ".spec.template.spec.containers[]"
            ' | select(.name == "web" and (.image | test("^nginx"))) | .image',
        ),
        key=DEPLOY_KEY,
    )
    containers = out["spec"]["template"]["spec"]["containers"]
    assert "replicas" not in out["spec"]
    assert [c.get("image") for c in containers] == [None, None, "c:1"]


def test_jq_field_named_like_a_builtin_is_a_plain_field() -> None:
    """`.env` and `."range"` are fields, not the refused builtins."""
    obj = live_of(deployment())
    obj["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    out = normalize(obj, rules=jq(".spec.template.spec.containers[].env"), key=DEPLOY_KEY)
    assert "env" not in out["spec"]["template"]["spec"]["containers"][0]


def test_jq_runtime_error_skips_only_that_expression() -> None:
    """A path expression jq cannot evaluate on this object (`length` is not a path) is skipped,
    as Argo CD skips a failing normalizer, while the other expressions still apply."""
    obj = live_of(deployment())
    out = normalize(obj, rules=jq(".spec | length", ".spec.replicas"), key=DEPLOY_KEY)
    assert "replicas" not in out["spec"]
    assert out["spec"]["template"] == obj["spec"]["template"]


# --------------------------------------------------------------------------- managed fields


def hpa_live(*, replicas: int) -> Body:
    """The live Deployment after the HPA scaled it, with its realistic managedFields."""
    live = live_of(deployment(replicas=replicas))
    live["metadata"]["managedFields"] = copy.deepcopy(HPA_MANAGED_FIELDS)
    return live


HPA_RULE = {
    "group": "apps",
    "kind": "Deployment",
    "managedFieldsManagers": ["kube-controller-manager"],
}


def test_managed_fields_manager_hides_hpa_replicas() -> None:
    """Fields a trusted manager owns in live (HPA-set spec.replicas) are dropped on both sides."""
    result = diff(
        deployment(replicas=2), hpa_live(replicas=5), rules=rules(HPA_RULE), key=DEPLOY_KEY
    )
    assert not result.modified
    assert "replicas" not in result.normalized_desired["spec"]


def test_managed_fields_manager_keeps_other_differences() -> None:
    """Trusting the HPA's manager still reports an image change it does not own."""
    result = diff(
        deployment(replicas=2, image="nginx:1.28"),
        hpa_live(replicas=5),
        rules=rules(HPA_RULE),
        key=DEPLOY_KEY,
    )
    assert [c.path for c in result.changes] == [".spec.template.spec.containers[0].image"]


def test_untrusted_manager_does_not_hide_anything() -> None:
    """Without the rule (or with another manager named) the replica drift is reported."""
    other = HPA_RULE | {"managedFieldsManagers": ["kubectl-edit"]}
    for applied in ([], rules(other)):
        result = diff(deployment(replicas=2), hpa_live(replicas=5), rules=applied, key=DEPLOY_KEY)
        assert result.changes == (Change(".spec.replicas", 5, 2),)


def test_managed_fields_remove_owned_list_items_whole() -> None:
    """A `k:` item owned with `.` (an injected sidecar) is removed whole, other items untouched."""
    live = live_of(deployment())
    live["spec"]["template"]["spec"]["containers"].append({"name": "mesh", "image": "envoy:1"})
    live["metadata"]["managedFields"] = [
        {
            "manager": "mesh-injector",
            "operation": "Update",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:mesh": {}}},
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"mesh"}': {".": {}, "f:image": {}, "f:name": {}}
                            }
                        }
                    }
                },
            },
        }
    ]
    live["metadata"]["labels"]["mesh"] = "on"
    rule = rules(
        {"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["mesh-injector"]}
    )
    assert not diff(deployment(), live, rules=rule, key=DEPLOY_KEY).modified
    # The labels map's `.` is not ownership of the other keys: a changed `app` label still shows.
    live["metadata"]["labels"]["app"] = "api"
    result = diff(deployment(), live, rules=rule, key=DEPLOY_KEY)
    assert [c.path for c in result.changes] == [".metadata.labels.app"]


def test_managed_fields_set_items_and_indices() -> None:
    """`v:` set items are matched by value and `i:` items by position."""
    obj: Body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "finalizers": ["a.example/x", "b.example/y"]},
        "data": {"k": "v"},
        "items": [{"n": 1}, {"n": 2}],
    }
    managed = [
        {
            "manager": "m",
            "fieldsV1": {
                "f:metadata": {"f:finalizers": {'v:"b.example/y"': {}}},
                "f:items": {"i:1": {}},
            },
        }
    ]
    out = normalize(
        obj,
        rules=rules({"kind": "ConfigMap", "managedFieldsManagers": ["m"]}),
        key=ResourceKey("", "ConfigMap", "", "cm"),
        managed_fields=managed,
    )
    assert out["metadata"]["finalizers"] == ["a.example/x"]
    assert out["items"] == [{"n": 1}]


# --------------------------------------------------------------------------- secrets


def secret(**fields: Any) -> Body:
    """A Secret body with the given top-level fields (data, stringData, ...)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "shop"},
        "type": "Opaque",
        **fields,
    }


def b64(text: str) -> str:
    """Base64 as the API server stores Secret data."""
    return base64.b64encode(text.encode()).decode()


def test_secret_string_data_equals_encoded_data() -> None:
    """stringData in git equals the same value base64-encoded in live data; stringData wins."""
    desired = secret(data={"user": b64("stale"), "host": b64("db")}, stringData={"user": "admin"})
    live = secret(data={"user": b64("admin"), "host": b64("db")})
    result = diff(desired, live, rules=[], key=SECRET_KEY)
    assert not result.modified
    assert "stringData" not in result.normalized_desired


def test_secret_diff_never_shows_values() -> None:
    """A changed Secret value is reported by key with distinct masks, never the value itself."""
    desired = secret(stringData={"password": "hunter2-new", "user": "admin"})
    live = secret(data={"password": b64("hunter2-old"), "user": b64("admin")})
    result = diff(desired, live, rules=[], key=SECRET_KEY)
    assert result.modified
    assert result.changes == (Change(".data.password", "++++++++", "++++++++++++"),)
    assert result.normalized_live["data"]["user"] == result.normalized_desired["data"]["user"]
    text = repr(result) + unified_diff(
        result.normalized_live, result.normalized_desired, from_name="live", to_name="desired"
    )
    for plain in ("hunter2", "admin", b64("hunter2-new"), b64("hunter2-old"), b64("admin")):
        assert plain not in text


def test_redact_secret_masks_data_string_data_and_last_applied() -> None:
    """redact_secret masks every value, including those inside last-applied-configuration."""
    applied = secret(stringData={"token": "s3cr3t-token"})
    live = secret(data={"token": b64("s3cr3t-token"), "other": b64("x")})
    live["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(applied), "team": "a"}
    live["stringData"] = {"extra": "s3cr3t-extra"}
    masked = redact_secret(live)
    dumped = json.dumps(masked)
    assert "s3cr3t" not in dumped
    assert b64("s3cr3t-token") not in dumped
    assert set(masked["data"].values()) == {"++++++++"}
    assert json.loads(masked["metadata"]["annotations"][LAST_APPLIED])["stringData"] == {
        "token": "++++++++++++"  # a different value for the same key than live's data holds
    }
    assert live["data"]["token"] == b64("s3cr3t-token"), "the input must not be modified"


def test_redact_secrets_is_consistent_across_objects_and_skips_other_kinds() -> None:
    """Equal values share a mask across objects, different ones differ; ConfigMaps pass as is."""
    a, b = redact_secrets(secret(data={"k": "1", "j": "1"}), secret(data={"k": "2", "j": "1"}))
    assert a["data"] == {"k": "++++++++", "j": "++++++++"}
    assert b["data"] == {"k": "++++++++++++", "j": "++++++++"}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "visible"}}
    assert redact_secret(cm) == cm


def test_unparsable_last_applied_on_secret_is_masked_whole() -> None:
    """A last-applied annotation that is not JSON is masked whole, since it cannot be per key."""
    body = secret(data={"k": b64("v")})
    body["metadata"]["annotations"] = {LAST_APPLIED: '{"data": {"k": "djE=" '}
    assert redact_secret(body)["metadata"]["annotations"][LAST_APPLIED] == "++++++++"


# --------------------------------------------------------------------------- output


def test_unified_diff_shows_changed_lines_as_yaml() -> None:
    """unified_diff renders sorted-key YAML with file headers and -/+ lines for the change."""
    live = diff(deployment(replicas=3), live_of(deployment()), rules=[], key=DEPLOY_KEY)
    text = unified_diff(
        live.normalized_live, live.normalized_desired, from_name="live", to_name="desired"
    )
    assert text.startswith("--- live\n+++ desired\n")
    assert "-  replicas: 2\n" in text
    assert "+  replicas: 3\n" in text
    assert unified_diff(None, deployment(), from_name="a", to_name="b").count("\n+") > 10
    assert unified_diff(deployment(), deployment(), from_name="a", to_name="b") == ""


# --------------------------------------------------------------------------- rule validation


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ({"kind": "Deployment"}, r"^spec\.ignoreDifferences: must be a list"),
        (["Deployment"], r"^spec\.ignoreDifferences\[0\]: must be a mapping"),
        ([{"group": "apps"}], r"^spec\.ignoreDifferences\[0\]\.kind: is required"),
        ([{"kind": "X", "jsonPointer": ["/a"]}], r"\[0\]: unknown field 'jsonPointer'"),
        ([{"kind": "X", "name": 3}], r"\[0\]\.name: must be a string"),
        ([{"kind": "X", "jsonPointers": "/a"}], r"\[0\]\.jsonPointers: must be a list"),
        ([{"kind": "X", "jsonPointers": ["a/b"]}], r"\[0\]\.jsonPointers\[0\]: .*start with '/'"),
        ([{"kind": "X", "jsonPointers": ["/a~2b"]}], r"\[0\]\.jsonPointers\[0\]: .*'~' escape"),
        (
            [{"kind": "X"}, {"kind": "Y", "jqPathExpressions": [".a", ".a |"]}],
            r"\[1\]\.jqPathExpressions\[1\]: unsupported jq path expression '\.a \|'",
        ),
        ([{"kind": "X", "managedFieldsManagers": [""]}], r"\.managedFieldsManagers\[0\]"),
    ],
)
def test_invalid_rules_name_where_and_field(items: object, message: str) -> None:
    """Malformed ignoreDifferences raise ValueError naming the location and the offending field."""
    with pytest.raises(ValueError, match=message):
        parse_ignore_differences(items, where="spec.ignoreDifferences")


def test_valid_rules_parse_into_ignore_rules() -> None:
    """A full entry becomes an IgnoreRule with tuples; a missing list means no rules."""
    assert parse_ignore_differences(None, where="x") == []
    [rule] = rules(
        {
            "group": "apps",
            "kind": "Deployment",
            "name": "web",
            "namespace": "shop",
            "jsonPointers": ["/spec/replicas"],
            "jqPathExpressions": [".spec.template.spec.initContainers[]?"],
            "managedFieldsManagers": ["kube-controller-manager"],
        }
    )
    assert rule == IgnoreRule(
        kind="Deployment",
        group="apps",
        name="web",
        namespace="shop",
        json_pointers=("/spec/replicas",),
        jq_path_expressions=(".spec.template.spec.initContainers[]?",),
        managed_fields_managers=("kube-controller-manager",),
    )
