"""The vault: key, tables, functions, HTTP API, provider secrets, reaper trigger, alarms.

Every permission a function has is granted here, function by function, so one screen shows who
may do what (docs/architecture.md is the contract this provisions).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import VaultConfig, log_retention
from stacks.constructs.agent_function_urls import AgentFunctionUrls
from stacks.constructs.audit_queries import AuditQueries
from stacks.constructs.lifecycle_events import LifecycleEvents
from stacks.constructs.provider_secrets import ProviderSecrets
from stacks.constructs.task_stopped_trigger import TaskStoppedTrigger
from stacks.constructs.unbound_flow_sweep import UnboundFlowSweep
from stacks.constructs.vault_alarms import PERIOD, VaultAlarms
from stacks.constructs.vault_api import VaultHttpApi
from stacks.constructs.vault_code import vault_code
from stacks.constructs.vault_function import VaultFunction
from stacks.constructs.vault_key import VaultKey, deploy_role_arn
from stacks.constructs.vault_tables import VaultTables

API_TIMEOUT = Duration.seconds(29)
"""Just under the HTTP API's 30 s integration limit; provider calls time out well before. The
proxy bounds its upstream time per call (refresh and retry included) at 25 s
(`vault.proxy.DEADLINE_SECONDS`), leaving 4 s for its DynamoDB and KMS calls."""


ITEM_ACCESS: dict[str, dict[str, tuple[str, ...]]] = {
    "AgentApi": {
        # a session starts in one transaction: the session, its task entry, and a check that the
        # task was not recorded as stopped (TASK#<id>/STOPPED)
        # (a delegated session's ancestors are read in one BatchGetItem)
        "SESSION#": (
            "BatchGetItem",
            "ConditionCheckItem",
            "DeleteItem",
            "GetItem",
            "PutItem",
            "Query",
            "UpdateItem",
        ),
        "TASK#": ("ConditionCheckItem", "PutItem"),
        "STATE#": ("PutItem",),
        "FLOW#": ("GetItem", "UpdateItem"),
        # connections (flow 13): a user's grants to the agent listed, one revoked and deleted
        "USER#": ("DeleteItem", "GetItem", "PutItem", "Query", "UpdateItem"),
        # agents' machine tokens (flow 12): read, fetch lease, store
        "MACHINE#": ("GetItem", "PutItem", "UpdateItem"),
        # delegations (flow 8): offered, claimed, listed in the parent's partition, which a
        # session's end reads to end its children
        "DELEGATION#": ("GetItem", "PutItem", "UpdateItem"),
        "CHILDREN#": ("PutItem", "Query"),
    },
    # The egress proxy reads its session with its tokens, mints tokens (the grant's lease and
    # refresh token, the session token in the refresh's transaction), forgets a token the
    # provider refused. No flow, no task entry, no session start or end.
    "ProxyApi": {
        "SESSION#": (
            "BatchGetItem",
            "ConditionCheckItem",
            "DeleteItem",
            "GetItem",
            "PutItem",
            "Query",
        ),
        "USER#": ("GetItem", "UpdateItem"),
        "MACHINE#": ("GetItem", "PutItem", "UpdateItem"),
    },
    # The public callback touches pending flows only: claims a state, retires it, records the
    # answered flow. No session, token or grant item.
    "Callback": {
        "STATE#": ("DeleteItem", "UpdateItem"),
        "FLOW#": ("PutItem",),
    },
    "AdminApi": {
        # the read API shows a session with its tokens (one Query of its partition); the sweep
        # reads each session its index found expired and ends those still active
        "SESSION#": ("DeleteItem", "GetItem", "Query", "UpdateItem"),
        # a revocation by user and the sweep close unbound flows; the read API shows one
        "FLOW#": ("GetItem", "UpdateItem"),
        "USER#": ("DeleteItem", "GetItem", "Query", "UpdateItem"),
        # a revocation by agent/provider drops the agents' machine tokens
        "MACHINE#": ("DeleteItem", "Query", "UpdateItem"),
        # the sweep: a task entry out of its index (or at a renewed session's new expiry); an
        # ended session's children end with it
        "TASK#": ("UpdateItem",),
        "CHILDREN#": ("Query",),
    },
    "Reaper": {
        "SESSION#": ("DeleteItem", "GetItem", "Query", "UpdateItem"),
        # the task's stop record first, then its sessions from the task's own partition
        "TASK#": ("PutItem", "Query"),
        "USER#": ("GetItem", "UpdateItem"),
        # a session's delegations: its children end with it
        "CHILDREN#": ("Query",),
    },
}
"""Per function: partition-key prefix -> the item actions its code calls on those items."""

INDEX_QUERIES: dict[str, tuple[str, ...]] = {
    "AgentApi": ("gsi2",),
    "ProxyApi": (),
    "Callback": (),
    "AdminApi": ("gsi1", "gsi2"),
    "Reaper": ("gsi1", "gsi2"),
}
"""gsi1: sessions of a task, grants of an agent, unbound flows; gsi2: a grant by id, the tokens
of a grant, a user's unbound flows, an agent's sessions (the admin read API)."""

ENVELOPE_ACCESS: dict[str, tuple[tuple[tuple[str, ...], str, str | None], ...]] = {
    "AgentApi": (
        (("kms:GenerateDataKey",), "verifier", None),
        (("kms:Decrypt", "kms:GenerateDataKey"), "token", None),
        (("kms:Decrypt", "kms:GenerateDataKey"), "machine_token", None),
    ),
    "ProxyApi": (
        (("kms:Decrypt", "kms:GenerateDataKey"), "token", None),
        (("kms:Decrypt", "kms:GenerateDataKey"), "machine_token", None),
    ),
    "Callback": (
        (("kms:Decrypt",), "verifier", None),
        (("kms:GenerateDataKey",), "token", "grant"),
    ),
    "AdminApi": (
        (("kms:Decrypt",), "token", None),
        (("kms:Decrypt",), "machine_token", None),
    ),
    "Reaper": ((("kms:Decrypt",), "token", "session"),),
}
"""Per function: (KMS actions, encryption purpose, token context kind) of its data keys. The
agent API and the proxy never open a verifier; the callback only seals a consent's new tokens
(bound to their grant) and opens its flow's verifier; the reaper only opens sessions' access
tokens to revoke them, never a grant's refresh token."""


