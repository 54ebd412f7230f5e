"""The user's identity token: verified against the real provider's JWKS (iss, aud, exp, sig)."""

from __future__ import annotations

import base64
import json

import pytest
import urllib3

from tests.support.harness import Vault
from vault import jsondoc
from vault.config import VaultConfig
from vault.errors import InvalidUserToken
from vault.identity import IdentityVerifier


def _reencode(token: str, **claims: object) -> str:
    header, _, signature = token.split(".")
    data = {**jsondoc.unverified_jws(token)[1], **claims}
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_a_real_id_token_names_the_user(vault: Vault) -> None:
    user = vault.services.identity.verify(vault.id_tokens["alice"])
    assert (user.iss, user.sub) == (vault.server.issuer, "alice")


@pytest.mark.parametrize(
    "change",
    [{"sub": "mallory"}, {"aud": "someone-else"}, {"exp": 1}, {"iss": "https://evil.example"}],
)
def test_a_tampered_token_is_refused(vault: Vault, change: dict[str, object]) -> None:
    with pytest.raises(InvalidUserToken):
        vault.services.identity.verify(_reencode(vault.id_tokens["alice"], **change))


def test_an_expired_token_is_refused_by_the_clock(vault: Vault) -> None:
    vault.clock.advance(2 * 24 * 3600)
    with pytest.raises(InvalidUserToken, match="not valid here"):
        vault.services.identity.verify(vault.id_tokens["alice"])


def test_a_token_for_another_audience_is_refused(vault: Vault) -> None:
    strict = VaultConfig.model_validate(
        {
            **vault.services.config.model_dump(),
            "user_identity_issuers": [
                {
                    "issuer": vault.server.issuer,
                    "jwks_uri": vault.server.jwks_uri,
                    "audiences": ["another-app"],
                }
            ],
        }
    )
    verifier = IdentityVerifier(strict, urllib3.PoolManager(), vault.clock)
    with pytest.raises(InvalidUserToken, match="not valid here"):
        verifier.verify(vault.id_tokens["alice"])


def test_session_start_with_a_bad_token_stores_nothing(vault: Vault) -> None:
    agent = vault.agent()
    before = vault.snapshot()
    answer = agent.start_session({"id_token": _reencode(vault.id_tokens["alice"], sub="bob")})
    assert answer.status == 401 and answer.code == "invalid_user_token"
    assert vault.snapshot() == before
