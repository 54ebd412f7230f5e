"""The sample agent (the ``sample_agent`` package): its intent parser, its OIDC login, and the
whole consent round trip through the agent running in local mode."""

from __future__ import annotations

import base64
import datetime
import json
import re
import urllib.parse
import warnings
from typing import Any

import httpx
import itsdangerous
import pytest

from agent_vault_local.consent_forms import complete_consent
from agent_vault_local.provider import HttpResponse, http_request
from agent_vault_local.runner import AGENT_APP, LocalInfo
from sample_agent.app import AgentSettings, OidcSettings, create_app
from sample_agent.intents import describe_events, parse_intent
from sample_agent.settings import session_key
from tests.local.helpers import fresh_grants, id_token_for

with warnings.catch_warnings():  # starlette's notice about httpx, at import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TODAY = datetime.date(2030, 5, 17)


def test_the_intent_parser() -> None:
    assert parse_intent("what is on my calendar today", TODAY) is not None
    assert parse_intent("What's on tomorrow?", TODAY).day == TODAY + datetime.timedelta(days=1)
    assert parse_intent("any meetings yesterday?", TODAY).day == TODAY - datetime.timedelta(days=1)
    assert parse_intent("tell me a joke", TODAY) is None


def test_event_descriptions() -> None:
    events = [{"title": "Stand-up", "start": "2030-05-17T09:00:00Z"}]
    assert describe_events(events, TODAY) == "On your calendar 2030-05-17: 09:00 Stand-up."
    assert describe_events([], TODAY) == "Nothing on your calendar 2030-05-17."


def ask(info: LocalInfo, question: str, id_token: str | None = None) -> HttpResponse:
    headers = {"Authorization": f"Bearer {id_token}"} if id_token else {}
    assert info.agent_url is not None
    return http_request(
        "POST", f"{info.agent_url}/ask", json_body={"question": question}, headers=headers
    )


def consent_needed(answer: HttpResponse) -> tuple[str, str]:
    """/ask's 202: (the consent URL, the flow cookie it set in the asking browser). The flow id
    itself is never in the answer."""
    assert answer.status == 202, answer.body
    body = answer.json()
    assert set(body) == {"consent_url", "message"}
    cookies = [
        c for c in answer.headers.get_all("Set-Cookie") or [] if c.startswith("agent_consent_flow=")
    ]
    assert len(cookies) == 1 and "HttpOnly" in cookies[0], cookies
    return body["consent_url"], cookies[0].split(";", 1)[0]


def browser_returns(
    info: LocalInfo,
    consent_url: str,
    username: str,
    logged_in_token: str,
    decision: str = "allow",
    flow_cookie: str | None = None,
) -> HttpResponse:
    """The browser's trip: provider login and consent, the vault callback, the agent's return
    page, with ``logged_in_token`` as the agent's login cookie and ``flow_cookie`` if this
    browser is the one that asked."""
    callback = complete_consent(consent_url, username, info.users[username], decision)  # type: ignore[arg-type]
    redirect = http_request("GET", callback)
    assert redirect.status == 302
    location = redirect.headers["Location"]
    assert location.startswith(info.return_url)
    cookie = "; ".join(c for c in (f"agent_id_token={logged_in_token}", flow_cookie) if c)
    return http_request("GET", location, headers={"Cookie": cookie, "Accept": "text/html"})


def test_healthz(local_with_agent: LocalInfo) -> None:
    answer = http_request("GET", f"{local_with_agent.agent_url}/healthz")
    assert (answer.status, answer.json()) == (200, {"status": "ok"})


