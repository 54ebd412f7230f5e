"""The vault's data-access layer: the only code that reads or writes DynamoDB.

One table holds sessions, session tokens, flows and grants (see docs/architecture.md); a second
holds proof `jti`s. Every call maps AWS failures to `StorageUnavailable` (503, retry hint), so a
throttled or failing table fails closed and never loses what is stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vault.errors import StorageUnavailable
from vault.models import Flow, Grant, PendingFlow, Session, SessionToken, UserRef, scope_key

DAY = 86400


class Conflict(Exception):
    """A conditional write lost: the item was not in the state the write required."""


UNBOUND = "UNBOUND"
"""gsi1 partition of the flows awaiting binding (sorted by expiry): what the sweep reads."""
CLOSED_FLOW_REMOVES = "refresh_token, access_token, binding_hash, gsi1pk, gsi1sk, gsi2pk, gsi2sk"
"""What a flow loses when it closes: its tokens, its binding code's hash, its unbound indexes."""


# --- attribute helpers -------------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(int(value)) if float(value).is_integer() else repr(float(value))}


def _b(value: bytes) -> dict[str, bytes]:
    return {"B": value}


def _ss(values: tuple[str, ...]) -> dict[str, Any]:
    return {"L": [{"S": v} for v in values]}


def _get_s(item: dict[str, Any], name: str) -> str:
    return str(item[name]["S"])


def _opt_s(item: dict[str, Any], name: str) -> str | None:
    return str(item[name]["S"]) if name in item else None


def _get_n(item: dict[str, Any], name: str) -> int:
    return int(float(item[name]["N"]))


def _opt_f(item: dict[str, Any], name: str) -> float | None:
    return float(item[name]["N"]) if name in item else None


def _get_b(item: dict[str, Any], name: str) -> bytes:
    return bytes(item[name]["B"])


def _opt_b(item: dict[str, Any], name: str) -> bytes | None:
    return bytes(item[name]["B"]) if name in item else None


def _get_list(item: dict[str, Any], name: str) -> tuple[str, ...]:
    return tuple(str(v["S"]) for v in item.get(name, {}).get("L", []))


def _user(item: dict[str, Any]) -> UserRef:
    return UserRef(iss=_get_s(item, "user_iss"), sub=_get_s(item, "user_sub"))


def _user_attrs(user: UserRef) -> dict[str, Any]:
    return {"user_iss": _s(user.iss), "user_sub": _s(user.sub), "user_key": _s(user.key)}


# --- keys -------------------------------------------------------------------------------------


def session_key(session_id: str) -> dict[str, Any]:
    return {"pk": _s(f"SESSION#{session_id}"), "sk": _s("SESSION")}


def token_key(session_id: str, provider: str, scopes: tuple[str, ...]) -> dict[str, Any]:
    return {"pk": _s(f"SESSION#{session_id}"), "sk": _s(f"TOKEN#{provider}#{scope_key(scopes)}")}


def state_key(state_hash: str) -> dict[str, Any]:
    return {"pk": _s(f"STATE#{state_hash}"), "sk": _s("STATE")}


def flow_key(flow_id: str) -> dict[str, Any]:
    return {"pk": _s(f"FLOW#{flow_id}"), "sk": _s("FLOW")}


def grant_key(user: UserRef, agent: str, provider: str) -> dict[str, Any]:
    return {"pk": _s(f"USER#{user.key}"), "sk": _s(f"GRANT#{agent}#{provider}")}


def task_stopped_key(task_id: str) -> dict[str, Any]:
    return {"pk": _s(f"TASK#{task_id}"), "sk": _s("STOPPED")}


def task_session_key(task_id: str, session_id: str) -> dict[str, Any]:
    """A session's entry in its task's partition: the reaper reads it strongly consistently."""
    return {"pk": _s(f"TASK#{task_id}"), "sk": _s(f"SESSION#{session_id}")}


# --- item mapping -------------------------------------------------------------------------------


