"""The DynamoDB client as the repositories use it: plain expression values, failures mapped.

Expression attribute values are given as Python values and serialized here (as boto3's resource
API does). A conditional write that lost (alone or in a transaction) raises `Conflict`; any other
AWS failure `StorageUnavailable` (503, retry hint), so a throttled or failing table fails closed
and never loses what is stored.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vault.errors import StorageUnavailable
from vault.store.mapper import Item, attribute_values


class Conflict(Exception):
    """A conditional write lost: the item was not in the state the write required. `item`: the
    item as it is, when the write asked for it (`ReturnValuesOnConditionCheckFailure=ALL_OLD`;
    None if there is no such item or it was not asked for)."""

    def __init__(self, operation: str, item: Item | None = None) -> None:
        super().__init__(operation)
        self.item = item


class Dynamo:
    """One DynamoDB client, shared by the repositories."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        _serialize_values(kwargs)
        try:
            result: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                item = typing.cast("Item | None", exc.response.get("Item"))
                raise Conflict(operation, item) from exc
            if code == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    raise Conflict(operation) from exc
            raise StorageUnavailable("the vault's storage is unavailable; retry shortly") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the vault's storage is unavailable; retry shortly") from exc

    def get(self, table: str, key: Item) -> Item | None:
        """A strongly consistent read of one item."""
        item: Item | None = self.call(
            "get_item", TableName=table, Key=key, ConsistentRead=True
        ).get("Item")
        return item

    def query(self, table: str, **kwargs: Any) -> Iterator[Item]:
        """Every page of a query."""
        kwargs.setdefault("TableName", table)
        while True:
            page = self.call("query", **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def transact(self, *items: dict[str, Any]) -> None:
        """One transaction of writes and condition checks (all or nothing)."""
        for item in items:
            for request in item.values():
                _serialize_values(request)
        self.call("transact_write_items", TransactItems=list(items))


def _serialize_values(request: dict[str, Any]) -> None:
    if "ExpressionAttributeValues" in request:
        request["ExpressionAttributeValues"] = attribute_values(
            request["ExpressionAttributeValues"]
        )
