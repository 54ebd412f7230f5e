"""SECURITY.md rows 26 and 45: delegation chains (flow 8), against the real path.

A parent session offers a child session to another configured agent; the child agent claims it
with its own IAM principal and its own key. A child never gets more than its parent (providers,
scopes, life), never outlives it, and dies with it; a child's end leaves its parent alone.

The agents (tests/support/harness.py), with delegation switched on here:
calendar-agent (bearer; calendar read+write, calendar-post read) → mail-agent (bearer; calendar
mail.read+calendar.read), proxy-agent (proxy; calendar read+write), calendar-agent itself;
mail-agent → proxy-agent, calendar-agent; proxy-agent → dpop-agent. Depth at most 2.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    items_of_type,
    unchanged,
)
from tests.security.test_attacks_revocation import when_the_provider_answers_a_refresh
from tests.support.agent import TestAgent
from tests.support.apigw import HttpAnswer
from tests.support.harness import Vault, reap, task_stopped
from vault import revocation

EVENTS = "calendar/events"
READ = ["calendar.read"]


@pytest.fixture
def vault(vault: Vault) -> Vault:
    """The harness's vault with delegation configured (a redeploy with the new config)."""
    config: dict[str, Any] = copy.deepcopy(vault.services.config.model_dump(mode="json"))
    agents = config["agents"]
    agents["calendar-agent"]["may_delegate_to"] = ["mail-agent", "proxy-agent", "calendar-agent"]
    agents["mail-agent"]["may_delegate_to"] = ["proxy-agent", "calendar-agent"]
    agents["proxy-agent"]["may_delegate_to"] = ["dpop-agent"]
    vault.redeploy(config)
    return vault


def delegate(
    parent: TestAgent, agent: str, providers: dict[str, list[str]], **extra: Any
) -> HttpAnswer:
    return parent.call(
        "POST",
        f"/v1/sessions/{parent.session_id}/delegations",
        {"agent": agent, "providers": providers, **extra},
    )


def claim(child: TestAgent, delegation_id: str, **kw: Any) -> HttpAnswer:
    """The child agent claims: its proof is signed by its own new key (no session yet)."""
    path = f"/v1/delegations/{delegation_id}/claim"
    answer = child.call("POST", path, proof=child.proof("POST", path, session_id=None), **kw)
    if answer.status == 201:
        child.session_id = answer.json["session_id"]
    return answer


def child_of(
    vault: Vault,
    parent: TestAgent,
    role: str,
    providers: dict[str, list[str]],
    **extra: Any,
) -> TestAgent:
    offered = delegate(parent, role.removesuffix("-role"), providers, **extra)
    assert offered.status == 201, offered.body
    child = vault.agent(role)
    claimed = claim(child, offered.json["delegation_id"])
    assert claimed.status == 201, claimed.body
    return child


def stored_tokens_of(vault: Vault, session_id: str | None) -> list[dict[str, Any]]:
    return [t for t in items_of_type(vault, "token") if t["pk"]["S"] == f"SESSION#{session_id}"]


# --- the chain works, and says who acts for whom ------------------------------------------------


