"""Unit tests for sync-option parsing and hook/wave annotations (daemon.plan.options)."""

from __future__ import annotations

import pytest

from daemon.model import Body, HookDeletePolicy, HookType
from daemon.plan.options import (
    PropagationPolicy,
    RemovalPolicy,
    SyncOptions,
    delete_policies,
    hook_types,
    is_hook,
    is_skipped,
    parse_sync_options,
    resource_sync_options,
    sync_wave,
)


def obj(annotations: dict[str, str] | None = None) -> Body:
    """A ConfigMap body carrying the given annotations."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "default", "annotations": annotations or {}},
    }


def test_defaults_when_no_option_is_set() -> None:
    """An empty option set yields Argo CD's documented defaults for every option."""
    opts = SyncOptions()
    assert opts.prune is RemovalPolicy.ALLOW
    assert opts.delete is RemovalPolicy.ALLOW
    assert opts.validate is True
    assert opts.apply_out_of_sync_only is False
    assert opts.prune_propagation_policy is PropagationPolicy.FOREGROUND
    assert opts.prune_last is False
    assert opts.replace is False
    assert opts.force is False
    assert opts.server_side_apply is False
    assert opts.client_side_apply_migration is True
    assert opts.create_namespace is False
    assert opts.respect_ignore_differences is False
    assert opts.fail_on_shared_resource is False
    assert opts.skip_dry_run_on_missing_resource is False
    assert opts.unknown() == ()


def test_parse_reads_typed_values() -> None:
    """Each known option's value is exposed through its typed property."""
    opts = parse_sync_options(
        [
            "Prune=confirm",
            "Delete=false",
            "Validate=false",
            "ApplyOutOfSyncOnly=true",
            "PrunePropagationPolicy=orphan",
            "PruneLast=true",
            "Replace=true",
            "Force=true",
            "ServerSideApply=true",
            "ClientSideApplyMigration=false",
            "CreateNamespace=true",
            "RespectIgnoreDifferences=true",
            "FailOnSharedResource=true",
            "SkipDryRunOnMissingResource=true",
        ]
    )
    assert opts.prune is RemovalPolicy.CONFIRM
    assert opts.delete is RemovalPolicy.NEVER
    assert opts.validate is False
    assert opts.apply_out_of_sync_only is True
    assert opts.prune_propagation_policy is PropagationPolicy.ORPHAN
    assert opts.prune_last is True
    assert opts.replace is True
    assert opts.force is True
    assert opts.server_side_apply is True
    assert opts.client_side_apply_migration is False
    assert opts.create_namespace is True
    assert opts.respect_ignore_differences is True
    assert opts.fail_on_shared_resource is True
    assert opts.skip_dry_run_on_missing_resource is True


def test_get_returns_raw_value_or_none() -> None:
    """get() returns the raw string of a set option and None for an unset one."""
    opts = parse_sync_options(["PrunePropagationPolicy=background"])
    assert opts.get("PrunePropagationPolicy") == "background"
    assert opts.get("Prune") is None


def test_parse_trims_skips_empty_and_collapses_repeats() -> None:
    """Whitespace is trimmed, empty entries skipped and exact repeats kept once."""
    opts = parse_sync_options([" Prune = false ", "", "  ", "Prune=false", "Replace=true"])
    assert opts.pairs == (("Prune", "false"), ("Replace", "true"))


def test_invalid_propagation_policy_names_option_and_allowed_values() -> None:
    """PrunePropagationPolicy=sideways is rejected with the option and allowed values named."""
    with pytest.raises(ValueError, match="PrunePropagationPolicy=sideways") as info:
        parse_sync_options(["PrunePropagationPolicy=sideways"])
    assert "foreground, background, orphan" in str(info.value)


@pytest.mark.parametrize(
    "option",
    ["Prune=maybe", "Delete=yes", "PruneLast=True", "ServerSideApply=1", "Validate="],
)
def test_invalid_values_are_rejected(option: str) -> None:
    """Known options accept only their exact allowed spellings, as Argo CD matches exactly."""
    with pytest.raises(ValueError, match=option.partition("=")[0]):
        parse_sync_options([option])


