"""The vault: key, tables, functions, HTTP API, provider secrets, reaper trigger, alarms.

Every permission a function has is granted here, function by function, so one screen shows who
may do what (docs/architecture.md is the contract this provisions).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from constructs import Construct

from stacks.config import VaultConfig, log_retention
from stacks.constructs.provider_secrets import ProviderSecrets
from stacks.constructs.task_stopped_trigger import TaskStoppedTrigger
from stacks.constructs.vault_alarms import VaultAlarms
from stacks.constructs.vault_api import VaultHttpApi
from stacks.constructs.vault_code import vault_code
from stacks.constructs.vault_function import VaultFunction
from stacks.constructs.vault_key import VaultKey
from stacks.constructs.vault_tables import INDEXES, VaultTables

API_TIMEOUT = Duration.seconds(29)
"""Just under the HTTP API's 30 s integration limit; provider calls time out well before."""


def agent_cluster_name(environment: str) -> str:
    """The ECS cluster the agents run in (named, so the vault can watch it without a reference)."""
    return f"agent-vault-{environment}"


def api_id_export(environment: str) -> str:
    """Export name of the vault API's id (agent roles' execute-api ARNs are built from it)."""
    return f"agent-vault-{environment}-api-id"


def api_url_export(environment: str) -> str:
    """Export name of the vault API's base URL (the agents' VAULT_URL)."""
    return f"agent-vault-{environment}-api-url"


class VaultStack(Stack):
    """Agent Vault's serving side (everything but the audit trail and the agents)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: VaultConfig,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        env_name = config.environment
        protect = env_name == "prod"
        removal = RemovalPolicy.RETAIN if protect else RemovalPolicy.DESTROY
        retention = log_retention(config)

        self.key = VaultKey(self, "Key", environment=env_name, removal_policy=removal)
        self.tables = VaultTables(self, "Tables", key=self.key, protect=protect)
        self.secrets = ProviderSecrets(self, "ProviderSecrets", environment=env_name,
                                       providers=config.providers, key=self.key.key,
                                       removal_policy=removal)
        self.api = VaultHttpApi(self, "Api", environment=env_name, log_retention=retention,
                                removal_policy=removal)

        code = vault_code(config)
        environment = {
            "TABLE_NAME": self.tables.vault.table_name,
            "REPLAY_TABLE_NAME": self.tables.replay.table_name,
            "KEY_ID": self.key.key.key_arn,
            "CALLBACK_URL": self.api.callback_url,
            "CLIENT_SECRET_PREFIX": self.secrets.prefix,
        }

        def function(construct_id: str, handler: str, description: str,
                     timeout: Duration = API_TIMEOUT) -> VaultFunction:
            return VaultFunction(self, construct_id, handler=handler, description=description,
                                 code=code, environment=environment, log_retention=retention,
                                 removal_policy=removal, timeout=timeout)

        self.agent_api = function("AgentApi", "vault.handlers.agent_api.handler",
                                  "agent routes: sessions, consent, tokens, binding")
        self.callback = function("Callback", "vault.handlers.callback.handler",
                                 "public OAuth redirect URI: state, code exchange")
        self.admin_api = function("AdminApi", "vault.handlers.admin_api.handler",
                                  "admin routes: revocations")
        self.reaper = function("Reaper", "vault.handlers.reaper.handler",
                               "ends the sessions of stopped ECS tasks",
                               timeout=Duration.minutes(2))

        # Agent routes: every item kind, the proof replay cache, tokens and PKCE verifiers.
        self.tables.grant_vault_data(self.agent_api.function, write=True, indexes=INDEXES)
        self.tables.grant_replay_writes(self.agent_api.function)
        self.key.grant_envelope_encryption(self.agent_api.function,
                                           purposes=("token", "verifier"))
        self.secrets.grant_read(self.agent_api.function)
        # Callback: consumes the pending flow, opens its verifier, seals the new tokens.
        self.tables.grant_vault_data(self.callback.function, write=True, indexes=INDEXES)
        self.key.grant_envelope_encryption(self.callback.function,
                                           purposes=("token", "verifier"))
        self.secrets.grant_read(self.callback.function)
        # Admin and reaper: find what to revoke, open tokens to revoke them upstream, delete.
        for revoker in (self.admin_api, self.reaper):
            self.tables.grant_vault_data(revoker.function, write=True, indexes=INDEXES)
            self.key.grant_envelope_encryption(revoker.function, purposes=("token",),
                                               decrypt_only=True)
            self.secrets.grant_read(revoker.function)

        self.api.route_agent_api(self.agent_api.function)
        self.api.route_admin_api(self.admin_api.function)
        self.api.route_callback(self.callback.function)

        cluster_arn = (f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:cluster/"
                       f"{agent_cluster_name(env_name)}")
        self.reaper_trigger = TaskStoppedTrigger(self, "TaskStopped", cluster_arn=cluster_arn,
                                                 reaper=self.reaper.function)
        self.functions = {"AgentApi": self.agent_api, "Callback": self.callback,
                          "AdminApi": self.admin_api, "Reaper": self.reaper}
        self.alarms = VaultAlarms(
            self, "Alarms", environment=env_name, api=self.api.api,
            functions={name: f.function for name, f in self.functions.items()},
            dead_letters=self.reaper_trigger.dead_letters, removal_policy=removal)

        outputs = {
            "CallbackUrl": (self.api.callback_url,
                            "Callbacks' base: provider X's redirect URI is CallbackUrl/X"),
            "VaultTableName": (self.tables.vault.table_name, "Vault table"),
            "ReplayTableName": (self.tables.replay.table_name, "Proof replay-cache table"),
            "KeyArn": (self.key.key.key_arn, "Vault KMS key"),
            "AlarmTopicArn": (self.alarms.topic.topic_arn, "Subscribe to receive alarms"),
            "ClientSecretPrefix": (self.secrets.prefix, "Provider secret names start with this"),
        }
        for name in self.secrets.secrets:
            outputs[f"CallbackUrl{name.title().replace('-', '')}"] = (
                f"{self.api.callback_url}/{name}",
                f"Register this exact redirect URI at provider {name!r} (and at no other)")
            outputs[f"ProviderSecret{name.title().replace('-', '')}"] = (
                f"{self.secrets.prefix}{name}", f"Put provider {name!r}'s client secret here")
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
        CfnOutput(self, "ApiId", value=self.api.api.api_id, description="Vault HTTP API id",
                  export_name=api_id_export(env_name))
        CfnOutput(self, "ApiUrl", value=self.api.url,
                  description="Base URL of the vault API (VAULT_URL for agents)",
                  export_name=api_url_export(env_name))
