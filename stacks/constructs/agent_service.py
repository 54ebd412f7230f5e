"""The sample agent as a Fargate service, built from agent/Dockerfile (repository root context)."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import REPO_ROOT

CONTAINER_PORT = 8080
DOCKERFILE = "agent/Dockerfile"
CONTAINER_USER = "10001:10001"
"""The non-root uid:gid agent/Dockerfile creates and switches to (`USER`); the task definition
says it again, so the task runs unprivileged whatever the image's last USER line."""
IMAGE_EXCLUDES = [
    ".git",
    ".venv",
    ".venv-*",
    "node_modules",
    "cdk.out",
    "tests",
    "docs",
    "bench",
    "build",
    ".local",
    ".hypothesis",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "**/__pycache__",
]
"""Never sent as build context (agent/.dockerignore-style allow-list at the root does the rest)."""

HEALTH_CHECK = (
    "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen("
    "'http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"
    ".status == 200 else 1)"
)


class AgentService(Construct):
    """One agent task per service, in the network's task subnets (private, or public with a
    public IPv4 address: `AgentNetwork`), as the agent's configured IAM role.

    The task role's name is the agent's `role_name` in the config: the vault maps that role to
    the agent. Egress is HTTPS only. A load balancer exists only when a certificate is given.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: ecs.ICluster,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        public_ip: bool,
        role_name: str,
        cluster_name: str,
        vault_url: str,
        agent_environment: dict[str, str],
        certificate_arn: str | None,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.task_role = iam.Role(
            self,
            "TaskRole",
            role_name=role_name,
            description="Agent Vault sample agent: may call the vault's agent routes only",
            assumed_by=iam.ServicePrincipal(
                "ecs-tasks.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    # Tasks of the vault's cluster only: every task that can be the agent is one
                    # whose stop the reaper sees.
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:"
                        f"{Aws.ACCOUNT_ID}:task/{cluster_name}/*"
                    },
                },
            ),
        )
        task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=256,
            memory_limit_mib=512,
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.X86_64,
            ),
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy
        )
        # No Linux capability at all, and an init process (PID 1) that reaps zombies and
        # forwards signals, so a stop ends the agent cleanly (it ends its vault sessions).
        linux_parameters = ecs.LinuxParameters(self, "LinuxParameters", init_process_enabled=True)
        linux_parameters.drop_capabilities(ecs.Capability.ALL)
        task_definition.add_container(
            "agent",
            image=ecs.ContainerImage.from_asset(
                str(REPO_ROOT),
                file=DOCKERFILE,
                exclude=IMAGE_EXCLUDES,
                platform=ecr_assets.Platform.LINUX_AMD64,
            ),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="agent", log_group=self.log_group),
            environment={"VAULT_URL": vault_url, "PORT": str(CONTAINER_PORT), **agent_environment},
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            readonly_root_filesystem=True,
            user=CONTAINER_USER,
            linux_parameters=linux_parameters,
            health_check=ecs.HealthCheck(
                command=["CMD", "python", "-c", HEALTH_CHECK],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(5),
                start_period=Duration.seconds(15),
            ),
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="Sample agent tasks: HTTPS out (vault, providers, ECR, logs)",
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to the vault, the providers and AWS APIs"
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=task_definition,
            desired_count=1,
            min_healthy_percent=100,
            max_healthy_percent=200,
            assign_public_ip=public_ip,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        self.load_balancer: elbv2.ApplicationLoadBalancer | None = None
        self.load_balancer_logs: s3.Bucket | None = None
        if certificate_arn:
            self._load_balance(vpc, certificate_arn)

    def _load_balance(self, vpc: ec2.IVpc, certificate_arn: str) -> None:
        """An internet-facing HTTPS load balancer (TLS 1.2+), access-logged, to port 8080."""
        self.load_balancer_logs = logs_bucket = s3.Bucket(
            self,
            "LoadBalancerLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only encryption ELB logs support
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(90), noncurrent_version_expiration=Duration.days(30)
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            drop_invalid_header_fields=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
        )
        self.load_balancer.log_access_logs(logs_bucket, prefix="agent")
        listener = self.load_balancer.add_listener(
            "Https",
            port=443,
            open=True,
            certificates=[
                acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
            ],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
        )
        listener.add_targets(
            "Agent",
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[self.service],
            health_check=elbv2.HealthCheck(path="/healthz", healthy_http_codes="200"),
        )
