"""SECURITY.md rows 29, 30, 33, 35 and 36: revocation wins every race, stopped tasks stay
stopped, unbound consents die, ciphertexts are bound to their scopes, sessions do not live
forever.

Races are interleaved deterministically, never with sleeps: a competing request runs at the
exact moment the provider has answered a refresh (a wrapper around the vault's provider client
that lets the real call through, then runs the competitor), or just before a chosen AWS call
(the botocore hook of tests/security/test_faults.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    grant_item,
    items_of_type,
    put_item,
    unchanged,
)
from tests.security.test_attacks_storage import refreshes, stored_refresh_token
from tests.security.test_faults import AwsFaults, faults, new_container  # noqa: F401
from tests.support.harness import Vault, reap, scheduled_sweep, task_stopped
from vault.models import UserRef, token_context
from vault.oauth.client import TokenResponse


def when_the_provider_answers_a_refresh(
    vault: Vault, competitor: Callable[[], None], provider: str = "calendar"
) -> list[TokenResponse]:
    """Run `competitor` once, right after the provider answered the next refresh and before
    the vault stores anything; returns the provider's answers (what the vault was given)."""
    client = vault.services.providers[provider]
    real = client.refresh
    answers: list[TokenResponse] = []

    def refresh(
        refresh_token: str, scopes: tuple[str, ...] | None, *, dpop_proof: str | None = None
    ) -> TokenResponse:
        answer = real(refresh_token, scopes, dpop_proof=dpop_proof)
        answers.append(answer)
        del client.refresh  # type: ignore[method-assign]  # once: later refreshes are plain
        competitor()
        return answer

    client.refresh = refresh  # type: ignore[method-assign]
    return answers


def dead_at_provider(vault: Vault, answer: TokenResponse) -> None:
    assert vault.server.introspect(answer.access_token) == {"active": False}
    if answer.refresh_token is not None:
        assert vault.server.introspect(answer.refresh_token, client_id="agent-vault") == {
            "active": False
        }


# --- row 29: a refresh in flight while a revocation runs ---------------------------------------


class IndexLag:
    """DynamoDB's gsi2 as it may be a moment after a write (its GSIs are eventually consistent):
    while `hiding`, a query for a grant's tokens (`gsi2` `GRANT#<gid>` / `TOKEN#...`) finds none
    yet. A botocore `before-parameter-build` hook on the vault's clients; AWS's behaviour, not
    the vault's, is what it stands in for."""

    def __init__(self) -> None:
        self.hiding = False
        self.hidden = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        values = params.get("ExpressionAttributeValues") or {}
        tokens = values.get(":t", {}).get("S", "").startswith("TOKEN#")
        if self.hiding and params.get("IndexName") == "gsi2" and tokens:
            values[":pk"] = {"S": "GRANT#not-indexed-yet"}
            self.hidden += 1


@pytest.mark.parametrize("by", ["grant_id", "user"])
def test_row_29_a_token_stored_a_moment_before_a_revocation_is_revoked_though_gsi2_lags(
    vault: Vault, by: str
) -> None:
    lag = IndexLag()
    vault.session.events.register("before-parameter-build.dynamodb.Query", lag)
    new_container(vault)
    agent = connected_agent(vault)
    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200, issued.body
    grant = grant_item(vault)
    body: dict[str, Any] = (
        {"grant_id": grant["grant_id"]["S"]}
        if by == "grant_id"
        else {"user": {"iss": grant["user_iss"]["S"], "sub": grant["user_sub"]["S"]}}
    )
    lag.hiding = True
    revoked = vault.admin(body)
    assert revoked.status == 200 and revoked.json["revoked_grants"] == 1, revoked.body
    assert revoked.json["revoked_tokens"] == 1
    assert lag.hidden >= 1  # the index was asked, and found nothing
    assert not items_of_type(vault, "token")
    assert vault.server.introspect(issued.json["access_token"]) == {"active": False}


