"""SECURITY.md rows 41-43: the egress proxy (flow 10) only reaches the provider's configured API
base URLs, forwards no credential of the agent's and returns no cookie of the provider's, and
sends nothing its agent's request policy does not allow.

Driven through the real proxy handler over moto, with the session's token minted at the real
oidc-provider, against its bundled calendar API; a loopback stand-in (tests/support/upstream.py)
plays a provider API where the test must see exactly what the proxy sent, or needs an answer the
calendar never gives (a redirect, cookies, an oversized body, a 401 to a POST).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    assert_problem,
    connected_agent,
    items_of_type,
    unchanged,
)
from tests.support.agent import TestAgent
from tests.support.harness import Vault
from tests.support.upstream import Reply, Seen, Upstream
from vault.models import UserRef, token_context
from vault.proxy import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES

PROXY_ROLE = "proxy-agent-role"
EVENTS = "calendar/events"


def proxy_agent(vault: Vault, user: str = "alice") -> TestAgent:
    """A proxy-delivery agent with a live session and the user's consent at the calendar."""
    return connected_agent(vault, user, role=PROXY_ROLE)


def with_api_bases(vault: Vault, *bases: str) -> None:
    """Redeploy with the calendar provider's API base URLs replaced."""
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    data["providers"]["calendar"]["api_base_urls"] = list(bases)
    vault.redeploy(data)


@pytest.fixture
def api(vault: Vault) -> Iterator[Upstream]:
    """A loopback provider API (echo by default): the calendar provider's only base URL."""
    with Upstream() as stand_in:
        with_api_bases(vault, stand_in.url)
        yield stand_in


def refreshes(vault: Vault) -> int:
    return int(vault.server.stats()["token_requests"].get("refresh_token", 0))


def the_token(seen: Seen) -> str:
    authorization = seen.header("authorization") or ""
    assert authorization.startswith("Bearer "), authorization
    return authorization.removeprefix("Bearer ")


# --- the proxy works, and its token never leaves the vault -----------------------------------


