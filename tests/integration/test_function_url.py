"""`agent_endpoint: "function_url"`: the agent API and the egress proxy take a Lambda function
URL's event (payload 2.0, `requestContext.authorizer.iam`, no route) exactly as API Gateway's:
the real handlers over moto, the real oidc-provider."""

from __future__ import annotations

import logging

from tests.security.helpers import AuditLog
from tests.support.agent import TestAgent
from tests.support.apigw import FUNCTION_URL_DOMAIN, build_event, invoke
from tests.support.harness import ACCOUNT, Vault
from vault.routes import AGENT_API


def test_a_token_is_retrieved_at_the_function_url(vault: Vault) -> None:
    agent = vault.agent(function_url=True)
    started = agent.start_session(vault.user("alice"))
    assert started.status == 201, started.body
    assert started.json["task_id"] == agent.task_id
    # the consent's own routes (authorize, complete) at the URL too; the callback is API Gateway's
    assert vault.connect(agent, scopes=("calendar.read",)).status == 200
    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200, issued.body
    assert vault.server.calendar(issued.json["access_token"])[0] == 200
    vault.counter.reset()
    again = agent.token("calendar", ["calendar.read"])
    assert again.json["access_token"] == issued.json["access_token"]
    assert dict(vault.counter.counts) == {"dynamodb:Query": 1, "dynamodb:PutItem": 1}


def test_a_proof_for_the_api_gateway_url_is_refused_at_the_function_url(vault: Vault) -> None:
    """The proof names the URL the agent called: one made for the other endpoint is no proof."""
    agent = vault.agent(function_url=True)
    assert agent.start_session(vault.user("alice")).status == 201
    path = f"/v1/sessions/{agent.session_id}/tokens"
    elsewhere = vault.agent().proof("POST", path, session_id=agent.session_id)
    refused = agent.token("calendar", ["calendar.read"], proof=elsewhere)
    assert refused.status == 401, refused.body


def test_a_proxied_call_goes_through_the_proxys_function_url(vault: Vault) -> None:
    agent = vault.agent("proxy-agent-role", function_url=True)
    assert agent.start_session(vault.user("alice")).status == 201
    assert vault.connect(agent, scopes=("calendar.read",)).status == 200
    answered = agent.proxy("GET", "calendar/events")
    assert answered.status == 200, answered.body


def test_a_caller_that_is_no_agent_is_refused_and_audited_with_its_route(vault: Vault) -> None:
    audit = AuditLog()
    logging.getLogger("agent-vault").addHandler(audit)
    try:
        intruder = vault.agent("some-other-role", function_url=True)
        before = vault.snapshot()
        refused = intruder.start_session(vault.user("alice"))
        assert refused.status == 403 and refused.code == "unknown_agent", refused.body
        assert refused.headers["content-type"] == "application/problem+json"
        assert vault.snapshot() == before
        event = audit.expect("request", "denied", reason="unknown_agent")
        assert event["route"] == "POST /v1/sessions"
        assert event["principal"] == intruder.arn
    finally:
        logging.getLogger("agent-vault").removeHandler(audit)


def test_an_agents_role_name_in_another_account_is_refused_at_the_function_url(
    vault: Vault,
) -> None:
    """Row 51 at the function URL: `requestContext.accountId` is the function owner's account
    (Lambda's payload reference), so the role is pinned to the vault's account as behind API
    Gateway."""
    impostor = TestAgent(
        "calendar-agent-role", "task-x", vault.clock, "999999999999", function_url=True
    )
    refused = impostor.start_session(vault.user("alice"))
    assert refused.status == 403 and refused.code == "unknown_agent", refused.body


def test_an_admin_route_is_not_served_at_the_agent_apis_url(vault: Vault) -> None:
    """A function URL takes any path; the agent API's function serves the agent routes only."""
    event = build_event(
        "POST",
        "/v1/revocations",
        body='{"user_id": "alice"}',
        headers={"content-type": "application/json"},
        principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/vault-admin/ops",
        function_url=True,
    )
    assert event["requestContext"]["domainName"] == FUNCTION_URL_DOMAIN
    assert "pathParameters" not in event and event["routeKey"] == "$default"
    answer = invoke(event, AGENT_API)
    assert answer.status == 404 and answer.code == "not_found", answer.body
