"""cdk-nag (AwsSolutions) always on, and every acknowledged finding, in one reviewed place.

cdk-nag 3 runs as a CDK validation plugin after synthesis: any finding that is not acknowledged
fails `cdk synth`. Acknowledgements are per resource (a construct and its children) and per
finding: an IAM5 finding names the exact action or resource it is about, so acknowledging one
wildcard never hides another. Each carries the reason a reviewer accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from stacks.constructs.vault_api import (
    PUBLIC_THROTTLE_BURST_LIMIT,
    PUBLIC_THROTTLE_RATE_LIMIT,
    agent_invocations,
    iam_path,
)
from stacks.synth import ACKNOWLEDGEMENTS_FILE
from stacks.vault_stack import API_KEY_ACCESS, api_id_export, api_key_prefix

if TYPE_CHECKING:
    from stacks.agent_service_stack import AgentServiceStack
    from stacks.config import VaultConfig
    from stacks.vault_stack import VaultStack

# How cdk-nag spells CloudFormation pseudo parameters in an IAM5 finding.
_ARN_PREFIX = "arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:"


@dataclass(frozen=True)
class Acknowledgement:
    path: str
    rule: str
    reason: str


def enable(app: cdk.App) -> None:
    """Run AwsSolutions on every stack after synthesis; any unacknowledged finding fails it."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge_findings(
    *, config: VaultConfig, vault: VaultStack, agents: AgentServiceStack
) -> list[Acknowledgement]:
    """The findings this design accepts, resource by resource; returns what it acknowledged."""
    acknowledged: list[Acknowledgement] = []

    def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
        acknowledged.append(Acknowledgement(path=scope.node.path, rule=rule, reason=reason))

    for function in vault.functions.values():
        acknowledge(
            function.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions;"
            " this is the only statement with Resource '*' in the function's policy (added by"
            " tracing=ACTIVE). Every data permission names its table, index, key or secret.",
        )
        acknowledge(
            function.function,
            "AwsSolutions-L1",
            "Pinned on purpose: the bundled wheels (pydantic-core, cryptography, cffi) are"
            " downloaded for CPython 3.13 and the runtime must match them. Upgrading is one"
            " deliberate change of RUNTIME in stacks/constructs/vault_code.py and"
            " PYTHON_VERSION in stacks/runtime_python.py.",
        )

    secrets_prefix = "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:"
    for name in API_KEY_ACCESS:
        acknowledge(
            vault.functions[name].role,
            f"AwsSolutions-IAM5[Resource::{secrets_prefix}{api_key_prefix(config.environment)}*]",
            "API keys (flow 12) are secrets the admin route creates at run time, one per"
            " API-key provider (or provider and hashed user): their names are not known at"
            " deployment, only their prefix. The grant names that prefix and the actions this"
            " function's code calls (stacks/vault_stack.py API_KEY_ACCESS); the vault key's"
            " policy lets only the vault's roles encrypt or decrypt them.",
        )

    for name, secret in vault.secrets.secrets.items():
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            f"Provider {name!r}'s OAuth client secret is issued by the provider: no Lambda here"
            " can rotate it. The operator rotates it at the provider and stores the new value with"
            " put-secret-value (docs/deploy.md); the vault rereads secrets within 5 minutes.",
        )

    for route_key, route in vault.api.public_routes.items():
        acknowledge(
            route,
            "AwsSolutions-APIG4",
            f"{route_key} is the OAuth redirect URI, called by the user's browser, which has no"
            " AWS credentials; it is public in the route table (lambdas/vault/routes.py). It"
            " accepts only a single-use, hashed-at-rest `state` it issued, redirects only to"
            " allow-listed return URLs, and has a throttle of its own on the stage"
            f" ({PUBLIC_THROTTLE_RATE_LIMIT} requests/s, burst {PUBLIC_THROTTLE_BURST_LIMIT}).",
        )

    events = vault.lifecycle.events
    acknowledge(
        events.role,
        "AwsSolutions-IAM5[Resource::*]",
        "Two statements have Resource '*': X-Ray PutTraceSegments/PutTelemetryRecords (tracing,"
        " no resource-level permissions) and dynamodb:ListStreams (Lambda's stream poller;"
        " ListStreams has no resource-level permissions). The stream reads name the vault"
        " table's stream, PutEvents the vault's bus, kms:Decrypt the vault key via DynamoDB.",
    )
    acknowledge(
        events.function,
        "AwsSolutions-L1",
        "Pinned on purpose, like every vault function: the bundled wheels are built for"
        " CPython 3.13 (stacks/constructs/vault_code.py).",
    )
    acknowledge(
        vault.lifecycle.undelivered,
        "AwsSolutions-SQS3",
        "This queue is the on-failure destination of the lifecycle events' stream mapping: it"
        " receives descriptions of unpublished stream batches and needs no dead-letter queue.",
    )
    acknowledge(
        vault.reaper_trigger.dead_letters,
        "AwsSolutions-SQS3",
        "This queue is the dead-letter queue (of the task-stopped rule's target and of the"
        " reaper's failed asynchronous invocations); a dead-letter queue needs none of its own.",
    )

    execution_role = agents.agent.service.task_definition.execution_role
    assert execution_role is not None  # the image asset needs one to pull
    acknowledge(
        execution_role,
        "AwsSolutions-IAM5[Resource::*]",
        "ecr:GetAuthorizationToken has no resource-level permissions (ECS task execution role,"
        " added by the CDK for pulling the agent image); image pulls name the repository.",
    )
    acknowledge(
        agents.agent.service.task_definition,
        "AwsSolutions-ECS2",
        "The environment holds VAULT_URL (the vault's public API endpoint) and PORT: no secret."
        " The agent has no long-lived secret at all: it calls the vault with its task role.",
    )
    if agents.agent.load_balancer and agents.agent.load_balancer_logs:
        acknowledge(
            agents.agent.load_balancer,
            "AwsSolutions-EC23",
            "The sample agent's HTTPS endpoint is public by design (users' browsers return to it"
            " after consent): port 443 only, TLS 1.2+ policy, invalid headers dropped; the tasks"
            " accept traffic from the load balancer only.",
        )
        acknowledge(
            agents.agent.load_balancer_logs,
            "AwsSolutions-S1",
            "This bucket receives the load balancer's access logs; logging access to the access"
            " logs would recurse. It is TLS-only, versioned, private and expires objects.",
        )
    export = api_id_export(config.environment)
    for method, path in agent_invocations():  # `*` for the stage; ids in the path
        acknowledge(
            agents.agent.task_role,
            f"AwsSolutions-IAM5[Resource::{_ARN_PREFIX}{export}/*/{method}{iam_path(path)}]",
            f"execute-api:Invoke for {method} {path}. Each `*` (the stage, each id) is IAM's"
            " wildcard, which also matches `/`: the grant covers every"
            f" {method} path of the vault API that fits {iam_path(path)} at any depth, in any"
            " stage. In the route table that is this route, and (for GET and DELETE on a"
            " session) the egress proxy's, an agent route too (tests/infra/test_gates.py checks"
            " every route against every grant); a route added later that fits the pattern is"
            " reachable by agents without a new grant. Ids are minted at run time; the vault"
            " checks that the session or flow belongs to the calling task's agent and a fresh"
            " proof of the session key.",
        )
    return acknowledged


def write_acknowledgements(outdir: Path, acknowledged: Iterable[Acknowledgement]) -> Path:
    """Record every acknowledgement in the cloud assembly, for the synth report and auditors."""
    path = outdir / ACKNOWLEDGEMENTS_FILE
    path.write_text(
        json.dumps([asdict(a) for a in acknowledged], indent=2) + "\n", encoding="utf-8"
    )
    return path
