"""Committed changes of the vault table, read from its DynamoDB stream (NEW_AND_OLD_IMAGES).

A stream record carries one item's image before and after one committed write (a transaction's
items are one record each; a refused or rolled-back write is no record at all). This module turns
the records of the item kinds lifecycle events are about (grants, sessions, answered flows) into
those records before and after, with the same mapper that wrote them; every other kind (tokens,
leases' items, pending flows, task records...) is no change of interest (None).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from vault.models import Flow, Grant, Session
from vault.store.mapper import FLOWS, GRANTS, SESSIONS, ItemMapper
from vault.store.schema import TYPE_ATTRIBUTE

R = TypeVar("R", Grant, Session, Flow)

_MAPPERS: dict[str, ItemMapper[Any]] = {
    mapper.kind.type: mapper for mapper in (GRANTS, SESSIONS, FLOWS) if mapper.kind.type
}
TTL_PRINCIPAL = "dynamodb.amazonaws.com"
"""The `userIdentity.principalId` of a stream record whose item DynamoDB's TTL deleted."""


@dataclass(frozen=True)
class Change(Generic[R]):
    """One committed write of one grant, session or flow item."""

    change_id: str
    """The stream record's `eventID` (the same on every redelivery of the record)."""
    name: str
    """`INSERT`, `MODIFY` or `REMOVE`."""
    at: int
    """When DynamoDB committed it (the record's approximate creation time, epoch seconds)."""
    by_ttl: bool
    """A `REMOVE` done by DynamoDB's TTL, not by the vault."""
    old: R | None
    new: R | None


def _epoch(value: Any) -> int:
    """A record's `ApproximateCreationDateTime`: a number in Lambda's event, a datetime from
    boto3's `get_records`."""
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    return int(Decimal(str(value)))


def _decoded(value: Any) -> Any:
    """An attribute value of Lambda's JSON event as boto3 has it: binary values (base64 in the
    event) as bytes, in sets, lists and maps too."""
    if not isinstance(value, dict):
        return value
    if "B" in value and isinstance(value["B"], str):
        return {"B": base64.b64decode(value["B"])}
    if "BS" in value:
        return {"BS": [base64.b64decode(v) if isinstance(v, str) else v for v in value["BS"]]}
    if "L" in value:
        return {"L": [_decoded(v) for v in value["L"]]}
    if "M" in value:
        return {"M": {k: _decoded(v) for k, v in value["M"].items()}}
    return value


def _image(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    image = data.get(name)
    return {k: _decoded(v) for k, v in image.items()} if image else None


def change_of(record: Mapping[str, Any]) -> Change[Any] | None:
    """The change a stream record (Lambda's event shape) carries; None for other item kinds."""
    data = record["dynamodb"]
    old, new = _image(data, "OldImage"), _image(data, "NewImage")
    kind = (new or old or {}).get(TYPE_ATTRIBUTE, {}).get("S")
    mapper = _MAPPERS.get(kind) if isinstance(kind, str) else None
    if mapper is None:
        return None
    identity = record.get("userIdentity") or {}
    return Change(
        change_id=str(record["eventID"]),
        name=str(record["eventName"]),
        at=_epoch(data["ApproximateCreationDateTime"]),
        by_ttl=identity.get("principalId") == TTL_PRINCIPAL,
        old=mapper.from_item(old) if old else None,
        new=mapper.from_item(new) if new else None,
    )
