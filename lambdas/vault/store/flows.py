"""Consent flows: pending (found by the hash of their `state`) until the provider answers, then
answered flows awaiting binding by the application, until bound (a grant), rejected or swept."""

from __future__ import annotations

import contextlib

from vault.models import Flow, Grant, PendingFlow, UserRef
from vault.store.dynamo import Conflict, Dynamo
from vault.store.mapper import FLOWS, GRANTS, PENDING_FLOWS
from vault.store.schema import GSI1, GSI2

CLOSED_FLOW_REMOVES = "refresh_token, access_token, binding_hash, gsi1pk, gsi1sk, gsi2pk, gsi2sk"
"""What a flow loses when it closes: its tokens, its binding code's hash, its unbound indexes."""


class FlowRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    # --- pending (by state) -------------------------------------------------------------------

    def put_pending(self, flow: PendingFlow) -> None:
        self._db.call(
            "put_item",
            TableName=self.table,
            Item=PENDING_FLOWS.to_item(flow),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def claim_pending(self, state_hash: str, now: float) -> PendingFlow | None:
        """Take a pending flow for its one exchange; None if unknown, used or expired."""
        try:
            answer = self._db.call(
                "update_item",
                TableName=self.table,
                Key=PENDING_FLOWS.key(state_hash=state_hash),
                UpdateExpression="SET #s = :claimed",
                ConditionExpression="attribute_exists(pk) AND #s = :pending AND expires_at > :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":claimed": "exchanging",
                    ":pending": "pending",
                    ":now": int(now),
                },
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return PENDING_FLOWS.from_item(answer["Attributes"])

    def release_pending(self, state_hash: str) -> None:
        """Give a claimed flow back (the provider failed transiently): it stays usable."""
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=PENDING_FLOWS.key(state_hash=state_hash),
                UpdateExpression="SET #s = :pending",
                ConditionExpression="#s = :claimed",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":pending": "pending", ":claimed": "exchanging"},
            )

    def drop_pending(self, state_hash: str) -> None:
        self._db.call(
            "delete_item", TableName=self.table, Key=PENDING_FLOWS.key(state_hash=state_hash)
        )

    def close_pending(self, state_hash: str, flow: Flow) -> None:
        """Atomically retire the state and record the answered flow."""
        self._db.transact(
            {
                "Delete": {
                    "TableName": self.table,
                    "Key": PENDING_FLOWS.key(state_hash=state_hash),
                    "ConditionExpression": "#s = :claimed",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":claimed": "exchanging"},
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": FLOWS.to_item(flow),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        )

    # --- answered -----------------------------------------------------------------------------

    def get(self, flow_id: str) -> Flow | None:
        item = self._db.get(self.table, FLOWS.key(flow_id=flow_id))
        return FLOWS.from_item(item) if item else None

    def activate(self, flow: Flow, grant: Grant) -> None:
        """Bind: the flow closes and its tokens become the user's grant, in one transaction."""
        self._db.transact(
            {
                "Update": {
                    "TableName": self.table,
                    "Key": FLOWS.key(flow_id=flow.flow_id),
                    "UpdateExpression": "SET #s = :active REMOVE " + CLOSED_FLOW_REMOVES,
                    "ConditionExpression": "#s = :pending",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {
                        ":active": "active",
                        ":pending": "pending_binding",
                    },
                }
            },
            {"Put": {"TableName": self.table, "Item": GRANTS.to_item(grant)}},
        )

    def reject(self, flow_id: str, reason: str) -> None:
        self._db.call(
            "update_item",
            TableName=self.table,
            Key=FLOWS.key(flow_id=flow_id),
            UpdateExpression="SET #s = :rejected, #e = :reason REMOVE " + CLOSED_FLOW_REMOVES,
            ConditionExpression="#s = :pending",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
            ExpressionAttributeValues={
                ":rejected": "rejected",
                ":reason": reason,
                ":pending": "pending_binding",
            },
        )

    def expired_unbound(self, now: int) -> list[Flow]:
        """Flows nobody bound before they expired (and those whose upstream revocation is still
        to be retried), oldest first."""
        return [
            FLOWS.from_item(i)
            for i in self._db.query(
                self.table,
                IndexName=GSI1.name,
                KeyConditionExpression="gsi1pk = :pk AND gsi1sk < :upto",
                ExpressionAttributeValues={
                    ":pk": FLOWS.partition(GSI1),
                    # gsi1sk is `<expires_at, 12 digits>#<flow_id>`; "$" sorts after "#":
                    # expires_at <= now
                    ":upto": f"{now:012d}$",
                },
            )
        ]

    def unbound_of_user(self, user: UserRef) -> list[Flow]:
        return [
            FLOWS.from_item(i)
            for i in self._db.query(
                self.table,
                IndexName=GSI2.name,
                KeyConditionExpression="gsi2pk = :pk",
                ExpressionAttributeValues={":pk": FLOWS.partition(GSI2, user=user)},
            )
        ]

    def close_unbound(self, flow_id: str, status: str, now: int | None = None) -> Flow | None:
        """Take an unbound flow out of binding's reach (`expired` or `revoked`) before its tokens
        are revoked upstream: a binding after this fails its condition. With `now`, only if it
        expired by then. The tokens and index entries stay until `forget_tokens`, so a failed
        upstream revocation is retried. None if it is no longer unbound."""
        condition = "#s = :pending"
        values: dict[str, object] = {":st": status, ":pending": "pending_binding"}
        if now is not None:
            condition += " AND expires_at <= :now"
            values[":now"] = now
        try:
            answer = self._db.call(
                "update_item",
                TableName=self.table,
                Key=FLOWS.key(flow_id=flow_id),
                UpdateExpression="SET #s = :st",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return FLOWS.from_item(answer["Attributes"])

    def forget_tokens(self, flow_id: str) -> None:
        """After their upstream revocation: drop a closed flow's tokens and index entries."""
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=FLOWS.key(flow_id=flow_id),
                UpdateExpression="REMOVE " + CLOSED_FLOW_REMOVES,
                ConditionExpression="attribute_exists(pk) AND #s <> :pending",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":pending": "pending_binding"},
            )
