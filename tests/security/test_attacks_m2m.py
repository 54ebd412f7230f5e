"""Flow 12, machine-to-machine credentials (OAuth client credentials), threat-model rows 53-57.

Driven through the real handlers over moto, with machine tokens fetched at the real oidc-provider
(its clients `agent-vault-m2m`, client_secret_basic, and `agent-vault-m2m-jwt`, private_key_jwt)
and used at its bundled calendar API, which checks each token by introspection.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    items_of_type,
    put_item,
    unchanged,
)
from tests.security.hygiene import HYGIENE
from tests.support.agent import TestAgent
from tests.support.harness import SECRET_PREFIX, Vault
from vault import machine
from vault.models import MachineToken
from vault.store.grants import Lease

M2M_ROLE, OTHER_ROLE, PROXY_ROLE = "m2m-agent-role", "m2m-other-role", "m2m-proxy-role"
READ = ["calendar.read"]


def client_credentials_requests(vault: Vault) -> int:
    return int(vault.server.stats()["token_requests"].get("client_credentials", 0))


@pytest.fixture
def m2m(vault: Vault) -> Vault:
    """The suite's vault redeployed with two machine providers at the bundled provider, their
    secrets in Secrets Manager (a client secret; a private JWK for private_key_jwt), and three
    agents: two with bearer delivery, one through the proxy."""
    server = vault.server
    HYGIENE.add_secret(server.m2m_private_jwk, "client private key")
    HYGIENE.add_secret(json.loads(server.m2m_private_jwk)["d"], "client private key")
    secrets = vault.session.client("secretsmanager")
    secrets.create_secret(Name=SECRET_PREFIX + "machine", SecretString=server.client_secret)
    secrets.create_secret(Name=SECRET_PREFIX + "machine-jwt", SecretString=server.m2m_private_jwk)
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    machine_provider = {
        "discovery_url": server.discovery_url,
        "client_id": server.m2m_client_id,
        "grant_type": "client_credentials",
        "scopes": ["calendar.read", "calendar.write", "mail.read"],
        "resource": server.resource,
        "api_base_urls": [server.calendar_api_base],
        "timeout_seconds": 2.0,
    }
    data["providers"]["machine"] = machine_provider
    data["providers"]["machine-jwt"] = {
        **machine_provider,
        "client_id": server.m2m_jwt_client_id,
        "client_auth_method": "private_key_jwt",
    }
    bearer = {"scopes": ["calendar.read", "calendar.write"], "delivery": "bearer"}
    data["agents"]["m2m-agent"] = {
        "role_name": M2M_ROLE,
        "providers": {"machine": bearer, "machine-jwt": bearer},
    }
    data["agents"]["m2m-other"] = {
        "role_name": OTHER_ROLE,
        "providers": {"machine": {"scopes": ["calendar.read"], "delivery": "bearer"}},
    }
    data["agents"]["m2m-proxy"] = {
        "role_name": PROXY_ROLE,
        "providers": {"machine": {"scopes": ["calendar.read"]}},  # proxy: the default
    }
    vault.redeploy(data)
    server.reset_stats()
    return vault


def machine_agent(vault: Vault, role: str = M2M_ROLE, user: str = "alice") -> TestAgent:
    return agent_with_session(vault, user, role)


def calendar_client(vault: Vault, access_token: str) -> Any:
    """Who the calendar API says the token is (it introspects it): (status, client_id)."""
    status, body = vault.server.calendar(access_token)
    return status, (body or {}).get("client_id")


# --- it works, with no consent -----------------------------------------------------------------


def test_a_machine_token_needs_no_consent_and_reads_the_calendar(
    m2m: Vault, audit_events: AuditLog
) -> None:
    agent = machine_agent(m2m)
    answer = agent.token("machine", READ)
    assert answer.status == 200, answer.body
    assert answer.json["token_type"] == "Bearer" and answer.json["scope"] == "calendar.read"
    assert calendar_client(m2m, answer.json["access_token"]) == (200, m2m.server.m2m_client_id)
    assert client_credentials_requests(m2m) == 1
    assert items_of_type(m2m, "grant") == [] and items_of_type(m2m, "flow") == []
    [stored] = items_of_type(m2m, "machine_token")
    assert stored["pk"]["S"] == "MACHINE#m2m-agent#machine"
    assert answer.json["access_token"].encode() not in stored["access_token"]["B"]
    issued = audit_events.expect("token.issue", "allowed", agent="m2m-agent", provider="machine")
    assert issued["credential"] == "machine" and issued["cached"] is False
    audit_events.expect("machine.fetch", "fetched", agent="m2m-agent", scopes=READ)


def test_private_key_jwt_signs_the_client_assertion_with_the_key_from_secrets_manager(
    m2m: Vault,
) -> None:
    answer = machine_agent(m2m).token("machine-jwt", READ)
    assert answer.status == 200, answer.body
    assert calendar_client(m2m, answer.json["access_token"]) == (
        200,
        m2m.server.m2m_jwt_client_id,
    )


def test_consent_for_a_machine_provider_is_refused(m2m: Vault) -> None:
    agent = machine_agent(m2m)
    with unchanged(m2m):
        assert_problem(agent.authorize("machine", READ), 400, "invalid_request")


# --- row 53: never served to another agent ------------------------------------------------------


def test_row_53_a_machine_token_is_never_served_to_another_agent(
    m2m: Vault, audit_events: AuditLog
) -> None:
    mine = machine_agent(m2m).token("machine", READ)
    theirs_agent = machine_agent(m2m, OTHER_ROLE)
    theirs = theirs_agent.token("machine", READ)
    assert mine.status == theirs.status == 200, (mine.body, theirs.body)
    assert mine.json["access_token"] != theirs.json["access_token"]
    assert client_credentials_requests(m2m) == 2  # one per agent, never shared

    # the first agent's ciphertext copied onto the other agent's item: it does not decrypt there
    items = {i["pk"]["S"]: i for i in items_of_type(m2m, "machine_token")}
    stolen = dict(items["MACHINE#m2m-other#machine"])
    stolen["access_token"] = items["MACHINE#m2m-agent#machine"]["access_token"]
    put_item(m2m, stolen)
    m2m.redeploy()  # cold containers: no cached data key helps either
    audit_events.clear()
    answer = theirs_agent.token("machine", READ)
    assert_problem(answer, 500, "stored_data_invalid")
    assert mine.json["access_token"] not in answer.body
    audit_events.expect("token.issue", "denied", agent="m2m-other", reason="stored_data_invalid")


def test_row_53_an_agent_without_a_policy_at_the_machine_provider_gets_nothing(m2m: Vault) -> None:
    agent = machine_agent(m2m, "calendar-agent-role")
    with unchanged(m2m):
        assert_problem(agent.token("machine", READ), 403, "scope_not_allowed")
    assert client_credentials_requests(m2m) == 0


# --- row 54: scopes beyond the agent's policy ---------------------------------------------------


def test_row_54_scopes_beyond_the_agents_policy_are_refused_before_the_provider(
    m2m: Vault, audit_events: AuditLog
) -> None:
    agent = machine_agent(m2m, OTHER_ROLE)  # policy: calendar.read only
    with unchanged(m2m):
        problem = assert_problem(
            agent.token("machine", ["calendar.read", "calendar.write"]), 403, "scope_not_allowed"
        )
    assert problem["denied_scopes"] == ["calendar.write"]
    assert client_credentials_requests(m2m) == 0
    audit_events.expect("token.issue", "denied", agent="m2m-other", reason="scope_not_allowed")


def test_row_54_a_provider_that_grants_other_scopes_is_never_served(m2m: Vault) -> None:
    """mail.read is in the agent's policy here, but the calendar API's resource server grants
    only what it knows of the scopes asked: an answer that differs is refused and revoked."""
    data = m2m.services.config.model_dump(mode="json", exclude_none=True)
    data["providers"]["machine"]["scopes"].append("admin.all")
    data["agents"]["m2m-agent"]["providers"]["machine"]["scopes"].append("admin.all")
    m2m.redeploy(data)
    agent = machine_agent(m2m)
    problem = assert_problem(
        agent.token("machine", ["admin.all", "calendar.read"]), 502, "provider_error"
    )
    assert "admin.all" in problem["detail"]
    assert m2m.server.stats()["revocations"] == 1
    assert all("access_token" not in i for i in items_of_type(m2m, "machine_token"))


# --- row 55: cached per agent, single-flight ----------------------------------------------------


def test_row_55_one_token_request_for_n_concurrent_callers(m2m: Vault) -> None:
    agent = machine_agent(m2m)
    results = m2m.concurrent_tokens(agent, 6, "machine", tuple(READ), flow=machine.get_token)
    assert all(isinstance(r, dict) for r in results), results
    assert len({r["access_token"] for r in results}) == 1
    assert client_credentials_requests(m2m) == 1
    # no polling storm: besides the session read, the jti write and the look at the cache of
    # every machine token request, a waiting caller makes at most 3 DynamoDB requests (the lost
    # lease attempt, a read at the fetch's expected end, one more only if it was late)
    fetched = [ops for ops in m2m.container_requests if ops["PutItem"] == 2]
    waiters = [ops for ops in m2m.container_requests if ops["PutItem"] == 1]
    assert len(fetched) == 1 and len(waiters) == 5, m2m.container_requests
    assert all(ops["Query"] == 1 and ops["GetItem"] >= 1 for ops in waiters), waiters
    assert max(sum(ops.values()) - 3 for ops in waiters) <= 3, waiters


def test_row_55_the_token_is_cached_per_agent_across_sessions_and_users(m2m: Vault) -> None:
    first = machine_agent(m2m, user="alice").token("machine", READ)
    second = machine_agent(m2m, user="bob").token("machine", READ)
    assert first.json["access_token"] == second.json["access_token"]
    assert client_credentials_requests(m2m) == 1
    # other scopes are another cache entry
    wider = machine_agent(m2m).token("machine", ["calendar.read", "calendar.write"])
    assert wider.status == 200 and wider.json["access_token"] != first.json["access_token"]
    assert client_credentials_requests(m2m) == 2


def test_row_55_a_token_near_its_end_is_fetched_again(m2m: Vault) -> None:
    agent = machine_agent(m2m)
    first = agent.token("machine", READ).json["access_token"]
    m2m.clock.advance(3600 - 30)  # 30 s left of an hour-long token: under the reuse margin
    second = agent.token("machine", READ)
    assert second.status == 200 and second.json["access_token"] != first
    assert client_credentials_requests(m2m) == 2


# --- delivery ------------------------------------------------------------------------------------


def test_proxy_delivery_attaches_the_machine_token_which_never_leaves_the_vault(
    m2m: Vault, audit_events: AuditLog
) -> None:
    agent = machine_agent(m2m, PROXY_ROLE)
    answer = agent.proxy("GET", "calendar/events", provider="machine")
    assert answer.status == 200, answer.body
    assert answer.json["client_id"] == m2m.server.m2m_client_id
    again = agent.proxy("GET", "calendar/events", provider="machine")
    assert again.status == 200 and client_credentials_requests(m2m) == 1
    assert_problem(agent.token("machine", READ), 403, "delivery_proxy_only")
    audit_events.expect("proxy.call", "allowed", agent="m2m-proxy", provider="machine")


def test_a_machine_token_the_api_refuses_is_replaced_once(m2m: Vault) -> None:
    agent = machine_agent(m2m, PROXY_ROLE)
    assert agent.proxy("GET", "calendar/events", provider="machine").status == 200
    [item] = items_of_type(m2m, "machine_token")
    token = machine.open_token(
        m2m.services,
        MachineToken("m2m-proxy", "machine", ("calendar.read",), item["access_token"]["B"]),
    )
    assert m2m.server.revoke(token, client_id=m2m.server.m2m_client_id) == 200
    answer = agent.proxy("GET", "calendar/events", provider="machine")
    assert answer.status == 200, answer.body
    assert client_credentials_requests(m2m) == 2


# --- row 56: provider errors, secrets -----------------------------------------------------------


def test_row_56_a_provider_failure_is_a_clear_502_and_stores_nothing(
    m2m: Vault, audit_events: AuditLog
) -> None:
    agent = machine_agent(m2m)
    m2m.server.set_faults(token_endpoint={"status": 503})
    problem = assert_problem(agent.token("machine", READ), 502, "provider_error")
    assert "machine" in problem["detail"]
    assert all("access_token" not in i for i in items_of_type(m2m, "machine_token"))
    audit_events.expect("token.issue", "failed", agent="m2m-agent", reason="provider_error")
    # the lease was released: the next request fetches at once
    assert agent.token("machine", READ).status == 200


def test_row_56_a_wrong_client_secret_is_named_but_never_shown(m2m: Vault) -> None:
    wrong = "wrong-" + m2m.server.client_secret[::-1]
    HYGIENE.add_secret(wrong, "client secret")
    m2m.session.client("secretsmanager").put_secret_value(
        SecretId=SECRET_PREFIX + "machine", SecretString=wrong
    )
    m2m.redeploy()
    answer = machine_agent(m2m).token("machine", READ)
    problem = assert_problem(answer, 502, "provider_error")
    assert problem["provider_error"] == "invalid_client"
    assert wrong not in answer.body and m2m.server.client_secret not in answer.body


def test_row_56_a_private_key_that_is_no_key_is_named_but_never_shown(m2m: Vault) -> None:
    public_only = json.loads(m2m.server.m2m_private_jwk)
    public_only.pop("d")
    m2m.session.client("secretsmanager").put_secret_value(
        SecretId=SECRET_PREFIX + "machine-jwt", SecretString=json.dumps(public_only)
    )
    m2m.redeploy()
    answer = machine_agent(m2m).token("machine-jwt", READ)
    problem = assert_problem(answer, 502, "provider_error")
    assert "machine-jwt" in problem["detail"] and public_only["x"] not in answer.body
    assert client_credentials_requests(m2m) == 0


# --- row 57: revocation ---------------------------------------------------------------------------


def test_row_57_an_admin_revocation_drops_and_revokes_the_agents_machine_tokens(
    m2m: Vault, audit_events: AuditLog
) -> None:
    agent, other = machine_agent(m2m), machine_agent(m2m, OTHER_ROLE)
    mine = agent.token("machine", READ).json["access_token"]
    theirs = other.token("machine", READ).json["access_token"]
    answer = m2m.admin({"agent": "m2m-agent", "provider": "machine"})
    assert answer.status == 200, answer.body
    assert answer.json["revoked_machine_tokens"] == 1
    assert calendar_client(m2m, mine)[0] == 401  # dead upstream
    assert calendar_client(m2m, theirs) == (200, m2m.server.m2m_client_id)  # untouched
    audit_events.expect("machine.revoke", "revoked", agent="m2m-agent", provider="machine")
    fresh = agent.token("machine", READ)
    assert fresh.status == 200 and fresh.json["access_token"] != mine
    assert client_credentials_requests(m2m) == 3


def test_row_57_a_fetch_that_commits_after_a_revocation_is_revoked_not_served(
    m2m: Vault, audit_events: AuditLog
) -> None:
    svc = m2m.services
    now = svc.clock()
    leased, held = svc.store.machine.acquire_lease(
        "m2m-agent", "machine", ("calendar.read",), Lease("in-flight", now, now + 30)
    )
    assert held and leased is not None
    answer = m2m.admin({"agent": "m2m-agent"})  # closes the door on the leased item
    assert answer.status == 200, answer.body
    with pytest.raises(Exception) as raised:
        machine._fetch(svc, leased, "in-flight")
    assert getattr(raised.value, "code", None) == "refresh_in_progress"
    assert m2m.server.stats()["revocations"] == 1  # what the late fetch got is dead upstream
    audit_events.expect("machine.fetch", "discarded", agent="m2m-agent", reason="revoked")
    assert all("access_token" not in i for i in items_of_type(m2m, "machine_token"))
