"""The notifications engine without a daemon: argocd-notifications-cm parsing, subscriptions
from annotations and the ConfigMap, send-once records, oncePer, and template rendering."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.errors import ConfigError
from daemon.notify import config, engine


def cfg(**data: str) -> config.Notifications:
    """A parsed ConfigMap with a slack service and `data`."""
    return config.parse(
        {"service.slack": "token: $tok", **data}, {"tok": "xoxb"}, where="n.yaml", warnings=[]
    )


def app(phase: str = "", revision: str = "abc", **annotations: str) -> dict[str, Any]:
    """An Argo CD-shaped app whose last operation ended in `phase`."""
    status: dict[str, Any] = {"sync": {"status": "Synced", "revision": revision}}
    status["health"] = {"status": "Healthy"}
    if phase:
        status["operationState"] = {"phase": phase, "message": "done"}
    return {
        "metadata": {
            "name": "web",
            "labels": {"team": "a"},
            "annotations": {
                f"notifications.argoproj.io/subscribe.{k}": v for k, v in annotations.items()
            },
        },
        "status": status,
    }


def test_a_trigger_sends_once_until_its_condition_turns_false() -> None:
    """True then true again: one notification; false drops the record; true again sends."""
    c = cfg()
    subscribed = {"on-sync-succeeded.slack": "ch1;ch2"}
    first = engine.decide(c, app("Succeeded", **subscribed), {}, now=1)
    assert [n.destination.recipient for n in first.send] == ["ch1", "ch2"]
    assert "web synced revision abc" in first.send[0].templates[0]["message"]
    again = engine.decide(c, app("Succeeded", **subscribed), first.notified, now=2)
    assert again.send == ()
    off = engine.decide(c, app("Running", **subscribed), again.notified, now=3)
    assert off.send == () and off.notified == {}
    assert len(engine.decide(c, app("Succeeded", **subscribed), off.notified).send) == 2


def test_once_per_sends_once_per_value_and_keeps_the_record() -> None:
    """on-deployed (oncePer revision): once per revision, also after the condition flips."""
    c = cfg()
    sub = {"on-deployed.slack": "ch"}
    first = engine.decide(c, app("Succeeded", "r1", **sub), {})
    flipped = engine.decide(c, app("Running", "r1", **sub), first.notified)
    assert flipped.notified == first.notified
    assert engine.decide(c, app("Succeeded", "r1", **sub), flipped.notified).send == ()
    assert len(engine.decide(c, app("Succeeded", "r2", **sub), flipped.notified).send) == 1


def test_default_subscriptions_and_triggers_and_errors() -> None:
    """ConfigMap subscriptions with a selector and defaultTriggers; `subscribe.<service>`
    uses the default triggers; an unknown trigger is reported, not raised."""
    c = cfg(
        defaultTriggers="[on-sync-failed]",
        subscriptions="- recipients: [slack:ops]\n  selector: team=a\n"
        "- recipients: [slack:nobody]\n  selector: team=b\n",
    )
    got = engine.decide(c, app("Failed", **{"slack": "dev", "on-nope.slack": "x"}), {})
    assert sorted(n.destination.recipient for n in got.send) == ["dev", "ops"]
    assert got.errors == ("trigger 'on-nope' is not defined",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"service.webhook.h": "url: $missing"}, r"\$missing is not a key of"),
        ({"trigger.t": "- when: 'true'\n  send: [nope]"}, r"template 'nope' is not defined"),
        ({"subscriptions": "- recipients: [teams:x]"}, r"'teams:x' names no configured"),
    ],
)
def test_bad_notification_config_is_refused(data: dict[str, str], message: str) -> None:
    """Every broken key is a ConfigError naming the ConfigMap key."""
    with pytest.raises(ConfigError, match=message):
        cfg(**data)


def test_catalog_style_templates_render() -> None:
    """What Argo CD's catalog templates use: `if eq .serviceType`, `range $i, $c :=` over
    conditions, `(index .app.spec.sources 0).repoURL`, whitespace trimming, `.context`."""
    template = (
        '{{if eq .serviceType "slack"}}:ok:{{end}} {{.app.metadata.name}} from '
        "{{- if .app.spec.source }} {{.app.spec.source.repoURL}}"
        "{{- else }} {{(index .app.spec.sources 0).repoURL}}{{- end }} "
        "{{range $i, $c := .app.status.conditions}}[{{$i}} {{$c.type}}]{{end}} "
        "{{.context.argocdUrl}}"
    )
    c = cfg(**{"template.custom": f"message: '{template}'", "context": "argocdUrl: https://x"})
    c = config.Notifications(
        c.services,
        c.templates,
        {"t": (config.Condition("true", ("custom",)),)},
        (),
        (),
        c.context,
        c.source,
    )
    doc = app("Succeeded", **{"t.slack": "ch"})
    doc["spec"] = {"sources": [{"repoURL": "https://git.example/a.git"}]}
    doc["status"]["conditions"] = [{"type": "SyncError"}, {"type": "OrphanedResourceWarning"}]
    (note,) = engine.decide(c, doc, {}).send
    assert note.templates[0]["message"] == (
        ":ok: web from https://git.example/a.git [0 SyncError][1 OrphanedResourceWarning] https://x"
    )


def test_once_per_records_are_capped_per_trigger_never_across() -> None:
    """Many deployed revisions evict only their own oldest records; on-created's one record
    stays, so "created" is never sent twice."""
    c = cfg()
    sub = {"on-deployed.slack": "ch", "on-created.slack": "ch"}
    records = engine.decide(c, app("Succeeded", "r0", **sub), {}, now=0).notified
    for i in range(1, engine.MAX_ONCE_PER_RECORDS + 20):
        records = engine.decide(c, app("Succeeded", f"r{i}", **sub), records, now=i).notified
    created = [k for k in records if k.startswith("once/on-created")]
    deployed = [k for k in records if k.startswith("once/on-deployed")]
    assert len(created) == 1 and len(deployed) == engine.MAX_ONCE_PER_RECORDS
    again = engine.decide(c, app("Succeeded", "r1", **sub), records)
    assert [n.trigger for n in again.send] == ["on-deployed"], "an evicted revision only"


def test_a_template_that_cannot_render_is_an_error_not_a_crash() -> None:
    """A template failing for this app (a bad trunc argument) is reported in errors."""
    c = cfg(**{"template.bad": "message: '{{trunc \"x\" .app.metadata.name}}'"})
    c = config.Notifications(
        c.services, c.templates, {"t": (config.Condition("true", ("bad",)),)}, (), (), {}, "n"
    )
    decision = engine.decide(c, app("Succeeded", **{"t.slack": "ch"}), {})
    assert decision.send == () and "trigger t" in decision.errors[0]


def test_what_gitopsd_cannot_do_is_warned_not_fatal() -> None:
    """An Argo CD ConfigMap as written still loads: a service type gitopsd does not deliver
    to (its subscriptions are skipped) and a condition outside gitopsd's expression subset
    (never evaluated, reported) are warnings, not a refused config."""
    warnings: list[str] = []
    c = config.parse(
        {
            "service.slack": "token: x",
            "service.teams": "recipientUrls: {ch: https://example.invalid/hook}",
            "trigger.on-stuck": "- when: time.Now().Sub(time.Parse(app.x)).Minutes() >= 5\n"
            "  send: [app-sync-running]\n",
            "subscriptions": "- recipients: [teams:ch]\n  triggers: [on-sync-succeeded]\n",
        },
        {},
        where="n.yaml",
        warnings=warnings,
    )
    assert any("does not deliver to service type 'teams'" in w for w in warnings)
    assert any("trigger.on-stuck" in w and "never evaluated" in w for w in warnings)
    got = engine.decide(c, app("Succeeded", **{"on-stuck.slack": "x"}), {})
    assert got.send == ()
    assert any("cannot be evaluated" in e for e in got.errors)


def test_a_rendered_notification_is_bounded() -> None:
    """App data a tenant writes (an annotation), repeated by a template's range, cannot make
    a notification of more than MAX_RENDERED characters: it is an error, nothing is sent."""
    c = cfg(
        **{
            "template.app-sync-succeeded": "message: |\n  {{range .app.status.conditions}}"
            '{{index $.app.metadata.annotations "note"}}{{end}}\n'
        }
    )
    subscribed = {"on-sync-succeeded.slack": "ch"}

    def with_note(size: int) -> dict[str, Any]:
        a = app("Succeeded", **subscribed)
        a["metadata"]["annotations"]["note"] = "x" * size
        a["status"]["conditions"] = [{"type": "Warning", "message": "m"}] * 100
        return a

    small = engine.decide(c, with_note(100), {})
    assert len(small.send) == 1 and len(small.send[0].templates[0]["message"]) >= 10_000
    big = engine.decide(c, with_note(10_000), {})
    assert big.send == ()
    assert any("over 262144 characters" in e for e in big.errors), big.errors


def test_annotation_subscriptions_are_bounded_per_app() -> None:
    """An app's annotations (a tenant's) listing 1,000 recipients make at most
    MAX_ANNOTATION_SUBSCRIPTIONS notifications and send-once records, and say so."""
    many = ";".join(f"ch{i}" for i in range(1000))
    decision = engine.decide(cfg(), app("Succeeded", **{"on-sync-succeeded.slack": many}), {})
    assert (len(decision.send), len(decision.notified)) == (64, 64)
    assert engine.MAX_ANNOTATION_SUBSCRIPTIONS == 64
    assert any("subscribe 1000" in e for e in decision.errors), decision.errors
