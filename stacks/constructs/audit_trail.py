"""CloudTrail for the vault: validated, encrypted log files in a locked-down bucket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.constructs.vault_key import account_key_administration

DataEvents = Literal["writes", "all", "none"]

Selector = cloudtrail.CfnTrail.AdvancedEventSelectorProperty
Field = cloudtrail.CfnTrail.AdvancedFieldSelectorProperty


def data_event_selectors(
    mode: DataEvents, *, table_arn: str, function_arns: Sequence[str]
) -> list[Selector]:
    """CloudTrail advanced event selectors for a data-events mode.

    `none`: management events only (these include every KMS Decrypt, with its encryption
    context). `writes` (the default): plus writes to the vault table: sessions, flows and grants
    made, changed and deleted. `all`: plus reads of the vault table and every invocation of a
    vault function. Never the replay table (a write per request, no secret). Invocation records
    name API Gateway's service principal, not the agent, and at $0.10 per 100,000 each (plus
    their log ingestion) they would cost more per warm retrieval than the rest of the audit
    trail: the vault's own decision events and the API access log already name the caller.
    """
    selectors = [
        Selector(
            name="Management events",
            field_selectors=[Field(field="eventCategory", equal_to=["Management"])],
        )
    ]
    if mode == "none":
        return selectors
    table_fields = [
        Field(field="eventCategory", equal_to=["Data"]),
        Field(field="resources.type", equal_to=["AWS::DynamoDB::Table"]),
        Field(field="resources.ARN", equal_to=[table_arn]),
    ]
    if mode == "writes":
        table_fields.append(Field(field="readOnly", equal_to=["false"]))
    selectors.append(
        Selector(
            name="Vault table writes" if mode == "writes" else "Vault table reads and writes",
            field_selectors=table_fields,
        )
    )
    if mode == "all":
        selectors.append(
            Selector(
                name="Vault function invocations",
                field_selectors=[
                    Field(field="eventCategory", equal_to=["Data"]),
                    Field(field="resources.type", equal_to=["AWS::Lambda::Function"]),
                    Field(field="resources.ARN", equal_to=list(function_arns)),
                ],
            )
        )
    return selectors


class AuditTrail(Construct):
    """A multi-region trail with log file validation, its own KMS key and CloudWatch delivery.

    The trail has a key of its own (not the vault key): its policy lets CloudTrail encrypt and
    the account's auditors decrypt, and nothing the vault runs as gets any right on it; the vault
    key's policy stays free of CloudTrail statements; and the record outlives any change to the
    vault key. Everything here is retained when the stack goes: an audit trail is evidence.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        data_events: DataEvents,
        table_arn: str,
        function_arns: Sequence[str],
        retention_days: int,
        log_retention: logs.RetentionDays,
        deploy_role_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        trail_name = f"agent-vault-{environment}"
        trail_arn = (
            f"arn:{Aws.PARTITION}:cloudtrail:{Aws.REGION}:{Aws.ACCOUNT_ID}:trail/{trail_name}"
        )
        account = iam.AccountRootPrincipal()
        cloudtrail_service = iam.ServicePrincipal("cloudtrail.amazonaws.com")
        trail_context = f"arn:{Aws.PARTITION}:cloudtrail:*:{Aws.ACCOUNT_ID}:trail/*"
        self.key = kms.Key(
            self,
            "Key",
            description=f"Agent Vault ({environment}): CloudTrail log files",
            alias=f"alias/agent-vault-{environment}-audit",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
            policy=iam.PolicyDocument(
                statements=[
                    account_key_administration(),
                    iam.PolicyStatement(
                        sid="CloudTrailEncryptLogs",
                        principals=[cloudtrail_service],
                        actions=["kms:GenerateDataKey*"],
                        resources=["*"],
                        conditions={
                            "StringEquals": {"aws:SourceArn": trail_arn},
                            "StringLike": {
                                "kms:EncryptionContext:aws:cloudtrail:arn": trail_context
                            },
                        },
                    ),
                    iam.PolicyStatement(
                        sid="CloudTrailDescribeKey",
                        principals=[cloudtrail_service],
                        actions=["kms:DescribeKey"],
                        resources=["*"],
                        conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
                    ),
                    iam.PolicyStatement(
                        sid="AuditorsDecryptLogs",
                        principals=[account],
                        actions=["kms:Decrypt", "kms:ReEncryptFrom"],
                        resources=["*"],
                        conditions={
                            "StringEquals": {"kms:CallerAccount": Aws.ACCOUNT_ID},
                            "StringLike": {
                                "kms:EncryptionContext:aws:cloudtrail:arn": trail_context
                            },
                        },
                    ),
                ]
            ),
        )
        lifecycle = [
            s3.LifecycleRule(
                id="retention",
                expiration=Duration.days(retention_days),
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            )
        ]
        # S3 server access logs can only be delivered to an SSE-S3 bucket.
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=lifecycle,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Object Lock: no log file version can be deleted or overwritten before it is
        # `retention_days` old; governance in dev (a principal allowed to bypass it can clean
        # up a test account), compliance in prod (nobody, the root user included).
        retention = Duration.days(retention_days)
        self.bucket = s3.Bucket(
            self,
            "Logs",
            object_lock_enabled=True,
            object_lock_default_retention=(
                s3.ObjectLockRetention.compliance(retention)
                if environment == "prod"
                else s3.ObjectLockRetention.governance(retention)
            ),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="trail-bucket/",
            lifecycle_rules=lifecycle,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.log_group = logs.LogGroup(
            self, "TrailLogs", retention=log_retention, removal_policy=RemovalPolicy.RETAIN
        )
        self.trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=trail_name,
            bucket=self.bucket,
            encryption_key=self.key,
            enable_file_validation=True,
            is_multi_region_trail=True,
            include_global_service_events=True,
            send_to_cloud_watch_logs=True,
            cloud_watch_log_group=self.log_group,
        )
        # The L2 trail has no advanced event selectors: set them on the L1 resource.
        cfn_trail = self.trail.node.default_child
        assert isinstance(cfn_trail, cloudtrail.CfnTrail)
        cfn_trail.advanced_event_selectors = cast(
            list[Any],
            data_event_selectors(data_events, table_arn=table_arn, function_arns=function_arns),
        )
        cfn_trail.add_property_deletion_override("EventSelectors")
        self._protect_log_files(trail_arn, deploy_role_arn)

    def _protect_log_files(self, trail_arn: str, deploy_role_arn: str) -> None:
        """Explicit denies on the trail bucket, and CloudTrail's own statements pinned to this
        trail (`aws:SourceArn`): no other trail may write here (the L2 trail adds them without).

        Nobody deletes a log file or a version, or touches retention or versioning; only the
        deploying role (CloudFormation) may change the lifecycle, the bucket policy or Object
        Lock settings, so a deployment stays possible and every change is a reviewed one.
        """
        everyone = iam.AnyPrincipal()
        objects = self.bucket.arn_for_objects("*")
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyLogFileDeletion",
                effect=iam.Effect.DENY,
                principals=[everyone],
                actions=[
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                    "s3:BypassGovernanceRetention",
                    "s3:PutObjectRetention",
                    "s3:PutObjectLegalHold",
                ],
                resources=[objects],
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyBucketChangesButByDeployment",
                effect=iam.Effect.DENY,
                principals=[everyone],
                actions=[
                    "s3:PutLifecycleConfiguration",
                    "s3:PutBucketPolicy",
                    "s3:DeleteBucketPolicy",
                    "s3:PutBucketObjectLockConfiguration",
                    "s3:PutBucketVersioning",
                    "s3:DeleteBucket",
                ],
                resources=[self.bucket.bucket_arn],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": deploy_role_arn}},
            )
        )
        policy = self.bucket.policy
        assert policy is not None
        stack = Stack.of(self)
        document = stack.resolve(policy.document)
        source = stack.resolve(trail_arn)
        for statement in document["Statement"]:
            if statement.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}:
                statement.setdefault("Condition", {}).setdefault("StringEquals", {})[
                    "aws:SourceArn"
                ] = source
        cfn_policy = policy.node.default_child
        assert isinstance(cfn_policy, s3.CfnBucketPolicy)
        cfn_policy.add_property_override("PolicyDocument", document)
