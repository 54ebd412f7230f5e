"""Who the user is: an identity token verified against its issuer's JWKS, or an asserted id.

Users are compared by (issuer, subject), never by token bytes, so the application may present a
different token of the same user at binding than the one the session started with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import urllib3
from joserfc.errors import JoseError

if TYPE_CHECKING:
    from joserfc.jwk import KeySet

from vault import jsondoc
from vault.config import IdentityIssuerConfig, VaultConfig
from vault.errors import InvalidUserToken, ProviderError
from vault.models import UserRef

JWKS_TTL_SECONDS = 3600
JWKS_MIN_REFETCH_SECONDS = 60
LEEWAY_SECONDS = 60
MAX_TOKEN_CHARS = 8192
ASSERTED_ISSUER_PREFIX = "urn:agent-vault:asserted:"


class IdentityVerifier:
    """Verifies user identity tokens for the configured issuers."""

    def __init__(
        self, config: VaultConfig, http: urllib3.PoolManager, clock: Callable[[], float] = time.time
    ) -> None:
        self._issuers = {i.issuer: i for i in config.user_identity_issuers}
        self._config = config
        self._http = http
        self._clock = clock
        self._keys: dict[str, tuple[KeySet, float]] = {}
        self._lock = threading.Lock()

    def user_from(self, user: dict[str, Any], agent: str) -> UserRef:
        """The user named by a request's `user` member: `{"id_token"}` or `{"user_id"}`."""
        if "id_token" in user:
            return self.verify(str(user["id_token"]))
        if not self._config.agents[agent].may_assert_user_id:
            raise InvalidUserToken(
                f"agent {agent!r} may not assert a user id (agents.{agent}.may_assert_user_id);"
                " present the user's identity token instead"
            )
        return UserRef(iss=ASSERTED_ISSUER_PREFIX + agent, sub=str(user["user_id"]))

    def issues(self, issuer: str | None) -> bool:
        """Whether `issuer` is a configured identity issuer of users (user_identity_issuers)."""
        return issuer is not None and issuer in self._issuers

    def verify(self, token: str, audiences: tuple[str, ...] | None = None) -> UserRef:
        """The user an identity token names; `audiences` replaces the issuer's configured ones
        (an ID token the vault itself received as a provider's client names that client)."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise InvalidUserToken("the identity token is not a compact JWT")
        try:
            _, unverified = jsondoc.unverified_jws(token)  # before joserfc: deep nesting is a 401
        except ValueError as exc:
            raise InvalidUserToken("the identity token is malformed") from exc
        issuer = unverified.get("iss") if isinstance(unverified, dict) else None
        config = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if config is None:
            raise InvalidUserToken(
                "the identity token's issuer is not configured (user_identity_issuers)"
            )
        claims = self._decode(token, config)
        from joserfc import jwt  # see _decode

        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "values": list(audiences or config.audiences)},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidUserToken(f"the identity token is not valid here ({exc.error})") from exc
        sub = claims["sub"]
        if not isinstance(sub, str) or not 0 < len(sub) <= 255:
            raise InvalidUserToken("the identity token's subject is not valid")
        return UserRef(iss=config.issuer, sub=sub)

    def _decode(self, token: str, config: IdentityIssuerConfig) -> dict[str, Any]:
        """Verify the signature; on failure refetch the JWKS once (key rotation), rate-limited."""
        # Imported at the first identity token, not at cold start: joserfc.jwt brings JWE (and
        # its algorithms) along, and its keys the X.509/PEM machinery; a function that never
        # reads an identity token (the reaper, the callback) never imports them.
        from joserfc import jwt

        for force in (False, True):
            keys = self._key_set(config, force=force)
            if keys is None:
                break
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, keys, algorithms=list(config.algorithms)
                ).claims
                return claims
            except (JoseError, ValueError, TypeError, KeyError, RecursionError):
                continue
        raise InvalidUserToken("the identity token's signature does not verify")

    def _key_set(self, config: IdentityIssuerConfig, *, force: bool) -> KeySet | None:
        with self._lock:
            cached = self._keys.get(config.issuer)
            now = self._clock()
            if cached and not force and now - cached[1] < JWKS_TTL_SECONDS:
                return cached[0]
            if cached and force and now - cached[1] < JWKS_MIN_REFETCH_SECONDS:
                return None
            try:
                response = self._http.request(
                    "GET", config.jwks_uri, timeout=3.0, retries=False, redirect=False
                )
                from joserfc.jwk import KeySet  # at the first identity token (see _decode)

                keys = KeySet.import_key_set(jsondoc.loads(response.data))
            except (urllib3.exceptions.HTTPError, ValueError, JoseError, TypeError) as exc:
                raise ProviderError("the identity provider's keys could not be fetched") from exc
            self._keys[config.issuer] = (keys, now)
            return keys
