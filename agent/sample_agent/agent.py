"""The agent: one vault session per user, the calendar call with a delegated token, the binding.

For each user it keeps one Agent Vault session (an ephemeral key in memory, the user's identity
token) and reads the calendar API with the SDK's httpx client: through the vault's egress proxy
when the provider's delivery is ``proxy`` (the token never reaches the agent), else with a
``calendar.read`` token of the session (DPoP-bound or bearer). Nothing here knows the agent's
own HTTP routes or pages: :mod:`sample_agent.app` does.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent_vault import (
    Connection,
    ConsentRequired,
    SessionEnded,
    UserIdentity,
    VaultClient,
    VaultError,
)
from sample_agent.intents import describe_events, parse_intent
from sample_agent.settings import AgentSettings


class ConsentNeeded(Exception):
    def __init__(self, url: str, flow_id: str | None) -> None:
        super().__init__(url)
        self.url = url
        self.flow_id = flow_id


class CalendarApiError(Exception):
    pass


class NotConfigured(Exception):
    pass


class NotLoggedIn(Exception):
    """Connected accounts need the user's identity token (a login), not a configured user id."""


class _SharedTransport(httpx.BaseTransport):
    """One pool under every per-call client: closing a client leaves the pool open."""

    def __init__(self) -> None:
        self.pool = httpx.HTTPTransport(trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.pool.handle_request(request)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _identity_key(user: UserIdentity) -> str:
    raw = f"t:{user.id_token}" if user.id_token is not None else f"u:{user.user_id}"
    return hashlib.sha256(raw.encode()).hexdigest()


class CalendarAgent:
    """One vault session per user identity (bounded, LRU), the calendar call, the binding."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, VaultClient] = OrderedDict()
        # one connection pool for every user's calls (the provider's API or the vault's proxy)
        self._transport = _SharedTransport()
        # Binding needs no session: any task of this agent may complete the agent's flows.
        self._binder = self._new_client(None)

    def _new_client(self, user: UserIdentity | None) -> VaultClient:
        return VaultClient(
            self.settings.vault_url,
            proxy_url=self.settings.proxy_url,
            signing_service=self.settings.signing_service,
            user=user,
            credentials=self.settings.credentials,
            region=self.settings.region,
        )

    def client_for(self, user: UserIdentity) -> VaultClient:
        key = _identity_key(user)
        evicted: VaultClient | None = None
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._new_client(user)
                if len(self._clients) > self.settings.max_sessions:
                    _, evicted = self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
        if evicted is not None:
            evicted.close()
        return client

    def _forget(self, user: UserIdentity) -> None:
        with self._lock:
            self._clients.pop(_identity_key(user), None)

    def events(self, user: UserIdentity, return_url: str) -> list[dict[str, Any]]:
        """The user's events, fetched the way the vault says this agent reaches the calendar
        provider: through the vault's egress proxy (``proxy``: no token reaches this process),
        or with a token of this session (``dpop``: bound to the session key, a proof per call;
        ``bearer``). The SDK's httpx client does either (``VaultClient.http``)."""
        url = self.settings.calendar_api_url
        if not url:
            raise NotConfigured("no calendar API is configured (CALENDAR_API_URL)")
        provider, scopes = self.settings.provider, self.settings.scopes
        for attempt in (1, 2):
            client = self.client_for(user)
            try:
                access = client.ensure_session().providers.get(provider)
                # a provider without API base URLs (bearer delivery): the calendar API's origin
                api_base = None if access and access.api_base_urls else _origin(url)
                with client.http(
                    provider,
                    scopes=scopes,
                    api_base=api_base,
                    transport=self._transport,
                    timeout=self.settings.http_timeout,
                    trust_env=False,
                ) as http:
                    response = http.get(url, headers={"Accept": "application/json"})
            except ConsentRequired as exc:
                if exc.authorization_url is not None:
                    raise ConsentNeeded(exc.authorization_url, exc.flow_id) from exc
                started = client.start_authorization(provider, scopes, return_url)
                raise ConsentNeeded(started.authorization_url, started.flow_id) from exc
            except SessionEnded:
                # The session expired (or was ended): start a new one, once.
                self._forget(user)
                if attempt == 2:
                    raise
                continue
            except VaultError as exc:
                if exc.code == "request_not_allowed":
                    raise NotConfigured(
                        "CALENDAR_API_URL is not under the provider's api_base_urls"
                    ) from exc
                raise  # the vault's refusal (the user's identity, the session...): the app's
            if response.status_code != 200:
                raise CalendarApiError(f"the calendar API answered {response.status_code}")
            body = response.json()
            events = body.get("events", []) if isinstance(body, dict) else []
            return [e for e in events if isinstance(e, dict)]
        raise AssertionError("unreachable")

    def ask(self, user: UserIdentity, question: str, return_url: str) -> dict[str, Any]:
        intent = parse_intent(question)
        if intent is None:
            return {
                "answer": "I can tell you what is on your calendar. Try: "
                '"what is on my calendar today?"',
                "intent": None,
            }
        events = self.events(user, return_url)
        day = intent.day.isoformat()
        todays = [e for e in events if str(e.get("start", "")).startswith(day)]
        return {
            "answer": describe_events(todays, intent.day),
            "intent": intent.name,
            "day": day,
            "events": todays,
        }

    def complete(self, flow_id: str, user: UserIdentity, binding_code: str) -> dict[str, Any]:
        result = self._binder.complete_flow(flow_id, user, binding_code)
        return {
            "flow_id": result.flow_id,
            "status": result.status,
            "provider": result.provider,
            "scopes": list(result.scopes),
        }

    def connections(self, user: UserIdentity) -> list[Connection]:
        """The accounts the user connected to this agent (every page), as the vault lists them
        for the user its identity token names; needs no session."""
        if user.id_token is None:
            raise NotLoggedIn("log in to see your connected accounts")
        return list(self._binder.all_connections(user.id_token))

    def revoke_connection(self, user: UserIdentity, grant_id: str) -> dict[str, Any]:
        """Disconnect one of the user's accounts: the vault revokes it upstream and ends every
        token minted from it; this agent forgets the user's cached token too."""
        if user.id_token is None:
            raise NotLoggedIn("log in to disconnect an account")
        answer = self._binder.revoke_connection(user.id_token, grant_id)
        with self._lock:
            client = self._clients.get(_identity_key(user))
        if client is not None:
            client.forget_token(self.settings.provider, self.settings.scopes)
        return answer

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
        self._binder.close(end_session=False)
        self._transport.pool.close()