def session_item(s: Session) -> dict[str, Any]:
    item = {
        **session_key(s.session_id),
        "type": _s("session"),
        "session_id": _s(s.session_id),
        "agent": _s(s.agent),
        "principal_arn": _s(s.principal_arn),
        "task_id": _s(s.task_id),
        **_user_attrs(s.user),
        "jkt": _s(s.jkt),
        "public_jwk": _s(json.dumps(s.public_jwk, sort_keys=True)),
        "status": _s(s.status),
        "created_at": _n(s.created_at),
        "expires_at": _n(s.expires_at),
        "ttl": _n(s.expires_at + DAY),
        "gsi1pk": _s(f"TASK#{s.task_id}"),
        "gsi1sk": _s(f"SESSION#{s.session_id}"),
    }
    if s.ended_reason:
        item["ended_reason"] = _s(s.ended_reason)
    if s.identity_at is not None:
        item["identity_at"] = _n(s.identity_at)
    return item


def session_from(item: dict[str, Any]) -> Session:
    return Session(
        session_id=_get_s(item, "session_id"),
        agent=_get_s(item, "agent"),
        principal_arn=_get_s(item, "principal_arn"),
        task_id=_get_s(item, "task_id"),
        user=_user(item),
        jkt=_get_s(item, "jkt"),
        public_jwk=json.loads(_get_s(item, "public_jwk")),
        created_at=_get_n(item, "created_at"),
        expires_at=_get_n(item, "expires_at"),
        status=_get_s(item, "status"),
        ended_reason=_opt_s(item, "ended_reason"),
        identity_at=int(v) if (v := _opt_f(item, "identity_at")) is not None else None,
    )


def token_item(t: SessionToken) -> dict[str, Any]:
    item = {
        **token_key(t.session_id, t.provider, t.scopes),
        "type": _s("token"),
        "session_id": _s(t.session_id),
        "provider": _s(t.provider),
        "scopes": _ss(t.scopes),
        "grant_id": _s(t.grant_id),
        **_user_attrs(t.user),
        "access_token": _b(t.access_token_ct),
        "expires_at": _n(t.expires_at),
        "ttl": _n(t.expires_at + DAY),
        "gsi2pk": _s(f"GRANT#{t.grant_id}"),
        "gsi2sk": _s(f"TOKEN#{t.session_id}#{t.provider}"),
    }
    if t.revoke_pending:
        item["revoke_pending"] = {"BOOL": True}
    if t.lifetime is not None:
        item["lifetime"] = _n(t.lifetime)
    if t.delivery != "bearer":
        item["delivery"] = _s(t.delivery)
    return item


def token_from(item: dict[str, Any]) -> SessionToken:
    return SessionToken(
        session_id=_get_s(item, "session_id"),
        provider=_get_s(item, "provider"),
        scopes=_get_list(item, "scopes"),
        grant_id=_get_s(item, "grant_id"),
        user=_user(item),
        access_token_ct=_get_b(item, "access_token"),
        expires_at=_get_n(item, "expires_at"),
        revoke_pending=bool(item.get("revoke_pending", {}).get("BOOL", False)),
        lifetime=int(lifetime) if (lifetime := _opt_f(item, "lifetime")) is not None else None,
        delivery=_opt_s(item, "delivery") or "bearer",
    )


def pending_item(f: PendingFlow) -> dict[str, Any]:
    return {
        **state_key(f.state_hash),
        "type": _s("pending_flow"),
        "state_hash": _s(f.state_hash),
        "flow_id": _s(f.flow_id),
        "session_id": _s(f.session_id),
        "agent": _s(f.agent),
        "provider": _s(f.provider),
        "scopes": _ss(f.scopes),
        **_user_attrs(f.user),
        "verifier": _b(f.verifier_ct),
        "return_url": _s(f.return_url),
        "grant_id": _s(f.grant_id),
        "created_at": _n(f.created_at),
        "expires_at": _n(f.expires_at),
        "ttl": _n(f.expires_at),
        "status": _s(f.status),
    }


def pending_from(item: dict[str, Any]) -> PendingFlow:
    return PendingFlow(
        state_hash=_get_s(item, "state_hash"),
        flow_id=_get_s(item, "flow_id"),
        session_id=_get_s(item, "session_id"),
        agent=_get_s(item, "agent"),
        provider=_get_s(item, "provider"),
        scopes=_get_list(item, "scopes"),
        user=_user(item),
        verifier_ct=_get_b(item, "verifier"),
        return_url=_get_s(item, "return_url"),
        grant_id=_get_s(item, "grant_id"),
        created_at=_get_n(item, "created_at"),
        expires_at=_get_n(item, "expires_at"),
        status=_get_s(item, "status"),
    )