def test_consent_round_trip_through_the_agent(local_with_agent: LocalInfo) -> None:
    info = local_with_agent
    fresh_grants(info, "alice", "bob")
    alice = id_token_for(info, "alice")
    bob = id_token_for(info, "bob")

    consent_url, _ = consent_needed(ask(info, "what is on my calendar today?", alice))
    assert consent_url.startswith(info.provider["authorization_endpoint"])

    # The link is forwarded to bob, who consents; his browser did not start the flow.
    page = browser_returns(info, consent_url, "bob", bob)
    assert page.status == 403 and b"not started in this browser" in page.body
    assert ask(info, "what is on my calendar today?", alice).status == 202  # still no grant

    again, flow_cookie = consent_needed(ask(info, "what is on my calendar today?", alice))
    # ... and if bob's browser somehow carried alice's flow cookie, bob is not the flow's user
    page = browser_returns(info, again, "bob", bob, flow_cookie=flow_cookie)
    assert page.status == 403 and b"another user" in page.body

    again, flow_cookie = consent_needed(ask(info, "what is on my calendar today?", alice))
    page = browser_returns(info, again, "alice", alice, flow_cookie=flow_cookie)
    assert page.status == 200 and b"Connected" in page.body

    answer = ask(info, "what is on my calendar today?", alice)
    assert answer.status == 200
    body = answer.json()
    assert body["intent"] == "calendar.events"
    assert "Team stand-up" in body["answer"] and "Quarterly planning" in body["answer"]
    assert len(body["events"]) == 2

    other = ask(info, "tell me a joke", alice)
    assert other.status == 200 and other.json()["intent"] is None

    # Connected accounts: alice sees her calendar grant, bob none; only alice, from the agent's
    # own pages (its Origin, a JSON body), disconnects it.
    assert info.agent_url is not None
    mine = http_request("GET", f"{info.agent_url}/connections", headers=bearer(alice))
    assert mine.status == 200, mine.body[:300]
    (grant_id,) = re.findall(r"data-grant='(grt_[A-Za-z0-9_-]+)'", mine.body.decode())
    theirs = http_request("GET", f"{info.agent_url}/connections", headers=bearer(bob))
    assert theirs.status == 200 and b"No connected accounts" in theirs.body
    revoke, body = f"{info.agent_url}/connections/revoke", {"grant_id": grant_id}
    parts = urllib.parse.urlsplit(info.agent_url)
    own = {"Origin": f"{parts.scheme}://{parts.netloc}"}
    for headers, status in (
        (bearer(bob) | own, 404),  # another user's grant
        (bearer(alice), 403),  # no Origin: not from the agent's page
        (bearer(alice) | {"Origin": "https://evil.example"}, 403),
    ):
        assert http_request("POST", revoke, json_body=body, headers=headers).status == status
    as_form = http_request("POST", revoke, form=body, headers=bearer(alice) | own)
    assert as_form.status == 422  # a cross-site form cannot send it
    again = http_request("GET", f"{info.agent_url}/connections", headers=bearer(alice))
    assert grant_id in again.body.decode()
    done = http_request("POST", revoke, json_body=body, headers=bearer(alice) | own)
    assert (done.status, done.json()) == (200, {"status": "revoked"})
    gone = http_request("GET", f"{info.agent_url}/connections", headers=bearer(alice))
    assert b"No connected accounts" in gone.body
    assert ask(info, "what is on my calendar today?", alice).status == 202  # consent again