def test_the_proxy_reads_the_calendar_with_the_sessions_token_which_never_leaves_the_vault(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = proxy_agent(vault)
    audit_events.clear()

    answer = agent.proxy("GET", EVENTS, query="day=today&secret=s3cr3t")

    assert answer.status == 200, answer.body
    assert answer.headers["x-agent-vault-proxy"] == "upstream"
    assert [e["title"] for e in answer.json["events"]] == ["Team stand-up", "Quarterly planning"]
    assert answer.json["user"] == "alice"
    (event,) = audit_events.find("proxy.call")
    assert event["outcome"] == "allowed" and event["status"] == 200
    assert (event["method"], event["path"], event["host"]) == ("GET", f"/{EVENTS}", "127.0.0.1")
    assert event["bytes"] == len(answer.body) and isinstance(event["latency_ms"], int)
    assert "s3cr3t" not in str(audit_events.events)  # no query values in the audit trail
    # the agent itself gets no token: proxy delivery
    refused = agent.token("calendar", ["calendar.read"])
    problem = assert_problem(refused, 403, "delivery_proxy_only")
    assert problem["proxy_path"] == f"/v1/sessions/{agent.session_id}/proxy/calendar/"
    (stored,) = items_of_type(vault, "token")
    assert stored["delivery"]["S"] == "proxy"


def test_the_session_answer_says_how_each_provider_is_reached(vault: Vault) -> None:
    proxy = vault.agent(PROXY_ROLE).start_session(vault.user("alice"))
    assert proxy.json["providers"] == {
        "calendar": {"delivery": "proxy", "api_base_urls": [vault.server.calendar_api_base]}
    }
    bearer = vault.agent().start_session(vault.user("alice"))
    assert {name: p["delivery"] for name, p in bearer.json["providers"].items()} == {
        "calendar": "bearer",
        "calendar-post": "bearer",
    }
    dpop = vault.agent("dpop-agent-role").start_session(vault.user("alice"))
    assert dpop.json["providers"]["calendar"]["delivery"] == "dpop"


def test_without_consent_the_proxy_asks_for_it_and_calls_nothing(
    vault: Vault, api: Upstream
) -> None:
    agent = vault.agent(PROXY_ROLE)
    assert agent.start_session(vault.user("alice")).status == 201
    before = refreshes(vault)

    problem = assert_problem(agent.proxy("GET", EVENTS), 403, "consent_required")

    assert problem["reason"] == "no_grant"
    assert problem["missing_scopes"] == ["calendar.read", "calendar.write"]
    assert problem["authorizations_path"] == f"/v1/sessions/{agent.session_id}/authorizations"
    assert api.seen == [] and refreshes(vault) == before


# --- row 41: only the configured base URLs, no traversal, no redirect, no private address ---


ESCAPING_PATHS = (
    "calendar/../admin",
    "calendar/%2e%2e/admin",
    "calendar/%2E%2E/admin",
    "calendar/.%2e/admin",
    "calendar%2f..%2fadmin",
    "./calendar/events",
    "calendar/%2e/events",
    "calendar/%5c..%5cadmin",
    "calendar\\..\\admin",
    "calendar//events",
    "//evil.example/calendar",
    "http://evil.example/calendar",
    "https:%2f%2fevil.example/calendar",
    "%2f%2fevil.example",
    "calendar/%00",
    "calendar/%0d%0aHost:evil",
)
"""Refused at both endpoints: behind API Gateway, which hands the vault the path decoded
(`vault.routes.encoded_path`), and at the function URL, which hands it over as sent."""

AS_SENT_ONLY = ("calendar%2fevents", "calendar%2Fevents", "calendar/%zz", "calendar/a b")
"""Refused where the vault sees the path as sent (the function URL): an encoded `/`, an escape
that is none, a character no path may carry. API Gateway decodes the first two into
`calendar/events` and the others into what the agent's bytes say before the vault sees them."""


@pytest.mark.parametrize("function_url", [False, True], ids=["api_gateway", "function_url"])
def test_row_41_a_path_that_could_leave_the_base_url_is_refused_before_any_call(
    vault: Vault, api: Upstream, audit_events: AuditLog, function_url: bool
) -> None:
    agent = connected_agent(vault, role=PROXY_ROLE, function_url=function_url)
    before = refreshes(vault)
    for path in ESCAPING_PATHS + (AS_SENT_ONLY if function_url else ()):
        audit_events.clear()

        with unchanged(vault):
            answer = agent.proxy("GET", path)

        assert answer.status == 400, path
        assert_problem(answer, 400, "invalid_request")
        assert "x-agent-vault-proxy" not in answer.headers
        audit_events.expect("proxy.call", "denied", reason="invalid_request")
    assert api.seen == [] and refreshes(vault) == before


def test_row_41_behind_api_gateway_an_encoded_slash_is_a_slash_and_stays_under_the_base(
    vault: Vault,
) -> None:
    """What API Gateway decoded cannot be told from what was sent so: `calendar%2Fevents` is
    the path `calendar/events`, checked and forwarded as that, under the base URL."""
    with Upstream() as stand_in:
        with_api_bases(vault, stand_in.url + "/api")
        agent = proxy_agent(vault)
        for path in ("calendar%2fevents", "calendar%2Fevents"):
            assert agent.proxy("GET", path).status == 200, path
        assert [s.target for s in stand_in.seen] == ["/api/calendar/events"] * 2


def test_row_41_another_host_is_reached_only_if_it_is_a_configured_base_url(
    vault: Vault, audit_events: AuditLog
) -> None:
    with Upstream() as first, Upstream() as second, Upstream() as elsewhere:
        with_api_bases(vault, first.url, second.url)
        agent = proxy_agent(vault)

        for asked in (elsewhere.url, second.url + "/", "http://evil.example", first.url + "x"):
            with unchanged(vault):
                problem = assert_problem(
                    agent.proxy("GET", EVENTS, headers={"X-Agent-Vault-Api-Base": asked}),
                    403,
                    "request_not_allowed",
                )
            assert problem["api_base_urls"] == [first.url, second.url]
        assert elsewhere.seen == first.seen == second.seen == []

        assert agent.proxy("GET", EVENTS).status == 200
        answer = agent.proxy("GET", EVENTS, headers={"X-Agent-Vault-Api-Base": second.url})
        assert answer.status == 200
        assert [s.target for s in first.seen] == [f"/{EVENTS}"]
        assert [s.target for s in second.seen] == [f"/{EVENTS}"]
        assert second.seen[0].header("x-agent-vault-api-base") is None
        assert elsewhere.seen == []


@pytest.mark.parametrize(
    ("function_url", "arrives"),
    [
        # API Gateway decodes the path: the vault encodes it again, what needs no escape as itself
        (False, "calendar/events/a%20b/@me;v=1/x-y/%C3%9Cbersicht%25/"),
        (True, "calendar/events/a%20b/@me;v=1/x%2Dy/%C3%9Cbersicht%25/"),
    ],
    ids=["api_gateway", "function_url"],
)
def test_row_41_the_path_and_query_arrive_under_the_base_as_sent(
    vault: Vault, function_url: bool, arrives: str
) -> None:
    """The path (percent-encoded, an escaped `%` and UTF-8 among it) reaches the provider with
    what the agent meant, and its DPoP proof, made for the URL the agent called, holds."""
    with Upstream() as stand_in:
        with_api_bases(vault, stand_in.url + "/api/v3")
        agent = connected_agent(vault, role=PROXY_ROLE, function_url=function_url)
        path = "calendar/events/a%20b/@me;v=1/x%2Dy/%C3%9Cbersicht%25/"
        answer = agent.proxy("GET", path, query="q=a%2Fb&when=2030-01-01&url=http://x/")
        assert answer.status == 200, answer.body
        (seen,) = stand_in.seen
        assert seen.target == f"/api/v3/{arrives}?q=a%2Fb&when=2030-01-01&url=http://x/"
        assert seen.header("host") == stand_in.url.removeprefix("http://")


def test_row_41_a_redirect_from_the_provider_is_never_followed_nor_shown(
    vault: Vault, audit_events: AuditLog
) -> None:
    """To the metadata service or back to the stand-in itself (where following it would show)."""
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    statuses = [301, 302, 303, 307, 308]
    replies = iter(statuses)

    with Upstream(lambda seen: Reply(200)) as stand_in:
        targets = [metadata, f"{stand_in.url}/calendar/elsewhere"]

        def redirect(seen: Seen) -> Reply:
            if seen.target == "/calendar/elsewhere":
                return Reply(200, [("Content-Type", "application/json")], b'{"followed":true}')
            status = next(replies)
            location = targets[status % 2]
            return Reply(status, [("Location", location)], b"see " + location.encode())

        stand_in.answer = redirect
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        for count, status in enumerate(statuses, start=1):
            audit_events.clear()

            answer = agent.proxy("GET", EVENTS)

            problem = assert_problem(answer, 502, "upstream_redirect_refused")
            assert problem["upstream_status"] == status
            assert "location" not in answer.headers
            assert "169.254" not in answer.body and "elsewhere" not in answer.body
            assert "x-agent-vault-proxy" not in answer.headers
            # one request per call, to the configured base: nothing followed
            assert [s.target for s in stand_in.seen] == [f"/{EVENTS}"] * count
            audit_events.expect(
                "proxy.call", "failed", reason="upstream_redirect_refused", status=status
            )


def test_row_41_not_modified_is_no_redirect(vault: Vault) -> None:
    with Upstream(lambda seen: Reply(304, [("ETag", '"v1"')], b"")) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        answer = agent.proxy("GET", EVENTS, headers={"If-None-Match": '"v1"'})
    assert answer.status == 304 and answer.headers["etag"] == '"v1"'
    assert stand_in.seen[0].header("if-none-match") == '"v1"'


REFUSED_BASES = (
    "https://169.254.169.254",  # the instance metadata service
    "https://[fd00:ec2::254]",  # its IPv6 address
    "https://[::ffff:169.254.169.254]",  # IPv4-mapped
    "https://10.0.0.1:8443",
    "https://192.168.1.10",
    "https://100.64.0.1",  # shared address space
    "https://0.0.0.0",
    "https://localhost:9",
    "loopback",  # the real calendar API, on 127.0.0.1
)


def test_row_41_a_private_or_metadata_address_is_refused_outside_local_mode(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = proxy_agent(vault)
    assert agent.proxy("GET", EVENTS).status == 200  # loopback allowed: the suite's setting
    deployed = vault.services.settings.model_copy(update={"egress_allow_loopback": False})
    config = vault.services.config.model_dump(mode="json", exclude_none=True)
    for base in REFUSED_BASES:
        if base != "loopback":
            config["providers"]["calendar"]["api_base_urls"] = [base]
        vault.redeploy(config, deployed)
        audit_events.clear()

        answer = agent.proxy("GET", EVENTS)

        assert answer.status == 502, base
        assert_problem(answer, 502, "upstream_address_refused")
        assert "x-agent-vault-proxy" not in answer.headers
        audit_events.expect("proxy.call", "failed", reason="upstream_address_refused")


# --- row 42: no credential of the agent's goes out, no cookie of the provider's comes back ---


def test_row_42_the_agents_credentials_and_hop_by_hop_headers_are_never_forwarded(
    vault: Vault, api: Upstream
) -> None:
    agent = proxy_agent(vault)
    sent = {
        "Authorization": "Bearer stolen-elsewhere",
        "Cookie": "session=agent-cookie",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "X-Amz-Security-Token": "FwoGZXIvYXdzEXAMPLE",
        "X-Amz-Date": "20301231T000000Z",
        "X-Amzn-Trace-Id": "Root=1-abc",
        "X-Agent-Vault-Api-Base": api.url,
        "X-Agent-Vault-Token-DPoP": "eyJ.proof.x",
        "Host": "evil.example",
        "X-Forwarded-For": "203.0.113.9",
        "Forwarded": "for=203.0.113.9",
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "named-in-connection",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Via": "1.1 agent",
        "X-Request-Id": "req-1",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }

    answer = agent.proxy("POST", EVENTS, body='{"title":"Lunch"}', headers=sent)

    assert answer.status == 200, answer.body
    (seen,) = api.seen
    assert seen.body == b'{"title":"Lunch"}'
    names = set(seen.headers)
    for dropped in (
        "cookie",
        "dpop",
        "proxy-authorization",
        "x-amz-security-token",
        "x-amz-date",
        "x-amzn-trace-id",
        "x-agent-vault-api-base",
        "x-agent-vault-token-dpop",
        "x-forwarded-for",
        "forwarded",
        "x-hop-secret",
        "keep-alive",
        "te",
        "upgrade",
        "via",
    ):
        assert dropped not in names, dropped
    assert seen.header("host") == api.url.removeprefix("http://")
    assert seen.header("x-request-id") == "req-1"
    assert seen.header("content-type") == "application/json"
    # the one Authorization is the vault's: the session's token, alice's at the provider
    assert seen.headers["authorization"] != ["Bearer stolen-elsewhere"]
    token = the_token(seen)
    introspected = vault.server.introspect(token)
    assert introspected["active"] is True and introspected["sub"] == "alice"
    assert token not in answer.body and token not in str(answer.headers)


def test_row_42_the_providers_cookies_and_hop_by_hop_headers_never_come_back(
    vault: Vault,
) -> None:
    def answer(seen: Seen) -> Reply:
        return Reply(
            200,
            [
                ("Content-Type", "application/json"),
                ("Set-Cookie", "provider_session=abc; HttpOnly"),
                ("Set-Cookie", "tracking=xyz"),
                ("Connection", "X-Internal"),
                ("X-Internal", "named-in-connection"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"),
                ("Upgrade", "h2c"),
                ("X-Agent-Vault-Proxy", "forged"),
                ("X-Agent-Vault-Note", "forged"),
                ("WWW-Authenticate", 'Bearer realm="calendar"'),
                ("X-Ok", "1"),
                ("X-Ok", "2"),
            ],
            b'{"ok":true}',
            chunked=True,
        )

    with Upstream(answer) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        got = agent.proxy("GET", EVENTS)

    assert got.status == 200 and got.json == {"ok": True}
    for dropped in (
        "set-cookie",
        "x-internal",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "transfer-encoding",
        "x-agent-vault-note",
    ):
        assert dropped not in got.headers, dropped
    assert got.headers["x-agent-vault-proxy"] == "upstream"  # the vault's, not the provider's
    assert got.headers["www-authenticate"] == 'Bearer realm="calendar"'
    assert got.headers["x-ok"] == "1, 2"
    assert got.headers["content-type"] == "application/json"


# --- row 43: the request policy, before any call -------------------------------------------


OUTSIDE_THE_POLICY = (
    ("DELETE", EVENTS),  # GET/HEAD anywhere under /calendar, POST/PUT on events only
    ("PATCH", EVENTS),
    ("POST", "calendar/settings"),
    ("PUT", "calendar/events/evt-1"),
    ("GET", "admin/users"),
    ("GET", "calendarx/events"),
    ("GET", "calendar%2dx/events"),
)


def test_row_43_a_request_outside_the_agents_policy_is_refused_before_any_call(
    vault: Vault, api: Upstream, audit_events: AuditLog
) -> None:
    agent = proxy_agent(vault)
    before = vault.server.stats()["token_requests"]
    for method, path in OUTSIDE_THE_POLICY:
        audit_events.clear()

        with unchanged(vault):  # not even a token minted
            answer = agent.proxy(method, path, body="{}" if method != "DELETE" else None)

        assert answer.status == 403, (method, path)
        problem = assert_problem(answer, 403, "request_not_allowed")
        assert problem["method"] == method and problem["provider"] == "calendar"
        event = audit_events.expect("proxy.call", "denied", reason="request_not_allowed")
        assert event["method"] == method
    assert api.seen == []
    assert vault.server.stats()["token_requests"] == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "calendar"), ("GET", "calendar/x/y/z"), ("HEAD", EVENTS), ("PUT", EVENTS)],
)
def test_row_43_what_the_policy_allows_goes_through(
    vault: Vault, api: Upstream, method: str, path: str
) -> None:
    agent = proxy_agent(vault)
    answer = agent.proxy(method, path, body="{}" if method == "PUT" else None)
    assert answer.status == 200, answer.body
    assert [(s.method, s.target) for s in api.seen] == [(method, f"/{path}")]


