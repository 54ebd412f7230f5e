"""Sessions and what lives in their partition: the session tokens, and the task records the
reaper reads (a session's entry in its task's partition, a stopped task)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from vault.models import Grant, Session, SessionToken, scope_key, token_ref_key
from vault.store import schema
from vault.store.dynamo import Conflict, Dynamo
from vault.store.mapper import (
    SESSIONS,
    TASK_SESSIONS,
    TASK_STOPS,
    TOKENS,
)
from vault.store.schema import DAY, GSI1, GSI2, LIVE_SHARDS, TaskSession, TaskStopped


class SessionRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    def put(self, session: Session) -> None:
        """Store a new session and its entry in its task's partition, only while the task is
        not recorded as stopped (one transaction: a reaper that records the stop first makes
        this fail; one that records it after finds the entry). Conflict if it is stopped."""
        entry = TaskSession(
            session.task_id, session.session_id, session.expires_at + DAY, session.expires_at
        )
        self._db.transact(
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": TASK_STOPS.key(task_id=session.task_id),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": SESSIONS.to_item(session),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": {"TableName": self.table, "Item": TASK_SESSIONS.to_item(entry)}},
        )

    def mark_task_stopped(self, task_id: str, now: int, keep_until: int) -> None:
        """Record that a task stopped (idempotent: a repeat keeps the first record)."""
        with contextlib.suppress(Conflict):
            self._db.call(
                "put_item",
                TableName=self.table,
                Item=TASK_STOPS.to_item(TaskStopped(task_id, now, keep_until)),
                ConditionExpression="attribute_not_exists(pk)",
            )

    def task_stopped(self, task_id: str) -> bool:
        """Whether the task is recorded as stopped."""
        return self._db.get(self.table, TASK_STOPS.key(task_id=task_id)) is not None

    def get(self, session_id: str) -> Session | None:
        item = self._db.get(self.table, SESSIONS.key(session_id=session_id))
        return SESSIONS.from_item(item) if item else None

    def bundle(self, session_id: str) -> tuple[Session | None, list[SessionToken]]:
        """The session and its tokens in one strongly consistent query (the warm path)."""
        session, tokens = None, []
        for item in self._db.query(
            self.table,
            KeyConditionExpression="pk = :pk",
            ConsistentRead=True,
            ExpressionAttributeValues={":pk": SESSIONS.partition(session_id=session_id)},
        ):
            if item["sk"]["S"] == schema.SESSION.sk:
                session = SESSIONS.from_item(item)
            else:
                tokens.append(TOKENS.from_item(item))
        return session, tokens

    def end(self, session_id: str, reason: str, *, expired_by: int | None = None) -> bool:
        """Mark a session ended; False if it already was. With `expired_by`, only if it expired
        by then: a renewal that moved its expiry first wins (`extend` wants the opposite)."""
        condition = "attribute_exists(pk) AND #s = :active"
        values: dict[str, object] = {":ended": "ended", ":active": "active", ":r": reason}
        if expired_by is not None:
            condition += " AND expires_at <= :now"
            values[":now"] = expired_by
        try:
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=SESSIONS.key(session_id=session_id),
                UpdateExpression="SET #s = :ended, ended_reason = :r",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
            )
        except Conflict:
            return False
        return True

    def expired_entries(self, now: int) -> Iterator[TaskSession]:
        """The task entries indexed by expiry whose session expired by `now` (each shard of the
        sweep's index in turn, oldest first within it; read page by page as consumed): sessions
        possibly never ended."""
        for shard in range(LIVE_SHARDS):
            for item in self._db.query(
                self.table,
                IndexName=GSI1.name,
                KeyConditionExpression="gsi1pk = :pk AND gsi1sk < :upto",
                ExpressionAttributeValues={
                    ":pk": TASK_SESSIONS.partition(GSI1, shard=shard),
                    # gsi1sk is `<expires_at, 12 digits>#<session_id>`; "$" sorts after "#"
                    ":upto": f"{now:012d}$",
                },
            ):
                yield TASK_SESSIONS.from_item(item)

    def reindex_entry(self, entry: TaskSession, expires_at: int | None) -> None:
        """Index a task entry at a renewed session's new expiry (and keep the entry a day past
        it, as at the start: a renewed session may outlive its first expiry by days), or (None)
        take it out of the sweep's index: the sweep is done with it. A missing entry (TTL)
        stays missing."""
        request: dict[str, Any] = {"ConditionExpression": "attribute_exists(pk)"}
        if expires_at is None:
            request["UpdateExpression"] = "REMOVE gsi1pk, gsi1sk, expires_at"
        else:
            ids = {"session_id": entry.session_id, "expires_at": expires_at}
            request["UpdateExpression"] = (
                "SET gsi1pk = :pk, gsi1sk = :sk, expires_at = :e, #t = :keep"
            )
            request["ExpressionAttributeNames"] = {"#t": TASK_SESSIONS.table.ttl_attribute}
            request["ExpressionAttributeValues"] = {
                ":pk": TASK_SESSIONS.partition(GSI1, **ids),
                ":sk": TASK_SESSIONS.sort_key(GSI1, **ids),
                ":e": expires_at,
                ":keep": max(entry.keep_until, expires_at + DAY),
            }
        with contextlib.suppress(Conflict):
            self._db.call(
                "update_item", TableName=self.table, Key=TASK_SESSIONS.key_of(entry), **request
            )

    def extend(
        self, session_id: str, expires_at: int, now: int, *, identity_verified: bool = False
    ) -> bool:
        """Move a live session's expiry (recording a fresh identity check when there was one);
        False if it ended or expired meanwhile."""
        update = "SET expires_at = :e, #t = :ttl"
        if identity_verified:
            update += ", identity_at = :now"
        try:
            self._db.call(
                "update_item",
                TableName=self.table,
                Key=SESSIONS.key(session_id=session_id),
                UpdateExpression=update,
                ConditionExpression="#s = :active AND expires_at > :now",
                ExpressionAttributeNames={"#s": "status", "#t": "ttl"},
                ExpressionAttributeValues={
                    ":e": expires_at,
                    ":ttl": expires_at + DAY,
                    ":active": "active",
                    ":now": now,
                },
            )
        except Conflict:
            return False
        return True

    def of_task(self, task_id: str) -> list[Session]:
        """Every session of a task: its entries in the task's partition (a strongly consistent
        read: nothing committed before is missed), and those found by gsi1 (sessions stored
        before the entries existed)."""
        ids = [
            TASK_SESSIONS.from_item(i).session_id
            for i in self._db.query(
                self.table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :s)",
                ConsistentRead=True,
                ExpressionAttributeValues={
                    ":pk": TASK_SESSIONS.partition(task_id=task_id),
                    ":s": TASK_SESSIONS.sort_key(),
                },
            )
        ]
        for item in self._db.query(
            self.table,
            IndexName=GSI1.name,
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": SESSIONS.partition(GSI1, task_id=task_id)},
        ):
            session_id = SESSIONS.from_item(item).session_id
            if session_id not in ids:
                ids.append(session_id)
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def get_token(
        self, session_id: str, provider: str, scopes: tuple[str, ...]
    ) -> SessionToken | None:
        key = TOKENS.key(session_id=session_id, provider=provider, scopes=scopes)
        item = self._db.get(self.table, key)
        return TOKENS.from_item(item) if item else None

    def delete_token(self, token: SessionToken) -> None:
        self._db.call("delete_item", TableName=self.table, Key=TOKENS.key_of(token))

    def drop_rejected_token(self, token: SessionToken) -> None:
        """Forget a token the provider refused (401), unless another request replaced it with a
        new one meanwhile: the next request mints a fresh one."""
        with contextlib.suppress(Conflict):
            self._db.call(
                "delete_item",
                TableName=self.table,
                Key=TOKENS.key_of(token),
                ConditionExpression="access_token = :ct",
                ExpressionAttributeValues={":ct": token.access_token_ct},
            )

    def mark_token_revoke_pending(self, token: SessionToken) -> None:
        self._db.call(
            "update_item",
            TableName=self.table,
            Key=TOKENS.key_of(token),
            UpdateExpression="SET revoke_pending = :t",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":t": True},
        )

    def tokens_of_grant(self, grant_id: str) -> list[SessionToken]:
        """The session tokens minted from grant `grant_id`, as gsi2 lists them (eventually
        consistent: a token stored a moment ago may be missing; `tokens_minted_from` has it)."""
        return [
            TOKENS.from_item(i)
            for i in self._db.query(
                self.table,
                IndexName=GSI2.name,
                KeyConditionExpression="gsi2pk = :pk AND begins_with(gsi2sk, :t)",
                ExpressionAttributeValues={
                    ":pk": TOKENS.partition(GSI2, grant_id=grant_id),
                    ":t": TOKENS.sort_key(GSI2),
                },
            )
        ]

    def tokens_minted_from(self, grant: Grant) -> list[SessionToken]:
        """`tokens_of_grant`, and the tokens the grant item as read names (`live_tokens`,
        written with each token: read strongly consistently, one by one, those gsi2 missed)."""
        found = {
            (t.session_id, scope_key(t.scopes)): t for t in self.tokens_of_grant(grant.grant_id)
        }
        for ref in grant.live_tokens:
            session_id, scopes = token_ref_key(ref)
            if (session_id, scopes) in found:
                continue
            key = TOKENS.key(session_id=session_id, provider=grant.provider, scope_key=scopes)
            item = self._db.get(self.table, key)
            if item is not None:
                token = TOKENS.from_item(item)
                if token.grant_id == grant.grant_id:  # not a newer grant's token there
                    found[(session_id, scopes)] = token
        return list(found.values())
