"""SECURITY.md row 46: an application asks for another user's connections, or revokes another
user's grant. Only the logged-in user's own grants to the calling agent are listed or revoked;
anything else is the same 404 as a grant that does not exist, audited, and changes nothing.

The user is the identity token's issuer and subject (verified as `/complete` verifies it:
signature, issuer, audience, expiry): a forged, expired or wrong-audience token, or none, is a
401; a role that is no configured agent is a 403. Real handlers over moto and the real
oidc-provider (tests/support/harness.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    assert_problem,
    connected_agent,
    items_of_type,
    unchanged,
)
from tests.security.test_attacks_identity import OTHER_ACCOUNT
from tests.security.test_attacks_storage import stored_refresh_token
from tests.support.agent import TestAgent
from tests.support.apigw import ACCOUNT, HttpAnswer
from tests.support.harness import Vault
from vault import jsondoc

HEADER = "X-Agent-Vault-User-Token"


def listing(app: TestAgent, token: str | None, query: dict[str, str] | None = None) -> HttpAnswer:
    headers = {HEADER: token} if token is not None else {}
    return app.call("GET", "/v1/connections", proof=False, headers=headers, query=query)


def revoking(app: TestAgent, token: str | None, grant_id: str) -> HttpAnswer:
    headers = {HEADER: token} if token is not None else {}
    return app.call("DELETE", f"/v1/connections/{grant_id}", proof=False, headers=headers)


def grant_ids(answer: HttpAnswer) -> set[str]:
    assert answer.status == 200, answer.body
    return {c["grant_id"] for c in answer.json["items"]}


def grant_of(vault: Vault, user: str, agent: str) -> str:
    (grant,) = [
        g["grant_id"]["S"]
        for g in items_of_type(vault, "grant")
        if g["user_sub"]["S"] == user and g["agent"]["S"] == agent
    ]
    return grant


def reencoded(token: str, **claims: object) -> str:
    """The token with its payload changed and its signature kept (a forgery)."""
    header, _, signature = token.split(".")
    data = {**jsondoc.unverified_jws(token)[1], **claims}
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


@pytest.fixture
def grants(vault: Vault) -> dict[str, Any]:
    """alice and bob each connected to the calendar agent; alice also to the mail agent."""
    return {
        "alice": connected_agent(vault, "alice"),
        "bob": connected_agent(vault, "bob"),
        "alice_mail": connected_agent(
            vault, "alice", scopes=("calendar.read",), role="mail-agent-role"
        ),
    }


def test_row_46_a_user_lists_only_their_own_connections_to_the_calling_agent(
    vault: Vault, grants: dict[str, Any], audit_events: AuditLog
) -> None:
    app = vault.agent()  # another task of the calendar agent: the application's
    alice, bob = vault.id_tokens["alice"], vault.id_tokens["bob"]
    alices = grant_of(vault, "alice", "calendar-agent")
    assert grant_ids(listing(app, alice)) == {alices}
    assert grant_ids(listing(app, bob)) == {grant_of(vault, "bob", "calendar-agent")}
    # the mail agent's application sees alice's grant to the mail agent only
    mail_app = vault.agent("mail-agent-role")
    assert grant_ids(listing(mail_app, alice)) == {grant_of(vault, "alice", "mail-agent")}
    assert grant_ids(listing(mail_app, bob)) == set()
    # the user comes from the token, never from a parameter
    for smuggled in ({"user_sub": "bob"}, {"user_iss": vault.server.issuer, "user_sub": "bob"}):
        assert_problem(listing(app, alice, smuggled), 400, "invalid_filter")
    assert_problem(listing(app, alice, {"agent": "mail-agent"}), 400, "invalid_filter")

    (shown,) = listing(app, alice).json["items"]
    assert shown == {
        "grant_id": alices,
        "agent": "calendar-agent",
        "provider": "calendar",
        "scopes": ["calendar.read", "calendar.write"],
        "status": "active",
        "broken_reason": None,
        "since": int(grant_item_of(vault, "alice", "calendar-agent")["created_at"]["N"]),
        "last_used_at": None,
    }
    assert "refresh" not in json.dumps(shown) and "alice" not in json.dumps(shown)
    event = audit_events.expect("connections.list", "allowed", agent="calendar-agent")
    assert event["principal"] == app.arn


def test_last_used_moves_when_a_token_is_minted_from_the_grant_not_when_one_is_reused(
    vault: Vault,
) -> None:
    agent = connected_agent(vault, "alice")
    app = vault.agent()
    token = vault.id_tokens["alice"]
    (before,) = listing(app, token).json["items"]
    assert before["last_used_at"] is None  # consent mints no session token
    vault.clock.advance(5)
    asked_at = int(vault.clock())  # the clock is the wall clock, moved by the test
    assert agent.token("calendar", ["calendar.read"]).status == 200  # a refresh mints it
    answered_at = int(vault.clock())
    (after,) = listing(app, token).json["items"]
    minted_at = after["last_used_at"]
    assert asked_at <= minted_at <= answered_at
    assert after["since"] == before["since"] < asked_at
    vault.clock.advance(5)  # a move of last_used_at now shows
    assert agent.token("calendar", ["calendar.read"]).status == 200  # the cached token again
    (again,) = listing(app, token).json["items"]
    assert again["last_used_at"] == minted_at


def test_row_46_alice_cannot_revoke_bobs_grant_nor_another_agents(
    vault: Vault, grants: dict[str, Any], audit_events: AuditLog
) -> None:
    app = vault.agent()
    alice, bob = vault.id_tokens["alice"], vault.id_tokens["bob"]
    bobs = grant_of(vault, "bob", "calendar-agent")
    alices_mail = grant_of(vault, "alice", "mail-agent")
    attempts = [
        (app, alice, bobs),  # another user's grant, same agent
        (app, alice, alices_mail),  # the user's own grant, but to another agent
        (vault.agent("mail-agent-role"), bob, bobs),  # another agent's role
        (app, alice, "grt_" + "A" * 22),  # no such grant: the same answer
        (app, alice, "not-a-grant-id"),
    ]
    with unchanged(vault):
        for caller, token, grant_id in attempts:
            answer = assert_problem(revoking(caller, token, grant_id), 404, "grant_not_found")
            assert "bob" not in answer["detail"] and "mail" not in answer["detail"]
    refused = audit_events.expect(
        "connections.revoke", "denied", grant_id=bobs, agent="calendar-agent"
    )
    assert refused["reason"] == "grant_not_found"
    assert refused["user"]["sub"] == "alice"
    # bob's grant still works for bob's agent
    assert grants["bob"].token("calendar", ["calendar.read"]).status == 200


def test_row_46_revoking_a_connection_revokes_it_upstream_and_ends_its_tokens(
    vault: Vault, grants: dict[str, Any], audit_events: AuditLog
) -> None:
    agent = grants["alice"]
    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200, issued.body
    refresh_token = stored_refresh_token(vault, grant_item_of(vault, "alice", "calendar-agent"))
    app = vault.agent()
    alices = grant_of(vault, "alice", "calendar-agent")

    answer = revoking(app, vault.id_tokens["alice"], alices)
    assert answer.status == 200, answer.body
    assert answer.json == {"grant_id": alices, "status": "revoked", "revoked_tokens": 1}
    assert vault.server.introspect(issued.json["access_token"]) == {"active": False}
    assert vault.server.introspect(refresh_token, client_id="agent-vault") == {"active": False}
    assert_problem(agent.token("calendar", ["calendar.read"]), 403, "consent_required")
    assert grant_ids(listing(app, vault.id_tokens["alice"])) == set()
    audit_events.expect("connections.revoke", "revoked", grant_id=alices)
    audit_events.expect("grant.revoke", "revoked", grant_id=alices, reason="user_revocation")
    # the others' grants live on
    assert grants["bob"].token("calendar", ["calendar.read"]).status == 200
    assert grants["alice_mail"].token("calendar", ["calendar.read"]).status == 200
    # once gone, the same request is a 404 like any unknown grant
    assert_problem(revoking(app, vault.id_tokens["alice"], alices), 404, "grant_not_found")


def test_a_revocation_already_under_way_is_finished_not_refused(vault: Vault) -> None:
    """A concurrent revocation (this user's, or an admin's) that has marked the grant `revoking`
    and not finished: the user's DELETE is idempotent, answers 200 and finishes the job."""
    connected_agent(vault, "alice")
    app = vault.agent()
    alices = grant_of(vault, "alice", "calendar-agent")
    grant = vault.services.store.grants.by_id(alices)
    assert grant is not None
    assert vault.services.store.grants.mark_revoking(grant) is not None  # the other one's step 1
    (shown,) = listing(app, vault.id_tokens["alice"]).json["items"]
    assert shown["status"] == "revoking"
    answer = revoking(app, vault.id_tokens["alice"], alices)
    assert answer.status == 200, answer.body
    assert answer.json["status"] == "revoked"
    assert vault.services.store.grants.by_id(alices) is None


