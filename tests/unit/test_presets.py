"""Provider presets: the data files, the configs they make, the requests the vault builds from
them and how it reads each provider's token answers.

The providers' HTTP side is played by `Documented`: a urllib3 pool answering only the exact URLs
a vendor documents (its discovery document, its token endpoint) with the documented shape of the
answer, and recording what the vault sent. Everything on the vault's side is the real code.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import urllib3
from pydantic import ValidationError

from vault import presets
from vault.config import ProviderConfig
from vault.errors import OAuthError, ProviderError
from vault.oauth.client import ProviderClient, TokenResponse, code_challenge

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENTCORE_VENDORS = {
    "google", "github", "slack", "salesforce", "microsoft", "atlassian", "linkedin", "x", "okta",
    "onelogin", "pingone", "facebook", "yandex", "reddit", "zoom", "twitch", "spotify", "dropbox",
    "notion", "hubspot", "cyberark", "fusionauth", "auth0", "cognito",
}  # fmt: skip
NOT_PRESET_KEYS = {"preset", "preset_params", "client_id", "scopes"}
REDIRECT = "https://vault.example/v1/callback/p"
VERIFIER = "v" * 64


class Documented:
    """A provider as its documentation describes it: fixed answers at exact URLs."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, bytes]]) -> None:
        self.answers = answers
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        self.sent.append({"method": method, "url": url, **kwargs})
        status, body = self.answers.get((method, url), (404, b"not documented"))
        return urllib3.HTTPResponse(body=io.BytesIO(body), status=status, preload_content=False)


def examples(name: str) -> dict[str, str]:
    return {key: param.example for key, param in presets.load(name).params.items()}


def provider(name: str, **extra: Any) -> ProviderConfig:
    data = {"preset": name, "preset_params": examples(name), "client_id": "cid", "scopes": ["a"]}
    return ProviderConfig.model_validate({**data, **extra})


def client(config: ProviderConfig, http: Documented) -> ProviderClient:
    return ProviderClient("p", config, http, lambda: "the-secret")  # type: ignore[arg-type]


# --- the files ------------------------------------------------------------------------------


def test_the_agentcore_vendors_and_generic_have_presets() -> None:
    assert set(presets.names()) == AGENTCORE_VENDORS | {"generic"}


def test_config_presets_is_the_packaged_directory() -> None:
    """The Lambda bundle copies the package: config/presets must be the same files, not a copy
    that could drift."""
    link = REPO_ROOT / "config" / "presets"
    assert link.is_symlink()
    assert link.resolve() == presets.PRESET_DIR.resolve()
    assert sorted(p.stem for p in link.glob("*.json")) == list(presets.names())


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_value_is_a_provider_key_with_a_source(name: str) -> None:
    preset = presets.load(name)
    fields = set(ProviderConfig.model_fields) - NOT_PRESET_KEYS
    assert set(preset.config) <= fields, set(preset.config) - fields
    said = {f"expects.{k}" for k, v in preset.expects.model_dump().items() if v is not None}
    assert set(preset.config) | said <= set(preset.sources), (set(preset.config) | said) - set(
        preset.sources
    )
    assert all(url.startswith("https://") for url in preset.sources.values())
    used = set().union(*(preset.placeholders(v) for v in preset.config.values()))
    assert used == set(preset.params), "every placeholder is declared, every param used"
    for key, param in preset.params.items():
        param.check(key, param.example)
        if param.default is not None:
            param.check(key, param.default)


@pytest.mark.parametrize("name", sorted(AGENTCORE_VENDORS))
def test_each_vendor_preset_validates_with_its_example_placeholders(name: str) -> None:
    config = provider(name)
    filled = json.dumps(config.model_dump(mode="json"))
    assert "{" not in json.dumps(
        [config.discovery_url, config.authorization_endpoint, config.token_endpoint]
    )
    for value in examples(name).values():
        assert value in filled
    # the config the bundle carries (presets applied) validates again as itself
    assert ProviderConfig.model_validate(config.model_dump(mode="json")) == config


# --- validation -----------------------------------------------------------------------------


def test_an_unknown_preset_is_refused_with_the_list_of_names() -> None:
    with pytest.raises(ValidationError) as refused:
        ProviderConfig.model_validate({"preset": "gogle", "client_id": "c", "scopes": ["a"]})
    message = str(refused.value)
    assert "no preset named 'gogle'" in message
    assert "google" in message and "okta" in message and "cognito" in message


