"""The application's own user login: OpenID Connect (authorization code + PKCE), by Authlib.

Authlib's Starlette client runs the protocol, none of it is written here: discovery
(``<issuer>/.well-known/openid-configuration``); ``state``, ``nonce`` and the PKCE verifier
(S256), kept between ``/login`` and ``/login/callback`` in Starlette's signed session cookie, so
a callback is accepted only in the browser that started the login; the code exchange at the
token endpoint (``client_secret_basic``; the provider redeems a code once); and the ID token's
validation: its signature with the issuer's JWKS (only algorithms the issuer advertises; fetched
again on an unknown ``kid``), ``iss`` (exactly the configured issuer), ``aud`` (contains this
client), ``exp``, ``iat``, ``nbf``, ``nonce``, ``azp`` and ``at_hash``. Only a token that passes
becomes the browser's identity cookie (the vault verifies it again on every use).

The routes (:mod:`sample_agent.app`) import this module only when a login is configured.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from joserfc.errors import JoseError

from sample_agent import pages
from sample_agent.identity import ID_TOKEN_COOKIE
from sample_agent.settings import OidcSettings

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 package and says so at import when it runs on httpx (still
    # supported; the agent uses httpx). Its own module adds an "always" filter for its warnings
    # when imported: this filter goes in front of it.
    import authlib.deprecate  # noqa: F401

    warnings.filterwarnings("ignore", "The httpx module is deprecated", DeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

log = logging.getLogger("agent")
# Authlib logs the PKCE verifier at DEBUG: keep its logger above that, whatever the app's level.
logging.getLogger("authlib").setLevel(logging.INFO)

CALLBACK_PATH = "/login/callback"
_NEXT = "login_next"
"""The session key of where to go after the login (a path of this agent)."""
_MIN_COOKIE_SECONDS = 60


def safe_next(target: str) -> str:
    """A path on this agent, never another site (``//host`` or a full URL become ``/``)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


class OidcLogin:
    """Logs the application's users in with their identity provider (sets the identity cookie)."""

    def __init__(self, settings: OidcSettings, *, timeout: float) -> None:
        self.settings = settings
        self._client: Any = OAuth().register(
            "oidc",
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            server_metadata_url=settings.issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_kwargs={
                "scope": "openid",
                "code_challenge_method": "S256",
                "timeout": timeout,
                "trust_env": False,
            },
        )

    async def begin(self, request: Request, public_base: str, target: str) -> Response:
        """Redirect to the provider's authorization endpoint (state, nonce, PKCE by Authlib)."""
        try:
            response: Response = await self._client.authorize_redirect(
                request, public_base + CALLBACK_PATH
            )
        except (httpx.HTTPError, ValueError, RuntimeError) as exc:  # discovery failed
            log.warning("login: no provider metadata (%s)", type(exc).__name__)
            return pages.login_failed("The identity provider could not be reached.", 502)
        request.session[_NEXT] = safe_next(target)
        return response

    async def finish(self, request: Request, public_base: str) -> Response:
        """The provider's redirect back: exchange the code, validate the ID token, set the
        identity cookie and go where the login was asked from."""
        target = safe_next(str(request.session.pop(_NEXT, "/")))
        # A fresh dict each time: Authlib consumes the options.
        claims_options = {
            "iss": {"essential": True, "value": self.settings.issuer},
            "aud": {"essential": True, "value": self.settings.client_id},
        }
        try:
            token = await self._client.authorize_access_token(
                request, claims_options=claims_options
            )
        except (OAuthError, JoseError) as exc:
            # The provider's error, a state this browser did not start (or already used), a
            # refused code, or an ID token whose signature or claims are wrong.
            log.warning("login refused: %s", exc.error)
            return pages.login_failed(f"The login was refused ({exc.error}).")
        except (httpx.HTTPError, ValueError, RuntimeError) as exc:
            log.warning("login: the identity provider failed (%s)", type(exc).__name__)
            return pages.login_failed("The identity provider could not be reached.", 502)
        id_token, claims = token.get("id_token"), token.get("userinfo")
        if not isinstance(id_token, str) or claims is None:
            return pages.login_failed("The identity provider sent no ID token.")
        response = RedirectResponse(urlsplit(public_base).path + target, status_code=303)
        response.set_cookie(
            ID_TOKEN_COOKIE,
            id_token,
            max_age=max(_MIN_COOKIE_SECONDS, int(claims["exp"]) - int(time.time())),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response
