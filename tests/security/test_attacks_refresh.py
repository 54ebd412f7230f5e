"""SECURITY.md rows 38 and 40 (DESIGN flows 5 and 6, invariant 8), against oidc-provider:

- row 38: provider access tokens that live less than a minute (client `agent-vault-short`, 20 s)
  are still cached while valid and refreshed single-flight: one upstream refresh for N callers;
- row 40: a refresh whose answer is lost at a rotating provider (oidc-provider with
  `rotateRefreshToken`, fault `lose_answer`: it rotates the refresh token, then closes the
  connection unanswered) is never replayed with the possibly-spent refresh token, which would
  make the provider revoke the whole grant, other sessions' live tokens included. The grant is
  marked broken once (`refresh_outcome_unknown`) and consent is asked for again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    grant_item,
    items_of_type,
    unchanged,
)
from tests.security.test_attacks_storage import refreshes
from tests.support.harness import SECRET_PREFIX, Vault

SHORT_TTL = 20
"""The access-token lifetime of oidc-provider's `agent-vault-short` client (its default)."""


def add_provider(vault: Vault, name: str, **settings: Any) -> None:
    """Reconfigure the vault (a new deployment: fresh containers) with one more provider at the
    same oidc-provider, allowed to `calendar-agent` for calendar.read and calendar.write."""
    config = vault.services.config.model_dump(mode="json", exclude_unset=True)
    config["providers"][name] = {**config["providers"]["calendar"], **settings}
    config["agents"]["calendar-agent"]["providers"][name] = {
        "scopes": ["calendar.read", "calendar.write"],
        "delivery": "bearer",
    }
    vault.session.client("secretsmanager").create_secret(
        Name=SECRET_PREFIX + name, SecretString=vault.server.client_secret
    )
    vault.redeploy(config)


@pytest.fixture
def short_lived(vault: Vault) -> Iterator[Vault]:
    # a generous timeout: this provider's tests are about caching, not about a slow provider
    add_provider(
        vault, "calendar-short", client_id=vault.server.short_lived_client_id, timeout_seconds=10
    )
    yield vault


def stats(vault: Vault) -> dict[str, Any]:
    return vault.server.stats()


# --- row 38: short-lived provider tokens -------------------------------------------------------


def test_row_38_twenty_callers_with_short_lived_tokens_make_one_refresh_and_reuse_it(
    short_lived: Vault, audit_events: AuditLog
) -> None:
    vault = short_lived
    connected_agent(vault, provider="calendar-short", scopes=("calendar.read",))
    agent = agent_with_session(vault)  # another task of the same agent and user: no token yet
    before = refreshes(vault)

    results = vault.concurrent_tokens(agent, 20, provider="calendar-short")

    failed = [r for r in results if isinstance(r, Exception)]
    assert not failed, failed
    assert len({r["access_token"] for r in results}) == 1, "every caller got the one new token"
    assert refreshes(vault) - before == 1
    assert all(0 < r["expires_in"] <= SHORT_TTL for r in results)
    assert len(audit_events.find("grant.refresh", "refreshed")) == 1
    # no polling storm: besides the session read and the jti write of every token request, a
    # waiting caller makes at most 3 DynamoDB requests (the lost lease attempt and two reads)
    waiters = [ops for ops in vault.container_requests if "TransactWriteItems" not in ops]
    assert len(waiters) == 19
    assert all(ops["Query"] == 1 and ops["PutItem"] == 1 for ops in waiters), waiters
    assert max(sum(ops.values()) - 2 for ops in waiters) <= 3, waiters
    token = results[0]["access_token"]
    assert vault.server.introspect(token)["active"] is True

    # still cached while more than half its life (10 s) is left (measured from its expiry: the
    # twenty requests above took real time too)
    (item,) = items_of_type(vault, "token")
    vault.clock.advance(int(item["expires_at"]["N"]) - vault.clock() - (SHORT_TTL / 2 + 2))
    cached = agent.token("calendar-short", ["calendar.read"])
    assert cached.status == 200 and cached.json["access_token"] == token
    assert refreshes(vault) - before == 1
    # then refreshed once more
    vault.clock.advance(3)
    renewed = agent.token("calendar-short", ["calendar.read"])
    assert renewed.status == 200 and renewed.json["access_token"] != token
    assert refreshes(vault) - before == 2


def test_row_38_hour_long_tokens_keep_the_one_minute_margin(vault: Vault) -> None:
    """The margin is min(60 s, half the lifetime): an hour-long token is replaced a minute
    before it expires, not half-way."""
    agent = connected_agent(vault, scopes=("calendar.read",))
    first = agent.token("calendar", ["calendar.read"])
    assert first.status == 200
    requests = refreshes(vault)
    # the test clock runs with the wall clock: 80 s left (not 61) leaves a loaded machine 20 s
    # of real time between the steps; half the lifetime would be 1800 s
    vault.clock.advance(first.json["expires_in"] - 80)
    assert (
        agent.token("calendar", ["calendar.read"]).json["access_token"]
        == (first.json["access_token"])
    )
    vault.clock.advance(30)  # 50 s left, or less: inside the minute
    assert (
        agent.token("calendar", ["calendar.read"]).json["access_token"]
        != (first.json["access_token"])
    )
    assert refreshes(vault) - requests == 1


# --- row 40: a refresh whose outcome is unknown ------------------------------------------------


def _two_sessions(vault: Vault) -> tuple[Any, Any, str]:
    """Alice's grant, a session that needs a refresh next, and another session holding a live
    token minted from the same grant (the same refresh-token family at the provider)."""
    first = connected_agent(vault, scopes=("calendar.read", "calendar.write"))
    other = agent_with_session(vault)
    live = other.token("calendar", ["calendar.read"])
    assert live.status == 200, live.body
    token = live.json["access_token"]
    assert vault.server.introspect(token)["active"] is True
    return first, other, token


