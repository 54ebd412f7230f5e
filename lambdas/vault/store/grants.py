"""Grants (a user's consent for one agent at one provider, holding the refresh token) and their
refresh lease: single-flight refresh, and revocation winning every race."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from vault.models import Grant, SessionToken, UserRef, live_token_refs
from vault.store.dynamo import Conflict, Dynamo
from vault.store.mapper import GRANTS, SESSIONS, TOKENS
from vault.store.schema import GSI1, GSI2

LEASE_ATTRIBUTES = "lease_owner, lease_until, lease_since, lease_for"
"""What a lease is made of: removed together when it is released, used up or taken away."""


@dataclasses.dataclass(frozen=True)
class Lease:
    """A lease to take: who takes it, from when, until when, and for what (the grant's lease:
    the session token the holder mints)."""

    owner: str
    since: float
    until: float
    purpose: str = ""


class GrantRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    def get(self, user: UserRef, agent: str, provider: str) -> Grant | None:
        item = self._db.get(self.table, GRANTS.key(user=user, agent=agent, provider=provider))
        return GRANTS.from_item(item) if item else None

    def of_user(self, user: UserRef) -> list[Grant]:
        return [
            GRANTS.from_item(i)
            for i in self._db.query(
                self.table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :g)",
                ConsistentRead=True,
                ExpressionAttributeValues={
                    ":pk": GRANTS.partition(user=user),
                    ":g": GRANTS.sort_key(),
                },
            )
        ]

    def of_agent(self, agent: str, provider: str | None = None) -> list[Grant]:
        return [
            GRANTS.from_item(i)
            for i in self._db.query(
                self.table,
                IndexName=GSI1.name,
                KeyConditionExpression="gsi1pk = :pk AND begins_with(gsi1sk, :g)",
                ExpressionAttributeValues={
                    ":pk": GRANTS.partition(GSI1, agent=agent),
                    ":g": GRANTS.sort_key(GSI1, provider=provider or None),
                },
            )
        ]

    def by_id(self, grant_id: str) -> Grant | None:
        """The grant with this id, read strongly consistently (the index only finds it)."""
        for item in self._db.query(
            self.table,
            IndexName=GSI2.name,
            KeyConditionExpression="gsi2pk = :pk AND gsi2sk = :g",
            ExpressionAttributeValues={
                ":pk": GRANTS.partition(GSI2, grant_id=grant_id),
                ":g": GRANTS.sort_key(GSI2),
            },
        ):
            found = GRANTS.from_item(item)
            return self.get(found.user, found.agent, found.provider)
        return None

    def delete(self, grant: Grant) -> bool:
        """Delete this grant (not a newer one that replaced it); False if already gone."""
        try:
            self._db.call(
                "delete_item",
                TableName=self.table,
                Key=GRANTS.key_of(grant),
                ConditionExpression="grant_id = :g",
                ExpressionAttributeValues={":g": grant.grant_id},
            )
        except Conflict:
            return False
        return True

    def acquire_lease(
        self,
        user: UserRef,
        agent: str,
        provider: str,
        lease: Lease,
    ) -> tuple[Grant | None, bool]:
        """Single-flight: take the refresh lease of `user`'s grant for `agent` at `provider`, in
        one request whatever the outcome. Returns the grant and whether this caller now holds
        its lease: if so, the grant as it was just before (`lease_abandoned`: the previous
        holder's lease ran out unreleased); if not, the grant as it is (someone else's lease on
        it, its `lease_since` and `refresh_seconds` saying when that refresh should be done, or
        not active), None if there is no grant."""
        try:
            answer = self._db.call(
                "update_item",
                TableName=self.table,
                Key=GRANTS.key(user=user, agent=agent, provider=provider),
                UpdateExpression="SET lease_owner = :o, lease_until = :u, lease_since = :now, "
                "lease_for = :f",
                ConditionExpression="#s = :active AND "
                "(attribute_not_exists(lease_until) OR lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":o": lease.owner,
                    ":u": lease.until,
                    ":now": lease.since,
                    ":f": lease.purpose,
                    ":active": "active",
                },
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Conflict as lost:
            return (GRANTS.from_item(lost.item) if lost.item else None), False
        before = GRANTS.from_item(answer["Attributes"])
        leased = dataclasses.replace(
            before,
            lease_owner=lease.owner,
            lease_until=lease.until,
            lease_since=lease.since,
            lease_for=lease.purpose,
            lease_abandoned=before.lease_owner is not None,
        )
        return leased, True

    def with_token(
        self, user: UserRef, agent: str, provider: str, session_id: str, scopes: tuple[str, ...]
    ) -> tuple[Grant | None, SessionToken | None]:
        """The grant (with its lease) and a session's token minted from it, read together in
        one request (`TransactGetItems`: one consistent snapshot of both): what a caller
        waiting for the lease holder reads to learn whether its token is there yet, and if
        not, whether the holder is still at it."""
        answer = self._db.call(
            "transact_get_items",
            TransactItems=[
                {
                    "Get": {
                        "TableName": self.table,
                        "Key": GRANTS.key(user=user, agent=agent, provider=provider),
                    }
                },
                {
                    "Get": {
                        "TableName": self.table,
                        "Key": TOKENS.key(session_id=session_id, provider=provider, scopes=scopes),
                    }
                },
            ],
        )
        grant, token = (r.get("Item") for r in answer["Responses"])
        return (
            GRANTS.from_item(grant) if grant else None,
            TOKENS.from_item(token) if token else None,
        )

    def release_lease(self, grant: Grant, owner: str) -> None:
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=GRANTS.key_of(grant),
                UpdateExpression="REMOVE " + LEASE_ATTRIBUTES,
                ConditionExpression="lease_owner = :o",
                ExpressionAttributeValues={":o": owner},
            )

    def store_refresh(
        self,
        grant: Grant,
        owner: str,
        new_refresh_ct: bytes | None,
        token: SessionToken | None,
        now: int,
        took: float,
    ) -> None:
        """Atomically keep a rotated refresh token, release the lease and cache the new token.

        Conflict unless this caller still holds the lease of this grant and it is still active
        (a revocation marks it `revoking` and drops the lease first), and, with a token, unless
        the token's session is still active and unexpired: revocation wins every race."""
        values: dict[str, Any] = {":o": owner, ":now": now, ":one": 1, ":took": round(took, 3)}
        update = "SET refreshed_at = :now, refresh_seconds = :took, #v = #v + :one"
        if new_refresh_ct is not None:
            update += ", refresh_token = :rt"
            values[":rt"] = new_refresh_ct
        if token is not None:  # the grant keeps the token's key: a revocation reads it with it
            update += ", live_tokens = :live"
            values[":live"] = list(live_token_refs(grant, token, now))
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": GRANTS.key_of(grant),
                    "UpdateExpression": update + " REMOVE " + LEASE_ATTRIBUTES,
                    "ConditionExpression": "lease_owner = :o AND grant_id = :g AND #s = :active",
                    "ExpressionAttributeNames": {"#v": "version", "#s": "status"},
                    "ExpressionAttributeValues": {
                        **values,
                        ":g": grant.grant_id,
                        ":active": "active",
                    },
                }
            }
        ]
        if token is not None:
            items.append({"Put": {"TableName": self.table, "Item": TOKENS.to_item(token)}})
            items.append(
                {
                    "ConditionCheck": {
                        "TableName": self.table,
                        "Key": SESSIONS.key(session_id=token.session_id),
                        "ConditionExpression": "#s = :active AND expires_at > :now",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":active": "active", ":now": now},
                    }
                }
            )
        self._db.transact(*items)

    def mark_revoking(self, grant: Grant) -> Grant | None:
        """Revocation's first step: the grant turns `revoking` and loses any refresh lease, so
        no refresh starts and an in-flight one cannot commit. Returns the grant as it is now
        (its newest refresh token), None if it is gone or was replaced."""
        try:
            answer = self._db.call(
                "update_item",
                TableName=self.table,
                Key=GRANTS.key_of(grant),
                UpdateExpression="SET #s = :revoking REMOVE " + LEASE_ATTRIBUTES,
                ConditionExpression="grant_id = :g",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoking": "revoking", ":g": grant.grant_id},
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return GRANTS.from_item(answer["Attributes"])

    def mark_broken(self, grant: Grant, reason: str) -> None:
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=GRANTS.key_of(grant),
                UpdateExpression="SET #s = :broken, broken_reason = :r REMOVE " + LEASE_ATTRIBUTES,
                ConditionExpression="grant_id = :g",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":broken": "broken", ":r": reason, ":g": grant.grant_id},
            )
