"""SECURITY.md rows 1-8 and 12-14: attacks on consent (authorization code + PKCE) and binding.

Every test drives the real handlers, moto and the real oidc-provider, and asserts the status,
the stable error code, what is stored (nothing, or exactly the documented change) and the audit
event that records the refusal and its reason.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlencode

import pytest

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    diff,
    items_of_type,
    query_of,
    snapshot,
    unchanged,
)
from tests.security.hygiene import HYGIENE
from tests.support.harness import CALLBACK_URL, RETURN_URL, Vault, binding_code_of
from vault.models import UserRef, token_context


def consent(
    vault: Vault,
    agent,
    scopes=("calendar.read",),
    username="alice",  # type: ignore[no-untyped-def]
    **extra,
):
    """Start consent and let `username` allow it at the provider: (flow_id, callback query)."""
    started = agent.authorize("calendar", list(scopes), **extra)
    assert started.status == 201, started.body
    query = vault.consent_at_provider(started.json["authorization_url"], username)
    return started.json["flow_id"], query_of("?" + query)


def code_exchanges(vault: Vault) -> int:
    return int(vault.server.stats()["token_requests"].get("authorization_code", 0))


# --- row 1: callback with state missing, unknown or expired -------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"code": "a-code-without-any-state", "iss": "ignored"},
        {"state": "", "code": "a-code-with-an-empty-state"},
        {"state": "an-unknown-state-nobody-issued-0123456789", "code": "some-code"},
        {"state": "x" * 5000, "code": "some-code"},
    ],
    ids=["missing", "empty", "unknown", "oversized"],
)
def test_row_01_callback_without_a_known_state_is_rejected(
    vault: Vault, audit_events: AuditLog, query: dict[str, str]
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    assert started.status == 201
    with unchanged(vault):
        answer = vault.callback(urlencode(query))
    assert_problem(answer, 400, "invalid_state")
    assert "location" not in answer.headers
    audit_events.expect("consent.callback", "denied", reason="invalid_state")


def test_row_01_callback_with_an_expired_state_is_rejected_and_the_code_never_redeemed(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    _, query = consent(vault, agent)
    vault.clock.advance(vault.services.config.flow_ttl_seconds + 1)
    exchanges = code_exchanges(vault)
    with unchanged(vault):
        answer = vault.callback(urlencode(query))
    assert_problem(answer, 400, "invalid_state")
    assert code_exchanges(vault) == exchanges
    audit_events.expect("consent.callback", "denied", reason="invalid_state")


# --- row 2: callback replayed with a used state ------------------------------------------------


def test_row_02_a_replayed_callback_is_rejected(vault: Vault, audit_events: AuditLog) -> None:
    agent = agent_with_session(vault)
    _, query = consent(vault, agent)
    first = vault.callback(urlencode(query))
    assert first.status == 302, first.body
    exchanges = code_exchanges(vault)
    audit_events.clear()
    with unchanged(vault):
        replay = vault.callback(urlencode(query))
    assert_problem(replay, 400, "invalid_state")
    assert code_exchanges(vault) == exchanges, "a used state must not reach the provider again"
    assert len(items_of_type(vault, "flow")) == 1
    audit_events.expect("consent.callback", "denied", reason="invalid_state")
    assert not audit_events.find("consent.callback", "exchanged")


# --- row 3: authorization code replayed --------------------------------------------------------


def test_row_03_a_used_code_injected_into_a_new_flow_is_refused_by_the_provider(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    _, used = consent(vault, agent)
    assert vault.callback(urlencode(used)).status == 302
    bound_flows = items_of_type(vault, "flow")
    _, fresh = consent(vault, agent)
    before = snapshot(vault)
    exchanges = code_exchanges(vault)
    audit_events.clear()

    answer = vault.callback(urlencode({**fresh, "code": used["code"]}))

    body = assert_problem(answer, 400, "code_exchange_failed")
    assert body["provider_error"] == "invalid_grant"
    assert code_exchanges(vault) == exchanges + 1
    assert vault.server.stats()["grant_errors"][-1]["error"] == "invalid_grant"
    change = diff(before, snapshot(vault))
    assert change.kinds() == {"added": [], "removed": ["pending_flow"], "changed": []}
    assert items_of_type(vault, "flow") == bound_flows, "nothing may be stored twice"
    assert not items_of_type(vault, "grant")
    audit_events.expect("consent.callback", "failed", reason="invalid_grant")


# --- row 4: wrong or missing code_verifier -----------------------------------------------------


def test_row_04_a_code_redeemed_with_another_flows_verifier_fails_cleanly(
    vault: Vault, audit_events: AuditLog
) -> None:
    """Code injection: the code was issued for flow A's PKCE challenge; arriving with flow B's
    state it is redeemed with B's verifier, and the provider refuses it."""
    agent = agent_with_session(vault)
    _, for_a = consent(vault, agent)
    _, for_b = consent(vault, agent)
    before = snapshot(vault)

    answer = vault.callback(urlencode({**for_b, "code": for_a["code"]}))

    body = assert_problem(answer, 400, "code_exchange_failed")
    assert body["provider_error"] == "invalid_grant"
    assert vault.server.stats()["grant_errors"][-1]["error"] == "invalid_grant"
    change = diff(before, snapshot(vault))
    assert change.kinds() == {"added": [], "removed": ["pending_flow"], "changed": []}
    assert not items_of_type(vault, "flow") and not items_of_type(vault, "grant")
    audit_events.expect("consent.callback", "failed", reason="invalid_grant")
    # it was the verifier that did not match: with its own flow's verifier the code still works
    assert vault.callback(urlencode(for_a)).status == 302