def grant_item_of(vault: Vault, user: str, agent: str) -> dict[str, Any]:
    (item,) = [
        g
        for g in items_of_type(vault, "grant")
        if g["user_sub"]["S"] == user and g["agent"]["S"] == agent
    ]
    return item


@pytest.mark.parametrize("route", ["list", "revoke"])
def test_row_46_no_forged_expired_or_foreign_identity_token_names_a_user(
    vault: Vault, grants: dict[str, Any], route: str
) -> None:
    app = vault.agent()
    alice = vault.id_tokens["alice"]
    bobs = grant_of(vault, "bob", "calendar-agent")

    def call(token: str | None) -> HttpAnswer:
        return listing(app, token) if route == "list" else revoking(app, token, bobs)

    bad = [
        None,  # no header
        "",
        "not-a-jwt",
        "x" * 9000,
        reencoded(alice, sub="bob"),  # alice's token claiming to be bob's
        reencoded(alice, aud="another-app"),
        reencoded(alice, iss="https://evil.example"),
    ]
    with unchanged(vault):
        for token in bad:
            assert_problem(call(token), 401, "invalid_user_token")
        vault.clock.advance(2 * 24 * 3600)  # alice's real token has expired
        assert_problem(call(alice), 401, "invalid_user_token")


def test_row_46_a_token_for_another_audience_names_no_user(vault: Vault) -> None:
    connected_agent(vault, "alice")
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    data["user_identity_issuers"][0]["audiences"] = ["another-app"]
    vault.redeploy(data)  # alice's real, unexpired token is for the app, not "another-app"
    app = vault.agent()
    with unchanged(vault):
        assert_problem(listing(app, vault.id_tokens["alice"]), 401, "invalid_user_token")
        alices = grant_of(vault, "alice", "calendar-agent")
        assert_problem(revoking(app, vault.id_tokens["alice"], alices), 401, "invalid_user_token")


