"""What each committed change means (`vault.lifecycle.events_of`), for the changes the suite's
moto cannot make: DynamoDB's TTL deleting an expired session or an unswept flow, and the retried
revocation of a grant whose upstream revocation failed. Records are built as Lambda's event
carries them (JSON: binary values in base64) from items the store's own mapper writes."""

from __future__ import annotations

import base64
import json
from typing import Any

from vault.lifecycle import events_of
from vault.models import Flow, Grant, Session, UserRef
from vault.store.changes import TTL_PRINCIPAL, change_of
from vault.store.mapper import FLOWS, GRANTS, SESSIONS

USER = UserRef("https://issuer.example", "alice")


def _json(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    encoded: dict[str, Any] = json.loads(
        json.dumps(item, default=lambda b: base64.b64encode(bytes(b)).decode("ascii"))
    )
    return encoded


def _record(
    name: str, old: dict[str, Any] | None, new: dict[str, Any] | None, *, ttl: bool = False
) -> dict[str, Any]:
    data: dict[str, Any] = {"ApproximateCreationDateTime": 1796290000, "SequenceNumber": "1"}
    if old is not None:
        data["OldImage"] = _json(old)
    if new is not None:
        data["NewImage"] = _json(new)
    record: dict[str, Any] = {"eventID": "e1", "eventName": name, "dynamodb": data}
    if ttl:
        record["userIdentity"] = {"type": "Service", "principalId": TTL_PRINCIPAL}
    return record


def _names(record: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e.name, getattr(e.detail, "reason", None)) for e in events_of(change_of(record))]


def _session(**changes: Any) -> Session:
    base = Session(
        session_id="ses_1",
        agent="calendar-agent",
        principal_arn="arn:aws:sts::123456789012:assumed-role/r/t",
        task_id="t1",
        user=USER,
        jkt="jkt",
        public_jwk={"kty": "EC"},
        created_at=1,
        expires_at=2,
    )
    return Session(**{**vars(base), **changes})


def _grant(**changes: Any) -> Grant:
    base = Grant(
        grant_id="grt_1",
        user=USER,
        agent="calendar-agent",
        provider="calendar",
        scopes=("calendar.read",),
        refresh_token_ct=b"\x00\x01ciphertext",
        created_at=1,
    )
    return Grant(**{**vars(base), **changes})


def test_an_active_session_deleted_by_ttl_ended_as_expired() -> None:
    record = _record("REMOVE", SESSIONS.to_item(_session()), None, ttl=True)
    assert change_of(record).by_ttl  # type: ignore[union-attr]
    assert _names(record) == [("session.ended", "expired")]
    ended = SESSIONS.to_item(_session(status="ended", ended_reason="ended_by_agent"))
    assert _names(_record("REMOVE", ended, None, ttl=True)) == []  # announced when it ended


def test_an_unbound_flow_deleted_by_ttl_expired_unbound_once() -> None:
    flow = Flow(
        flow_id="flw_1",
        status="pending_binding",
        session_id="ses_1",
        agent="calendar-agent",
        provider="calendar",
        scopes=("calendar.read",),
        user=USER,
        grant_id="grt_1",
        created_at=1,
        expires_at=2,
        refresh_token_ct=b"\x02secret-ciphertext",
    )
    assert _names(_record("REMOVE", FLOWS.to_item(flow), None, ttl=True)) == [
        ("flow.expired_unbound", None)
    ]
    swept = Flow(**{**vars(flow), "status": "expired"})
    assert _names(_record("REMOVE", FLOWS.to_item(swept), None, ttl=True)) == []


def test_a_grant_is_revoked_once_however_often_its_revocation_is_retried() -> None:
    active, revoking = _grant(), _grant(status="revoking")
    pending = _grant(status="broken", broken_reason="revoke_pending")
    assert _names(_record("MODIFY", GRANTS.to_item(active), GRANTS.to_item(revoking))) == [
        ("grant.revoked", "revocation")
    ]
    # upstream failed: kept broken; the next revocation retries: no second event
    assert _names(_record("MODIFY", GRANTS.to_item(revoking), GRANTS.to_item(pending))) == []
    assert _names(_record("MODIFY", GRANTS.to_item(pending), GRANTS.to_item(revoking))) == []
    assert _names(_record("REMOVE", GRANTS.to_item(revoking), None)) == []
    # a grant broken by the provider, revoked later by an operator: that is a revocation
    broken = _grant(status="broken", broken_reason="invalid_grant")
    assert _names(_record("MODIFY", GRANTS.to_item(broken), GRANTS.to_item(revoking))) == [
        ("grant.revoked", "revocation")
    ]
    # broken twice: one event, the first
    assert _names(_record("MODIFY", GRANTS.to_item(active), GRANTS.to_item(broken))) == [
        ("grant.broken", "invalid_grant")
    ]
    assert _names(_record("MODIFY", GRANTS.to_item(broken), GRANTS.to_item(broken))) == []


def test_refreshes_and_leases_are_no_lifecycle_change() -> None:
    active = _grant()
    leased = _grant(lease_owner="o", lease_until=5.0)
    refreshed = _grant(version=2, refreshed_at=3, refresh_token_ct=b"\x03new")
    assert _names(_record("MODIFY", GRANTS.to_item(active), GRANTS.to_item(leased))) == []
    assert _names(_record("MODIFY", GRANTS.to_item(leased), GRANTS.to_item(refreshed))) == []


def test_other_item_kinds_make_no_change() -> None:
    record = _record("INSERT", None, {"pk": {"S": "TASK#t"}, "sk": {"S": "STOPPED"}})
    assert change_of(record) is None