def flow_item(f: Flow) -> dict[str, Any]:
    item = {
        **flow_key(f.flow_id),
        "type": _s("flow"),
        "flow_id": _s(f.flow_id),
        "status": _s(f.status),
        "session_id": _s(f.session_id),
        "agent": _s(f.agent),
        "provider": _s(f.provider),
        "scopes": _ss(f.scopes),
        "granted_scopes": _ss(f.granted_scopes),
        **_user_attrs(f.user),
        "grant_id": _s(f.grant_id),
        "created_at": _n(f.created_at),
        "expires_at": _n(f.expires_at),
        "ttl": _n(f.expires_at + DAY),
    }
    if f.refresh_token_ct is not None:
        item["refresh_token"] = _b(f.refresh_token_ct)
    if f.access_token_ct is not None:
        item["access_token"] = _b(f.access_token_ct)
    if f.error:
        item["error"] = _s(f.error)
    if f.status == "pending_binding":
        # sparse indexes, removed when the flow closes: the sweep finds expired unbound flows
        # (gsi1, by expiry), a revocation by user finds that user's (gsi2)
        item["gsi1pk"] = _s(UNBOUND)
        item["gsi1sk"] = _s(f"{f.expires_at:012d}#{f.flow_id}")
        item["gsi2pk"] = _s(f"UNBOUND#{f.user.key}")
        item["gsi2sk"] = _s(f"FLOW#{f.flow_id}")
    if f.binding_hash is not None:
        item["binding_hash"] = _s(f.binding_hash)
    return item


def flow_from(item: dict[str, Any]) -> Flow:
    return Flow(
        flow_id=_get_s(item, "flow_id"),
        status=_get_s(item, "status"),
        session_id=_get_s(item, "session_id"),
        agent=_get_s(item, "agent"),
        provider=_get_s(item, "provider"),
        scopes=_get_list(item, "scopes"),
        user=_user(item),
        grant_id=_get_s(item, "grant_id"),
        created_at=_get_n(item, "created_at"),
        expires_at=_get_n(item, "expires_at"),
        granted_scopes=_get_list(item, "granted_scopes"),
        refresh_token_ct=_opt_b(item, "refresh_token"),
        access_token_ct=_opt_b(item, "access_token"),
        error=_opt_s(item, "error"),
        binding_hash=_opt_s(item, "binding_hash"),
    )


def grant_item(g: Grant) -> dict[str, Any]:
    item = {
        **grant_key(g.user, g.agent, g.provider),
        "type": _s("grant"),
        "grant_id": _s(g.grant_id),
        **_user_attrs(g.user),
        "agent": _s(g.agent),
        "provider": _s(g.provider),
        "scopes": _ss(g.scopes),
        "refresh_token": _b(g.refresh_token_ct),
        "status": _s(g.status),
        "version": _n(g.version),
        "created_at": _n(g.created_at),
        "gsi1pk": _s(f"AGENT#{g.agent}"),
        "gsi1sk": _s(f"GRANT#{g.provider}#{g.user.key}"),
        "gsi2pk": _s(f"GRANT#{g.grant_id}"),
        "gsi2sk": _s("GRANT"),
    }
    if g.refreshed_at is not None:
        item["refreshed_at"] = _n(g.refreshed_at)
    if g.broken_reason:
        item["broken_reason"] = _s(g.broken_reason)
    return item


def grant_from(item: dict[str, Any]) -> Grant:
    return Grant(
        grant_id=_get_s(item, "grant_id"),
        user=_user(item),
        agent=_get_s(item, "agent"),
        provider=_get_s(item, "provider"),
        scopes=_get_list(item, "scopes"),
        refresh_token_ct=_get_b(item, "refresh_token"),
        created_at=_get_n(item, "created_at"),
        status=_get_s(item, "status"),
        version=_get_n(item, "version"),
        refreshed_at=int(v) if (v := _opt_f(item, "refreshed_at")) is not None else None,
        broken_reason=_opt_s(item, "broken_reason"),
        lease_owner=_opt_s(item, "lease_owner"),
        lease_until=_opt_f(item, "lease_until"),
    )