def test_a_missing_placeholder_is_named_with_an_example() -> None:
    with pytest.raises(ValidationError, match=r"needs preset_params: domain \(e\.g\. 'dev-"):
        ProviderConfig.model_validate({"preset": "okta", "client_id": "c", "scopes": ["a"]})


@pytest.mark.parametrize(
    "domain",
    ["evil.example/x?", "user@evil.example", "evil.example:8443", "a..b", "localhost", "%2e%2e"],
)
def test_a_placeholder_value_cannot_reshape_the_url(domain: str) -> None:
    with pytest.raises(ValidationError, match=r"preset_params\.domain"):
        provider("auth0", preset_params={"domain": domain})


def test_an_unknown_placeholder_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"has no parameter \['tenant'\]"):
        provider("okta", preset_params={"domain": "a.okta.com", "tenant": "x"})


def test_placeholder_defaults_apply() -> None:
    okta = provider("okta", preset_params={"domain": "dev-1.okta.com"})
    assert okta.discovery_url == (
        "https://dev-1.okta.com/oauth2/default/.well-known/oauth-authorization-server"
    )


def test_explicit_keys_override_the_preset() -> None:
    okta = provider(
        "okta",
        preset_params={},
        discovery_url="https://login.example.com/.well-known/openid-configuration",
        scope_separator=",",
        dpop=True,
    )
    assert okta.discovery_url == "https://login.example.com/.well-known/openid-configuration"
    assert (okta.scope_separator, okta.dpop, okta.offline_scope) == (",", True, "offline_access")
    # explicit endpoints replace the preset's way of finding them
    google = provider(
        "google",
        authorization_endpoint="https://a.example/auth",
        token_endpoint="https://a.example/token",
    )
    assert google.discovery_url is None
    assert google.extra_authorize_params == {"access_type": "offline"}


# --- authorization requests ----------------------------------------------------------------

# The metadata each discovery-based vendor documents (the members the vault reads).
DOCUMENTED_METADATA: dict[str, dict[str, Any]] = {
    "google": {
        "issuer": "https://accounts.google.com",
        "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_endpoint": "https://oauth2.googleapis.com/token",
        "revocation_endpoint": "https://oauth2.googleapis.com/revoke",
        "code_challenge_methods_supported": ["plain", "S256"],
    },
    "microsoft": {
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
        "authorization_endpoint": (
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
        ),
        "token_endpoint": (
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        ),
    },
    "salesforce": {
        "issuer": "https://mycompany.my.salesforce.com",
        "authorization_endpoint": "https://mycompany.my.salesforce.com/services/oauth2/authorize",
        "token_endpoint": "https://mycompany.my.salesforce.com/services/oauth2/token",
        "revocation_endpoint": "https://mycompany.my.salesforce.com/services/oauth2/revoke",
    },
    "okta": {
        "issuer": "https://dev-123456.okta.com/oauth2/default",
        "authorization_endpoint": "https://dev-123456.okta.com/oauth2/default/v1/authorize",
        "token_endpoint": "https://dev-123456.okta.com/oauth2/default/v1/token",
        "revocation_endpoint": "https://dev-123456.okta.com/oauth2/default/v1/revoke",
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["RS256", "ES256"],
    },
    "onelogin": {
        "issuer": "https://mycompany.onelogin.com/oidc/2",
        "authorization_endpoint": "https://mycompany.onelogin.com/oidc/2/auth",
        "token_endpoint": "https://mycompany.onelogin.com/oidc/2/token",
        "revocation_endpoint": "https://mycompany.onelogin.com/oidc/2/token/revocation",
    },
    "pingone": {
        "issuer": "https://auth.pingone.eu/11111111-2222-3333-4444-555555555555/as",
        "authorization_endpoint": (
            "https://auth.pingone.eu/11111111-2222-3333-4444-555555555555/as/authorize"
        ),
        "token_endpoint": "https://auth.pingone.eu/11111111-2222-3333-4444-555555555555/as/token",
        "revocation_endpoint": (
            "https://auth.pingone.eu/11111111-2222-3333-4444-555555555555/as/revoke"
        ),
    },
    "fusionauth": {
        "issuer": "https://auth.example.com",
        "authorization_endpoint": "https://auth.example.com/oauth2/authorize",
        "token_endpoint": "https://auth.example.com/oauth2/token",
    },
    "auth0": {
        "issuer": "https://example.us.auth0.com/",
        "authorization_endpoint": "https://example.us.auth0.com/authorize",
        "token_endpoint": "https://example.us.auth0.com/oauth/token",
        "revocation_endpoint": "https://example.us.auth0.com/oauth/revoke",
        "code_challenge_methods_supported": ["S256", "plain"],
    },
    "cognito": {
        "issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI",
        "authorization_endpoint": (
            "https://mypool.auth.eu-west-1.amazoncognito.com/oauth2/authorize"
        ),
        "token_endpoint": "https://mypool.auth.eu-west-1.amazoncognito.com/oauth2/token",
    },
}
DISCOVERY_URLS = {
    "google": "https://accounts.google.com/.well-known/openid-configuration",
    "microsoft": (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/"
        ".well-known/openid-configuration"
    ),
    "salesforce": "https://mycompany.my.salesforce.com/.well-known/openid-configuration",
    "okta": ("https://dev-123456.okta.com/oauth2/default/.well-known/oauth-authorization-server"),
    "onelogin": "https://mycompany.onelogin.com/oidc/2/.well-known/openid-configuration",
    "pingone": (
        "https://auth.pingone.eu/11111111-2222-3333-4444-555555555555/as/"
        ".well-known/openid-configuration"
    ),
    "fusionauth": "https://auth.example.com/.well-known/openid-configuration",
    "auth0": "https://example.us.auth0.com/.well-known/openid-configuration",
    "cognito": (
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI/"
        ".well-known/openid-configuration"
    ),
}