def test_row_40_a_lost_refresh_answer_is_never_replayed_and_other_sessions_live_on(
    vault: Vault, audit_events: AuditLog
) -> None:
    first, other, live = _two_sessions(vault)
    vault.server.set_faults(token_endpoint={"lose_answer": True})
    before = stats(vault)
    audit_events.clear()

    lost = first.token("calendar", ["calendar.write"])

    body = assert_problem(lost, 403, "consent_required")
    assert body["reason"] == "grant_broken"
    assert body["broken_reason"] == "refresh_outcome_unknown"
    grant = grant_item(vault)
    assert grant["status"]["S"] == "broken"
    assert grant["broken_reason"]["S"] == "refresh_outcome_unknown"
    assert "lease_owner" not in grant
    with unchanged(vault):  # no retry storm: every later request is answered from the store
        for _ in range(3):
            again = first.token("calendar", ["calendar.write"])
            assert assert_problem(again, 403, "consent_required")["reason"] == "grant_broken"
    after = stats(vault)
    assert after["lost_answers"] == before["lost_answers"] + 1, "the provider did rotate"
    assert refreshes(vault) == before["token_requests"]["refresh_token"] + 1, "never replayed"
    assert after["grant_errors"] == before["grant_errors"], "no reuse reached the provider"
    assert after["grants_revoked"] == before["grants_revoked"]
    assert len(audit_events.find("grant.refresh", "broken")) == 1
    audit_events.expect("grant.refresh", "broken", reason="refresh_outcome_unknown")
    # the other session's token, minted from the same grant, is alive and still served
    assert vault.server.introspect(live)["active"] is True
    served = other.token("calendar", ["calendar.read"])
    assert served.status == 200 and served.json["access_token"] == live


def test_row_40_a_refresh_timeout_is_never_replayed(vault: Vault, audit_events: AuditLog) -> None:
    """A read timeout is an unknown outcome too (here the provider drops the stalled request
    unprocessed, but the vault cannot know that): the grant breaks once, nothing is replayed."""
    first, _other, live = _two_sessions(vault)
    vault.server.set_faults(token_endpoint={"delay_ms": 2600})  # beyond timeout_seconds 2.0
    requests = refreshes(vault)
    dropped = stats(vault)["dropped_requests"]

    timed_out = first.token("calendar", ["calendar.write"])

    assert assert_problem(timed_out, 403, "consent_required")["reason"] == "grant_broken"
    assert grant_item(vault)["broken_reason"]["S"] == "refresh_outcome_unknown"
    assert first.token("calendar", ["calendar.write"]).code == "consent_required"
    assert stats(vault)["dropped_requests"] == dropped + 1
    assert refreshes(vault) == requests, "the stalled request was dropped; none followed it"
    assert vault.server.introspect(live)["active"] is True
    assert len(audit_events.find("grant.refresh", "broken")) == 1


def test_row_40_a_provider_that_never_rotates_gets_the_refresh_retried(
    vault: Vault, audit_events: AuditLog
) -> None:
    """`rotates_refresh_tokens: false` (e.g. Google): replaying a refresh token is harmless, so a
    timeout keeps the grant, answers 504 with a retry hint, and the retry is served."""
    add_provider(vault, "calendar-steady", rotates_refresh_tokens=False)
    agent = connected_agent(vault, provider="calendar-steady", scopes=("calendar.read",))
    vault.server.set_faults(token_endpoint={"delay_ms": 2600})
    with unchanged(vault):
        answer = agent.token("calendar-steady", ["calendar.read"])
    assert_problem(answer, 504, "provider_timeout")
    assert grant_item(vault)["status"]["S"] == "active"
    assert agent.token("calendar-steady", ["calendar.read"]).status == 200
    assert not audit_events.find("grant.refresh", "broken")


# --- rows 13/14: never a token broader than asked ----------------------------------------------


def test_row_13_a_refreshed_token_broader_than_asked_is_never_handed_out(
    vault: Vault, audit_events: AuditLog
) -> None:
    """The guard after a refresh: a provider that ignores the narrowing (played by not sending
    `scope`, so oidc-provider mints a token for the whole grant) returns calendar.read and
    calendar.write to a request for calendar.read: the token is neither served nor cached, the
    rotated refresh token is still kept, and the grant stays usable."""
    add_provider(vault, "calendar-wide", narrow_scopes_on_refresh=False)
    agent = connected_agent(
        vault, provider="calendar-wide", scopes=("calendar.read", "calendar.write")
    )
    before = grant_item(vault)
    requests = refreshes(vault)

    answer = agent.token("calendar-wide", ["calendar.read"])

    assert_problem(answer, 502, "provider_error")
    assert "access_token" not in answer.json
    assert refreshes(vault) - requests == 1
    assert not items_of_type(vault, "token"), "the broader token is not cached"
    audit_events.expect(
        "grant.refresh",
        "failed",
        reason="scope_not_narrowed",
        granted_scopes=["calendar.read", "calendar.write"],
    )
    after = grant_item(vault)
    assert after["status"]["S"] == "active" and "lease_owner" not in after
    assert after["refresh_token"] != before["refresh_token"], "the rotated refresh token is kept"
    # what the grant holds as a whole is still served: the token then is exactly as broad
    whole = agent.token("calendar-wide", ["calendar.read", "calendar.write"])
    assert whole.status == 200, whole.body
    assert vault.server.introspect(whole.json["access_token"])["scope"] == (
        "calendar.read calendar.write"
    )
