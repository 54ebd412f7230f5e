"""The SDK's httpx client through the real vault (local mode: the handlers, moto, oidc-provider
and its calendar API, behind the local API Gateway that verifies SigV4): proxy and bearer
delivery end to end, and the decorator's consent wait for a proxied call."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from agent_vault import ConsentRequired, UserIdentity, requires_http
from agent_vault.errors import DeliveryProxyOnly, RequestNotAllowed
from agent_vault_local.provider import http_request
from agent_vault_local.runner import BEARER_TASK_1, TASK_1, LocalInfo
from tests.local.helpers import approve, consent, vault_client

PROVIDER_PATH = "/calendar/events"


def alice(tokens: dict[str, str]) -> UserIdentity:
    return UserIdentity(id_token=tokens["alice"])


def provider_stats(local: LocalInfo) -> Any:
    return http_request("GET", f"{local.provider['issuer']}/__test/stats").json()


def test_proxy_delivery_end_to_end(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = vault_client(local, TASK_1, alice(tokens))
    session = client.start_session()
    access = session.providers[local.provider_name]
    assert access.delivery == "proxy"
    assert access.api_base_urls == (local.provider["calendar_api_base"],)
    with client.http(local.provider_name) as api:
        with pytest.raises(ConsentRequired):
            api.get(PROVIDER_PATH)
        consent(local, client, "alice")
        before = provider_stats(local)["api_requests"]["bearer"]
        response = api.get(PROVIDER_PATH, params={"day": "today"})
        assert response.status_code == 200, response.text
        assert response.headers["X-Agent-Vault-Proxy"] == "upstream"
        assert response.json()["user"] == "alice"
        assert provider_stats(local)["api_requests"]["bearer"] == before + 1
        missing = api.get("/calendar/nothing")  # the provider's 404 is an answer
        assert (missing.status_code, missing.headers["X-Agent-Vault-Proxy"]) == (404, "upstream")
        with pytest.raises(RequestNotAllowed):  # refused by the SDK: nothing is sent
            api.get(f"{local.provider['issuer']}/token")
    with pytest.raises(DeliveryProxyOnly):
        client.get_token(local.provider_name, ["calendar.read"])

    async def main() -> int:
        async with client.ahttp(local.provider_name) as api:
            return (await api.get(PROVIDER_PATH)).status_code

    assert asyncio.run(main()) == 200
    client.close()


def test_bearer_delivery_end_to_end(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = vault_client(local, BEARER_TASK_1, alice(tokens))
    assert client.start_session().providers[local.provider_name].delivery == "bearer"
    with client.http(local.provider_name, scopes=["calendar.read"]) as api:
        with pytest.raises(ConsentRequired):
            api.get(PROVIDER_PATH)
        consent(local, client, "alice")
        response = api.get(PROVIDER_PATH)
        assert response.status_code == 200, response.text
        assert "X-Agent-Vault-Proxy" not in response.headers  # straight from the provider
        assert response.json()["user"] == "alice"
    client.close()


def test_requires_http_waits_for_consent_of_a_proxied_call(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = vault_client(local, TASK_1, alice(tokens))
    binder = vault_client(local, TASK_1)
    calls: list[int] = []

    def user_consents(url: str) -> None:
        assert approve(local, url, "alice", binder)["status"] == "pending_binding"

    @requires_http(
        local.provider_name,
        ["calendar.read"],
        client=client,
        on_auth_url=user_consents,
        poll_interval=0.05,
    )
    def events(*, http: httpx.Client) -> Any:
        calls.append(1)
        return http.get(PROVIDER_PATH).json()

    assert events()["user"] == "alice"
    assert len(calls) == 2  # refused for consent, then once more
    client.close()
    binder.close(end_session=False)