# name -> (documented authorization endpoint, scopes asked, the scope parameter as sent,
#          other parameters the vendor requires, parameters that must be absent)
AUTHORIZE: dict[str, tuple[str, tuple[str, ...], dict[str, str], dict[str, str], set[str]]] = {
    "google": (
        "https://accounts.google.com/o/oauth2/v2/auth",
        ("openid", "https://www.googleapis.com/auth/calendar.readonly"),
        {"scope": "openid https://www.googleapis.com/auth/calendar.readonly"},
        {"access_type": "offline", "prompt": "consent"},
        set(),
    ),
    "github": (
        "https://github.com/login/oauth/authorize",
        ("repo", "read:user"),
        {"scope": "repo read:user"},
        {},
        {"prompt"},
    ),
    "slack": (
        "https://slack.com/oauth/v2/authorize",
        ("channels:history", "chat:write"),
        {"user_scope": "channels:history,chat:write"},
        {},
        {"scope", "prompt"},
    ),
    "salesforce": (
        "https://mycompany.my.salesforce.com/services/oauth2/authorize",
        ("api",),
        {"scope": "api refresh_token"},
        {},
        {"prompt"},
    ),
    "microsoft": (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
        ("https://graph.microsoft.com/Calendars.Read",),
        {"scope": "https://graph.microsoft.com/Calendars.Read offline_access"},
        {},
        {"prompt"},
    ),
    "atlassian": (
        "https://auth.atlassian.com/authorize",
        ("read:jira-work",),
        {"scope": "read:jira-work offline_access"},
        {"audience": "api.atlassian.com", "prompt": "consent"},
        set(),
    ),
    "linkedin": (
        "https://www.linkedin.com/oauth/v2/authorization",
        ("openid", "w_member_social"),
        {"scope": "openid w_member_social"},
        {},
        {"prompt"},
    ),
    "x": (
        "https://x.com/i/oauth2/authorize",
        ("tweet.read", "users.read"),
        {"scope": "tweet.read users.read offline.access"},
        {},
        {"prompt"},
    ),
    "okta": (
        "https://dev-123456.okta.com/oauth2/default/v1/authorize",
        ("openid", "calendar.read"),
        {"scope": "openid calendar.read offline_access"},
        {},
        {"prompt"},
    ),
    "onelogin": (
        "https://mycompany.onelogin.com/oidc/2/auth",
        ("openid",),
        {"scope": "openid offline_access"},
        {},
        {"prompt"},
    ),
    "pingone": (
        "https://auth.pingone.eu/11111111-2222-3333-4444-555555555555/as/authorize",
        ("openid", "profile"),
        {"scope": "openid profile"},
        {},
        {"prompt"},
    ),
    "facebook": (
        "https://www.facebook.com/v22.0/dialog/oauth",
        ("email", "pages_show_list"),
        {"scope": "email,pages_show_list"},
        {},
        {"prompt"},
    ),
    "yandex": (
        "https://oauth.yandex.com/authorize",
        ("login:info", "cloud_api:disk.read"),
        {"scope": "login:info cloud_api:disk.read"},
        {},
        {"prompt"},
    ),
    "reddit": (
        "https://www.reddit.com/api/v1/authorize",
        ("identity", "read"),
        {"scope": "identity read"},
        {"duration": "permanent"},
        {"prompt"},
    ),
    "zoom": (
        "https://zoom.us/oauth/authorize",
        ("meeting:read",),
        {"scope": "meeting:read"},
        {},
        {"prompt"},
    ),
    "twitch": (
        "https://id.twitch.tv/oauth2/authorize",
        ("user:read:email", "chat:read"),
        {"scope": "user:read:email chat:read"},
        {},
        {"prompt"},
    ),
    "spotify": (
        "https://accounts.spotify.com/authorize",
        ("user-read-private", "playlist-read-private"),
        {"scope": "user-read-private playlist-read-private"},
        {},
        {"prompt"},
    ),
    "dropbox": (
        "https://www.dropbox.com/oauth2/authorize",
        ("files.metadata.read", "files.content.read"),
        {"scope": "files.metadata.read files.content.read"},
        {"token_access_type": "offline"},
        {"prompt"},
    ),
    "notion": (
        "https://api.notion.com/v1/oauth/authorize",
        ("notion",),
        {"scope": "notion"},
        {"owner": "user"},
        {"prompt"},
    ),
    "hubspot": (
        "https://app.hubspot.com/oauth/authorize",
        ("crm.objects.contacts.read", "oauth"),
        {"scope": "crm.objects.contacts.read oauth"},
        {},
        {"prompt"},
    ),
    "cyberark": (
        "https://abc1234.id.cyberark.cloud/OAuth2/Authorize/agent_vault",
        ("openid",),
        {"scope": "openid offline_access"},
        {},
        {"prompt"},
    ),
    "fusionauth": (
        "https://auth.example.com/oauth2/authorize",
        ("openid",),
        {"scope": "openid offline_access"},
        {},
        {"prompt"},
    ),
    "auth0": (
        "https://example.us.auth0.com/authorize",
        ("openid", "read:calendar"),
        {"scope": "openid read:calendar offline_access"},
        {},
        {"prompt"},
    ),
    "cognito": (
        "https://mypool.auth.eu-west-1.amazoncognito.com/oauth2/authorize",
        ("openid", "email"),
        {"scope": "openid email"},
        {},
        {"prompt"},
    ),
}