def test_a_claimed_child_gets_tokens_within_its_delegation_and_its_events_carry_the_chain(
    vault: Vault, audit_events: AuditLog
) -> None:
    parent = connected_agent(vault)  # alice's grant: calendar read+write, for calendar-agent
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    grandchild = child_of(vault, child, "proxy-agent-role", {"calendar": READ})

    issued = child.token("calendar", READ)
    assert issued.status == 200, issued.body
    assert vault.server.introspect(issued.json["access_token"])["active"] is True
    proxied = grandchild.proxy("GET", EVENTS)
    assert proxied.status == 200, proxied.body

    # the chain: the user as `sub`, the current actor outermost, prior actors nested (RFC 8693)
    event = audit_events.expect("token.issue", "allowed", session_id=child.session_id)
    assert event["chain"] == {
        "iss": vault.server.issuer,
        "sub": "alice",
        "act": {
            "sub": "mail-agent",
            "sid": child.session_id,
            "act": {"sub": "calendar-agent", "sid": parent.session_id},
        },
    }
    call = audit_events.expect("proxy.call", "allowed", session_id=grandchild.session_id)
    assert call["chain"]["act"]["sub"] == "proxy-agent"
    assert call["chain"]["act"]["act"]["act"] == {"sub": "calendar-agent", "sid": parent.session_id}
    refresh = audit_events.expect("grant.refresh", "refreshed", session_id=grandchild.session_id)
    assert refresh["chain"] == call["chain"]
    assert refresh["agent"] == "calendar-agent"  # the root's grant, the user's consent
    claimed = audit_events.expect("delegation.claim", "allowed", session_id=child.session_id)
    assert claimed["chain"]["act"]["sid"] == child.session_id and claimed["depth"] == 1
    # the parent's own events carry no chain (it acts for the user directly)
    assert "chain" not in audit_events.expect("delegation.create", "allowed", depth=1)

    # the session view shows ancestors and children
    view = child.call("GET", f"/v1/sessions/{child.session_id}")
    assert view.status == 200, view.body
    assert view.json["depth"] == 1 and view.json["parent_session_id"] == parent.session_id
    assert [a["session_id"] for a in view.json["ancestors"]] == [parent.session_id]
    assert [(c["agent"], c["status"], c["session_id"]) for c in view.json["children"]] == [
        ("proxy-agent", "active", grandchild.session_id)
    ]
    assert view.json["rights"] == {"calendar": ["calendar.read"]}
    assert set(view.json["providers"]) == {"calendar"}
    root = parent.call("GET", f"/v1/sessions/{parent.session_id}").json
    assert root["ancestors"] == [] and root["depth"] == 0
    assert [c["session_id"] for c in root["children"]] == [child.session_id]


# --- row 26 / 45: never more than the parent ----------------------------------------------------


def test_row_26_a_child_asking_for_scopes_its_parent_lacks_is_refused(
    vault: Vault, audit_events: AuditLog
) -> None:
    parent = connected_agent(vault)
    with unchanged(vault):
        # mail.read is in mail-agent's policy, not in calendar-agent's: not the parent's to give
        answer = delegate(parent, "mail-agent", {"calendar": ["calendar.read", "mail.read"]})
    body = assert_problem(answer, 403, "delegation_exceeds_parent")
    assert body["reason"] == "scopes" and body["denied_scopes"] == ["mail.read"]
    audit_events.expect(
        "delegation.create", "denied", reason="scopes", session_id=parent.session_id
    )
    # and a grandchild cannot get back what its parent was not given
    child = child_of(vault, parent, "calendar-agent-role", {"calendar": READ})
    with unchanged(vault):
        wider = delegate(child, "mail-agent", {"calendar": ["calendar.read", "calendar.write"]})
    assert assert_problem(wider, 403, "delegation_exceeds_parent")["denied_scopes"] == [
        "calendar.write"
    ]


def test_row_26_a_child_asking_for_a_provider_its_parent_lacks_is_refused(vault: Vault) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    with unchanged(vault):
        # calendar-agent has calendar-post; mail-agent (the parent here) does not
        answer = delegate(child, "calendar-agent", {"calendar-post": READ})
    assert assert_problem(answer, 403, "delegation_exceeds_parent")["reason"] == "provider"


def test_row_26_beyond_the_child_agents_own_policy_is_refused(vault: Vault) -> None:
    parent = connected_agent(vault)
    with unchanged(vault):
        # the parent has calendar-post; mail-agent's policy has nothing there
        answer = delegate(parent, "mail-agent", {"calendar-post": READ})
    assert_problem(answer, 403, "scope_not_allowed")


def test_row_45_a_child_asks_at_every_request_never_beyond_its_delegation(
    vault: Vault, audit_events: AuditLog
) -> None:
    parent = connected_agent(vault)  # the grant covers read and write
    child = child_of(vault, parent, "calendar-agent-role", {"calendar": READ})
    assert child.token("calendar", READ).status == 200
    with unchanged(vault):
        write = child.token("calendar", ["calendar.write"])  # its agent's policy allows it
        other = child.token("calendar-post", READ)  # so does this, but it was not delegated
    assert assert_problem(write, 403, "delegation_exceeds_parent")["denied_scopes"] == [
        "calendar.write"
    ]
    assert assert_problem(other, 403, "delegation_exceeds_parent")["reason"] == "provider"
    audit_events.expect("token.issue", "denied", reason="scopes", session_id=child.session_id)


