"""Lambda's DynamoDB event source mapping, for local mode and the tests (moto has no Lambda
poller): the vault table's stream, read where the last read ended, through a handler.

What the stack's mapping does (stacks/constructs/lifecycle_events.py), this does the same way
(bisection aside): the mapping's filters (records that pass none never reach the handler),
batches in stream order, the handler's `batchItemFailures` answer retried from the failed
record, up to `max_attempts` attempts; a batch still failing is described on the on-failure
queue (the shape Lambda sends: the stream, the shard, the batch's first and last sequence
numbers) and passed over.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from moto.events.models import EventPattern
from moto.events.utils import EventMessageType

from agent_vault_local.events import LambdaContext

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def streams_endpoint(region: str) -> str:
    """moto's DynamoDB Streams endpoint in-process (botocore would pick the account-based
    `<account>.streams-ddb.<region>` host, which moto does not serve)."""
    return f"https://streams.dynamodb.{region}.amazonaws.com"


def _json_value(value: Any) -> Any:
    """JSON as Lambda writes it: binary attribute values in base64, times in epoch seconds."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    raise TypeError(f"no JSON form for {type(value).__name__}")


def _lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A `get_records` record as Lambda's event carries it (JSON: binary values in base64)."""
    event: dict[str, Any] = json.loads(json.dumps(record, default=_json_value))
    event["eventSourceARN"] = stream_arn
    return event


@dataclass
class StreamPump:
    """Reads the table's stream from its beginning; `drain()` delivers what is new."""

    dynamodb: Any
    streams: Any
    table: str
    handler: Handler
    batch_size: int = 100
    max_attempts: int = 3
    sqs: Any = None
    failure_queue_url: str | None = None
    filters: tuple[dict[str, Any], ...] = ()
    """Lambda's event filtering (EventBridge pattern syntax); none: every record passes."""
    _after: dict[str, str] = field(default_factory=dict)
    """Per shard: the last sequence number delivered (or passed over)."""
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    """The failure descriptions sent to the on-failure queue."""
    _stream: tuple[str, list[str]] | None = None

    def _shards(self) -> tuple[str, list[str]]:
        """The stream's ARN and shards, read once (a table's stream here never splits)."""
        if self._stream is None:
            table = self.dynamodb.describe_table(TableName=self.table)["Table"]
            arn = str(table["LatestStreamArn"])
            shards = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
            self._stream = (arn, [str(s["ShardId"]) for s in shards])
        return self._stream

    @property
    def stream_arn(self) -> str:
        return self._shards()[0]

    def _records(self, arn: str, shard: str) -> list[dict[str, Any]]:
        # A fresh iterator each time, from the last position: moto's iterators hold the shard
        # object they were made on, which a rolled-back transaction replaces (with the record
        # DynamoDB never wrote left in the old one), so one kept across polls could see it.
        after = self._after.get(shard)
        if after is None:
            where: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            where = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        iterator = self.streams.get_shard_iterator(StreamArn=arn, ShardId=shard, **where)[
            "ShardIterator"
        ]
        answer = self.streams.get_records(ShardIterator=iterator, Limit=self.batch_size)
        records: list[dict[str, Any]] = answer["Records"]
        return records

    def drain(self) -> int:
        """Deliver every record written since the last drain; returns how many."""
        arn, shards = self._shards()
        delivered = 0
        for shard in shards:
            while batch := self._records(arn, shard):
                delivered += self._deliver(arn, shard, batch)
        return delivered

    def _passes(self, record: dict[str, Any]) -> bool:
        if not self.filters:
            return True
        event = cast("EventMessageType", record)
        return any(EventPattern.load(json.dumps(f)).matches_event(event) for f in self.filters)

    def _deliver(self, arn: str, shard: str, batch: list[dict[str, Any]]) -> int:
        records = [r for r in (_lambda_record(r, arn) for r in batch) if self._passes(r)]
        if not records:  # filtered out: no invocation, the batch counts as processed
            self._after[shard] = batch[-1]["dynamodb"]["SequenceNumber"]
            return len(batch)
        for _ in range(self.max_attempts):
            answer = self.handler({"Records": records}, LambdaContext())
            failures = answer.get("batchItemFailures") or []
            if not failures:
                self._after[shard] = batch[-1]["dynamodb"]["SequenceNumber"]
                return len(batch)
            failed = int(failures[0]["itemIdentifier"])
            done = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) < failed]
            if done:
                self._after[shard] = done[-1]["dynamodb"]["SequenceNumber"]
            records = records[len(done) :]
        self._set_aside(arn, shard, records)
        self._after[shard] = batch[-1]["dynamodb"]["SequenceNumber"]
        return len(batch) - len(records)

    def replay(self, description: dict[str, Any]) -> int:
        """Deliver again the records a failure description names (an operator's replay, while
        the stream still holds them: 24 hours); returns how many were delivered."""
        batch = description["DDBStreamBatchInfo"]
        iterator = self.streams.get_shard_iterator(
            StreamArn=batch["streamArn"],
            ShardId=batch["shardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=batch["startSequenceNumber"],
        )["ShardIterator"]
        last = int(batch["endSequenceNumber"])
        records = [
            r
            for r in self.streams.get_records(ShardIterator=iterator, Limit=self.batch_size)[
                "Records"
            ]
            if int(r["dynamodb"]["SequenceNumber"]) <= last
        ]
        kept = self._after.get(batch["shardId"])
        delivered = self._deliver(batch["streamArn"], batch["shardId"], records)
        if kept is not None:  # a replay does not move where the next drain starts
            self._after[batch["shardId"]] = kept
        return delivered

    def _set_aside(self, arn: str, shard: str, records: list[dict[str, Any]]) -> None:
        description = {
            "requestContext": {
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": self.max_attempts,
            },
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                "batchSize": len(records),
                "streamArn": arn,
            },
        }
        self.set_aside.append(description)
        if self.sqs is not None and self.failure_queue_url is not None:
            self.sqs.send_message(
                QueueUrl=self.failure_queue_url, MessageBody=json.dumps(description)
            )
