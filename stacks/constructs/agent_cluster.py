"""The ECS cluster the agents run in, under the fixed name the vault's reaper watches."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct


class AgentCluster(Construct):
    """A Fargate cluster with Container Insights."""

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster_name: str, vpc: ec2.IVpc
    ) -> None:
        super().__init__(scope, construct_id)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_name,
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
