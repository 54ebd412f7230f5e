"""Lifecycle events under test: the vault table's moto stream through the real events handler
(as Lambda's event source mapping would deliver it) onto a moto EventBridge bus, whose rule
delivers every `agent-vault` event to an SQS queue the test reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from moto.events.models import EventPattern

from agent_vault_local.streams import StreamPump, streams_endpoint
from tests.support.aws import REGION
from tests.support.harness import TABLE, Vault
from vault.handlers import events as events_handler
from vault.lifecycle import SOURCE, STREAM_FILTERS, Publisher, events_of
from vault.store.changes import change_of

BUS = "agent-vault-test-events"
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "events"


def schema_of(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


def validate(event: dict[str, Any]) -> None:
    """The delivered event's `detail` against docs/events/<detail-type>.schema.json."""
    assert event["source"] == SOURCE
    jsonschema.validate(event["detail"], schema_of(event["detail-type"]))


FILTERS = [EventPattern.load(json.dumps(f)) for f in STREAM_FILTERS]


def filtered_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The events handler behind the stack's filters: every record that makes an event must
    pass one (a record the filters drop would be an event lost), and only those that pass
    reach the handler, as Lambda's event filtering does."""
    passed = []
    for record in event["Records"]:
        matches = any(f.matches_event(record) for f in FILTERS)
        if events_of(change_of(record)):
            assert matches, f"the stream filters drop a {record['eventName']} that makes events"
        if matches:
            passed.append(record)
    if not passed:
        return {"batchItemFailures": []}
    answer: dict[str, Any] = events_handler.handler({"Records": passed}, context)
    return answer


@dataclass
class Lifecycle:
    vault: Vault
    pump: StreamPump
    delivered_url: str
    failures_url: str

    def _receive(self, url: str) -> list[dict[str, Any]]:
        sqs = self.vault.session.client("sqs")
        found: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return found

    def events(self) -> list[dict[str, Any]]:
        """Deliver the stream's new records; every event the bus delivered since last asked,
        each validated against its documented schema."""
        self.pump.drain()
        delivered = self._receive(self.delivered_url)
        for event in delivered:
            validate(event)
        return delivered

    def names(self) -> list[str]:
        return [e["detail-type"] for e in self.events()]

    def set_aside(self) -> list[dict[str, Any]]:
        """What the on-failure queue received."""
        return self._receive(self.failures_url)


def lifecycle(vault: Vault, *, bus: str = BUS, max_attempts: int = 3) -> Lifecycle:
    """The stack's wiring in moto: the bus, a rule for every vault event, the mapping's pump."""
    session = vault.session
    events, sqs = session.client("events"), session.client("sqs")
    events.create_event_bus(Name=BUS)
    delivered = sqs.create_queue(QueueName="lifecycle-delivered")["QueueUrl"]
    failures = sqs.create_queue(QueueName="lifecycle-failures")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=delivered, AttributeNames=["QueueArn"])
    events.put_rule(Name="all", EventBusName=BUS, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(
        Rule="all",
        EventBusName=BUS,
        Targets=[{"Id": "queue", "Arn": arn["Attributes"]["QueueArn"]}],
    )
    events_handler.use_publisher(Publisher(events, bus))
    pump = StreamPump(
        dynamodb=session.client("dynamodb"),
        streams=session.client("dynamodbstreams", endpoint_url=streams_endpoint(REGION)),
        table=TABLE,
        handler=filtered_handler,
        max_attempts=max_attempts,
        sqs=sqs,
        failure_queue_url=failures,
    )
    return Lifecycle(vault, pump, delivered, failures)
