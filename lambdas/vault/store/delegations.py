"""Delegations (flow 8): a child session offered by a parent, claimed once by the child agent,
and each delegation's entry in its parent's partition (what ending the parent reads)."""

from __future__ import annotations

from typing import Any

from vault.errors import StorageUnavailable
from vault.models import Delegation, Session
from vault.store.dynamo import Dynamo
from vault.store.mapper import (
    DELEGATIONS,
    SESSION_CHILDREN,
    SESSIONS,
    TASK_SESSIONS,
    TASK_STOPS,
)
from vault.store.schema import DAY, SessionChild, TaskSession

BATCH_ATTEMPTS = 3
"""A batch read whose keys DynamoDB left unprocessed (throttling) is asked again this often."""


class DelegationRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    def _alive(self, session_id: str, now: int) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": SESSIONS.key(session_id=session_id),
                "ConditionExpression": "#s = :active AND expires_at > :now",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":active": "active", ":now": now},
            }
        }

    def create(self, delegation: Delegation, lineage: tuple[str, ...], now: int) -> None:
        """Store a pending delegation and its entry in the parent's partition, only while the
        parent and every ancestor of it (`lineage`, the parent last) are active and unexpired.
        Conflict otherwise."""
        entry = SessionChild(
            delegation.parent_session_id,
            delegation.delegation_id,
            delegation.agent,
            delegation.expires_at + DAY,
        )
        self._db.transact(
            *(self._alive(sid, now) for sid in lineage),
            {
                "Put": {
                    "TableName": self.table,
                    "Item": DELEGATIONS.to_item(delegation),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": {"TableName": self.table, "Item": SESSION_CHILDREN.to_item(entry)}},
        )

    def get(self, delegation_id: str) -> Delegation | None:
        item = self._db.get(self.table, DELEGATIONS.key(delegation_id=delegation_id))
        return DELEGATIONS.from_item(item) if item else None

    def claim(self, delegation: Delegation, child: Session, now: int) -> None:
        """One transaction: the delegation goes from pending to claimed (before `claim_by`),
        the child session is stored with its entries in its task's partition and its parent's,
        only while every ancestor (`child.ancestors`) is active and unexpired and the child's
        task is not recorded as stopped. Conflict otherwise (nothing is written).

        Ending a parent marks it ended first and reads its partition after: a claim either
        commits before (and its child is found and ended) or fails here."""
        assert child.ancestors
        entry = SessionChild(
            delegation.parent_session_id,
            delegation.delegation_id,
            delegation.agent,
            child.expires_at + DAY,
            child.session_id,
        )
        self._db.transact(
            *(self._alive(sid, now) for sid in child.ancestors),
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": TASK_STOPS.key(task_id=child.task_id),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": DELEGATIONS.key(delegation_id=delegation.delegation_id),
                    "UpdateExpression": "SET #s = :claimed, session_id = :sid",
                    "ConditionExpression": "#s = :pending AND claim_by > :now",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {
                        ":claimed": "claimed",
                        ":pending": "pending",
                        ":sid": child.session_id,
                        ":now": now,
                    },
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": SESSIONS.to_item(child),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": TASK_SESSIONS.to_item(
                        TaskSession(
                            child.task_id,
                            child.session_id,
                            child.expires_at + DAY,
                            child.expires_at,
                        )
                    ),
                }
            },
            {"Put": {"TableName": self.table, "Item": SESSION_CHILDREN.to_item(entry)}},
        )

    def children_of(self, parent_session_id: str) -> list[SessionChild]:
        """Every delegation of a session, claimed or not (strongly consistent: nothing
        committed before is missed)."""
        return [
            SESSION_CHILDREN.from_item(item)
            for item in self._db.query(
                self.table,
                KeyConditionExpression="pk = :pk",
                ConsistentRead=True,
                ExpressionAttributeValues={
                    ":pk": SESSION_CHILDREN.partition(parent_session_id=parent_session_id)
                },
            )
        ]

    def sessions(self, session_ids: list[str] | tuple[str, ...]) -> dict[str, Session]:
        """Sessions by id, strongly consistent, in one request (a chain is short: at most
        `max_delegation_depth` ≤ 8 ids)."""
        if not session_ids:
            return {}
        keys = [SESSIONS.key(session_id=sid) for sid in dict.fromkeys(session_ids)]
        found: dict[str, Session] = {}
        request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(BATCH_ATTEMPTS):
            answer = self._db.call("batch_get_item", RequestItems=request)
            for item in answer.get("Responses", {}).get(self.table, []):
                session = SESSIONS.from_item(item)
                found[session.session_id] = session
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise StorageUnavailable("the vault's storage is unavailable; retry shortly")
