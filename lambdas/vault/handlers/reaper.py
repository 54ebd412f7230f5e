"""The session reaper: an ECS task stopped, so every session of that task ends now.

Triggered by EventBridge (`aws.ecs` / `ECS Task State Change` / `lastStatus: STOPPED`). A replayed
event does no second round of work (Powertools idempotency on the event id); a malformed event
is logged and dropped, never retried into the dead-letter queue.

The same function runs the sweep of unbound flows on an EventBridge schedule (`aws.events` /
`Scheduled Event`): consents nobody bound before they expired are closed and their tokens
revoked upstream.
"""

from __future__ import annotations

import os
import re
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vault.audit import decision
from vault.observability import logger, metrics
from vault.revocation import end_task_sessions
from vault.runtime import services

TASK_ARN = re.compile(
    r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/(?:[\w-]+/)?(?P<id>[\w-]{1,64})$"
)

persistence = DynamoDBPersistenceLayer(
    table_name=os.environ.get("TABLE_NAME", "unset"),
    key_attr="pk",
    sort_key_attr="sk",
    expiry_attr="ttl",
)
idempotency = IdempotencyConfig(expires_after_seconds=24 * 3600)


class _Detail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    taskArn: str = Field(max_length=512)
    lastStatus: str = Field(max_length=32)


class TaskStateChange(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    id: str = Field(min_length=1, max_length=128)
    source: str
    detail_type: str = Field(alias="detail-type")
    detail: _Detail


@idempotent_function(
    data_keyword_argument="event_id", persistence_store=persistence, config=idempotency
)
def reap(event_id: str, task_id: str) -> dict[str, Any]:
    with decision("task.stopped", task_id=task_id) as d:
        d.note(trigger=event_id)
        ended, revoked = end_task_sessions(services(), task_id)
        d.note(count=ended, revoked_tokens=revoked)
        d.conclude("reaped")
    return {
        "status": "reaped",
        "task_id": task_id,
        "ended_sessions": ended,
        "revoked_tokens": revoked,
    }


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        change = TaskStateChange.model_validate(event)
    except ValidationError:
        logger.warning("ignored an event that is not an ECS task state change")
        return {"status": "ignored"}
    match = TASK_ARN.match(change.detail.taskArn)
    if (
        change.source != "aws.ecs"
        or change.detail_type != "ECS Task State Change"
        or change.detail.lastStatus != "STOPPED"
        or match is None
    ):
        logger.warning("ignored an event that is not a stopped ECS task")
        return {"status": "ignored"}
    idempotency.register_lambda_context(context)
    return reap(event_id=change.id, task_id=match["id"])
