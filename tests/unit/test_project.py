"""Unit tests for AppProject rules (daemon.plan.project), sync windows with their cron dialect
(daemon.appproject.windows, .cron) and project roles (daemon.appproject.roles)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from daemon.appproject import DEFAULT_PROJECT, AppProject
from daemon.appproject.cron import parse_cron
from daemon.appproject.roles import authorize, parse_roles
from daemon.appproject.windows import (
    SyncWindow,
    WindowKind,
    parse_go_duration,
    parse_sync_windows,
    project_sync_windows,
    sync_allowed,
    window_active,
    window_next_opening,
)
from daemon.plan.project import (
    check_destination,
    check_resource,
    check_source,
    namespace_violation,
    normalize_git_url,
)
from daemon.settings import IN_CLUSTER_NAME, IN_CLUSTER_SERVER, ClusterConfig
from daemon.settings import parse_project as settings_parse_project

# The multi-tenant example from the seed notes, verbatim.
SEED_TENANT_A = """
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: tenant-a
  namespace: argocd
spec:
  description: Project for Tenant A
  sourceRepos:
    - https://github.com/tenant-a/apps.git
  destinations:
    - namespace: tenant-a-*
      server: https://kubernetes.default.svc
  clusterResourceWhitelist:
    - group: rbac.authorization.k8s.io
      kind: Role
    - group: rbac.authorization.k8s.io
      kind: RoleBinding
  namespaceResourceWhitelist:
    - group: '*'
      kind: '*'
  roles:
    - name: tenant-a-admin
      policies:
        - p, proj:tenant-a:tenant-a-admin, applications, *, tenant-a/*, allow
      groups:
        - tenant-a-admin-group
    - name: tenant-a-developer
      policies:
        - p, proj:tenant-a:tenant-a-developer, applications, get, tenant-a/*, allow
        - p, proj:tenant-a:tenant-a-developer, applications, sync, tenant-a/*, allow
      groups:
        - tenant-a-developer-group
"""


WHERE = "projects.yaml: document 1"  # as the settings loader names a document


def load(text: str) -> AppProject:
    """An AppProject parsed by the settings loader from YAML text."""
    return settings_parse_project(yaml.safe_load(text), where=WHERE, warnings=[])


def project(name: str = "p", **spec: Any) -> AppProject:
    """An AppProject parsed by the settings loader from a spec mapping."""
    doc = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject"}
    doc |= {"metadata": {"name": name}, "spec": spec}
    return settings_parse_project(doc, where=WHERE, warnings=[])


@pytest.fixture
def tenant_a() -> AppProject:
    """The seed's tenant-a project."""
    return load(SEED_TENANT_A)


def at(text: str, tz: str = "UTC") -> datetime:
    """An aware datetime from ISO text in the given zone."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def window(kind: str, schedule: str, duration: str, **extra: Any) -> SyncWindow:
    """One sync window parsed from its Argo CD spelling (applications default to '*')."""
    raw = {"kind": kind, "schedule": schedule, "duration": duration} | extra
    raw.setdefault("applications", ["*"])
    return parse_sync_windows({"syncWindows": [raw]}, where="w")[0]


# --- sourceRepos ---------------------------------------------------------------------------


def test_seed_source_repo_is_permitted_in_any_spelling(tenant_a: AppProject) -> None:
    """The seed repo is permitted with or without .git and in any letter case."""
    assert check_source(tenant_a, "https://github.com/tenant-a/apps.git") is None
    assert check_source(tenant_a, "https://github.com/tenant-a/apps") is None
    assert check_source(tenant_a, " HTTPS://GitHub.com/Tenant-A/apps.git ") is None


def test_foreign_repo_is_refused_with_a_sentence(tenant_a: AppProject) -> None:
    """Another tenant's repo is refused, and the message names repo, project and rule."""
    v = check_source(tenant_a, "https://github.com/tenant-b/apps.git")
    assert v is not None
    assert v.rule == "sourceRepos"
    assert v.subject == "https://github.com/tenant-b/apps.git"
    assert v.message == (
        "repository https://github.com/tenant-b/apps.git is not permitted in project tenant-a "
        "(sourceRepos)"
    )


def test_source_star_stays_within_one_path_segment() -> None:
    """In sourceRepos `*` does not cross '/', while `**` does."""
    one = project(sourceRepos=["https://github.com/org/*"])
    assert check_source(one, "https://github.com/org/app") is None
    assert check_source(one, "https://github.com/org/team/app") is not None
    deep = project(sourceRepos=["https://github.com/org/**"])
    assert check_source(deep, "https://github.com/org/team/app") is None


def test_negated_source_denies_even_when_star_allows() -> None:
    """A matching `!pattern` denies at once, naming the rule, though `*` also matched."""
    p = project(sourceRepos=["*", "!https://github.com/evil/*"])
    v = check_source(p, "https://github.com/evil/repo.git")
    assert v is not None
    assert "'!https://github.com/evil/*'" in v.message
    assert check_source(p, "https://github.com/good/repo") is None


def test_lone_negated_source_permits_every_other_repo() -> None:
    """A non-matching `!pattern` counts as a match, so `['!x']` alone permits the rest."""
    p = project(sourceRepos=["!https://github.com/evil/*"])
    assert check_source(p, "https://github.com/good/repo") is None
    assert check_source(p, "https://github.com/evil/repo") is not None


def test_empty_source_repos_permit_nothing() -> None:
    """A project without sourceRepos refuses every repository."""
    assert check_source(project(), "https://github.com/any/repo") is not None


def test_scp_and_ssh_urls_normalise_alike() -> None:
    """scp-style and ssh:// URLs normalise to the same `user@host/path` form, as Argo CD's."""
    assert normalize_git_url("git@GitHub.com:Org/Repo.git") == "git@github.com/org/repo"
    assert normalize_git_url("ssh://git@github.com/org/repo.git") == "git@github.com/org/repo"
    assert normalize_git_url("https://github.com/org/repo.git") == "https://github.com/org/repo"
    p = project(sourceRepos=["git@github.com:org/*"])
    assert check_source(p, "ssh://git@github.com/org/repo") is None
    assert check_source(p, "https://github.com/org/repo") is not None


# --- destinations --------------------------------------------------------------------------


def test_seed_destinations_permit_only_tenant_namespaces(tenant_a: AppProject) -> None:
    """tenant-a-* on the in-cluster server is permitted; other namespaces or servers are not."""
    ok = check_destination(
        tenant_a, server=IN_CLUSTER_SERVER, name=IN_CLUSTER_NAME, namespace="tenant-a-prod"
    )
    assert ok is None
    v = check_destination(
        tenant_a, server=IN_CLUSTER_SERVER, name=IN_CLUSTER_NAME, namespace="tenant-b"
    )
    assert v is not None
    assert v.rule == "destinations"
    assert "'tenant-b'" in v.message
    assert "tenant-a" in v.message
    other = check_destination(
        tenant_a, server="https://prod.example:6443", name="prod", namespace="tenant-a-prod"
    )
    assert other is not None


def test_destination_entries_by_name_or_server_match_either() -> None:
    """An entry given by cluster name matches an app resolved to that cluster, and vice versa."""
    by_name = project(destinations=[{"name": "prod", "namespace": "*"}])
    assert check_destination(by_name, server="https://p:6443", name="prod", namespace="x") is None
    assert check_destination(by_name, server="https://p:6443", name="dev", namespace="x")
    by_server = project(destinations=[{"server": "https://p:6443", "namespace": "*"}])
    assert check_destination(by_server, server="https://p:6443", name="prod", namespace="x") is None


def test_negated_namespace_destination_denies() -> None:
    """`namespace: '!kube-system'` denies kube-system even though another entry allows all."""
    p = project(
        destinations=[
            {"server": "*", "namespace": "*"},
            {"server": "*", "namespace": "!kube-system"},
        ]
    )
    v = check_destination(p, server=IN_CLUSTER_SERVER, name="", namespace="kube-system")
    assert v is not None
    assert "denied by destinations entry" in v.message
    assert check_destination(p, server=IN_CLUSTER_SERVER, name="", namespace="default") is None


def test_negated_server_destination_denies() -> None:
    """`server: '!https://prod…'` denies that cluster though a later entry allows every server."""
    p = project(
        destinations=[
            {"server": "!https://prod.example", "namespace": "*"},
            {"server": "*", "namespace": "*"},
        ]
    )
    assert check_destination(p, server="https://prod.example", name="", namespace="a")
    assert check_destination(p, server="https://dev.example", name="", namespace="a") is None


# --- resources -----------------------------------------------------------------------------


def test_seed_refuses_cluster_role_binding(tenant_a: AppProject) -> None:
    """A ClusterRoleBinding is refused: Role/RoleBinding in the cluster whitelist don't cover it."""
    v = check_resource(
        tenant_a,
        group="rbac.authorization.k8s.io",
        kind="ClusterRoleBinding",
        name="admin-binding",
        namespace="",
        namespaced=False,
        server=IN_CLUSTER_SERVER,
        cluster_name=IN_CLUSTER_NAME,
    )
    assert v is not None
    assert v.rule == "clusterResourceWhitelist"
    assert v.subject == "ClusterRoleBinding/admin-binding"
    assert v.message == (
        "resource rbac.authorization.k8s.io:ClusterRoleBinding "
        "(ClusterRoleBinding/admin-binding) is not permitted in project tenant-a "
        "(clusterResourceWhitelist)"
    )


def test_seed_allows_namespaced_role_in_tenant_namespace(tenant_a: AppProject) -> None:
    """A namespaced Role in tenant-a-prod passes the namespace whitelist and destinations."""
    v = check_resource(
        tenant_a,
        group="rbac.authorization.k8s.io",
        kind="Role",
        name="reader",
        namespace="tenant-a-prod",
        namespaced=True,
        server=IN_CLUSTER_SERVER,
        cluster_name=IN_CLUSTER_NAME,
    )
    assert v is None


def test_namespaced_resource_outside_destinations_is_refused(tenant_a: AppProject) -> None:
    """A namespaced resource whose namespace the destinations don't permit is refused."""
    v = check_resource(
        tenant_a,
        group="",
        kind="ConfigMap",
        name="cfg",
        namespace="kube-system",
        namespaced=True,
        server=IN_CLUSTER_SERVER,
        cluster_name=IN_CLUSTER_NAME,
    )
    assert v is not None
    assert v.rule == "destinations"
    assert v.subject == "ConfigMap/kube-system/cfg"


def ns_check(p: AppProject, kind: str, group: str = "") -> str | None:
    """The rule refusing a namespaced object of `kind` in namespace 'app', or None."""
    v = check_resource(
        p,
        group=group,
        kind=kind,
        name="x",
        namespace="app",
        namespaced=True,
        server=IN_CLUSTER_SERVER,
        cluster_name=IN_CLUSTER_NAME,
    )
    return None if v is None else v.rule


def cluster_check(p: AppProject, kind: str, group: str = "", name: str = "x") -> str | None:
    """The rule refusing a cluster-scoped object of `kind`, or None."""
    v = check_resource(
        p,
        group=group,
        kind=kind,
        name=name,
        namespace="",
        namespaced=False,
        server=IN_CLUSTER_SERVER,
        cluster_name=IN_CLUSTER_NAME,
    )
    return None if v is None else v.rule


ANY_DEST = [{"server": "*", "namespace": "*"}]


def test_namespace_whitelist_absent_allows_all_but_empty_allows_none() -> None:
    """namespaceResourceWhitelist absent permits every kind; an explicit empty list permits none."""
    assert ns_check(project(destinations=ANY_DEST), "ConfigMap") is None
    empty = project(destinations=ANY_DEST, namespaceResourceWhitelist=[])
    assert ns_check(empty, "ConfigMap") == "namespaceResourceWhitelist"


def test_namespace_blacklist_subtracts() -> None:
    """A namespaceResourceBlacklist entry refuses its kind; the core group is matched by ''."""
    p = project(destinations=ANY_DEST, namespaceResourceBlacklist=[{"group": "", "kind": "Secret"}])
    assert ns_check(p, "Secret") == "namespaceResourceBlacklist"
    assert ns_check(p, "ConfigMap") is None


def test_empty_cluster_whitelist_allows_no_cluster_scoped_kind() -> None:
    """A parsed project without clusterResourceWhitelist refuses every cluster-scoped kind."""
    assert cluster_check(project(destinations=ANY_DEST), "Namespace") == (
        "clusterResourceWhitelist"
    )


def test_cluster_blacklist_entry_with_name_glob() -> None:
    """A cluster blacklist entry with `name` refuses only the objects whose names match."""
    p = project(
        clusterResourceWhitelist=[{"group": "*", "kind": "*"}],
        clusterResourceBlacklist=[{"group": "", "kind": "Namespace", "name": "kube-*"}],
    )
    assert cluster_check(p, "Namespace", name="kube-system") == "clusterResourceBlacklist"
    assert cluster_check(p, "Namespace", name="team-a") is None


def test_resource_group_and_kind_use_filepath_globs() -> None:
    """Whitelist group `*.k8s.io` matches rbac.authorization.k8s.io but not the core group."""
    p = project(clusterResourceWhitelist=[{"group": "*.k8s.io", "kind": "Cluster*"}])
    assert cluster_check(p, "ClusterRole", group="rbac.authorization.k8s.io") is None
    assert cluster_check(p, "ClusterRole", group="") == "clusterResourceWhitelist"
    assert cluster_check(p, "Namespace", group="rbac.authorization.k8s.io") is not None


def test_default_project_allows_everything() -> None:
    """The built-in default project permits any repo, destination and cluster-scoped kind."""
    assert check_source(DEFAULT_PROJECT, "git@example.com:x/y.git") is None
    assert check_destination(DEFAULT_PROJECT, server="https://x", name="x", namespace="y") is None
    assert cluster_check(DEFAULT_PROJECT, "ClusterRoleBinding", "rbac.authorization.k8s.io") is None
    assert ns_check(DEFAULT_PROJECT, "Secret") is None


# --- cron ----------------------------------------------------------------------------------


def test_cron_step_matches_every_fifteen_minutes() -> None:
    """`*/15` fires at minutes 0, 15, 30 and 45 only."""
    cron = parse_cron("*/15 * * * *")
    assert cron.minutes == {0, 15, 30, 45}


def test_cron_ranges_lists_and_names() -> None:
    """Ranges, lists, range steps and case-insensitive names parse like robfig/cron."""
    cron = parse_cron("0,30 9-17/4 * jan-MAR mon-fri")
    assert cron.minutes == {0, 30}
    assert cron.hours == {9, 13, 17}
    assert cron.months == {1, 2, 3}
    assert cron.weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}


def test_cron_day_of_month_or_day_of_week_when_both_restricted() -> None:
    """With both day fields restricted a day matching either fires; with one `*` both must."""
    both = parse_cron("0 0 13 * FRI")
    assert both.day_matches(datetime(2024, 5, 13))  # Monday the 13th
    assert both.day_matches(datetime(2024, 5, 17))  # Friday the 17th
    assert not both.day_matches(datetime(2024, 5, 14))
    dow_only = parse_cron("0 0 * * FRI")
    assert not dow_only.day_matches(datetime(2024, 5, 13))
    stepped = parse_cron("0 0 */2 * MON")  # a step > 1 is a restriction, not a star
    assert stepped.day_matches(datetime(2024, 1, 8))  # Monday, even day
    assert stepped.day_matches(datetime(2024, 1, 9))  # odd day, Tuesday
    assert not stepped.day_matches(datetime(2024, 1, 10))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("* * * *", "exactly 5 fields"),
        ("60 * * * *", "above the maximum 59"),
        ("0 0 * * 7", "above the maximum 6"),
        ("0 0 0 * *", "below the minimum 1"),
        ("@daily", "descriptors"),
        ("*/0 * * * *", "step must be positive"),
        ("5-1 * * * *", "after its end"),
        ("0 0 * * FUN", "not a number or name"),
    ],
)
def test_invalid_cron_is_refused(spec: str, fragment: str) -> None:
    """Malformed schedules raise ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=fragment):
        parse_cron(spec)


def test_go_durations() -> None:
    """Go duration strings convert to seconds; a bare number is refused for lacking a unit."""
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("1.5h") == 5400
    assert parse_go_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="missing unit"):
        parse_go_duration("90")


# --- sync windows --------------------------------------------------------------------------


def test_window_is_active_from_start_until_just_before_end() -> None:
    """A 09:00 one-hour window is open at 09:00 and 09:59:59, closed at 08:59 and 10:00."""
    w = window("allow", "0 9 * * *", "1h")
    assert window_active(w, at("2024-05-13T09:00:00"))
    assert window_active(w, at("2024-05-13T09:59:59"))
    assert not window_active(w, at("2024-05-13T08:59:00"))
    assert not window_active(w, at("2024-05-13T10:00:00"))


def test_window_spans_midnight() -> None:
    """A 22:00 four-hour window is still open at 01:00 the next day."""
    w = window("deny", "0 22 * * *", "4h")
    assert window_active(w, at("2024-05-14T01:00:00"))
    assert not window_active(w, at("2024-05-14T02:00:00"))


def test_window_schedule_reads_its_time_zone() -> None:
    """A 09:00 Europe/Berlin window opens at 08:00 UTC in winter and 07:00 UTC in summer."""
    w = window("allow", "0 9 * * *", "1h", timeZone="Europe/Berlin")
    assert window_active(w, at("2024-01-15T08:30:00"))
    assert not window_active(w, at("2024-01-15T09:30:00"))
    assert window_active(w, at("2024-07-15T07:30:00"))
    assert window_active(w, at("2024-07-15T09:30:00", "Europe/Berlin"))


def test_window_in_dst_gap_does_not_fire() -> None:
    """A 02:30 New York window does not open on the spring-forward day, but does the day after."""
    w = window("deny", "30 2 * * *", "1h", timeZone="America/New_York")
    assert not window_active(w, at("2024-03-10T07:45:00"))  # 03:45 EDT
    assert window_active(w, at("2024-03-11T06:45:00"))  # 02:45 EDT


def test_window_honours_day_of_week_restriction() -> None:
    """A weekday-only window is closed at the same hour on a Saturday."""
    w = window("allow", "0 9 * * MON-FRI", "8h")
    assert window_active(w, at("2024-05-17T12:00:00"))  # Friday
    assert not window_active(w, at("2024-05-18T12:00:00"))  # Saturday


def test_window_needs_aware_time() -> None:
    """A naive `now` is refused rather than guessed."""
    with pytest.raises(ValueError, match="timezone-aware"):
        window_active(window("allow", "* * * * *", "1h"), datetime(2024, 1, 1))


def test_next_opening_is_found_across_days() -> None:
    """The next opening of a Monday window seen on a Saturday is Monday at its start time."""
    w = window("allow", "30 6 * * MON", "1h")
    assert window_next_opening(w, at("2024-05-18T12:00:00")) == at("2024-05-20T06:30:00")


def test_parse_sync_windows_reads_every_field() -> None:
    """A full Argo CD window parses to typed fields with the duration in seconds."""
    raw = {
        "syncWindows": [
            {
                "kind": "deny",
                "schedule": "0 22 * * *",
                "duration": "1h30m",
                "applications": ["web-*"],
                "namespaces": ["prod"],
                "clusters": ["in-cluster"],
                "manualSync": True,
                "timeZone": "Europe/Berlin",
                "andOperator": True,
            }
        ]
    }
    (w,) = parse_sync_windows(raw, where="p.yaml (AppProject/x).spec")
    assert w.kind is WindowKind.DENY
    assert w.duration == 5400
    assert w.applications == ("web-*",)
    assert w.manual_sync is True
    assert w.time_zone == "Europe/Berlin"
    assert w.use_and_operator is True


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("schedule", "0 25 * * *", r"syncWindows\[0\]\.schedule: cannot parse"),
        ("duration", "1 hour", r"syncWindows\[0\]\.duration"),
        ("duration", "0s", r"syncWindows\[0\]\.duration: must be positive"),
        ("kind", "block", r"syncWindows\[0\]\.kind: must be allow or deny"),
        ("timeZone", "Mars/Olympus", r"syncWindows\[0\]\.timeZone: unknown time zone"),
    ],
)
def test_invalid_window_errors_name_where_and_field(field: str, value: str, fragment: str) -> None:
    """Each invalid window field raises ValueError starting with `where` and naming the field."""
    raw = {"kind": "allow", "schedule": "0 9 * * *", "duration": "1h", "applications": ["*"]}
    raw[field] = value
    with pytest.raises(ValueError, match=r"^p\.yaml: AppProject/x\.spec\." + fragment):
        parse_sync_windows({"syncWindows": [raw]}, where="p.yaml: AppProject/x.spec")


def test_window_without_selectors_is_refused() -> None:
    """A window naming no applications, namespaces or clusters is refused as in Argo CD."""
    raw = {"kind": "allow", "schedule": "0 9 * * *", "duration": "1h"}
    with pytest.raises(ValueError, match="requires one of applications, namespaces or clusters"):
        parse_sync_windows({"syncWindows": [raw]}, where="w")


def test_project_sync_windows_errors_name_file_and_project() -> None:
    """Windows read from a loaded project report errors under its file and name."""
    good = project(
        syncWindows=[
            {"kind": "deny", "schedule": "0 22 * * *", "duration": "1h", "namespaces": ["prod"]}
        ]
    )
    assert [w.namespaces for w in project_sync_windows(good)] == [("prod",)]
    bad = project(
        syncWindows=[
            {"kind": "deny", "schedule": "0 22 * *", "duration": "1h", "namespaces": ["prod"]}
        ]
    )
    with pytest.raises(ValueError, match=r"^projects\.yaml: AppProject/p\.spec\.syncWindows\[0\]"):
        project_sync_windows(bad)


def allowed(windows: list[SyncWindow], now: datetime, *, manual: bool = False, **kw: Any) -> bool:
    """The verdict of sync_allowed for app 'web' in namespace 'prod' on the in-cluster cluster."""
    args: dict[str, Any] = {"app": "web", "namespace": "prod", "cluster": IN_CLUSTER_NAME}
    ok, _ = sync_allowed(windows, now=now, manual=manual, **(args | kw))
    return ok


NIGHT = "2024-05-13T22:30:00"  # inside a 22:00 1h window
NOON = "2024-05-13T12:00:00"


def test_no_windows_allow_sync() -> None:
    """Without windows every sync is allowed."""
    assert sync_allowed([], app="web", namespace="prod", cluster="c", now=at(NOON), manual=False)[0]


def test_active_deny_blocks_and_says_until_when() -> None:
    """An active deny window blocks and the reason names it and when it ends."""
    deny = window("deny", "0 22 * * *", "1h")
    ok, reason = sync_allowed(
        [deny], app="web", namespace="prod", cluster="c", now=at(NIGHT), manual=False
    )
    assert not ok
    assert "deny window '0 22 * * *' for 1h" in reason
    assert "2024-05-13T23:00:00+00:00" in reason
    assert allowed([deny], at(NOON))


def test_deny_manual_sync_lets_only_manual_syncs_through() -> None:
    """manualSync on an active deny lets manual syncs through but still blocks automated ones."""
    deny = window("deny", "0 22 * * *", "1h", manualSync=True)
    assert allowed([deny], at(NIGHT), manual=True)
    assert not allowed([deny], at(NIGHT), manual=False)


def test_manual_sync_needs_every_active_deny_to_allow_it() -> None:
    """If one active deny lacks manualSync, a manual sync is still blocked."""
    lenient = window("deny", "0 22 * * *", "1h", manualSync=True)
    strict = window("deny", "0 20 * * *", "4h")
    assert not allowed([lenient, strict], at(NIGHT), manual=True)


def test_inactive_allow_windows_block_and_say_when_one_opens() -> None:
    """Outside every allow window syncs are blocked; the reason gives the next opening."""
    allow = window("allow", "0 22 * * *", "1h")
    ok, reason = sync_allowed(
        [allow], app="web", namespace="prod", cluster="c", now=at(NOON), manual=False
    )
    assert not ok
    assert "no allow window is active" in reason
    assert "2024-05-13T22:00:00+00:00" in reason
    assert allowed([allow], at(NIGHT))


def test_inactive_allow_with_manual_sync_permits_manual() -> None:
    """Outside allow windows that all have manualSync, a manual sync is allowed."""
    allow = window("allow", "0 22 * * *", "1h", manualSync=True)
    assert allowed([allow], at(NOON), manual=True)
    assert not allowed([allow], at(NOON), manual=False)


def test_deny_beats_allow() -> None:
    """When an allow and a deny window are both active the deny wins."""
    allow = window("allow", "0 0 * * *", "24h")
    deny = window("deny", "0 22 * * *", "1h")
    assert not allowed([allow, deny], at(NIGHT))
    assert allowed([allow, deny], at(NOON))


def test_windows_apply_only_to_matching_apps() -> None:
    """A deny window for other apps, namespaces or clusters does not block this app."""
    other_app = window("deny", "0 22 * * *", "1h", applications=["api-*"])
    other_ns = window("deny", "0 22 * * *", "1h", applications=[], namespaces=["staging"])
    other_cluster = window("deny", "0 22 * * *", "1h", applications=[], clusters=["prod-eu"])
    assert allowed([other_app, other_ns, other_cluster], at(NIGHT))
    by_server = window("deny", "0 22 * * *", "1h", applications=[], clusters=["https://*"])
    assert not allowed([by_server], at(NIGHT), server=IN_CLUSTER_SERVER)


def test_and_operator_requires_every_selector() -> None:
    """With andOperator a window applies only when app and namespace both match."""
    w = window("deny", "0 22 * * *", "1h", applications=["web"], namespaces=["staging"])
    assert not allowed([w], at(NIGHT))  # OR: the app name matches
    anded = window(
        "deny", "0 22 * * *", "1h", applications=["web"], namespaces=["staging"], andOperator=True
    )
    assert allowed([anded], at(NIGHT))


def test_sync_overrun_lets_a_running_sync_finish() -> None:
    """A sync started inside an allow window with syncOverrun may continue after it closes."""
    overrun = window("allow", "0 9 * * *", "1h", syncOverrun=True)
    plain = window("allow", "0 9 * * *", "1h")
    started = at("2024-05-13T09:50:00")
    later = at("2024-05-13T10:10:00")
    assert allowed([overrun], later, started_at=started)
    assert not allowed([overrun], later)
    assert not allowed([plain], later, started_at=started)
    assert not allowed([overrun], later, started_at=started - timedelta(hours=2))


# --- roles ---------------------------------------------------------------------------------


def can(projects: list[AppProject], groups: list[str], action: str, app: str) -> bool:
    """authorize() for an app given as `<project>/<name>`."""
    proj, name = app.split("/")
    return authorize(projects, groups=groups, action=action, app_project=proj, app_name=name)


def test_seed_roles_map_groups_to_policies(tenant_a: AppProject) -> None:
    """Developers may get and sync tenant-a apps but not delete; admins may do anything."""
    dev, admin = ["tenant-a-developer-group"], ["tenant-a-admin-group"]
    assert can([tenant_a], dev, "get", "tenant-a/web")
    assert can([tenant_a], dev, "sync", "tenant-a/web")
    assert not can([tenant_a], dev, "delete", "tenant-a/web")
    assert can([tenant_a], admin, "delete", "tenant-a/web")
    assert not can([tenant_a], ["someone-else"], "get", "tenant-a/web")
    assert not can([tenant_a], admin, "get", "tenant-b/web")


def test_seed_roles_parse_with_subjects(tenant_a: AppProject) -> None:
    """parse_roles returns each seed role with its casbin subject, policies and groups."""
    roles = {r.name: r for r in parse_roles(tenant_a)}
    dev = roles["tenant-a-developer"]
    assert dev.subject == "proj:tenant-a:tenant-a-developer"
    assert [p.action for p in dev.policies] == ["get", "sync"]
    assert dev.groups == ("tenant-a-developer-group",)


def roles_project(*roles: dict[str, Any]) -> AppProject:
    """A tenant-a project with the given roles."""
    return project("tenant-a", roles=list(roles))


def test_deny_wins_over_allow() -> None:
    """A deny policy matching the request overrides an allow, even from another role."""
    p = roles_project(
        {
            "name": "ops",
            "policies": [
                "p, proj:tenant-a:ops, applications, *, tenant-a/*, allow",
                "p, proj:tenant-a:ops, applications, delete, tenant-a/prod-*, deny",
            ],
            "groups": ["ops"],
        },
        {
            "name": "freeze",
            "policies": ["p, proj:tenant-a:freeze, applications, sync, tenant-a/*, deny"],
            "groups": ["frozen"],
        },
    )
    assert not can([p], ["ops"], "delete", "tenant-a/prod-db")
    assert can([p], ["ops"], "delete", "tenant-a/dev-db")
    assert can([p], ["ops"], "sync", "tenant-a/dev-db")
    assert not can([p], ["ops", "frozen"], "sync", "tenant-a/dev-db")


def test_glob_objects_and_actions() -> None:
    """Policy objects and actions are globs: `web-*` and `action/*` match what they cover only."""
    p = roles_project(
        {
            "name": "web",
            "policies": [
                "p, proj:tenant-a:web, applications, get, tenant-a/web-*, allow",
                "p, proj:tenant-a:web, applications, action/*, tenant-a/web-*, allow",
            ],
            "groups": ["web"],
        }
    )
    assert can([p], ["web"], "get", "tenant-a/web-1")
    assert not can([p], ["web"], "get", "tenant-a/api")
    assert can([p], ["web"], "action/apps/Deployment/restart", "tenant-a/web-1")
    assert not can([p], ["web"], "sync", "tenant-a/web-1")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("p, proj:tenant-b:dev, applications, get, tenant-b/*, allow", "subject must be"),
        ("p, proj:tenant-a:dev, applications, get, tenant-b/*, allow", "object must be"),
        ("p, proj:tenant-a:dev, applications, get, tenant-a/*", "must be of the form"),
        ("p, proj:tenant-a:dev, applications, launch, tenant-a/*, allow", "invalid action"),
        ("p, proj:tenant-a:dev, accounts, get, tenant-a/*, allow", "project resource"),
        ("p, proj:tenant-a:dev, applications, get, tenant-a/*, maybe", "effect must be"),
    ],
)
def test_invalid_policy_lines_are_refused(line: str, fragment: str) -> None:
    """Bad policy lines, including ones reaching into another project, raise ValueError naming
    the project and role."""
    p = roles_project({"name": "dev", "policies": [line], "groups": ["g"]})
    with pytest.raises(ValueError, match=fragment) as err:
        parse_roles(p)
    assert "AppProject/tenant-a" in str(err.value)
    assert "role dev" in str(err.value)


def test_invalid_role_name_is_refused() -> None:
    """A role name with characters outside Argo CD's pattern is refused."""
    with pytest.raises(ValueError, match="invalid role name 'dev team'"):
        parse_roles(roles_project({"name": "dev team"}))


def test_project_with_invalid_roles_grants_nothing() -> None:
    """authorize() ignores a project whose roles are invalid, as Argo CD falls back."""
    p = roles_project(
        {
            "name": "dev",
            "policies": [
                "p, proj:tenant-a:dev, applications, *, tenant-a/*, allow",
                "p, proj:tenant-b:dev, applications, *, tenant-b/*, allow",
            ],
            "groups": ["g"],
        }
    )
    assert not can([p], ["g"], "get", "tenant-a/web")


def test_a_namespace_the_sync_creates_needs_the_cluster_rule_and_a_destination() -> None:
    """`namespace_violation` (CreateNamespace=true): refused by the cluster whitelist or
    blacklist like a Namespace manifest (naming Namespace/<name>), and by destinations."""
    here = ClusterConfig(IN_CLUSTER_NAME, IN_CLUSTER_SERVER)
    dest = [{"server": IN_CLUSTER_SERVER, "namespace": "team-*"}]
    none = namespace_violation(project(destinations=dest), here, "team-a")
    assert none is not None and none.rule == "clusterResourceWhitelist"
    assert "Namespace/team-a" in none.message and "project p" in none.message
    ok = project(destinations=dest, clusterResourceWhitelist=[{"group": "", "kind": "Namespace"}])
    assert namespace_violation(ok, here, "team-a") is None
    outside = namespace_violation(ok, here, "other")
    assert outside is not None and outside.rule == "destinations"
    black = project(
        destinations=dest,
        clusterResourceWhitelist=[{"group": "*", "kind": "*"}],
        clusterResourceBlacklist=[{"group": "", "kind": "Namespace", "name": "team-x"}],
    )
    refused = namespace_violation(black, here, "team-x")
    assert refused is not None and refused.rule == "clusterResourceBlacklist"
