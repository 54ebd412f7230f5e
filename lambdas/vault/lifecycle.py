"""Flow 9's lifecycle events: what a committed change of a grant, a session or a consent flow
means to applications, and its publication on EventBridge (docs/events.md).

The events are derived from the vault table's stream (`vault.store.changes`), never from the
code paths that make the changes: the stream carries only committed writes, so a refused or
rolled-back write publishes nothing, and no request waits for EventBridge or fails with it.

- `grant.activated`: a grant appears `active` (a consent bound), also where it replaces one
  under another id (which is then `grant.revoked`, reason `replaced`);
- `grant.broken`: a grant `active` -> `broken` (its `broken_reason`);
- `grant.revoked`: a grant `active` or `broken` -> `revoking` (a revocation closed the door;
  reason `revocation`), once: the retried revocation of a grant whose upstream revocation
  failed is no second event; an `active` or `broken` grant deleted otherwise (`deleted`);
- `flow.expired_unbound`: a flow `pending_binding` -> `expired` (the sweep), or deleted by TTL
  while still unbound;
- `session.ended`: a session `active` -> `ended` (its `ended_reason`; `expired` when the
  scheduled sweep ended it after its expiry), or an `active` session deleted by TTL (one the
  sweep never indexed: reason `expired`).

An event names who and what (ids, agent, provider, scopes, the user's issuer and subject) and
never carries token material, codes, hashes or storage keys. Delivery is at least once (a
record is retried until EventBridge accepts all its events): `change_id` is the same on every
delivery of one change.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vault.models import Flow, Grant, Session, UserRef
from vault.store.changes import Change

SOURCE = "agent-vault"
"""Every lifecycle event's `source` (rules match on it and on `detail-type`)."""
PUT_EVENTS_MAX = 10
"""Entries per PutEvents request (EventBridge's limit)."""
_KINDS = ["grant", "flow", "session"]
STREAM_FILTERS: tuple[dict[str, Any], ...] = (
    # a grant put: a bound consent, new or replacing one (a refresh or a lease is no put: it
    # leaves a lease owner or a version above 1)
    {
        "eventName": ["INSERT", "MODIFY"],
        "dynamodb": {
            "NewImage": {
                "type": {"S": ["grant"]},
                "version": {"N": ["1"]},
                "lease_owner": [{"exists": False}],
            }
        },
    },
    # a status a lifecycle event reports
    {
        "eventName": ["MODIFY"],
        "dynamodb": {
            "NewImage": {
                "type": {"S": _KINDS},
                "status": {"S": ["broken", "revoking", "expired", "ended"]},
            }
        },
    },
    # an item deleted while still live (by TTL, or otherwise)
    {
        "eventName": ["REMOVE"],
        "dynamodb": {
            "OldImage": {
                "type": {"S": _KINDS},
                "status": {"S": ["active", "broken", "pending_binding"]},
            }
        },
    },
)
"""The event source mapping's filters (Lambda's event filtering; the stack's `FilterCriteria`):
records that cannot make an event never invoke the function (token, lease and refresh writes
are most of the table's writes). Every record that makes an event matches one
(tests/support/lifecycle.py checks each record the suite's changes make)."""


class _Detail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    change_id: str = Field(
        description="The committed change this event reports (the stream record's id): the "
        "same on every delivery of it, so consumers can drop duplicates"
    )
    occurred_at: int = Field(description="When the change was committed (epoch seconds)")


