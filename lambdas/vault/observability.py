"""Powertools Logger and Metrics shared by every handler and the audit trail, and the one
decorator every function's handler wears (`lambda_handler`).

No tracer, on purpose (SECURITY.md row 47): Powertools' Tracer records a handler's whole
response as trace metadata (for `POST .../tokens`, the access token) and imports the X-Ray SDK
at every cold start. The functions keep Lambda's active tracing, which records each invocation's
service segments (timing, cold start, errors by status) without any code of ours: nothing the
handlers hold can reach a trace.

Every log line carries what an operator needs to correlate it and nothing Lambda records
already (docs/audit.md): `level`, `message`, `timestamp` (UTC), `service`, `function_request_id`
(Lambda's request id: the invocation's `platform.report` line, its duration, memory, cold start
and X-Ray trace id) and, behind API Gateway, `correlation_id` (API Gateway's request id: its
access log line). Powertools' `inject_lambda_context` would add the function's name, ARN and
memory size, `cold_start` and the X-Ray trace id to every line (~190 B per line, the log group
and the report line already say them); the code `location` is dropped too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

import vault

SERVICE = "agent-vault"

logger = Logger(service=SERVICE, location=None, xray_trace_id=None, utc=True)
metrics = Metrics(namespace="AgentVault", service=SERVICE)

Handler = TypeVar("Handler", bound=Callable[[Any, Any], Any])


def lambda_handler(handler: Handler) -> Handler:
    """A function's entry: its log lines name this invocation (`function_request_id`, and
    `correlation_id` for an API Gateway request), and the metrics it added are flushed when it
    ends, however it ends (an invocation that added none writes no metric line).

    Applied last in a handler's module, it also ends INIT's pause of the garbage collector
    (`vault.end_init`): the module's imports are done."""
    vault.end_init()

    @functools.wraps(handler)
    def decorate(event: Any, context: Any) -> Any:
        request = event.get("requestContext") if isinstance(event, dict) else None
        logger.append_keys(
            function_request_id=getattr(context, "aws_request_id", None),
            correlation_id=request.get("requestId") if isinstance(request, dict) else None,
        )
        try:
            return handler(event, context)
        finally:
            if metrics.metric_set:
                metrics.flush_metrics()

    return decorate  # type: ignore[return-value]
