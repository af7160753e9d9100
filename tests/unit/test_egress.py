"""The analysis allow-list and the job and redaction rules (pure, no network)."""

from __future__ import annotations

import ipaddress

import pytest

from daemon.rollouts.egress import EgressError, Policy, job_refusal, parse_entries, redact
from daemon.rollouts.policy import own_api

LOOP = ipaddress.ip_address("127.0.0.1")
META = ipaddress.ip_address("169.254.169.254")
PUBLIC = ipaddress.ip_address("203.0.113.7")


def policy(*entries: str, listen: str = "127.0.0.1:8080") -> Policy:
    return Policy(
        owner="t", entries=parse_entries(list(entries), where="t"), own_api=own_api(listen)
    )


def test_nothing_is_allowed_without_an_entry() -> None:
    """An empty allow-list refuses every address, naming where to allow it."""
    why = policy().url_refusal("http://prom.example:9090/api", PUBLIC, local=False)
    assert "not in the allowed analysis addresses" in why and "allowedAddresses" in why


def test_url_prefix_entries_match_scheme_host_port_and_path() -> None:
    """A URL entry matches its scheme, host, port (default by scheme) and path prefix only."""
    p = policy("https://prom.example/api/", "http://*.mon.example:9090")
    assert p.url_refusal("https://prom.example/api/v1/query", PUBLIC, local=False) == ""
    assert p.url_refusal("https://prom.example:443/api/x", PUBLIC, local=False) == ""
    assert p.url_refusal("http://prom.example/api/v1", PUBLIC, local=False)
    assert p.url_refusal("https://prom.example/other", PUBLIC, local=False)
    assert p.url_refusal("https://evil.example/api/", PUBLIC, local=False)
    assert p.url_refusal("http://a.mon.example:9090/x", PUBLIC, local=False) == ""
    assert p.url_refusal("http://a.mon.example:9091/x", PUBLIC, local=False)


def test_wildcards_never_reach_loopback_link_local_or_the_daemon() -> None:
    """`*`, `*.x` and 0.0.0.0/0 do not reach loopback, cloud metadata or the own API; an
    entry naming them does (the own API only with its exact host and port)."""
    for wide in ("http://*:*", "0.0.0.0/0"):
        p = policy(wide)
        assert "loopback" in p.url_refusal("http://127.0.0.1:9090/", LOOP, local=True)
        assert "link-local" in p.url_refusal("http://169.254.169.254/", META, local=False)
        assert p.url_refusal("http://203.0.113.7/", PUBLIC, local=False) == ""
    assert (
        policy("http://127.0.0.1:9090").url_refusal("http://127.0.0.1:9090/", LOOP, local=True)
        == ""
    )
    assert policy("127.0.0.0/8").url_refusal("http://127.0.0.1:9090/", LOOP, local=True) == ""
    own = policy("127.0.0.0/8").url_refusal("http://127.0.0.1:8080/api", LOOP, local=True)
    assert "the daemon's own API" in own
    assert (
        policy("http://127.0.0.1:8080").url_refusal("http://127.0.0.1:8080/", LOOP, local=True)
        == ""
    )


def test_an_api_on_every_address_is_protected_on_each_local_one() -> None:
    """Listening on 0.0.0.0, the API's port on any of the host's addresses is refused."""
    p = policy("10.0.0.0/8", listen="0.0.0.0:8080")
    host = ipaddress.ip_address("10.1.2.3")
    assert "own API" in p.url_refusal("http://10.1.2.3:8080/", host, local=True)
    assert p.url_refusal("http://10.1.2.3:8080/", host, local=False) == ""
    assert p.url_refusal("http://10.1.2.3:9090/", host, local=True) == ""


def test_bad_entries_are_refused_naming_them() -> None:
    """An entry that is neither an http(s) URL nor a network is an error naming it."""
    with pytest.raises(EgressError, match="ftp://x"):
        parse_entries(["ftp://x"], where="settings")
    assert len(parse_entries(["http://a, 10.0.0.0/8  https://b"], where="x")) == 3


def test_job_pods_may_not_reach_into_the_node() -> None:
    """Host namespaces, hostPath, hostPort and privileged containers are refused."""

    def job(**pod: object) -> dict[str, object]:
        return {"spec": {"template": {"spec": {"containers": [{"name": "c"}], **pod}}}}

    assert job_refusal(job()) == ""
    assert "hostNetwork" in job_refusal(job(hostNetwork=True))
    assert "hostPath" in job_refusal(job(volumes=[{"name": "r", "hostPath": {"path": "/"}}]))
    priv = job(containers=[{"name": "c", "securityContext": {"privileged": True}}])
    assert "privileged" in job_refusal(priv)
    port = job(containers=[{"name": "c", "ports": [{"containerPort": 1, "hostPort": 80}]}])
    assert "hostPort" in job_refusal(port)
    caps = job(
        containers=[{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]
    )
    assert "capabilities" in job_refusal(caps)
    assert "nodeName" in job_refusal(job(nodeName="edge-1"))
    escalate = job(
        containers=[{"name": "c", "securityContext": {"allowPrivilegeEscalation": True}}]
    )
    assert "escalation" in job_refusal(escalate)


def test_redaction_hides_secrets_headers_and_passwords() -> None:
    """What an echoing endpoint sends back loses secret values, header values and passwords."""
    provider = {
        "web": {
            "headers": [{"key": "Authorization", "value": "Bearer tok-123456"}],
            "authentication": {"basicAuth": {"username": "u", "password": "pw-secret"}},
        }
    }
    text = '{"auth": "Bearer tok-123456", "pw": "pw-secret", "arg": "hunter2", "ok": 1}'
    out = redact(text, provider, {"db": "hunter2"})
    assert "tok-123456" not in out and "pw-secret" not in out and "hunter2" not in out
    assert '"ok": 1' in out


def test_an_echo_of_a_secret_in_any_encoding_is_caught() -> None:
    """Raw, JSON-escaped, URL-encoded, quoted and base64 forms of a secret (or of the
    basic-auth `user:password`) count as a repeat; unrelated text does not."""
    from urllib.parse import quote

    from daemon.rollouts.egress import repeats_secret

    secret = 'Tr0ub4dor&3 "x"\\q'
    provider = {"web": {"authentication": {"basicAuth": {"username": "u", "password": "pw-123"}}}}
    args = {"token": secret}
    for form in (
        secret,
        '"Tr0ub4dor&3 \\"x\\"\\\\q"',
        quote(secret, safe=""),
        "Basic dTpwdy0xMjM=",
    ):
        assert repeats_secret(form, provider, args), form
    assert not repeats_secret('{"ok": true}', provider, args)


def test_dot_segments_ipv4_mapped_and_wide_networks_do_not_pass() -> None:
    """`%2e%2e` segments are refused; `::ffff:127.0.0.1` is the own API; a network entry
    names loopback only when it lies inside loopback; `/api` does not cover `/api-x`."""
    p = policy("http://10.0.0.1/api", listen="127.0.0.1:8080")
    ten = ipaddress.ip_address("10.0.0.1")
    assert "dot segments" in p.url_refusal("http://10.0.0.1/api/%2e%2e/admin", ten, local=False)
    assert p.url_refusal("http://10.0.0.1/api-x", ten, local=False)
    assert p.url_refusal("http://10.0.0.1/api/v1", ten, local=False) == ""
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    wide = policy("::ffff:0:0/96")
    assert wide.url_refusal("http://[::ffff:127.0.0.1]:8080/", mapped, local=True)
    assert policy("0.0.0.0/1").url_refusal("http://127.0.0.1:9090/", LOOP, local=True)
