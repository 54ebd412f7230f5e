"""A schedule → the admin function's sweep of consents nobody bound (tokens revoked upstream)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

SWEEP_MINUTES = 5
"""How often expired unbound flows are swept: at most this long after a flow expires (default
`flow_ttl_seconds` 600) its tokens are revoked upstream; 8,640 invocations a month."""


class UnboundFlowSweep(Construct):
    """Every few minutes EventBridge invokes the admin function with a `Scheduled Event`: flows
    that expired awaiting binding are closed and their tokens revoked upstream (and failed
    revocations retried). The admin function, not the reaper: it already may open every token
    to revoke it, while the reaper opens session tokens only. Undeliverable invocations land in
    the reaper's dead-letter queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        sweeper: lambda_.IFunction,
        dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Rule",
            description="Agent Vault: revoke the tokens of consents nobody bound in time",
            schedule=events.Schedule.rate(Duration.minutes(SWEEP_MINUTES)),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                sweeper,
                dead_letter_queue=dead_letters,
                retry_attempts=2,
                max_event_age=Duration.minutes(SWEEP_MINUTES),
            )
        )
