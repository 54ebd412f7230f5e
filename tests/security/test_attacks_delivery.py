"""How tokens reach agents (flows 5, 10 and 11): SECURITY.md row 44 on the vault's side (a
DPoP-bound token is only minted with a proof of the session's own key, and the provider binds it
to that key), and consents that outlive their tasks: a `proxy` or `dpop` session's end kills
nothing upstream that the next task of the agent needs, while `bearer` keeps revoking.

Real handlers over moto, the real oidc-provider (DPoP at its token endpoint, introspection,
revocation) and the real reaper."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest
from joserfc.jwk import ECKey

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    grant_item,
    items_of_type,
    unchanged,
)
from tests.support.agent import TestAgent, sign_proof
from tests.support.harness import Vault, reap, task_stopped

DPOP_ROLE = "dpop-agent-role"
PROXY_ROLE = "proxy-agent-role"
TOKEN_PROOF = "X-Agent-Vault-Token-DPoP"


def token_proof(vault: Vault, key: ECKey, **claims: Any) -> str:
    """A DPoP proof for the provider's token endpoint, as the SDK signs it (RFC 9449 §4)."""
    claims.setdefault("url", vault.server.token_endpoint)
    claims.setdefault("method", "POST")
    return sign_proof(key, iat=int(vault.clock()), session_id=None, **claims)


def dpop_token(vault: Vault, agent: TestAgent, proof: str | None = None) -> Any:
    proof = proof if proof is not None else token_proof(vault, agent.key)
    return agent.token("calendar", ["calendar.read"], headers={TOKEN_PROOF: proof})


def api_proof(vault: Vault, key: ECKey, token: str) -> str:
    """A proof for GET at the calendar API with the token's `ath` (RFC 9449 §4.2), at real time:
    the provider's clock is not the vault's test clock."""
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    url = vault.server.calendar_url
    return sign_proof(key, method="GET", url=url, iat=int(time.time()), session_id=None, ath=ath)


def token_requests(vault: Vault) -> dict[str, int]:
    return dict(vault.server.stats()["token_requests"])


def revocations(vault: Vault) -> int:
    return int(vault.server.stats()["revocations"])


# --- row 44: a DPoP-bound token is minted only for the session's own key ----------------------


def test_row_44_a_dpop_token_is_bound_by_the_provider_to_the_session_key(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, role=DPOP_ROLE, scopes=("calendar.read",))

    answer = dpop_token(vault, agent)

    assert answer.status == 200, answer.body
    assert answer.json["token_type"] == "DPoP" and answer.json["scope"] == "calendar.read"
    introspected = vault.server.introspect(answer.json["access_token"])
    assert introspected["active"] is True and introspected["sub"] == "alice"
    assert introspected["token_type"] == "DPoP"
    assert introspected["cnf"] == {"jkt": agent.key.thumbprint()}
    audit_events.expect("token.issue", "allowed", cached=False)
    # at the provider's own resource server (the calendar API), the token the vault handed out is
    # worth nothing without the session key: as a bearer token, or with a thief's own proof
    token = answer.json["access_token"]
    thief = ECKey.generate_key("P-256")
    assert vault.server.calendar(token)[0] == 401
    assert vault.server.calendar(token, dpop=api_proof(vault, thief, token))[0] == 401
    assert vault.server.calendar(token, dpop=api_proof(vault, agent.key, token))[0] == 200
    # cached per session like any token: the next request (with a fresh proof) is no refresh
    before = token_requests(vault)
    again = dpop_token(vault, agent)
    assert again.json["access_token"] == answer.json["access_token"]
    assert token_requests(vault) == before


def test_row_44_no_proof_for_the_token_endpoint_names_what_to_sign(vault: Vault) -> None:
    agent = connected_agent(vault, role=DPOP_ROLE, scopes=("calendar.read",))
    before = token_requests(vault)

    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.read"])

    problem = assert_problem(answer, 400, "dpop_proof_required")
    assert problem["htu"] == vault.server.token_endpoint
    assert "nonce" not in problem  # this provider sent none
    assert token_requests(vault) == before


@pytest.mark.parametrize(
    "how",
    [
        "another key",
        "another session's key",
        "another htu",
        "another htm",
        "stale",
        "garbage",
        "a vault proof",
    ],
)
def test_row_44_a_proof_not_of_the_session_key_for_the_token_endpoint_mints_nothing(
    vault: Vault, audit_events: AuditLog, how: str
) -> None:
    agent = connected_agent(vault, role=DPOP_ROLE, scopes=("calendar.read",))
    other = agent_with_session(vault, role=DPOP_ROLE)
    proofs = {
        "another key": lambda: token_proof(vault, ECKey.generate_key("P-256")),
        "another session's key": lambda: token_proof(vault, other.key),
        "another htu": lambda: token_proof(vault, agent.key, url=vault.server.revocation_endpoint),
        "another htm": lambda: token_proof(vault, agent.key, method="GET"),
        "stale": lambda: sign_proof(
            agent.key,
            method="POST",
            url=vault.server.token_endpoint,
            iat=int(vault.clock()) - 3600,
            session_id=None,
        ),
        "garbage": lambda: "eyJhbGciOiJub25lIn0.e30.x",
        "a vault proof": lambda: agent.proof("POST", f"/v1/sessions/{agent.session_id}/tokens"),
    }
    before = token_requests(vault)
    audit_events.clear()

    with unchanged(vault):
        answer = dpop_token(vault, agent, proofs[how]())

    problem = assert_problem(answer, 401, "invalid_proof")
    assert problem["header"] == TOKEN_PROOF
    assert token_requests(vault) == before  # the provider never saw it
    audit_events.expect("token.issue", "denied", reason="invalid_proof")