def test_row_45_a_narrowed_policy_narrows_live_children_at_once(vault: Vault) -> None:
    """Rights are read at every request: taking a scope from the root agent's policy takes it
    from every descendant already claimed."""
    parent = connected_agent(vault)
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    assert child.token("calendar", READ).status == 200
    config = vault.services.config.model_dump(mode="json")
    config["agents"]["calendar-agent"]["providers"]["calendar"]["scopes"] = ["calendar.write"]
    vault.redeploy(config)
    assert_problem(child.token("calendar", READ), 403, "delegation_exceeds_parent")


def test_row_45_a_child_never_uses_more_than_the_users_grant(vault: Vault) -> None:
    parent = connected_agent(vault, scopes=("calendar.read",))  # alice granted read only
    child = child_of(vault, parent, "calendar-agent-role", {"calendar": ["calendar.write"]})
    refused = child.token("calendar", ["calendar.write"])
    body = assert_problem(refused, 403, "consent_required")
    assert body["missing_scopes"] == ["calendar.write"]
    # where consent is asked: the root session's authorizations, not the child's own
    assert body["authorizations_path"] == f"/v1/sessions/{parent.session_id}/authorizations"
    # and a child does not ask the user itself: consent is its root's
    asked = child.authorize("calendar", ["calendar.write"])
    assert assert_problem(asked, 403, "delegation_not_allowed")["reason"] == "consent"


def test_row_45_a_child_asking_to_live_longer_than_its_parent_is_refused(vault: Vault) -> None:
    parent = connected_agent(vault)
    vault.clock.advance(3600 - 600)  # at most 600 s of the parent's hour are left
    ends = parent.call("GET", f"/v1/sessions/{parent.session_id}").json["expires_at"]
    with unchanged(vault):
        answer = delegate(parent, "mail-agent", {"calendar": READ}, ttl_seconds=601)
        left = ends - int(vault.clock())
    body = assert_problem(answer, 403, "delegation_exceeds_parent")
    # what was left when the vault answered: between the two readings of the clock
    assert body["reason"] == "lifetime" and left <= body["max_ttl_seconds"] <= 600
    # by default a child gets what is left of the parent's life, never more; nor renews past it
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    view = child.call("GET", f"/v1/sessions/{child.session_id}").json
    parent_view = parent.call("GET", f"/v1/sessions/{parent.session_id}").json
    assert view["expires_at"] <= parent_view["expires_at"]
    renewed = child.call("POST", f"/v1/sessions/{child.session_id}/renew", {})
    assert assert_problem(renewed, 403, "delegation_not_allowed")["reason"] == "renewal"


def test_row_45_a_grandchild_past_the_depth_limit_is_refused(
    vault: Vault, audit_events: AuditLog
) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    grandchild = child_of(vault, child, "proxy-agent-role", {"calendar": READ})  # depth 2
    with unchanged(vault):
        deeper = delegate(grandchild, "dpop-agent", {"calendar": READ})
    assert assert_problem(deeper, 403, "delegation_not_allowed")["reason"] == "too_deep"
    audit_events.expect("delegation.create", "denied", reason="too_deep", depth=3)


def test_an_agent_delegates_only_to_the_agents_its_config_names(vault: Vault) -> None:
    parent = connected_agent(vault)
    with unchanged(vault):
        answer = delegate(parent, "dpop-agent", {"calendar": READ})
    assert assert_problem(answer, 403, "delegation_not_allowed")["reason"] == "agent_not_allowed"


# --- row 45: a child dies with its parent, and not the reverse -----------------------------------


