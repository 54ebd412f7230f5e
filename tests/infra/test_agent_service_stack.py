"""The agent service: its task role reaches the agent routes and nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from stacks.constructs.vault_api import ADMIN_ROUTES, CALLBACK_ROUTES, agent_invocations
from tests.infra.cfn import API_ID, as_list, iam_matches, render
from tests.infra.conftest import Synthesized, by_type

ARN = f"arn:aws:execute-api:eu-west-1:123456789012:{API_ID}/$default"


def _concrete(path: str) -> str:
    return (
        path.replace("{session_id}", "ses_abc")
        .replace("{flow_id}", "flw_abc")
        .replace("{provider}", "calendar")
        .replace("{path+}", "calendar/v3/events")
    )


def _task_role_resources(synthesized: Synthesized) -> list[str]:
    template = synthesized.templates["AgentService"]
    roles = {
        k: v
        for k, v in by_type(template, "AWS::IAM::Role").items()
        if v["Properties"].get("RoleName") == "agent-vault-dev-calendar-agent"
    }
    assert len(roles) == 1
    (role_id,) = roles
    resources: list[str] = []
    for policy in by_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                assert as_list(statement["Action"]) == ["execute-api:Invoke"]
                assert statement["Effect"] == "Allow"
                resources += [str(r) for r in render(as_list(statement["Resource"]))]
    return resources


def test_the_task_role_is_the_configured_agent_role(synthesized: Synthesized) -> None:
    template = synthesized.template("AgentService")
    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "RoleName": "agent-vault-dev-calendar-agent",
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Action": "sts:AssumeRole",
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Condition": {
                            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                            "ArnLike": {"aws:SourceArn": Match.any_value()},
                        },
                    }
                ]
            },
        },
    )


@pytest.mark.parametrize("fixture", ["synthesized", "synthesized_prod"])
def test_row_51_only_tasks_of_the_vaults_cluster_can_be_the_agent(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    synthesized: Synthesized = request.getfixturevalue(fixture)
    environment = synthesized.built.config.environment
    template = synthesized.templates["AgentService"]
    role_name = synthesized.built.config.agents["calendar-agent"].role_name
    (role,) = [
        v
        for v in by_type(template, "AWS::IAM::Role").values()
        if v["Properties"].get("RoleName") == role_name
    ]
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    source = render(statement["Condition"]["ArnLike"]["aws:SourceArn"])
    task = "arn:aws:ecs:eu-west-1:123456789012:task/{}/0123456789abcdef"
    assert iam_matches(source, task.format(f"agent-vault-{environment}"))
    for other in ("default", "other-team", f"agent-vault-{environment}-shadow"):
        assert not iam_matches(source, task.format(other)), (source, other)
    outputs = synthesized.templates["AgentService"]["Outputs"]
    assert outputs["SampleAgentRoleId"]["Value"] == {
        "Fn::GetAtt": [
            next(k for k, v in by_type(template, "AWS::IAM::Role").items() if v is role),
            "RoleId",
        ]
    }


@pytest.mark.parametrize(("method", "path"), agent_invocations())
def test_the_task_role_may_call_every_agent_route(
    synthesized: Synthesized, method: str, path: str
) -> None:
    arn = f"{ARN}/{method}{_concrete(path)}"
    assert any(iam_matches(p, arn) for p in _task_role_resources(synthesized)), arn


@pytest.mark.parametrize(
    ("method", "path"),
    [*ADMIN_ROUTES, *CALLBACK_ROUTES, ("POST", "/v1/unknown"), ("GET", "/v1/revocations")],
)
def test_the_task_role_cannot_call_revocations_or_anything_else(
    synthesized: Synthesized, method: str, path: str
) -> None:
    arn = f"{ARN}/{method}{path}"
    matching = [p for p in _task_role_resources(synthesized) if iam_matches(p, arn)]
    assert matching == [], f"{arn} is allowed by {matching}"


def test_no_task_role_resource_has_a_wildcard_method_or_api(synthesized: Synthesized) -> None:
    for resource in _task_role_resources(synthesized):
        api, stage, method, *path = resource.split(":")[-1].split("/")
        assert api == API_ID and stage == "*"
        assert method in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        assert path[:1] == ["v1"] and "*" not in path[:2], resource


def test_the_container_gets_the_vault_url_and_no_secret(synthesized: Synthesized) -> None:
    tasks = by_type(synthesized.templates["AgentService"], "AWS::ECS::TaskDefinition")
    (task,) = tasks.values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: render(e["Value"]) for e in container["Environment"]}
    assert set(env) == {"VAULT_URL", "PORT", "CALENDAR_PROVIDER", "CALENDAR_SCOPES"}
    assert env["VAULT_URL"] == "<import agent-vault-dev-api-url>"
    # what the sample agent asks for is its own policy in the config, nothing broader
    config = synthesized.built.config
    agent = config.agents[config.sample_agent or next(iter(config.agents))]
    assert env["CALENDAR_SCOPES"].split() == list(agent.providers[env["CALENDAR_PROVIDER"]].scopes)
    assert "Secrets" not in container
    assert container["ReadonlyRootFilesystem"] is True
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_the_cluster_is_named_for_the_reaper_with_container_insights(
    synthesized: Synthesized,
) -> None:
    template = synthesized.template("AgentService")
    template.has_resource_properties(
        "AWS::ECS::Cluster",
        {
            "ClusterName": "agent-vault-dev",
            "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
        },
    )


def test_tasks_run_privately_with_https_egress_only(synthesized: Synthesized) -> None:
    template = synthesized.templates["AgentService"]
    (service,) = by_type(template, "AWS::ECS::Service").values()
    network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    groups = by_type(template, "AWS::EC2::SecurityGroup")
    task_group = next(v for k, v in groups.items() if k.startswith("SampleAgentSecurityGroup"))
    egress = task_group["Properties"]["SecurityGroupEgress"]
    assert [(e["IpProtocol"], e["FromPort"], e["ToPort"]) for e in egress] == [("tcp", 443, 443)]
    assert not by_type(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert len(by_type(template, "AWS::EC2::NatGateway")) == 1
    assert by_type(template, "AWS::EC2::FlowLog")


def test_with_public_ip_egress_tasks_leave_by_their_own_address_and_no_nat_gateway_is_built(
    synthesized_prod: Synthesized,
) -> None:
    template = synthesized_prod.templates["AgentService"]
    (service,) = by_type(template, "AWS::ECS::Service").values()
    network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    assert not by_type(template, "AWS::EC2::NatGateway")
    assert not by_type(template, "AWS::EC2::EIP")
    # the tasks' subnets are the public ones (routed to the internet gateway), the only ones
    subnets = by_type(template, "AWS::EC2::Subnet")
    assert {s["Properties"]["MapPublicIpOnLaunch"] for s in subnets.values()} == {True}
    assert sorted(r["Ref"] for r in network["Subnets"]) == sorted(subnets)
    routes = by_type(template, "AWS::EC2::Route").values()
    assert routes and all("GatewayId" in r["Properties"] for r in routes)
    # nothing comes in but from the load balancer; HTTPS out only, as with the NAT gateway
    groups = by_type(template, "AWS::EC2::SecurityGroup")
    task_group_id = next(k for k in groups if k.startswith("SampleAgentSecurityGroup"))
    egress = groups[task_group_id]["Properties"]["SecurityGroupEgress"]
    assert [(e["IpProtocol"], e["FromPort"], e["ToPort"]) for e in egress] == [("tcp", 443, 443)]
    assert "SecurityGroupIngress" not in groups[task_group_id]["Properties"]
    ingress = [
        r["Properties"]
        for r in by_type(template, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task_group_id, "GroupId"]}
    ]
    assert ingress and all("SourceSecurityGroupId" in r for r in ingress)
    assert all(r["FromPort"] == r["ToPort"] == 8080 for r in ingress)


def test_a_certificate_adds_an_https_load_balancer(synthesized_prod: Synthesized) -> None:
    template = synthesized_prod.template("AgentService")
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 443,
            "Protocol": "HTTPS",
            "Certificates": [
                {"CertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0f2c-example"}
            ],
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "LoadBalancerAttributes": [
                {"Key": "deletion_protection.enabled", "Value": "false"},
                {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                {"Key": "access_logs.s3.enabled", "Value": "true"},
                {"Key": "access_logs.s3.bucket", "Value": {"Ref": _any_bucket(synthesized_prod)}},
                {"Key": "access_logs.s3.prefix", "Value": "agent"},
            ],
        },
    )


def _any_bucket(synthesized: Synthesized) -> Any:
    buckets = by_type(synthesized.templates["AgentService"], "AWS::S3::Bucket")
    (bucket,) = buckets
    return bucket


def test_an_explicit_account_and_region_synthesize_without_lookups(
    synthesized_prod: Synthesized,
) -> None:
    stack = synthesized_prod.built.agent_service
    assert stack.region == "eu-west-1" and stack.account == "123456789012"
    subnets = by_type(synthesized_prod.templates["AgentService"], "AWS::EC2::Subnet")
    zones = {json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets.values()}
    assert len(zones) == 2 and all("Fn::GetAZs" in z for z in zones)
