"""Flow 12: API-key credentials. A provider configured with `api_key` takes a static key the
provider issued: one key for the provider, or (`per: user`) each user's own key.

Keys are written by an admin (`PUT /v1/admin/api-keys/{provider}`, `agent-vault apikey set`;
the key in the JSON body, never in a URL) into Secrets Manager under the vault's key
(`vault.store.apikeys`), and deleted the same way. The same policy as for tokens decides who
gets to use one: the agent must have the provider in its policy; a delegated session never gets
one (API keys are not delegated); a per-user key is looked up by the session's own user only,
so it is never used for another user's session. Delivery is `proxy` by default (the proxy puts
the key in the configured header or query parameter; the key never leaves the vault) or, where
the agent's policy opts in, `returned` (`POST /v1/sessions/{id}/api-key` hands the key over).

Rotation: setting a new key keeps the previous one for the provider's `rotation_window_seconds`.
The proxy always sends the current key; when the provider answers 401 to an idempotent request,
the proxy retries it once, with a key set meanwhile by another container if there is one, else
with the previous key while the window lasts. So an operator may set the new key in the vault
before or after enabling it at the provider, and revoke the old one at the provider once the
window is over.

Audit: `apikey.set`, `apikey.delete`, `apikey.deliver` (returned); a proxied call's `proxy.call`
event records `credential: api_key` and which key version answered. Never the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote_plus

from pydantic import ValidationError

from vault.audit import decision
from vault.caller import Caller, agent_of, require_admin
from vault.config import NAME_PATTERN, ApiKeyConfig, VaultConfig
from vault.errors import (
    ApiKeyNotSet,
    DeliveryProxyOnly,
    InvalidApiKey,
    InvalidRequest,
    NotAnApiKeyProvider,
    UnknownProvider,
)
from vault.models import Session, UserRef
from vault.policy import check_delegated, delivery_of
from vault.runtime import Services
from vault.schemas import ApiKeyRequest, ApiKeyUserQuery, ApiKeyWrite, RevokedUser
from vault.sessions import HttpCall, authorize_session_call
from vault.store.apikeys import StoredApiKey

_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")
"""Visible ASCII: a key goes into a header or a query parameter as it is."""


def is_api_key(config: VaultConfig, provider: str) -> bool:
    """Whether `provider` is an API-key provider."""
    found = config.providers.get(provider)
    return found is not None and found.api_key is not None


def settings_of(config: VaultConfig, provider: str) -> ApiKeyConfig:
    """The `api_key` section of an API-key provider (400 for any other provider)."""
    if not re.fullmatch(NAME_PATTERN, provider):
        raise UnknownProvider("no provider of that name is configured (providers)")
    found = config.providers.get(provider)
    if found is None:
        raise UnknownProvider(f"no provider named {provider!r} is configured (providers)")
    if found.api_key is None:
        raise NotAnApiKeyProvider(
            f"provider {provider!r} is an OAuth provider, not an API-key provider"
            f" (providers.{provider}.api_key)",
            provider=provider,
        )
    return found.api_key


def _secret_name(svc: Services, provider: str, settings: ApiKeyConfig, user: UserRef | None) -> str:
    return svc.api_keys.name(provider, user.key if settings.per == "user" and user else None)


def _user_of(provider: str, settings: ApiKeyConfig, given: RevokedUser | None) -> UserRef | None:
    """The user a written or deleted key is for: given exactly at a per-user provider."""
    if settings.per == "user" and given is None:
        raise InvalidRequest(
            f"provider {provider!r} takes one API key per user: name the user (iss, sub)",
            provider=provider,
        )
    if settings.per == "provider" and given is not None:
        raise InvalidRequest(
            f"provider {provider!r} takes one API key for every user: name no user",
            provider=provider,
        )
    return UserRef(given.iss, given.sub) if given is not None else None


# --- admin: set, delete ------------------------------------------------------------------------


def set_key(
    svc: Services, caller: Caller, provider: str, body_of: Callable[[], ApiKeyWrite]
) -> dict[str, Any]:
    """`PUT /v1/admin/api-keys/{provider}`: store a new key; the one it replaces stays usable for
    the rotation window. Admins only (checked before the body is read); nothing is stored
    unless every check passes."""
    with decision("apikey.set", principal=caller.arn) as d:
        require_admin(svc.config, caller)
        settings = settings_of(svc.config, provider)
        d.bind(provider=provider)
        body = body_of()
        user = _user_of(provider, settings, body.user)
        d.bind(user=user)
        key = body.key
        if not key or len(key) > settings.max_key_chars or not _KEY_CHARS.match(key):
            raise InvalidApiKey(
                f"an API key is 1 to {settings.max_key_chars} visible ASCII characters"
                f" (providers.{provider}.api_key.max_key_chars)",
                provider=provider,
                max_chars=settings.max_key_chars,
            )
        name = _secret_name(svc, provider, settings, user)
        old = svc.api_keys.get(name, fresh=True)
        now = svc.now()
        if old is not None and old.current == key:
            d.note(rotation="unchanged")
            stored = old
        else:
            previous = old.current if old is not None and settings.rotation_window_seconds else None
            stored = StoredApiKey(name, key, previous, now)
            svc.api_keys.put(stored, exists=old is not None)
            d.note(rotation="rotated" if previous is not None else "first")
    answer: dict[str, Any] = {
        "provider": provider,
        "status": "set",
        "rotated_at": stored.rotated_at,
        "previous_valid_until": (
            stored.rotated_at + settings.rotation_window_seconds if stored.previous else None
        ),
    }
    if user is not None:
        answer["user"] = user.as_dict()
    return answer


def delete_key(
    svc: Services, caller: Caller, provider: str, query: dict[str, str]
) -> dict[str, Any]:
    """`DELETE /v1/admin/api-keys/{provider}[?user_iss=&user_sub=]`: the key (current and
    previous) is gone at once here and within `vault.store.apikeys.CACHE_SECONDS` in every
    other container. Admins only."""
    with decision("apikey.delete", principal=caller.arn) as d:
        require_admin(svc.config, caller)
        settings = settings_of(svc.config, provider)
        d.bind(provider=provider)
        try:
            given = ApiKeyUserQuery.model_validate(query).user()
        except ValidationError as exc:
            raise InvalidRequest(
                "the query takes user_iss and user_sub (both, at a per-user provider) only"
            ) from exc
        user = _user_of(provider, settings, given)
        d.bind(user=user)
        deleted = svc.api_keys.delete(_secret_name(svc, provider, settings, user))
        d.conclude("revoked" if deleted else "already_gone", reason="admin_revocation")
    answer: dict[str, Any] = {"provider": provider, "deleted": deleted}
    if user is not None:
        answer["user"] = user.as_dict()
    return answer


# --- use: the proxy, or handed to the agent ----------------------------------------------------


def key_for(svc: Services, session: Session, provider: str, *, fresh: bool = False) -> StoredApiKey:
    """The key the session's agent uses at `provider`: the provider's, or the session's own
    user's (never another user's: the secret's name is the session user's); 403
    `api_key_not_set` when there is none. The caller checked the agent's policy."""
    settings = settings_of(svc.config, provider)
    stored = svc.api_keys.get(_secret_name(svc, provider, settings, session.user), fresh=fresh)
    if stored is None:
        whose = "for this session's user " if settings.per == "user" else ""
        raise ApiKeyNotSet(
            f"no API key is set {whose}at {provider!r}: an admin sets one"
            f" (PUT /v1/admin/api-keys/{provider})",
            provider=provider,
            per=settings.per,
        )
    return stored


