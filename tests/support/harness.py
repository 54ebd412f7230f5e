"""The vault under test: real handlers and services over in-process moto and a real provider."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import boto3

from agent_vault.local.consent_forms import complete_consent
from agent_vault.local.provider import AuthorizationServer
from tests.support.agent import TestAgent
from tests.support.apigw import HttpAnswer, build_event, invoke
from tests.support.aws import ACCOUNT, RequestCounter
from vault.config import VaultConfig
from vault.runtime import Services, Settings, build_services, use_services
from vault.store.schema import create_tables

TABLE, REPLAY_TABLE = "agent-vault-test", "agent-vault-test-replay"
CALLBACK_URL = "http://127.0.0.1:8765/v1/oauth/callback"
"""The vault's OAuth callback as registered at the provider (handlers run in-process: never
requested over HTTP)."""
APP_REDIRECT_URI = "http://127.0.0.1:8765/app/callback"
RETURN_URL = "https://app.example.test/consent/return"
SECRET_PREFIX = "agent-vault/test/provider/"
USERS = {"alice": "alice-password", "bob": "bob-password"}


class FakeClock:
    """Wall-clock seconds the test can move forward (expiry is tested through the clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def test_config(server: AuthorizationServer) -> VaultConfig:
    provider = {
        "discovery_url": server.discovery_url,
        "client_id": server.client_id,
        "scopes": ["calendar.read", "calendar.write", "mail.read"],
        "resource": server.resource,
        "timeout_seconds": 2.0,
    }
    return VaultConfig.model_validate(
        {
            "environment": "test",
            "providers": {
                "calendar": provider,
                "calendar-post": {
                    **provider,
                    "client_id": server.post_client_id,
                    "client_auth_method": "client_secret_post",
                },
            },
            "agents": {
                "calendar-agent": {
                    "role_name": "calendar-agent-role",
                    "providers": {
                        "calendar": ["calendar.read", "calendar.write"],
                        "calendar-post": ["calendar.read"],
                    },
                },
                "mail-agent": {
                    "role_name": "mail-agent-role",
                    "may_assert_user_id": True,
                    "providers": {"calendar": ["mail.read", "calendar.read"]},
                },
            },
            "admin_role_names": ["vault-admin"],
            "return_urls": [RETURN_URL, "http://localhost:3000/return"],
            "user_identity_issuers": [
                {
                    "issuer": server.issuer,
                    "jwks_uri": server.jwks_uri,
                    "audiences": [server.app_client_id],
                }
            ],
        }
    )


@dataclass
class Vault:
    server: AuthorizationServer
    session: boto3.session.Session
    services: Services
    clock: FakeClock
    counter: RequestCounter
    id_tokens: dict[str, str]

    # --- principals ---------------------------------------------------------------------

    def agent(self, role: str = "calendar-agent-role", task_id: str | None = None) -> TestAgent:
        import secrets

        return TestAgent(role, task_id or secrets.token_hex(16), self.clock, ACCOUNT)

    def user(self, name: str) -> dict[str, str]:
        return {"id_token": self.id_tokens[name]}

    def admin(self, body: Any) -> HttpAnswer:
        import json

        return invoke(
            build_event(
                "POST",
                "/v1/revocations",
                body=json.dumps(body),
                principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/vault-admin/ops",
            )
        )

    # --- consent ------------------------------------------------------------------------

    def callback(self, query: str) -> HttpAnswer:
        return invoke(build_event("GET", "/v1/oauth/callback", query=query))

    def consent_at_provider(
        self, authorization_url: str, username: str, decision: str = "allow"
    ) -> str:
        """The user's browser part; returns the raw query the provider sent to the callback."""
        redirect = complete_consent(authorization_url, username, USERS[username], decision=decision)
        assert redirect.startswith(CALLBACK_URL), redirect
        return urlsplit(redirect).query

    def connect(
        self,
        agent: TestAgent,
        provider: str = "calendar",
        scopes: tuple[str, ...] = ("calendar.read",),
        username: str = "alice",
        completing_user: str | None = None,
    ) -> HttpAnswer:
        """The whole consent: authorize, consent at the provider, callback, binding."""
        started = agent.authorize(provider, list(scopes))
        assert started.status == 201, started.body
        query = self.consent_at_provider(started.json["authorization_url"], username)
        back = self.callback(query)
        assert back.status == 302, back.body
        flow_id = started.json["flow_id"]
        return agent.complete(flow_id, self.user(completing_user or username))

    # --- storage ------------------------------------------------------------------------

    @cached_property
    def _dynamodb(self) -> Any:
        return self.session.client("dynamodb")

    def items(self) -> list[dict[str, Any]]:
        client = self._dynamodb
        items: list[dict[str, Any]] = []
        for table in (TABLE,):
            pages = client.get_paginator("scan").paginate(TableName=table)
            items.extend(i for page in pages for i in page["Items"])
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    def snapshot(self) -> list[dict[str, Any]]:
        """Everything stored but the replay cache (which a proof check may legitimately add)."""
        return self.items()


def make_vault(
    server: AuthorizationServer, session: boto3.session.Session, id_tokens: dict[str, str]
) -> Vault:
    create_tables(session.client("dynamodb"), TABLE, REPLAY_TABLE)
    key_id = session.client("kms").create_key(Description="vault test key")["KeyMetadata"]["Arn"]
    for provider in ("calendar", "calendar-post"):
        session.client("secretsmanager").create_secret(
            Name=SECRET_PREFIX + provider, SecretString=server.client_secret
        )
    clock = FakeClock()
    counter = RequestCounter()
    counter.attach(session)
    settings = Settings(
        table_name=TABLE,
        replay_table_name=REPLAY_TABLE,
        key_id=key_id,
        callback_url=CALLBACK_URL,
        client_secret_prefix=SECRET_PREFIX,
    )
    services = build_services(settings, config=test_config(server), session=session, clock=clock)
    use_services(services)
    return Vault(
        server=server,
        session=session,
        services=services,
        clock=clock,
        counter=counter,
        id_tokens=id_tokens,
    )
