"""moto's DynamoDB, kept as fast after a thousand writes as after ten.

To roll back a failed TransactWriteItems, moto first backs up each table it touches with
`copy.deepcopy`, and that copy includes every stream record the table ever had: moto never trims
a stream. A transaction therefore took time in proportion to all the writes before it (within
one fuzz test, 0.03 s at the 20th transaction and 0.11 s at the 80th), in local mode as it runs
and in the test suite (about 40 s of `make test`'s 5 minutes).

A stream record never changes once written, so the backup may share the records: it keeps a list
of its own (the records of a rolled-back transaction are dropped, as before) holding the same
record objects. Nothing else about moto changes; the table, its items and indexes are still
copied. tests/local/test_moto_streams.py shows the rollback intact and the records shared.
"""

from __future__ import annotations

import copy
from typing import Any

from moto.dynamodb.models.table import StreamShard

__all__ = ["share_stream_records"]


def _shallow_records_copy(self: StreamShard, memo: dict[int, Any]) -> StreamShard:
    clone = copy.copy(self)  # moto's attributes as they are; the two below are replaced
    memo[id(self)] = clone
    clone.table = copy.deepcopy(self.table, memo)
    clone.items = list(self.items)
    return clone


def share_stream_records() -> None:
    """Make moto's table backups share stream records (idempotent)."""
    current = StreamShard.__dict__.get("__deepcopy__")
    if current is _shallow_records_copy:
        return
    if current is not None or not {"items", "table"} <= set(StreamShard.__init__.__code__.co_names):
        raise RuntimeError(
            "moto's StreamShard changed (a __deepcopy__ of its own, or no items/table): "
            "review agent_vault_local/moto_streams.py against this moto version"
        )
    StreamShard.__deepcopy__ = _shallow_records_copy  # type: ignore[attr-defined]
