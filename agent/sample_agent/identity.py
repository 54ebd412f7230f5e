"""Who a request is for: the user the agent acts for when it asks the vault."""

from __future__ import annotations

from fastapi import Request

from agent_vault import UserIdentity
from sample_agent.settings import AgentSettings

ID_TOKEN_COOKIE = "agent_id_token"  # noqa: S105 - a cookie name  # nosec B105
"""The ID token of the user logged in in this browser (set by the login, HttpOnly)."""


def user_of(request: Request, settings: AgentSettings) -> UserIdentity | None:
    """In order: an ``Authorization: Bearer <id_token>`` header (an API caller), the login
    cookie, the configured default user; None if there is none. The vault verifies the ID
    token on every use."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and header[7:].strip():
        return UserIdentity(id_token=header[7:].strip())
    cookie = request.cookies.get(ID_TOKEN_COOKIE)
    if cookie:
        return UserIdentity(id_token=cookie)
    if settings.default_user is not None:
        return settings.default_user()
    return None
