"""The typed config of API-key providers (flow 12): what it accepts, what it refuses and why,
and the per-container cache of `vault.store.apikeys` (bounded, short-lived)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.aws import RequestCounter, aws
from vault.config import ApiKeyConfig, VaultConfig
from vault.store.apikeys import ApiKeyStore, StoredApiKey

BASE = "https://api.example.com/v1"


def config(provider: dict[str, Any], access: dict[str, Any] | None = None) -> VaultConfig:
    return VaultConfig.model_validate(
        {
            "providers": {"keyed": provider},
            "agents": {"a": {"role_name": "a-role", "providers": {"keyed": access or {}}}},
            "return_urls": ["https://app.example.com/return"],
        }
    )


def refused(provider: dict[str, Any], access: dict[str, Any] | None = None) -> str:
    with pytest.raises(ValidationError) as failed:
        config(provider, access)
    return str(failed.value)


def test_the_defaults_are_one_key_as_a_bearer_through_the_proxy() -> None:
    built = config({"api_base_urls": [BASE], "api_key": {}})
    settings = built.providers["keyed"].api_key
    assert settings is not None
    assert (settings.per, settings.header, settings.prefix) == (
        "provider",
        "Authorization",
        "Bearer ",
    )
    assert settings.query_parameter is None and settings.rotation_window_seconds == 86400
    assert built.delivery("a", "keyed") == "proxy"
    # and a config dumped and read again is the same (redeployments, local mode)
    assert VaultConfig.model_validate(built.model_dump(mode="json")) == built


def test_a_query_parameter_or_a_header_with_its_prefix() -> None:
    assert ApiKeyConfig(query_parameter="key").header is None
    assert ApiKeyConfig(header="X-Api-Key").prefix == ""
    assert ApiKeyConfig(header="Authorization", prefix="Token ").prefix == "Token "


@pytest.mark.parametrize(
    ("api_key", "message"),
    [
        ({"header": "X-Api-Key", "query_parameter": "key"}, "not both"),
        ({"header": "Host"}, "the proxy never sends 'Host'"),
        ({"header": "X-Amz-Security-Token"}, "the proxy never sends"),
        ({"header": "Cookie"}, "the proxy never sends"),
        ({"header": "bad header"}, "is not an HTTP header name"),
        ({"query_parameter": "a=b"}, "is not a plain name"),
        ({"query_parameter": "key", "prefix": "Bearer "}, "prefix goes with header"),
        ({"per": "team"}, "per"),
        ({"rotation_window_seconds": -1}, "rotation_window_seconds"),
    ],
)
def test_bad_api_key_settings_are_refused_with_the_reason(
    api_key: dict[str, Any], message: str
) -> None:
    assert message in refused({"api_base_urls": [BASE], "api_key": api_key})


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"client_id": "c"}, "client_id"),
        ({"scopes": ["a"]}, "scopes"),
        ({"discovery_url": "https://idp.example.com/.well-known/x"}, "discovery_url"),
        ({"dpop": True}, "dpop"),
        ({"grant_type": "client_credentials"}, "grant_type"),
    ],
)
def test_an_api_key_provider_takes_no_oauth_settings(extra: dict[str, Any], named: str) -> None:
    message = refused({"api_base_urls": [BASE], "api_key": {}, **extra})
    assert "takes no OAuth settings" in message and named in message


def test_an_api_key_provider_needs_api_base_urls() -> None:
    assert "needs api_base_urls" in refused({"api_key": {}})


def test_agents_at_an_api_key_provider_have_no_scopes_and_proxy_or_returned_delivery() -> None:
    provider = {"api_base_urls": [BASE], "api_key": {}}
    assert "an API key has no scopes" in refused(provider, {"scopes": ["a"]})
    assert "proxy" in refused(provider, {"delivery": "bearer"})
    assert "proxy" in refused(provider, {"delivery": "dpop"})
    assert config(provider, {"delivery": "returned"}).delivery("a", "keyed") == "returned"
    oauth = {"token_endpoint": BASE, "authorization_endpoint": BASE, "client_id": "c"}
    oauth |= {"scopes": ["a"], "api_base_urls": [BASE]}
    assert "for api_key providers" in refused(oauth, {"scopes": ["a"], "delivery": "returned"})
    assert "give at least one scope" in refused(oauth, {})
    assert "client_id is required" in refused({**oauth, "client_id": ""}, {"scopes": ["a"]})


def test_the_key_cache_is_short_lived_and_bounded() -> None:
    now = [0.0]
    with aws() as session:
        counter = RequestCounter()
        counter.attach(session)
        client = session.client("secretsmanager")
        names = ["p/a", *(f"p/{i}" for i in range(6))]
        for name in names:
            client.create_secret(Name=name, SecretString=StoredApiKey(name, "k" * 20).value())
        store = ApiKeyStore(
            client, "p/", "key", cache_seconds=30, max_entries=4, clock=lambda: now[0]
        )

        def reads() -> int:
            return counter.counts["secretsmanager:GetSecretValue"]

        for _ in range(3):
            assert store.get("p/a") is not None
        assert reads() == 1
        now[0] = 31.0
        store.get("p/a")
        assert reads() == 2
        store.get("p/a", fresh=True)  # after a provider's 401: read again whatever is cached
        assert reads() == 3
        for name in names[1:]:
            store.get(name)
        assert len(store._cache) == 4
        before = reads()
        store.get("p/0")  # the oldest was dropped
        assert reads() == before + 1
        assert store.get("p/none") is None
        assert "k" * 20 not in repr(store.get("p/a"))  # a stored key's repr never shows it
