"""The vault under test: real handlers and services over in-process moto and a real provider."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from agent_vault_local.consent_forms import Decision, complete_consent
from agent_vault_local.events import LambdaContext, resolve_handler, scheduled_event
from agent_vault_local.provider import AuthorizationServer
from tests.support.agent import TestAgent
from tests.support.apigw import DOMAIN, HttpAnswer, build_event, invoke
from tests.support.aws import ACCOUNT, RequestCounter
from vault import tokens
from vault.caller import caller_from
from vault.config import VaultConfig
from vault.models import UserRef
from vault.routes import ADMIN_API, REAPER
from vault.runtime import Services, Settings, build_services, use_services
from vault.schemas import TokenRequest
from vault.sessions import HttpCall
from vault.store.schema import create_tables

TABLE, REPLAY_TABLE = "agent-vault-test", "agent-vault-test-replay"
CALLBACK_URL = "http://127.0.0.1:8765/v1/oauth/callback"
"""The vault's OAuth callbacks' base (handlers run in-process: never requested over HTTP); each
provider's own redirect URI is CALLBACK_URL/{provider}."""
TEST_PROVIDERS = (
    "calendar",
    "calendar-post",
    "calendar-public",
    "calendar-other",
    # added by single tests (tests/security/test_attacks_refresh.py)
    "calendar-short",
    "calendar-steady",
    "calendar-wide",
)
CALLBACK_URLS = (*(f"{CALLBACK_URL}/{name}" for name in TEST_PROVIDERS), CALLBACK_URL)
"""Registered at the provider: each provider's own callback, and the legacy shared one."""
APP_REDIRECT_URI = "http://127.0.0.1:8765/app/callback"
RETURN_URL = "https://app.example.test/consent/return"
SECRET_PREFIX = "agent-vault/test/provider/"
API_KEY_PREFIX = "agent-vault/test/apikey/"
"""Where the vault keeps API keys (flow 12): derived from SECRET_PREFIX, as in the stack."""
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
                "calendar": {
                    **provider,
                    "api_base_urls": [server.calendar_api_base],
                    "dpop": True,
                },
                "calendar-post": {
                    **provider,
                    "client_id": server.post_client_id,
                    "client_auth_method": "client_secret_post",
                },
            },
            "agents": {
                # calendar-agent and mail-agent opt in to bearer delivery: the tests of flows
                # 1-9 read the tokens themselves
                "calendar-agent": {
                    "role_name": "calendar-agent-role",
                    # flow 8 (tests/security/test_attacks_delegation.py adds more links)
                    "may_delegate_to": ["proxy-agent"],
                    "providers": {
                        "calendar": {
                            "scopes": ["calendar.read", "calendar.write"],
                            "delivery": "bearer",
                        },
                        "calendar-post": {"scopes": ["calendar.read"], "delivery": "bearer"},
                    },
                },
                "mail-agent": {
                    "role_name": "mail-agent-role",
                    "may_assert_user_id": True,
                    "providers": {
                        "calendar": {"scopes": ["mail.read", "calendar.read"], "delivery": "bearer"}
                    },
                },
                # the calendar through the vault's proxy (the default delivery there): reads
                # anything under /calendar, writes only events
                "proxy-agent": {
                    "role_name": "proxy-agent-role",
                    "providers": {
                        "calendar": {
                            "scopes": ["calendar.read", "calendar.write"],
                            "requests": [
                                {"methods": ["GET", "HEAD"], "paths": ["/calendar/**"]},
                                {"methods": ["POST", "PUT"], "paths": ["/calendar/events"]},
                            ],
                        }
                    },
                },
                # tokens bound to the session key (RFC 9449)
                "dpop-agent": {
                    "role_name": "dpop-agent-role",
                    "providers": {
                        "calendar": {"scopes": ["calendar.read"], "delivery": "dpop"},
                    },
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
    container_requests: list[Counter[str]] = field(default_factory=list)
    """Each container's DynamoDB requests by operation in the last `concurrent_tokens`."""

    def redeploy(
        self, config: dict[str, Any] | None = None, settings: Settings | None = None
    ) -> Services:
        """Fresh Lambda containers (every cache cold), with `config` (a VaultConfig's JSON) and
        `settings` (the functions' environment) in place of the current ones where given: what a
        new deployment does."""
        self.services = build_services(
            settings or self.services.settings,
            config=self.services.config if config is None else VaultConfig.model_validate(config),
            session=self.session,
            clock=self.clock,
        )
        use_services(self.services)
        return self.services

    # --- principals ---------------------------------------------------------------------

    def agent(
        self,
        role: str = "calendar-agent-role",
        task_id: str | None = None,
        *,
        function_url: bool = False,
    ) -> TestAgent:
        import secrets

        return TestAgent(
            role, task_id or secrets.token_hex(16), self.clock, ACCOUNT, function_url=function_url
        )

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

    def admin_get(self, path: str, query: dict[str, str] | None = None) -> HttpAnswer:
        """A read API request (`GET /v1/admin/...`) by the admin."""
        return invoke(
            build_event(
                "GET",
                path,
                query=query,
                principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/vault-admin/ops",
            )
        )

    # --- consent ------------------------------------------------------------------------

    def callback(self, query: str, provider: str | None = "calendar") -> HttpAnswer:
        """The provider's redirect to `provider`'s own callback (None: the legacy shared one)."""
        path = "/v1/oauth/callback" + (f"/{provider}" if provider is not None else "")
        return invoke(build_event("GET", path, query=query))

    def consent_at_provider(
        self, authorization_url: str, username: str, decision: Decision = "allow"
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
        back = self.callback(query, provider)
        assert back.status == 302, back.body
        flow_id = started.json["flow_id"]
        return agent.complete(
            flow_id, self.user(completing_user or username), binding_code_of(back)
        )

    # --- storage ------------------------------------------------------------------------

    @cached_property
    def _dynamodb(self) -> Any:
        return self.session.client("dynamodb")

    def items(self) -> list[dict[str, Any]]:
        pages = self._dynamodb.get_paginator("scan").paginate(TableName=TABLE, ConsistentRead=True)
        items = [i for page in pages for i in page["Items"]]
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    def snapshot(self) -> list[dict[str, Any]]:
        """Everything stored but the replay cache (which a proof check may legitimately add)."""
        return self.items()

    # --- many containers at once --------------------------------------------------------

    def concurrent_tokens(
        self,
        agent: TestAgent,
        containers: int,
        provider: str = "calendar",
        scopes: tuple[str, ...] = ("calendar.read",),
        flow: Callable[..., dict[str, Any]] = tokens.get_token,
    ) -> list[Any]:
        """The same token request from N Lambda containers at once (threads with their own
        services: caches and provider clients); each result is an answer dict or the error.
        `container_requests` then holds each container's DynamoDB requests by operation.
        `flow` answers the request (`tokens.get_token`, or `machine.get_token`)."""
        path = f"/v1/sessions/{agent.session_id}/tokens"
        caller = caller_from(build_event("POST", path, principal_arn=agent.arn))
        body = TokenRequest(provider=provider, scopes=list(scopes))
        results: list[Any] = []
        gate = threading.Barrier(containers)
        # each container's DynamoDB requests by operation (its thread makes them)
        requests: dict[int, Counter[str]] = {}

        def count(model: Any = None, **_: Any) -> None:
            ops = requests.setdefault(threading.get_ident(), Counter())
            ops[getattr(model, "name", "?")] += 1

        def container() -> None:
            svc = build_services(
                self.services.settings,
                config=self.services.config,
                session=self.session,
                clock=self.clock,
            )
            call = HttpCall("POST", f"https://{DOMAIN}{path}", agent.proof("POST", path))
            gate.wait()
            try:
                results.append(flow(svc, caller, agent.session_id or "", call, body))
            except Exception as exc:  # the caller asserts on it
                results.append(exc)

        events = self.session.events
        events.register("before-call.dynamodb", count)  # copied into the containers' clients
        try:
            threads = [threading.Thread(target=container) for _ in range(containers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            events.unregister("before-call.dynamodb", count)
        self.container_requests = list(requests.values())
        return results


def connected(
    vault: Vault,
    scopes: tuple[str, ...] = ("calendar.read", "calendar.write"),
    username: str = "alice",
    **agent_kw: Any,
) -> tuple[TestAgent, dict[str, Any]]:
    """An agent with a live session for `username` and its bound grant at the calendar (the
    binding's answer: its `grant_id`)."""
    agent = vault.agent(**agent_kw)
    assert agent.start_session(vault.user(username)).status == 201
    bound = vault.connect(agent, scopes=scopes, username=username)
    assert bound.status == 200, bound.body
    return agent, bound.json


def revoke_refresh_at_provider(
    vault: Vault, username: str = "alice", agent: str = "calendar-agent"
) -> None:
    """The user revokes the vault's access at the provider: the stored grant's refresh token
    dies there (the vault is not told; its next refresh is refused)."""
    stored = vault.services.store.grants.get(
        UserRef(vault.server.issuer, username), agent, "calendar"
    )
    assert stored is not None
    refresh = vault.services.envelope.decrypt(stored.refresh_token_ct, stored.context).decode()
    assert vault.server.revoke(refresh, token_type_hint="refresh_token") == 200


def binding_code_of(callback: HttpAnswer) -> str:
    """The one-time binding code the callback put in its redirect to the return URL (only there)."""
    location = callback.headers["location"]
    codes = parse_qs(urlsplit(location).query).get("binding_code", [])
    assert len(codes) == 1, location
    return codes[0]


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
        # the bundled calendar API listens on loopback, as in local mode
        egress_allow_loopback=True,
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


def task_stopped(task_id: str, event_id: str | None = None) -> dict[str, Any]:
    """EventBridge's "ECS Task State Change" event for a stopped task."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": ACCOUNT,
        "region": "eu-west-1",
        "time": "2026-11-28T12:00:00Z",
        "resources": [],
        "detail": {
            "taskArn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/agents/{task_id}",
            "clusterArn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/agents",
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "stoppedReason": "Scaling activity",
        },
    }


def scheduled_sweep() -> dict[str, Any]:
    """Deliver the unbound-flow sweep's scheduled EventBridge event to the admin handler."""
    event = scheduled_event("sweep", region="eu-west-1", account=ACCOUNT)
    result: dict[str, Any] = resolve_handler(ADMIN_API)(event, LambdaContext())
    return result


def reap(event: dict[str, Any]) -> dict[str, Any]:
    """Deliver an EventBridge event to the reaper handler, as Lambda would."""
    result: dict[str, Any] = resolve_handler(REAPER)(event, LambdaContext())
    return result
