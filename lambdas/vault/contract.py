"""The API contract beyond the route table: what each route takes and answers, and who calls it.

The answer models say, field for field, what the handlers return (`json_response(status, ...)`);
`OPERATIONS` names each route's request model (`vault.schemas`), answer model and status.
`vault.openapi` turns them, the route table and the error classes into docs/openapi.json. No
handler imports this module (it costs a Lambda cold start nothing);
tests/integration/test_openapi_answers.py holds real answers of every route to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from vault import connections, inspection, schemas
from vault.consent import FLOW_ID
from vault.delegation import DELEGATION_ID
from vault.routes import Route
from vault.sessions import SESSION_ID

__all__ = [
    "CALLBACK",
    "CALLBACK_QUERY",
    "OPERATIONS",
    "PATH_PARAMS",
    "Operation",
    "operation_for",
    "path_params",
]

_PARAM = re.compile(r"\{([a-z_]+\+?)\}")

# --- answers ---------------------------------------------------------------------------------
# What the handlers return (`json_response(status, payload)`), field for field. Unknown members
# are refused here on purpose: a handler that starts answering more makes the answers test fail
# until the model (and so the document) says so.


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EpochSeconds = Annotated[int, Field(description="Epoch seconds.")]


class UserRef(_Answer):
    """A user's stable identity: the issuer and subject of their identity token."""

    iss: str = Field(description="Issuer (`urn:agent-vault:asserted:<agent>` for a `user_id`).")
    sub: str = Field(description="Subject at that issuer.")


class ProviderDelivery(_Answer):
    """How the session's agent reaches one provider."""

    delivery: Literal["proxy", "dpop", "bearer", "returned"] = Field(
        description="`proxy`: through `/v1/sessions/{session_id}/proxy/{provider}/...` (the "
        "token or API key never leaves the vault); `dpop`: `POST .../tokens` with "
        "`X-Agent-Vault-Token-DPoP`, a token bound to the session key; `bearer`: "
        "`POST .../tokens`, a plain bearer token; `returned` (API-key providers): "
        "`POST .../api-key`, the key itself."
    )
    api_base_urls: list[str] = Field(
        description="The provider's API base URLs (the proxy's targets; the first is the default)."
    )


class Actor(_Answer):
    """An actor of a delegation chain, RFC 8693 §4.1 `act`: the prior actor nested in `act`."""

    sub: str = Field(description="The acting agent.")
    sid: str = Field(pattern=SESSION_ID.pattern, description="Its session.")
    act: Actor | None = Field(default=None, description="The actor it acts for, if any.")


class Chain(_Answer):
    """Who acts for whom: the user as `sub`, the current actor outermost in `act`."""

    iss: str
    sub: str
    act: Actor


class SessionBrief(_Answer):
    """A session of the chain, as the session view lists it."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    agent: str | None = None
    status: Literal["active", "ended", "expired", "gone"]
    expires_at: EpochSeconds | None = None


class ChildView(_Answer):
    """A delegation of this session: `pending` until claimed, then its session."""

    delegation_id: str = Field(pattern=DELEGATION_ID.pattern)
    agent: str
    status: Literal["pending", "expired", "active", "ended"]
    session_id: str | None = Field(default=None, pattern=SESSION_ID.pattern)
    expires_at: EpochSeconds | None = None


class SessionView(_Answer):
    """A vault session (`sessions.session_answer`)."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    agent: str = Field(description="The configured agent the caller's IAM role belongs to.")
    user: UserRef
    task_id: str = Field(description="The caller's task: the assumed-role session name.")
    jkt: str = Field(description="RFC 7638 thumbprint of the session key (DPoP `jwk`).")
    status: Literal["active", "ended", "expired"]
    created_at: EpochSeconds
    expires_at: EpochSeconds
    providers: dict[str, ProviderDelivery] = Field(
        description="Per provider of the agent's policy (a delegated session: of those "
        "delegated to it): its delivery and API base URLs."
    )
    depth: int = Field(ge=0, description="0: started by its agent; n: n links below that.")
    chain: Chain
    parent_session_id: str | None = Field(
        default=None, pattern=SESSION_ID.pattern, description="A delegated session's parent."
    )
    rights: dict[str, list[str]] | None = Field(
        default=None,
        description="`GET`, a delegated session: what it may ask for per provider today, "
        "before the user's grant (its chain's delegations ∩ each agent's policy).",
    )
    ancestors: list[SessionBrief] | None = Field(
        default=None, description="`GET`: the sessions it was delegated from, root first."
    )
    children: list[ChildView] | None = Field(
        default=None, description="`GET`: its delegations, claimed or not."
    )


