"""Pure rules: config validation, caller parsing, scope policy, request shapes, OAuth requests."""

from __future__ import annotations

import re
from typing import Any

import pytest
import urllib3
from pydantic import ValidationError

from vault.caller import agent_of, caller_from, require_admin
from vault.config import VaultConfig
from vault.errors import (
    ConsentRequired,
    Forbidden,
    ProviderError,
    ScopeNotAllowed,
    UnknownAgent,
    UnknownProvider,
)
from vault.oauth.client import ProviderClient, code_challenge, new_code_verifier
from vault.policy import check_agent_policy, require_granted
from vault.schemas import Revocation, StartSession, TokenRequest


def config(**overrides: Any) -> VaultConfig:
    base: dict[str, Any] = {
        "providers": {
            "google": {
                "preset": "google",
                "authorization_endpoint": "https://accounts.example/auth",
                "token_endpoint": "https://oauth2.example/token",
                "client_id": "cid",
                "scopes": ["cal.read", "cal.write"],
                "resource": "https://api.example/",
                "api_base_urls": ["https://api.example"],
            }
        },
        "agents": {"cal": {"role_name": "cal-role", "providers": {"google": ["cal.read"]}}},
        "admin_role_names": ["admin-role"],
        "return_urls": ["https://app.example/return"],
    }
    base.update(overrides)
    return VaultConfig.model_validate(base)


def test_config_rejects_a_policy_scope_the_provider_does_not_allow() -> None:
    with pytest.raises(ValidationError, match=r"agents.cal.providers.google"):
        config(agents={"cal": {"role_name": "r", "providers": {"google": ["mail.read"]}}})


@pytest.mark.parametrize(
    "url", ["http://app.example/return", "ftp://x/y", "https://a/b#frag", "https://user:pw@a/b"]
)
def test_config_rejects_unsafe_return_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        config(return_urls=[url])


def test_config_allows_http_on_localhost_and_rejects_unknown_keys() -> None:
    assert config(return_urls=["http://localhost:3000/r"]).return_urls
    with pytest.raises(ValidationError, match="extra"):
        config(colour="blue")


def test_presets_fill_provider_quirks() -> None:
    google = config().providers["google"]
    assert google.extra_authorize_params == {"access_type": "offline"}
    assert google.offline_scope is None


def caller_event(arn: Any) -> dict[str, Any]:
    return {
        "requestContext": {"accountId": "123456789012", "authorizer": {"iam": {"userArn": arn}}}
    }


def test_caller_comes_from_the_assumed_role_arn() -> None:
    caller = caller_from(caller_event("arn:aws:sts::123456789012:assumed-role/cal-role/task123"))
    assert (caller.role_name, caller.session_name, caller.account) == (
        "cal-role",
        "task123",
        "123456789012",
    )
    assert agent_of(config(), caller) == "cal"
    with pytest.raises(Forbidden):
        require_admin(config(), caller)


@pytest.mark.parametrize(
    "arn",
    [
        None,
        42,
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:sts::123456789012:assumed-role/cal-role",
        "arn:aws:sts::123456789012:assumed-role/cal-role/x/y",
    ],
)
def test_anything_but_a_role_session_is_unknown(arn: Any) -> None:
    with pytest.raises(UnknownAgent):
        caller_from(caller_event(arn))
    with pytest.raises(UnknownAgent):
        caller_from({})


def test_an_unmapped_role_is_an_unknown_agent() -> None:
    caller = caller_from(caller_event("arn:aws:sts::123456789012:assumed-role/other/t1"))
    with pytest.raises(UnknownAgent, match=r"agents\.<name>\.role_name"):
        agent_of(config(), caller)


def test_policy_allows_a_subset_and_names_what_is_denied() -> None:
    assert check_agent_policy(config(), "cal", "google", ("cal.read", "cal.read")) == ("cal.read",)
    with pytest.raises(ScopeNotAllowed) as denied:
        check_agent_policy(config(), "cal", "google", ("cal.read", "cal.write"))
    assert denied.value.extra["denied_scopes"] == ["cal.write"]
    with pytest.raises(UnknownProvider):
        check_agent_policy(config(), "cal", "github", ("cal.read",))


def test_grant_must_cover_the_scopes() -> None:
    path = "/v1/sessions/ses_x/authorizations"
    require_granted("google", path, ("cal.read",), ("cal.read", "cal.write"))
    with pytest.raises(ConsentRequired) as missing:
        require_granted("google", path, ("cal.read", "cal.write"), ("cal.read",))
    assert missing.value.extra["missing_scopes"] == ["cal.write"]
    assert missing.value.extra["authorizations_path"] == path


@pytest.mark.parametrize(
    "body",
    [
        {"user": {}},
        {"user": {"id_token": "x" * 20, "user_id": "a"}},
        {"user": {"user_id": ""}},
        {"user": {"user_id": "a"}, "ttl_seconds": "60"},
        {"user": {"user_id": "a"}, "extra": 1},
        {"user": {"user_id": "a"}, "ttl_seconds": 10**9},
    ],
)
def test_bad_session_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        StartSession.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "google", "scopes": []},
        {"provider": "google", "scopes": ["a b"]},
        {"provider": "Google!", "scopes": ["a"]},
        {"provider": "google", "scopes": "a"},
        {"provider": "google", "scopes": ["a"] * 33},
    ],
)
def test_bad_token_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TokenRequest.model_validate(body)


def test_a_revocation_names_something() -> None:
    with pytest.raises(ValidationError):
        Revocation.model_validate({})
    assert Revocation.model_validate({"agent": "cal"}).agent == "cal"


def test_pkce_verifier_and_challenge() -> None:
    verifier = new_code_verifier()
    assert 43 <= len(verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9_-]+", verifier)
    challenge = code_challenge(verifier)
    assert len(challenge) == 43 and "=" not in challenge and challenge != verifier
    assert new_code_verifier() != verifier  # (the real provider checks S256 in integration)


def test_authorization_url_carries_pkce_resource_and_preset_parameters() -> None:
    cfg = config()
    client = ProviderClient(
        "google", cfg.providers["google"], urllib3.PoolManager(), lambda: "secret"
    )
    with pytest.raises(ProviderError, match="assume_pkce_s256"):
        client.authorization_url(
            redirect_uri="https://vault/cb", state="s", verifier="v" * 43, scopes=("cal.read",)
        )
    trusting = config(
        providers={"google": {**cfg.providers["google"].model_dump(), "assume_pkce_s256": True}}
    )
    client = ProviderClient(
        "google", trusting.providers["google"], urllib3.PoolManager(), lambda: "secret"
    )
    url = client.authorization_url(
        redirect_uri="https://vault/cb", state="st", verifier="v" * 43, scopes=("cal.read",)
    )
    assert url.startswith("https://accounts.example/auth?")
    for part in (
        "code_challenge_method=S256",
        "access_type=offline",
        "prompt=consent",
        "resource=https%3A%2F%2Fapi.example%2F",
        "state=st",
        "scope=cal.read",
        "redirect_uri=https%3A%2F%2Fvault%2Fcb",
    ):
        assert part in url
    assert "v" * 43 not in url  # the verifier itself never leaves the vault