def documented(name: str) -> Documented:
    answers: dict[tuple[str, str], tuple[int, bytes]] = {}
    if name in DOCUMENTED_METADATA:
        body = json.dumps(DOCUMENTED_METADATA[name]).encode()
        answers[("GET", DISCOVERY_URLS[name])] = (200, body)
    return Documented(answers)


def test_every_vendor_has_an_authorization_case() -> None:
    assert set(AUTHORIZE) == AGENTCORE_VENDORS
    assert set(DISCOVERY_URLS) == {n for n in AGENTCORE_VENDORS if provider(n).discovery_url}


@pytest.mark.parametrize("name", sorted(AUTHORIZE))
def test_the_authorization_url_is_what_the_vendor_documents(name: str) -> None:
    endpoint, scopes, scope_param, required, absent = AUTHORIZE[name]
    supports_pkce = presets.load(name).expects.pkce_s256 is True
    config = provider(name, scopes=list(scopes))
    if not supports_pkce:
        # the vault always sends S256 and refuses a provider not known to take it...
        with pytest.raises(ProviderError, match="assume_pkce_s256"):
            client(config, documented(name)).authorization_url(
                redirect_uri=REDIRECT, state="st", verifier=VERIFIER, scopes=scopes
            )
        # ...until the operator opts in explicitly
        config = provider(name, scopes=list(scopes), assume_pkce_s256=True)
    url = client(config, documented(name)).authorization_url(
        redirect_uri=REDIRECT, state="st", verifier=VERIFIER, scopes=scopes
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == endpoint
    params = dict(parse_qsl(parts.query, strict_parsing=True))
    assert len(params) == len(parse_qs(parts.query)), "no parameter twice"
    assert params["response_type"] == "code"
    assert params["client_id"] == "cid"
    assert params["redirect_uri"] == REDIRECT
    assert params["state"] == "st"
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] == code_challenge(VERIFIER)
    for key, value in {**scope_param, **required}.items():
        assert params.get(key) == value, key
    assert not absent & set(params), absent & set(params)
    assert "%20" in url or " " not in "".join(scope_param.values())  # spaces as %20, not +