class DelegationOffered(_Answer):
    """A pending child session: the handle (`delegation_id`) the child agent claims."""

    delegation_id: str = Field(pattern=DELEGATION_ID.pattern)
    parent_session_id: str = Field(pattern=SESSION_ID.pattern)
    agent: str = Field(description="The agent that may claim it.")
    providers: dict[str, list[str]] = Field(description="What the child may use.")
    status: Literal["pending"]
    claim_by: EpochSeconds = Field(description="Claimable until then.")
    expires_at: EpochSeconds = Field(description="The child's end (never past the parent's).")


class SessionEndedAnswer(_Answer):
    """The answer of `DELETE /v1/sessions/{session_id}`."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    status: Literal["ended"]
    revoked_tokens: int = Field(
        ge=0,
        description="Session tokens ended: deleted, and revoked upstream where their delivery "
        "and the provider call for it (docs/api.md, 'Ending a session').",
    )


class AuthorizationStarted(_Answer):
    """A consent flow: send the user's browser to `authorization_url`."""

    flow_id: str = Field(pattern=FLOW_ID.pattern)
    authorization_url: str = Field(description="The provider's authorization endpoint (PKCE).")
    expires_at: EpochSeconds


class TokenAnswer(_Answer):
    """An access token minted for this session and exactly the scopes asked for."""

    access_token: str
    token_type: Literal["Bearer", "DPoP"] = Field(
        description="`DPoP` for a `dpop` agent: bound to the session key (RFC 9449); send it "
        "as `Authorization: DPoP <token>` with a proof (`ath`) per request."
    )
    expires_in: int = Field(ge=0, description="Seconds the token is still valid.")
    scope: str = Field(description="The granted scopes, space-separated.")
    provider: str


class FlowCompleted(_Answer):
    """The flow is bound to its user: the grant is active."""

    flow_id: str = Field(pattern=FLOW_ID.pattern)
    status: Literal["active"]
    grant_id: str
    provider: str
    scopes: list[str]


class RevocationResult(_Answer):
    """What a revocation revoked (upstream first)."""

    revoked_grants: int = Field(ge=0)
    revoked_tokens: int = Field(ge=0)
    revoked_flows: int = Field(
        ge=0,
        description="With `user`: that user's consents still awaiting binding, closed and "
        "revoked upstream.",
    )
    revoked_machine_tokens: int = Field(
        ge=0,
        description="Without `user` and `grant_id`: the cached machine tokens (flow 12) of the "
        "named agent(s) at the named machine provider(s), revoked upstream and deleted.",
    )


class ApiKeyAnswer(_Answer):
    """An API key handed to an agent whose policy says `delivery: returned` (flow 12)."""

    api_key: str = Field(description="The current key (the agent may replay it: an opt-in).")
    provider: str
    header: str | None = Field(
        default=None, description="The header the provider takes it in (or `query_parameter`)."
    )
    prefix: str | None = Field(default=None, description="Put before the key in the header.")
    query_parameter: str | None = Field(
        default=None, description="The query parameter the provider takes it in."
    )


class ApiKeySet(_Answer):
    """An API key stored (flow 12); never echoed."""

    provider: str
    status: Literal["set"]
    rotated_at: EpochSeconds = Field(description="When the current key was set.")
    previous_valid_until: EpochSeconds | None = Field(
        description="Until when the key it replaced is still tried after a 401 (the rotation "
        "window); null when there is no previous key."
    )
    user: UserRef | None = Field(default=None, description="A per-user key's user.")