def test_row_04_every_exchange_sends_the_verifier_of_its_s256_challenge(vault: Vault) -> None:
    """The verifier is never missing: the one sent at the code exchange (observed at urllib3 by
    the hygiene registry) hashes to the S256 challenge of the authorization URL."""
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    params = query_of(started.json["authorization_url"])
    assert params["code_challenge_method"] == "S256"
    assert "code_verifier" not in params
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    assert vault.callback(query).status == 302
    verifiers = [v for v, kind in HYGIENE.secrets.items() if kind == "PKCE verifier"]
    by_challenge = {  # RFC 7636 S256, computed here, independently of vault.oauth
        base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode(): v
        for v in verifiers
    }
    assert params["code_challenge"] in by_challenge
    assert 43 <= len(by_challenge[params["code_challenge"]]) <= 128


# --- row 5: mix-up (iss differs from the flow's provider) --------------------------------------


@pytest.mark.parametrize(
    "iss", ["https://evil.example", None, ""], ids=["other", "missing", "empty"]
)
def test_row_05_a_callback_from_another_issuer_is_rejected_before_redeeming_the_code(
    vault: Vault, audit_events: AuditLog, iss: str | None
) -> None:
    agent = agent_with_session(vault)
    _, query = consent(vault, agent)
    assert query["iss"] == vault.server.issuer
    forged = {k: v for k, v in query.items() if k != "iss"}
    if iss is not None:
        forged["iss"] = iss
    before = snapshot(vault)
    exchanges = code_exchanges(vault)

    answer = vault.callback(urlencode(forged))

    assert_problem(answer, 400, "issuer_mismatch")
    assert code_exchanges(vault) == exchanges, "the code must not be redeemed"
    change = diff(before, snapshot(vault))
    assert change.kinds() == {"added": [], "removed": ["pending_flow"], "changed": []}
    audit_events.expect("consent.callback", "denied", reason="issuer_mismatch")


# --- row 6: the provider answers with an error --------------------------------------------------