def test_row_43_an_agent_without_proxy_delivery_or_policy_there_cannot_use_the_proxy(
    vault: Vault, api: Upstream
) -> None:
    bearer = connected_agent(vault)  # calendar-agent: bearer delivery at the calendar
    assert_problem(bearer.proxy("GET", EVENTS), 403, "request_not_allowed")
    assert_problem(bearer.proxy("GET", EVENTS, "nowhere"), 400, "unknown_provider")
    other = connected_agent(vault, provider="calendar-post", scopes=("calendar.read",))
    assert_problem(other.proxy("GET", EVENTS, "calendar-post"), 403, "request_not_allowed")
    assert api.seen == []


def test_a_session_of_another_task_or_a_wrong_proof_reaches_nothing(
    vault: Vault, api: Upstream
) -> None:
    agent = proxy_agent(vault)
    thief = vault.agent(PROXY_ROLE)
    thief.session_id = agent.session_id
    assert_problem(thief.proxy("GET", EVENTS), 403, "forbidden")
    path = f"/v1/sessions/{agent.session_id}/proxy/calendar/{EVENTS}"
    other_url = agent.proof("GET", f"/v1/sessions/{agent.session_id}/proxy/calendar/other")
    assert_problem(agent.call("GET", path, proof=other_url), 401, "invalid_proof")
    assert_problem(agent.call("POST", path, proof=agent.proof("GET", path)), 401, "invalid_proof")
    assert api.seen == []


