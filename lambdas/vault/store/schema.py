"""The vault's storage layout, defined once (docs/architecture.md, "Tables").

The tables (keys, attribute types, GSIs and their projection, TTL) are read by the stack
(stacks/constructs/vault_tables.py), by local mode and the tests (`create_tables`); the item
kinds (each record's `type`, key patterns, index keys and TTL) by the store's mapper
(`mapper.py`). Key patterns are `str.format` patterns over a record's fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vault.models import (
    Delegation,
    Flow,
    Grant,
    MachineToken,
    PendingFlow,
    Session,
    SessionToken,
    scope_key,
)

DAY = 86400
TTL_ATTRIBUTE = "ttl"
TYPE_ATTRIBUTE = "type"
"""Every vault-table item names its kind."""
KEY_TYPE = "S"
"""Every key attribute (table and index) is a string."""
BILLING_MODE = "PAY_PER_REQUEST"


# --- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    """A global secondary index keyed by `<name>pk` / `<name>sk`."""

    name: str
    projection: str = "ALL"

    @property
    def pk(self) -> str:
        return f"{self.name}pk"

    @property
    def sk(self) -> str:
        return f"{self.name}sk"


@dataclass(frozen=True)
class TableSchema:
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str = TTL_ATTRIBUTE
    stream_view: str | None = None
    """The table's DynamoDB stream (its view type), if it has one."""

    @property
    def key_attributes(self) -> tuple[str, ...]:
        return (self.partition_key,) + ((self.sort_key,) if self.sort_key else ())

    def definition(self) -> dict[str, Any]:
        """The table in the words of both DynamoDB's CreateTable and CloudFormation's
        AWS::DynamoDB::Table (plus `TimeToLiveSpecification`, set apart by CreateTable)."""
        keys = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            keys.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        attributes = [*self.key_attributes, *(a for i in self.indexes for a in (i.pk, i.sk))]
        definition: dict[str, Any] = {
            "BillingMode": BILLING_MODE,
            "KeySchema": keys,
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": KEY_TYPE} for name in attributes
            ],
        }
        if self.indexes:
            definition["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": [
                        {"AttributeName": index.pk, "KeyType": "HASH"},
                        {"AttributeName": index.sk, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": index.projection},
                }
                for index in self.indexes
            ]
        if self.stream_view:
            definition["StreamSpecification"] = {"StreamViewType": self.stream_view}
        definition["TimeToLiveSpecification"] = {
            "AttributeName": self.ttl_attribute,
            "Enabled": True,
        }
        return definition


GSI1 = Index("gsi1")
"""Sessions of a task, grants of an agent, the unbound flows by expiry (the sweep)."""
GSI2 = Index("gsi2")
"""A grant by id and the session tokens minted from it, a user's unbound flows, an agent's
sessions by user."""
VAULT_TABLE = TableSchema(
    partition_key="pk", sort_key="sk", indexes=(GSI1, GSI2), stream_view="NEW_AND_OLD_IMAGES"
)
"""Its stream feeds the lifecycle events (flow 9, `vault.lifecycle`): every committed write,
with the item before and after."""
REPLAY_TABLE = TableSchema(partition_key="pk")
"""Proof `jti`s only."""


def create_tables(dynamodb: Any, table: str, replay_table: str) -> None:
    """Create both tables, as defined here, with a DynamoDB client (moto in local mode/tests)."""
    for name, schema in ((table, VAULT_TABLE), (replay_table, REPLAY_TABLE)):
        definition = schema.definition()
        ttl = definition.pop("TimeToLiveSpecification")
        if "StreamSpecification" in definition:  # CreateTable's words add the switch
            definition["StreamSpecification"] = {
                "StreamEnabled": True,
                **definition["StreamSpecification"],
            }
        dynamodb.create_table(TableName=name, **definition)
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


# --- item kinds ---------------------------------------------------------------------------------

R = TypeVar("R")


@dataclass
class TaskSession:
    """A session's entry in its task's partition: the reaper reads it strongly consistently.
    While `expires_at` is set the entry is in gsi1 by expiry (`LIVE#<shard>`): the sweep finds
    the sessions that expired without being ended (`vault.revocation.sweep_expired_sessions`)."""

    task_id: str
    session_id: str
    keep_until: int
    expires_at: int | None = None
    """The session's expiry as its entry was indexed (None: not indexed; entries stored before
    the sweep existed, and those the sweep is done with)."""


LIVE_SHARDS = 8
"""gsi1 partitions the sweep's index is spread over (`LIVE#0`..`LIVE#7`): each session start
writes one, so no single index partition takes every start."""


def live_shard(session_id: str) -> int:
    """The sweep index's shard of a session (stable: a hash of its id)."""
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:2], "big") % LIVE_SHARDS


