"""Machine tokens (flow 12): an agent's own access token at a `client_credentials` provider, one
item per agent x provider x scopes, and the fetch lease on that item that makes fetching
single-flight. Revocation wins every race: it marks the item `revoking` and drops the lease, so a
fetch in flight cannot store its token (its caller revokes what it got)."""

from __future__ import annotations

import contextlib
from typing import Any

from vault.models import MachineToken
from vault.store.dynamo import Conflict, Dynamo
from vault.store.grants import LEASE_ATTRIBUTES, Lease
from vault.store.mapper import MACHINE_TOKENS
from vault.store.schema import DAY, TTL_ATTRIBUTE, TYPE_ATTRIBUTE


class MachineTokenRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    def get(self, agent: str, provider: str, scopes: tuple[str, ...]) -> MachineToken | None:
        item = self._db.get(
            self.table, MACHINE_TOKENS.key(agent=agent, provider=provider, scopes=scopes)
        )
        return MACHINE_TOKENS.from_item(item) if item else None

    def of_agent(self, agent: str, provider: str) -> list[MachineToken]:
        """Every machine token (any scopes) of `agent` at `provider`, read strongly consistently."""
        return [
            MACHINE_TOKENS.from_item(i)
            for i in self._db.query(
                self.table,
                KeyConditionExpression="pk = :pk",
                ConsistentRead=True,
                ExpressionAttributeValues={
                    ":pk": MACHINE_TOKENS.partition(agent=agent, provider=provider)
                },
            )
        ]

    def acquire_lease(
        self,
        agent: str,
        provider: str,
        scopes: tuple[str, ...],
        lease: Lease,
    ) -> tuple[MachineToken | None, bool]:
        """Single-flight: take the fetch lease of (agent, provider, scopes), creating the item if
        there is none, in one request whatever the outcome. Returns the item and whether this
        caller now holds its lease: if so, the item as it is now (a token stored meanwhile
        included); if not, the item as it is (someone else's lease on it, its `lease_since` and
        `fetch_seconds` saying when that fetch should be done, or a revocation under way)."""
        try:
            answer = self._db.call(
                "update_item",
                TableName=self.table,
                Key=MACHINE_TOKENS.key(agent=agent, provider=provider, scopes=scopes),
                UpdateExpression="SET lease_owner = :o, lease_until = :u, lease_since = :now, "
                "#ag = :a, #pv = :p, "
                "#sc = :s, #t = :type, #s = if_not_exists(#s, :active), "
                "#ttl = if_not_exists(#ttl, :ttl)",
                ConditionExpression="attribute_not_exists(pk) OR (#s = :active AND "
                "(attribute_not_exists(lease_until) OR lease_until < :now))",
                ExpressionAttributeNames={
                    "#s": "status",
                    "#t": TYPE_ATTRIBUTE,
                    "#ttl": TTL_ATTRIBUTE,
                    "#ag": "agent",
                    "#pv": "provider",
                    "#sc": "scopes",
                },
                ExpressionAttributeValues={
                    ":o": lease.owner,
                    ":u": lease.until,
                    ":now": lease.since,
                    ":a": agent,
                    ":p": provider,
                    ":s": list(scopes),
                    ":type": MACHINE_TOKENS.kind.type,
                    ":active": "active",
                    ":ttl": int(lease.until) + DAY,
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Conflict as lost:
            return (MACHINE_TOKENS.from_item(lost.item) if lost.item else None), False
        return MACHINE_TOKENS.from_item(answer["Attributes"]), True

    def release_lease(self, token: MachineToken, owner: str) -> None:
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=MACHINE_TOKENS.key_of(token),
                UpdateExpression="REMOVE " + LEASE_ATTRIBUTES,
                ConditionExpression="lease_owner = :o",
                ExpressionAttributeValues={":o": owner},
            )

    def store(self, token: MachineToken, owner: str) -> None:
        """Store a fetched token and release the lease in one write. Conflict unless this
        caller still holds the lease and no revocation started meanwhile."""
        self._db.call(
            "put_item",
            TableName=self.table,
            Item=MACHINE_TOKENS.to_item(token),
            ConditionExpression="lease_owner = :o AND #s = :active",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":o": owner, ":active": "active"},
        )

    def mark_revoking(self, token: MachineToken) -> MachineToken | None:
        """Revocation's first step: no lease can be taken and no fetch can store after this.
        Returns the item as it is now; None if it is gone."""
        try:
            answer: dict[str, Any] = self._db.call(
                "update_item",
                TableName=self.table,
                Key=MACHINE_TOKENS.key_of(token),
                UpdateExpression="SET #s = :revoking REMOVE " + LEASE_ATTRIBUTES,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoking": "revoking"},
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return MACHINE_TOKENS.from_item(answer["Attributes"])

    def delete(self, token: MachineToken) -> None:
        with contextlib.suppress(Conflict):
            self._db.call(
                "delete_item",
                TableName=self.table,
                Key=MACHINE_TOKENS.key_of(token),
                ConditionExpression="#s = :revoking",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoking": "revoking"},
            )

    def drop_rejected(self, token: MachineToken) -> None:
        """Forget a token the provider refused (401) unless it was replaced meanwhile."""
        if token.access_token_ct is None:
            return
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=MACHINE_TOKENS.key_of(token),
                UpdateExpression="REMOVE access_token SET expires_at = :zero",
                ConditionExpression="access_token = :ct",
                ExpressionAttributeValues={":ct": token.access_token_ct, ":zero": 0},
            )