def test_row_06_a_refused_consent_marks_the_flow_refused_and_stores_no_token(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    flow_id = started.json["flow_id"]
    query = vault.consent_at_provider(started.json["authorization_url"], "alice", "deny")
    assert query_of("?" + query)["error"] == "access_denied"

    answer = vault.callback(query)

    assert answer.status == 302
    back = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith(RETURN_URL + "?")
    assert back == {"flow_id": flow_id, "status": "refused", "error": "access_denied"}
    (flow,) = items_of_type(vault, "flow")
    assert flow["status"]["S"] == "refused"
    assert "refresh_token" not in flow and "access_token" not in flow
    assert not items_of_type(vault, "grant") and not items_of_type(vault, "pending_flow")
    assert_problem(agent.token("calendar", ["calendar.read"]), 403, "consent_required")
    assert_problem(agent.complete(flow_id, vault.user("alice")), 409, "flow_not_pending")
    audit_events.expect("consent.callback", "refused", reason="access_denied", flow_id=flow_id)


def test_row_06_an_unknown_provider_error_is_not_reflected(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    state = query_of(started.json["authorization_url"])["state"]
    answer = vault.callback(
        urlencode(
            {
                "state": state,
                "error": "<script>alert(1)</script>",
                "error_description": "javascript:alert(1)",
            }
        )
    )
    assert answer.status == 302
    assert query_of(answer.headers["location"])["error"] == "invalid_request"
    assert "script" not in answer.headers["location"]
    audit_events.expect("consent.callback", "refused", reason="invalid_request")


# --- row 7: return URL not on the allow-list / crafted redirect --------------------------------


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.example/consent/return",
        "https://app.example.test/consent/return/../../evil",
        "https://app.example.test/consent/return?next=https://evil.example",
        "https://app.example.test@evil.example/consent/return",
        "https://APP.example.test/consent/return",
        "https://app.example.test/consent/return/",
        "https://app.example.test/consent/return#https://evil.example",
        "//evil.example/consent/return",
        "javascript:alert(1)",
        "http://app.example.test/consent/return",
    ],
    ids=lambda url: url[:40],
)
def test_row_07_a_return_url_off_the_allow_list_is_rejected(
    vault: Vault, audit_events: AuditLog, return_url: str
) -> None:
    agent = agent_with_session(vault)
    requests = vault.server.stats()
    with unchanged(vault):
        answer = agent.authorize("calendar", ["calendar.read"], return_url=return_url)
    body = assert_problem(answer, 400, "return_url_not_allowed")
    assert "return_urls" in body["detail"]  # names the config key
    assert "authorization_url" not in body
    assert vault.server.stats()["token_requests"] == requests["token_requests"]
    audit_events.expect("consent.start", "denied", reason="return_url_not_allowed")


def test_row_07_the_callback_redirects_only_to_the_flows_registered_return_url(
    vault: Vault,
) -> None:
    agent = agent_with_session(vault)
    flow_id, query = consent(vault, agent, return_url="http://localhost:3000/return")
    crafted = {
        **query,
        "return_url": "https://evil.example/",
        "redirect_uri": "https://evil.example/",
        "next": "https://evil.example/",
    }
    answer = vault.callback(urlencode(crafted))
    assert answer.status == 302, answer.body
    location = answer.headers["location"]
    assert location.startswith("http://localhost:3000/return?")
    back = query_of(location)
    assert back == {
        "flow_id": flow_id,
        "status": "pending_binding",
        "binding_code": binding_code_of(answer),
    }
    assert answer.headers["referrer-policy"] == "no-referrer"


# --- row 8: consent completed by a different user ----------------------------------------------


