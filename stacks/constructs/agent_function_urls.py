"""The agent API's and the egress proxy's own function URLs (config `agent_endpoint:
"function_url"`): IAM-authorized (SigV4 for the service `lambda`), callable by the configured
agents' roles only, no API Gateway in between (docs/cost.md, "Agent endpoint").

Who may call a function URL is the function's resource-based policy: one statement per agent
role and action, never a public or account-wide principal. Since October 2025 a function URL
call needs both `lambda:InvokeFunctionUrl` and `lambda:InvokeFunction`
(https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html); the `lambda:InvokeFunction`
statement carries `lambda:InvokedViaFunctionUrl`, so the same role cannot invoke the function
directly with an event it wrote itself (the caller's identity in `requestContext.authorizer.iam`
is trusted only because Lambda's URL front end fills it in).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.config import VaultConfig

AGENT_URL_FUNCTIONS = ("AgentApi", "ProxyApi")
"""The functions agents call, each given a URL; the callback and admin API stay on API Gateway."""
URL_ACTIONS = ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction")


def agent_role_arn(config: VaultConfig, agent: str) -> str:
    """The agent's role ARN: `role_arn` as configured, else `role_name` in the vault's account."""
    pinned = config.agents[agent]
    if pinned.role_arn is not None:
        return pinned.role_arn
    return f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/{pinned.name_of_role}"


def allow_url_calls(
    scope: Construct,
    construct_id: str,
    *,
    function_arn: str,
    principal_arn: str,
) -> tuple[lambda_.CfnPermission, lambda_.CfnPermission]:
    """The two resource-policy statements that let one role call one function's IAM URL."""
    invoke_url = lambda_.CfnPermission(
        scope,
        f"{construct_id}InvokeUrl",
        action="lambda:InvokeFunctionUrl",
        function_name=function_arn,
        principal=principal_arn,
        function_url_auth_type="AWS_IAM",
    )
    invoke = lambda_.CfnPermission(
        scope,
        f"{construct_id}Invoke",
        action="lambda:InvokeFunction",
        function_name=function_arn,
        principal=principal_arn,
        invoked_via_function_url=True,
    )
    return invoke_url, invoke


def grant_url_calls(grantee: iam.IGrantable, *, function_arns: list[str]) -> None:
    """The identity-policy side, for a role of this app: call these URLs, only as URLs."""
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["lambda:InvokeFunctionUrl"],
            resources=function_arns,
            conditions={"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}},
        )
    )
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["lambda:InvokeFunction"],
            resources=function_arns,
            conditions={"Bool": {"lambda:InvokedViaFunctionUrl": "true"}},
        )
    )


class AgentFunctionUrls(Construct):
    """An `AWS_IAM` URL on each agent-facing function, callable by the given agents' roles.

    The sample agent's role is created by the agent service stack, after this one: its
    statements are made there (`allow_url_calls`), because Lambda checks a role principal
    when the permission is added."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.Function],
        config: VaultConfig,
        agents: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.urls: dict[str, lambda_.FunctionUrl] = {}
        for name, function in functions.items():
            self.urls[name] = function.add_function_url(
                auth_type=lambda_.FunctionUrlAuthType.AWS_IAM
            )
            for agent in agents:
                allow_url_calls(
                    self,
                    f"{name}{agent.title().replace('-', '')}",
                    function_arn=function.function_arn,
                    principal_arn=agent_role_arn(config, agent),
                )
