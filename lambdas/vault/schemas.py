"""Request bodies, validated at the edge (Pydantic): unknown fields, wrong types and oversized
values are refused with 400 `invalid_request` before any flow runs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

ScopeToken = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")]
ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
Scopes = Annotated[list[ScopeToken], Field(min_length=1, max_length=32)]


class _Body(BaseModel):
    # built at a model's first validation: a function builds only the bodies its requests bring
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


def _given(name: str, json_type: str = "string") -> JsonDict:
    """JSON Schema for "member `name` is present and not null" (for docs/openapi.json)."""
    return {"required": [name], "properties": {name: {"type": json_type}}}


class UserIdentity(_Body):
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [_given("id_token"), _given("user_id")]}, defer_build=True
    )

    id_token: Annotated[str, StringConstraints(min_length=10, max_length=8192)] | None = None
    user_id: Annotated[str, StringConstraints(pattern=r"^[\w.@+=:-]{1,128}$")] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> UserIdentity:
        if (self.id_token is None) == (self.user_id is None):
            raise ValueError("give exactly one of id_token or user_id")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class StartSession(_Body):
    user: UserIdentity
    ttl_seconds: Annotated[int, Field(ge=60, le=43200)] | None = None


class RenewSession(_Body):
    user: UserIdentity | None = None
    ttl_seconds: Annotated[int, Field(ge=60, le=43200)] | None = None


class StartAuthorization(_Body):
    provider: ProviderName
    scopes: Scopes
    return_url: Annotated[str, StringConstraints(max_length=2048)] | None = None


class TokenRequest(_Body):
    provider: ProviderName
    scopes: Scopes


class StartDelegation(_Body):
    """A child session for another agent (flow 8): at most the parent's providers and scopes."""

    agent: ProviderName
    """The configured agent that may claim it (the parent's `may_delegate_to`)."""
    providers: Annotated[dict[ProviderName, Scopes], Field(min_length=1, max_length=16)]
    ttl_seconds: Annotated[int, Field(ge=60, le=43200)] | None = None
    """Default: what is left of the parent's life, at most `session_ttl_seconds`."""


class CompleteFlow(_Body):
    user: UserIdentity
    binding_code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")] | None = None
    """The one-time code the callback put in the redirect to the return URL (flow 4)."""


class RevokedUser(_Body):
    iss: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    sub: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class Revocation(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                _given("user", "object"),
                *(_given(name) for name in ("agent", "provider", "grant_id")),
            ]
        },
        defer_build=True,
    )

    user: RevokedUser | None = None
    agent: ProviderName | None = None
    provider: ProviderName | None = None
    grant_id: Annotated[str, StringConstraints(pattern=r"^grt_[A-Za-z0-9_-]{16,64}$")] | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Revocation:
        if not (self.user or self.agent or self.provider or self.grant_id):
            raise ValueError("name at least one of user, agent, provider or grant_id")
        return self


class ApiKeyWrite(_Body):
    """`PUT /v1/admin/api-keys/{provider}`: the key (never in a URL), and for a per-user
    provider the user it is for."""

    key: Annotated[str, StringConstraints(max_length=8192)]
    """Checked against the provider's `api_key.max_key_chars` (400 `invalid_api_key`)."""
    user: RevokedUser | None = None
    """The key's user: required at a provider with `api_key.per: user`, refused otherwise."""


class ApiKeyRequest(_Body):
    """`POST /v1/sessions/{id}/api-key`: the key itself, for an agent with `returned` delivery."""

    provider: ProviderName


class ApiKeyUserQuery(_Body):
    """`DELETE /v1/admin/api-keys/{provider}`'s query: a per-user key's user (both or none)."""

    user_iss: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    user_sub: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None

    @model_validator(mode="after")
    def _both_or_none(self) -> ApiKeyUserQuery:
        if (self.user_iss is None) != (self.user_sub is None):
            raise ValueError("name the user with both user_iss and user_sub")
        return self

    def user(self) -> RevokedUser | None:
        if self.user_iss is None or self.user_sub is None:
            return None
        return RevokedUser(iss=self.user_iss, sub=self.user_sub)
