"""checkov's accepted findings, resource by resource, with the reason a reviewer accepted.

checkov reads a skip from the resource's own template metadata
(`Metadata: {checkov: {skip: [{id, comment}]}}`), so a skip covers the one resource it is written
on. `.checkov.yaml` skips nothing: a new resource, even one of a type skipped here, is checked in
full and fails the synth gate until it passes or is given its own skip here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from constructs import IConstruct

from stacks.constructs.vault_api import (
    PUBLIC_THROTTLE_BURST_LIMIT,
    PUBLIC_THROTTLE_RATE_LIMIT,
    THROTTLE_BURST_LIMIT,
    THROTTLE_RATE_LIMIT,
)
from stacks.synth import CHECKOV_SKIPS_FILE

if TYPE_CHECKING:
    from stacks.agent_service_stack import AgentServiceStack
    from stacks.audit_stack import AuditStack
    from stacks.config import VaultConfig
    from stacks.vault_stack import VaultStack

METADATA_KEY = "checkov"


@dataclass(frozen=True)
class Skip:
    path: str
    check: str
    reason: str


def _cfn(scope: IConstruct) -> cdk.CfnResource:
    resource = scope if isinstance(scope, cdk.CfnResource) else scope.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise TypeError(f"{scope.node.path} is not one CloudFormation resource")
    return resource


def skip_checks(
    *, config: VaultConfig, vault: VaultStack, audit: AuditStack, agents: AgentServiceStack
) -> list[Skip]:
    """Write each accepted checkov finding on its resource; returns what it wrote."""
    skipped: list[Skip] = []

    def skip(scope: IConstruct, check: str, reason: str) -> None:
        resource = _cfn(scope)
        existing = resource.get_metadata(METADATA_KEY) or {}
        entries = [*existing.get("skip", []), {"id": check, "comment": reason}]
        resource.add_metadata(METADATA_KEY, {"skip": entries})
        skipped.append(Skip(path=resource.node.path, check=check, reason=reason))

    api_caps = (
        "No reserved concurrency, on purpose (docs/cost.md, 'What caps the functions'): a"
        " reservation is carved out of the account's pool in every deployment and cannot be made"
        " at all in accounts whose limit is under 100 + the reservation. The stage throttle"
        f" ({THROTTLE_RATE_LIMIT} requests/s, burst {THROTTLE_BURST_LIMIT}) and the public"
        f" routes' own ({PUBLIC_THROTTLE_RATE_LIMIT}/s, burst {PUBLIC_THROTTLE_BURST_LIMIT}) bound"
        " the request rate, not the concurrency: that is rate x duration, capped only by the"
        " account's pool, which this function shares."
    )
    no_vpc = (
        "Reaches only public AWS endpoints (KMS, DynamoDB, Secrets Manager) and external OAuth"
        " providers and their APIs (the egress proxy) on the internet; in a VPC it would need a"
        " NAT gateway for the same traffic and gain no control over it. It reaches no private"
        " resource (the proxy refuses private addresses itself: vault/egress.py)."
    )
    plain_environment = (
        "The environment holds table names, the key ARN, the callback URL, the secret-name"
        " prefix and Powertools settings: no secret (client secrets are read from Secrets"
        " Manager at run time). Lambda encrypts it at rest with an AWS-managed key."
    )
    function_logs = (
        "Not under a customer key: accepted risk. The group holds the vault's JSON log lines,"
        " which carry no token, code, verifier or secret on every path the test suite drives"
        " (tests/security/hygiene.py), not proven for all paths; Lambda's platform lines; and the"
        " message and stack of any exception that escapes the handler. CloudWatch encrypts it at"
        " rest with its own keys; reading it is gated by IAM alone (logs:GetLogEvents,"
        " logs:StartQuery on this group): grant those to operators only."
    )
    for name, function in vault.functions.items():
        if name == "Reaper":
            skip(
                function.function,
                "CKV_AWS_116",
                "Invoked asynchronously by EventBridge: the rule's target has a dead-letter queue"
                " and the function's failed asynchronous invocations go to the same queue through"
                " an on-failure destination (EventInvokeConfig), which this check does not read.",
            )
            if config.reaper_reserved_concurrency is None:
                skip(
                    function.function,
                    "CKV_AWS_115",
                    "The config sets reaper_reserved_concurrency to null (an account too small"
                    " to reserve): the reaper shares the account's pool; a throttled event is"
                    " retried for up to 2 hours, then dead-lettered and alarmed.",
                )
        else:
            skip(
                function.function,
                "CKV_AWS_116",
                "Invoked synchronously by API Gateway: the caller receives the error. A"
                " dead-letter queue applies to asynchronous invocations only.",
            )
            skip(function.function, "CKV_AWS_115", api_caps)
        skip(function.function, "CKV_AWS_117", no_vpc)
        skip(function.function, "CKV_AWS_173", plain_environment)
        skip(function.log_group, "CKV_AWS_158", function_logs)

    events = vault.lifecycle.events
    skip(
        events.function,
        "CKV_AWS_116",
        "Invoked by its DynamoDB stream mapping, whose on-failure destination (an encrypted,"
        " alarmed queue) receives the batches it could not publish; a function dead-letter"
        " queue applies to asynchronous invocations only.",
    )
    skip(
        events.function,
        "CKV_AWS_115",
        "No reserved concurrency: the stream mapping runs one batch per shard at a time"
        " (parallelization factor 1), so its concurrency is the stream's shard count; a"
        " throttled batch waits and is retried (IteratorAge is alarmed).",
    )
    skip(events.function, "CKV_AWS_117", no_vpc)
    skip(
        events.function,
        "CKV_AWS_173",
        "The environment holds the event bus's name and Powertools settings: no secret.",
    )
    skip(
        events.log_group,
        "CKV_AWS_158",
        "Not under a customer key: accepted. The group holds the events function's lines"
        " (each published event's type, a failure's error type and stream position), never an"
        " item's values.",
    )
    skip(
        vault.lifecycle.undelivered,
        "CKV_AWS_27",
        "Encrypted with SQS-managed SSE (SqsManagedSseEnabled), which this check does not"
        " recognize. It holds descriptions of stream batches (shard, sequence numbers, stream"
        " ARN), no item and no secret.",
    )
    skip(
        vault.api.access_logs,
        "CKV_AWS_158",
        "Not under a customer key: the lines hold only ACCESS_LOG_FORMAT's fields"
        " (stacks/constructs/vault_api.py: request id, route key, status, latency, source IP,"
        " caller ARN), never a query string, header or body, so no code, state or token.",
    )
    skip(
        vault.reaper_trigger.dead_letters,
        "CKV_AWS_27",
        "Encrypted with SQS-managed SSE (SqsManagedSseEnabled), which this check does not"
        " recognize. EventBridge cannot deliver to a queue under the AWS-managed SQS KMS key."
        " It holds ECS task-state events (task and cluster ARNs), no secret.",
    )

    skip(
        audit.trail.access_log_bucket,
        "CKV_AWS_18",
        "This bucket receives the trail bucket's server access logs: logging access to it would"
        " need another unlogged bucket. Private, TLS-only, and it holds no trail content.",
    )
    skip(
        audit.trail.log_group,
        "CKV_AWS_158",
        "Not under a customer key: accepted. A searchable copy of the trail's events (who called"
        " which API; DynamoDB data events name item keys, not attribute values, so no sealed"
        " token); the files of record are in the trail bucket under the trail's own KMS key.",
    )

    agent = agents.agent
    skip(
        agent.log_group,
        "CKV_AWS_158",
        "Not under a customer key: accepted for the sample. It holds the sample agent's output"
        " (uvicorn without access logs; the app logs vault error codes, never a token). A"
        " production agent's own stack decides for its logs.",
    )
    skip(
        agents.network.node.find_child("FlowLogs"),
        "CKV_AWS_158",
        "Not under a customer key: VPC flow log records hold addresses, ports, byte and packet"
        " counts, never payload.",
    )
    if agent.load_balancer_logs is not None:  # only with certificate_arn
        skip(
            agent.load_balancer_logs,
            "CKV_AWS_18",
            "This bucket receives the sample agent's load balancer access logs: logging access"
            " to it would need another unlogged bucket. Private, TLS-only, versioned, expiring.",
        )
    restrict_default_sg = agents.node.try_find_child(
        "Custom::VpcRestrictDefaultSGCustomResourceProvider"
    )
    if restrict_default_sg is not None:  # the CDK's own handler (restrictDefaultSecurityGroup)
        handler = restrict_default_sg.node.find_child("Handler")
        skip(
            handler,
            "CKV_AWS_115",
            "The CDK's handler that removes the default security group's rules: invoked by"
            " CloudFormation once per deployment, never by a request.",
        )
        skip(
            handler,
            "CKV_AWS_116",
            "The CDK's handler, invoked synchronously by CloudFormation, which reports its"
            " failure as the deployment's: nothing to dead-letter.",
        )
        skip(
            handler,
            "CKV_AWS_117",
            "The CDK's handler calls only the EC2 API (RevokeSecurityGroupIngress/Egress on the"
            " VPC's default security group), once per deployment.",
        )
    return skipped


def write_skips(outdir: Path, skipped: Iterable[Skip]) -> Path:
    """Record every skip in the cloud assembly, for the synth report and auditors."""
    path = outdir / CHECKOV_SKIPS_FILE
    path.write_text(json.dumps([asdict(s) for s in skipped], indent=2) + "\n", encoding="utf-8")
    return path
