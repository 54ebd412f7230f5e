"""One vault Lambda function with the defaults every vault function shares, in one place."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs.vault_code import ARCHITECTURE, RUNTIME

POWERTOOLS_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "agent-vault",
    "POWERTOOLS_METRICS_NAMESPACE": "AgentVault",
}


class VaultFunction(Construct):
    """Python 3.13 on arm64, JSON logs into its own log group with retention, X-Ray active.

    Active tracing records Lambda's own segments for each invocation; the handlers carry no
    tracer (lambdas/vault/observability.py), so nothing they hold reaches a trace.

    It runs as a role of its own that starts with nothing but writing its logs and traces: every
    other permission is granted in the stack, where a reviewer reads them side by side.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        code: lambda_.Code,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        timeout: Duration,
        memory_size: int = 512,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy
        )
        self.role = iam.Role(
            self,
            "Role",
            description=f"Agent Vault: {description}",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=handler,
            code=code,
            role=self.role,
            memory_size=memory_size,
            timeout=timeout,
            environment={**POWERTOOLS_ENVIRONMENT, **environment},
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
        )
        self.log_group.grant_write(self.role)
