"""RFC 7523 client authentication (`private_key_jwt`): a short-lived JWT signed with the
client's private key, sent as `client_assertion`. The JOSE work is joserfc's.

The private key is the provider's secret in Secrets Manager (a JWK, JSON), read like a client
secret; it never appears in a log or an error (only the provider's name does).
"""

from __future__ import annotations

import json
import secrets

from joserfc.errors import JoseError

from vault.errors import ProviderError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LIFETIME_SECONDS = 60


def client_assertion(
    provider: str, client_id: str, audience: str, private_jwk: str, alg: str, now: float
) -> str:
    """A signed `client_assertion` (iss = sub = client_id, aud, a fresh jti, 60 s of life)."""
    # Imported at the first assertion, not at cold start: joserfc.jwt brings JWE along, its
    # keys the X.509/PEM machinery (vault.identity says the same).
    from joserfc import jwt
    from joserfc.jwk import JWKRegistry

    try:
        key = JWKRegistry.import_key(json.loads(private_jwk))
        if not key.is_private:
            raise ValueError("a public key")
        header: dict[str, str] = {"alg": alg, "typ": "JWT"}
        kid = key.get("kid")
        if isinstance(kid, str):
            header["kid"] = kid
        issued = int(now)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued,
            "exp": issued + LIFETIME_SECONDS,
        }
        return jwt.encode(header, claims, key, algorithms=[alg])
    except (ValueError, TypeError, KeyError, JoseError):
        # never the exception's text: it may quote the key
        raise ProviderError(
            f"the private key of provider {provider!r} (its secret) is not a private JWK for {alg}"
        ) from None