class ApiKeyDeleted(_Answer):
    """An API key deleted (current and previous)."""

    provider: str
    deleted: bool = Field(description="False: there was none.")
    user: UserRef | None = Field(default=None, description="A per-user key's user.")


class AdminSession(_Answer):
    """A session as the admin read API shows it."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    agent: str
    user: UserRef
    task_id: str
    principal_arn: str = Field(description="The IAM role session that started it.")
    jkt: str = Field(description="RFC 7638 thumbprint of the session key.")
    status: Literal["active", "ended", "expired"]
    ended_reason: str | None = Field(
        description="`ended_by_agent`, `task_stopped`, `revoked`... (null while not ended)."
    )
    created_at: EpochSeconds
    expires_at: EpochSeconds
    identity_verified_at: EpochSeconds


class AdminToken(_Answer):
    """A session token the vault holds: what it is for, never what it is."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    provider: str
    scopes: list[str]
    grant_id: str = Field(description="The grant it was minted from.")
    expires_at: EpochSeconds
    revoke_pending: bool = Field(description="Its upstream revocation is still to be retried.")


class AdminSessionDetail(AdminSession):
    """A session and the tokens minted for it."""

    tokens: list[AdminToken]


class AdminGrant(_Answer):
    """A user's grant for one agent at one provider (never its refresh token)."""

    grant_id: str = Field(pattern=inspection.GRANT_ID.pattern)
    user: UserRef
    agent: str
    provider: str
    scopes: list[str]
    status: Literal["active", "broken", "revoking"]
    broken_reason: str | None = Field(description="Why it broke (null unless `broken`).")
    created_at: EpochSeconds
    refreshed_at: EpochSeconds | None = Field(description="The last refresh (null: none yet).")
    refreshes: int = Field(ge=0, description="Refreshes since consent.")
    sessions: list[str] = Field(description="Sessions holding a token minted from it.")


class AdminGrantDetail(AdminGrant):
    """A grant and the session tokens minted from it."""

    tokens: list[AdminToken]


class AdminFlow(_Answer):
    """A consent flow answered by the provider (never its tokens or binding code)."""

    flow_id: str = Field(pattern=FLOW_ID.pattern)
    status: Literal["pending_binding", "active", "refused", "rejected", "expired", "revoked"]
    session_id: str
    agent: str
    provider: str
    user: UserRef
    scopes: list[str] = Field(description="The scopes asked for.")
    granted_scopes: list[str] = Field(description="The scopes the provider granted.")
    grant_id: str
    error: str | None = Field(description="Why it was refused or rejected.")
    created_at: EpochSeconds
    expires_at: EpochSeconds


_NEXT = Field(description="The next page's `cursor`; null when the listing is done.")


class SessionPage(_Answer):
    """One page of sessions (fewer than `limit` does not mean the end: `next_cursor` does)."""

    items: list[AdminSession]
    next_cursor: str | None = _NEXT


class GrantPage(_Answer):
    """One page of grants (fewer than `limit` does not mean the end: `next_cursor` does)."""

    items: list[AdminGrant]
    next_cursor: str | None = _NEXT


class FlowPage(_Answer):
    """One page of consent flows awaiting binding (or their upstream revocation's retry)."""

    items: list[AdminFlow]
    next_cursor: str | None = _NEXT


class Connection(_Answer):
    """One of the logged-in user's grants to the calling agent (never its refresh token)."""

    grant_id: str = Field(pattern=inspection.GRANT_ID.pattern)
    agent: str
    provider: str
    scopes: list[str]
    status: Literal["active", "broken", "revoking"]
    broken_reason: str | None = Field(description="Why it broke (null unless `broken`).")
    since: EpochSeconds = Field(description="When the user consented (the grant's creation).")
    last_used_at: EpochSeconds | None = Field(
        description="The last time the vault used the grant at the provider to mint an access "
        "token for one of the agent's sessions (a refresh); a cached token handed out again "
        "does not move it. Null: no token minted from it since consent."
    )


class ConnectionPage(_Answer):
    """One page of the user's connections (fewer than `limit` does not mean the end)."""

    items: list[Connection]
    next_cursor: str | None = _NEXT


