"""What a valid proof of possession is (RFC 9449 shape)."""

from __future__ import annotations

import json
import time

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from tests.support.agent import sign_proof
from vault.errors import InvalidProof
from vault.proofs import normalize_url, verify_proof

URL = "https://vault.test/v1/sessions/ses_x/tokens"
NOW = int(time.time())
KEY = ECKey.generate_key("P-256")


def check(token: str | None, **kw: object):  # type: ignore[no-untyped-def]
    args = {
        "method": "POST",
        "url": URL,
        "now": NOW,
        "max_age": 60,
        "session_id": "ses_x",
        "expected_jkt": KEY.thumbprint(),
        **kw,
    }
    return verify_proof(token, **args)  # type: ignore[arg-type]


def proof(**kw: object) -> str:
    args = {"method": "POST", "url": URL, "iat": NOW, "session_id": "ses_x", **kw}
    return sign_proof(KEY, **args)  # type: ignore[arg-type]


def test_a_good_proof_verifies_and_names_the_key() -> None:
    result = check(proof())
    assert result.jkt == KEY.thumbprint()
    assert set(result.public_jwk) == {"kty", "crv", "x", "y"}


@pytest.mark.parametrize(
    "token, why",
    [
        (None, "required"),
        ("", "required"),
        ("a.b", "compact"),
        ("x" * 5000, "compact"),
        ("e30.e30.e30", "malformed"),
        ("eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.e30.c2ln", "typ"),
    ],
)
def test_malformed_proofs_are_refused(token: str | None, why: str) -> None:
    with pytest.raises(InvalidProof, match=why):
        check(token)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"method": "GET"}, "htm"),
        ({"url": "https://vault.test/v1/sessions/ses_y/tokens"}, "htu"),
        ({"iat": NOW - 120}, "stale"),
        ({"iat": NOW + 120}, "stale"),
        ({"session_id": "ses_other"}, "sid"),
        ({"jti": "short"}, "jti"),
    ],
)
def test_proofs_for_something_else_are_refused(change: dict[str, object], why: str) -> None:
    with pytest.raises(InvalidProof, match=why):
        check(proof(**change))


def test_a_proof_signed_by_another_key_is_refused() -> None:
    other = ECKey.generate_key("P-256")
    token = sign_proof(other, method="POST", url=URL, iat=NOW, session_id="ses_x")
    with pytest.raises(InvalidProof, match="session's key"):
        check(token)


def test_a_header_key_that_did_not_sign_is_refused() -> None:
    other = ECKey.generate_key("P-256")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.as_dict(private=False)}
    claims = {"jti": "j" * 20, "htm": "POST", "htu": URL, "iat": NOW, "sid": "ses_x"}
    forged = jws.serialize_compact(header, json.dumps(claims), other, algorithms=["ES256"])
    with pytest.raises(InvalidProof, match="signature"):
        check(forged)


def test_symmetric_private_and_rsa_keys_are_refused() -> None:
    rsa = RSAKey.generate_key(2048)
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": rsa.as_dict(private=False)}
    claims = {"jti": "j" * 20, "htm": "POST", "htu": URL, "iat": NOW, "sid": "ses_x"}
    token = jws.serialize_compact(header, json.dumps(claims), rsa, algorithms=["RS256"])
    with pytest.raises(InvalidProof, match=r"ES256|malformed"):
        check(token)
    leaky = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.as_dict(private=True)}
    token = jws.serialize_compact(leaky, json.dumps(claims), KEY, algorithms=["ES256"])
    with pytest.raises(InvalidProof, match="public"):
        check(token)


def test_session_creation_proof_has_no_sid_and_any_key() -> None:
    other = ECKey.generate_key("P-256")
    token = sign_proof(
        other, method="POST", url="https://vault.test/v1/sessions", iat=NOW, session_id=None
    )
    result = verify_proof(
        token,
        method="POST",
        url="https://vault.test/v1/sessions",
        now=NOW,
        max_age=60,
        session_id=None,
        expected_jkt=None,
    )
    assert result.jkt == other.thumbprint()


def test_url_normalisation() -> None:
    assert normalize_url("HTTPS://Vault.Test:443/v1/x?q=1#f") == "https://vault.test/v1/x"
    assert normalize_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    assert normalize_url("https://vault.test/v1/x") != normalize_url("https://vault.test/v1/X")


def test_url_normalisation_reads_one_spelling_of_the_paths_encoding() -> None:
    """The agent signs the URL it called; behind API Gateway the vault sees that path decoded
    and encoded again (`vault.routes.encoded_path`), so the two compare by what they mean."""
    same = [
        ("https://v.test/p/%40me/x%2Dy", "https://v.test/p/@me/x-y"),
        ("https://v.test/p/%c3%9c", "https://v.test/p/%C3%9C"),
        ("https://v.test/p/a%20b", "https://v.test/p/a b"),
    ]
    for signed, seen in same:
        assert normalize_url(signed) == normalize_url(seen), signed
    assert normalize_url("https://v.test/p/%2541") != normalize_url("https://v.test/p/A")
    assert normalize_url("https://v.test/p/a%2Fb") == normalize_url("https://v.test/p/a/b")
    with pytest.raises(ValueError):
        normalize_url("https://v.test/p/%FF")
