"""The vault table's DynamoDB stream → grant, flow and session lifecycle events on EventBridge.

Lambda's event source mapping delivers the stream's records in order, a batch at a time. Each
record's events (`vault.lifecycle`) are put on the vault's bus before the next record's; at the
first record whose events EventBridge does not all accept (or that cannot be read), the handler
stops and reports that record's sequence number as the batch's failure, so the mapping retries
from it (records before it are not sent again, the order of events is kept). After the mapping's
retries (or the records' maximum age) the batch's description goes to the on-failure queue
(alarmed), from which an operator re-reads the stream: nothing is dropped silently. The
requests that made the changes never wait for any of this.

Its role reads the stream and puts events on one bus: no item, no key, no secret.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from vault.lifecycle import Publisher, events_of
from vault.observability import lambda_handler, logger, metrics
from vault.store.changes import change_of

EVENTS_CLIENT = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)
_publisher: Publisher | None = None


def publisher() -> Publisher:
    """The container's publisher (built at the first record: `EVENT_BUS_NAME`)."""
    global _publisher
    if _publisher is None:
        _publisher = Publisher(
            boto3.client("events", config=EVENTS_CLIENT), os.environ["EVENT_BUS_NAME"]
        )
    return _publisher


def use_publisher(replacement: Publisher | None) -> None:
    """Local mode and the tests: publish through this one (None: build from the environment)."""
    global _publisher
    _publisher = replacement


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    published = 0
    for record in DynamoDBStreamEvent(event).records:
        try:
            events = events_of(change_of(record.raw_event))
            if events:
                publisher().publish(events)
        except Exception as exc:
            sequence = record.dynamodb.sequence_number if record.dynamodb else None
            # the error's type and the record's position only: an item's values stay out
            logger.warning(
                "lifecycle events not published; the stream is retried from this record",
                extra={"error": type(exc).__name__, "sequence_number": sequence},
            )
            metrics.add_metric(name="lifecycle.publish_failed", unit=MetricUnit.Count, value=1)
            return {"batchItemFailures": [{"itemIdentifier": sequence}]}
        for published_event in events:
            logger.info(
                f"lifecycle {published_event.name}",
                extra={"lifecycle": {"detail_type": published_event.name}},
            )
        published += len(events)
    if published:
        metrics.add_metric(name="lifecycle.published", unit=MetricUnit.Count, value=published)
    return {"batchItemFailures": []}
