"""The agents' VPC: two AZs, flow logs, and the tasks' way out (config `agent_egress`)."""

from __future__ import annotations

from typing import Literal

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

NAT_GATEWAYS = 1
"""With `agent_egress: "nat_gateway"`: one NAT gateway rather than one per AZ keeps the fixed
cost down; a production fleet that must survive an AZ outage raises it to 2."""


class AgentNetwork(Construct):
    """Where the agents' tasks run and how they leave.

    Agents call the vault's public execute-api endpoint (or its function URLs) *and* the
    providers' APIs on the internet (a calendar, a mail service...), so they need internet
    egress: VPC endpoints alone cannot reach Google, and an HTTP API has no private endpoint.
    `nat_gateway` (the default): the tasks run in private subnets and leave through one NAT
    gateway. `public_ip`: the VPC has public subnets only and no NAT gateway; each task gets a
    public IPv4 address of its own (its security group still admits nothing inbound but the
    load balancer), at $3.65 a month per running task instead of the gateway's $36.50.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        egress: Literal["nat_gateway", "public_ip"],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.public_ip = egress == "public_ip"
        subnets = [
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
        ]
        if not self.public_ip:
            subnets.append(
                ec2.SubnetConfiguration(
                    name="agents", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                )
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0 if self.public_ip else NAT_GATEWAYS,
            subnet_configuration=subnets,
        )
        self.task_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PUBLIC
            if self.public_ip
            else ec2.SubnetType.PRIVATE_WITH_EGRESS
        )
        """Where the agents' tasks run."""
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=log_retention, removal_policy=removal_policy
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