@dataclass
class TaskStopped:
    """A task recorded as stopped: no session of it starts any more."""

    task_id: str
    stopped_at: int
    keep_until: int


@dataclass
class SessionChild:
    """A delegation's entry in its parent's partition: ending the parent reads it strongly
    consistently and ends the child (`session_id`, once claimed)."""

    parent_session_id: str
    delegation_id: str
    agent: str
    keep_until: int
    session_id: str | None = None


@dataclass
class ProofJti:
    """A proof's `jti` seen once (the digest of key thumbprint and jti)."""

    digest: str
    keep_until: int


@dataclass(frozen=True)
class Kind(Generic[R]):
    """How one record type is stored in its table."""

    record: type[R]
    type: str | None
    """The item's `type` attribute (None: not written)."""
    pk: str
    sk: str | None = None
    table: TableSchema = VAULT_TABLE
    indexes: Mapping[Index, tuple[str, str]] = field(default_factory=dict)
    """The record's (pk, sk) patterns in each index."""
    indexed_while: Callable[[R], bool] | None = None
    """Sparse indexes: the index keys are written only while this holds."""
    ttl: tuple[str, int] | None = None
    """The TTL attribute: (field, seconds added)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Attribute names of the fields whose attribute is named otherwise."""
    derived: Mapping[str, str] = field(default_factory=dict)
    """Further attributes written from patterns (never read back)."""
    json: frozenset[str] = frozenset()
    """Fields stored as a JSON string."""
    in_keys_only: frozenset[str] = frozenset()
    """Fields not stored as their own attribute: read back from the key (a `{field}` pattern
    part) or from the TTL."""
    transient: frozenset[str] = frozenset()
    """Fields never stored."""
    omitted_defaults: frozenset[str] = frozenset()
    """Fields not written while they hold their default (items stored before them lack them)."""
    names: Mapping[str, Callable[[Mapping[str, Any]], str]] = field(default_factory=dict)
    """Names the patterns use that are computed from the fields."""


USER_KEY = {"user_key": "{user.key}"}
"""Items naming a user carry the user's opaque key beside `user_iss` and `user_sub`."""

