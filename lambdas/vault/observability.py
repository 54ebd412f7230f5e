"""Powertools Logger, Tracer and Metrics shared by every handler and the audit trail."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "agent-vault"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="AgentVault", service=SERVICE)
