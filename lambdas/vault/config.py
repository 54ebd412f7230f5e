"""The one typed configuration of Agent Vault.

The model is validated at `cdk synth` (stacks/config.py loads it from cdk.json context and an
optional file), and the bundle carries what that validation produced (`config_document`: the
validated config, presets applied, stamped with the model it was validated by). At Lambda cold
start `load_config` reads that file back without validating it again when the stamp is this
model's (`model_stamp`), so no function builds the config's validators at cold start; any other
file (local mode's, the tests', a bundle from another model) is validated in full.

Every model defers building its validator to its first validation (`defer_build`).
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
SCOPE_PATTERN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # RFC 6749 scope-token
ROLE_NAME_PATTERN = r"^[\w+=,.@-]{1,64}$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$"
ROLE_ID_PATTERN = r"^AROA[A-Z0-9]{4,124}$"
"""IAM's unique id of a role (`aws iam get-role --query Role.RoleId`): a re-created role of the
same name gets another one."""
CERTIFICATE_ARN_PATTERN = r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[\w-]+$"
LOG_RETENTION_DAYS = frozenset(
    {
        1,
        3,
        5,
        7,
        14,
        30,
        60,
        90,
        120,
        150,
        180,
        365,
        400,
        545,
        731,
        1096,
        1827,
        2192,
        2557,
        2922,
        3288,
        3653,
    }
)


def _is_local_host(host: str | None) -> bool:
    return host in {"localhost", "127.0.0.1", "::1"}


def _url(value: str) -> str:
    """An absolute http(s) URL without fragment or credentials; http only on loopback."""
    parts = urlsplit(value)
    if parts.scheme not in {"https", "http"} or not parts.netloc:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    if parts.scheme == "http" and not _is_local_host(parts.hostname):
        raise ValueError(f"{value!r} must use https (http is only allowed on localhost)")
    if parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} must not carry a fragment or credentials")
    return value


Url = Annotated[str, AfterValidator(_url)]


def _scope(value: str) -> str:
    if not SCOPE_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a valid OAuth scope token")
    return value


Scope = Annotated[str, AfterValidator(_scope)]


def _api_base_url(value: str) -> str:
    """A provider API's base URL: a `Url` without query; a trailing `/` is dropped (the proxy
    joins `{path+}` to it with one)."""
    if urlsplit(value).query or value.endswith("?"):
        raise ValueError(f"{value!r} must not carry a query")
    return value.rstrip("/")


ApiBaseUrl = Annotated[str, AfterValidator(_url), AfterValidator(_api_base_url)]

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HTTP_METHODS: tuple[HttpMethod, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
Delivery = Literal["proxy", "dpop", "bearer", "returned"]
"""`returned` is for API-key providers only: the key itself handed to the agent (an opt-in)."""
_PATH_SEGMENT = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()+,;=:@]|%[0-9A-Fa-f]{2}|\*)+$")
_ENCODED_SEPARATOR = re.compile(r"%(?:2[fFeE]|5[cC]|[01][0-9A-Fa-f]|7[fF])")


def _path_pattern(value: str) -> str:
    """`/calendar/v3/**`: segments of URL path characters; `*` matches within one segment, a
    `**` segment any number of segments (none included). No `.`/`..`/empty segments and no
    encoded separators: the proxy refuses those in requests, so a pattern naming them could
    never match (or would hide a traversal)."""
    if len(value) > 512 or not value.startswith("/"):
        raise ValueError(f"{value!r} must start with / (a path under the API base URL)")
    if value == "/":
        return value
    for segment in value[1:].split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"{value!r} has an empty, '.' or '..' segment")
        if "**" in segment and segment != "**":
            raise ValueError(f"{value!r}: '**' must be a whole segment")
        if not _PATH_SEGMENT.match(segment) or _ENCODED_SEPARATOR.search(segment):
            raise ValueError(f"{value!r}: {segment!r} is not a plain path segment")
    return value


PathPattern = Annotated[str, AfterValidator(_path_pattern)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class TokenResponseShape(_Frozen):
    """Where a provider's token answer departs from RFC 6749 §5.1 (set by presets)."""

    path: str | None = Field(default=None, pattern=r"^[a-z_]{1,64}$")
    """Member holding the user's token when the provider nests it (Slack: `authed_user`); the
    top level is read when the answer has no such object (Slack's refresh answers)."""
    token_types: tuple[str, ...] = ("bearer",)
    """Accepted `token_type` values (compared case-insensitively)."""
    token_type_required: bool = True
    """False for a provider that omits `token_type` (LinkedIn)."""
    invalid_grant_errors: tuple[str, ...] = ()
    """The provider's own error codes that mean RFC 6749's `invalid_grant` (the grant is gone:
    ask for consent again), e.g. GitHub's `bad_refresh_token`."""


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # RFC 9110 token
_QUERY_NAME = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded by the proxy, never injectable."""
_UNINJECTABLE_HEADERS = HOP_BY_HOP | {
    "content-length",
    "content-type",
    "cookie",
    "dpop",
    "expect",
    "forwarded",
    "host",
    "via",
}


class ApiKeyConfig(_Frozen):
    """An API-key credential (flow 12): a static key the provider issued, kept in Secrets
    Manager under the vault key and attached by the proxy; no OAuth, no scopes, no consent."""

    per: Literal["provider", "user"] = "provider"
    """`provider`: one key for every agent allowed there; `user`: each user's own key (services
    that issue per-user keys), used only for that user's sessions."""
    header: str | None = None
    """The request header that carries the key (e.g. `X-Api-Key`, `Authorization`). Default
    (neither `header` nor `query_parameter`): `Authorization` with prefix `Bearer `."""
    prefix: str = Field(default="", max_length=32, pattern=r"^[\x20-\x7e]*$")
    """Put before the key in the header (`Bearer `, `Token `...)."""
    query_parameter: str | None = None
    """Or the query parameter that carries the key (the provider's choice: a key in a URL ends
    up in the provider's logs; the vault never logs, returns or audits it)."""
    rotation_window_seconds: int = Field(default=86400, ge=0, le=30 * 86400)
    """After a new key is set, the previous one stays usable this long: the proxy sends the
    current key, and a 401 to an idempotent request is retried once with the previous one."""
    max_key_chars: int = Field(default=4096, ge=16, le=8192)
    """The longest key the admin route accepts."""

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyConfig:
        if self.header is not None and self.query_parameter is not None:
            raise ValueError("api_key: give header or query_parameter, not both")
        if self.header is None and self.query_parameter is None:
            object.__setattr__(self, "header", "Authorization")
            if not self.prefix:
                object.__setattr__(self, "prefix", "Bearer ")
        if self.header is not None:
            if not _HEADER_NAME.match(self.header):
                raise ValueError(f"api_key.header: {self.header!r} is not an HTTP header name")
            lowered = self.header.lower()
            if lowered in _UNINJECTABLE_HEADERS or lowered.startswith(
                ("x-amz", "x-agent-vault-", "x-forwarded-")
            ):
                raise ValueError(f"api_key.header: the proxy never sends {self.header!r}")
        elif self.prefix:
            raise ValueError("api_key.prefix goes with header, not query_parameter")
        if self.query_parameter is not None and not _QUERY_NAME.match(self.query_parameter):
            raise ValueError(
                f"api_key.query_parameter: {self.query_parameter!r} is not a plain name"
            )
        return self