def test_direct_construction_is_validated() -> None:
    """Building SyncOptions directly validates values and rejects repeated keys."""
    with pytest.raises(ValueError, match="allowed values: true, false, confirm"):
        SyncOptions((("Prune", "nope"),))
    with pytest.raises(ValueError, match="more than once"):
        SyncOptions((("Replace", "true"), ("Replace", "true")))


def test_entry_without_equals_is_rejected() -> None:
    """An option without `=` is a format error naming the entry."""
    with pytest.raises(ValueError, match="'PruneLast' is invalid; expected Key=Value"):
        parse_sync_options(["PruneLast"])


def test_conflicting_values_are_rejected() -> None:
    """The same option given two different values is an error rather than last-wins."""
    with pytest.raises(ValueError, match="Prune is given conflicting values false, true"):
        parse_sync_options(["Prune=false", "Prune=true"])


def test_unknown_keys_are_kept_and_reported() -> None:
    """Unrecognised keys (e.g. typos) survive parsing and are listed by unknown()."""
    opts = parse_sync_options(["prune=false", "Replace=true", "Frobnicate=yes"])
    assert opts.unknown() == ("prune", "Frobnicate")
    assert opts.get("Frobnicate") == "yes"
    assert opts.prune is RemovalPolicy.ALLOW


def test_resource_sync_options_reads_csv_annotation() -> None:
    """The sync-options annotation is split on commas and trimmed."""
    body = obj({"argocd.argoproj.io/sync-options": "Prune=false, ServerSideApply=true ,"})
    opts = resource_sync_options(body)
    assert opts.prune is RemovalPolicy.NEVER
    assert opts.server_side_apply is True
    assert resource_sync_options(obj()) == SyncOptions()


def test_resource_option_overrides_app_option() -> None:
    """merged() lets a resource annotation override the app-level value."""
    app = parse_sync_options(["Prune=false", "ServerSideApply=true"])
    resource = parse_sync_options(["Prune=true", "ServerSideApply=false", "Replace=true"])
    merged = app.merged(resource)
    assert merged.prune is RemovalPolicy.ALLOW
    assert merged.server_side_apply is False
    assert merged.replace is True
    assert app.merged(SyncOptions()) == app


def test_app_only_options_on_a_resource_are_ignored() -> None:
    """merged() ignores app-only options such as PrunePropagationPolicy on a resource."""
    app = parse_sync_options(["PrunePropagationPolicy=background"])
    resource = parse_sync_options(["PrunePropagationPolicy=orphan", "CreateNamespace=true"])
    merged = app.merged(resource)
    assert merged.prune_propagation_policy is PropagationPolicy.BACKGROUND
    assert merged.create_namespace is False


def test_propagation_policy_api_spelling() -> None:
    """Propagation policies map to the capitalised DeleteOptions spelling."""
    assert [p.api_value for p in PropagationPolicy] == ["Foreground", "Background", "Orphan"]


def test_argo_hook_types_are_trimmed_csv() -> None:
    """argocd.argoproj.io/hook is a trimmed CSV of hook types; unknown entries are dropped."""
    body = obj({"argocd.argoproj.io/hook": " PreSync , PostSync,Bogus"})
    assert hook_types(body) == {HookType.PRE_SYNC, HookType.POST_SYNC}


@pytest.mark.parametrize(
    ("helm", "expected"),
    [
        ("pre-install", {HookType.PRE_SYNC}),
        ("pre-upgrade", {HookType.PRE_SYNC}),
        ("pre-install,pre-upgrade", {HookType.PRE_SYNC}),
        ("post-install,post-upgrade", {HookType.POST_SYNC}),
        ("pre-delete", {HookType.PRE_DELETE}),
        ("post-delete", {HookType.POST_DELETE}),
        ("crd-install", set()),
        ("pre-rollback,test-success", set()),
    ],
)
def test_helm_hook_mapping(helm: str, expected: set[HookType]) -> None:
    """helm.sh/hook values map onto Argo CD hook types; unsupported ones map to nothing."""
    assert hook_types(obj({"helm.sh/hook": helm})) == expected