API_KEY_ACCESS: dict[str, tuple[str, ...]] = {
    # `returned` delivery hands the key to the agent
    "AgentApi": ("secretsmanager:GetSecretValue",),
    "ProxyApi": ("secretsmanager:GetSecretValue",),
    # the admin routes set (reading the key they replace) and delete keys
    "AdminApi": (
        "secretsmanager:CreateSecret",
        "secretsmanager:DeleteSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
    ),
}
"""Per function: its Secrets Manager actions on the API-key secrets (flow 12; `vault.apikeys`),
created at run time under the vault key, named `agent-vault/<env>/apikey/...`. Writing one
takes `kms:GenerateDataKey` through Secrets Manager, reading one `kms:Decrypt`."""


def api_key_prefix(environment: str) -> str:
    """API-key secrets' names start with this (API_KEY_SECRET_PREFIX): `<prefix><provider>`,
    `<prefix><provider>/user/<hashed user>`."""
    return f"agent-vault/{environment}/apikey/"


def agent_cluster_name(environment: str) -> str:
    """The ECS cluster the agents run in (named, so the vault can watch it without a reference)."""
    return f"agent-vault-{environment}"


def api_id_export(environment: str) -> str:
    """Export name of the vault API's id (agent roles' execute-api ARNs are built from it)."""
    return f"agent-vault-{environment}-api-id"


def api_url_export(environment: str) -> str:
    """Export name of the vault API's base URL (the agents' VAULT_URL)."""
    return f"agent-vault-{environment}-api-url"


def function_url_export(environment: str, function: str) -> str:
    """Export name of a function's URL (`agent_endpoint: "function_url"`; AgentApi, ProxyApi)."""
    return f"agent-vault-{environment}-{function.lower()}-url"


def function_arn_export(environment: str, function: str) -> str:
    """Export name of a function's ARN (the sample agent's URL permissions are made with it)."""
    return f"agent-vault-{environment}-{function.lower()}-arn"


def sample_agent_name(config: VaultConfig) -> str:
    """The agent the sample ECS service runs as (`sample_agent`, else the first agent)."""
    return config.sample_agent or next(iter(config.agents))