class ProviderConfig(_Frozen):
    """An external OAuth 2.0 authorization server the vault is a client of, or (with `api_key`)
    an API that takes a static key."""

    preset: str = "generic"
    """A provider preset: a data file of `vault/presets/` (see config/README.md) whose values
    fill every key not given here."""
    preset_params: dict[str, str] = Field(default_factory=dict)
    """Values of the preset's placeholders (`{tenant}`, `{domain}`...)."""
    issuer: Url | None = None
    discovery_url: Url | None = None
    authorization_endpoint: Url | None = None
    token_endpoint: Url | None = None
    revocation_endpoint: Url | None = None
    client_id: str = Field(default="", max_length=256)
    """Required for OAuth providers; none for an `api_key` provider."""
    client_auth_method: Literal[
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"
    ] = "client_secret_basic"
    """How the vault authenticates at the token and revocation endpoints; `private_key_jwt`
    (RFC 7523): the provider's secret is a private JWK, a signed `client_assertion` is sent."""
    client_assertion_alg: Literal["ES256", "RS256", "PS256", "EdDSA"] = "ES256"
    """The signing algorithm of `private_key_jwt` assertions (the secret's key type must fit)."""
    grant_type: Literal["authorization_code", "client_credentials"] = "authorization_code"
    """`authorization_code`: users consent and the vault holds their grants. `client_credentials`
    (a machine provider, flow 12): the credentials are the agent's own, no user consents; tokens
    are fetched with the client's credentials for the agent's scopes and cached per agent."""
    scopes: tuple[Scope, ...] = ()
    """Every scope any agent may ever be allowed at this provider (at least one; none for an
    `api_key` provider)."""
    scope_separator: Literal[" ", ","] = " "
    scope_parameter: Literal["scope", "user_scope"] = "scope"
    """The authorization-request parameter carrying the scopes (Slack's user tokens:
    `user_scope`)."""
    offline_scope: Scope | None = "offline_access"
    """Scope that asks the provider for a refresh token (sent at consent, never handed out)."""
    prompt_consent: bool = True
    """Send prompt=consent so the provider issues a refresh token."""
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)
    resource: Url | None = None
    """RFC 8707 resource indicator, sent at authorize, code exchange and refresh."""
    narrow_scopes_on_refresh: bool = True
    """Mint each session's token with a refresh request narrowed to the scopes it asked for."""
    assume_pkce_s256: bool = False
    """Accept a provider whose metadata does not list S256 in code_challenge_methods_supported."""
    timeout_seconds: float = Field(default=5.0, gt=0, le=25)
    revoke_on_session_end: bool = True
    """Revoke a session's tokens upstream (RFC 7009) when the session ends: `bearer` ones; `proxy`
    and `dpop` ones only where that spares the grant (`revocation_revokes_grant` false)."""
    revocation_revokes_grant: bool = True
    """The provider kills the whole grant when one of its access tokens is revoked (Google and
    oidc-provider do; RFC 7009 allows it). Then ending a session also ends the user's grant for
    that agent, and the vault marks it so the next request asks for consent at once."""
    rotates_refresh_tokens: bool = True
    """The provider may rotate refresh tokens and revoke the whole grant when a spent one comes
    back (RFC 9700 §4.14.2; oidc-provider, Okta, Auth0...). Then a refresh whose answer was lost
    (read timeout, dropped connection) is never retried with the old token: the grant is marked
    broken (`refresh_outcome_unknown`) and the user asked for consent again. Set false only for
    a provider that never rotates them (e.g. Google): such a refresh is then just retried."""
    default_token_lifetime_seconds: int = Field(default=3600, ge=60)
    """Lifetime assumed for an access token when the provider omits `expires_in`."""
    request_format: Literal["form", "json"] = "form"
    """Body of token and revocation requests: RFC 6749's form, or JSON (Notion)."""
    token_response: TokenResponseShape = Field(default_factory=TokenResponseShape)
    api_base_urls: tuple[ApiBaseUrl, ...] = ()
    """The provider's API base URLs: the only places the egress proxy reaches (its first is the
    default). With them, agents get `proxy` delivery by default: the token never leaves the
    vault."""
    dpop: bool = False
    """The provider supports RFC 9449 DPoP at its token endpoint (its metadata must list ES256 in
    `dpop_signing_alg_values_supported`): agents may get tokens bound to their session key."""
    api_key: ApiKeyConfig | None = None
    """An API-key provider (flow 12): no OAuth at all; the key is set by an admin
    (`PUT /v1/admin/api-keys/{provider}`, `agent-vault apikey set`) and attached by the proxy to
    requests to `api_base_urls` as `api_key` says."""

    @property
    def is_api_key(self) -> bool:
        return self.api_key is not None

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            from vault import presets  # only a validation needs the preset files

            return presets.apply(data)
        return data

    @model_validator(mode="after")
    def _endpoints_known(self) -> ProviderConfig:
        if self.api_key is not None:
            return self._api_key_only()
        if not self.client_id:
            raise ValueError("client_id is required (the vault's client id at the provider)")
        if not self.scopes:
            raise ValueError("scopes: give at least one scope")
        if self.grant_type == "client_credentials":
            if self.discovery_url is None and self.token_endpoint is None:
                raise ValueError(
                    "a client_credentials provider needs discovery_url or token_endpoint"
                )
            if self.client_auth_method == "none":
                raise ValueError("a client_credentials provider needs client authentication")
        elif self.discovery_url is None and (
            self.authorization_endpoint is None or self.token_endpoint is None
        ):
            raise ValueError(
                "give either discovery_url or both authorization_endpoint and token_endpoint"
            )
        reserved = {
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "code_challenge",
            "code_challenge_method",
            "resource",
            "user_scope",
        }
        clash = reserved & set(self.extra_authorize_params)
        if clash:
            raise ValueError(f"extra_authorize_params may not set {sorted(clash)}")
        if len(set(self.api_base_urls)) != len(self.api_base_urls):
            raise ValueError("api_base_urls: a base URL is listed twice")
        return self

    def _api_key_only(self) -> ProviderConfig:
        """An API-key provider has API base URLs and nothing of OAuth."""
        oauth = [
            name
            for name in (
                "issuer",
                "discovery_url",
                "authorization_endpoint",
                "token_endpoint",
                "revocation_endpoint",
                "resource",
            )
            if getattr(self, name) is not None
        ]
        oauth += [name for name in ("client_id", "scopes") if getattr(self, name)]
        if self.grant_type != "authorization_code":
            oauth.append("grant_type")
        if self.dpop:
            oauth.append("dpop")
        if oauth:
            raise ValueError(f"an api_key provider takes no OAuth settings: remove {sorted(oauth)}")
        if not self.api_base_urls:
            raise ValueError("an api_key provider needs api_base_urls (where its key is sent)")
        if len(set(self.api_base_urls)) != len(self.api_base_urls):
            raise ValueError("api_base_urls: a base URL is listed twice")
        return self


