"""The audit helper: one event per decision, its outcome taken from how the block ends."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vault
from tests.security.helpers import AuditLog
from tests.support.apigw import build_event
from vault.audit import begin_request, decision, note_chain, recorded
from vault.errors import (
    ConsentRequired,
    Forbidden,
    ProviderError,
    StorageUnavailable,
    StoredDataInvalid,
    UnknownProvider,
)
from vault.handlers.http import resolve
from vault.handlers.router import Request, Response, Router
from vault.models import UserRef
from vault.observability import metrics

ALICE = UserRef(iss="https://idp.test", sub="alice")


@pytest.fixture
def events(audit_events: AuditLog) -> Iterator[AuditLog]:
    begin_request()
    yield audit_events
    metrics.clear_metrics()


def token_issue() -> Any:
    return decision(
        "token.issue", agent="calendar", principal="arn:p", provider="calendar", session_id="ses_1"
    )


WHERE = {"agent": "calendar", "principal": "arn:p", "provider": "calendar", "session_id": "ses_1"}


def test_a_block_that_ends_normally_is_allowed_with_its_fields_bound_once(events: AuditLog) -> None:
    with token_issue() as d:
        d.bind(user=ALICE, scopes=("b", "a"))
        d.bind(grant_id="grt_1")
        d.note(cached=True)
    assert events.one() == {
        "action": "token.issue",
        "outcome": "allowed",
        **WHERE,
        "grant_id": "grt_1",
        "user": ALICE.as_dict(),
        "scopes": ["a", "b"],
        "cached": True,
    }


def test_a_refusal_is_denied_with_its_code_and_the_same_error_propagates(events: AuditLog) -> None:
    refusal = Forbidden("not yours")
    with pytest.raises(Forbidden) as raised, token_issue():
        raise refusal
    assert raised.value is refusal
    assert events.one() == {"action": "token.issue", "outcome": "denied", "reason": "forbidden"} | (
        WHERE
    )


def test_fields_bound_before_an_error_are_in_its_event_and_those_after_are_not(
    events: AuditLog,
) -> None:
    def grant_of_unknown_provider() -> str:
        raise UnknownProvider("no such provider")

    with pytest.raises(UnknownProvider), token_issue() as d:
        d.bind(user=ALICE)
        d.bind(grant_id=grant_of_unknown_provider())
    event = events.one()
    assert event["user"] == ALICE.as_dict() and "grant_id" not in event
    assert (event["outcome"], event["reason"]) == ("denied", "unknown_provider")


def test_a_refusal_with_a_finer_reason_records_that_reason(events: AuditLog) -> None:
    with pytest.raises(ConsentRequired), token_issue():
        raise ConsentRequired("ask the user", reason="scopes_not_granted")
    assert (events.one()["outcome"], events.one()["reason"]) == ("denied", "scopes_not_granted")


@pytest.mark.parametrize(
    "error, reason",
    [
        (ProviderError("the provider answered 503"), "provider_error"),
        (StorageUnavailable("throttled"), "storage_unavailable"),
        (RuntimeError("a defect"), "internal_error"),
        (KeyError("a defect"), "internal_error"),
    ],
    ids=["5xx provider", "5xx storage", "unexpected", "unexpected key"],
)
def test_a_failure_is_failed_and_propagates(
    events: AuditLog, error: Exception, reason: str
) -> None:
    with pytest.raises(type(error)) as raised, token_issue():
        raise error
    assert raised.value is error
    assert events.one() == {"action": "token.issue", "outcome": "failed", "reason": reason} | WHERE


def test_stored_data_that_fails_its_check_is_a_refusal_though_answered_500(
    events: AuditLog,
) -> None:
    with pytest.raises(StoredDataInvalid), token_issue():
        raise StoredDataInvalid("moved ciphertext")
    assert (events.one()["outcome"], events.one()["reason"]) == ("denied", "stored_data_invalid")


def test_an_explicit_outcome_overrides_a_normal_end(events: AuditLog) -> None:
    with decision("consent.callback", flow_id="flw_1") as d:
        d.note(upstream="revoked")
        d.conclude("denied", reason="user_mismatch")  # returns a redirect, yet refused
    assert events.one() == {
        "action": "consent.callback",
        "outcome": "denied",
        "reason": "user_mismatch",
        "flow_id": "flw_1",
        "upstream": "revoked",
    }


def test_an_explicit_outcome_overrides_an_error_and_keeps_its_code_unless_told(
    events: AuditLog,
) -> None:
    with pytest.raises(UnknownProvider), decision("consent.callback") as d:
        d.conclude("failed")
        raise UnknownProvider("a 4xx error the flow calls a failure")
    with pytest.raises(UnknownProvider), decision("grant.refresh") as d:
        d.conclude("broken", reason="invalid_grant")
        raise UnknownProvider("the error told to the caller")
    assert [(e["outcome"], e["reason"]) for e in events.events] == [
        ("failed", "unknown_provider"),
        ("broken", "invalid_grant"),
    ]


def test_a_check_records_its_refusal_but_nothing_when_it_passes(events: AuditLog) -> None:
    with decision("session.access", only_refusals=True, principal="arn:p"):
        pass
    assert events.events == [] and not recorded()
    with (
        pytest.raises(Forbidden),
        decision("session.access", only_refusals=True, principal="arn:p"),
    ):
        raise Forbidden("another caller's session")
    assert events.one() == {
        "action": "session.access",
        "outcome": "denied",
        "reason": "forbidden",
        "principal": "arn:p",
    }


def test_nested_decisions_each_record_one_event(events: AuditLog) -> None:
    with (
        pytest.raises(ConsentRequired),
        token_issue(),
        decision("grant.refresh", grant_id="grt_1") as refreshing,
    ):
        refreshing.conclude("broken", reason="invalid_grant")
        raise ConsentRequired("ask again", reason="grant_broken")
    assert [(e["action"], e["outcome"], e["reason"]) for e in events.events] == [
        ("grant.refresh", "broken", "invalid_grant"),
        ("token.issue", "denied", "grant_broken"),
    ]


def test_no_secret_can_be_noted_and_the_attempt_is_a_failure(events: AuditLog) -> None:
    with pytest.raises(ValueError, match="access_token"), token_issue() as d:
        d.note(access_token="ya29.secret")
    event = events.one()
    assert (event["outcome"], event["reason"]) == ("failed", "internal_error")
    assert "ya29.secret" not in repr(events.events)


def test_recorded_tells_whether_and_how_this_request_was_decided(events: AuditLog) -> None:
    assert not recorded()
    with pytest.raises(Forbidden), token_issue():
        raise Forbidden("no")
    assert recorded() and recorded("denied") and not recorded("failed")
    begin_request()
    assert not recorded()


# --- through the router: exactly one event per request ---------------------------------------

app = Router("callback")  # its `{provider}` route, bound here to the cases below


def _fails_in_a_decision() -> Response:
    with decision("token.issue", principal="arn:p"):
        raise RuntimeError("a defect inside a decision")


def _fails_after_a_decision() -> Response:
    with decision("token.issue", principal="arn:p"):
        pass
    raise RuntimeError("a defect after the decision was recorded")


def _refused_in_a_decision() -> Response:
    with decision("token.issue", principal="arn:p"):
        raise Forbidden("no")


def _refused_before_any_decision() -> Response:
    raise Forbidden("no")


CASES = {
    "fails-in-a-decision": _fails_in_a_decision,
    "fails-after-a-decision": _fails_after_a_decision,
    "refused-in-a-decision": _refused_in_a_decision,
    "refused-before-any-decision": _refused_before_any_decision,
}


@app.route("GET /v1/oauth/callback/{provider}")
def _case(request: Request, provider: str) -> Response:
    return CASES[provider]()


def _call(path: str) -> tuple[int, list[tuple[str, str, str | None]]]:
    handler = AuditLog()
    vault_logger = logging.getLogger("agent-vault")
    vault_logger.addHandler(handler)
    try:
        answer = resolve(app, build_event("GET", path, principal_arn="arn:p"))
    finally:
        vault_logger.removeHandler(handler)
        metrics.clear_metrics()
    return answer["statusCode"], [
        (e["action"], e["outcome"], e.get("reason")) for e in handler.events
    ]


@pytest.mark.parametrize(
    "path, status, recorded_events",
    [
        (
            "/v1/oauth/callback/fails-in-a-decision",
            500,
            [("token.issue", "failed", "internal_error")],
        ),
        (
            "/v1/oauth/callback/fails-after-a-decision",
            500,
            [("token.issue", "allowed", None), ("request", "failed", "internal_error")],
        ),
        ("/v1/oauth/callback/refused-in-a-decision", 403, [("token.issue", "denied", "forbidden")]),
        (
            "/v1/oauth/callback/refused-before-any-decision",
            403,
            [("request", "denied", "forbidden")],
        ),
    ],
)
def test_every_request_leaves_its_refusal_or_failure_exactly_once(
    path: str, status: int, recorded_events: list[tuple[str, str, str | None]]
) -> None:
    for _ in range(2):  # the second request of a warm container starts from nothing recorded
        assert _call(path) == (status, recorded_events)


# --- delegation: a child's events carry its chain ------------------------------------------------

CHAIN = {"iss": ALICE.iss, "sub": "alice", "act": {"sub": "b", "sid": "ses_b", "act": {"sub": "a"}}}


def test_every_event_naming_a_delegated_session_carries_its_chain(events: AuditLog) -> None:
    note_chain("ses_b", CHAIN)
    with decision("token.issue", session_id="ses_b"):
        pass
    with pytest.raises(Forbidden), decision("session.access", session_id="ses_b"):
        raise Forbidden("no")
    with decision("token.issue", session_id="ses_a"):  # the parent acts for the user itself
        pass
    assert [e.get("chain") for e in events.events] == [CHAIN, CHAIN, None]


def test_a_new_request_forgets_the_chains_of_the_last(events: AuditLog) -> None:
    note_chain("ses_b", CHAIN)
    begin_request()
    with decision("token.issue", session_id="ses_b"):
        pass
    assert "chain" not in events.one()


# --- the structure: every event goes through the helper ----------------------------------------

HELPER_NAMES = {
    "Decision",
    "decision",
    "begin_request",
    "note_chain",
    "recorded",
    "request_refused",
}


def test_no_flow_writes_an_event_by_hand() -> None:
    """Flows import only the helper from vault.audit; only the HTTP fallback records a request
    refusal itself. A new flow cannot skip the helper without this test saying so."""
    package = Path(vault.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name == "audit.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "vault.audit":
                names = {alias.name for alias in node.names}
                assert names <= HELPER_NAMES, (path, names - HELPER_NAMES)
                if "request_refused" in names:
                    assert path.relative_to(package).as_posix() == "handlers/http.py", path
            if isinstance(node, ast.Import):
                assert "vault.audit" not in {alias.name for alias in node.names}, path
