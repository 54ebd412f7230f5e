"""Flow 9's lifecycle events (issue #15 item 3): one published event per grant, flow and session
lifecycle change, each valid against its documented schema (docs/events/), none for a refused or
rolled-back write, none carrying a secret, and a publication failure that loses nothing.

The vault table's moto stream goes through the real events handler, as Lambda's event source
mapping would deliver it (agent_vault_local.streams), onto a moto EventBridge bus whose rule
delivers to a queue the test reads (tests/support/lifecycle.py).
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.security.hygiene import HYGIENE, Hygiene
from tests.support.harness import (
    Vault,
    binding_code_of,
    connected,
    reap,
    revoke_refresh_at_provider,
    scheduled_sweep,
    task_stopped,
)
from tests.support.lifecycle import BUS, Lifecycle, lifecycle
from vault.handlers import events as events_handler
from vault.lifecycle import Publisher
from vault.models import Grant
from vault.store.dynamo import Conflict


@pytest.fixture
def published(vault: Vault) -> Lifecycle:
    return lifecycle(vault)


def test_a_bound_consent_publishes_grant_activated(vault: Vault, published: Lifecycle) -> None:
    agent, bound = connected(vault)
    (event,) = published.events()
    assert event["detail-type"] == "grant.activated"
    detail = event["detail"]
    assert detail["grant_id"] == bound["grant_id"]
    assert detail["user"] == {"iss": vault.server.issuer, "sub": "alice"}
    assert (detail["agent"], detail["provider"]) == ("calendar-agent", "calendar")
    assert detail["scopes"] == ["calendar.read", "calendar.write"]
    assert "replaced_grant_id" not in detail
    # tokens handed out, refreshed or cached are no lifecycle change
    assert agent.token("calendar", ["calendar.read"]).status == 200
    assert agent.token("calendar", ["calendar.read"]).status == 200
    assert published.events() == []


def test_a_new_consent_replacing_a_grant_reports_both(vault: Vault, published: Lifecycle) -> None:
    agent, first = connected(vault)
    published.events()
    again = vault.connect(agent, scopes=("calendar.read",))
    assert again.status == 200, again.body
    revoked, activated = published.events()
    assert revoked["detail-type"] == "grant.revoked"
    assert revoked["detail"]["grant_id"] == first["grant_id"]
    assert revoked["detail"]["reason"] == "replaced"
    assert activated["detail-type"] == "grant.activated"
    assert activated["detail"]["grant_id"] == again.json["grant_id"]
    assert activated["detail"]["replaced_grant_id"] == first["grant_id"]


def test_ending_a_session_publishes_session_ended_once(vault: Vault, published: Lifecycle) -> None:
    agent, _ = connected(vault)
    published.events()
    assert agent.end().status in (200, 204)
    (event,) = published.events()
    assert event["detail-type"] == "session.ended"
    assert event["detail"]["session_id"] == agent.session_id
    assert event["detail"]["reason"] == "ended_by_agent"
    assert event["detail"]["task_id"] == agent.task_id
    # ending it again changes nothing (the conditional write fails): no second event
    agent.end()
    assert published.events() == []


def test_a_stopped_task_publishes_session_ended_with_its_reason(
    vault: Vault, published: Lifecycle
) -> None:
    agent, _ = connected(vault)
    published.events()
    assert reap(task_stopped(agent.task_id))["ended_sessions"] == 1
    (event,) = published.events()
    assert event["detail-type"] == "session.ended"
    assert (event["detail"]["session_id"], event["detail"]["reason"]) == (
        agent.session_id,
        "task_stopped",
    )


def test_an_admin_revocation_publishes_grant_revoked_once(
    vault: Vault, published: Lifecycle
) -> None:
    _, bound = connected(vault)
    published.events()
    assert vault.admin({"grant_id": bound["grant_id"]}).json["revoked_grants"] == 1
    (event,) = published.events()
    assert event["detail-type"] == "grant.revoked"
    assert (event["detail"]["grant_id"], event["detail"]["reason"]) == (
        bound["grant_id"],
        "revocation",
    )
    assert vault.admin({"grant_id": bound["grant_id"]}).json["revoked_grants"] == 0
    assert published.events() == []


def test_a_grant_the_provider_refuses_publishes_grant_broken_once(
    vault: Vault, published: Lifecycle
) -> None:
    agent, bound = connected(vault)
    agent.token("calendar", ["calendar.read"])
    revoke_refresh_at_provider(vault)
    published.events()
    for _ in range(2):
        answer = agent.token("calendar", ["calendar.write"])
        assert answer.code == "consent_required" and answer.json["reason"] == "grant_broken"
    (event,) = published.events()
    assert event["detail-type"] == "grant.broken"
    assert (event["detail"]["grant_id"], event["detail"]["reason"]) == (
        bound["grant_id"],
        "invalid_grant",
    )


def test_an_unbound_consent_that_expires_publishes_flow_expired_unbound(
    vault: Vault, published: Lifecycle
) -> None:
    agent = vault.agent()
    assert agent.start_session(vault.user("alice")).status == 201
    started = agent.authorize("calendar", ["calendar.read"])
    assert vault.callback(vault.consent_at_provider(started.json["authorization_url"], "alice"))
    assert published.events() == []  # answered, not yet expired
    vault.clock.advance(vault.services.config.flow_ttl_seconds + 1)
    assert scheduled_sweep()["revoked_flows"] == 1
    (event,) = published.events()
    assert event["detail-type"] == "flow.expired_unbound"
    detail = event["detail"]
    assert (detail["flow_id"], detail["session_id"]) == (started.json["flow_id"], agent.session_id)
    assert detail["scopes"] == ["calendar.read"]
    # the next sweep finds nothing more to do, and says nothing more
    assert scheduled_sweep()["revoked_flows"] == 0
    assert published.events() == []


def test_a_rolled_back_change_publishes_nothing(vault: Vault, published: Lifecycle) -> None:
    """A refused binding (409) and a cancelled transaction that would have put a grant: the
    stream carries committed writes only."""
    agent = vault.agent()
    assert agent.start_session(vault.user("alice")).status == 201
    started = agent.authorize("calendar", ["calendar.read"])
    back = vault.callback(vault.consent_at_provider(started.json["authorization_url"], "alice"))
    flow_id, code = started.json["flow_id"], binding_code_of(back)
    pending = vault.services.store.flows.get(flow_id)
    assert pending is not None
    assert agent.complete(flow_id, vault.user("alice"), code).status == 200
    assert [e["detail-type"] for e in published.events()] == ["grant.activated"]

    assert agent.complete(flow_id, vault.user("alice"), code).status == 409
    other = Grant(
        grant_id="g-never-committed",
        user=pending.user,
        agent=pending.agent,
        provider=pending.provider,
        scopes=pending.granted_scopes,
        refresh_token_ct=b"never-stored",
        created_at=vault.services.now(),
    )
    with pytest.raises(Conflict):  # the flow is no longer pending: the grant's put rolls back
        vault.services.store.flows.activate(pending, other)
    assert published.events() == []
    assert published.set_aside() == []


def _stored_secrets(vault: Vault) -> Hygiene:
    """Every secret the suite saw, plus what only the table holds: ciphertexts, hashes, keys."""
    known = Hygiene()
    for value, kind in list(HYGIENE.secrets.items()):
        known.add_secret(value, kind)
    for item in vault.items():
        for name, value in item.items():
            if "B" in value:
                known.add_secret(base64.b64encode(value["B"]).decode(), f"stored {name}")
            elif name in ("binding_hash", "user_key") or (
                name == "pk" and value["S"].startswith(("STATE#", "USER#"))
            ):
                known.add_secret(value["S"].split("#", 1)[-1], f"stored {name}")
    return known


def test_no_event_carries_a_secret(vault: Vault, published: Lifecycle) -> None:
    agent, bound = connected(vault)
    agent.token("calendar", ["calendar.read"])
    texts = [json.dumps(e) for e in published.events()]
    known = _stored_secrets(vault)  # while the grant and its ciphertexts are stored
    vault.admin({"grant_id": bound["grant_id"]})
    agent.end()
    texts += [json.dumps(e) for e in published.events()]
    assert len(texts) == 3
    findings = known.scan([("lifecycle", "event", t) for t in texts])
    assert findings == []
    assert all("refresh_token" not in t and "access_token" not in t for t in texts)


def test_a_publication_failure_loses_nothing_and_is_set_aside(vault: Vault) -> None:
    """EventBridge refuses (here: the function's bus does not exist): the revocation still
    commits and answers; the stream's record is retried, then described on the on-failure
    queue; once publishing works again, the set-aside records replayed from the stream publish
    their events."""
    published = lifecycle(vault, max_attempts=2)
    _, bound = connected(vault)
    published.events()
    events = vault.session.client("events")
    events_handler.use_publisher(Publisher(events, "no-such-bus"))

    answer = vault.admin({"grant_id": bound["grant_id"]})
    assert answer.status == 200 and answer.json["revoked_grants"] == 1
    assert vault.services.store.grants.by_id(bound["grant_id"]) is None  # the change committed
    published.pump.drain()
    (failure,) = published.set_aside()
    batch = failure["DDBStreamBatchInfo"]
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert int(batch["startSequenceNumber"]) <= int(batch["endSequenceNumber"])

    assert published.events() == []

    # publishing works again: the operator replays the set-aside range from the stream
    events_handler.use_publisher(Publisher(events, BUS))
    assert published.pump.replay(failure) == batch["batchSize"]
    (event,) = published.events()
    assert (event["detail-type"], event["detail"]["grant_id"]) == (
        "grant.revoked",
        bound["grant_id"],
    )