def forget(svc: Services, stored: StoredApiKey) -> None:
    """The provider refused a cached key: the next request reads the secret again."""
    svc.api_keys.forget(stored.name)


def inject(
    settings: ApiKeyConfig, key: str, headers: dict[str, str], query: str
) -> tuple[dict[str, str], str]:
    """The request's headers and query with the key where the provider takes it."""
    if settings.header is not None:
        return {**headers, settings.header.lower(): f"{settings.prefix}{key}"}, query
    assert settings.query_parameter is not None  # the config names one or the other
    added = f"{settings.query_parameter}={quote(key, safe='')}"
    return headers, f"{query}&{added}" if query else added


def check_query(provider: str, settings: ApiKeyConfig, query: str) -> None:
    """A query-parameter provider: the agent's own query may not carry that parameter (the
    provider might take the agent's value, or the vault's key might be sent twice)."""
    name = settings.query_parameter
    if name is None or not query:
        return
    if any(unquote_plus(part.split("=", 1)[0]) == name for part in query.split("&")):
        raise InvalidRequest(
            f"the query carries {name!r}, where the vault puts {provider!r}'s API key",
            provider=provider,
        )


def get_key(
    svc: Services, caller: Caller, session_id: str, call: HttpCall, body: ApiKeyRequest
) -> dict[str, Any]:
    """`POST /v1/sessions/{id}/api-key`: the key itself, for an agent whose policy at the
    provider says `delivery: returned` (403 `delivery_proxy_only` for a proxy agent)."""
    agent = agent_of(svc.config, caller)
    provider = body.provider
    with decision(
        "apikey.deliver",
        only_refusals=True,
        agent=agent,
        principal=caller.arn,
        provider=provider,
        session_id=session_id,
    ):
        settings = settings_of(svc.config, provider)
        delivery = delivery_of(svc.config, agent, provider)
        if delivery != "returned":
            proxy_path = f"/v1/sessions/{session_id}/proxy/{provider}/"
            raise DeliveryProxyOnly(
                f"agent {agent!r} reaches {provider!r} through the proxy: {proxy_path}...;"
                " the API key never leaves the vault",
                provider=provider,
                proxy_path=proxy_path,
            )
    session, _ = authorize_session_call(svc, caller, session_id, call)
    with decision(
        "apikey.deliver",
        agent=agent,
        user=session.user,
        provider=provider,
        session_id=session_id,
        task_id=session.task_id,
    ) as d:
        check_delegated(svc.config, session, provider, ())
        # read from Secrets Manager, not the container's 30 s cache: a key an admin deleted or
        # replaced is never handed out again (the proxy's cached use re-reads on a 401)
        stored = key_for(svc, session, provider, fresh=True)
        d.note(credential="api_key")
    answer: dict[str, Any] = {"api_key": stored.current, "provider": provider}
    if settings.header is not None:
        answer |= {"header": settings.header, "prefix": settings.prefix}
    else:
        answer["query_parameter"] = settings.query_parameter
    return answer