class RequestRule(_Frozen):
    """Requests an agent may send through the proxy: these methods on these paths."""

    methods: tuple[HttpMethod, ...] = Field(default=HTTP_METHODS, min_length=1)
    paths: tuple[PathPattern, ...] = Field(default=("/**",), min_length=1)
    """Path patterns under the API base URL: `*` within one segment, `**` any segments."""


EVERY_REQUEST = (RequestRule.model_construct(),)
"""The request policy when none is configured: every method, every path under the base URLs
(the model's defaults, taken without building its validator at import)."""


class ProviderAccess(_Frozen):
    """What an agent may do at one provider: its scopes, how its tokens are delivered, and (for
    proxy delivery) which requests the proxy sends for it."""

    scopes: tuple[Scope, ...] = ()
    """The scopes the agent may ask for (a subset of the provider's `scopes`; at least one at
    an OAuth provider, none at an `api_key` provider)."""
    delivery: Delivery | None = None
    """`proxy` (the token never leaves the vault), `dpop` (bound to the session key) or
    `bearer` (replayable until it expires: an explicit opt-in); at an `api_key` provider `proxy`
    or `returned` (the key itself handed to the agent: an explicit opt-in). Default: `proxy` when
    the provider has `api_base_urls`, else `dpop` when it has `dpop: true`, else a config
    error."""
    requests: tuple[RequestRule, ...] | None = Field(default=None, min_length=1)
    """Proxy delivery only; default: every method on every path (`/**`)."""

    @model_validator(mode="before")
    @classmethod
    def _from_scope_list(cls, data: Any) -> Any:
        """The shorthand: a list of scopes is `{"scopes": [...]}` (the default delivery)."""
        if isinstance(data, list | tuple):
            return {"scopes": data}
        return data


