"""Build the Agent Vault CDK app: three stacks from one config, with the security gates on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk

from stacks import checkov_skips, nag
from stacks.agent_service_stack import AgentServiceStack
from stacks.audit_stack import AuditStack
from stacks.config import VaultConfig, config_from_context
from stacks.vault_stack import VaultStack


@dataclass(frozen=True)
class AgentVaultApp:
    app: cdk.App
    config: VaultConfig
    vault: VaultStack
    audit: AuditStack
    agent_service: AgentServiceStack
    acknowledgements: tuple[nag.Acknowledgement, ...]
    checkov_skips_written: tuple[checkov_skips.Skip, ...] = ()
    """Every checkov skip, each on its one resource (stacks/checkov_skips.py)."""

    @property
    def stacks(self) -> tuple[cdk.Stack, ...]:
        return (self.vault, self.audit, self.agent_service)


def build_app(
    *,
    context: dict[str, Any] | None = None,
    outdir: str | None = None,
    config: VaultConfig | None = None,
) -> AgentVaultApp:
    """The app, its config (from the context unless given) and its stacks, cdk-nag registered.

    The stacks are environment-agnostic unless the config names an account and region.
    """
    app = cdk.App(context=context, outdir=outdir)
    config = config or config_from_context(app.node.try_get_context)
    env = cdk.Environment(account=config.account, region=config.region)
    prefix = f"agent-vault-{config.environment}"
    vault = VaultStack(
        app,
        "Vault",
        config=config,
        env=env,
        stack_name=f"{prefix}-vault",
        description="Agent Vault: KMS key, tables, functions, HTTP API, secrets",
    )
    audit = AuditStack(
        app,
        "Audit",
        config=config,
        env=env,
        stack_name=f"{prefix}-audit",
        description="Agent Vault: CloudTrail trail, encrypted bucket, data events",
        vault_table_arn=vault.tables.vault.table_arn,
        vault_function_arns=[f.function.function_arn for f in vault.functions.values()],
    )
    agent_service = AgentServiceStack(
        app,
        "AgentService",
        config=config,
        env=env,
        stack_name=f"{prefix}-agent-service",
        description="Agent Vault: VPC, ECS cluster, sample agent service",
    )
    agent_service.add_stack_dependency(vault, "imports the vault API's id and URL")
    for stack in (vault, audit, agent_service):
        cdk.Tags.of(stack).add("project", "agent-vault")
        cdk.Tags.of(stack).add("environment", config.environment)
    acknowledgements = nag.acknowledge_findings(config=config, vault=vault, agents=agent_service)
    skips = checkov_skips.skip_checks(config=config, vault=vault, audit=audit, agents=agent_service)
    nag.enable(app)
    return AgentVaultApp(
        app=app,
        config=config,
        vault=vault,
        audit=audit,
        agent_service=agent_service,
        acknowledgements=tuple(acknowledgements),
        checkov_skips_written=tuple(skips),
    )