def test_row_08_binding_by_another_user_never_activates_and_revokes_the_tokens(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault, "alice")
    flow_id, query = consent(vault, agent, username="alice")
    back = vault.callback(urlencode(query))
    assert back.status == 302
    (flow,) = items_of_type(vault, "flow")
    user = UserRef(flow["user_iss"]["S"], flow["user_sub"]["S"])
    granted = [s["S"] for s in flow["granted_scopes"]["L"]]
    context = token_context(user, "calendar", grant_id=flow["grant_id"]["S"], scopes=granted)
    envelope = vault.services.envelope
    refresh = envelope.decrypt(flow["refresh_token"]["B"], context).decode()
    access = envelope.decrypt(flow["access_token"]["B"], context).decode()
    assert vault.server.introspect(access)["active"] is True
    revocations = vault.server.stats()["revocations"]
    before = snapshot(vault)

    answer = agent.complete(flow_id, vault.user("bob"), binding_code_of(back))

    assert_problem(answer, 403, "user_mismatch")
    change = diff(before, snapshot(vault))
    assert change.kinds() == {"added": [], "removed": [], "changed": ["flow"]}
    (rejected,) = items_of_type(vault, "flow")
    assert rejected["status"]["S"] == "rejected"
    assert "refresh_token" not in rejected and "access_token" not in rejected
    assert not items_of_type(vault, "grant")
    assert vault.server.stats()["revocations"] == revocations + 2
    assert vault.server.introspect(access)["active"] is False
    assert vault.server.introspect(refresh, client_id="agent-vault")["active"] is False
    event = audit_events.expect("consent.complete", "denied", reason="user_mismatch")
    assert event["upstream"] == "revoked" and event["user"]["sub"] == "bob"

    # the right user arriving afterwards cannot revive it
    assert_problem(
        agent.complete(flow_id, vault.user("alice"), binding_code_of(back)), 409, "flow_not_pending"
    )
    assert_problem(agent.token("calendar", ["calendar.read"]), 403, "consent_required")


# --- row 12: scopes beyond the agent's policy --------------------------------------------------