def test_argo_hook_annotation_wins_over_helm() -> None:
    """When any Argo CD hook type is present the Helm hook annotation is ignored."""
    body = obj({"argocd.argoproj.io/hook": "Sync", "helm.sh/hook": "post-install"})
    assert hook_types(body) == {HookType.SYNC}


def test_unrecognised_argo_hook_falls_back_to_helm() -> None:
    """An Argo CD hook annotation with no recognised type does not hide the Helm hook."""
    body = obj({"argocd.argoproj.io/hook": "Bogus", "helm.sh/hook": "post-install"})
    assert hook_types(body) == {HookType.POST_SYNC}


@pytest.mark.parametrize(
    ("annotations", "hook", "skipped"),
    [
        ({}, False, False),
        ({"argocd.argoproj.io/hook": "PreSync"}, True, False),
        ({"argocd.argoproj.io/hook": "Skip"}, False, True),
        ({"argocd.argoproj.io/hook": "Skip,PreSync"}, True, False),
        ({"argocd.argoproj.io/hook": "Bogus"}, False, True),
        ({"argocd.argoproj.io/hook": ""}, False, True),
        ({"helm.sh/hook": "crd-install"}, False, False),
        ({"helm.sh/hook": "test-success"}, False, True),
        ({"helm.sh/hook": "pre-install"}, True, False),
        ({"argocd.argoproj.io/hook": "PostDelete"}, True, False),
    ],
)
def test_hook_and_skip_classification(
    annotations: dict[str, str], hook: bool, skipped: bool
) -> None:
    """Objects are hooks, skipped (Skip-only or unrecognised hook) or ordinary resources."""
    body = obj(annotations)
    assert is_hook(body) is hook
    assert is_skipped(body) is skipped


def test_delete_policy_defaults_to_before_hook_creation() -> None:
    """A hook without delete-policy annotations gets BeforeHookCreation."""
    body = obj({"argocd.argoproj.io/hook": "PreSync"})
    assert delete_policies(body) == {HookDeletePolicy.BEFORE_HOOK_CREATION}


def test_delete_policies_combine_argo_and_helm() -> None:
    """Argo CD and mapped Helm delete policies are added together; unknown ones are dropped."""
    body = obj(
        {
            "argocd.argoproj.io/hook-delete-policy": "HookSucceeded, Never",
            "helm.sh/hook-delete-policy": "hook-failed",
        }
    )
    assert delete_policies(body) == {
        HookDeletePolicy.HOOK_SUCCEEDED,
        HookDeletePolicy.HOOK_FAILED,
    }


@pytest.mark.parametrize(
    ("annotations", "wave"),
    [
        ({}, 0),
        ({"argocd.argoproj.io/sync-wave": "-3"}, -3),
        ({"argocd.argoproj.io/sync-wave": "+4"}, 4),
        ({"helm.sh/hook-weight": "7"}, 7),
        ({"argocd.argoproj.io/sync-wave": "2", "helm.sh/hook-weight": "7"}, 2),
        ({"argocd.argoproj.io/sync-wave": "two", "helm.sh/hook-weight": "7"}, 7),
        ({"argocd.argoproj.io/sync-wave": " 1"}, 0),
        ({"argocd.argoproj.io/sync-wave": "1_0"}, 0),
        ({"helm.sh/hook-weight": "1.5"}, 0),
    ],
)
def test_sync_wave(annotations: dict[str, str], wave: int) -> None:
    """Wave comes from sync-wave, else helm.sh/hook-weight, else 0; non-integers are ignored."""
    assert sync_wave(obj(annotations)) == wave
