"""The removal grace period: pure decisions of `PendingRemovals.settle` on a fake clock."""

from __future__ import annotations

from daemon.removals import PendingRemovals
from daemon.settings import Application, Destination, SyncPolicy


def app(name: str) -> Application:
    return Application(
        name=name,
        namespace="argocd",
        project="default",
        sources=(),
        destination=Destination(server="https://x", namespace="n"),
        sync_policy=SyncPolicy(),
    )


def test_a_missing_app_is_held_until_the_grace_period_then_removed() -> None:
    """Missing at t=0 it is held (noted once); still missing at t=15 it is removed."""
    p, a = PendingRemovals(), app("a")
    first = p.settle({"a": a}, set(), now=0.0, grace=15.0)
    assert first.noted == [a] and first.held == [a] and not first.removed
    again = p.settle({"a": a}, set(), now=5.0, grace=15.0)
    assert again.held == [a] and not again.noted and not again.removed
    assert p.settle({"a": a}, set(), now=15.0, grace=15.0).removed == [a]
    assert not p.since


def test_an_app_back_in_time_is_not_removed_and_zero_grace_removes_at_once() -> None:
    """An app present again stops waiting; with grace 0 nothing is held."""
    p, a = PendingRemovals(), app("a")
    p.settle({"a": a}, set(), now=0.0, grace=15.0)
    assert p.settle({"a": a}, {"a"}, now=10.0, grace=15.0).back == ["a"]
    assert p.settle({"a": a}, set(), now=20.0, grace=15.0).removed == []  # a new wait began
    assert PendingRemovals().settle({"a": a}, set(), now=0.0, grace=0.0).removed == [a]