def test_row_12_consent_for_scopes_beyond_the_policy_is_refused_before_any_redirect(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    with unchanged(vault):
        answer = agent.authorize("calendar", ["calendar.read", "mail.read"])
    body = assert_problem(answer, 403, "scope_not_allowed")
    assert body["allowed_scopes"] == ["calendar.read", "calendar.write"]
    assert body["denied_scopes"] == ["mail.read"]
    assert "authorization_url" not in body
    audit_events.expect("consent.start", "denied", reason="scope_not_allowed")


def test_row_12_a_token_for_scopes_beyond_the_policy_is_refused_before_any_refresh(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    refreshes = vault.server.stats()["token_requests"].get("refresh_token", 0)
    with unchanged(vault):
        answer = agent.token("calendar", ["mail.read"])
        other = agent.token("calendar-post", ["calendar.write"])
    assert_problem(answer, 403, "scope_not_allowed")
    assert_problem(other, 403, "scope_not_allowed")
    assert vault.server.stats()["token_requests"].get("refresh_token", 0) == refreshes
    audit_events.expect("token.issue", "denied", reason="scope_not_allowed", provider="calendar")


# --- row 13: scopes beyond the user's grant ----------------------------------------------------


def test_row_13_scopes_beyond_the_grant_need_consent_for_the_difference_only(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    refreshes = vault.server.stats()["token_requests"].get("refresh_token", 0)
    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.read", "calendar.write"])
    body = assert_problem(answer, 403, "consent_required")
    assert body["missing_scopes"] == ["calendar.write"]
    assert body["reason"] == "scopes_not_granted"
    assert body["authorizations_path"] == f"/v1/sessions/{agent.session_id}/authorizations"
    assert vault.server.stats()["token_requests"].get("refresh_token", 0) == refreshes
    audit_events.expect("token.issue", "denied", reason="scopes_not_granted")
    narrow = agent.token("calendar", ["calendar.read"])
    assert narrow.status == 200
    assert vault.server.introspect(narrow.json["access_token"])["scope"] == "calendar.read"


# --- row 14: the provider grants more than asked -----------------------------------------------


def over_granted_consent(vault: Vault, agent, asked=("calendar.read",)):  # type: ignore[no-untyped-def]
    """The user's browser edits the authorization URL to ask for more; the provider grants it:
    (flow id, the callback's answer)."""
    started = agent.authorize("calendar", list(asked))
    url = started.json["authorization_url"].replace(
        "scope=" + "%20".join(asked), "scope=calendar.read%20calendar.write%20mail.read"
    )
    assert url != started.json["authorization_url"]
    query = vault.consent_at_provider(url, "alice")
    assert set(query_of("?" + query)) >= {"code", "state"}
    back = vault.callback(query)
    assert back.status == 302, back.body
    return started.json["flow_id"], back


def test_row_14_a_broader_grant_is_recorded_but_the_agent_gets_only_what_it_asked_and_may_have(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    flow_id, back = over_granted_consent(vault, agent)
    audit_events.expect(
        "consent.callback",
        "exchanged",
        scopes=["calendar.read"],
        granted_scopes=["calendar.read"],
        over_granted_scopes=["calendar.write", "mail.read"],  # recorded, not granted
    )
    bound = agent.complete(flow_id, vault.user("alice"), binding_code_of(back))
    assert bound.status == 200
    assert bound.json["scopes"] == ["calendar.read"]
    (grant,) = items_of_type(vault, "grant")
    assert [s["S"] for s in grant["scopes"]["L"]] == ["calendar.read"]

    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200 and issued.json["scope"] == "calendar.read"
    assert vault.server.introspect(issued.json["access_token"])["scope"] == "calendar.read"
    with unchanged(vault):
        beyond = agent.token("calendar", ["mail.read"])
    assert_problem(beyond, 403, "scope_not_allowed")


# --- row 37: the provider grants more than the flow asked for ---------------------------------


def test_row_37_an_over_granted_scope_is_not_in_the_grant_and_asking_for_it_needs_consent(
    vault: Vault, audit_events: AuditLog
) -> None:
    """calendar.write is within the agent's policy but was not asked for: the provider's extra
    grant must not let a later request pass the consent check (and fail upstream as a 502)."""
    agent = agent_with_session(vault)
    flow_id, back = over_granted_consent(vault, agent)
    assert agent.complete(flow_id, vault.user("alice"), binding_code_of(back)).status == 200
    refreshes = vault.server.stats()["token_requests"].get("refresh_token", 0)
    audit_events.clear()

    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.write"])

    body = assert_problem(answer, 403, "consent_required")
    assert body["reason"] == "scopes_not_granted"
    assert body["missing_scopes"] == ["calendar.write"]
    assert vault.server.stats()["token_requests"].get("refresh_token", 0) == refreshes
    audit_events.expect("token.issue", "denied", reason="scopes_not_granted")


# --- row 28: a forwarded consent link, completed by the attacker ----------------------------------


def _flow_tokens(vault: Vault) -> tuple[str, str]:
    """(access, refresh) of the one stored flow, decrypted as the vault would."""
    (flow,) = items_of_type(vault, "flow")
    user = UserRef(flow["user_iss"]["S"], flow["user_sub"]["S"])
    granted = [s["S"] for s in flow["granted_scopes"]["L"]]
    context = token_context(
        user, flow["provider"]["S"], grant_id=flow["grant_id"]["S"], scopes=granted
    )
    envelope = vault.services.envelope
    return (
        envelope.decrypt(flow["access_token"]["B"], context).decode(),
        envelope.decrypt(flow["refresh_token"]["B"], context).decode(),
    )


def test_row_28_a_forwarded_consent_link_polled_by_the_attacker_never_binds_the_victim(
    vault: Vault, audit_events: AuditLog
) -> None:
    """Bob (the attacker) starts consent in his own session and forwards the provider link to
    Alice, who consents as herself. Bob knows the flow id and polls /complete with his own
    identity before and after her browser reaches the callback: nothing ever activates, and
    once he guesses a binding code the flow is rejected and Alice's tokens revoked upstream."""
    attacker = agent_with_session(vault, "bob")
    started = attacker.authorize("calendar", ["calendar.read"])
    assert set(started.json) == {"flow_id", "authorization_url", "expires_at"}  # no code here
    flow_id = started.json["flow_id"]
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")

    with unchanged(vault):  # her browser has not reached the callback yet
        early = attacker.complete(flow_id, vault.user("bob"))
    assert_problem(early, 404, "flow_not_found")

    back = vault.callback(query)  # her browser: the code goes to the app's return URL only
    assert back.status == 302
    code = binding_code_of(back)
    access, refresh = _flow_tokens(vault)
    assert vault.server.introspect(access)["sub"] == "alice"  # the victim's account
    (stored,) = items_of_type(vault, "flow")
    assert code not in repr(vault.snapshot()) and stored["binding_hash"]["S"] != code

    for _ in range(3):  # polling after she returned, without the code
        with unchanged(vault):
            polled = attacker.complete(flow_id, vault.user("bob"))
        assert_problem(polled, 400, "binding_code_required")
    audit_events.expect("consent.complete", "denied", reason="binding_code_required")

    guessed = attacker.complete(flow_id, vault.user("bob"), "A" * 43)

    assert_problem(guessed, 403, "binding_code_invalid")
    (rejected,) = items_of_type(vault, "flow")
    assert rejected["status"]["S"] == "rejected"
    assert rejected["error"]["S"] == "binding_code_invalid"
    assert not {"refresh_token", "access_token", "binding_hash"} & set(rejected)
    assert not items_of_type(vault, "grant")
    assert vault.server.introspect(access)["active"] is False
    assert vault.server.introspect(refresh, client_id="agent-vault")["active"] is False
    event = audit_events.expect("consent.complete", "denied", reason="binding_code_invalid")
    assert event["upstream"] == "revoked"
    # even the real code, arriving afterwards, revives nothing
    assert_problem(attacker.complete(flow_id, vault.user("bob"), code), 409, "flow_not_pending")
    assert_problem(attacker.token("calendar", ["calendar.read"]), 403, "consent_required")


def test_row_28_the_victims_app_completing_the_forwarded_flow_is_a_user_mismatch(
    vault: Vault, audit_events: AuditLog
) -> None:
    """Alice's browser lands on the application with the flow id and the binding code; if the
    application completes it with her identity, the flow (Bob's) is rejected and revoked."""
    attacker = agent_with_session(vault, "bob")
    flow_id, query = consent(vault, attacker, username="alice")
    back = vault.callback(urlencode(query))
    access, _ = _flow_tokens(vault)

    answer = attacker.complete(flow_id, vault.user("alice"), binding_code_of(back))

    assert_problem(answer, 403, "user_mismatch")
    assert not items_of_type(vault, "grant")
    assert vault.server.introspect(access)["active"] is False
    audit_events.expect("consent.complete", "denied", reason="user_mismatch")


def test_binding_needs_this_flows_own_code(vault: Vault, audit_events: AuditLog) -> None:
    """Another flow's binding code (both the agent's own, both the right user) binds nothing."""
    agent = agent_with_session(vault)
    first, first_query = consent(vault, agent)
    second, second_query = consent(vault, agent)
    first_back = vault.callback(urlencode(first_query))
    second_back = vault.callback(urlencode(second_query))

    answer = agent.complete(second, vault.user("alice"), binding_code_of(first_back))

    assert_problem(answer, 403, "binding_code_invalid")
    assert not items_of_type(vault, "grant")
    assert_problem(
        agent.complete(second, vault.user("alice"), binding_code_of(second_back)),
        409,
        "flow_not_pending",
    )
    bound = agent.complete(first, vault.user("alice"), binding_code_of(first_back))
    assert bound.status == 200 and bound.json["status"] == "active"
    audit_events.expect("consent.complete", "allowed", flow_id=first)


# --- row 39: mix-up with providers that send no `iss` -----------------------------------------


def no_iss_providers(vault: Vault) -> None:
    """Two providers that send no `iss` and authenticate no client (`none`, PKCE only):
    `calendar-public`, the honest one, and `calendar-other`, standing for an attacker's
    authorization server (its token endpoint is counted at the same server)."""
    server = vault.server
    provider = {
        "authorization_endpoint": server.authorization_endpoint,
        "token_endpoint": server.token_endpoint,
        "client_id": "agent-vault-public",
        "client_auth_method": "none",
        "assume_pkce_s256": True,
        "scopes": ["calendar.read"],
        "resource": server.resource,
        "timeout_seconds": 2.0,
    }
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    data["providers"].update({"calendar-public": provider, "calendar-other": provider})
    data["agents"]["calendar-agent"]["providers"].update(
        {
            name: {"scopes": ["calendar.read"], "delivery": "bearer"}
            for name in ("calendar-public", "calendar-other")
        }
    )
    vault.redeploy(data)


def relayed_to_honest_provider(vault: Vault, agent) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The mix-up: a flow started at `calendar-other` (the attacker's server), which sends the
    user on to the honest provider with the vault's client there, its own state and PKCE
    challenge. The honest provider answers at its own callback, without `iss`."""
    started = agent.authorize("calendar-other", ["calendar.read"])
    assert started.status == 201, started.body
    asked = query_of(started.json["authorization_url"])
    relayed = {**asked, "redirect_uri": f"{CALLBACK_URL}/calendar-public"}
    url = vault.server.authorization_endpoint + "?" + urlencode(relayed)
    query = query_of("?" + vault.consent_at_provider(url, "alice"))
    query.pop("iss", None)  # a provider that sends no iss
    return started.json["flow_id"], query


def test_row_39_a_code_at_another_providers_callback_is_never_redeemed(
    vault: Vault, audit_events: AuditLog
) -> None:
    no_iss_providers(vault)
    agent = agent_with_session(vault)
    _, query = relayed_to_honest_provider(vault, agent)
    exchanges = code_exchanges(vault)
    before = snapshot(vault)

    answer = vault.callback(urlencode(query), "calendar-public")

    assert_problem(answer, 400, "callback_mismatch")
    assert code_exchanges(vault) == exchanges, "the code went to a token endpoint"
    change = diff(before, snapshot(vault))
    assert change.kinds() == {"added": [], "removed": ["pending_flow"], "changed": []}
    assert not items_of_type(vault, "flow") and not items_of_type(vault, "grant")
    event = audit_events.expect("consent.callback", "denied", reason="callback_mismatch")
    assert event["provider"] == "calendar-other"
    assert event["callback_provider"] == "calendar-public"


def test_row_39_the_shared_callback_refuses_a_provider_that_sends_no_iss(
    vault: Vault, audit_events: AuditLog
) -> None:
    """The legacy shared callback cannot tell providers apart without `iss`: it never redeems
    a code for such a provider, whichever flow's state comes with it."""
    no_iss_providers(vault)
    agent = agent_with_session(vault)
    _, query = relayed_to_honest_provider(vault, agent)
    exchanges = code_exchanges(vault)

    answer = vault.callback(urlencode(query), None)

    body = assert_problem(answer, 400, "callback_mismatch")
    assert f"{CALLBACK_URL}/calendar-other" in body["detail"]  # names the callback to register
    assert code_exchanges(vault) == exchanges
    assert not items_of_type(vault, "pending_flow") and not items_of_type(vault, "flow")
    audit_events.expect("consent.callback", "denied", reason="callback_mismatch")


def test_row_39_each_provider_is_asked_to_answer_at_its_own_callback(vault: Vault) -> None:
    no_iss_providers(vault)
    agent = agent_with_session(vault)
    for provider in ("calendar", "calendar-post", "calendar-public", "calendar-other"):
        started = agent.authorize(provider, ["calendar.read"])
        assert started.status == 201, started.body
        redirect_uri = query_of(started.json["authorization_url"])["redirect_uri"]
        assert redirect_uri == f"{CALLBACK_URL}/{provider}"


def test_row_39_a_provider_without_iss_binds_at_its_own_callback(vault: Vault) -> None:
    no_iss_providers(vault)
    agent = agent_with_session(vault)
    started = agent.authorize("calendar-public", ["calendar.read"])
    query = query_of("?" + vault.consent_at_provider(started.json["authorization_url"], "alice"))
    query.pop("iss", None)
    back = vault.callback(urlencode(query), "calendar-public")
    assert back.status == 302, back.body
    bound = agent.complete(started.json["flow_id"], vault.user("alice"), binding_code_of(back))
    assert bound.status == 200 and bound.json["provider"] == "calendar-public"


def test_the_shared_callback_still_serves_a_provider_that_sends_iss(vault: Vault) -> None:
    """A flow whose provider advertises RFC 9207 `iss` (checked) may still answer at the legacy
    callback if its authorization request named it (flows started before the upgrade)."""
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    asked = query_of(started.json["authorization_url"])
    url = (
        vault.server.authorization_endpoint
        + "?"
        + urlencode({**asked, "redirect_uri": CALLBACK_URL})
    )
    query = vault.consent_at_provider(url, "alice")
    assert "iss" in query_of("?" + query)
    back = vault.callback(query, None)
    assert back.status == 302, back.body
    bound = agent.complete(started.json["flow_id"], vault.user("alice"), binding_code_of(back))
    assert bound.status == 200


# --- row 28: the provider is the users' identity issuer: its ID token names who consented ------


def openid_at_calendar(vault: Vault) -> None:
    """The calendar provider is also the users' identity issuer: let flows ask for `openid`."""
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    data["providers"]["calendar"]["scopes"].append("openid")
    data["agents"]["calendar-agent"]["providers"]["calendar"]["scopes"].append("openid")
    vault.redeploy(data)


def test_row_28_an_id_token_naming_another_user_rejects_the_flow_at_the_callback(
    vault: Vault, audit_events: AuditLog
) -> None:
    """Bob's flow, consented by Alice: the provider's ID token says `alice`, so the callback
    keeps nothing, revokes the tokens and mints no binding code."""
    openid_at_calendar(vault)
    attacker = agent_with_session(vault, "bob")
    flow_id, query = consent(vault, attacker, scopes=("calendar.read", "openid"), username="alice")
    revocations = vault.server.stats()["revocations"]

    back = vault.callback(urlencode(query))

    assert back.status == 302, back.body
    assert query_of(back.headers["location"]) == {
        "flow_id": flow_id,
        "status": "rejected",
        "error": "user_mismatch",
    }
    (flow,) = items_of_type(vault, "flow")
    assert flow["status"]["S"] == "rejected" and flow["error"]["S"] == "user_mismatch"
    assert not {"refresh_token", "access_token", "binding_hash"} & set(flow)
    assert not items_of_type(vault, "pending_flow") and not items_of_type(vault, "grant")
    assert vault.server.stats()["revocations"] == revocations + 2
    event = audit_events.expect("consent.callback", "denied", reason="user_mismatch")
    assert event["upstream"] == "revoked"
    assert_problem(attacker.complete(flow_id, vault.user("bob"), "A" * 43), 409, "flow_not_pending")


def test_row_28_an_id_token_naming_the_flows_user_binds_as_usual(vault: Vault) -> None:
    openid_at_calendar(vault)
    agent = agent_with_session(vault, "alice")
    flow_id, query = consent(vault, agent, scopes=("calendar.read", "openid"), username="alice")
    back = vault.callback(urlencode(query))
    assert query_of(back.headers["location"])["status"] == "pending_binding"
    bound = agent.complete(flow_id, vault.user("alice"), binding_code_of(back))
    assert bound.status == 200 and bound.json["status"] == "active"


def test_row_39_an_unknown_providers_callback_changes_nothing(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    flow_id, query = consent(vault, agent)
    exchanges = code_exchanges(vault)
    with unchanged(vault):
        answer = vault.callback(urlencode(query), "dropbox")
    assert_problem(answer, 400, "unknown_provider")
    assert code_exchanges(vault) == exchanges
    audit_events.expect("consent.callback", "denied", reason="unknown_provider")
    back = vault.callback(urlencode(query))  # the state is intact for its own callback
    assert back.status == 302 and query_of(back.headers["location"])["flow_id"] == flow_id
