"""The session key and its DPoP proofs (docs/api.md, "Proof of possession"; RFC 9449).

Each :class:`SessionKey` is an ephemeral P-256 key pair that lives only in memory: the vault stores
the RFC 7638 thumbprint of its public half when the session starts, and every later request proves
possession with a fresh compact JWS over method, URL, time, a unique ``jti`` and the session id.
The same key signs RFC 9449 proofs for a provider (:meth:`SessionKey.dpop_proof`): for its token
endpoint, where the vault forwards it so that the provider binds the session's access token to
this key, and for every call of a DPoP-bound token at the provider's API (with ``ath``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jwt
from joserfc.jwk import ECKey

__all__ = ["PROOF_TYPE", "SessionKey", "access_token_hash", "htu"]

PROOF_TYPE = "dpop+jwt"
ALGORITHM = "ES256"


def htu(url: str) -> str:
    """The ``htu`` of a request URL: scheme, host and path, without query or fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


def access_token_hash(access_token: str) -> str:
    """RFC 9449 ``ath``: base64url (no padding) of the SHA-256 of the access token's ASCII."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SessionKey:
    """An ephemeral ES256 key pair for one vault session (never written anywhere)."""

    __slots__ = ("_key", "_public_jwk")

    def __init__(self, key: ECKey | None = None) -> None:
        self._key = key if key is not None else ECKey.generate_key("P-256", private=True)
        if self._key.curve_name != "P-256":  # pragma: no cover - defensive
            raise ValueError("a session key must be a P-256 key")
        public = self._key.as_dict(private=False)
        self._public_jwk: dict[str, Any] = {
            "kty": public["kty"],
            "crv": public["crv"],
            "x": public["x"],
            "y": public["y"],
        }

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public JWK (no ``d``), as sent in every proof header."""
        return dict(self._public_jwk)

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint (``jkt``) the vault binds the session to."""
        return str(self._key.thumbprint())

    def proof(
        self,
        method: str,
        url: str,
        *,
        session_id: str | None = None,
        now: float | None = None,
        jti: str | None = None,
    ) -> str:
        """A fresh proof for one request to the vault (a new ``jti`` each call)."""
        claims = self._claims(method, url, now, jti)
        if session_id is not None:
            claims["sid"] = session_id
        return self._sign(claims)

    def dpop_proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        now: float | None = None,
        jti: str | None = None,
    ) -> str:
        """An RFC 9449 proof for a request to a provider: ``typ: dpop+jwt``, ES256, the public
        ``jwk``; claims ``jti``, ``htm``, ``htu`` (no query or fragment), ``iat``, the server's
        ``nonce`` when it demanded one, and ``ath`` when the request presents ``access_token``
        (every resource call; not the token request)."""
        claims = self._claims(method, url, now, jti)
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        return self._sign(claims)

    @staticmethod
    def _claims(method: str, url: str, now: float | None, jti: str | None) -> dict[str, Any]:
        return {
            "jti": jti or secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time() if now is None else now),
        }

    def _sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": PROOF_TYPE, "alg": ALGORITHM, "jwk": self.public_jwk}
        return jwt.encode(header, claims, self._key, algorithms=[ALGORITHM])

    def __repr__(self) -> str:  # never show key material
        return f"SessionKey(jkt={self.thumbprint!r})"