class AgentConfig(_Frozen):
    """An agent: which IAM role is it, and what it may ask for at which provider."""

    role_name: str | None = Field(default=None, pattern=ROLE_NAME_PATTERN)
    """The IAM role the agent's tasks run as, in the vault's own account; its assumed-role
    session name is the task id. Give this or `role_arn`."""
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    """The role by ARN: pins the account (the vault's own or another)."""
    role_id: str | None = Field(default=None, pattern=ROLE_ID_PATTERN)
    """The role's unique id (AROA...): a role deleted and re-created under the same name is not
    the agent."""
    providers: dict[str, ProviderAccess] = Field(default_factory=dict)
    """Per provider: the allowed scopes (the agent's policy), the delivery and the request
    policy. A list of scopes is the shorthand for `{"scopes": [...]}`."""
    may_assert_user_id: bool = False
    """Trust this agent to name the user by id instead of presenting an identity token."""
    may_delegate_to: tuple[Annotated[str, Field(pattern=NAME_PATTERN)], ...] = ()
    """The agents a session of this agent may hand a child session to (flow 8); none by
    default. Each must be a configured agent."""

    @model_validator(mode="after")
    def _one_role(self) -> AgentConfig:
        if self.role_name is None and self.role_arn is None:
            raise ValueError("give role_name or role_arn")
        if self.role_arn is not None:
            name = role_arn_name(self.role_arn)
            if self.role_name is not None and self.role_name != name:
                raise ValueError(f"role_name {self.role_name!r} is not role_arn's name {name!r}")
            object.__setattr__(self, "role_name", name)
        return self

    @property
    def name_of_role(self) -> str:
        """The role's name (from `role_arn` when given)."""
        assert self.role_name is not None  # the validator fills it
        return self.role_name

    @property
    def role_account(self) -> str | None:
        """The account pinned by `role_arn`; None: the vault's own."""
        return role_arn_account(self.role_arn) if self.role_arn else None