# --- token answers --------------------------------------------------------------------------


def exchange(
    name: str, status: int, body: bytes, **extra: Any
) -> tuple[TokenResponse, dict[str, Any]]:
    config = provider(name, **extra)
    http = documented(name)
    meta = client(config, http).metadata()
    http.answers[("POST", meta.token_endpoint)] = (status, body)
    answer = client(config, http).exchange_code(
        code="the-code", verifier=VERIFIER, redirect_uri=REDIRECT
    )
    return answer, http.sent[-1]


def test_github_answers_form_encoded_and_the_vault_reads_it() -> None:
    """GitHub's default answer (without Accept: application/json), a GitHub App's expiring
    user token."""
    body = (
        b"access_token=ghu_16C7e42F292c6912E7710c838347Ae178B4a&expires_in=28800"
        b"&refresh_token=ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498"
        b"&refresh_token_expires_in=15897600&scope=&token_type=bearer"
    )
    answer, sent = exchange("github", 200, body)
    assert answer == TokenResponse(
        access_token="ghu_16C7e42F292c6912E7710c838347Ae178B4a",
        expires_in=28800,
        refresh_token="ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498",
        scopes=(),
    )
    assert sent["url"] == "https://github.com/login/oauth/access_token"
    assert sent["headers"]["Accept"] == "application/json"
    form = dict(parse_qsl(sent["body"].decode()))
    assert (form["client_id"], form["client_secret"]) == ("cid", "the-secret")  # in the body
    assert "Authorization" not in sent["headers"]


def test_github_errors_answered_with_200_are_oauth_errors() -> None:
    body = json.dumps(
        {"error": "bad_refresh_token", "error_description": "The refresh token is invalid."}
    ).encode()
    with pytest.raises(OAuthError) as refused:
        exchange("github", 200, body)
    assert refused.value.error == "invalid_grant"  # GitHub's code for a dead grant, mapped


def test_slack_nests_the_user_token_in_authed_user() -> None:
    body = json.dumps(
        {
            "ok": True,
            "app_id": "A0KRD7HC3",
            "authed_user": {
                "id": "U1234",
                "scope": "channels:history,chat:write",
                "access_token": "xoxe.xoxp-1-user",
                "token_type": "user",
                "expires_in": 43200,
                "refresh_token": "xoxe-1-refresh",
            },
            "team": {"id": "T9TK3CUKW", "name": "Slack Softball Team"},
            "enterprise": None,
            "is_enterprise_install": False,
        }
    ).encode()
    answer, sent = exchange("slack", 200, body)
    assert answer == TokenResponse(
        access_token="xoxe.xoxp-1-user",
        expires_in=43200,
        refresh_token="xoxe-1-refresh",
        scopes=("channels:history", "chat:write"),
    )
    basic = base64.b64encode(b"cid:the-secret").decode()
    assert sent["headers"]["Authorization"] == f"Basic {basic}"


def test_slack_refresh_answers_at_the_top_level_and_errors_with_ok_false() -> None:
    config = provider("slack")
    http = Documented(
        {
            ("POST", "https://slack.com/api/oauth.v2.access"): (
                200,
                json.dumps(
                    {
                        "ok": True,
                        "access_token": "xoxe.xoxp-1-next",
                        "token_type": "user",
                        "expires_in": 43200,
                        "refresh_token": "xoxe-1-next",
                        "scope": "channels:history,chat:write",
                    }
                ).encode(),
            )
        }
    )
    answer = client(config, http).refresh("xoxe-1-refresh", ("chat:write",))
    assert (answer.access_token, answer.refresh_token) == ("xoxe.xoxp-1-next", "xoxe-1-next")
    assert "scope" not in dict(parse_qsl(http.sent[-1]["body"].decode()))  # no narrowing
    http.answers[("POST", "https://slack.com/api/oauth.v2.access")] = (
        200,
        b'{"ok": false, "error": "invalid_refresh_token"}',
    )
    with pytest.raises(OAuthError) as refused:
        client(config, http).refresh("xoxe-1-spent", None)
    assert refused.value.error == "invalid_grant"


