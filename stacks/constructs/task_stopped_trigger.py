"""ECS task STOPPED → the session reaper, with retries and a dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct


class TaskStoppedTrigger(Construct):
    """Every `ECS Task State Change` to STOPPED in the agent cluster invokes the reaper.

    The cluster is named by its ARN, built from its fixed name, so the vault stack does not depend
    on the agent stack. Events EventBridge cannot deliver, and invocations that still fail after
    Lambda's retries, land in one encrypted, TLS-only queue (alarmed).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster_arn: str, reaper: lambda_.IFunction
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.rule = events.Rule(
            self,
            "Rule",
            description="Agent Vault: end the sessions of a stopped agent task",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={"lastStatus": ["STOPPED"], "clusterArn": [cluster_arn]},
            ),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                reaper,
                dead_letter_queue=self.dead_letters,
                retry_attempts=8,
                max_event_age=Duration.hours(2),
            )
        )
        reaper.configure_async_invoke(
            on_failure=destinations.SqsDestination(self.dead_letters),
            retry_attempts=2,
            max_event_age=Duration.hours(2),
        )
