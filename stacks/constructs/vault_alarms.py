"""Alarms on what should never happen quietly: 5xx, errors, throttles, dead letters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.constructs.vault_key import account_key_administration

PERIOD = Duration.minutes(5)


class VaultAlarms(Construct):
    """Alarms that notify an SNS topic (subscribe to it after deploying; docs/deploy.md).

    The topic has its own small key rather than the vault key: CloudWatch must be allowed to use
    a topic's key, and the key that guards tokens should trust no service beyond the vault's own.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        api: apigwv2.HttpApi,
        functions: Mapping[str, lambda_.IFunction],
        dead_letters: sqs.IQueue,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        account = iam.AccountRootPrincipal()
        key = kms.Key(
            self,
            "TopicKey",
            description=f"Agent Vault ({environment}): alarm notifications",
            alias=f"alias/agent-vault-{environment}-alarms",
            enable_key_rotation=True,
            removal_policy=removal_policy,
            policy=iam.PolicyDocument(
                statements=[
                    account_key_administration(),
                    iam.PolicyStatement(
                        sid="CloudWatchAlarmsPublish",
                        principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                        actions=["kms:Decrypt", "kms:GenerateDataKey"],
                        resources=["*"],
                        conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                    ),
                    iam.PolicyStatement(
                        sid="EventBridgePublish",
                        principals=[iam.ServicePrincipal("events.amazonaws.com")],
                        actions=["kms:Decrypt", "kms:GenerateDataKey"],
                        resources=["*"],
                        conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                    ),
                    iam.PolicyStatement(
                        sid="UseThroughSNS",
                        principals=[account],
                        actions=["kms:Decrypt", "kms:GenerateDataKey"],
                        resources=["*"],
                        conditions={
                            "StringEquals": {
                                "kms:CallerAccount": Aws.ACCOUNT_ID,
                                "kms:ViaService": f"sns.{Aws.REGION}.amazonaws.com",
                            }
                        },
                    ),
                ]
            ),
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=f"Agent Vault {environment} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        action = actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(construct_id: str, metric: cloudwatch.IMetric, description: str) -> None:
            created = cloudwatch.Alarm(
                self,
                construct_id,
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(action)
            self.alarms.append(created)

        alarm(
            "Api5xx",
            api.metric_server_error(period=PERIOD, statistic="Sum"),
            "The vault API answered 5xx (storage, KMS or integration failures)",
        )
        for name, function in functions.items():
            alarm(
                f"{name}Errors",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                f"The {name} function raised errors",
            )
            alarm(
                f"{name}Throttles",
                function.metric_throttles(period=PERIOD, statistic="Sum"),
                f"The {name} function was throttled",
            )
        alarm(
            "DeadLetters",
            dead_letters.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"
            ),
            "A stopped task's sessions could not be reaped (see the dead-letter queue)",
        )

    def alarm_on_foreign_key_use(self, *, key_arn: str, vault_roles: Sequence[iam.IRole]) -> None:
        """Notify the topic of any envelope Decrypt or GenerateDataKey with the vault key (an
        encryption context with a `purpose`: a token or a verifier) by a principal that is not
        one of the vault's roles, allowed or refused (CloudTrail records both).

        KMS calls are read-only management events: EventBridge delivers them only to a rule in
        state ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS, and only while a trail records
        management events in the region (the audit stack's multi-region trail does).
        """
        roles = [role.role_arn for role in vault_roles]
        self.foreign_key_use = events.Rule(
            self,
            "ForeignKeyUse",
            description="Envelope use of the vault key by a principal other than the vault",
            event_pattern=events.EventPattern(
                source=["aws.kms"],
                detail_type=["AWS API Call via CloudTrail"],
                detail={
                    "eventSource": ["kms.amazonaws.com"],
                    "eventName": ["Decrypt", "GenerateDataKey"],
                    "resources": {"ARN": [key_arn]},
                    "requestParameters": {"encryptionContext": {"purpose": [{"exists": True}]}},
                    "$or": [
                        {
                            "userIdentity": {
                                "sessionContext": {
                                    "sessionIssuer": {"arn": [{"anything-but": roles}]}
                                }
                            }
                        },
                        {"userIdentity": {"type": [{"anything-but": ["AssumedRole"]}]}},
                    ],
                },
            ),
        )
        cfn_rule = self.foreign_key_use.node.default_child
        assert isinstance(cfn_rule, events.CfnRule)
        cfn_rule.state = "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
        # The target by hand: the L2 SNS target would also add an unconditioned statement for
        # EventBridge to the topic key's policy (EventBridgePublish above is the conditioned one).
        cfn_rule.targets = [
            events.CfnRule.TargetProperty(id="AlarmTopic", arn=self.topic.topic_arn)
        ]
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="ForeignKeyUseRulePublishes",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"ArnEquals": {"aws:SourceArn": self.foreign_key_use.rule_arn}},
            )
        )