class IdentityIssuerConfig(_Frozen):
    """An identity provider whose JWTs name the users (verified against its JWKS)."""

    issuer: Url
    jwks_uri: Url
    audiences: tuple[str, ...] = Field(min_length=1)
    algorithms: tuple[Literal["RS256", "ES256", "PS256", "EdDSA"], ...] = ("RS256", "ES256")


class VaultConfig(_Frozen):
    """Everything a deployment of Agent Vault is configured with."""

    environment: str = Field(default="dev", pattern=NAME_PATTERN)
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    agents: dict[str, AgentConfig] = Field(min_length=1)
    admin_role_names: tuple[Annotated[str, Field(pattern=ROLE_NAME_PATTERN)], ...] = ()
    """Admin roles by name, in the vault's own account."""
    admin_role_arns: tuple[Annotated[str, Field(pattern=ROLE_ARN_PATTERN)], ...] = ()
    """Admin roles by ARN (the account pinned)."""
    return_urls: tuple[Url, ...] = Field(min_length=1)
    """Where the callback may send the browser after consent (exact match; the first is default)."""
    user_identity_issuers: tuple[IdentityIssuerConfig, ...] = ()
    session_ttl_seconds: int = Field(default=3600, ge=60, le=43200)
    session_max_life_seconds: int = Field(default=86400, ge=60, le=7 * 86400)
    """A session's absolute maximum life: renewals never extend it past created_at + this."""
    stopped_task_ttl_seconds: int = Field(default=13 * 3600, ge=12 * 3600, le=7 * 86400)
    """How long a stopped task stays recorded as stopped (its credentials start no session)."""
    flow_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    max_delegation_depth: int = Field(default=2, ge=1, le=8)
    """How deep a delegation chain may go: 1 lets a session have children but no grandchildren
    (a session started by an agent is depth 0, its child 1, ...)."""
    proof_max_age_seconds: int = Field(default=60, ge=5, le=300)
    audit_data_events: Literal["writes", "all", "none"] = "writes"
    certificate_arn: str | None = Field(default=None, pattern=CERTIFICATE_ARN_PATTERN)
    """ACM certificate for the sample agent's HTTPS load balancer (no load balancer without it)."""
    log_retention_days: int = 30
    """CloudWatch Logs retention of every log group (one of CloudWatch's allowed values)."""
    # Deployment-only settings: read by stacks/ at synth, ignored by the handlers.
    audit_retention_days: int = Field(default=365, ge=1, le=3653)
    """How long CloudTrail log files stay in the audit bucket before they expire."""
    sample_agent: str | None = None
    """The agent the sample ECS service runs as (its role_name); default: the first agent."""
    reaper_reserved_concurrency: int | None = Field(default=2, ge=1, le=1000)
    """Concurrency reserved for the session reaper, so other workloads in the account cannot
    starve revocation; None reserves nothing (accounts below 100 + this cannot reserve)."""
    key_admin_role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    """Administers the vault key (never uses it, grants it or changes its policy); default: the
    account, i.e. whoever IAM allows those administration actions."""
    deploy_role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    """The role CloudFormation deploys as: the only one that may change the vault key's policy;
    default: the CDK bootstrap's CloudFormation execution role."""
    agent_endpoint: Literal["api_gateway", "function_url"] = "api_gateway"
    """How agents reach the agent API and the egress proxy: the HTTP API (IAM on each route,
    stage throttle, access log), or also each function's own URL with IAM auth (no API Gateway
    request charge; docs/cost.md, "Agent endpoint")."""
    agent_egress: Literal["nat_gateway", "public_ip"] = "nat_gateway"
    """How the sample agent's tasks reach the vault, the providers and AWS: from private subnets
    through one NAT gateway, or from public subnets with a public IPv4 address each and no NAT
    gateway (about $33 a month less idle; nothing inbound but the load balancer either way;
    docs/deploy.md, "Choosing the agents' egress")."""

    @field_validator("log_retention_days")
    @classmethod
    def _cloudwatch_retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"{value} is not a CloudWatch Logs retention; use one of"
                f" {sorted(LOG_RETENTION_DAYS)}"
            )
        return value

    @model_validator(mode="after")
    def _policies_within_providers(self) -> VaultConfig:
        for section, names in (("providers", self.providers), ("agents", self.agents)):
            for name in names:
                if not re.match(NAME_PATTERN, name):
                    raise ValueError(f"{section}.{name}: the name must match {NAME_PATTERN}")
        for agent_name, agent in self.agents.items():
            for provider, access in agent.providers.items():
                if provider not in self.providers:
                    raise ValueError(
                        f"agents.{agent_name}.providers.{provider}: no provider named {provider!r}"
                    )
                _check_scopes_given(agent_name, provider, access, self.providers[provider])
                extra = set(access.scopes) - set(self.providers[provider].scopes)
                if extra:
                    raise ValueError(
                        f"agents.{agent_name}.providers.{provider}: scopes {sorted(extra)} are not"
                        f" in providers.{provider}.scopes"
                    )
                _check_delivery(agent_name, provider, access, self.providers[provider])
        for agent_name, agent in self.agents.items():
            unknown = [a for a in agent.may_delegate_to if a not in self.agents]
            if unknown:
                raise ValueError(
                    f"agents.{agent_name}.may_delegate_to: no agent named {unknown[0]!r}"
                )
            if len(set(agent.may_delegate_to)) != len(agent.may_delegate_to):
                raise ValueError(f"agents.{agent_name}.may_delegate_to: an agent is listed twice")
        roles = [a.name_of_role for a in self.agents.values()]
        if len(set(roles)) != len(roles):
            raise ValueError("agents: two agents share one role_name")
        if set(roles) & set(self.admins_by_role):
            raise ValueError("admin_role_names: a role cannot be both an agent and an admin")
        if self.session_max_life_seconds < self.session_ttl_seconds:
            raise ValueError("session_max_life_seconds must be at least session_ttl_seconds")
        if self.sample_agent is not None and self.sample_agent not in self.agents:
            raise ValueError(f"sample_agent: no agent named {self.sample_agent!r}")
        return self

    def delivery(self, agent: str, provider: str) -> Delivery:
        """How `agent`'s tokens at `provider` are delivered (the configured or default one)."""
        access = self.agents[agent].providers[provider]
        delivery = access.delivery or _default_delivery(self.providers[provider])
        assert delivery is not None  # the validator refuses a config without one
        return delivery

    def request_rules(self, agent: str, provider: str) -> tuple[RequestRule, ...]:
        """The proxy's request policy for `agent` at `provider` (default: every request)."""
        return self.agents[agent].providers[provider].requests or EVERY_REQUEST

    @cached_property
    def agents_by_role(self) -> dict[str, str]:
        return {agent.name_of_role: name for name, agent in self.agents.items()}

    @cached_property
    def admins_by_role(self) -> dict[str, str | None]:
        """Admin role name -> the account its ARN pins (None: the vault's own account)."""
        admins: dict[str, str | None] = dict.fromkeys(self.admin_role_names)
        for arn in self.admin_role_arns:
            admins[role_arn_name(arn)] = role_arn_account(arn)
        return admins