def test_a_dead_session_reaches_nothing_through_the_proxy(vault: Vault, api: Upstream) -> None:
    agent = proxy_agent(vault)
    assert agent.proxy("GET", EVENTS).status == 200
    vault.clock.advance(vault.services.config.session_ttl_seconds + 1)

    problem = assert_problem(agent.proxy("GET", EVENTS), 410, "session_ended")

    assert problem["reason"] == "expired"
    assert len(api.seen) == 1  # the call before it expired
    # the proxy's function does not clean up (its role cannot): the session's end does
    assert len(items_of_type(vault, "token")) == 1
    assert agent.end().json["revoked_tokens"] == 1
    assert items_of_type(vault, "token") == []


# --- bounded bodies ----------------------------------------------------------------------------


def test_a_request_body_beyond_the_limit_is_413_and_reaches_nothing(
    vault: Vault, api: Upstream
) -> None:
    agent = proxy_agent(vault)
    big = "a" * (MAX_REQUEST_BYTES + 1)
    problem = assert_problem(agent.proxy("POST", EVENTS, body=big), 413, "request_too_large")
    assert problem["max_bytes"] == MAX_REQUEST_BYTES
    assert api.seen == []
    fits = "b" * MAX_REQUEST_BYTES
    assert agent.proxy("POST", EVENTS, body=fits).status == 200
    assert api.seen[0].body == fits.encode()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_beyond_the_limit_is_502_never_truncated(
    vault: Vault, audit_events: AuditLog, chunked: bool
) -> None:
    sizes = iter([MAX_RESPONSE_BYTES + 1, MAX_RESPONSE_BYTES])

    def answer(seen: Seen) -> Reply:
        return Reply(200, [("Content-Type", "text/plain")], b"x" * next(sizes), chunked=chunked)

    with Upstream(answer) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        audit_events.clear()
        too_big = agent.proxy("GET", EVENTS)
        fits = agent.proxy("GET", EVENTS)

    assert_problem(too_big, 502, "upstream_response_too_large")
    assert len(too_big.body) < 1024
    audit_events.expect("proxy.call", "failed", reason="upstream_response_too_large")
    assert fits.status == 200 and fits.body == "x" * MAX_RESPONSE_BYTES