class User(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    iss: str = Field(description="The issuer of the user's identity token")
    sub: str = Field(description="The user's subject at that issuer")


class _GrantDetail(_Detail):
    grant_id: str
    user: User
    agent: str
    provider: str
    scopes: list[str] = Field(description="The scopes the user granted (sorted)")


class GrantActivated(_GrantDetail):
    """A user's consent was bound: the agent may now get tokens at the provider for the user."""

    replaced_grant_id: str | None = Field(
        default=None,
        description="The grant of the same user, agent and provider this one replaced (a "
        "`grant.revoked` with reason `replaced` reports it too)",
    )


class GrantBroken(_GrantDetail):
    """The grant can no longer mint tokens: the user must consent again."""

    reason: str = Field(
        description="Why: `invalid_grant` (the provider refused the refresh token), "
        "`refresh_outcome_unknown` (a refresh whose answer was lost may have rotated the "
        "refresh token), `revoked_with_session` (revoking a session's token at a provider "
        "that revokes the whole grant with it)",
        pattern=r"^[a-z0-9_]{1,64}$",
    )


class GrantRevoked(_GrantDetail):
    """The grant is gone: revoked (upstream too, or retried until it is), or replaced."""

    reason: Literal["revocation", "replaced", "deleted"] = Field(
        description="`revocation`: an operator's or user's revocation; `replaced`: a new "
        "consent of the same user for the same agent and provider replaced it (not revoked "
        "upstream: the provider may share one grant between both); `deleted`: removed "
        "otherwise"
    )


class FlowExpiredUnbound(_Detail):
    """A consent the provider answered but nobody bound in time: closed, its tokens revoked
    upstream (by the sweep; retried until the provider confirms)."""

    flow_id: str
    session_id: str = Field(description="The session that started the consent")
    user: User
    agent: str
    provider: str
    scopes: list[str] = Field(description="The scopes asked for (sorted)")
    expires_at: int = Field(description="When the binding window closed (epoch seconds)")


class SessionEnded(_Detail):
    """A session ended: no token is handed out or proxied for it any more."""

    session_id: str
    agent: str
    task_id: str
    user: User
    reason: str = Field(
        description="`ended_by_agent`, `task_stopped` (the reaper), `parent_ended` (its "
        "delegating session ended), `expired` (it outlived its expiry unended: ended by the "
        "scheduled sweep, within its period (5 minutes) after `expires_at`)",
        pattern=r"^[a-z0-9_]{1,64}$",
    )
    expires_at: int = Field(description="The session's expiry (epoch seconds)")
    parent_session_id: str | None = Field(
        default=None, description="The session that delegated this one (flow 8), if any"
    )


EVENTS: dict[str, type[_Detail]] = {
    "grant.activated": GrantActivated,
    "grant.broken": GrantBroken,
    "grant.revoked": GrantRevoked,
    "flow.expired_unbound": FlowExpiredUnbound,
    "session.ended": SessionEnded,
}
"""Each event's `detail-type` and the model of its `detail` (docs/events/<name>.schema.json)."""


@dataclass(frozen=True)
class LifecycleEvent:
    name: str
    """The event's `detail-type` (a key of `EVENTS`)."""
    detail: _Detail

    def entry(self, bus: str) -> dict[str, Any]:
        """This event as a PutEvents entry."""
        return {
            "Source": SOURCE,
            "DetailType": self.name,
            "Detail": self.detail.model_dump_json(exclude_none=True),
            "EventBusName": bus,
            "Time": datetime.datetime.fromtimestamp(self.detail.occurred_at, datetime.UTC),
        }


def schemas() -> dict[str, dict[str, Any]]:
    """Each event's JSON Schema of its `detail` (written to docs/events/ by `make events`)."""
    found = {}
    for name, model in EVENTS.items():
        schema = model.model_json_schema()
        schema["title"] = f"{name} (detail)"
        found[name] = schema
    return found


def _user(user: UserRef) -> User:
    return User(iss=user.iss, sub=user.sub)


def _grant(change: Change[Any], grant: Grant) -> dict[str, Any]:
    return {
        "change_id": change.change_id,
        "occurred_at": change.at,
        "grant_id": grant.grant_id,
        "user": _user(grant.user),
        "agent": grant.agent,
        "provider": grant.provider,
        "scopes": sorted(grant.scopes),
    }


def _was_announced_revoked(grant: Grant) -> bool:
    """A grant whose revocation was announced already: `revoking`, or kept `broken` because its
    upstream revocation failed (a later revocation retries it)."""
    return grant.status == "revoking" or (
        grant.status == "broken" and grant.broken_reason == "revoke_pending"
    )


def _grant_events(change: Change[Grant]) -> list[LifecycleEvent]:
    old, new = change.old, change.new
    events: list[LifecycleEvent] = []
    if new is not None and (old is None or old.grant_id != new.grant_id):
        if old is not None and not _was_announced_revoked(old):
            events.append(
                LifecycleEvent(
                    name="grant.revoked",
                    detail=GrantRevoked(**_grant(change, old), reason="replaced"),
                )
            )
        if new.status == "active":
            replaced = old.grant_id if old is not None else None
            events.append(
                LifecycleEvent(
                    name="grant.activated",
                    detail=GrantActivated(**_grant(change, new), replaced_grant_id=replaced),
                )
            )
    elif old is not None and new is not None:
        if old.status == "active" and new.status == "broken":
            events.append(
                LifecycleEvent(
                    name="grant.broken",
                    detail=GrantBroken(
                        **_grant(change, new), reason=new.broken_reason or "unknown"
                    ),
                )
            )
        elif new.status == "revoking" and not _was_announced_revoked(old):
            events.append(
                LifecycleEvent(
                    name="grant.revoked",
                    detail=GrantRevoked(**_grant(change, new), reason="revocation"),
                )
            )
    elif old is not None and not _was_announced_revoked(old):
        events.append(
            LifecycleEvent(
                name="grant.revoked", detail=GrantRevoked(**_grant(change, old), reason="deleted")
            )
        )
    return events


def _flow_events(change: Change[Flow]) -> list[LifecycleEvent]:
    old, new = change.old, change.new
    if old is None or old.status != "pending_binding":
        return []
    if new is None or new.status == "expired":
        flow = new or old
        detail = FlowExpiredUnbound(
            change_id=change.change_id,
            occurred_at=change.at,
            flow_id=flow.flow_id,
            session_id=flow.session_id,
            user=_user(flow.user),
            agent=flow.agent,
            provider=flow.provider,
            scopes=sorted(flow.scopes),
            expires_at=flow.expires_at,
        )
        return [LifecycleEvent(name="flow.expired_unbound", detail=detail)]
    return []


def _session_events(change: Change[Session]) -> list[LifecycleEvent]:
    old, new = change.old, change.new
    if old is None or old.status != "active":
        return []
    if new is not None and new.status == "ended":
        reason = new.ended_reason or "ended"
    elif new is None:
        reason = "expired"
    else:
        return []
    session = new or old
    detail = SessionEnded(
        change_id=change.change_id,
        occurred_at=change.at,
        session_id=session.session_id,
        agent=session.agent,
        task_id=session.task_id,
        user=_user(session.user),
        reason=reason,
        expires_at=session.expires_at,
        parent_session_id=session.parent_session_id,
    )
    return [LifecycleEvent(name="session.ended", detail=detail)]


def events_of(change: Change[Any] | None) -> list[LifecycleEvent]:
    """The lifecycle events one committed change makes (most changes make none)."""
    if change is None:
        return []
    record = change.new if change.new is not None else change.old
    if isinstance(record, Grant):
        return _grant_events(change)
    if isinstance(record, Flow):
        return _flow_events(change)
    if isinstance(record, Session):
        return _session_events(change)
    return []


class PublishFailed(RuntimeError):
    """EventBridge did not accept every event (the record is retried, then set aside)."""


class Publisher:
    """Puts lifecycle events on the vault's event bus, all or an error."""

    def __init__(self, client: Any, bus: str) -> None:
        self._client = client
        self.bus = bus

    def publish(self, events: Sequence[LifecycleEvent]) -> None:
        for start in range(0, len(events), PUT_EVENTS_MAX):
            chunk = events[start : start + PUT_EVENTS_MAX]
            answer = self._client.put_events(Entries=[e.entry(self.bus) for e in chunk])
            failed = int(answer.get("FailedEntryCount", 0))
            if failed:
                codes = sorted(
                    {str(e.get("ErrorCode")) for e in answer.get("Entries", []) if "ErrorCode" in e}
                )
                raise PublishFailed(f"EventBridge refused {failed} event(s): {', '.join(codes)}")


def as_json(events: Iterable[LifecycleEvent]) -> list[dict[str, Any]]:
    """The events as EventBridge delivers their `detail-type` and `detail` (local mode prints
    these)."""
    return [
        {"detail-type": e.name, "detail": json.loads(e.detail.model_dump_json(exclude_none=True))}
        for e in events
    ]


if __name__ == "__main__":  # `make events`: docs/events/<name>.schema.json
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/events")
    target.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        (target / f"{name}.schema.json").write_text(text, encoding="utf-8")