def _default_delivery(provider: ProviderConfig) -> Delivery | None:
    if provider.api_base_urls:
        return "proxy"
    if provider.dpop:
        return "dpop"
    return None


def _check_scopes_given(
    agent: str, name: str, access: ProviderAccess, provider: ProviderConfig
) -> None:
    where = f"agents.{agent}.providers.{name}"
    if provider.is_api_key and access.scopes:
        raise ValueError(f"{where}: {name!r} is an api_key provider: an API key has no scopes")
    if not provider.is_api_key and not access.scopes:
        raise ValueError(f"{where}: give at least one scope")


def _check_delivery(
    agent: str, name: str, access: ProviderAccess, provider: ProviderConfig
) -> None:
    """The delivery can be served, and a replayable one is never a default."""
    where = f"agents.{agent}.providers.{name}"
    delivery = access.delivery or _default_delivery(provider)
    if provider.is_api_key:
        if delivery not in ("proxy", "returned"):
            raise ValueError(
                f"{where}: an api_key provider's delivery is proxy (the key never leaves the"
                ' vault) or, opted in, "returned" (the key handed to the agent)'
            )
    elif delivery == "returned":
        raise ValueError(
            f"{where}: delivery returned is for api_key providers; use proxy, dpop or bearer"
        )
    if delivery is None:
        raise ValueError(
            f"{where}: no safe delivery for this agent's tokens: set providers.{name}.api_base_urls"
            f" (the vault's proxy calls the API; the token never leaves it), enable"
            f" providers.{name}.dpop (tokens bound to the session key), or opt in with"
            f' "delivery": "bearer" (a token anyone who intercepts it can replay until it expires)'
        )
    if delivery == "proxy" and not provider.api_base_urls:
        raise ValueError(
            f"{where}: delivery proxy needs providers.{name}.api_base_urls (where the proxy sends"
            " requests)"
        )
    if delivery == "dpop" and provider.grant_type == "client_credentials":
        raise ValueError(
            f"{where}: delivery dpop is not available for a client_credentials provider (one"
            " machine token serves every session of the agent): use proxy or bearer"
        )
    if delivery == "dpop" and not provider.dpop:
        raise ValueError(
            f"{where}: delivery dpop needs providers.{name}.dpop: true (a provider that binds"
            " tokens to a key, RFC 9449)"
        )
    if access.requests is not None and delivery != "proxy":  # returned: the agent calls itself
        raise ValueError(
            f"{where}: requests is the proxy's policy; it means nothing with delivery {delivery}"
        )


