"""Powertools Logger and Metrics shared by every handler and the audit trail.

No tracer, on purpose (SECURITY.md row 47): Powertools' Tracer records a handler's whole
response as trace metadata (for `POST .../tokens`, the access token) and imports the X-Ray SDK
at every cold start. The functions keep Lambda's active tracing, which records each invocation's
service segments (timing, cold start, errors by status) without any code of ours: nothing the
handlers hold can reach a trace.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "agent-vault"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="AgentVault", service=SERVICE)