def test_row_44_a_replayed_token_endpoint_proof_is_refused_by_the_vault(vault: Vault) -> None:
    agent = connected_agent(vault, role=DPOP_ROLE, scopes=("calendar.read",))
    proof = token_proof(vault, agent.key)
    assert dpop_token(vault, agent, proof).status == 200
    before = token_requests(vault)

    problem = assert_problem(dpop_token(vault, agent, proof), 401, "proof_replayed")

    assert problem["header"] == TOKEN_PROOF
    assert token_requests(vault) == before


def test_row_44_a_bearer_token_is_never_handed_out_as_dpop_nor_the_reverse(
    vault: Vault,
) -> None:
    """The agent's delivery changes with a new deployment while its session holds a token."""
    agent = connected_agent(vault, role=DPOP_ROLE, scopes=("calendar.read",))
    bound = dpop_token(vault, agent).json["access_token"]
    config = vault.services.config.model_dump(mode="json", exclude_none=True)
    config["agents"]["dpop-agent"]["providers"]["calendar"]["delivery"] = "bearer"
    vault.redeploy(config)

    plain = agent.token("calendar", ["calendar.read"])

    assert plain.status == 200 and plain.json["token_type"] == "Bearer"
    assert plain.json["access_token"] != bound
    assert "cnf" not in vault.server.introspect(plain.json["access_token"])


# --- consent outlives tasks ---------------------------------------------------------------------


def _replacement(vault: Vault, role: str) -> TestAgent:
    """A new task of the same agent (another task id, another key) for the same user."""
    return agent_with_session(vault, "alice", role=role)


@pytest.mark.parametrize("end", ["reaper", "delete"])
def test_a_proxy_agents_consent_outlives_its_task(
    vault: Vault, audit_events: AuditLog, end: str
) -> None:
    agent = connected_agent(vault, role=PROXY_ROLE)
    assert agent.proxy("GET", "calendar/events").status == 200
    revoked_before = revocations(vault)

    if end == "reaper":
        result = reap(task_stopped(agent.task_id))
        assert result["ended_sessions"] == 1 and result["revoked_tokens"] == 1
    else:
        assert agent.end().json["revoked_tokens"] == 1

    assert items_of_type(vault, "token") == []  # deleted here...
    assert revocations(vault) == revoked_before  # ...and nothing revoked at the provider
    assert grant_item(vault)["status"]["S"] == "active"
    assert_problem(agent.proxy("GET", "calendar/events"), 410, "session_ended")
    audit_events.clear()

    successor = _replacement(vault, PROXY_ROLE)
    answer = successor.proxy("GET", "calendar/events")

    assert answer.status == 200, answer.body  # no new consent
    assert answer.json["user"] == "alice"
    assert not audit_events.find("consent.start")


def test_a_dpop_agents_consent_outlives_its_task(vault: Vault) -> None:
    agent = connected_agent(vault, role=DPOP_ROLE, scopes=("calendar.read",))
    first = dpop_token(vault, agent).json["access_token"]
    revoked_before = revocations(vault)

    assert reap(task_stopped(agent.task_id))["revoked_tokens"] == 1

    assert items_of_type(vault, "token") == [] and revocations(vault) == revoked_before
    assert grant_item(vault)["status"]["S"] == "active"
    # the old token is still alive upstream, but bound to a key that died with its task
    assert vault.server.introspect(first)["cnf"] == {"jkt": agent.key.thumbprint()}
    successor = _replacement(vault, DPOP_ROLE)
    answer = dpop_token(vault, successor)
    assert answer.status == 200, answer.body
    assert vault.server.introspect(answer.json["access_token"])["cnf"] == {
        "jkt": successor.key.thumbprint()
    }


def test_a_bearer_agent_still_revokes_and_its_next_task_asks_for_consent(vault: Vault) -> None:
    agent = connected_agent(vault)  # calendar-agent: bearer delivery, explicit in the config
    token = agent.token("calendar", ["calendar.read"]).json["access_token"]
    revoked_before = revocations(vault)

    assert reap(task_stopped(agent.task_id))["revoked_tokens"] == 1

    assert revocations(vault) == revoked_before + 1
    assert vault.server.introspect(token) == {"active": False}
    grant = grant_item(vault)
    assert (grant["status"]["S"], grant["broken_reason"]["S"]) == (
        "broken",
        "revoked_with_session",
    )
    refused = _replacement(vault, "calendar-agent-role").token("calendar", ["calendar.read"])
    assert assert_problem(refused, 403, "consent_required")["reason"] == "grant_broken"
