"""The session reaper: an ECS task stopped, so every session of that task ends now.

Triggered by EventBridge (`aws.ecs` / `ECS Task State Change` / `lastStatus: STOPPED`). Ending a
task's sessions is idempotent by construction (`revocation.end_task_sessions`): the stop record is
a conditional put that keeps the first, a session already ended with no token left is skipped,
so a replayed or duplicated event (EventBridge delivers at least once) ends nothing more, revokes
nothing upstream, and records one `task.stopped` event with `count` 0. No idempotency layer (no
record per event, no extra DynamoDB writes, none of its import time at cold start). A malformed
event is logged and dropped, never retried into the dead-letter queue.

The same function runs the sweep of unbound flows on an EventBridge schedule (`aws.events` /
`Scheduled Event`): consents nobody bound before they expired are closed and their tokens
revoked upstream.
"""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vault.audit import decision
from vault.observability import lambda_handler, logger
from vault.revocation import end_task_sessions
from vault.runtime import services

TASK_ARN = re.compile(
    r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/(?:[\w-]+/)?(?P<id>[\w-]{1,64})$"
)


class _Detail(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)
    taskArn: str = Field(max_length=512)
    lastStatus: str = Field(max_length=32)


class TaskStateChange(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)
    id: str = Field(min_length=1, max_length=128)
    source: str
    detail_type: str = Field(alias="detail-type")
    detail: _Detail


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


@lambda_handler
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
    return reap(event_id=change.id, task_id=match["id"])