def test_binary_bodies_pass_both_ways_unchanged(vault: Vault) -> None:
    blob = bytes(range(256)) * 64

    def answer(seen: Seen) -> Reply:
        return Reply(200, [("Content-Type", "application/octet-stream")], seen.body[::-1])

    with Upstream(answer) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        sent = agent.call(
            "PUT",
            f"/v1/sessions/{agent.session_id}/proxy/calendar/{EVENTS}",
            raw_body=blob,
            headers={"content-type": "application/octet-stream"},
        )
    assert stand_in.seen[0].body == blob
    assert sent.status == 200 and sent.data == blob[::-1]


# --- a provider 401: one refresh, one retry for an idempotent method ----------------------------


def _spoil_the_stored_token(vault: Vault, session_id: str) -> str:
    """The provider stops honouring the session's token (as after an early expiry): the stored
    ciphertext becomes another, inactive token's, sealed under the item's own context."""
    (item,) = [i for i in items_of_type(vault, "token") if i["session_id"]["S"] == session_id]
    scopes = [s["S"] for s in item["scopes"]["L"]]
    context = token_context(
        UserRef(item["user_iss"]["S"], item["user_sub"]["S"]),
        item["provider"]["S"],
        session_id=session_id,
        scopes=scopes,
    )
    item["access_token"] = {"B": vault.services.envelope.encrypt(b"not-a-live-token", context)}
    vault._dynamodb.put_item(TableName=vault.services.settings.table_name, Item=item)
    return "not-a-live-token"