def test_row_45_a_child_is_dead_once_its_parent_ended_and_its_tokens_with_it(
    vault: Vault, audit_events: AuditLog
) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    grandchild = child_of(vault, child, "proxy-agent-role", {"calendar": READ})
    issued = child.token("calendar", READ).json["access_token"]
    assert grandchild.proxy("GET", EVENTS).status == 200
    assert stored_tokens_of(vault, grandchild.session_id)

    ended = parent.end()
    assert ended.status == 200, ended.body
    for descendant in (child, grandchild):
        assert stored_tokens_of(vault, descendant.session_id) == []
        audit_events.expect(
            "session.end", "ended", reason="parent_ended", session_id=descendant.session_id
        )
    assert vault.server.introspect(issued) == {"active": False}  # bearer: revoked upstream
    gone = child.token("calendar", READ)
    assert assert_problem(gone, 410, "session_ended")["reason"] == "parent_ended"
    assert assert_problem(grandchild.proxy("GET", EVENTS), 410, "session_ended")
    # nor can the dead chain delegate or be claimed into
    assert_problem(delegate(child, "proxy-agent", {"calendar": READ}), 410, "session_ended")


def test_row_45_a_pending_delegation_of_an_ended_parent_cannot_be_claimed(vault: Vault) -> None:
    parent = connected_agent(vault)
    offered = delegate(parent, "mail-agent", {"calendar": READ})
    assert parent.end().status == 200
    child = vault.agent("mail-agent-role")
    with unchanged(vault):
        late = claim(child, offered.json["delegation_id"])
    assert assert_problem(late, 410, "session_ended")["reason"] == "parent_ended"
    # the ended parent's view does not list it as claimable any more
    view = parent.call("GET", f"/v1/sessions/{parent.session_id}")
    assert view.status == 200 and view.json["status"] == "ended", view.body
    assert [(c["delegation_id"], c["status"]) for c in view.json["children"]] == [
        (offered.json["delegation_id"], "expired")
    ]


def test_row_45_a_stopped_parent_task_ends_its_children_in_other_tasks(vault: Vault) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "proxy-agent-role", {"calendar": READ})
    assert child.proxy("GET", EVENTS).status == 200
    reap(task_stopped(parent.task_id))
    assert assert_problem(child.proxy("GET", EVENTS), 410, "session_ended")
    assert stored_tokens_of(vault, child.session_id) == []
    [item] = [s for s in items_of_type(vault, "session") if s["pk"]["S"].endswith(child.session_id)]
    assert item["status"]["S"] == "ended" and item["ended_reason"]["S"] == "parent_ended"


def test_row_45_a_stopped_child_task_ends_the_child_and_leaves_its_parent(vault: Vault) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "proxy-agent-role", {"calendar": READ})
    assert child.proxy("GET", EVENTS).status == 200
    reap(task_stopped(child.task_id))
    assert assert_problem(child.proxy("GET", EVENTS), 410, "session_ended")["reason"] == (
        "task_stopped"
    )
    assert stored_tokens_of(vault, child.session_id) == []
    assert parent.token("calendar", READ).status == 200
    # and the stopped task's credentials claim nothing more
    offered = delegate(parent, "proxy-agent", {"calendar": READ}).json
    again = vault.agent("proxy-agent-role", task_id=child.task_id)
    with unchanged(vault):
        assert_problem(claim(again, offered["delegation_id"]), 403, "task_stopped")


@pytest.mark.parametrize(
    "body",
    [
        {"agent": "mail-agent", "providers": {}},
        {"agent": "mail-agent", "providers": {"calendar": []}},
        {"agent": "mail-agent", "providers": {"calendar": READ}, "act": {"sub": "x"}},
        {"agent": "Mail Agent", "providers": {"calendar": READ}},
        {"agent": "mail-agent", "providers": {"calendar": READ}, "ttl_seconds": 59},
        {"agent": "mail-agent", "providers": {"calendar": "calendar.read"}},
    ],
)
def test_a_malformed_delegation_is_a_400_that_changes_nothing(
    vault: Vault, body: dict[str, Any]
) -> None:
    parent = connected_agent(vault)
    path = f"/v1/sessions/{parent.session_id}/delegations"
    with unchanged(vault):
        assert_problem(parent.call("POST", path, body), 400, "invalid_request")
    with unchanged(vault):
        assert_problem(
            delegate(parent, "nobody", {"calendar": READ}), 403, "delegation_not_allowed"
        )
        unknown = delegate(parent, "mail-agent", {"nowhere": READ})
    assert_problem(unknown, 400, "unknown_provider")