class Repository:
    """DynamoDB access for every vault record."""

    def __init__(self, dynamodb: Any, table: str, replay_table: str) -> None:
        self._ddb = dynamodb
        self.table = table
        self.replay_table = replay_table

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._ddb, operation)(**kwargs)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise Conflict(operation) from exc
            if code == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    raise Conflict(operation) from exc
            raise StorageUnavailable("the vault's storage is unavailable; retry shortly") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the vault's storage is unavailable; retry shortly") from exc

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        kwargs.setdefault("TableName", self.table)
        while True:
            page = self._call("query", **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._call(
            "get_item", TableName=self.table, Key=key, ConsistentRead=True
        ).get("Item")
        return item

    # --- proofs -----------------------------------------------------------------------------

    def remember_jti(self, jkt: str, jti: str, expires_at: float) -> bool:
        """Record a proof's jti once; False when it was seen before (a replay)."""
        digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
        try:
            self._call(
                "put_item",
                TableName=self.replay_table,
                Item={"pk": _s(digest), "ttl": _n(int(expires_at) + 1)},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Conflict:
            return False
        return True

    # --- sessions ---------------------------------------------------------------------------

    def put_session(self, session: Session) -> None:
        """Store a new session and its entry in its task's partition, only while the task is
        not recorded as stopped (one transaction: a reaper that records the stop first makes
        this fail; one that records it after finds the entry). Conflict if it is stopped."""
        entry = {
            **task_session_key(session.task_id, session.session_id),
            "type": _s("task_session"),
            "session_id": _s(session.session_id),
            "ttl": _n(session.expires_at + DAY),
        }
        self._call(
            "transact_write_items",
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": self.table,
                        "Key": task_stopped_key(session.task_id),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": session_item(session),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Put": {"TableName": self.table, "Item": entry}},
            ],
        )

    def mark_task_stopped(self, task_id: str, now: int, keep_until: int) -> None:
        """Record that a task stopped (idempotent: a repeat keeps the first record)."""
        with contextlib.suppress(Conflict):
            self._call(
                "put_item",
                TableName=self.table,
                Item={
                    **task_stopped_key(task_id),
                    "type": _s("task_stopped"),
                    "task_id": _s(task_id),
                    "stopped_at": _n(now),
                    "ttl": _n(keep_until),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )

    def get_session(self, session_id: str) -> Session | None:
        item = self._get(session_key(session_id))
        return session_from(item) if item else None

    def session_bundle(self, session_id: str) -> tuple[Session | None, list[SessionToken]]:
        """The session and its tokens in one strongly consistent query (the warm path)."""
        session, tokens = None, []
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ConsistentRead=True,
            ExpressionAttributeValues={":pk": _s(f"SESSION#{session_id}")},
        ):
            if item["sk"]["S"] == "SESSION":
                session = session_from(item)
            else:
                tokens.append(token_from(item))
        return session, tokens

    def end_session(self, session_id: str, reason: str) -> bool:
        """Mark a session ended; False if it already was."""
        try:
            self._call(
                "update_item",
                TableName=self.table,
                Key=session_key(session_id),
                UpdateExpression="SET #s = :ended, ended_reason = :r",
                ConditionExpression="attribute_exists(pk) AND #s = :active",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":ended": _s("ended"),
                    ":active": _s("active"),
                    ":r": _s(reason),
                },
            )
        except Conflict:
            return False
        return True

    def extend_session(
        self, session_id: str, expires_at: int, now: int, *, identity_verified: bool = False
    ) -> bool:
        """Move a live session's expiry (recording a fresh identity check when there was one);
        False if it ended or expired meanwhile."""
        update = "SET expires_at = :e, #t = :ttl"
        values = {
            ":e": _n(expires_at),
            ":ttl": _n(expires_at + DAY),
            ":active": _s("active"),
            ":now": _n(now),
        }
        if identity_verified:
            update += ", identity_at = :now"
        try:
            self._call(
                "update_item",
                TableName=self.table,
                Key=session_key(session_id),
                UpdateExpression=update,
                ConditionExpression="#s = :active AND expires_at > :now",
                ExpressionAttributeNames={"#s": "status", "#t": "ttl"},
                ExpressionAttributeValues=values,
            )
        except Conflict:
            return False
        return True

    def sessions_of_task(self, task_id: str) -> list[Session]:
        """Every session of a task: its entries in the task's partition (a strongly consistent
        read: nothing committed before is missed), and those found by gsi1 (sessions stored
        before the entries existed)."""
        ids = [
            _get_s(i, "session_id")
            for i in self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :s)",
                ConsistentRead=True,
                ExpressionAttributeValues={":pk": _s(f"TASK#{task_id}"), ":s": _s("SESSION#")},
            )
        ]
        for item in self._query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"TASK#{task_id}")},
        ):
            if _get_s(item, "session_id") not in ids:
                ids.append(_get_s(item, "session_id"))
        return [s for s in (self.get_session(i) for i in ids) if s is not None]

    def get_session_token(
        self, session_id: str, provider: str, scopes: tuple[str, ...]
    ) -> SessionToken | None:
        item = self._get(token_key(session_id, provider, scopes))
        return token_from(item) if item else None

    def delete_token(self, token: SessionToken) -> None:
        self._call(
            "delete_item",
            TableName=self.table,
            Key=token_key(token.session_id, token.provider, token.scopes),
        )

    def drop_rejected_token(self, token: SessionToken) -> None:
        """Forget a token the provider refused (401), unless another request replaced it with a
        new one meanwhile: the next request mints a fresh one."""
        with contextlib.suppress(Conflict):
            self._call(
                "delete_item",
                TableName=self.table,
                Key=token_key(token.session_id, token.provider, token.scopes),
                ConditionExpression="access_token = :ct",
                ExpressionAttributeValues={":ct": _b(token.access_token_ct)},
            )

    def mark_token_revoke_pending(self, token: SessionToken) -> None:
        self._call(
            "update_item",
            TableName=self.table,
            Key=token_key(token.session_id, token.provider, token.scopes),
            UpdateExpression="SET revoke_pending = :t",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )

    def tokens_of_grant(self, grant_id: str) -> list[SessionToken]:
        return [
            token_from(i)
            for i in self._query(
                IndexName="gsi2",
                KeyConditionExpression="gsi2pk = :pk AND begins_with(gsi2sk, :t)",
                ExpressionAttributeValues={":pk": _s(f"GRANT#{grant_id}"), ":t": _s("TOKEN#")},
            )
        ]

    # --- consent flows ----------------------------------------------------------------------

    def put_pending_flow(self, flow: PendingFlow) -> None:
        self._call(
            "put_item",
            TableName=self.table,
            Item=pending_item(flow),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def claim_pending_flow(self, state_hash: str, now: float) -> PendingFlow | None:
        """Take a pending flow for its one exchange; None if unknown, used or expired."""
        try:
            answer = self._call(
                "update_item",
                TableName=self.table,
                Key=state_key(state_hash),
                UpdateExpression="SET #s = :claimed",
                ConditionExpression="attribute_exists(pk) AND #s = :pending AND expires_at > :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":claimed": _s("exchanging"),
                    ":pending": _s("pending"),
                    ":now": _n(int(now)),
                },
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return pending_from(answer["Attributes"])

    def release_pending_flow(self, state_hash: str) -> None:
        """Give a claimed flow back (the provider failed transiently): it stays usable."""
        with contextlib.suppress(Conflict):
            self._call(
                "update_item",
                TableName=self.table,
                Key=state_key(state_hash),
                UpdateExpression="SET #s = :pending",
                ConditionExpression="#s = :claimed",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":pending": _s("pending"), ":claimed": _s("exchanging")},
            )

    def drop_pending_flow(self, state_hash: str) -> None:
        self._call("delete_item", TableName=self.table, Key=state_key(state_hash))

    def close_pending_flow(self, state_hash: str, flow: Flow) -> None:
        """Atomically retire the state and record the answered flow."""
        self._call(
            "transact_write_items",
            TransactItems=[
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": state_key(state_hash),
                        "ConditionExpression": "#s = :claimed",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":claimed": _s("exchanging")},
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": flow_item(flow),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ],
        )

    def get_flow(self, flow_id: str) -> Flow | None:
        item = self._get(flow_key(flow_id))
        return flow_from(item) if item else None

    def activate_flow(self, flow: Flow, grant: Grant) -> None:
        """Bind: the flow closes and its tokens become the user's grant, in one transaction."""
        self._call(
            "transact_write_items",
            TransactItems=[
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": flow_key(flow.flow_id),
                        "UpdateExpression": "SET #s = :active REMOVE " + CLOSED_FLOW_REMOVES,
                        "ConditionExpression": "#s = :pending",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {
                            ":active": _s("active"),
                            ":pending": _s("pending_binding"),
                        },
                    }
                },
                {"Put": {"TableName": self.table, "Item": grant_item(grant)}},
            ],
        )

    def reject_flow(self, flow_id: str, reason: str) -> None:
        self._call(
            "update_item",
            TableName=self.table,
            Key=flow_key(flow_id),
            UpdateExpression="SET #s = :rejected, #e = :reason REMOVE " + CLOSED_FLOW_REMOVES,
            ConditionExpression="#s = :pending",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
            ExpressionAttributeValues={
                ":rejected": _s("rejected"),
                ":reason": _s(reason),
                ":pending": _s("pending_binding"),
            },
        )

    def expired_unbound_flows(self, now: int) -> list[Flow]:
        """Flows nobody bound before they expired (and those whose upstream revocation is still
        to be retried), oldest first."""
        return [
            flow_from(i)
            for i in self._query(
                IndexName="gsi1",
                KeyConditionExpression="gsi1pk = :pk AND gsi1sk < :upto",
                ExpressionAttributeValues={
                    ":pk": _s(UNBOUND),
                    ":upto": _s(f"{now:012d}$"),  # "$" sorts after "#": expires_at <= now
                },
            )
        ]

    def unbound_flows_of_user(self, user: UserRef) -> list[Flow]:
        return [
            flow_from(i)
            for i in self._query(
                IndexName="gsi2",
                KeyConditionExpression="gsi2pk = :pk",
                ExpressionAttributeValues={":pk": _s(f"UNBOUND#{user.key}")},
            )
        ]

    def close_unbound_flow(self, flow_id: str, status: str, now: int | None = None) -> Flow | None:
        """Take an unbound flow out of binding's reach (`expired` or `revoked`) before its tokens
        are revoked upstream: a binding after this fails its condition. With `now`, only if it
        expired by then. The tokens and index entries stay until `forget_flow_tokens`, so a
        failed upstream revocation is retried. None if it is no longer unbound."""
        condition = "#s = :pending"
        values = {":st": _s(status), ":pending": _s("pending_binding")}
        if now is not None:
            condition += " AND expires_at <= :now"
            values[":now"] = _n(now)
        try:
            answer = self._call(
                "update_item",
                TableName=self.table,
                Key=flow_key(flow_id),
                UpdateExpression="SET #s = :st",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return flow_from(answer["Attributes"])

    def forget_flow_tokens(self, flow_id: str) -> None:
        """After their upstream revocation: drop a closed flow's tokens and index entries."""
        with contextlib.suppress(Conflict):
            self._call(
                "update_item",
                TableName=self.table,
                Key=flow_key(flow_id),
                UpdateExpression="REMOVE " + CLOSED_FLOW_REMOVES,
                ConditionExpression="attribute_exists(pk) AND #s <> :pending",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":pending": _s("pending_binding")},
            )

    # --- grants -----------------------------------------------------------------------------

    def get_grant(self, user: UserRef, agent: str, provider: str) -> Grant | None:
        item = self._get(grant_key(user, agent, provider))
        return grant_from(item) if item else None

    def grants_of_user(self, user: UserRef) -> list[Grant]:
        return [
            grant_from(i)
            for i in self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :g)",
                ConsistentRead=True,
                ExpressionAttributeValues={":pk": _s(f"USER#{user.key}"), ":g": _s("GRANT#")},
            )
        ]

    def grants_of_agent(self, agent: str, provider: str | None = None) -> list[Grant]:
        prefix = f"GRANT#{provider}#" if provider else "GRANT#"
        return [
            grant_from(i)
            for i in self._query(
                IndexName="gsi1",
                KeyConditionExpression="gsi1pk = :pk AND begins_with(gsi1sk, :g)",
                ExpressionAttributeValues={":pk": _s(f"AGENT#{agent}"), ":g": _s(prefix)},
            )
        ]

    def grant_by_id(self, grant_id: str) -> Grant | None:
        for item in self._query(
            IndexName="gsi2",
            KeyConditionExpression="gsi2pk = :pk AND gsi2sk = :g",
            ExpressionAttributeValues={":pk": _s(f"GRANT#{grant_id}"), ":g": _s("GRANT")},
        ):
            return self.get_grant(_user(item), _get_s(item, "agent"), _get_s(item, "provider"))
        return None

    def delete_grant(self, grant: Grant) -> bool:
        """Delete this grant (not a newer one that replaced it); False if already gone."""
        try:
            self._call(
                "delete_item",
                TableName=self.table,
                Key=grant_key(grant.user, grant.agent, grant.provider),
                ConditionExpression="grant_id = :g",
                ExpressionAttributeValues={":g": _s(grant.grant_id)},
            )
        except Conflict:
            return False
        return True

    def acquire_lease(self, grant: Grant, owner: str, now: float, until: float) -> Grant | None:
        """Single-flight: take the grant's refresh lease; None while someone else holds it.
        `lease_abandoned` on the answer: the previous holder's lease ran out unreleased."""
        try:
            answer = self._call(
                "update_item",
                TableName=self.table,
                Key=grant_key(grant.user, grant.agent, grant.provider),
                UpdateExpression="SET lease_owner = :o, lease_until = :u",
                ConditionExpression="grant_id = :g AND #s = :active AND "
                "(attribute_not_exists(lease_until) OR lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":o": _s(owner),
                    ":u": _n(until),
                    ":now": _n(now),
                    ":g": _s(grant.grant_id),
                    ":active": _s("active"),
                },
                ReturnValues="ALL_OLD",
            )
        except Conflict:
            return None
        before = grant_from(answer["Attributes"])
        return dataclasses.replace(
            before,
            lease_owner=owner,
            lease_until=until,
            lease_abandoned=before.lease_owner is not None,
        )

    def release_lease(self, grant: Grant, owner: str) -> None:
        with contextlib.suppress(Conflict):
            self._call(
                "update_item",
                TableName=self.table,
                Key=grant_key(grant.user, grant.agent, grant.provider),
                UpdateExpression="REMOVE lease_owner, lease_until",
                ConditionExpression="lease_owner = :o",
                ExpressionAttributeValues={":o": _s(owner)},
            )

    def store_refresh(
        self,
        grant: Grant,
        owner: str,
        new_refresh_ct: bytes | None,
        token: SessionToken | None,
        now: int,
    ) -> None:
        """Atomically keep a rotated refresh token, release the lease and cache the new token.

        Conflict unless this caller still holds the lease of this grant and it is still active
        (a revocation marks it `revoking` and drops the lease first), and, with a token, unless
        the token's session is still active and unexpired: revocation wins every race."""
        names = {"#v": "version"}
        values: dict[str, Any] = {":o": _s(owner), ":now": _n(now), ":one": _n(1)}
        update = "SET refreshed_at = :now, #v = #v + :one"
        if new_refresh_ct is not None:
            update += ", refresh_token = :rt"
            values[":rt"] = _b(new_refresh_ct)
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": grant_key(grant.user, grant.agent, grant.provider),
                    "UpdateExpression": update + " REMOVE lease_owner, lease_until",
                    "ConditionExpression": "lease_owner = :o AND grant_id = :g AND #s = :active",
                    "ExpressionAttributeNames": {**names, "#s": "status"},
                    "ExpressionAttributeValues": {
                        **values,
                        ":g": _s(grant.grant_id),
                        ":active": _s("active"),
                    },
                }
            }
        ]
        if token is not None:
            items.append({"Put": {"TableName": self.table, "Item": token_item(token)}})
            items.append(
                {
                    "ConditionCheck": {
                        "TableName": self.table,
                        "Key": session_key(token.session_id),
                        "ConditionExpression": "#s = :active AND expires_at > :now",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":active": _s("active"), ":now": _n(now)},
                    }
                }
            )
        self._call("transact_write_items", TransactItems=items)

    def mark_grant_revoking(self, grant: Grant) -> Grant | None:
        """Revocation's first step: the grant turns `revoking` and loses any refresh lease, so
        no refresh starts and an in-flight one cannot commit. Returns the grant as it is now
        (its newest refresh token), None if it is gone or was replaced."""
        try:
            answer = self._call(
                "update_item",
                TableName=self.table,
                Key=grant_key(grant.user, grant.agent, grant.provider),
                UpdateExpression="SET #s = :revoking REMOVE lease_owner, lease_until",
                ConditionExpression="grant_id = :g",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoking": _s("revoking"), ":g": _s(grant.grant_id)},
                ReturnValues="ALL_NEW",
            )
        except Conflict:
            return None
        return grant_from(answer["Attributes"])

    def mark_grant_broken(self, grant: Grant, reason: str) -> None:
        with contextlib.suppress(Conflict):
            self._call(
                "update_item",
                TableName=self.table,
                Key=grant_key(grant.user, grant.agent, grant.provider),
                UpdateExpression="SET #s = :broken, broken_reason = :r "
                "REMOVE lease_owner, lease_until",
                ConditionExpression="grant_id = :g",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":broken": _s("broken"),
                    ":r": _s(reason),
                    ":g": _s(grant.grant_id),
                },
            )
