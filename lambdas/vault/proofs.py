"""Proof of possession of the session key (RFC 9449 DPoP shape).

A proof is a compact JWS: header `typ=dpop+jwt`, `alg=ES256`, the public `jwk`; claims `jti`,
`htm`, `htu`, `iat` and `sid` (the session id; absent when the session is being created, since
the proof's key becomes the session key). The JOSE work is joserfc's; this module only decides
what a valid proof is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.util import urlsafe_b64decode

from vault import jsondoc
from vault.errors import InvalidProof
from vault.routes import canonical_path

MAX_PROOF_CHARS = 4096
ALLOWED_ALGORITHMS = ["ES256"]
_REGISTRY = jws.JWSRegistry(algorithms=ALLOWED_ALGORITHMS)
"""What `jws.deserialize_compact(..., algorithms=ALLOWED_ALGORITHMS)` builds at every call: its
header checks and the one algorithm, made once."""


@dataclass(frozen=True)
class Proof:
    jti: str
    iat: int
    jkt: str
    """RFC 7638 thumbprint of the signing key."""
    public_jwk: dict[str, Any]


@lru_cache(maxsize=256)
def _session_key(jwk_json: str) -> tuple[ECKey, str]:
    """The imported public key and its RFC 7638 thumbprint; a warm container verifies the same
    session's proofs over and over."""
    key = ECKey.import_key(json.loads(jwk_json))
    return key, key.thumbprint()


@lru_cache(maxsize=256)
def normalize_url(url: str) -> str:
    """Scheme and host lower-cased, default port dropped, the path in one spelling of its
    percent-encoding (`canonical_path`: behind API Gateway the vault sees the path decoded and
    encoded again, not the bytes the agent signed), no query or fragment."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port
    scheme = parts.scheme.lower()
    if port and not ((scheme == "https" and port == 443) or (scheme == "http" and port == 80)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{canonical_path(parts.path)}"


def verify_proof(
    token: str | None,
    *,
    method: str,
    url: str,
    now: float,
    max_age: int,
    session_id: str | None,
    expected_jkt: str | None,
    check_sid: bool = True,
) -> Proof:
    """Check a proof's form, signature, target, age and session; raise `InvalidProof`.

    The caller still has to record the `jti` (replay check) once every other check passed.
    `check_sid=False` for an agent's proof meant for a provider's token endpoint (RFC 9449),
    which names no vault session.
    """
    if not token:
        raise InvalidProof("a DPoP proof header is required on this route")
    if len(token) > MAX_PROOF_CHARS or token.count(".") != 2:
        raise InvalidProof("the DPoP proof is not a compact JWS")
    try:
        # the header's depth before joserfc parses it (deep nesting is a 401); the claims are
        # parsed below by jsondoc.loads
        jsondoc.check_depth(urlsafe_b64decode(token[: token.index(".")].encode("ascii")).decode())
        signed = jws.extract_compact(token.encode("ascii"))  # parsed once, verified below
        header = signed.protected
    except (JoseError, ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidProof("the DPoP proof is malformed") from exc
    if header.get("typ") != "dpop+jwt" or header.get("alg") not in ALLOWED_ALGORITHMS:
        raise InvalidProof("the DPoP proof must have typ dpop+jwt and alg ES256")
    jwk = header.get("jwk")
    if (
        not isinstance(jwk, dict)
        or "d" in jwk
        or jwk.get("kty") != "EC"
        or jwk.get("crv") != "P-256"
    ):
        raise InvalidProof("the DPoP proof must carry a public P-256 jwk")
    try:
        key, jkt = _session_key(json.dumps(jwk, sort_keys=True))
        if expected_jkt is not None and jkt != expected_jkt:
            raise InvalidProof("the DPoP proof is not signed by this session's key")
        if not jws.validate_compact(signed, key, registry=_REGISTRY):
            raise InvalidProof("the DPoP proof signature does not verify")
    except InvalidProof:
        raise
    except (JoseError, ValueError, TypeError, UnicodeError, RecursionError) as exc:
        raise InvalidProof("the DPoP proof signature does not verify") from exc
    try:
        claims = jsondoc.loads(signed.payload)  # depth-checked: deep nesting is a 401 too
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidProof("the DPoP proof is malformed") from exc
    if not isinstance(claims, dict):
        raise InvalidProof("the DPoP proof claims are not an object")
    jti, iat = claims.get("jti"), claims.get("iat")
    if not isinstance(jti, str) or not 16 <= len(jti) <= 64:
        raise InvalidProof("the DPoP proof needs a jti of 16 to 64 characters")
    if not isinstance(iat, int) or isinstance(iat, bool) or abs(now - iat) > max_age:
        raise InvalidProof("the DPoP proof is stale or from the future (iat)")
    if claims.get("htm") != method:
        raise InvalidProof("the DPoP proof is for another HTTP method (htm)")
    htu = claims.get("htu")
    try:
        same_target = isinstance(htu, str) and normalize_url(htu) == normalize_url(url)
    except ValueError:  # not a URL at all (e.g. a bad port or IPv6 literal)
        same_target = False
    if not same_target:
        raise InvalidProof("the DPoP proof is for another URL (htu)")
    if check_sid and claims.get("sid") != session_id:
        raise InvalidProof("the DPoP proof names another session (sid)")
    public = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    return Proof(jti=jti, iat=iat, jkt=jkt, public_jwk=public)
