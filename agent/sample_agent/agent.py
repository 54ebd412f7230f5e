"""The agent: one vault session per user, the calendar call with a delegated token, the binding.

For each user it keeps one Agent Vault session (an ephemeral key in memory, the user's identity
token), asks the vault for a ``calendar.read`` token through the SDK, and calls the calendar API
with it. Nothing here knows HTTP requests or pages: the routes (:mod:`sample_agent.app`) do.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import httpx

from agent_vault import ConsentRequired, SessionEnded, UserIdentity, VaultClient
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


def _identity_key(user: UserIdentity) -> str:
    raw = f"t:{user.id_token}" if user.id_token is not None else f"u:{user.user_id}"
    return hashlib.sha256(raw.encode()).hexdigest()


class CalendarAgent:
    """One vault session per user identity (bounded, LRU), the calendar call, the binding."""

    def __init__(self, settings: AgentSettings, *, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, VaultClient] = OrderedDict()
        self._http = http or httpx.Client(timeout=settings.http_timeout, trust_env=False)
        # Binding needs no session: any task of this agent may complete the agent's flows.
        self._binder = self._new_client(None)

    def _new_client(self, user: UserIdentity | None) -> VaultClient:
        return VaultClient(
            self.settings.vault_url,
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

    def calendar_token(self, user: UserIdentity, return_url: str) -> str:
        for attempt in (1, 2):
            client = self.client_for(user)
            try:
                token = client.get_token(
                    self.settings.provider,
                    self.settings.scopes,
                    authorize=True,
                    return_url=return_url,
                )
                return token.access_token
            except ConsentRequired as exc:
                assert exc.authorization_url is not None
                raise ConsentNeeded(exc.authorization_url, exc.flow_id) from exc
            except SessionEnded:
                # The session expired (or was ended): start a new one, once.
                self._forget(user)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def events(self, user: UserIdentity, return_url: str) -> list[dict[str, Any]]:
        if not self.settings.calendar_api_url:
            raise NotConfigured("no calendar API is configured (CALENDAR_API_URL)")
        for attempt in (1, 2):
            token = self.calendar_token(user, return_url)
            response = self._http.get(
                self.settings.calendar_api_url,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if response.status_code == 401 and attempt == 1:
                # The token was revoked or expired early: drop it and ask the vault again.
                self.client_for(user).forget_token(self.settings.provider, self.settings.scopes)
                continue
            if response.status_code != 200:
                raise CalendarApiError(f"the calendar API answered {response.status_code}")
            body = response.json()
            events = body.get("events", []) if isinstance(body, dict) else []
            return [e for e in events if isinstance(e, dict)]
        raise CalendarApiError("the calendar API refused a fresh token")

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

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
        self._binder.close(end_session=False)
        self._http.close()
