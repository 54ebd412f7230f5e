"""One structured audit event per decision, through Powertools Logger.

An event says who (principal, agent, task), for whom (user), what (action, provider, scopes,
session, flow, grant), the outcome and the reason. It never carries token material, codes,
verifiers, secrets or proofs: only identifiers and decisions are accepted here.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from vault.models import UserRef
from vault.observability import logger, metrics

_ALLOWED_EXTRA = {
    "cached",
    "revoked_tokens",
    "ended_sessions",
    "revoked_grants",
    "revoked_flows",
    "granted_scopes",
    "over_granted_scopes",
    "callback_provider",
    "missing_scopes",
    "upstream",
    "status",
    "return_url",
    "count",
    "trigger",
    "route",
    # proxied calls (no query, no header, no body)
    "method",
    "host",
    "path",
    "bytes",
    "latency_ms",
}
_recorded: ContextVar[bool] = ContextVar("audit_recorded", default=False)


def begin_request() -> None:
    """A request starts: no decision of it is recorded yet (see `recorded`)."""
    _recorded.set(False)


def recorded() -> bool:
    """Whether the current request already recorded a decision."""
    return _recorded.get()


def audit(
    action: str,
    outcome: str,
    *,
    reason: str | None = None,
    principal: str | None = None,
    agent: str | None = None,
    user: UserRef | None = None,
    provider: str | None = None,
    scopes: tuple[str, ...] | list[str] | None = None,
    session_id: str | None = None,
    task_id: str | None = None,
    flow_id: str | None = None,
    grant_id: str | None = None,
    **extra: Any,
) -> None:
    """Record one decision. `extra` is limited to a fixed set of non-secret members."""
    unknown = set(extra) - _ALLOWED_EXTRA
    if unknown:
        raise ValueError(f"audit does not take {sorted(unknown)}")
    event: dict[str, Any] = {"action": action, "outcome": outcome}
    for name, value in (
        ("reason", reason),
        ("principal", principal),
        ("agent", agent),
        ("provider", provider),
        ("session_id", session_id),
        ("task_id", task_id),
        ("flow_id", flow_id),
        ("grant_id", grant_id),
    ):
        if value is not None:
            event[name] = value
    if user is not None:
        event["user"] = user.as_dict()
    if scopes is not None:
        event["scopes"] = sorted(scopes)
    event.update({k: v for k, v in extra.items() if v is not None})
    logger.info(f"audit {action} {outcome}", extra={"audit": event})
    _recorded.set(True)
    if outcome != "allowed":
        # Metrics count what is worth an alarm or a capacity plan: refusals, failures, refreshes,
        # revocations. Allowed requests are API Gateway's request count; a metric line per warm
        # retrieval would cost more log ingestion than its DynamoDB read.
        metrics.add_metric(name=f"{action}.{outcome}", unit=MetricUnit.Count, value=1)