def test_row_45_a_child_whose_parent_ended_is_refused_even_if_the_cascade_was_cut_short(
    vault: Vault, audit_events: AuditLog
) -> None:
    """The check at every request does not rely on the cascade: a parent marked ended (a
    cascade that crashed after its first write) or expired refuses its children at once."""
    parent = connected_agent(vault)
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    issued = child.token("calendar", READ).json["access_token"]
    assert vault.services.store.sessions.end(parent.session_id or "", "ended_by_agent")
    answer = child.token("calendar", READ)
    assert assert_problem(answer, 410, "session_ended")["reason"] == "parent_ended"
    # the refused child was ended then, its tokens revoked by its delivery rules
    assert stored_tokens_of(vault, child.session_id) == []
    assert vault.server.introspect(issued) == {"active": False}
    audit_events.expect("session.access", "denied", reason="parent_ended")


def test_row_45_revoking_a_child_leaves_its_parent_alone(vault: Vault) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "proxy-agent-role", {"calendar": READ})
    sibling = child_of(vault, parent, "proxy-agent-role", {"calendar": READ})
    assert child.proxy("GET", EVENTS).status == 200
    assert child.end().status == 200
    assert parent.token("calendar", READ).status == 200
    assert sibling.proxy("GET", EVENTS).status == 200
    assert assert_problem(child.proxy("GET", EVENTS), 410, "session_ended")


# --- claims: the right agent, its own key, once -------------------------------------------------


def test_a_claim_by_another_agent_is_refused_and_changes_nothing(
    vault: Vault, audit_events: AuditLog
) -> None:
    parent = connected_agent(vault)
    offered = delegate(parent, "proxy-agent", {"calendar": READ}).json
    thief = vault.agent("mail-agent-role")  # an agent parent may delegate to, but not this one
    with unchanged(vault):
        answer = claim(thief, offered["delegation_id"])
    assert_problem(answer, 403, "forbidden")
    audit_events.expect("delegation.claim", "denied", reason="forbidden", principal=thief.arn)
    # the parent's own principal cannot claim it either (no key or token crosses agents)
    with unchanged(vault):
        answer = claim(parent, offered["delegation_id"])
    assert_problem(answer, 403, "forbidden")


def test_a_delegation_is_claimed_once(vault: Vault) -> None:
    parent = connected_agent(vault)
    offered = delegate(parent, "proxy-agent", {"calendar": READ}).json
    first = vault.agent("proxy-agent-role")
    assert claim(first, offered["delegation_id"]).status == 201
    second = vault.agent("proxy-agent-role")  # another task of the same agent
    with unchanged(vault):
        again = claim(second, offered["delegation_id"])
    assert assert_problem(again, 409, "delegation_not_pending")["delegation_status"] == "claimed"
    with unchanged(vault):
        unknown = claim(second, "dlg_" + "A" * 32)
    assert_problem(unknown, 404, "delegation_not_found")


def test_a_delegation_not_claimed_in_time_is_gone(vault: Vault) -> None:
    parent = connected_agent(vault)
    offered = delegate(parent, "proxy-agent", {"calendar": READ}).json
    vault.clock.advance(offered["claim_by"] - vault.clock() + 1)
    with unchanged(vault):
        late = claim(vault.agent("proxy-agent-role"), offered["delegation_id"])
    assert assert_problem(late, 409, "delegation_not_pending")["delegation_status"] == "expired"


def test_a_claimed_child_is_bound_to_its_own_key_and_principal(vault: Vault) -> None:
    parent = connected_agent(vault)
    child = child_of(vault, parent, "proxy-agent-role", {"calendar": READ})
    path = f"/v1/sessions/{child.session_id}/proxy/calendar/{EVENTS}"
    # the parent's key (or any other) does not open the child's session
    other_key = TestAgent(child.role, child.task_id, vault.clock)
    other_key.session_id = child.session_id
    with unchanged(vault):
        assert_problem(other_key.call("GET", path), 401, "invalid_proof")
        signed_by_parent = parent.proof("GET", path, session_id=child.session_id)
        assert_problem(child.call("GET", path, proof=signed_by_parent), 401, "invalid_proof")
        # another task of the child agent: another principal
        stranger = vault.agent("proxy-agent-role")
        stranger.session_id = child.session_id
        stranger.key = child.key
        assert_problem(stranger.call("GET", path), 403, "forbidden")
    assert child.proxy("GET", EVENTS).status == 200