def test_notion_takes_json_with_basic_auth_and_answers_without_expires_in() -> None:
    body = json.dumps(
        {
            "access_token": "ntn_token",
            "token_type": "bearer",
            "refresh_token": "ntn_refresh",
            "bot_id": "b1",
            "workspace_id": "w1",
            "workspace_name": "W",
            "owner": {"type": "user", "user": {"object": "user", "id": "u1"}},
            "duplicated_template_id": None,
            "request_id": "r1",
        }
    ).encode()
    answer, sent = exchange("notion", 200, body, assume_pkce_s256=True)
    assert answer == TokenResponse(
        access_token="ntn_token",
        expires_in=3600,  # default_token_lifetime_seconds: Notion says nothing
        refresh_token="ntn_refresh",
        scopes=None,
    )
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["Authorization"].startswith("Basic ")
    payload = json.loads(sent["body"])
    assert payload["grant_type"] == "authorization_code"
    assert payload["code"] == "the-code" and payload["redirect_uri"] == REDIRECT
    assert "client_secret" not in payload


def test_salesforce_answers_no_expires_in_and_the_vault_assumes_the_shortest_session() -> None:
    body = json.dumps(
        {
            "access_token": "00Dxx!AQ0AQ",
            "refresh_token": "5Aep861",
            "instance_url": "https://mycompany.my.salesforce.com",
            "id": "https://login.salesforce.com/id/00Dxx/005xx",
            "token_type": "Bearer",
            "issued_at": "1278448101416",
            "signature": "CMJ4l+CCaPQiKjoOEwEig9H4wqhpuLSk4J2urAe+fVg=",
            "scope": "api refresh_token",
        }
    ).encode()
    answer, _ = exchange("salesforce", 200, body)
    assert (answer.expires_in, answer.refresh_token) == (900, "5Aep861")


def test_twitch_answers_its_scopes_as_an_array() -> None:
    body = json.dumps(
        {
            "access_token": "rfx2uswqe8l4g1mkagrvg5tv0ks3",
            "expires_in": 14124,
            "refresh_token": "5b93chm6hdve3mycz05zfzatkfdenfspp1h1ar2xxdalen01",
            "scope": ["channel:moderate", "chat:edit", "chat:read"],
            "token_type": "bearer",
        }
    ).encode()
    answer, _ = exchange("twitch", 200, body, assume_pkce_s256=True)
    assert answer.scopes == ("channel:moderate", "chat:edit", "chat:read")


def test_linkedin_answers_without_token_type_which_only_its_preset_accepts() -> None:
    body = json.dumps(
        {
            "access_token": "AQUvlL_DYEzvT2wz1QJiEPeLioeA",
            "expires_in": 5184000,
            "refresh_token": "AQWAft_WjYZKwuWXLC5hQlghgTam",
            "refresh_token_expires_in": 31536000,
            "scope": "r_basicprofile",
        }
    ).encode()
    answer, _ = exchange("linkedin", 200, body, assume_pkce_s256=True)
    assert answer.refresh_token == "AQWAft_WjYZKwuWXLC5hQlghgTam"
    with pytest.raises(ProviderError, match="token_type None"):
        exchange(
            "linkedin", 200, body, assume_pkce_s256=True, token_response={"token_types": ["bearer"]}
        )


def test_a_token_answer_that_is_neither_json_nor_form_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="neither JSON nor form"):
        exchange("github", 200, b"<html>maintenance</html>")


def test_form_encoded_error_answers_are_read_too() -> None:
    with pytest.raises(OAuthError) as refused:
        exchange("github", 400, b"error=bad_verification_code&error_description=expired")
    assert refused.value.error == "invalid_grant"
    assert refused.value.description == "expired"


def test_placeholders_fill_api_base_urls() -> None:
    assert provider("salesforce").api_base_urls == ("https://mycompany.my.salesforce.com",)


def test_the_preset_names_in_the_readme_table_are_the_files() -> None:
    readme = (REPO_ROOT / "config" / "README.md").read_text()
    section = readme.split("## Provider presets", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z0-9]+)` \|", section, flags=re.M)
    assert sorted(table) == sorted(presets.names())
