"""Argo CD notifications as written (argocd-notifications-cm, -secret, subscribe annotations)
delivered by a running daemon to real loopback receivers: an HTTP server standing in for a
webhook endpoint and Slack's API, a real SMTP server (aiosmtpd), and Apprise's JSON target."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.conftest import Cluster, GitRepo, application, wait_for, write_config
from tests.integration.test_daemon import running
from tests.integration.test_sync import configmap, get
from tests.testenv.cluster import free_port

pytestmark = pytest.mark.cluster


class Receiver:
    """An HTTP server on 127.0.0.1 recording every request; `fail` answers 500 that many times."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size).decode() if size else ""
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                answer = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, prefix: str) -> list[dict[str, Any]]:
        """Requests whose path starts with `prefix`."""
        return [r for r in self.requests if r["path"].startswith(prefix)]


class Mailbox:
    """aiosmtpd's handler: keeps every message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            {"to": list(envelope.rcpt_tos), "content": envelope.content.decode(errors="replace")}
        )
        return "250 OK"


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Mailbox, int]]:
    """An HTTP receiver and an SMTP server, both on loopback."""
    http_receiver = Receiver()
    box = Mailbox()
    port = free_port()
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        yield http_receiver, box, port
    finally:
        smtp.stop()
        http_receiver.server.shutdown()


def notifications_cm(url: str, smtp_port: int) -> list[dict[str, Any]]:
    """argocd-notifications-cm and -secret as an Argo CD user writes them."""
    data = {
        "context": "argocdUrl: https://gitopsd.example\n",
        "service.webhook.hooks": yaml.safe_dump(
            {
                "url": f"{url}/hook",
                "headers": [{"name": "X-Source", "value": "gitopsd"}],
                "basicAuth": {"username": "bot", "password": "$hook-password"},
            }
        ),
        "service.slack": yaml.safe_dump({"token": "$slack-token", "apiURL": f"{url}/slack/"}),
        "service.webhook.dead": yaml.safe_dump({"url": "http://127.0.0.1:9/nobody"}),
        "service.slack.incoming": yaml.safe_dump({"webhookURL": f"{url}/incoming"}),
        "service.email.mail": yaml.safe_dump(
            {"host": "127.0.0.1", "port": smtp_port, "from": "gitopsd@example.com"}
        ),
        "service.apprise.ntfy": yaml.safe_dump(
            {"urls": [f"json://127.0.0.1:{url.rsplit(':', 1)[1]}/apprise"]}
        ),
        "template.deployed-hook": yaml.safe_dump(
            {
                "message": "deployed {{.app.metadata.name}}",
                "webhook": {
                    "hooks": {
                        "method": "POST",
                        "path": "/deployed/{{.app.metadata.name}}",
                        "body": '{"app": "{{.app.metadata.name}}", '
                        '"revision": "{{.app.status.sync.revision}}"}',
                    }
                },
            }
        ),
        # An Argo CD catalog-style Slack template: attachments built with range over conditions.
        "template.sync-failed-slack": yaml.safe_dump(
            {
                "message": '{{if eq .serviceType "slack"}}:x:{{end}} {{.app.metadata.name}} '
                "failed: {{.app.status.operationState.message}}",
                "slack": {
                    "attachments": '[{"title": "{{.app.metadata.name}}", "fields": [\n'
                    '{"title": "Sync Status", "value": "{{.app.status.sync.status}}"}\n'
                    "{{range $index, $c := .app.status.conditions}},\n"
                    '{"title": "{{$c.type}}", "value": {{toJson $c.message}}}{{end}}\n]}]'
                },
            }
        ),
        "trigger.on-deployed-hook": yaml.safe_dump(
            [
                {
                    "when": "app.status.operationState != nil and "
                    "app.status.operationState.phase in ['Succeeded'] and "
                    "app.status.health.status == 'Healthy'",
                    "oncePer": "app.status.sync.revision",
                    "send": ["deployed-hook"],
                }
            ]
        ),
        "trigger.on-sync-failed-slack": yaml.safe_dump(
            [
                {
                    "when": "app.status.operationState != nil and "
                    "app.status.operationState.phase in ['Error', 'Failed']",
                    "send": ["sync-failed-slack"],
                }
            ]
        ),
    }
    secret = {
        "hook-password": base64.b64encode(b"s3cret").decode(),
        "slack-token": base64.b64encode(b"xoxb-test").decode(),
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-notifications-cm"},
            "data": data,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-notifications-secret"},
            "data": secret,
        },
    ]


def subscribed(app: dict[str, Any], **subs: str) -> dict[str, Any]:
    """`app` with notifications.argoproj.io/subscribe.<trigger>.<service> annotations."""
    app["metadata"]["annotations"] = {
        f"notifications.argoproj.io/subscribe.{key}": value for key, value in subs.items()
    }
    return app


def test_triggers_deliver_once_to_every_service(
    cluster: Cluster,
    namespace: str,
    git_repo: GitRepo,
    tmp_path: Path,
    receivers: tuple[Receiver, Mailbox, int],
) -> None:
    """Built-in and custom triggers deliver to webhook (headers, basic auth, path and body
    from the template), Slack (token, channel, range-built attachments; an incoming webhook),
    email and Apprise; a webhook answering 500 once is retried, an unreachable one is a
    failed-delivery metric and a log line; nothing is sent twice (also over a restart); a new
    revision deploys again (oncePer); a failing sync and a Degraded app notify."""
    http_rx, box, smtp_port = receivers
    git_repo.write(
        {
            "ok/cm.yaml": configmap("note-ok", data="v1"),
            "bad/svc.yaml": (
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: note-bad\n"
                "spec:\n  ports:\n    - port: 70000\n"
            ),
            "sick/cm.yaml": configmap("note-sick", data="fine"),
        }
    )
    ok = subscribed(
        application("note-ok", git_repo.url, "ok", namespace),
        **{
            "on-sync-succeeded.slack": "deploys",
            "on-deployed-hook.hooks": "",
            "on-deployed.mail": "ops@example.com;dev@example.com",
            "on-sync-running.ntfy": "",
            "on-sync-succeeded.dead": "",
            "on-sync-succeeded.incoming": "#deploys",
        },
    )
    bad = subscribed(
        application("note-bad", git_repo.url, "bad", namespace),
        **{"on-sync-failed-slack.slack": "alerts", "on-sync-failed.mail": "ops@example.com"},
    )
    sick = subscribed(
        application("note-sick", git_repo.url, "sick", namespace),
        **{"on-health-degraded.slack": "alerts"},
    )
    cfg = write_config(tmp_path, cluster, [ok, bad, sick], reconcileInterval="2s")
    (tmp_path / "apps" / "notifications.yaml").write_text(
        yaml.safe_dump_all(notifications_cm(http_rx.url, smtp_port))
    )
    health = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\ndata:\n"
        "  resource.customizations.health._ConfigMap: |\n"
        "    hs = {status = 'Healthy'}\n"
        "    if obj.data ~= nil and obj.data.key == 'broken' then\n"
        "      hs.status = 'Degraded'\n      hs.message = 'key is broken'\n    end\n"
        "    return hs\n"
    )
    (tmp_path / "apps" / "argocd-cm.yaml").write_text(health)
    http_rx.fail = 1  # the first delivery attempt gets a 500: retried

    def slack(channel: str) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in http_rx.at("/slack/") if channel in r["body"]]

    with running(cfg) as d:
        wait_for(lambda: len(http_rx.at("/hook/deployed/note-ok")) == 1, timeout=60, what="hook")
        hook = http_rx.at("/hook/deployed/note-ok")[0]
        assert hook["method"] == "POST" and hook["headers"]["X-Source"] == "gitopsd"
        assert (
            hook["headers"]["Authorization"] == "Basic " + base64.b64encode(b"bot:s3cret").decode()
        )
        assert json.loads(hook["body"])["revision"] == d.status("note-ok")["sync"]["revision"]

        wait_for(lambda: slack("deploys"), timeout=30, what="slack on-sync-succeeded")
        (msg,) = slack("deploys")
        assert "note-ok synced revision" in msg["text"]
        assert http_rx.at("/slack/chat.postMessage")[0]["headers"]["Authorization"] == (
            "Bearer xoxb-test"
        )

        def deployed_mail() -> list[dict[str, Any]]:
            return [m for m in box.messages if "Subject: Deployed: note-ok" in m["content"]]

        wait_for(lambda: http_rx.at("/incoming"), timeout=30, what="slack incoming webhook")
        incoming = json.loads(http_rx.at("/incoming")[0]["body"])
        assert incoming["channel"] == "#deploys" and "note-ok synced" in incoming["text"]
        wait_for(lambda: len(deployed_mail()) == 2, timeout=30, what="on-deployed mail")
        assert sorted(r for m in deployed_mail() for r in m["to"]) == [
            "dev@example.com",
            "ops@example.com",
        ]
        wait_for(lambda: http_rx.at("/apprise"), timeout=30, what="apprise on-sync-running")
        assert "note-ok" in json.loads(http_rx.at("/apprise")[0]["body"])["message"]

        wait_for(lambda: slack("alerts"), timeout=60, what="slack on-sync-failed")
        failed = next(m for m in slack("alerts") if "note-bad" in m["text"])
        assert failed["text"].startswith(":x: note-bad failed")
        fields = failed["attachments"][0]["fields"]
        assert fields[0] == {"title": "Sync Status", "value": "OutOfSync"}
        assert any(f["title"] == "SyncError" for f in fields[1:]), fields
        wait_for(
            lambda: any("Sync failed: note-bad" in m["content"] for m in box.messages),
            timeout=30,
            what="mail on-sync-failed",
        )

        git_repo.write({"sick/cm.yaml": configmap("note-sick", data="broken")})
        wait_for(
            lambda: any("note-sick is Degraded" in m["text"] for m in slack("alerts")),
            timeout=60,
            what="slack on-health-degraded",
        )
        counts = (len(http_rx.requests), len(box.messages))
        assert http_rx.fail == 0, "the 500 was answered and the delivery retried"
        metrics = d.api("/metrics").text
        assert 'argocd_notifications_deliveries_total{notifier="hooks",succeeded="true"' in metrics
        wait_for(
            lambda: 'notifier="dead",succeeded="false"' in d.api("/metrics").text,
            timeout=30,
            what="an unreachable service counted as failed after its retries",
        )
        assert "notification failed" in d.logs()

    with running(cfg) as d:  # a restart sends nothing again
        wait_for(lambda: d.synced("note-ok"), timeout=60, what="note-ok after restart")
        import time

        time.sleep(6)
        assert (len(http_rx.requests), len(box.messages)) == counts, "sent again after restart"

        git_repo.write({"ok/cm.yaml": configmap("note-ok", data="v2")})
        wait_for(
            lambda: len(http_rx.at("/hook/deployed/note-ok")) == 2, timeout=60, what="redeploy"
        )
        wait_for(lambda: len(slack("deploys")) == 2, timeout=30, what="synced again")


def test_a_hanging_smtp_server_holds_up_neither_syncs_other_services_nor_shutdown(
    cluster: Cluster, namespace: str, git_repo: GitRepo, tmp_path: Path
) -> None:
    """An SMTP server that answers a byte at a time (no per-read timeout ever trips): the app
    keeps syncing new revisions, the webhook subscribed to the same trigger is delivered, and
    SIGTERM stops the daemon at once instead of waiting for the server."""
    import signal
    import time

    from tests.hostile.test_notify_receivers import Hostile

    def drip(srv: Hostile, conn: Any) -> None:
        srv.drip(conn, b"220-almost ready\r\n", seconds=120)

    smtp, http_rx = Hostile(drip), Receiver()
    try:
        git_repo.write({"app/cm.yaml": configmap("hang", data="v1")})
        app = subscribed(
            application("hang", git_repo.url, "app", namespace),
            **{"on-deployed.mail": "ops@example.com", "on-deployed.hooks": ""},
        )
        cfg = write_config(tmp_path, cluster, [app], reconcileInterval="2s")
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-notifications-cm"},
            "data": {
                "service.email.mail": yaml.safe_dump(
                    {"host": "127.0.0.1", "port": smtp.port, "from": "g@example.com"}
                ),
                "service.webhook.hooks": yaml.safe_dump({"url": f"{http_rx.url}/hook"}),
            },
        }
        (tmp_path / "apps" / "notifications.yaml").write_text(yaml.safe_dump(cm))
        with running(cfg) as d:
            wait_for(lambda: smtp.connections >= 1, timeout=60, what="the SMTP connection")
            wait_for(lambda: http_rx.at("/hook"), timeout=30, what="the webhook, meanwhile")
            git_repo.write({"app/cm.yaml": configmap("hang", data="v2")})
            wait_for(
                lambda: (
                    (get(cluster, namespace, "cm/hang") or {}).get("data", {}).get("key") == "v2"
                ),
                timeout=60,
                what="the next revision synced while the SMTP server hangs",
            )
            assert smtp.open >= 1, "the hanging SMTP delivery ended early: nothing was proven"
            started = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(90)
            took = time.monotonic() - started
        assert took < 15, f"the daemon took {took:.0f} s to stop behind the SMTP server"
    finally:
        smtp.close()
        http_rx.server.shutdown()