@pytest.mark.parametrize("by", ["grant_id", "user"])
def test_row_29_an_admin_revocation_during_a_refresh_wins(
    vault: Vault, audit_events: AuditLog, by: str
) -> None:
    agent = connected_agent(vault)
    grant = grant_item(vault)
    old_refresh = stored_refresh_token(vault, grant)
    body: dict[str, Any] = (
        {"grant_id": grant["grant_id"]["S"]}
        if by == "grant_id"
        else {"user": {"iss": grant["user_iss"]["S"], "sub": grant["user_sub"]["S"]}}
    )
    revocations: list[Any] = []
    answers = when_the_provider_answers_a_refresh(
        vault, lambda: revocations.append(vault.admin(body))
    )

    answer = agent.token("calendar", ["calendar.read"])

    (revoked,) = revocations
    assert revoked.status == 200 and revoked.json["revoked_grants"] == 1, revoked.body
    problem = assert_problem(answer, 403, "consent_required")
    assert problem["reason"] == "grant_revoked", problem
    (issued,) = answers
    assert issued.access_token not in answer.body
    # nothing stored, nothing served, nothing alive upstream
    assert not items_of_type(vault, "token")
    assert not items_of_type(vault, "grant")
    dead_at_provider(vault, issued)
    assert vault.server.introspect(old_refresh, client_id="agent-vault") == {"active": False}
    audit_events.expect("grant.refresh", "discarded", reason="grant_revoked", upstream="revoked")
    # and the grant stays dead: the next request asks for consent
    again = agent.token("calendar", ["calendar.read"])
    assert assert_problem(again, 403, "consent_required")["reason"] == "no_grant"


@pytest.mark.parametrize("how", ["deleted", "task_stopped"])
def test_row_29_a_session_ended_during_a_refresh_gets_no_token_stored_served_or_alive(
    vault: Vault, audit_events: AuditLog, how: str
) -> None:
    agent = connected_agent(vault)
    other = agent_with_session(vault, "alice")  # the same user's grant, another task
    ended: list[Any] = []

    def end() -> None:
        if how == "deleted":
            # the agent's DELETE, through the flow the route runs (one resolver is busy with
            # the token request; a second request on it would share its event)
            from vault import revocation

            session = vault.services.store.sessions.get(agent.session_id or "")
            assert session is not None
            ended.append(revocation.end_session(vault.services, session, "ended_by_agent"))
        else:
            ended.append(reap(task_stopped(agent.task_id)))

    answers = when_the_provider_answers_a_refresh(vault, end)

    answer = agent.token("calendar", ["calendar.read"])

    assert len(ended) == 1
    problem = assert_problem(answer, 410, "session_ended")
    assert problem["reason"] == ("ended_by_agent" if how == "deleted" else "task_stopped")
    (issued,) = answers
    assert issued.access_token not in answer.body
    assert not items_of_type(vault, "token")
    assert vault.server.introspect(issued.access_token) == {"active": False}
    audit_events.expect("grant.refresh", "discarded", reason="session_ended", upstream="revoked")
    # the grant ends up exactly as a plain session end leaves it: oidc-provider kills the whole
    # grant when one of its access tokens is revoked (revocation_revokes_grant), so it is marked
    # and the user's other session is asked for consent, not handed a dead token; the rotated
    # refresh token was kept first, and the lease is released
    grant = grant_item(vault)
    assert "lease_owner" not in grant
    if issued.refresh_token is not None:
        assert stored_refresh_token(vault, grant) == issued.refresh_token
    assert grant["status"]["S"] == "broken", grant["status"]
    assert grant["broken_reason"]["S"] == "revoked_with_session"
    refused = other.token("calendar", ["calendar.read"])
    assert assert_problem(refused, 403, "consent_required")["reason"] == "grant_broken"


def test_row_29_a_refresh_committed_after_the_reaper_listed_the_tokens_is_revoked_too(
    vault: Vault,
    faults: AwsFaults,  # noqa: F811
    audit_events: AuditLog,
) -> None:
    agent = connected_agent(vault)
    assert agent.token("calendar", ["calendar.read"]).status == 200
    new_container(vault)
    served: list[Any] = []
    # the reaper has read the session's tokens; before it marks the session ended, the agent
    # mints a token for other scopes (a refresh that commits in that gap)
    faults.race(
        "dynamodb.UpdateItem",
        lambda: served.append(agent.token("calendar", ["calendar.read", "calendar.write"])),
    )

    result = reap(task_stopped(agent.task_id))

    (late,) = served
    assert late.status == 200, late.body
    assert result["ended_sessions"] == 1 and result["revoked_tokens"] == 2, result
    assert not items_of_type(vault, "token")
    assert vault.server.introspect(late.json["access_token"]) == {"active": False}


# --- row 30: a stopped task's credentials --------------------------------------------------------


