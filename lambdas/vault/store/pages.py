"""Read-only pages of items for the admin read API (flow 13): one query of one partition (of the
table or of an index) at a time, resumed from where the last page stopped.

A `Partition` names the query; `Where` is an optional `FilterExpression`. The start key of a
page is checked against its partition before DynamoDB sees it: a key that is not of this
partition is `ForeignStartKey` (the caller's cursor was tampered with or belongs to another
query), never a storage error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vault.store.dynamo import Dynamo
from vault.store.mapper import Item
from vault.store.schema import KEY_TYPE, VAULT_TABLE, Index

MAX_KEY_VALUE = 1024
"""Longest key value a start key may carry (the vault's keys are far shorter)."""


class ForeignStartKey(ValueError):
    """A start key that is not a key of the partition being read."""


@dataclass(frozen=True)
class Partition:
    """One partition to read: of the table (`index` None) or of an index, its sort keys
    beginning with `prefix`."""

    index: Index | None
    value: str
    prefix: str = ""

    @property
    def key_attributes(self) -> tuple[str, str]:
        if self.index is None:
            return VAULT_TABLE.partition_key, VAULT_TABLE.sort_key or ""
        return self.index.pk, self.index.sk

    @property
    def start_key_attributes(self) -> frozenset[str]:
        """The attributes of a `LastEvaluatedKey` of this query (an index's include the
        table's key)."""
        return frozenset((*self.key_attributes, *VAULT_TABLE.key_attributes))


@dataclass(frozen=True)
class Where:
    """A `FilterExpression` with its names and values."""

    expression: str
    names: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)


StartKey = dict[str, str]
"""A page's start (a `LastEvaluatedKey`): every vault key attribute is a string."""


class PageRepository:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self.table = table

    def page(
        self,
        partition: Partition,
        *,
        limit: int,
        start: StartKey | None = None,
        where: Where | None = None,
    ) -> tuple[list[Item], StartKey | None]:
        """At most `limit` items of one page (fewer when `where` filters some out) and where the
        next page starts (None: the partition is done)."""
        pk, sk = partition.key_attributes
        request: dict[str, Any] = {
            "TableName": self.table,
            "Limit": limit,
            "KeyConditionExpression": f"{pk} = :pk",
            "ExpressionAttributeValues": {":pk": partition.value},
        }
        if partition.prefix:
            request["KeyConditionExpression"] += f" AND begins_with({sk}, :prefix)"
            request["ExpressionAttributeValues"][":prefix"] = partition.prefix
        if partition.index is not None:
            request["IndexName"] = partition.index.name
        if where is not None:
            request["FilterExpression"] = where.expression
            if where.names:
                request["ExpressionAttributeNames"] = dict(where.names)
            request["ExpressionAttributeValues"].update(where.values)
        if start is not None:
            check_start_key(partition, start)
            request["ExclusiveStartKey"] = {n: {KEY_TYPE: v} for n, v in start.items()}
        answer = self._db.call("query", **request)
        last = answer.get("LastEvaluatedKey")
        following = {n: v[KEY_TYPE] for n, v in last.items()} if last else None
        return list(answer.get("Items", [])), following


def check_start_key(partition: Partition, start: Mapping[str, Any]) -> None:
    """Raise `ForeignStartKey` unless `start` is a key inside `partition`."""
    if set(start) != partition.start_key_attributes:
        raise ForeignStartKey("the start key does not have this query's key attributes")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_KEY_VALUE for v in start.values()):
        raise ForeignStartKey("the start key's values are not key strings")
    pk, sk = partition.key_attributes
    if start[pk] != partition.value or not start[sk].startswith(partition.prefix):
        raise ForeignStartKey("the start key is outside this query's partition")
