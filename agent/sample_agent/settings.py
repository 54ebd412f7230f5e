"""The sample agent's configuration, from the environment (read at start-up, not at import).

``AGENT_VAULT_URL``      the vault API (``https://<api>.execute-api.<region>.amazonaws.com``;
                         ``VAULT_URL`` is read too)
``AGENT_VAULT_PROXY_URL`` optional: the egress proxy's function URL (a deployment with
                         ``agent_endpoint: "function_url"``); default: the vault API
``AGENT_VAULT_SIGNING_SERVICE`` optional: ``lambda`` or ``execute-api``, the SigV4 service of
                         those URLs (a function URL behind a custom domain); default: from the
                         URLs' hosts
``AWS_REGION``           the vault's region (ECS sets it); or ``AGENT_VAULT_REGION``
``CALENDAR_API_URL``     the calendar API (``GET`` with a bearer token); without it the agent
                         starts but answers calendar questions with 503
``CALENDAR_PROVIDER``    the vault's provider name (``calendar``)
``CALENDAR_SCOPES``      scopes to ask for (``calendar.read``)
``AGENT_PUBLIC_URL``     this service's public base URL (return URL = ``<it>/consent/return``)
``OIDC_ISSUER``, ``OIDC_CLIENT_ID``, ``OIDC_CLIENT_SECRET``  optional: log users in with OIDC
``DEFAULT_USER_ID``      optional: act for this user id (needs ``may_assert_user_id``)
``AGENT_SESSION_SECRET`` optional: the key that signs the login's session cookie (at least 32
                         characters; every task behind one load balancer needs the same one);
                         without it each process makes a random one
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Secret

from agent_vault import UserIdentity

SESSION_SECRET_ENV = "AGENT_SESSION_SECRET"  # noqa: S105 - a variable's name  # nosec B105
SESSION_SECRET_MIN_LENGTH = 32


@dataclass(frozen=True)
class OidcSettings:
    """The application's own login (an OpenID Connect client of the users' identity provider)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class AgentSettings:
    vault_url: str
    calendar_api_url: str | None
    proxy_url: str | None = None
    """The egress proxy's own URL (a function URL); None: the vault API's."""
    signing_service: str | None = None
    """The SigV4 service of the vault's URLs (`lambda`, `execute-api`); None: from their hosts."""
    region: str | None = None
    provider: str = "calendar"
    scopes: tuple[str, ...] = ("calendar.read",)
    public_url: str | None = None
    credentials: Any = field(default=None, repr=False)
    """botocore credentials for vault calls (None: the default chain, e.g. the task role)."""
    default_user: Callable[[], UserIdentity] | None = field(default=None, repr=False)
    oidc: OidcSettings | None = None
    session_secret: str | None = field(default=None, repr=False)
    """Signs the login's session cookie (None: a random key made when the app is created)."""
    max_sessions: int = 100
    http_timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AgentSettings:
        env = dict(os.environ if environ is None else environ)
        vault_url = env.get("AGENT_VAULT_URL") or env.get("VAULT_URL")
        if not vault_url:
            raise RuntimeError("the agent needs AGENT_VAULT_URL (or VAULT_URL) in its environment")
        oidc = None
        if env.get("OIDC_ISSUER") and env.get("OIDC_CLIENT_ID"):
            oidc = OidcSettings(
                env["OIDC_ISSUER"], env["OIDC_CLIENT_ID"], env.get("OIDC_CLIENT_SECRET", "")
            )
        default_user: Callable[[], UserIdentity] | None = None
        if env.get("DEFAULT_USER_ID"):
            identity = UserIdentity(user_id=env["DEFAULT_USER_ID"])
            default_user = lambda: identity  # noqa: E731
        return cls(
            vault_url=vault_url,
            calendar_api_url=env.get("CALENDAR_API_URL") or None,
            proxy_url=env.get("AGENT_VAULT_PROXY_URL") or None,
            signing_service=env.get("AGENT_VAULT_SIGNING_SERVICE") or None,
            region=env.get("AGENT_VAULT_REGION") or env.get("AWS_REGION") or None,
            provider=env.get("CALENDAR_PROVIDER", "calendar"),
            scopes=tuple(env.get("CALENDAR_SCOPES", "calendar.read").split()),
            public_url=env.get("AGENT_PUBLIC_URL") or None,
            oidc=oidc,
            default_user=default_user,
            session_secret=env.get(SESSION_SECRET_ENV) or None,
        )


def session_key(configured: str | None) -> Secret:
    """The session cookie's signing key: the configured one, else a fresh random key that lives
    only in this process's memory (a restart logs out nobody: the session holds only a login in
    progress). ``Secret`` keeps it out of reprs and logs."""
    if not configured:
        return Secret(secrets.token_urlsafe(32))
    if len(configured) < SESSION_SECRET_MIN_LENGTH:
        raise RuntimeError(
            f"{SESSION_SECRET_ENV} must be at least {SESSION_SECRET_MIN_LENGTH} characters"
        )
    return Secret(configured)