class ConnectionRevoked(_Answer):
    """A connection revoked: upstream first, then the tokens minted from it."""

    grant_id: str = Field(pattern=inspection.GRANT_ID.pattern)
    status: Literal["revoked", "revoke_pending"] = Field(
        description="`revoke_pending`: the provider could not be reached; the grant is kept "
        "`broken` (never usable) and revoked upstream again by the next revocation."
    )
    revoked_tokens: int = Field(ge=0, description="Session tokens minted from it, ended.")


class GatewayMessage(BaseModel):
    """API Gateway's own refusal, before any vault code ran (e.g. 403 for a missing or invalid
    SigV4 signature or no `execute-api:Invoke`, 429 when throttled)."""

    message: str


# --- operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What the route table does not say about a route: its body, its answer, who may call it."""

    operation_id: str
    summary: str
    description: str
    status: int
    answer: type[BaseModel] | None
    body: type[BaseModel] | None = None
    proof: bool = False
    """The request carries a `DPoP` proof of the session key (docs/api.md)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Optional request headers the route reads: (name, description)."""
    proxied: bool = False
    """The answer is the provider's (any status and body), marked `X-Agent-Vault-Proxy`."""
    query: type[BaseModel] | None = None
    """The query parameters (the admin read API's filters and page)."""
    required_headers: tuple[tuple[str, str], ...] = ()
    """Request headers the route requires: (name, description)."""


_OWN = "The calling agent's own session only (the same IAM principal)."

