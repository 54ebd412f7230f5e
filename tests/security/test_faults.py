"""SECURITY.md rows 21 and 22, DESIGN invariant 8: failures fail closed, with a retry hint, and
lose or duplicate no grant and no pending flow.

Faults are injected only at the boundaries:

- AWS: a botocore `before-call` hook on the harness's boto3 session answers chosen operations
  with an error response (botocore raises it as the service's `ClientError`; the call never
  reaches moto, and nothing retries it, as if the SDK's retries were exhausted). The hook is
  copied into clients when they are created, so each test builds a fresh `Services` after
  registering it: a new Lambda container, with a cold data-key cache (a KMS fault only matters
  on a cache miss) and cold provider and secret caches.
- The provider: oidc-provider's `/__test/faults` answers the token endpoint with a 5xx or stalls
  it (`delay_ms` beyond the configured `timeout_seconds` of 2.0 gives 504; a stalled request
  whose caller gave up is dropped unprocessed by the provider).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    diff,
    grant_item,
    items_of_type,
    query_of,
    snapshot,
    unchanged,
)
from tests.security.test_attacks_storage import refreshes, stored_refresh_token
from tests.support.apigw import LambdaContext
from tests.support.harness import Vault, binding_code_of
from vault.runtime import Services


@dataclass
class _Rule:
    operation: str
    code: str
    status: int
    remaining: int
    before: Callable[[], None] | None = None


@dataclass
class AwsFaults:
    """A botocore `before-call` hook: the next calls of chosen operations fail (or first let
    a competing request run, for races)."""

    rules: list[_Rule] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)

    def fail(self, operation: str, code: str, status: int = 400, times: int = 1) -> None:
        """`operation` is `service.Operation`, e.g. `kms.Decrypt`, `dynamodb.Query`."""
        self.rules.append(_Rule(operation, code, status, times))

    def race(self, operation: str, competitor: Callable[[], None]) -> None:
        """Run `competitor` (another request) just before the next `operation` call."""
        self.rules.append(_Rule(operation, "", 0, 1, competitor))

    def clear(self) -> None:
        self.rules.clear()

    def __call__(self, model: Any, **_: Any) -> Any:
        name = f"{model.service_model.service_name}.{model.name}"
        for rule in self.rules:
            if rule.operation == name and rule.remaining > 0:
                rule.remaining -= 1
                self.hits[name] += 1
                if rule.before is not None:
                    rule.before()
                    return None  # then the real call proceeds
                return _HttpStatus(rule.status), {
                    "Error": {"Code": rule.code, "Message": "injected fault"},
                    "ResponseMetadata": {"HTTPStatusCode": rule.status},
                }
        return None


@dataclass(frozen=True)
class _HttpStatus:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""


@pytest.fixture
def faults(vault: Vault) -> AwsFaults:
    injector = AwsFaults()
    vault.session.events.register("before-call", injector)
    return injector


def new_container(vault: Vault) -> Services:
    """A fresh Lambda container (its clients carry the fault hook; every cache is cold)."""
    return vault.redeploy()


def exchanges(vault: Vault) -> int:
    return int(vault.server.stats()["token_requests"].get("authorization_code", 0))


def pending_status(vault: Vault) -> list[str]:
    return [i["status"]["S"] for i in items_of_type(vault, "pending_flow")]


# --- KMS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["ThrottlingException", "KMSInternalException"])
def test_row_21_kms_failing_while_starting_consent_stores_nothing(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog, code: str
) -> None:
    agent = agent_with_session(vault)
    faults.fail("kms.GenerateDataKey", code, status=500 if "Internal" in code else 400)
    new_container(vault)
    with unchanged(vault):
        answer = agent.authorize("calendar", ["calendar.read"])
    assert_problem(answer, 503, "crypto_unavailable")
    assert faults.hits["kms.GenerateDataKey"] == 1
    audit_events.expect("consent.start", "failed", reason="crypto_unavailable")
    assert not audit_events.find("request"), "the decision recorded it, once"
    assert agent.authorize("calendar", ["calendar.read"]).status == 201  # and it recovers


@pytest.mark.parametrize("code", ["ThrottlingException", "KMSInternalException"])
def test_row_21_kms_failing_in_a_cold_container_fails_closed_and_keeps_the_grant(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog, code: str
) -> None:
    agent = connected_agent(vault)
    requests = refreshes(vault)
    faults.fail("kms.Decrypt", code, status=500 if "Internal" in code else 400)
    new_container(vault)
    with unchanged(vault):  # the refresh lease taken is released again
        answer = agent.token("calendar", ["calendar.read"])
    assert_problem(answer, 503, "crypto_unavailable")
    assert refreshes(vault) == requests, "no refresh without the refresh token"
    audit_events.expect("token.issue", "failed", reason="crypto_unavailable")
    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200

    # a cached session token in another cold container: the same
    faults.fail("kms.Decrypt", code, status=500 if "Internal" in code else 400)
    new_container(vault)
    with unchanged(vault):
        cached = agent.token("calendar", ["calendar.read"])
    assert_problem(cached, 503, "crypto_unavailable")
    served = agent.token("calendar", ["calendar.read"])
    assert served.json["access_token"] == issued.json["access_token"]


def test_row_21_kms_refusing_a_ciphertext_is_never_served_and_never_breaks_the_grant(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    before_grant = grant_item(vault)
    faults.fail("kms.Decrypt", "InvalidCiphertextException")
    new_container(vault)
    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.read"])
    assert_problem(answer, 500, "stored_data_invalid")
    assert grant_item(vault) == before_grant
    audit_events.expect("token.issue", "denied", reason="stored_data_invalid")
    assert agent.token("calendar", ["calendar.read"]).status == 200


# --- DynamoDB ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation, code",
    [
        ("dynamodb.Query", "ProvisionedThroughputExceededException"),
        ("dynamodb.Query", "ThrottlingException"),
        ("dynamodb.PutItem", "ThrottlingException"),  # the proof's jti
        ("dynamodb.GetItem", "ProvisionedThroughputExceededException"),  # the grant
        ("dynamodb.UpdateItem", "InternalServerError"),  # the refresh lease
        ("dynamodb.TransactWriteItems", "ThrottlingException"),  # storing the refresh
    ],
)
def test_row_21_dynamodb_failing_on_the_token_route_fails_closed(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog, operation: str, code: str
) -> None:
    agent = connected_agent(vault)
    before = snapshot(vault)
    faults.fail(operation, code, status=500 if "Internal" in code else 400)
    new_container(vault)

    answer = agent.token("calendar", ["calendar.read"])

    assert_problem(answer, 503, "storage_unavailable")
    assert faults.hits[operation] == 1
    grant = grant_item(vault)
    assert grant["status"]["S"] == "active"
    if operation != "dynamodb.TransactWriteItems":
        assert diff(before, snapshot(vault)).empty
    assert [e for e in audit_events.events if e.get("reason") == "storage_unavailable"]


def test_row_21_a_storage_failure_after_the_upstream_refresh_is_never_replayed(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog
) -> None:
    """Row 40 as well: the provider rotated the refresh token but the write that keeps the new
    one failed, so the vault still holds the spent one and the lease stays unreleased. When the
    lease runs out, the next caller finds it abandoned (the outcome of that refresh is unknown)
    and never replays the spent token: the grant breaks once (`refresh_outcome_unknown`), and
    another session's live token of the same grant is not revoked by a reuse."""
    agent = connected_agent(vault)
    other = agent_with_session(vault)
    live = other.token("calendar", ["calendar.read"])
    assert live.status == 200, live.body
    before = grant_item(vault)
    faults.fail("dynamodb.TransactWriteItems", "InternalServerError", status=500)
    new_container(vault)
    requests = refreshes(vault)

    failed = agent.token("calendar", ["calendar.read"])

    assert_problem(failed, 503, "storage_unavailable")
    held = grant_item(vault)
    assert held["refresh_token"] == before["refresh_token"] and "lease_owner" in held
    assert refreshes(vault) - requests == 1
    vault.clock.advance(2 * 2.0 + 5 + 1)  # the lease runs out (2 x timeout + 5 s)
    broken = agent.token("calendar", ["calendar.read"])
    body = assert_problem(broken, 403, "consent_required")
    assert body["reason"] == "grant_broken"
    assert body["broken_reason"] == "refresh_outcome_unknown"
    for _ in range(3):
        assert agent.token("calendar", ["calendar.read"]).code == "consent_required"
    assert refreshes(vault) - requests == 1, "the spent refresh token is never replayed"
    assert len(audit_events.find("grant.refresh", "broken")) == 1
    audit_events.expect("grant.refresh", "broken", reason="refresh_outcome_unknown")
    assert vault.server.introspect(live.json["access_token"])["active"] is True


