"""Test helpers that drive a running local mode the way the parts do in AWS (over HTTP)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import urllib3

from agent_vault import UserIdentity, VaultClient
from agent_vault_local.consent_forms import complete_consent
from agent_vault_local.demo import id_token_for, vault_client
from agent_vault_local.provider import http_request
from agent_vault_local.runner import ADMIN, LocalInfo

__all__ = ["CountingPool", "approve", "consent", "fresh_grants", "id_token_for", "vault_client"]


class CountingPool(urllib3.PoolManager):
    """A urllib3 pool that records the requests it sends (method, path)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        self.calls.append((method, urlsplit(url).path))
        return super().request(method, url, *args, **kwargs)


def approve(
    info: LocalInfo,
    authorization_url: str,
    username: str,
    binder: VaultClient,
    *,
    decision: str = "allow",
) -> dict[str, str]:
    """The user's part of consent, then the app's binding: log in and answer the provider's
    consent page, follow the redirect to the vault callback, and complete the flow as the user
    logged in at the app. Returns the return URL's query (flow_id, status...)."""
    callback = complete_consent(authorization_url, username, info.users[username], decision)  # type: ignore[arg-type]
    assert callback.startswith(info.callback_url), callback
    answer = http_request("GET", callback)
    assert answer.status == 302, answer.body[:300]
    location = answer.headers["Location"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    if query.get("status") == "pending_binding":
        binder.complete_flow(
            query["flow_id"],
            UserIdentity(id_token=id_token_for(info, username)),
            query["binding_code"],
        )
    return query


def consent(
    info: LocalInfo, client: VaultClient, username: str, scopes: Iterable[str] = ("calendar.read",)
) -> dict[str, str]:
    """Start an authorization on ``client``'s session and let ``username`` consent and bind."""
    authorization = client.start_authorization(info.provider_name, list(scopes))
    return approve(info, authorization.authorization_url, username, client)


def fresh_grants(info: LocalInfo, *usernames: str) -> None:
    """Revoke the users' grants (admin API), so the next token request needs consent again."""
    admin = vault_client(info, ADMIN)
    for username in usernames:
        admin.revoke(user={"iss": info.provider["issuer"], "sub": username})
    admin.close(end_session=False)
