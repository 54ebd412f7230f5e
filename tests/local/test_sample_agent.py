"""The sample agent (agent/app.py): its intent parser, and the whole consent round trip through
the agent running in local mode."""

from __future__ import annotations

import datetime
import json
import urllib.parse
import warnings

from agent_vault_local.consent_forms import complete_consent
from agent_vault_local.provider import HttpResponse, http_request
from agent_vault_local.runner import AGENT_APP, LocalInfo
from sample_agent.app import AgentSettings, create_app, describe_events, parse_intent
from tests.local.helpers import fresh_grants, id_token_for

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
    with warnings.catch_warnings():  # starlette's notice about httpx, at import
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
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
