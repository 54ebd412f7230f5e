"""The agents' side: a VPC, the ECS cluster the reaper watches, the sample agent service."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, RemovalPolicy, Stack
from constructs import Construct

from stacks.config import VaultConfig, log_retention
from stacks.constructs.agent_cluster import AgentCluster
from stacks.constructs.agent_function_urls import (
    AGENT_URL_FUNCTIONS,
    allow_url_calls,
    grant_url_calls,
)
from stacks.constructs.agent_network import AgentNetwork
from stacks.constructs.agent_service import AgentService
from stacks.constructs.vault_api import grant_invoke_agent_routes
from stacks.vault_stack import (
    agent_cluster_name,
    api_id_export,
    api_url_export,
    function_arn_export,
    function_url_export,
    sample_agent_name,
)


class AgentServiceStack(Stack):
    """Runs the config's sample agent as a Fargate service that may call only agent routes."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: VaultConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal = RemovalPolicy.RETAIN if config.environment == "prod" else RemovalPolicy.DESTROY
        retention = log_retention(config)
        # The vault stack's exports, by name: deploy it first (the app declares the dependency).
        vault_api_id = Fn.import_value(api_id_export(config.environment))
        vault_url = Fn.import_value(api_url_export(config.environment))
        agent_name = sample_agent_name(config)
        self.agent_name = agent_name
        function_urls = config.agent_endpoint == "function_url"
        agent_environment = sample_agent_environment(config, agent_name)
        if function_urls:
            vault_url = Fn.import_value(function_url_export(config.environment, "AgentApi"))
            agent_environment["AGENT_VAULT_PROXY_URL"] = Fn.import_value(
                function_url_export(config.environment, "ProxyApi")
            )

        self.network = AgentNetwork(
            self,
            "Network",
            egress=config.agent_egress,
            log_retention=retention,
            removal_policy=removal,
        )
        self.cluster = AgentCluster(
            self,
            "Cluster",
            cluster_name=agent_cluster_name(config.environment),
            vpc=self.network.vpc,
        )
        self.agent = AgentService(
            self,
            "SampleAgent",
            cluster=self.cluster.cluster,
            vpc=self.network.vpc,
            subnets=self.network.task_subnets,
            public_ip=self.network.public_ip,
            role_name=config.agents[agent_name].name_of_role,
            cluster_name=agent_cluster_name(config.environment),
            vault_url=vault_url,
            agent_environment=agent_environment,
            certificate_arn=config.certificate_arn,
            log_retention=retention,
            removal_policy=removal,
        )
        if function_urls:
            # the task role calls the vault's function URLs, as URLs only (the vault stack
            # allows the other agents' roles; this role is made here, so its statements too)
            arns = [
                Fn.import_value(function_arn_export(config.environment, name))
                for name in AGENT_URL_FUNCTIONS
            ]
            grant_url_calls(self.agent.task_role, function_arns=arns)
            for name, arn in zip(AGENT_URL_FUNCTIONS, arns, strict=True):
                allow_url_calls(
                    self,
                    f"{name}SampleAgent",
                    function_arn=arn,
                    principal_arn=self.agent.task_role.role_arn,
                )
        else:
            grant_invoke_agent_routes(self.agent.task_role, api_id=vault_api_id)

        CfnOutput(
            self,
            "ClusterName",
            value=self.cluster.cluster.cluster_name,
            description="ECS cluster of the agents (watched by the vault's reaper)",
        )
        CfnOutput(
            self,
            "SampleAgentRoleArn",
            value=self.agent.task_role.role_arn,
            description=f"Task role of the sample agent ({agent_name})",
        )
        CfnOutput(
            self,
            "SampleAgentRoleId",
            value=self.agent.task_role.role_id,
            description=f"Unique id of that role: pin it as agents.{agent_name}.role_id",
        )
        if self.agent.load_balancer is not None:
            CfnOutput(
                self,
                "SampleAgentUrl",
                value=Fn.join("", ["https://", self.agent.load_balancer.load_balancer_dns_name]),
                description="HTTPS endpoint of the sample agent",
            )

    @property
    def availability_zones(self) -> list[str]:
        """Two AZs of the region, resolved by CloudFormation: no context lookup at synth.

        With an explicit account/region the CDK would otherwise look the AZs up with AWS
        credentials, and CI synthesizes offline.
        """
        return [Fn.select(0, Fn.get_azs()), Fn.select(1, Fn.get_azs())]


def sample_agent_environment(config: VaultConfig, agent_name: str) -> dict[str, str]:
    """What the sample agent asks for: its first provider and the scopes its policy allows."""
    providers = config.agents[agent_name].providers
    if not providers:
        return {}
    provider, access = next(iter(providers.items()))
    return {"CALENDAR_PROVIDER": provider, "CALENDAR_SCOPES": " ".join(access.scopes)}