OPERATIONS: dict[str, Operation] = {
    "POST /v1/sessions": Operation(
        "start_session",
        "Start a session",
        "The key that signs the `DPoP` proof becomes the session key; the session is bound to "
        "the caller's IAM principal (its task), its agent and the user.",
        201,
        SessionView,
        schemas.StartSession,
        proof=True,
    ),
    "GET /v1/sessions/{session_id}": Operation(
        "get_session", "Read a session", _OWN, 200, SessionView, proof=True
    ),
    "DELETE /v1/sessions/{session_id}": Operation(
        "end_session",
        "End a session",
        f"{_OWN} Its tokens are revoked upstream.",
        200,
        SessionEndedAnswer,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/renew": Operation(
        "renew_session",
        "Renew a live session",
        f"{_OWN} Moves its expiry; a given identity must be the session's user.",
        200,
        SessionView,
        schemas.RenewSession,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/authorizations": Operation(
        "start_authorization",
        "Start consent at a provider",
        f"{_OWN} Scopes must be within the agent's policy; `return_url` one of `return_urls`.",
        201,
        AuthorizationStarted,
        schemas.StartAuthorization,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/tokens": Operation(
        "get_token",
        "Get an access token",
        f"{_OWN} A token narrowed to exactly the scopes asked for; 403 `consent_required` "
        "when no active grant covers them.",
        200,
        TokenAnswer,
        schemas.TokenRequest,
        proof=True,
        headers=(
            (
                "X-Agent-Vault-Token-DPoP",
                "`dpop` delivery: a DPoP proof (RFC 9449) for the provider's token endpoint, "
                "signed by the session key (`htm` POST, `htu` the token endpoint, the `nonce` "
                "of `dpop_nonce_required` if asked); the vault sends it as the refresh "
                "request's `DPoP` header. Missing: 400 `dpop_proof_required` with `htu`.",
            ),
        ),
    ),
    "ANY /v1/sessions/{session_id}/proxy/{provider}/{path+}": Operation(
        "proxy",
        "Call the provider's API through the vault",
        f"{_OWN} `proxy` delivery only. `path` (any number of segments) and the query go to "
        "the provider's first API base URL (or the `X-Agent-Vault-Api-Base` one) with the "
        "session's token; the method and path must be in the agent's request policy (403 "
        "`request_not_allowed` before any call). No `.`/`..`/empty segment, no encoded `/` "
        "`\\` `.`; redirects are never followed (502 `upstream_redirect_refused`); bodies "
        "up to 4 MiB each way (413 `request_too_large`, 502 `upstream_response_too_large`). "
        "The `DPoP` proof's `htu` is this URL without the query.",
        200,
        None,
        proof=True,
        headers=(
            (
                "X-Agent-Vault-Api-Base",
                "Another of the provider's `api_base_urls`, exactly as configured (the first "
                "is the default).",
            ),
        ),
        proxied=True,
    ),
    "POST /v1/sessions/{session_id}/api-key": Operation(
        "get_api_key",
        "Get an API key (returned delivery)",
        f"{_OWN} Only where the agent's policy at the API-key provider says `delivery: "
        "returned`; 403 `delivery_proxy_only` otherwise (the proxy attaches the key), 403 "
        "`api_key_not_set` when no key is set (per user: for the session's user).",
        200,
        ApiKeyAnswer,
        schemas.ApiKeyRequest,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/delegations": Operation(
        "delegate",
        "Offer a child session to another agent",
        f"{_OWN} The agent must be in `may_delegate_to`, the chain within "
        "`max_delegation_depth`, the providers and scopes within this session's rights and the "
        "child agent's policy, `ttl_seconds` within what is left of this session's life. The "
        "child agent claims the answer's `delegation_id` (docs/api.md, 'Delegation').",
        201,
        DelegationOffered,
        schemas.StartDelegation,
        proof=True,
    ),
    "POST /v1/delegations/{delegation_id}/claim": Operation(
        "claim_delegation",
        "Claim a delegation (the child agent)",
        "The delegation's agent only, once, before `claim_by`, while every ancestor lives. The "
        "key that signs the `DPoP` proof (no `sid`) becomes the child session's key; the "
        "session is bound to the caller's IAM principal.",
        201,
        SessionView,
        proof=True,
    ),
    "POST /v1/flows/{flow_id}/complete": Operation(
        "complete_flow",
        "Bind a consented flow to the logged-in user",
        "Any task of the flow's agent. The grant becomes active only if the user is the flow's "
        "user; otherwise its tokens are revoked (403 `user_mismatch`).",
        200,
        FlowCompleted,
        schemas.CompleteFlow,
    ),
    "POST /v1/revocations": Operation(
        "revoke",
        "Revoke grants (admins)",
        "Admin principals only (`admin_role_names`). Every criterion given must match.",
        200,
        RevocationResult,
        schemas.Revocation,
    ),
    "PUT /v1/admin/api-keys/{provider}": Operation(
        "set_api_key",
        "Set an API key (admins)",
        "Admin principals only (`admin_role_names`). The key goes in the body, never the URL, "
        "into Secrets Manager under the vault key; the key it replaces stays usable for the "
        "provider's `rotation_window_seconds`. `user` is required at a per-user provider and "
        "refused otherwise. 400 `not_an_api_key_provider`, `invalid_api_key`, "
        "`unknown_provider`; nothing is stored then.",
        200,
        ApiKeySet,
        schemas.ApiKeyWrite,
    ),
    "DELETE /v1/admin/api-keys/{provider}": Operation(
        "delete_api_key",
        "Delete an API key (admins)",
        "Admin principals only (`admin_role_names`). The current and previous key are deleted "
        "at once (other warm containers stop using them within 30 s). A per-user key: the "
        "query's `user_iss` and `user_sub`.",
        200,
        ApiKeyDeleted,
        query=schemas.ApiKeyUserQuery,
    ),
}

_ADMIN = "Admin principals only (`admin_role_names`). Read-only; "


def _listing(what: str, answer: type[BaseModel], query: type[BaseModel], how: str) -> Operation:
    return Operation(
        f"list_{what}",
        f"List {what} (admins)",
        f"{_ADMIN}paginated: pass `next_cursor` back as `cursor` with the same filters. {how}",
        200,
        answer,
        query=query,
    )


