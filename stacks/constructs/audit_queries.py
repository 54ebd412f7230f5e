"""Saved CloudWatch Logs Insights queries for the common audit questions (issue #15 item 6).

Every vault function logs its audit events (vault.audit: one JSON line per decision, the event
under `audit`) into its own log group; each query runs over all of them. A query that needs a
value (a user's subject) names it `REPLACE_ME`: open it in the console, put the value in, run.
docs/audit.md explains each one; tests/infra/test_audit_queries.py holds their field names to
real audit events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import aws_logs as logs
from constructs import Construct

AUDIT_QUERIES: dict[str, dict[str, Any]] = {
    "tokens-for-user": {
        "fields": [
            "@timestamp",
            "audit.agent",
            "audit.provider",
            "audit.session_id",
            "audit.task_id",
            "audit.user.iss",
            "audit.user.sub",
        ],
        "filter_statements": [
            'audit.action = "token.issue" and audit.outcome = "allowed"',
            'audit.user.sub = "REPLACE_ME"',
        ],
        "sort": "@timestamp desc",
        "limit": 1000,
    },
    "refusals-by-reason": {
        "filter_statements": ['audit.outcome in ["denied", "refused"]'],
        "stats": "count(*) as refusals by audit.action, audit.reason",
        "sort": "refusals desc",
    },
    "refresh-failures-by-provider": {
        "filter_statements": [
            'audit.action = "grant.refresh" and audit.outcome in ["failed", "broken"]'
        ],
        "stats": "count(*) as failures by audit.provider, audit.outcome, audit.reason",
        "sort": "failures desc",
    },
    "proxied-calls-by-status": {
        "filter_statements": ['audit.action = "proxy.call"'],
        "stats": "count(*) as calls, avg(audit.latency_ms) as avg_ms,"
        " max(audit.latency_ms) as max_ms by audit.provider, audit.host, audit.status",
        "sort": "calls desc",
    },
    "revocations": {
        "fields": [
            "@timestamp",
            "audit.action",
            "audit.outcome",
            "audit.reason",
            "audit.principal",
            "audit.agent",
            "audit.provider",
            "audit.grant_id",
        ],
        "filter_statements": ['audit.action in ["revocation", "grant.revoke"]'],
        "sort": "@timestamp desc",
        "limit": 1000,
    },
}
"""Each saved query's name (under `agent-vault-<environment>/`) and its parts (the CDK's
`QueryString` builder's arguments)."""


class AuditQueries(Construct):
    """One `AWS::Logs::QueryDefinition` per audit question, over every vault function's logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        log_groups: Sequence[logs.ILogGroup],
    ) -> None:
        super().__init__(scope, construct_id)
        self.definitions = {
            name: logs.QueryDefinition(
                self,
                name.title().replace("-", ""),
                query_definition_name=f"agent-vault-{environment}/{name}",
                query_string=logs.QueryString(**parts),
                log_groups=list(log_groups),
            )
            for name, parts in AUDIT_QUERIES.items()
        }