SESSION = Kind(
    Session,
    "session",
    pk="SESSION#{session_id}",
    sk="SESSION",
    # gsi2: an agent's sessions by user, newest last (the admin read API, flow 13)
    indexes={
        GSI1: ("TASK#{task_id}", "SESSION#{session_id}"),
        GSI2: ("SESSIONS#{agent}", "{user.key}#{created_at:012d}#{session_id}"),
    },
    ttl=("expires_at", DAY),
    derived=USER_KEY,
    json=frozenset({"public_jwk", "delegated", "act"}),
    transient=frozenset({"lineage"}),
)
TOKEN = Kind(
    SessionToken,
    "token",
    pk="SESSION#{session_id}",
    sk="TOKEN#{provider}#{scope_key}",
    indexes={GSI2: ("GRANT#{grant_id}", "TOKEN#{session_id}#{provider}")},
    ttl=("expires_at", DAY),
    attributes={"access_token_ct": "access_token"},  # nosec B105 - attribute names
    derived=USER_KEY,
    names={"scope_key": lambda fields: scope_key(fields["scopes"])},
    omitted_defaults=frozenset({"delivery"}),
)
PENDING_FLOW = Kind(
    PendingFlow,
    "pending_flow",
    pk="STATE#{state_hash}",
    sk="STATE",
    ttl=("expires_at", 0),
    attributes={"verifier_ct": "verifier"},
    derived=USER_KEY,
)
FLOW = Kind(
    Flow,
    "flow",
    pk="FLOW#{flow_id}",
    sk="FLOW",
    # sparse, removed when the flow closes: the sweep finds expired unbound flows (gsi1, by
    # expiry), a revocation by user finds that user's (gsi2)
    indexes={
        GSI1: ("UNBOUND", "{expires_at:012d}#{flow_id}"),
        GSI2: ("UNBOUND#{user.key}", "FLOW#{flow_id}"),
    },
    indexed_while=lambda flow: flow.status == "pending_binding",
    ttl=("expires_at", DAY),
    attributes={"refresh_token_ct": "refresh_token", "access_token_ct": "access_token"},  # nosec B105 - attribute names
    derived=USER_KEY,
)
GRANT = Kind(
    Grant,
    "grant",
    pk="USER#{user.key}",
    sk="GRANT#{agent}#{provider}",
    indexes={
        GSI1: ("AGENT#{agent}", "GRANT#{provider}#{user.key}"),
        GSI2: ("GRANT#{grant_id}", "GRANT"),
    },
    attributes={"refresh_token_ct": "refresh_token"},  # nosec B105 - attribute names
    derived=USER_KEY,
    transient=frozenset({"lease_abandoned"}),
    omitted_defaults=frozenset({"live_tokens"}),
)
MACHINE_TOKEN = Kind(
    MachineToken,
    "machine_token",
    pk="MACHINE#{agent}#{provider}",
    sk="TOKEN#{scope_key}",
    ttl=("expires_at", DAY),
    attributes={"access_token_ct": "access_token"},  # nosec B105 - attribute names
    names={"scope_key": lambda fields: scope_key(fields["scopes"])},
)
TASK_SESSION = Kind(
    TaskSession,
    "task_session",
    pk="TASK#{task_id}",
    sk="SESSION#{session_id}",
    # sparse: the sweep's index of sessions by expiry, removed once the sweep is done with it
    indexes={GSI1: ("LIVE#{shard}", "{expires_at:012d}#{session_id}")},
    indexed_while=lambda entry: entry.expires_at is not None,
    ttl=("keep_until", 0),
    in_keys_only=frozenset({"task_id", "keep_until"}),
    names={"shard": lambda fields: str(live_shard(fields["session_id"]))},
)
TASK_STOPPED = Kind(
    TaskStopped,
    "task_stopped",
    pk="TASK#{task_id}",
    sk="STOPPED",
    ttl=("keep_until", 0),
    in_keys_only=frozenset({"keep_until"}),
)
DELEGATION = Kind(
    Delegation,
    "delegation",
    pk="DELEGATION#{delegation_id}",
    sk="DELEGATION",
    ttl=("expires_at", DAY),
    derived=USER_KEY,
    json=frozenset({"providers"}),
)
SESSION_CHILD = Kind(
    SessionChild,
    "session_child",
    pk="CHILDREN#{parent_session_id}",
    sk="DELEGATION#{delegation_id}",
    ttl=("keep_until", 0),
    in_keys_only=frozenset({"parent_session_id", "delegation_id", "keep_until"}),
)
PROOF_JTI = Kind(
    ProofJti,
    None,
    pk="{digest}",
    table=REPLAY_TABLE,
    ttl=("keep_until", 0),
    in_keys_only=frozenset({"digest", "keep_until"}),
)
KINDS: tuple[Kind[Any], ...] = (
    SESSION,
    TOKEN,
    PENDING_FLOW,
    FLOW,
    GRANT,
    MACHINE_TOKEN,
    TASK_SESSION,
    TASK_STOPPED,
    DELEGATION,
    SESSION_CHILD,
    PROOF_JTI,
)