OPERATIONS |= {
    "GET /v1/admin/sessions": _listing(
        "sessions",
        SessionPage,
        inspection.SessionQuery,
        "Filters: `task`, `agent`, the user (`user_iss` and `user_sub`, in clear), `status`.",
    ),
    "GET /v1/admin/sessions/{session_id}": Operation(
        "show_session",
        "Show a session (admins)",
        f"{_ADMIN}the session and its tokens (what they are for, never what they are).",
        200,
        AdminSessionDetail,
    ),
    "GET /v1/admin/grants": _listing(
        "grants",
        GrantPage,
        inspection.GrantQuery,
        "Filters: the user, `agent`, `provider`, `status`.",
    ),
    "GET /v1/admin/grants/{grant_id}": Operation(
        "show_grant",
        "Show a grant (admins)",
        f"{_ADMIN}the grant and the session tokens minted from it.",
        200,
        AdminGrantDetail,
    ),
    "GET /v1/admin/flows": _listing(
        "flows",
        FlowPage,
        inspection.FlowQuery,
        "Consents awaiting binding (closed flows: by id). Filters: the user, `agent`, "
        "`provider`, `status`.",
    ),
    "GET /v1/admin/flows/{flow_id}": Operation(
        "show_flow",
        "Show a consent flow (admins)",
        f"{_ADMIN}any answered flow, bound or not.",
        200,
        AdminFlow,
    ),
}

_USER_TOKEN = (
    (
        connections.USER_TOKEN_HEADER,
        "The logged-in user's identity token (an OIDC ID token of a `user_identity_issuers` "
        "issuer, verified as for `/complete`); the user is its `iss` and `sub`. Missing or "
        "not valid: 401 `invalid_user_token`.",
    ),
)
_CONNECTIONS = (
    "The application, with its agent's role (any task of the agent), for the user its "
    "identity token names: that user's grants to the calling agent only."
)

OPERATIONS |= {
    "GET /v1/connections": Operation(
        "list_connections",
        "List the logged-in user's connections",
        f"{_CONNECTIONS} Paginated: pass `next_cursor` back as `cursor` with the same filters. "
        "Filters: `provider`, `status`.",
        200,
        ConnectionPage,
        query=connections.ConnectionQuery,
        required_headers=_USER_TOKEN,
    ),
    "DELETE /v1/connections/{grant_id}": Operation(
        "revoke_connection",
        "Revoke one of the logged-in user's connections",
        f"{_CONNECTIONS} Revoked upstream first; the session tokens minted from it are revoked "
        "and deleted. Another user's grant, another agent's, or none: 404 `grant_not_found`. "
        "Idempotent while it runs (a concurrent repeat also answers 200); 404 once it is gone.",
        200,
        ConnectionRevoked,
        required_headers=_USER_TOKEN,
    ),
}

CALLBACK = Operation(
    "oauth_callback",
    "The provider's redirect after consent (public)",
    "The user's browser arrives here from the provider. Redirects to the flow's return URL with "
    "`flow_id` and `status=pending_binding`, or `status=refused&error=<code>`.",
    302,
    None,
)
"""Every route of the public callback function answers the same way (whatever its path)."""

CALLBACK_QUERY = {
    "state": "The flow's state.",
    "code": "The authorization code (on success).",
    "iss": "The provider's issuer (RFC 9207).",
    "error": "The provider's OAuth error (on refusal).",
}

PATH_PARAMS: dict[str, dict[str, Any]] = {
    "session_id": {"type": "string", "pattern": SESSION_ID.pattern},
    "flow_id": {"type": "string", "pattern": FLOW_ID.pattern},
    "grant_id": {"type": "string", "pattern": inspection.GRANT_ID.pattern},
    "delegation_id": {"type": "string", "pattern": DELEGATION_ID.pattern},
    "provider": TypeAdapter(schemas.ProviderName).json_schema(),
    "path+": {
        "type": "string",
        "description": "The rest of the path under the API base URL: `/`-separated segments "
        "(API Gateway's greedy parameter).",
    },
}


def operation_for(route: Route) -> Operation:
    """The operation of a route; a route the contract does not describe is an error."""
    if route.function == "callback":
        return CALLBACK
    try:
        return OPERATIONS[route.route_key]
    except KeyError:
        raise LookupError(
            f"route {route.route_key!r} has no entry in vault.contract.OPERATIONS: add one"
        ) from None


def path_params(path: str) -> list[str]:
    return _PARAM.findall(path)