def test_row_46_only_a_configured_agents_role_calls_the_connections_routes(
    vault: Vault, grants: dict[str, Any]
) -> None:
    alice = vault.id_tokens["alice"]
    alices = grant_of(vault, "alice", "calendar-agent")
    callers = [
        vault.agent("vault-admin"),  # the admin reads grants with the admin read API instead
        vault.agent("some-other-role"),
        TestAgent("calendar-agent-role", "task-9", vault.clock, account=OTHER_ACCOUNT),
    ]
    with unchanged(vault):
        for caller in callers:
            assert_problem(listing(caller, alice), 403, "unknown_agent")
            assert_problem(revoking(caller, alice, alices), 403, "unknown_agent")
    assert ACCOUNT != OTHER_ACCOUNT


def test_connections_page_and_refuse_bad_filters_and_foreign_cursors(
    vault: Vault, grants: dict[str, Any]
) -> None:
    # a second grant of alice's to the calendar agent, at the other provider
    connected_agent(vault, "alice", scopes=("calendar.read",), provider="calendar-post")
    app = vault.agent()
    alice, bob = vault.id_tokens["alice"], vault.id_tokens["bob"]
    first = listing(app, alice, {"limit": "1"})
    assert first.status == 200 and len(first.json["items"]) == 1, first.body
    cursor = first.json["next_cursor"]
    assert cursor is not None
    second = listing(app, alice, {"limit": "1", "cursor": cursor})
    assert second.status == 200, second.body
    pages = first.json["items"] + second.json["items"]
    if second.json["next_cursor"] is not None:
        third = listing(app, alice, {"limit": "1", "cursor": second.json["next_cursor"]})
        assert third.json == {"items": [], "next_cursor": None}
    assert sorted(c["provider"] for c in pages) == ["calendar", "calendar-post"]
    assert grant_ids(listing(app, alice, {"provider": "calendar-post"})) == {
        c["grant_id"] for c in pages if c["provider"] == "calendar-post"
    }
    assert grant_ids(listing(app, alice, {"status": "broken"})) == set()
    with unchanged(vault):
        # alice's cursor is no key of bob's partition
        assert_problem(listing(app, bob, {"limit": "1", "cursor": cursor}), 400, "invalid_cursor")
        for query in (
            {"limit": "0"},
            {"limit": "101"},
            {"limit": "x"},
            {"provider": "nope"},
            {"status": "gone"},
            {"cursor": "!!!"},
            {"task": "t"},
        ):
            answer = listing(app, alice, query)
            assert answer.status == 400 and answer.code in ("invalid_filter", "invalid_cursor")


def test_a_revocation_the_provider_did_not_confirm_is_pending_and_retried(vault: Vault) -> None:
    agent = connected_agent(vault, "alice")
    assert agent.token("calendar", ["calendar.read"]).status == 200
    app = vault.agent()
    alice = vault.id_tokens["alice"]
    alices = grant_of(vault, "alice", "calendar-agent")
    vault.server.set_faults(revocation_endpoint={"status": 500, "remaining": 10})
    pending = revoking(app, alice, alices)
    assert pending.status == 200, pending.body
    assert pending.json["status"] == "revoke_pending"
    (shown,) = listing(app, alice).json["items"]
    assert (shown["status"], shown["broken_reason"]) == ("broken", "revoke_pending")
    assert_problem(agent.token("calendar", ["calendar.read"]), 403, "consent_required")
    vault.server.clear_faults()
    again = revoking(app, alice, alices)  # the user (or an admin) tries again
    assert again.status == 200 and again.json["status"] == "revoked", again.body
    assert grant_ids(listing(app, alice)) == set()
