"""The vault's flows end to end: handlers + in-process moto + the real oidc-provider."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.security.helpers import AuditLog
from tests.support.harness import (
    Vault,
    binding_code_of,
    connected,
    reap,
    revoke_refresh_at_provider,
    task_stopped,
)
from vault.models import UserRef


def test_session_consent_binding_and_token(vault: Vault) -> None:
    agent = vault.agent()
    started = agent.start_session(vault.user("alice"))
    assert started.status == 201, started.body
    assert started.json["user"]["sub"] == "alice"
    assert started.json["task_id"] == agent.task_id
    assert started.json["jkt"] == agent.key.thumbprint()

    missing = agent.token("calendar", ["calendar.read"])
    assert missing.status == 403 and missing.code == "consent_required"
    assert missing.json["missing_scopes"] == ["calendar.read"]
    assert missing.json["authorizations_path"] == f"/v1/sessions/{agent.session_id}/authorizations"

    bound = vault.connect(agent, scopes=("calendar.read", "calendar.write"))
    assert bound.status == 200, bound.body
    assert bound.json["scopes"] == ["calendar.read", "calendar.write"]

    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200, issued.body
    assert issued.headers["cache-control"] == "no-store"
    assert issued.json["scope"] == "calendar.read"
    assert 0 < issued.json["expires_in"] <= 3600
    token = issued.json["access_token"]
    assert vault.server.calendar(token)[0] == 200
    # narrowed by a real refresh request: the token carries only what was asked for
    assert vault.server.introspect(token)["scope"] == "calendar.read"
    assert "refresh_token" not in issued.json


def test_the_callback_redirects_to_the_return_url_with_the_flow(vault: Vault) -> None:
    agent = vault.agent()
    agent.start_session(vault.user("alice"))
    started = agent.authorize(
        "calendar", ["calendar.read"], return_url="http://localhost:3000/return"
    )
    assert started.status == 201
    url = started.json["authorization_url"]
    assert "code_challenge_method=S256" in url and "prompt=consent" in url
    assert "resource=" in url and "offline_access" in url
    back = vault.callback(vault.consent_at_provider(url, "alice"))
    assert back.status == 302
    assert back.headers["location"] == (
        f"http://localhost:3000/return?flow_id={started.json['flow_id']}&status=pending_binding"
        f"&binding_code={binding_code_of(back)}"
    )
    # not usable before binding
    assert agent.token("calendar", ["calendar.read"]).code == "consent_required"


def test_client_secret_post_providers_work_too(vault: Vault) -> None:
    agent, _ = connected(vault, scopes=("calendar.read",))
    bound = vault.connect(agent, provider="calendar-post", scopes=("calendar.read",))
    assert bound.status == 200, bound.body
    issued = agent.token("calendar-post", ["calendar.read"])
    assert issued.status == 200, issued.body
    assert vault.server.calendar(issued.json["access_token"])[0] == 200


def test_warm_retrieval_is_one_query_one_jti_write_no_kms_no_provider(vault: Vault) -> None:
    agent, _ = connected(vault)
    first = agent.token("calendar", ["calendar.read"])
    assert first.status == 200
    refreshes = vault.server.stats()["token_requests"]["refresh_token"]
    vault.counter.reset()
    for _ in range(5):
        again = agent.token("calendar", ["calendar.read"])
        assert again.json["access_token"] == first.json["access_token"]
    assert dict(vault.counter.counts) == {"dynamodb:Query": 5, "dynamodb:PutItem": 5}
    assert vault.server.stats()["token_requests"]["refresh_token"] == refreshes


def test_each_session_and_scope_set_gets_its_own_token(vault: Vault) -> None:
    agent, _ = connected(vault)
    read = agent.token("calendar", ["calendar.read"]).json["access_token"]
    both = agent.token("calendar", ["calendar.write", "calendar.read"])
    assert both.json["scope"] == "calendar.read calendar.write"
    assert both.json["access_token"] != read
    other_task = vault.agent()
    other_task.start_session(vault.user("alice"))
    theirs = other_task.token("calendar", ["calendar.read"])
    assert theirs.status == 200 and theirs.json["access_token"] != read


def test_an_expiring_token_is_refreshed_and_the_rotated_refresh_token_kept(vault: Vault) -> None:
    agent, _bound = connected(vault)
    first = agent.token("calendar", ["calendar.read"]).json["access_token"]
    user = UserRef(vault.server.issuer, "alice")
    before = vault.services.store.grants.get(user, "calendar-agent", "calendar")
    vault.clock.advance(3600 - 30)  # inside the last minute of its life
    second = agent.token("calendar", ["calendar.read"])
    assert second.status == 200 and second.json["access_token"] != first
    after = vault.services.store.grants.get(user, "calendar-agent", "calendar")
    assert before is not None and after is not None
    assert after.version == before.version + 1
    assert after.refresh_token_ct != before.refresh_token_ct  # rotated, and stored
    # the stored (rotated) refresh token is the live one: minting another token uses it
    assert agent.token("calendar", ["calendar.write"]).status == 200


def test_twenty_concurrent_requests_make_one_refresh(vault: Vault) -> None:
    agent, _ = connected(vault)
    before = vault.server.stats()["token_requests"]["refresh_token"]
    results = vault.concurrent_tokens(agent, 20)
    assert all(isinstance(r, dict) for r in results), results
    assert len(results) == 20
    assert len({r["access_token"] for r in results}) == 1
    assert vault.server.stats()["token_requests"]["refresh_token"] - before == 1


def test_session_get_and_delete_revoke_its_tokens_upstream(vault: Vault) -> None:
    agent, _ = connected(vault)
    token = agent.token("calendar", ["calendar.read"]).json["access_token"]
    shown = agent.call("GET", f"/v1/sessions/{agent.session_id}")
    assert shown.status == 200 and shown.json["status"] == "active"
    ended = agent.end()
    assert ended.status == 200 and ended.json == {
        "session_id": agent.session_id,
        "status": "ended",
        "revoked_tokens": 1,
    }
    assert vault.server.introspect(token) == {"active": False}
    assert agent.token("calendar", ["calendar.read"]).code == "session_ended"
    assert agent.call("GET", f"/v1/sessions/{agent.session_id}").json["status"] == "ended"
    again = agent.end()  # idempotent
    assert again.status == 200 and again.json["revoked_tokens"] == 0


def test_sessions_expire_by_the_clock(vault: Vault) -> None:
    agent, _ = connected(vault)
    vault.clock.advance(3601)
    answer = agent.token("calendar", ["calendar.read"])
    assert answer.status == 410 and answer.code == "session_ended"
    assert agent.call("GET", f"/v1/sessions/{agent.session_id}").json["status"] == "expired"


def test_a_stopped_task_ends_its_sessions_and_kills_their_tokens(vault: Vault) -> None:
    doomed, _ = connected(vault)
    token = doomed.token("calendar", ["calendar.read"]).json["access_token"]
    survivor = vault.agent()
    survivor.start_session(vault.user("bob"))
    event = task_stopped(doomed.task_id)
    result = reap(event)
    assert result == {
        "status": "reaped",
        "task_id": doomed.task_id,
        "ended_sessions": 1,
        "revoked_tokens": 1,
    }
    assert doomed.token("calendar", ["calendar.read"]).code == "session_ended"
    assert vault.server.introspect(token) == {"active": False}
    assert survivor.call("GET", f"/v1/sessions/{survivor.session_id}").json["status"] == "active"


def test_a_replayed_task_stopped_event_changes_nothing_and_revokes_nothing_twice(
    vault: Vault,
) -> None:
    """The reaper has no idempotency layer: ending a task's sessions is idempotent by
    construction. The same event delivered again (EventBridge delivers at least once) leaves
    the same stored state, revokes nothing upstream again and ends no session again; its one
    audit event says it found nothing left to end."""
    doomed, _ = connected(vault)
    doomed.token("calendar", ["calendar.read"])
    event = task_stopped(doomed.task_id)
    audit = AuditLog()
    logging.getLogger("agent-vault").addHandler(audit)
    try:
        first = reap(event)
        assert first["ended_sessions"] == 1 and first["revoked_tokens"] == 1
        stored = vault.snapshot()
        revocations = vault.server.stats()["revocations"]
        assert revocations >= 1
        first_events = list(audit.events)
        assert [e["action"] for e in first_events].count("session.end") == 1
        audit.clear()
        vault.counter.reset()

        again = reap(event)
        assert again == {
            "status": "reaped",
            "task_id": doomed.task_id,
            "ended_sessions": 0,
            "revoked_tokens": 0,
        }
        assert vault.snapshot() == stored
        assert vault.server.stats()["revocations"] == revocations
        assert [(e["action"], e["outcome"]) for e in audit.events] == [("task.stopped", "reaped")]
        assert audit.events[0]["count"] == 0 and audit.events[0]["trigger"] == event["id"]
        # nothing was written: the stop record is kept as first written, the session as ended
        assert not {k for k in vault.counter.counts if k.startswith("kms:")}
        assert vault.counter.counts["dynamodb:PutItem"] == 1  # the stop record's refused put
        writes = {"UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
        assert not {k for k in vault.counter.counts if k.split(":")[1] in writes}
    finally:
        logging.getLogger("agent-vault").removeHandler(audit)
    assert doomed.token("calendar", ["calendar.read"]).code == "session_ended"


@pytest.mark.parametrize(
    "event",
    [
        {},
        {
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "id": "x",
            "detail": {"taskArn": "not-an-arn", "lastStatus": "STOPPED"},
        },
        {
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "id": "x",
            "detail": {
                "taskArn": "arn:aws:ecs:eu-west-1:123456789012:task/c/abc",
                "lastStatus": "RUNNING",
            },
        },
    ],
)
def test_the_reaper_ignores_what_is_not_a_stopped_task(vault: Vault, event: dict[str, Any]) -> None:
    before = vault.snapshot()
    assert reap(event) == {"status": "ignored"}
    assert vault.snapshot() == before


def test_a_trusted_agent_may_name_the_user_and_others_may_not(vault: Vault) -> None:
    trusted = vault.agent(role="mail-agent-role")
    started = trusted.start_session({"user_id": "carol"})
    assert started.status == 201
    assert started.json["user"] == {"iss": "urn:agent-vault:asserted:mail-agent", "sub": "carol"}
    untrusted = vault.agent()
    refused = untrusted.start_session({"user_id": "carol"})
    assert refused.status == 401 and refused.code == "invalid_user_token"
    assert "may_assert_user_id" in refused.json["detail"]


def test_admin_revocation_by_user_leaves_other_users_alone(vault: Vault) -> None:
    alice, _alice_grant = connected(vault, username="alice")
    bob, _ = connected(vault, username="bob")
    alice_token = alice.token("calendar", ["calendar.read"]).json["access_token"]
    bob_token = bob.token("calendar", ["calendar.read"]).json["access_token"]
    answer = vault.admin({"user": {"iss": vault.server.issuer, "sub": "alice"}})
    assert answer.status == 200, answer.body
    assert answer.json["revoked_grants"] == 1
    assert vault.server.introspect(alice_token) == {"active": False}
    assert alice.token("calendar", ["calendar.read"]).code == "consent_required"
    assert vault.server.introspect(bob_token)["active"] is True
    assert bob.token("calendar", ["calendar.read"]).json["access_token"] == bob_token


def test_admin_revocation_by_grant_and_by_provider(vault: Vault) -> None:
    alice, grant = connected(vault, username="alice")
    alice.token("calendar", ["calendar.read"])
    assert vault.admin({"grant_id": grant["grant_id"]}).json["revoked_grants"] == 1
    assert vault.admin({"grant_id": grant["grant_id"]}).json["revoked_grants"] == 0
    bob, _ = connected(vault, username="bob")
    assert vault.admin({"provider": "calendar"}).json["revoked_grants"] == 1
    assert bob.token("calendar", ["calendar.read"]).code == "consent_required"


def test_only_admins_may_revoke(vault: Vault) -> None:
    agent, _ = connected(vault)
    before = vault.snapshot()
    answer = agent.call("POST", "/v1/revocations", {"agent": "calendar-agent"}, proof=False)
    assert answer.status == 403 and answer.code == "forbidden"
    assert vault.snapshot() == before


def test_a_broken_grant_asks_for_consent_once_and_never_retries(vault: Vault) -> None:
    agent, _grant = connected(vault)
    agent.token("calendar", ["calendar.read"])
    revoke_refresh_at_provider(vault)  # the user revokes the vault's access at the provider
    before = vault.server.stats()["token_requests"]["refresh_token"]
    first = agent.token("calendar", ["calendar.write"])
    assert first.code == "consent_required" and first.json["reason"] == "grant_broken"
    for _ in range(3):
        again = agent.token("calendar", ["calendar.write"])
        assert again.code == "consent_required" and again.json["reason"] == "grant_broken"
    assert vault.server.stats()["token_requests"]["refresh_token"] - before == 1
    # consent again repairs it
    assert vault.connect(agent, scopes=("calendar.read", "calendar.write")).status == 200
    assert agent.token("calendar", ["calendar.write"]).status == 200


def test_reconsent_replaces_the_grant_and_drops_tokens_minted_from_the_old_one(
    vault: Vault,
) -> None:
    agent, old = connected(vault, scopes=("calendar.read", "calendar.write"))
    agent.token("calendar", ["calendar.write"])
    new = vault.connect(agent, scopes=("calendar.read",))
    assert new.status == 200 and new.json["grant_id"] != old["grant_id"]
    answer = agent.token("calendar", ["calendar.write"])
    assert answer.code == "consent_required" and answer.json["missing_scopes"] == ["calendar.write"]


def test_a_live_session_is_renewed_for_its_own_user_only(vault: Vault) -> None:
    agent, _ = connected(vault)
    vault.clock.advance(3000)
    path = f"/v1/sessions/{agent.session_id}/renew"
    stranger = agent.call("POST", path, {"user": vault.user("bob")})
    assert stranger.status == 403 and stranger.code == "user_mismatch"
    renewed = agent.call("POST", path, {"user": vault.user("alice")})
    assert renewed.status == 200, renewed.body
    vault.clock.advance(3000)  # past the original expiry, inside the renewed one
    assert agent.token("calendar", ["calendar.read"]).status == 200
    agent.end()
    assert agent.call("POST", path, {}).code == "session_ended"