def role_arn_name(arn: str) -> str:
    """`arn:aws:iam::123456789012:role/path/name` -> `name` (what assumed-role ARNs carry)."""
    return arn.rsplit("/", 1)[-1]


def role_arn_account(arn: str) -> str:
    return arn.split(":")[4]


@cache
def model_stamp() -> str:
    """What a bundled config was validated by: this module's source and pydantic's version. A
    bundle whose stamp differs (another model) is validated again at cold start."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(b"\0" + pydantic.VERSION.encode())
    return digest.hexdigest()


def config_document(config: VaultConfig) -> str:
    """The config as the bundle carries it: validated (presets applied, every default filled),
    stamped with the model that validated it, stable bytes."""
    document = {"config": config.model_dump(mode="json"), "validated_by": model_stamp()}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def load_config(path: str | Path) -> VaultConfig:
    """Read a config file (JSON): a `config_document` stamped by this model is taken as
    validated; anything else is validated in full."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(document, dict) and set(document) == {"config", "validated_by"}:
        if document["validated_by"] == model_stamp():
            return _constructed(VaultConfig, document["config"])
        document = document["config"]
    return VaultConfig.model_validate(document)


M = typing.TypeVar("M", bound=BaseModel)


def _constructed(model: type[M], data: dict[str, Any]) -> M:
    """`model` from the JSON dump of an instance that was validated: nested models, tuples and
    dicts rebuilt by the fields' annotations, no validator run (`model_construct`)."""
    values = {
        name: _value(field.annotation, data[name])
        for name, field in model.model_fields.items()
        if name in data
    }
    return model.model_construct(**values)


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _value(typing.get_args(hint)[0], value)
    if origin in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(hint, value)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return _constructed(hint, value)
    if origin is tuple:
        (item, *_) = typing.get_args(hint)
        return tuple(_value(item, v) for v in value)
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _value(item, v) for k, v in value.items()}
    return value