def test_row_21_dynamodb_failing_at_binding_keeps_the_flow_for_a_retry(
    vault: Vault, faults: AwsFaults
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    back = vault.callback(vault.consent_at_provider(started.json["authorization_url"], "alice"))
    assert back.status == 302
    code = binding_code_of(back)
    faults.fail("dynamodb.TransactWriteItems", "ThrottlingException")
    new_container(vault)
    with unchanged(vault):
        answer = agent.complete(started.json["flow_id"], vault.user("alice"), code)
    assert_problem(answer, 503, "storage_unavailable")
    retried = agent.complete(started.json["flow_id"], vault.user("alice"), code)
    assert retried.status == 200, retried.body
    assert len(items_of_type(vault, "grant")) == 1


def test_row_21_dynamodb_failing_at_the_callback_claim_keeps_the_flow_for_a_retry(
    vault: Vault, faults: AwsFaults
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    faults.fail("dynamodb.UpdateItem", "ProvisionedThroughputExceededException")
    new_container(vault)
    with unchanged(vault):
        answer = vault.callback(query)
    assert_problem(answer, 503, "storage_unavailable")
    assert exchanges(vault) == 0 or pending_status(vault) == ["pending"]
    assert vault.callback(query).status == 302


# --- a crash between the code exchange and storage --------------------------------------------


def test_row_21_storage_failing_after_the_code_exchange_revokes_the_new_tokens(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog
) -> None:
    """The code is spent at the provider but the transaction that records the flow fails: 503,
    the tokens just issued are revoked upstream (nothing lives there that the vault forgot),
    the pending flow stays (claimed, not lost, not duplicated), and a retried callback is
    refused cleanly without reaching the provider again."""
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    faults.fail("dynamodb.TransactWriteItems", "InternalServerError", status=500)
    new_container(vault)
    stats = vault.server.stats()
    before = snapshot(vault)

    answer = vault.callback(query)

    assert_problem(answer, 503, "storage_unavailable")
    after = vault.server.stats()
    assert after["token_requests"]["authorization_code"] == (
        stats["token_requests"]["authorization_code"] + 1
    )
    assert after["revocations"] == stats["revocations"] + 2
    event = audit_events.expect("consent.callback", "failed", reason="storage_unavailable")
    assert event["upstream"] == "revoked"
    change = diff(before, snapshot(vault))
    assert change.kinds() == {"added": [], "removed": [], "changed": ["pending_flow"]}
    assert pending_status(vault) == ["exchanging"]
    assert not items_of_type(vault, "flow") and not items_of_type(vault, "grant")

    with unchanged(vault):
        retried = vault.callback(query)
    assert_problem(retried, 400, "invalid_state")
    assert (
        vault.server.stats()["token_requests"]["authorization_code"]
        == (after["token_requests"]["authorization_code"])
    )


# --- conditional-check races -----------------------------------------------------------------


def test_row_21_two_bindings_of_one_flow_race_and_exactly_one_wins(
    vault: Vault, faults: AwsFaults
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    flow_id = started.json["flow_id"]
    back = vault.callback(vault.consent_at_provider(started.json["authorization_url"], "alice"))
    assert back.status == 302
    code = binding_code_of(back)
    new_container(vault)
    winner: list[Any] = []
    faults.race(
        "dynamodb.TransactWriteItems",
        lambda: winner.append(agent.complete(flow_id, vault.user("alice"), code)),
    )

    loser = agent.complete(flow_id, vault.user("alice"), code)

    assert [w.status for w in winner] == [200]
    assert_problem(loser, 409, "flow_not_pending")
    assert len(items_of_type(vault, "grant")) == 1
    assert agent.token("calendar", ["calendar.read"]).status == 200


@pytest.mark.parametrize("wrong", ["user", "binding_code"])
def test_row_34_a_wrong_completion_losing_the_race_to_a_valid_one_is_a_409(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog, wrong: str
) -> None:
    """The wrong completion (another user, or a wrong code) is about to reject the flow when
    the valid one activates it: the loser gets 409, never a 500, and the winner's grant and its
    tokens stay alive (nothing is revoked for the loser)."""
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    flow_id = started.json["flow_id"]
    back = vault.callback(vault.consent_at_provider(started.json["authorization_url"], "alice"))
    code = binding_code_of(back)
    new_container(vault)
    revocations = vault.server.stats()["revocations"]
    winner: list[Any] = []
    faults.race(  # the wrong completion's reject_flow is its first write
        "dynamodb.UpdateItem",
        lambda: winner.append(agent.complete(flow_id, vault.user("alice"), code)),
    )

    if wrong == "user":
        loser = agent.complete(flow_id, vault.user("bob"), code)
    else:
        loser = agent.complete(flow_id, vault.user("alice"), "W" * 43)

    assert [w.status for w in winner] == [200]
    assert_problem(loser, 409, "flow_not_pending")
    assert faults.hits["dynamodb.UpdateItem"] == 1
    (flow,) = items_of_type(vault, "flow")
    assert flow["status"]["S"] == "active"
    assert len(items_of_type(vault, "grant")) == 1
    assert vault.server.stats()["revocations"] == revocations
    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200
    assert vault.server.introspect(issued.json["access_token"])["active"] is True
    audit_events.expect("consent.complete", "denied", reason="flow_not_pending")


def test_row_21_two_callbacks_with_one_state_race_and_the_code_is_redeemed_once(
    vault: Vault, faults: AwsFaults
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    new_container(vault)
    winner: list[Any] = []
    faults.race("dynamodb.UpdateItem", lambda: winner.append(vault.callback(query)))
    before = exchanges(vault)

    loser = vault.callback(query)

    assert [w.status for w in winner] == [302]
    assert_problem(loser, 400, "invalid_state")
    assert exchanges(vault) - before == 1
    assert len(items_of_type(vault, "flow")) == 1


# --- Secrets Manager ---------------------------------------------------------------------------


def test_row_21_secrets_manager_failing_at_the_callback_keeps_the_flow_for_a_retry(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    faults.fail("secretsmanager.GetSecretValue", "InternalServiceError", status=500)
    new_container(vault)
    before = exchanges(vault)
    with unchanged(vault):
        answer = vault.callback(query)
    assert_problem(answer, 503, "secrets_unavailable")
    assert exchanges(vault) == before, "no exchange without client authentication"
    assert pending_status(vault) == ["pending"]
    audit_events.expect("consent.callback", "failed", reason="secrets_unavailable")
    assert vault.callback(query).status == 302  # the same code, still unspent


def test_row_21_secrets_manager_failing_at_refresh_keeps_the_grant(
    vault: Vault, faults: AwsFaults, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    faults.fail("secretsmanager.GetSecretValue", "ThrottlingException")
    new_container(vault)
    requests = refreshes(vault)
    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.read"])
    assert_problem(answer, 503, "secrets_unavailable")
    assert refreshes(vault) == requests
    audit_events.expect("token.issue", "failed", reason="secrets_unavailable")
    assert agent.token("calendar", ["calendar.read"]).status == 200


# --- the provider: 5xx and timeouts ------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status, code",
    [({"status": 503}, 502, "provider_error"), ({"delay_ms": 2600}, 504, "provider_timeout")],
    ids=["5xx", "timeout"],
)
def test_row_22_a_failing_provider_at_the_callback_keeps_the_pending_flow(
    vault: Vault, audit_events: AuditLog, fault: dict[str, int], status: int, code: str
) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    vault.server.set_faults(token_endpoint=fault)
    dropped = vault.server.stats()["dropped_requests"]

    with unchanged(vault):
        answer = vault.callback(query)

    assert_problem(answer, status, code)
    assert pending_status(vault) == ["pending"]
    audit_events.expect("consent.callback", "failed", reason=code)
    if code == "provider_timeout":  # the provider dropped it unprocessed: the code is unspent
        assert vault.server.stats()["dropped_requests"] == dropped + 1
    retried = vault.callback(query)
    assert retried.status == 302, retried.body
    assert query_of(retried.headers["location"])["status"] == "pending_binding"


def test_row_22_a_pending_flow_kept_by_a_provider_failure_still_expires(vault: Vault) -> None:
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    vault.server.set_faults(token_endpoint={"status": 500})
    assert_problem(vault.callback(query), 502, "provider_error")
    vault.clock.advance(vault.services.config.flow_ttl_seconds + 1)
    with unchanged(vault):
        late = vault.callback(query)
    assert_problem(late, 400, "invalid_state")


def test_row_22_a_failing_provider_at_refresh_keeps_the_grant(
    vault: Vault, audit_events: AuditLog
) -> None:
    """A 5xx answer means the refresh was not done: the grant is kept and the next request
    refreshes. (A timeout's outcome is unknown: test_attacks_refresh.py, row 40.)"""
    agent = connected_agent(vault)
    vault.server.set_faults(token_endpoint={"status": 500})
    requests = refreshes(vault)
    with unchanged(vault):
        answer = agent.token("calendar", ["calendar.read"])
    assert_problem(answer, 502, "provider_error")
    audit_events.expect("token.issue", "failed", reason="provider_error")
    assert agent.token("calendar", ["calendar.read"]).status == 200
    # one failed attempt, one good one: nothing retried behind the caller's back
    assert refreshes(vault) - requests == 2


# --- a lost refresh response with a rotating provider ---------------------------------------


def test_row_22_a_lost_refresh_response_breaks_the_grant_once_without_a_retry_storm(
    vault: Vault, audit_events: AuditLog
) -> None:
    """The refresh token was spent outside the vault's sight (played here by redeeming the stored
    refresh token directly). The vault still holds the spent token: its next refresh is a
    reuse, the rotating provider revokes the grant (invalid_grant), and the vault marks the
    grant broken once and asks for consent, never retrying upstream. (A lost answer to the
    vault's own refresh is never replayed at all: test_attacks_refresh.py, row 40.)"""
    agent = connected_agent(vault)
    spent = stored_refresh_token(vault, grant_item(vault))
    lost = vault.server.token_request({"grant_type": "refresh_token", "refresh_token": spent})
    assert lost.status == 200
    from tests.security.hygiene import HYGIENE

    for name in ("access_token", "refresh_token"):  # the test holds them now: keep them out of logs
        HYGIENE.add_secret(lost.json()[name], name.replace("_", " "))
    requests = refreshes(vault)
    audit_events.clear()

    first = agent.token("calendar", ["calendar.read"])

    body = assert_problem(first, 403, "consent_required")
    assert body["reason"] == "grant_broken"
    assert grant_item(vault)["status"]["S"] == "broken"
    for _ in range(5):
        assert agent.token("calendar", ["calendar.read"]).code == "consent_required"
    assert refreshes(vault) - requests == 1
    assert len(audit_events.find("grant.refresh", "broken", reason="invalid_grant")) == 1
    # the rotated token the vault never saw is dead too: the provider revoked the whole grant
    assert vault.server.introspect(lost.json()["access_token"])["active"] is False


# --- the reaper under a storage failure --------------------------------------------------------


def test_row_21_the_reaper_fails_loudly_on_a_storage_failure_and_a_retry_does_the_work(
    vault: Vault, faults: AwsFaults
) -> None:
    """A failed reap raises (so Lambda retries the event) and is not remembered as done."""
    from tests.security.test_attacks_sessions import _reap_event
    from vault.errors import StorageUnavailable
    from vault.handlers.reaper import handler

    agent = connected_agent(vault)
    token = agent.token("calendar", ["calendar.read"]).json["access_token"]
    event = _reap_event(agent.task_id)
    faults.fail("dynamodb.Query", "ProvisionedThroughputExceededException")
    new_container(vault)
    with pytest.raises(StorageUnavailable):
        handler(event, LambdaContext())
    assert vault.server.introspect(token)["active"] is True
    result = handler(event, LambdaContext())
    assert result["ended_sessions"] == 1 and result["revoked_tokens"] == 1
    assert vault.server.introspect(token) == {"active": False}


def test_fault_injection_reaches_the_vaults_clients(vault: Vault, faults: AwsFaults) -> None:
    """The harness check every fault test relies on: an armed fault is what the call gets."""
    faults.fail("dynamodb.DescribeTable", "ThrottlingException")
    svc = new_container(vault)
    client = svc.store._db.client  # reading the client only to prove the hook is in its chain
    with pytest.raises(client.exceptions.ClientError) as raised:
        client.describe_table(TableName=svc.settings.table_name)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
