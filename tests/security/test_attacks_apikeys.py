"""Flow 12, API-key credentials, threat-model rows 58-63.

Driven through the real handlers over moto (the keys in its Secrets Manager) and the bundled
provider's keyed API (`/api/keyed/events`), a real HTTP server that accepts configured keys in a
header, as a bearer, or in a query parameter and answers which key (by label) it got.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from tests.security.helpers import AuditLog, agent_with_session, assert_problem, unchanged
from tests.security.hygiene import HYGIENE
from tests.support.agent import TestAgent
from tests.support.apigw import HttpAnswer, build_event, invoke
from tests.support.aws import ACCOUNT
from tests.support.harness import Vault
from vault.models import UserRef
from vault.runtime import use_services

ADMIN = f"arn:aws:sts::{ACCOUNT}:assumed-role/vault-admin/ops"
KEY_ROLE, RETURNED_ROLE = "key-agent-role", "key-returned-role"
WINDOW = 600


def new_key(label: str) -> str:
    key = f"ak_{label}_{secrets.token_urlsafe(24)}"
    HYGIENE.add_secret(key, "API key")
    return key


@pytest.fixture
def keyed(vault: Vault) -> Vault:
    """The suite's vault redeployed with four API-key providers at the bundled keyed API (a
    header, a bearer, a query parameter; one key per user) and two agents: one through the
    proxy, one with `returned` delivery."""
    server = vault.server
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    base = {"api_base_urls": [server.calendar_api_base], "timeout_seconds": 2.0}
    data["providers"] |= {
        "keyed": {
            **base,
            "api_key": {"header": "X-Api-Key", "rotation_window_seconds": WINDOW},
        },
        "keyed-bearer": {**base, "api_key": {}},
        "keyed-query": {**base, "api_key": {"query_parameter": "api_key"}},
        "keyed-user": {**base, "api_key": {"per": "user", "header": "X-Api-Key"}},
    }
    data["agents"]["key-agent"] = {
        "role_name": KEY_ROLE,
        "providers": {
            "keyed": {"requests": [{"methods": ["GET", "POST"], "paths": ["/keyed/**"]}]},
            "keyed-bearer": {},
            "keyed-query": {},
            "keyed-user": {},
        },
    }
    data["agents"]["key-returned"] = {
        "role_name": RETURNED_ROLE,
        "providers": {"keyed": {"delivery": "returned"}},
    }
    # a parent and a child agent, both with the API-key provider (and a calendar scope to
    # delegate): API keys are never delegated
    both = {"keyed": {}, "calendar": {"scopes": ["calendar.read"], "delivery": "bearer"}}
    data["agents"]["key-parent"] = {
        "role_name": "key-parent-role",
        "providers": both,
        "may_delegate_to": ["key-child"],
    }
    data["agents"]["key-child"] = {"role_name": "key-child-role", "providers": both}
    vault.redeploy(data)
    server.set_api_keys({})
    return vault


def put_key(
    vault: Vault,
    provider: str,
    key: str,
    user: str | None = None,
    principal: str = ADMIN,
    raw: str | None = None,
) -> HttpAnswer:
    body: dict[str, Any] = {"key": key}
    if user is not None:
        body["user"] = {"iss": vault.server.issuer, "sub": user}
    return invoke(
        build_event(
            "PUT",
            f"/v1/admin/api-keys/{provider}",
            body=raw if raw is not None else json.dumps(body),
            headers={"content-type": "application/json"},
            principal_arn=principal,
        )
    )


def delete_key(
    vault: Vault, provider: str, user: str | None = None, principal: str = ADMIN
) -> HttpAnswer:
    query = {"user_iss": vault.server.issuer, "user_sub": user} if user else None
    return invoke(
        build_event(
            "DELETE", f"/v1/admin/api-keys/{provider}", query=query, principal_arn=principal
        )
    )


def stored_secrets(vault: Vault) -> dict[str, str]:
    """Every API-key secret in Secrets Manager: name -> value."""
    client = vault.session.client("secretsmanager")
    prefix = vault.services.settings.api_key_prefix
    names = [s["Name"] for s in client.list_secrets()["SecretList"]]
    return {
        n: client.get_secret_value(SecretId=n)["SecretString"]
        for n in names
        if n.startswith(prefix)
    }


def key_agent(vault: Vault, user: str = "alice", role: str = KEY_ROLE) -> TestAgent:
    return agent_with_session(vault, user, role)


def keyed_calls(vault: Vault) -> int:
    return int(vault.server.stats()["keyed_requests"])


# --- it works end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("provider, via", [("keyed", "header"), ("keyed-bearer", "authorization")])
def test_an_api_key_set_by_an_admin_reaches_the_keyed_api_through_the_proxy(
    keyed: Vault, audit_events: AuditLog, provider: str, via: str
) -> None:
    key = new_key("one")
    keyed.server.set_api_keys({"one": key})
    answer = put_key(keyed, provider, key)
    assert answer.status == 200, answer.body
    assert answer.json == {
        "provider": provider,
        "status": "set",
        "rotated_at": answer.json["rotated_at"],
        "previous_valid_until": None,
    }
    agent = key_agent(keyed)
    # the agent's own credentials are never forwarded; the vault's key is what the API gets
    called = agent.proxy(
        "GET", "keyed/events", provider, headers={"Authorization": "Bearer agent-own-value"}
    )
    assert called.status == 200, called.body
    assert (called.json["key"], called.json["via"]) == ("one", via)
    assert called.headers["x-agent-vault-proxy"] == "upstream"
    # in Secrets Manager only, under its provider's name; never in the table
    (name,) = stored_secrets(keyed)
    assert name == keyed.services.settings.api_key_prefix + provider
    assert key not in json.dumps(keyed.items())
    audit_events.expect("apikey.set", "allowed", provider=provider, principal=ADMIN)
    used = audit_events.expect("proxy.call", "allowed", agent="key-agent", provider=provider)
    assert used["credential"] == "api_key" and used["api_key_version"] == "current"
    assert used["status"] == 200


def test_a_query_parameter_key_reaches_the_api_and_never_the_audit_or_the_agent_query(
    keyed: Vault, audit_events: AuditLog
) -> None:
    key = new_key("query")
    keyed.server.set_api_keys({"query": key})
    assert put_key(keyed, "keyed-query", key).status == 200
    agent = key_agent(keyed)
    called = agent.proxy("GET", "keyed/events", "keyed-query", query="page=2")
    assert called.status == 200, called.body
    assert (called.json["key"], called.json["via"]) == ("query", "query")
    event = audit_events.expect("proxy.call", "allowed", provider="keyed-query")
    assert event["path"] == "/keyed/events" and key not in json.dumps(event)
    # the agent may not name the parameter the vault fills (nor smuggle its own key)
    before = keyed_calls(keyed)
    for query in ("api_key=mine", "a=1&api%5Fkey=mine", "api_key"):
        refused = agent.proxy("GET", "keyed/events", "keyed-query", query=query)
        assert_problem(refused, 400, "invalid_request")
    assert keyed_calls(keyed) == before


def test_warm_proxied_calls_read_the_key_from_the_cache_not_secrets_manager(keyed: Vault) -> None:
    key = new_key("warm")
    keyed.server.set_api_keys({"warm": key})
    assert put_key(keyed, "keyed", key).status == 200
    keyed.redeploy()  # a cold container: the first call reads the secret
    agent = key_agent(keyed)
    keyed.counter.reset()
    for _ in range(3):
        assert agent.proxy("GET", "keyed/events", "keyed").status == 200
    assert keyed.counter.counts["secretsmanager:GetSecretValue"] == 1


# --- rotation without downtime ------------------------------------------------------------------


def test_rotation_keeps_the_previous_key_for_idempotent_retries_during_the_window(
    keyed: Vault, audit_events: AuditLog
) -> None:
    old, new = new_key("old"), new_key("new")
    keyed.server.set_api_keys({"old": old})  # the provider does not know the new key yet
    assert put_key(keyed, "keyed", old).status == 200
    rotated = put_key(keyed, "keyed", new)
    assert rotated.status == 200, rotated.body
    assert rotated.json["previous_valid_until"] == rotated.json["rotated_at"] + WINDOW
    assert audit_events.find("apikey.set", "allowed", rotation="rotated")
    (value,) = stored_secrets(keyed).values()
    assert json.loads(value)["current"] == new and json.loads(value)["previous"] == old
    agent = key_agent(keyed)
    # GET: the new key gets a 401, the one retry with the previous key a 200
    got = agent.proxy("GET", "keyed/events", "keyed")
    assert got.status == 200 and got.json["key"] == "old", got.body
    retried = audit_events.expect("proxy.call", "allowed", provider="keyed")
    assert retried["api_key_version"] == "previous"
    # POST is not idempotent: never sent twice, the provider's 401 is the answer
    posted = agent.proxy("POST", "keyed/events", "keyed", body="{}")
    assert posted.status == 401 and posted.headers["x-agent-vault-proxy"] == "upstream"
    # the provider accepts both: the current key is what the proxy sends
    keyed.server.set_api_keys({"old": old, "new": new})
    assert agent.proxy("GET", "keyed/events", "keyed").json["key"] == "new"
    # after the window, the previous key is never tried again
    keyed.server.set_api_keys({"old": old})
    keyed.clock.advance(WINDOW + 1)
    assert agent.proxy("GET", "keyed/events", "keyed").status == 401


def test_row_63_a_key_set_in_another_container_is_taken_after_a_401(keyed: Vault) -> None:
    first, second = new_key("first"), new_key("second")
    keyed.server.set_api_keys({"second": second})  # the provider has moved on already
    assert put_key(keyed, "keyed", first).status == 200
    agent = key_agent(keyed)
    assert agent.proxy("GET", "keyed/events", "keyed").status == 401  # `first`, now cached
    proxy_container = keyed.services
    keyed.redeploy()  # the admin's request lands in another container
    assert put_key(keyed, "keyed", second).status == 200
    use_services(proxy_container)  # still caching `first`: its 401 makes it read again
    got = agent.proxy("GET", "keyed/events", "keyed")
    assert got.status == 200 and got.json["key"] == "second", got.body


# --- returned delivery -------------------------------------------------------------------------


def test_returned_delivery_hands_the_key_only_to_an_agent_whose_policy_says_so(
    keyed: Vault, audit_events: AuditLog
) -> None:
    key = new_key("returned")
    assert put_key(keyed, "keyed", key).status == 200
    returned = key_agent(keyed, role=RETURNED_ROLE)
    path = f"/v1/sessions/{returned.session_id}/api-key"
    answer = returned.call("POST", path, {"provider": "keyed"})
    assert answer.status == 200, answer.body
    assert answer.json == {
        "api_key": key,
        "provider": "keyed",
        "header": "X-Api-Key",
        "prefix": "",
    }
    delivered = audit_events.expect("apikey.deliver", "allowed", agent="key-returned")
    assert delivered["credential"] == "api_key" and key not in json.dumps(delivered)
    # a proxy agent never gets the key itself; a returned agent does not use the proxy
    proxied = key_agent(keyed)
    refused = proxied.call(
        "POST", f"/v1/sessions/{proxied.session_id}/api-key", {"provider": "keyed"}
    )
    assert_problem(refused, 403, "delivery_proxy_only")
    assert_problem(returned.proxy("GET", "keyed/events", "keyed"), 403, "request_not_allowed")


# --- row 58: never in a log, URL, error or template -------------------------------------------


def test_row_58_an_api_key_is_never_in_an_error_or_an_audit_event(
    keyed: Vault, audit_events: AuditLog
) -> None:
    key = new_key("secret")
    keyed.server.set_api_keys({})  # the provider refuses it: its 401 goes back as it is
    assert put_key(keyed, "keyed", key).status == 200
    agent = key_agent(keyed)
    answers = [
        agent.proxy("GET", "keyed/events", "keyed"),
        agent.proxy("GET", "keyed/events/../x", "keyed"),
        put_key(keyed, "keyed", key + " "),
        put_key(keyed, "calendar", key),
    ]
    assert [a.status for a in answers] == [401, 400, 400, 400]
    for answer in answers:
        assert key not in answer.body
    assert key not in json.dumps(audit_events.events)
    # (the suite's hygiene scan checks every log line, answer and URL for the key as well)


# --- row 59: never served to an agent without the provider in its policy ------------------------


def test_row_59_an_api_key_is_never_served_to_an_agent_without_the_provider(
    keyed: Vault, audit_events: AuditLog
) -> None:
    key = new_key("policy")
    keyed.server.set_api_keys({"policy": key})
    assert put_key(keyed, "keyed", key).status == 200
    before = keyed_calls(keyed)
    other = agent_with_session(keyed, "alice", "proxy-agent-role")
    assert_problem(other.proxy("GET", "keyed/events", "keyed"), 403, "scope_not_allowed")
    refused = other.call("POST", f"/v1/sessions/{other.session_id}/api-key", {"provider": "keyed"})
    assert_problem(refused, 403, "scope_not_allowed")
    assert keyed_calls(keyed) == before
    audit_events.expect("apikey.deliver", "denied", agent="proxy-agent")
    # another agent's session is no way in either
    mine = key_agent(keyed)
    stolen = other.call(
        "POST",
        f"/v1/sessions/{mine.session_id}/api-key",
        {"provider": "keyed"},
        proof=other.proof("POST", f"/v1/sessions/{mine.session_id}/api-key"),
    )
    assert stolen.status == 403 and key not in stolen.body


def test_row_59_a_delegated_session_never_gets_an_api_key(keyed: Vault) -> None:
    key = new_key("delegated")
    keyed.server.set_api_keys({"delegated": key})
    assert put_key(keyed, "keyed", key).status == 200
    parent = key_agent(keyed, role="key-parent-role")
    assert parent.proxy("GET", "keyed/events", "keyed").status == 200  # the parent may
    offer = f"/v1/sessions/{parent.session_id}/delegations"
    with unchanged(keyed):  # the API-key provider cannot be handed down at all
        refused = parent.call("POST", offer, {"agent": "key-child", "providers": {"keyed": []}})
        assert_problem(refused, 400, "invalid_request")
    offered = parent.call(
        "POST", offer, {"agent": "key-child", "providers": {"calendar": ["calendar.read"]}}
    )
    assert offered.status == 201, offered.body
    child = keyed.agent("key-child-role")
    claim = f"/v1/delegations/{offered.json['delegation_id']}/claim"
    claimed = child.call("POST", claim, proof=child.proof("POST", claim, session_id=None))
    assert claimed.status == 201, claimed.body
    child.session_id = claimed.json["session_id"]
    before = keyed_calls(keyed)
    assert_problem(child.proxy("GET", "keyed/events", "keyed"), 403, "delegation_exceeds_parent")
    assert keyed_calls(keyed) == before


# --- row 60: a per-user key only for its user's sessions --------------------------------------


def test_row_60_a_per_user_key_is_never_used_for_another_users_session(
    keyed: Vault, audit_events: AuditLog
) -> None:
    alice_key, bob_key = new_key("alice"), new_key("bob")
    keyed.server.set_api_keys({"alice": alice_key, "bob": bob_key})
    assert put_key(keyed, "keyed-user", alice_key, user="alice").status == 200
    alice = key_agent(keyed, "alice")
    bob = key_agent(keyed, "bob")
    got = alice.proxy("GET", "keyed/events", "keyed-user")
    assert got.status == 200 and got.json["key"] == "alice", got.body
    # bob has no key yet: alice's is never used for him
    before = keyed_calls(keyed)
    missing = assert_problem(bob.proxy("GET", "keyed/events", "keyed-user"), 403, "api_key_not_set")
    assert missing["per"] == "user"
    assert keyed_calls(keyed) == before
    assert put_key(keyed, "keyed-user", bob_key, user="bob").status == 200
    assert bob.proxy("GET", "keyed/events", "keyed-user").json["key"] == "bob"
    assert alice.proxy("GET", "keyed/events", "keyed-user").json["key"] == "alice"
    # the secrets are named by the hashed user, never the user id
    alice_ref = UserRef(keyed.server.issuer, "alice")
    names = sorted(stored_secrets(keyed))
    assert keyed.services.api_keys.name("keyed-user", alice_ref.key) in names
    assert not [n for n in names if "alice" in n or "bob" in n]
    # deleting bob's key leaves alice's
    assert delete_key(keyed, "keyed-user", user="bob").json["deleted"] is True
    assert_problem(bob.proxy("GET", "keyed/events", "keyed-user"), 403, "api_key_not_set")
    assert alice.proxy("GET", "keyed/events", "keyed-user").json["key"] == "alice"
    set_event = audit_events.expect("apikey.set", "allowed", provider="keyed-user")
    assert set_event["user"] == {"iss": keyed.server.issuer, "sub": "bob"}


# --- row 61: the admin routes refuse every other caller ---------------------------------------


@pytest.mark.parametrize(
    "principal",
    [
        f"arn:aws:sts::{ACCOUNT}:assumed-role/{KEY_ROLE}/task-1",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/someone/ops",
        "arn:aws:sts::999999999999:assumed-role/vault-admin/ops",
    ],
)
def test_row_61_the_api_key_admin_routes_refuse_non_admin_callers(
    keyed: Vault, audit_events: AuditLog, principal: str
) -> None:
    key = new_key("admin")
    assert put_key(keyed, "keyed", key).status == 200
    before = stored_secrets(keyed)
    with unchanged(keyed):
        assert_problem(put_key(keyed, "keyed", new_key("x"), principal=principal), 403, "forbidden")
        # refused before the body is read: a malformed one is still a 403
        assert_problem(put_key(keyed, "keyed", "", principal=principal, raw="{"), 403, "forbidden")
        assert_problem(delete_key(keyed, "keyed", principal=principal), 403, "forbidden")
    assert stored_secrets(keyed) == before
    audit_events.expect("apikey.set", "denied", principal=principal)
    audit_events.expect("apikey.delete", "denied", principal=principal)


def test_row_63_an_admin_deletes_a_key_and_the_proxy_stops_using_it_at_once(
    keyed: Vault, audit_events: AuditLog
) -> None:
    key = new_key("gone")
    keyed.server.set_api_keys({"gone": key})
    assert put_key(keyed, "keyed", key).status == 200
    agent = key_agent(keyed)
    assert agent.proxy("GET", "keyed/events", "keyed").status == 200
    deleted = delete_key(keyed, "keyed")
    assert deleted.status == 200 and deleted.json == {"provider": "keyed", "deleted": True}
    assert stored_secrets(keyed) == {}
    before = keyed_calls(keyed)
    assert_problem(agent.proxy("GET", "keyed/events", "keyed"), 403, "api_key_not_set")
    assert keyed_calls(keyed) == before
    audit_events.expect("apikey.delete", "revoked", provider="keyed", principal=ADMIN)
    assert delete_key(keyed, "keyed").json["deleted"] is False


# --- row 62: bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider, key, user, raw, status, code",
    [
        ("keyed", "", None, None, 400, "invalid_api_key"),
        ("keyed", "k" * 4097, None, None, 400, "invalid_api_key"),
        ("keyed", "has a space in it", None, None, 400, "invalid_api_key"),
        ("keyed", "clé-non-ascii-0123456789", None, None, 400, "invalid_api_key"),
        ("keyed", "x" * 9000, None, None, 400, "invalid_request"),
        ("keyed", "x" * 17000, None, None, 413, "payload_too_large"),
        ("nowhere", "k" * 32, None, None, 400, "unknown_provider"),
        ("Bad_Name", "k" * 32, None, None, 400, "unknown_provider"),
        ("calendar", "k" * 32, None, None, 400, "not_an_api_key_provider"),
        ("keyed", "k" * 32, "alice", None, 400, "invalid_request"),
        ("keyed-user", "k" * 32, None, None, 400, "invalid_request"),
        ("keyed", "", None, "{", 400, "invalid_request"),
        ("keyed", "", None, '{"key": "k", "extra": 1}', 400, "invalid_request"),
        ("keyed", "", None, '{"key": 7}', 400, "invalid_request"),
        ("keyed", "", None, "[]", 400, "invalid_request"),
    ],
)
def test_row_62_bad_api_key_input_is_a_problem_and_stores_nothing(
    keyed: Vault,
    provider: str,
    key: str,
    user: str | None,
    raw: str | None,
    status: int,
    code: str,
) -> None:
    with unchanged(keyed):
        answer = put_key(keyed, provider, key, user=user, raw=raw)
        assert_problem(answer, status, code)
    assert stored_secrets(keyed) == {}


def test_row_62_bad_delete_input_is_a_problem(keyed: Vault) -> None:
    for query in ({"user_iss": "x"}, {"other": "1"}, {"user_iss": "", "user_sub": "a"}):
        answer = invoke(
            build_event("DELETE", "/v1/admin/api-keys/keyed-user", query=query, principal_arn=ADMIN)
        )
        assert_problem(answer, 400, "invalid_request")
    assert_problem(delete_key(keyed, "keyed-user"), 400, "invalid_request")
    assert_problem(delete_key(keyed, "calendar"), 400, "not_an_api_key_provider")


def test_no_consent_and_no_token_at_an_api_key_provider(keyed: Vault) -> None:
    agent = key_agent(keyed)
    with unchanged(keyed):
        assert_problem(agent.authorize("keyed", ["x"]), 403, "scope_not_allowed")
        assert_problem(agent.token("keyed", ["x"]), 403, "scope_not_allowed")