def test_row_30_a_stopped_tasks_credentials_start_no_new_session(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    assert reap(task_stopped(agent.task_id))["ended_sessions"] == 1
    same_task = vault.agent("calendar-agent-role", agent.task_id)  # its credentials, a new key
    audit_events.clear()

    with unchanged(vault):
        started = same_task.start_session(vault.user("alice"))

    assert_problem(started, 403, "task_stopped")
    assert same_task.session_id is None
    audit_events.expect("session.start", "denied", reason="task_stopped", task_id=agent.task_id)
    # the marker outlives the longest credential life, and a repeated event changes nothing
    (marker,) = items_of_type(vault, "task_stopped")
    config = vault.services.config
    assert config.stopped_task_ttl_seconds >= 12 * 3600
    assert int(marker["ttl"]["N"]) >= int(vault.clock()) + config.stopped_task_ttl_seconds - 5
    kept = items_of_type(vault, "task_stopped") + items_of_type(vault, "session")
    assert reap(task_stopped(agent.task_id))["ended_sessions"] == 0  # another event, same task
    assert items_of_type(vault, "task_stopped") + items_of_type(vault, "session") == kept
    # another task of the same agent is unaffected
    assert agent_with_session(vault, "alice").token("calendar", ["calendar.read"]).status == 200


def test_row_30_a_session_started_while_the_reaper_runs_is_refused(
    vault: Vault,
    faults: AwsFaults,  # noqa: F811
) -> None:
    agent = connected_agent(vault)
    new_container(vault)
    same_task = vault.agent("calendar-agent-role", agent.task_id)
    started: list[Any] = []
    # the reaper has listed the task's sessions; the task's credentials start another one
    faults.race(
        "dynamodb.UpdateItem", lambda: started.append(same_task.start_session(vault.user("alice")))
    )

    assert reap(task_stopped(agent.task_id))["ended_sessions"] == 1

    (answer,) = started
    assert_problem(answer, 403, "task_stopped")
    sessions = items_of_type(vault, "session")
    assert [s["status"]["S"] for s in sessions] == ["ended"]


# --- row 33: consents nobody binds --------------------------------------------------------------


def unbound_flow(vault: Vault) -> tuple[Any, str, dict[str, Any], TokenResponse]:
    """A consent answered at the provider (tokens issued) that nobody binds."""
    agent = agent_with_session(vault, "alice")
    started = agent.authorize("calendar", ["calendar.read"])
    assert started.status == 201, started.body
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    assert vault.callback(query).status == 302
    (flow,) = items_of_type(vault, "flow")
    assert flow["status"]["S"] == "pending_binding"
    user = UserRef(flow["user_iss"]["S"], flow["user_sub"]["S"])
    granted = [s["S"] for s in flow["granted_scopes"]["L"]]
    context = token_context(user, "calendar", grant_id=flow["grant_id"]["S"], scopes=granted)
    envelope = vault.services.envelope
    tokens = TokenResponse(
        access_token=envelope.decrypt(flow["access_token"]["B"], context).decode(),
        refresh_token=envelope.decrypt(flow["refresh_token"]["B"], context).decode(),
        expires_in=0,
        scopes=None,
    )
    assert vault.server.introspect(tokens.access_token)["active"] is True
    return agent, started.json["flow_id"], flow, tokens


def test_row_33_an_unbound_consent_is_revoked_upstream_when_it_expires(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent, flow_id, _, issued = unbound_flow(vault)
    with unchanged(vault):  # before it expires the sweep leaves it alone
        assert scheduled_sweep()["revoked_flows"] == 0
    assert vault.server.introspect(issued.access_token)["active"] is True
    vault.clock.advance(vault.services.config.flow_ttl_seconds + 1)

    assert scheduled_sweep() == {
        "status": "swept",
        "revoked_flows": 1,
        "expired_sessions": 0,  # the agent's session outlives the flow
        "revoked_tokens": 0,
    }

    dead_at_provider(vault, issued)
    (flow,) = items_of_type(vault, "flow")
    assert flow["status"]["S"] == "expired"
    assert not {"refresh_token", "access_token", "gsi1pk", "gsi2pk"} & set(flow)
    audit_events.expect("grant.revoke", "expired_unbound", flow_id=flow_id, upstream="revoked")
    with unchanged(vault):  # swept once
        assert scheduled_sweep()["revoked_flows"] == 0
    completed = agent.complete(flow_id, vault.user("alice"))
    assert completed.status in (404, 409), completed.body
    assert not items_of_type(vault, "grant")


def test_row_33_an_unbound_consent_whose_revocation_failed_is_retried_by_the_next_sweep(
    vault: Vault,
) -> None:
    _, _, _, issued = unbound_flow(vault)
    vault.clock.advance(vault.services.config.flow_ttl_seconds + 1)
    vault.server.set_faults(revocation_endpoint={"status": 503, "remaining": 5})

    assert scheduled_sweep()["revoked_flows"] == 0

    (flow,) = items_of_type(vault, "flow")
    assert flow["status"]["S"] == "expired" and "refresh_token" in flow  # kept for a retry
    vault.server.clear_faults()
    assert scheduled_sweep()["revoked_flows"] == 1
    dead_at_provider(vault, issued)


def test_row_33_revoking_a_user_revokes_their_unbound_consents(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent, flow_id, flow, issued = unbound_flow(vault)
    user = {"iss": flow["user_iss"]["S"], "sub": flow["user_sub"]["S"]}

    answer = vault.admin({"user": user})

    assert answer.status == 200, answer.body
    assert answer.json == {
        "revoked_grants": 0,
        "revoked_tokens": 0,
        "revoked_flows": 1,
        "revoked_machine_tokens": 0,
    }
    dead_at_provider(vault, issued)
    (stored,) = items_of_type(vault, "flow")
    assert stored["status"]["S"] == "revoked" and "refresh_token" not in stored
    # the flow can no longer be bound
    completed = agent.complete(flow_id, vault.user("alice"))
    assert_problem(completed, 409, "flow_not_pending")
    assert not items_of_type(vault, "grant")


# --- row 35: a ciphertext moved within a session ------------------------------------------------


def test_row_35_a_broader_token_moved_to_a_narrower_item_of_the_same_session_is_never_served(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    narrow = agent.token("calendar", ["calendar.read"]).json["access_token"]
    broad = agent.token("calendar", ["calendar.read", "calendar.write"]).json["access_token"]
    items = {tuple(s["S"] for s in i["scopes"]["L"]): i for i in items_of_type(vault, "token")}
    target = items[("calendar.read",)]
    put_item(
        vault,
        {**target, "access_token": items[("calendar.read", "calendar.write")]["access_token"]},
    )
    audit_events.clear()

    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.read"])

    assert_problem(answer, 500, "stored_data_invalid")
    assert broad not in answer.body and narrow not in answer.body
    audit_events.expect(
        "token.issue", "denied", reason="stored_data_invalid", session_id=agent.session_id
    )
    # the broader item itself still serves its own scopes
    assert agent.token("calendar", ["calendar.read", "calendar.write"]).json["access_token"] == (
        broad
    )


def test_row_35_a_grant_whose_scopes_were_widened_in_the_table_is_never_used(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    grant = grant_item(vault)
    put_item(vault, {**grant, "scopes": {"L": [{"S": "calendar.read"}, {"S": "calendar.write"}]}})
    audit_events.clear()
    before = refreshes(vault)

    answer = agent.token("calendar", ["calendar.write"])

    assert_problem(answer, 500, "stored_data_invalid")
    assert refreshes(vault) == before, "the refresh token must not reach the provider"
    assert not items_of_type(vault, "token")
    audit_events.expect("token.issue", "denied", reason="stored_data_invalid")


# --- row 36: sessions renewed forever -----------------------------------------------------------


def renew(agent: Any, user: dict[str, str] | None = None) -> Any:
    body = {"user": user} if user is not None else {}
    return agent.call("POST", f"/v1/sessions/{agent.session_id}/renew", body)


def test_row_36_renewal_past_the_first_window_needs_a_fresh_user_identity(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = vault.agent("mail-agent-role")  # asserts user ids: no identity token to expire
    alice = {"user_id": "alice"}
    assert agent.start_session(alice).status == 201
    window = vault.services.config.session_ttl_seconds
    vault.clock.advance(window - 120)
    assert renew(agent).status == 200  # inside the first window: no identity needed
    vault.clock.advance(240)
    audit_events.clear()

    with unchanged(vault):
        refused = renew(agent)

    assert_problem(refused, 401, "identity_required")
    audit_events.expect("session.renew", "denied", reason="identity_required")
    assert_problem(renew(agent, {"user_id": "mallory"}), 403, "user_mismatch")
    assert renew(agent, alice).status == 200
    vault.clock.advance(window - 120)
    assert renew(agent).status == 200  # a new window from the fresh identity


def test_row_36_a_session_never_lives_past_its_absolute_maximum(vault: Vault) -> None:
    agent = vault.agent("mail-agent-role")
    alice = {"user_id": "alice"}
    started = agent.start_session(alice)
    created = started.json["created_at"]
    config = vault.services.config
    cap = created + config.session_max_life_seconds
    expires = started.json["expires_at"]
    while expires < cap:
        vault.clock.advance(config.session_ttl_seconds - 60)
        renewed = renew(agent, alice)
        assert renewed.status == 200, renewed.body
        expires = renewed.json["expires_at"]
        assert expires <= cap
    assert expires == cap
    vault.clock.advance(cap - vault.clock() + 1)

    assert_problem(renew(agent, alice), 410, "session_ended")
    assert_problem(agent.token("calendar", ["mail.read"]), 410, "session_ended")
