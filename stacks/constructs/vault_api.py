"""The vault's HTTP API: IAM (SigV4) on every route but the OAuth callback (docs/api.md)."""

from __future__ import annotations

import json

import jsii
from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from vault.config import HTTP_METHODS
from vault.routes import ROUTES

Route = tuple[str, str]


def _routes(function: str) -> tuple[Route, ...]:
    """(method, path) of one function's routes, from the one route table (vault.routes)."""
    return tuple((r.method, r.path) for r in ROUTES if r.function == function)


AGENT_ROUTES: tuple[Route, ...] = _routes("agent-api")
PROXY_ROUTES: tuple[Route, ...] = _routes("proxy-api")
"""The egress proxy's (`ANY`, every method): agents call it too."""
ADMIN_ROUTES: tuple[Route, ...] = _routes("admin-api")
CALLBACK_ROUTES: tuple[Route, ...] = _routes("callback")
CALLBACK_PATH = "/v1/oauth/callback"
"""The callbacks' base: each provider's own redirect URI is CALLBACK_PATH/{provider}; the bare
path is the legacy shared one, accepted only for providers that send `iss` (docs/api.md)."""
assert ("GET", CALLBACK_PATH) in CALLBACK_ROUTES

THROTTLE_RATE_LIMIT = 100
"""Requests per second across the stage (every route), before API Gateway answers 429."""
THROTTLE_BURST_LIMIT = 200
PUBLIC_THROTTLE_RATE_LIMIT = 10
"""Requests per second on each public route: anyone on the internet can call it, so it gets a
throttle of its own, well under the stage's, and cannot use up the agents' share. A user's
browser calls it once per consent."""
PUBLIC_THROTTLE_BURST_LIMIT = 20

# What an access log line holds: who called which route with what outcome. Never the query string
# (the callback's carries `code` and `state`), never a header or a body.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "requestTime": "$context.requestTimeEpoch",
        "routeKey": "$context.routeKey",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "latencyMs": "$context.responseLatency",
        "integrationLatencyMs": "$context.integrationLatency",
        "integrationError": "$context.integrationErrorMessage",
        "authorizerError": "$context.authorizer.error",
        "sourceIp": "$context.identity.sourceIp",
        "caller": "$context.identity.userArn",
    }
)


ACCESS_LOG_CLASS = logs.LogGroupClass.INFREQUENT_ACCESS
"""The access log is read when something is investigated (Logs Insights queries), never
filtered into metrics or streamed: the Infrequent Access class ingests at half the Standard
price (docs/cost.md)."""


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogs:
    """Access logs of the stage: ACCESS_LOG_FORMAT lines into a log group."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._log_group = log_group

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return apigwv2.LogGroupLogDestination(self._log_group)

    @property
    def format(self) -> apigw.AccessLogFormat:
        return apigw.AccessLogFormat.custom(ACCESS_LOG_FORMAT)


def iam_path(path: str) -> str:
    """`/v1/sessions/{session_id}/tokens` → `/v1/sessions/*/tokens` (an execute-api ARN path)."""
    return "/".join("*" if part.startswith("{") else part for part in path.split("/"))


class VaultHttpApi(Construct):
    """An HTTP API whose routes are added once their functions exist.

    The functions need the API's endpoint (for CALLBACK_URL) and the routes need the functions,
    so the API is made first and routed afterwards. IAM is the default authorizer: a route is
    public only if it says so (the callbacks alone).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.api = apigwv2.HttpApi(
            self,
            "Api",
            api_name=f"agent-vault-{environment}",
            description="Agent Vault: sessions, consent, tokens, revocation",
            default_authorizer=authorizers.HttpIamAuthorizer(),
            create_default_stage=False,
        )
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=log_retention,
            removal_policy=removal_policy,
            log_group_class=ACCESS_LOG_CLASS,
        )
        self.stage = apigwv2.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=THROTTLE_RATE_LIMIT, burst_limit=THROTTLE_BURST_LIMIT
            ),
            access_log_settings=_AccessLogs(self.access_logs),
        )
        self._public_route_settings: dict[str, dict[str, int]] = {}
        self.public_routes: dict[str, apigwv2.HttpRoute] = {}
        """Route key -> route, of every route without IAM (each has its own throttle)."""

    @property
    def url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self.api.api_endpoint

    @property
    def callback_url(self) -> str:
        """The callbacks' base URL: register ``{callback_url}/{provider}`` at each provider."""
        return f"{self.api.api_endpoint}{CALLBACK_PATH}"

    def _route(
        self,
        routes: tuple[Route, ...],
        function: lambda_.IFunction,
        name: str,
        *,
        public: bool = False,
    ) -> None:
        integration = integrations.HttpLambdaIntegration(f"{name}Integration", function)
        for method, path in routes:
            added = self.api.add_routes(
                path=path,
                methods=[apigwv2.HttpMethod(method)],
                integration=integration,
                authorizer=apigwv2.HttpNoneAuthorizer() if public else None,
            )
            if public:
                self._throttle_public(f"{method} {path}", added)

    def _throttle_public(self, route_key: str, routes: list[apigwv2.HttpRoute]) -> None:
        """A route-level throttle on the stage (RouteSettings): only for routes that exist, so
        the stage is created after them."""
        self._public_route_settings[route_key] = {
            "ThrottlingRateLimit": PUBLIC_THROTTLE_RATE_LIMIT,
            "ThrottlingBurstLimit": PUBLIC_THROTTLE_BURST_LIMIT,
        }
        stage = self.stage.node.default_child
        assert isinstance(stage, apigwv2.CfnStage)
        stage.add_property_override("RouteSettings", dict(self._public_route_settings))
        for route in routes:
            self.stage.node.add_dependency(route)
            self.public_routes[route_key] = route

    def route_agent_api(self, function: lambda_.IFunction) -> None:
        self._route(AGENT_ROUTES, function, "AgentApi")

    def route_proxy_api(self, function: lambda_.IFunction) -> None:
        self._route(PROXY_ROUTES, function, "ProxyApi")

    def route_admin_api(self, function: lambda_.IFunction) -> None:
        self._route(ADMIN_ROUTES, function, "AdminApi")

    def route_callback(self, function: lambda_.IFunction) -> None:
        self._route(CALLBACK_ROUTES, function, "Callback", public=True)


def agent_invocations() -> tuple[Route, ...]:
    """(method, path) an agent may invoke: the agent routes, and the proxy's with each method
    it forwards (an `ANY` route's requests carry their own method in the execute-api ARN)."""
    proxied = tuple((m, path) for _, path in PROXY_ROUTES for m in HTTP_METHODS)
    return (*AGENT_ROUTES, *proxied)


def agent_route_arns(api_id: str) -> list[str]:
    """execute-api ARNs of the agent routes (the proxy's included) of API `api_id` (any stage),
    and of nothing else."""
    return [
        f"arn:{Aws.PARTITION}:execute-api:{Aws.REGION}:{Aws.ACCOUNT_ID}:{api_id}/*/{method}"
        f"{iam_path(path)}"
        for method, path in agent_invocations()
    ]


def grant_invoke_agent_routes(grantee: iam.IGrantable, *, api_id: str) -> iam.Grant:
    """Let an agent's role call the agent routes; never the admin or any other route."""
    return iam.Grant.add_to_principal(
        grantee=grantee, actions=["execute-api:Invoke"], resource_arns=agent_route_arns(api_id)
    )
