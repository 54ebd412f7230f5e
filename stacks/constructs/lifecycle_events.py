"""Flow 9's lifecycle events: the vault table's stream → the events function → the vault's bus.

The vault's own bus, not the account's default one: rules on it see the vault's events only
(and their archive or replay, if an operator adds one, holds nothing else), its name and
resource policy are the stack's, and the events function may put events on it and on no other
bus (docs/events.md, "Where they are published").
"""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.constructs.vault_function import VaultFunction
from stacks.constructs.vault_key import VaultKey
from vault.lifecycle import STREAM_FILTERS

BATCH_SIZE = 100
RETRY_ATTEMPTS = 10
MAX_RECORD_AGE = Duration.hours(6)
"""A record still unpublished after this (EventBridge down for hours) is set aside with its batch
on the queue; the stream keeps records 24 hours, so an operator has 18 hours to replay them."""


class LifecycleEvents(Construct):
    """The events function, its stream mapping (filtered, retried, bisected, set aside on the
    encrypted on-failure queue), the bus, and their alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        table: dynamodb.Table,
        key: VaultKey,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"agent-vault-{environment}")
        self.undelivered = sqs.Queue(
            self,
            "Undelivered",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.events = VaultFunction(
            self,
            "Events",
            handler="vault.handlers.events.handler",
            description="publishes grant, flow and session lifecycle events from the table's "
            "stream",
            code=code,
            environment={"EVENT_BUS_NAME": self.bus.event_bus_name},
            log_retention=log_retention,
            removal_policy=removal_policy,
            timeout=Duration.seconds(30),
            memory_size=256,
        )
        role = self.events.role
        assert table.table_stream_arn is not None  # the schema gives the vault table a stream
        # What Lambda's poller calls with the function's role: the stream's records (decrypted
        # by DynamoDB with the vault key), and nothing of the table's items.
        iam.Grant.add_to_principal(
            grantee=role,
            actions=["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
            resource_arns=[table.table_stream_arn],
        )
        iam.Grant.add_to_principal(
            grantee=role, actions=["dynamodb:ListStreams"], resource_arns=["*"]
        )
        key.grant_table_encryption(role, write=False)
        self.bus.grant_put_events_to(role)
        # The mapping by hand: DynamoEventSource would also grant kms:Decrypt on the vault key
        # unconditioned (grantStreamRead), where only DynamoDB's use of it is needed.
        self.mapping = lambda_.EventSourceMapping(
            self,
            "Mapping",
            target=self.events.function,
            event_source_arn=table.table_stream_arn,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=BATCH_SIZE,
            max_batching_window=Duration.seconds(1),
            bisect_batch_on_error=True,
            retry_attempts=RETRY_ATTEMPTS,
            max_record_age=MAX_RECORD_AGE,
            report_batch_item_failures=True,
            parallelization_factor=1,
            on_failure=sources.SqsDlq(self.undelivered),
            filters=[{"pattern": json.dumps(f)} for f in STREAM_FILTERS],
        )
        # Lambda checks the role's stream permissions when the mapping is created
        self.mapping.node.add_dependency(role)

    def alarm_into(self, topic: sns.ITopic, period: Duration) -> list[cloudwatch.Alarm]:
        """Errors of the function, set-aside batches, and a stream read falling behind."""
        made = []
        for construct_id, metric, threshold, description in (
            (
                "EventsErrors",
                self.events.function.metric_errors(period=period, statistic="Sum"),
                1,
                "The Events function raised errors",
            ),
            (
                "EventsThrottles",
                self.events.function.metric_throttles(period=period, statistic="Sum"),
                1,
                "The Events function was throttled",
            ),
            (
                "UndeliveredEvents",
                self.undelivered.metric_approximate_number_of_messages_visible(
                    period=period, statistic="Maximum"
                ),
                1,
                "Lifecycle events could not be published: replay the set-aside stream records"
                " (docs/events.md) within 24 hours",
            ),
            (
                "EventsIteratorAge",
                self.events.function.metric("IteratorAge", period=period, statistic="Maximum"),
                15 * 60 * 1000,
                "Lifecycle events are published more than 15 minutes late",
            ),
        ):
            alarm = cloudwatch.Alarm(
                self,
                construct_id,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            alarm.add_alarm_action(actions.SnsAction(topic))
            made.append(alarm)
        return made