class VaultStack(Stack):
    """Agent Vault's serving side (everything but the audit trail and the agents)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: VaultConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        env_name = config.environment
        protect = env_name == "prod"
        removal = RemovalPolicy.RETAIN if protect else RemovalPolicy.DESTROY
        retention = log_retention(config)

        self.key = VaultKey(self, "Key", environment=env_name, removal_policy=removal)
        self.tables = VaultTables(self, "Tables", key=self.key, protect=protect)
        self.secrets = ProviderSecrets(
            self,
            "ProviderSecrets",
            environment=env_name,
            # an API-key provider has no client secret (its keys are set at run time)
            providers=[n for n, p in config.providers.items() if p.api_key is None],
            key=self.key.key,
            removal_policy=removal,
        )
        self.api = VaultHttpApi(
            self, "Api", environment=env_name, log_retention=retention, removal_policy=removal
        )

        code = vault_code(config)
        environment = {
            "TABLE_NAME": self.tables.vault.table_name,
            "REPLAY_TABLE_NAME": self.tables.replay.table_name,
            "KEY_ID": self.key.key.key_arn,
            "CALLBACK_URL": self.api.callback_url,
            "CLIENT_SECRET_PREFIX": self.secrets.prefix,
            "API_KEY_SECRET_PREFIX": api_key_prefix(env_name),
        }

        def function(
            construct_id: str,
            handler: str,
            description: str,
            timeout: Duration = API_TIMEOUT,
            reserved_concurrency: int | None = None,
        ) -> VaultFunction:
            return VaultFunction(
                self,
                construct_id,
                handler=handler,
                description=description,
                code=code,
                environment=environment,
                log_retention=retention,
                removal_policy=removal,
                timeout=timeout,
                reserved_concurrency=reserved_concurrency,
            )

        self.agent_api = function(
            "AgentApi",
            "vault.handlers.agent_api.handler",
            "agent routes: sessions, consent, tokens, binding",
        )
        # The egress proxy is a function of its own: the one that sends requests to the
        # providers' APIs and reads their answers gets the smallest role that can mint a token
        # (no flow, verifier or session-start permission), its own concurrency, errors and
        # duration alarms; its answers (up to 4 MiB, vault.proxy) fit Lambda's 6 MB payload.
        self.proxy_api = function(
            "ProxyApi",
            "vault.handlers.proxy_api.handler",
            "egress proxy: agents' calls to provider APIs, with the session's token",
        )
        self.callback = function(
            "Callback",
            "vault.handlers.callback.handler",
            "public OAuth redirect URI: state, code exchange",
        )
        self.admin_api = function(
            "AdminApi",
            "vault.handlers.admin_api.handler",
            "admin routes: revocations; sweeps unbound flows",
        )
        self.reaper = function(
            "Reaper",
            "vault.handlers.reaper.handler",
            "ends the sessions of stopped ECS tasks",
            timeout=Duration.minutes(2),
            # other workloads cannot starve revocation (SECURITY.md row 52)
            reserved_concurrency=config.reaper_reserved_concurrency,
        )
        self.functions = {
            "AgentApi": self.agent_api,
            "ProxyApi": self.proxy_api,
            "Callback": self.callback,
            "AdminApi": self.admin_api,
            "Reaper": self.reaper,
        }

        # Each function gets what its code calls and nothing else (tests/infra/test_access.py
        # runs every handler's code paths and compares): item actions by partition-key prefix,
        # index queries, data keys by encryption purpose, the provider secrets.
        for name, fn in self.functions.items():
            for prefix, actions in ITEM_ACCESS[name].items():
                self.tables.grant_items(fn.function, prefix=prefix, actions=actions)
            if INDEX_QUERIES[name]:
                self.tables.grant_index_queries(fn.function, indexes=INDEX_QUERIES[name])
            self.tables.grant_table_encryption(fn.function)
            for actions, purpose, context in ENVELOPE_ACCESS[name]:
                self.key.grant_envelope_encryption(
                    fn.function, actions=actions, purpose=purpose, context=context
                )
            self.secrets.grant_read(fn.function)
        api_keys = (
            f"arn:{Aws.PARTITION}:secretsmanager:{Aws.REGION}:{Aws.ACCOUNT_ID}:secret:"
            f"{api_key_prefix(env_name)}*"
        )
        for name, actions in API_KEY_ACCESS.items():
            fn = self.functions[name]
            iam.Grant.add_to_principal(
                grantee=fn.function, actions=list(actions), resource_arns=[api_keys]
            )
            writes = "secretsmanager:PutSecretValue" in actions
            self.key.grant_secret_encryption(
                fn.function,
                actions=("kms:Decrypt", "kms:GenerateDataKey") if writes else ("kms:Decrypt",),
                secrets=api_keys,
            )
        for fn in (self.agent_api, self.proxy_api):
            self.tables.grant_replay_writes(fn.function)  # proof jtis
        # Flow 9's lifecycle events: the table's stream -> the events function -> the vault's
        # bus. Its role reads the stream and puts events, nothing else (no item, no data key).
        self.lifecycle = LifecycleEvents(
            self,
            "LifecycleEvents",
            environment=env_name,
            table=self.tables.vault,
            key=self.key,
            code=code,
            log_retention=retention,
            removal_policy=removal,
        )
        # Nobody else: the key's only users, the table's and the secrets' only readers.
        roles = [fn.role for fn in self.functions.values()]
        self.key.restrict_to(
            roles,
            admin_role_arn=config.key_admin_role_arn,
            deploy_role_arn=deploy_role_arn(self, config.deploy_role_arn),
            api_key_secrets=api_keys,
            stream_readers=[self.lifecycle.events.role],
        )
        self.tables.deny_all_but(roles)
        self.secrets.deny_reads_but(roles)

        self.api.route_agent_api(self.agent_api.function)
        self.api.route_proxy_api(self.proxy_api.function)
        self.api.route_admin_api(self.admin_api.function)
        self.api.route_callback(self.callback.function)
        # `agent_endpoint: "function_url"`: agents may also call the agent API and the egress
        # proxy at their own IAM-authorized URLs (no API Gateway request; docs/cost.md). The
        # sample agent's role is made by the agent service stack, which adds its permissions.
        self.agent_urls: AgentFunctionUrls | None = None
        if config.agent_endpoint == "function_url":
            self.agent_urls = AgentFunctionUrls(
                self,
                "AgentUrls",
                functions={
                    "AgentApi": self.agent_api.function,
                    "ProxyApi": self.proxy_api.function,
                },
                config=config,
                agents=[a for a in config.agents if a != sample_agent_name(config)],
            )

        cluster_arn = (
            f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:cluster/"
            f"{agent_cluster_name(env_name)}"
        )
        self.reaper_trigger = TaskStoppedTrigger(
            self, "TaskStopped", cluster_arn=cluster_arn, reaper=self.reaper.function
        )
        self.flow_sweep = UnboundFlowSweep(
            self,
            "UnboundFlowSweep",
            sweeper=self.admin_api.function,
            dead_letters=self.reaper_trigger.dead_letters,
        )
        self.alarms = VaultAlarms(
            self,
            "Alarms",
            environment=env_name,
            api=self.api.api,
            functions={name: f.function for name, f in self.functions.items()},
            dead_letters=self.reaper_trigger.dead_letters,
            removal_policy=removal,
        )
        self.alarms.alarm_on_foreign_key_use(key_arn=self.key.key.key_arn, vault_roles=roles)
        self.lifecycle.alarm_into(self.alarms.topic, PERIOD)
        # Saved Logs Insights queries over the functions' audit events (docs/audit.md)
        self.audit_queries = AuditQueries(
            self,
            "AuditQueries",
            environment=env_name,
            log_groups=[fn.log_group for fn in self.functions.values()],
        )

        outputs = {
            "CallbackUrl": (
                self.api.callback_url,
                "Callbacks' base: provider X's redirect URI is CallbackUrl/X",
            ),
            "VaultTableName": (self.tables.vault.table_name, "Vault table"),
            "ReplayTableName": (self.tables.replay.table_name, "Proof replay-cache table"),
            "KeyArn": (self.key.key.key_arn, "Vault KMS key"),
            "AlarmTopicArn": (self.alarms.topic.topic_arn, "Subscribe to receive alarms"),
            "ClientSecretPrefix": (self.secrets.prefix, "Provider secret names start with this"),
            "EventBusName": (
                self.lifecycle.bus.event_bus_name,
                "Lifecycle events (grant, flow, session) are published on this bus",
            ),
            "UndeliveredEventsQueueUrl": (
                self.lifecycle.undelivered.queue_url,
                "Stream batches whose lifecycle events could not be published (replay them)",
            ),
        }
        for name in self.secrets.secrets:
            outputs[f"CallbackUrl{name.title().replace('-', '')}"] = (
                f"{self.api.callback_url}/{name}",
                f"Register this exact redirect URI at provider {name!r} (and at no other)",
            )
            outputs[f"ProviderSecret{name.title().replace('-', '')}"] = (
                f"{self.secrets.prefix}{name}",
                f"Put provider {name!r}'s client secret here",
            )
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
        CfnOutput(
            self,
            "ApiId",
            value=self.api.api.api_id,
            description="Vault HTTP API id",
            export_name=api_id_export(env_name),
        )
        CfnOutput(
            self,
            "ApiUrl",
            value=self.api.url,
            description="Base URL of the vault API (VAULT_URL for agents)",
            export_name=api_url_export(env_name),
        )
        if self.agent_urls is not None:
            for name, url in self.agent_urls.urls.items():
                CfnOutput(
                    self,
                    f"{name}FunctionUrl",
                    value=url.url,
                    description=f"IAM-authorized URL of {name} (SigV4 for `lambda`): "
                    + ("the agents' VAULT_URL" if name == "AgentApi" else "the agents' proxy URL"),
                    export_name=function_url_export(env_name, name),
                )
                CfnOutput(
                    self,
                    f"{name}FunctionArn",
                    value=self.functions[name].function.function_arn,
                    description=f"{name} function (agent roles need lambda:InvokeFunctionUrl"
                    " and lambda:InvokeFunction on it)",
                    export_name=function_arn_export(env_name, name),
                )
