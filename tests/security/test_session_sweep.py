"""The scheduled sweep ends the sessions that expired without being ended (a known gap until
now, docs/threat-model.md: their `session.ended` event waited for DynamoDB's TTL, a day or
more, and their handed-out tokens stayed alive upstream). Each expired session is ended by
`revocation.end_session`, as any end is (reason `expired`): its handed-out tokens revoked at the
provider, one `session.ended` event; a renewal racing the sweep wins; a second sweep finds
nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.helpers import AuditLog, items_of_type, unchanged
from tests.support.harness import Vault, connected, scheduled_sweep
from tests.support.lifecycle import lifecycle
from vault.revocation import sweep_expired_sessions
from vault.store.schema import LIVE_SHARDS, live_shard

CALENDAR = ["calendar.read"]


def _entry(vault: Vault, session_id: str) -> dict[str, Any]:
    (entry,) = [
        e for e in items_of_type(vault, "task_session") if e["sk"]["S"] == f"SESSION#{session_id}"
    ]
    return entry


def _ttl(vault: Vault) -> int:
    return vault.services.config.session_ttl_seconds


def test_an_expired_session_is_ended_by_the_sweep_and_its_token_revoked(
    vault: Vault, audit_events: AuditLog
) -> None:
    published = lifecycle(vault)
    agent, _ = connected(vault)
    issued = agent.token("calendar", CALENDAR)
    assert issued.status == 200, issued.body
    published.events()
    entry = _entry(vault, agent.session_id)
    assert entry["gsi1pk"]["S"] == f"LIVE#{live_shard(agent.session_id)}"
    with unchanged(vault):  # not expired yet: the sweep leaves it alone
        assert scheduled_sweep()["expired_sessions"] == 0

    vault.clock.advance(_ttl(vault) + 1)
    swept = scheduled_sweep()

    assert (swept["expired_sessions"], swept["revoked_tokens"]) == (1, 1)
    assert vault.server.introspect(issued.json["access_token"]) == {"active": False}
    (session,) = items_of_type(vault, "session")
    assert (session["status"]["S"], session["ended_reason"]["S"]) == ("ended", "expired")
    assert not items_of_type(vault, "token")
    assert "gsi1pk" not in _entry(vault, agent.session_id)  # out of the sweep's index
    audit_events.expect("session.end", "ended", reason="expired", session_id=agent.session_id)
    audit_events.expect("sessions.sweep", "done", count=1, revoked_tokens=1)
    # the bearer token left the vault: revoked as at any end, which at this provider kills the
    # grant too (`revocation_revokes_grant`), reported as such
    events = published.events()
    assert [(e["detail-type"], e["detail"].get("reason")) for e in events] == [
        ("session.ended", "expired"),
        ("grant.broken", "revoked_with_session"),
    ], events
    with unchanged(vault):  # swept once
        assert scheduled_sweep()["expired_sessions"] == 0
    assert published.events() == []


def test_a_renewed_session_is_not_ended_and_its_entry_follows_the_new_expiry(
    vault: Vault,
) -> None:
    agent, _ = connected(vault)
    vault.clock.advance(_ttl(vault) - 60)
    answer = agent.call("POST", f"/v1/sessions/{agent.session_id}/renew", {})
    assert answer.status == 200, answer.body
    renewed_until = answer.json["expires_at"]
    vault.clock.advance(61)  # past the first expiry, before the renewed one
    assert scheduled_sweep()["expired_sessions"] == 0
    (session,) = items_of_type(vault, "session")
    assert session["status"]["S"] == "active"
    entry = _entry(vault, agent.session_id)
    assert entry["gsi1sk"]["S"].startswith(f"{renewed_until:012d}#")
    assert int(entry["ttl"]["N"]) == renewed_until + 86400  # kept a day past the new expiry
    assert agent.token("calendar", CALENDAR).status == 200
    vault.clock.advance(renewed_until - int(vault.clock()) + 1)
    assert scheduled_sweep()["expired_sessions"] == 1


def test_a_renewal_racing_the_sweep_wins(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, _ = connected(vault)
    store = vault.services.store.sessions
    (session,) = items_of_type(vault, "session")
    expiry = int(session["expires_at"]["N"])
    vault.clock.advance(_ttl(vault) + 1)  # the sweep's clock: past the expiry
    real_get = store.get
    raced: list[bool] = []

    def read_then_renewed(session_id: str) -> Any:
        found = real_get(session_id)
        if not raced:  # another container renews it now, its clock a second short of the expiry
            raced.append(store.extend(session_id, expiry + 3600, now=expiry - 1))
        return found

    with monkeypatch.context() as patched:
        patched.setattr(store, "get", read_then_renewed)
        assert sweep_expired_sessions(vault.services) == (0, 0)
    assert raced == [True]
    (session,) = items_of_type(vault, "session")
    assert (session["status"]["S"], int(session["expires_at"]["N"])) == ("active", expiry + 3600)
    assert _entry(vault, agent.session_id)["gsi1sk"]["S"].startswith(f"{expiry + 3600:012d}#")
    assert agent.token("calendar", CALENDAR).status == 200


def test_a_session_ended_before_it_expired_leaves_the_index_without_an_audit_event(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent, _ = connected(vault)
    assert agent.end().status == 200
    vault.clock.advance(_ttl(vault) + 1)
    assert scheduled_sweep()["expired_sessions"] == 0
    assert "gsi1pk" not in _entry(vault, agent.session_id)
    assert audit_events.find("session.end", reason="expired") == []


def test_a_sweep_ends_at_most_its_limit_and_leaves_the_rest_to_the_next(vault: Vault) -> None:
    for user in ("alice", "bob"):
        connected(vault, username=user)
    vault.clock.advance(_ttl(vault) + 1)
    with unchanged(vault):  # out of time before the first
        assert sweep_expired_sessions(vault.services, budget_seconds=0) == (0, 0)
    assert sweep_expired_sessions(vault.services, limit=1)[0] == 1
    assert sorted(s["status"]["S"] for s in items_of_type(vault, "session")) == ["active", "ended"]
    assert sweep_expired_sessions(vault.services, limit=1)[0] == 1
    assert [s["status"]["S"] for s in items_of_type(vault, "session")] == ["ended", "ended"]
    with unchanged(vault):
        assert sweep_expired_sessions(vault.services) == (0, 0)


def test_the_index_is_spread_over_its_shards() -> None:
    shards = {live_shard(f"ses_{n:04d}") for n in range(200)}
    assert shards == set(range(LIVE_SHARDS))
