"""The audit side: a CloudTrail trail with the vault's data events as the config chooses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from stacks.config import VaultConfig, log_retention
from stacks.constructs.audit_trail import AuditTrail
from stacks.constructs.vault_key import deploy_role_arn


class AuditStack(Stack):
    """CloudTrail with log file validation, KMS, a TLS-only versioned bucket, access logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: VaultConfig,
        vault_table_arn: str,
        vault_function_arns: Sequence[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.trail = AuditTrail(
            self,
            "Trail",
            environment=config.environment,
            data_events=config.audit_data_events,
            table_arn=vault_table_arn,
            function_arns=vault_function_arns,
            retention_days=config.audit_retention_days,
            log_retention=log_retention(config),
            deploy_role_arn=deploy_role_arn(self, config.deploy_role_arn),
        )
        CfnOutput(
            self,
            "TrailArn",
            value=self.trail.trail.trail_arn,
            description="CloudTrail trail recording the vault",
        )
        CfnOutput(
            self,
            "TrailBucketName",
            value=self.trail.bucket.bucket_name,
            description="S3 bucket holding the trail's log files",
        )
        CfnOutput(
            self,
            "TrailLogGroupName",
            value=self.trail.log_group.log_group_name,
            description="CloudWatch Logs group receiving the trail",
        )