def test_a_session_of_another_user_can_neither_delegate_from_nor_into_alices_chain(
    vault: Vault,
) -> None:
    alice = connected_agent(vault, "alice")
    bob = agent_with_session(vault, "bob")  # same agent role, another task, bob's session
    path = f"/v1/sessions/{alice.session_id}/delegations"
    body = {"agent": "mail-agent", "providers": {"calendar": READ}}
    with unchanged(vault):
        forged = bob.call("POST", path, body, proof=bob.proof("POST", path, session_id=None))
        stolen_id = bob.call(
            "POST", path, body, proof=bob.proof("POST", path, session_id=alice.session_id)
        )
    assert_problem(forged, 403, "forbidden")
    assert_problem(stolen_id, 403, "forbidden")
    # bob's own delegation yields a child of bob: it never reaches alice's grant
    child = child_of(vault, bob, "mail-agent-role", {"calendar": READ})
    refused = child.token("calendar", READ)
    assert assert_problem(refused, 403, "consent_required")["reason"] == "no_grant"
    view = child.call("GET", f"/v1/sessions/{child.session_id}").json
    assert view["user"]["sub"] == "bob" and view["chain"]["sub"] == "bob"


# --- concurrency: the parent ends while its children fetch tokens -------------------------------


def test_row_45_ending_a_parent_while_its_children_fetch_tokens_leaves_no_child_token_alive(
    vault: Vault,
) -> None:
    parent = connected_agent(vault)
    children = [child_of(vault, parent, "mail-agent-role", {"calendar": READ}) for _ in range(4)]
    assert children[0].token("calendar", READ).status == 200  # one cached already
    got: list[str] = []
    gate = threading.Barrier(len(children) + 1)

    def fetch(child: TestAgent) -> None:
        gate.wait()
        for _ in range(3):
            answer = child.token("calendar", READ)
            if answer.status == 200:
                got.append(answer.json["access_token"])
            else:
                assert answer.status in (403, 410, 503), answer.body

    threads = [threading.Thread(target=fetch, args=(c,)) for c in children]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    ended = parent.end()
    ended_at = time.perf_counter()
    for thread in threads:
        thread.join()
    assert ended.status == 200, ended.body
    refused_at = []
    for child in children:
        answer = child.token("calendar", READ)
        refused_at.append(time.perf_counter())
        assert assert_problem(answer, 410, "session_ended")["reason"] == "parent_ended"
        assert stored_tokens_of(vault, child.session_id) == []
    # every token a child got during the race is dead upstream (bearer delivery: revoked)
    assert all(vault.server.introspect(token) == {"active": False} for token in got)
    print(  # the cascade's duration, reported (never asserted: `make bench` owns timings)
        f"\ncascade: parent end with {len(children)} children took"
        f" {(ended_at - started) * 1000:.0f} ms; last child refused"
        f" {(max(refused_at) - started) * 1000:.0f} ms after the parent's end began"
        f" ({len(got)} child tokens issued during the race, all revoked)"
    )


def test_row_45_a_parent_ending_while_its_child_refreshes_leaves_no_child_token_alive(
    vault: Vault,
) -> None:
    """The race of the threaded test above, made certain: the parent ends (and its cascade runs)
    after the provider answered the child's refresh and before the vault stored its token."""
    parent = connected_agent(vault)
    child = child_of(vault, parent, "mail-agent-role", {"calendar": READ})
    ended: list[int] = []

    def end_the_parent() -> None:
        # in-process, as the parent's own `DELETE` would (a nested handler call would share the
        # child's request context)
        session = vault.services.store.sessions.get(parent.session_id or "")
        assert session is not None
        ended.append(revocation.end_session(vault.services, session, "ended_by_agent"))

    answers = when_the_provider_answers_a_refresh(vault, end_the_parent)
    answer = child.token("calendar", READ)

    assert len(ended) == 1
    assert assert_problem(answer, 410, "session_ended")["reason"] == "parent_ended"
    (issued,) = answers  # what the provider minted for the child: never stored, revoked
    assert issued.access_token not in answer.body
    assert stored_tokens_of(vault, child.session_id) == []
    assert vault.server.introspect(issued.access_token) == {"active": False}