def test_a_401_from_the_calendar_refreshes_once_and_retries_a_get_once(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = proxy_agent(vault)
    assert agent.proxy("GET", EVENTS).status == 200
    _spoil_the_stored_token(vault, agent.session_id or "")
    vault.redeploy()  # a cold container: no data key cached
    before = refreshes(vault)
    audit_events.clear()

    answer = agent.proxy("GET", EVENTS)

    assert answer.status == 200, answer.body
    assert answer.json["user"] == "alice"
    assert refreshes(vault) == before + 1
    assert len(audit_events.find("proxy.call")) == 1  # one event per call, the retry included
    audit_events.expect("grant.refresh", "refreshed")


def _unauthorized_until(count: int) -> Any:
    calls = {"n": 0}

    def answer(seen: Seen) -> Reply:
        calls["n"] += 1
        if calls["n"] <= count:
            return Reply(401, [("WWW-Authenticate", 'Bearer error="invalid_token"')], b"")
        return Reply(200, [("Content-Type", "application/json")], b'{"ok":true}')

    return answer


def test_a_401_to_a_get_is_retried_once_with_a_refreshed_token(vault: Vault) -> None:
    with Upstream(_unauthorized_until(1)) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        before = refreshes(vault)
        answer = agent.proxy("GET", EVENTS)

    assert answer.status == 200
    first, second = stand_in.seen
    assert the_token(first) != the_token(second)
    assert vault.server.introspect(the_token(second))["active"] is True
    assert refreshes(vault) == before + 2  # the first token, then the one after the 401


def test_a_get_that_stays_unauthorized_is_tried_twice_and_answered_401(vault: Vault) -> None:
    with Upstream(_unauthorized_until(99)) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        before = refreshes(vault)
        answer = agent.proxy("GET", EVENTS)

    assert answer.status == 401 and answer.headers["x-agent-vault-proxy"] == "upstream"
    assert len(stand_in.seen) == 2 and refreshes(vault) == before + 2


def test_a_401_to_a_post_is_not_retried_and_the_next_call_gets_a_new_token(
    vault: Vault,
) -> None:
    with Upstream(_unauthorized_until(1)) as stand_in:
        with_api_bases(vault, stand_in.url)
        agent = proxy_agent(vault)
        before = refreshes(vault)

        answer = agent.proxy("POST", EVENTS, body='{"title":"Lunch"}')

        assert answer.status == 401 and answer.headers["x-agent-vault-proxy"] == "upstream"
        assert len(stand_in.seen) == 1  # never sent twice
        assert refreshes(vault) == before + 1  # the first token only
        assert items_of_type(vault, "token") == []  # the refused token is forgotten
        assert agent.proxy("POST", EVENTS, body='{"title":"Lunch"}').status == 200
        assert refreshes(vault) == before + 2
        assert the_token(stand_in.seen[0]) != the_token(stand_in.seen[1])