def bearer(id_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {id_token}"}


def test_a_refused_consent_shows_on_the_return_page(local_with_agent: LocalInfo) -> None:
    info = local_with_agent
    fresh_grants(info, "bob")
    bob = id_token_for(info, "bob")
    consent_url, flow_cookie = consent_needed(ask(info, "my agenda today?", bob))
    page = browser_returns(info, consent_url, "bob", bob, decision="deny", flow_cookie=flow_cookie)
    assert page.status == 200 and b"declined" in page.body
    assert ask(info, "my agenda today?", bob).status == 202


def test_without_a_user_the_agent_asks_for_one(local_with_agent: LocalInfo) -> None:
    info = local_with_agent
    settings = AgentSettings(
        vault_url=info.vault_url,
        calendar_api_url=info.provider["calendar_url"],
        region=info.region,
        credentials=info.principal(AGENT_APP).credentials(),
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post("/ask", json={"question": "what is on my calendar today?"})
        assert answer.status_code == 401
        assert client.get("/healthz").json() == {"status": "ok"}
        refused = client.post(
            "/ask",
            json={"question": "calendar?"},
            headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30.forged"},
        )
        assert refused.status_code == 401
        assert (
            client.post(
                "/ask", content=json.dumps({"q": 1}), headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        returned = "/consent/return?" + urllib.parse.urlencode(
            {"flow_id": "flw_x", "status": "pending_binding", "binding_code": "c" * 43}
        )
        assert client.get(returned).status_code == 403  # not started in this browser
        client.cookies.set("agent_consent_flow", "flw_x")
        page = client.get(returned)
        assert page.status_code == 401


# -- the agent's own OIDC login (Authlib) ---------------------------------------------------------


def login_client(info: LocalInfo, issuer: str | None = None) -> TestClient:
    """The agent app in this process, logging users in at local mode's provider. Its public URL
    is the running agent's, so the provider accepts its redirect URI (``<it>/login/callback``);
    the tests carry the provider's redirect back to this app themselves."""
    settings = AgentSettings(
        vault_url=info.vault_url,
        calendar_api_url=info.provider["calendar_url"],
        region=info.region,
        public_url=info.agent_url,
        credentials=info.principal(AGENT_APP).credentials(),
        oidc=OidcSettings(
            issuer or info.provider["issuer"],
            info.provider["app_client_id"],
            info.provider["app_client_secret"],
        ),
    )
    return TestClient(create_app(settings))


def start_login(client: TestClient, info: LocalInfo, next_path: str, username: str) -> str:
    """``/login``, then the user at the provider: the path + query of the redirect back."""
    started = client.get("/login", params={"next": next_path}, follow_redirects=False)
    assert started.status_code == 302, started.text
    callback = complete_consent(started.headers["location"], username, info.users[username])  # type: ignore[arg-type]
    assert info.agent_url is not None and callback.startswith(f"{info.agent_url}/login/callback?")
    return callback[len(info.agent_url) :]


def set_cookies(response: Any) -> dict[str, str]:
    """The Set-Cookie headers of ``response``, by cookie name."""
    return {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}


def test_the_login_is_a_code_flow_with_pkce_bound_to_the_browser_that_started_it(
    local_with_agent: LocalInfo,
) -> None:
    info = local_with_agent
    with login_client(info) as client:
        started = client.get("/login", params={"next": "/?from=login"}, follow_redirects=False)
        assert started.status_code == 302
        location = started.headers["location"]
        assert location.startswith(info.provider["authorization_endpoint"] + "?")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        assert query["response_type"] == "code" and query["scope"] == "openid"
        assert query["client_id"] == info.provider["app_client_id"]
        assert query["redirect_uri"] == f"{info.agent_url}/login/callback"
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert len(query["state"]) >= 20 and len(query["nonce"]) >= 20
        session = set_cookies(started)["agent_session"].lower()
        assert "httponly" in session and "samesite=lax" in session and "max-age=600" in session
        assert "agent_id_token" not in set_cookies(started)

        callback = complete_consent(location, "alice", info.users["alice"])  # type: ignore[arg-type]
        assert info.agent_url is not None
        back = callback[len(info.agent_url) :]
        saved_session = client.cookies["agent_session"]

        # The same redirect in another browser (no session cookie): refused, nothing set.
        client.cookies.delete("agent_session")
        elsewhere = client.get(back, follow_redirects=False)
        assert elsewhere.status_code == 400 and "mismatching_state" in elsewhere.text
        assert "agent_id_token" not in set_cookies(elsewhere)

        # ... nor with a session its attacker signed with another key.
        payload = saved_session.split(".", 1)[0]
        forged = itsdangerous.TimestampSigner("not-the-agents-key" * 3).sign(payload).decode()
        client.cookies.set("agent_session", forged)
        refused = client.get(back, follow_redirects=False)
        assert refused.status_code == 400 and "agent_id_token" not in set_cookies(refused)

        # In the browser that started it: the validated ID token becomes the identity cookie.
        client.cookies.set("agent_session", saved_session)
        done = client.get(back, follow_redirects=False)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/?from=login"
        cookies = set_cookies(done)
        identity = cookies["agent_id_token"].lower()
        assert "httponly" in identity and "samesite=lax" in identity
        assert cookies["agent_session"].startswith("agent_session=null;")  # the login is over
        id_token = client.cookies["agent_id_token"]
        claims = json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "=="))
        assert claims["iss"] == info.provider["issuer"] and claims["sub"] == "alice"
        assert claims["nonce"] == query["nonce"]
        assert "Logged in" in client.get("/").text

        # The same redirect again, even with the session it came with: the code is spent.
        client.cookies.set("agent_session", saved_session)
        again = client.get(back, follow_redirects=False)
        assert again.status_code == 400 and "agent_id_token" not in set_cookies(again)


def test_the_login_refuses_an_id_token_of_another_issuer(local_with_agent: LocalInfo) -> None:
    """The ID token's ``iss`` must be the configured issuer exactly (here the configured one has
    a trailing slash: discovery still finds the provider, whose tokens name it without)."""
    info = local_with_agent
    with login_client(info, issuer=info.provider["issuer"] + "/") as client:
        answer = client.get(start_login(client, info, "/", "alice"), follow_redirects=False)
        assert answer.status_code == 400 and "invalid_claim" in answer.text
        assert "agent_id_token" not in set_cookies(answer)


def test_after_the_login_the_agent_never_sends_the_browser_elsewhere(
    local_with_agent: LocalInfo,
) -> None:
    info = local_with_agent
    with login_client(info) as client:
        back = start_login(client, info, "//evil.example/x", "bob")
        answer = client.get(back, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_login_failures_are_pages_not_errors(local_with_agent: LocalInfo) -> None:
    info = local_with_agent
    with login_client(info) as client:
        client.get("/login", follow_redirects=False)
        denied = client.get("/login/callback", params={"error": "access_denied", "state": "x"})
        assert denied.status_code == 400 and "access_denied" in denied.text
        assert client.get("/login/callback").status_code == 400  # no state, no code
    with login_client(info, issuer="http://127.0.0.1:9") as client:  # nothing listens there
        down = client.get("/login", follow_redirects=False)
        assert down.status_code == 502 and "could not be reached" in down.text


def test_the_session_cookie_is_secure_over_https(local_with_agent: LocalInfo) -> None:
    """Behind the load balancer the forwarded scheme is https: the login's cookie says Secure."""
    info = local_with_agent
    with login_client(info) as client:
        plain = client.get("/login", follow_redirects=False)
        assert "secure" not in set_cookies(plain)["agent_session"].lower()
        client.base_url = httpx.URL("https://testserver")
        secure = client.get("/login", follow_redirects=False)
        assert secure.status_code == 302
        assert "; secure" in set_cookies(secure)["agent_session"].lower()


def test_the_session_key_is_random_unless_configured() -> None:
    assert str(session_key(None)) != str(session_key(None))
    assert str(session_key("k" * 32)) == "k" * 32
    assert "k" * 32 not in repr(session_key("k" * 32))
    with pytest.raises(RuntimeError, match="at least 32"):
        session_key("short")
    env = {"AGENT_VAULT_URL": "https://vault.example", "AGENT_SESSION_SECRET": "s" * 40}
    settings = AgentSettings.from_env(env)
    assert settings.session_secret == "s" * 40 and "s" * 40 not in repr(settings)
