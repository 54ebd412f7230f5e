"""Flow 13, the user's half: the connections an application shows its logged-in user, and the
revocation of one of them.

The application calls with its agent's IAM role (the same roles that may call
`POST /v1/flows/{id}/complete`; pinned as `vault.caller.agent_of` pins them) and the user's
identity token in the `X-Agent-Vault-User-Token` header, verified as `/complete` verifies it
(`vault.identity`). The user is the token's issuer and subject, never a parameter; an asserted
`user_id` is no proof that the user is present and is refused. A connection is a grant of *this*
user to *the calling agent*: the user's grants to other agents are not this application's to
show or end, and another user's grant, another agent's, or one that does not exist are all the
same 404 `grant_not_found` (no existence leak), each audited as a refusal.

The listing reuses the admin read API's pages and cursors (`vault.inspection.read_page`): one
partition, the user's, narrowed to the agent's sort keys. Revoking is the admin's path
(`vault.revocation.revoke_grant`): the grant turns `revoking`, its refresh token is revoked
upstream, every session token minted from it is revoked and deleted, then the grant is deleted
(or kept `broken` with `revoke_pending` when the provider could not be reached, never usable,
and revoked again by the next revocation). Repeating the request while it runs is harmless
(both answer 200); once the grant is gone it is a 404 like any other unknown grant.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vault.audit import decision
from vault.caller import Caller, agent_of
from vault.errors import GrantNotFound, InvalidUserToken
from vault.identity import MAX_TOKEN_CHARS
from vault.inspection import (
    GRANT_ID,
    PageQuery,
    check_names,
    equals,
    parse_query,
    read_page,
    where_all,
)
from vault.models import Grant, UserRef
from vault.revocation import revoke_grant
from vault.runtime import Services
from vault.schemas import ProviderName
from vault.store.mapper import GRANTS
from vault.store.pages import Partition

USER_TOKEN_HEADER = "X-Agent-Vault-User-Token"  # noqa: S105 (a header name)  # nosec B105
"""The logged-in user's identity token (a header: never in a URL, where logs keep it)."""


class ConnectionQuery(PageQuery):
    provider: ProviderName | None = Field(None, description="A configured provider.")
    status: Literal["active", "broken", "revoking"] | None = None


def user_of(svc: Services, token: str | None) -> UserRef:
    """The user the identity token names (verified: issuer, audience, expiry, signature); 401
    `invalid_user_token` without one."""
    if not token:
        raise InvalidUserToken(f"send the logged-in user's identity token in {USER_TOKEN_HEADER}")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidUserToken("the identity token is not a compact JWT")
    return svc.identity.verify(token)


def connection_view(grant: Grant) -> dict[str, Any]:
    """What the user sees of a grant: never its refresh token, lease or other users."""
    return {
        "grant_id": grant.grant_id,
        "agent": grant.agent,
        "provider": grant.provider,
        "scopes": sorted(grant.scopes),
        "status": grant.status,
        "broken_reason": grant.broken_reason,
        "since": grant.created_at,
        "last_used_at": grant.refreshed_at,
    }


def list_connections(
    svc: Services, caller: Caller, token: str | None, params: dict[str, str] | None
) -> dict[str, Any]:
    """One page of the user's grants to the calling agent."""
    agent = agent_of(svc.config, caller)
    query = parse_query(ConnectionQuery, params)
    check_names(svc, None, query.provider)
    with decision(
        "connections.list", principal=caller.arn, agent=agent, provider=query.provider
    ) as d:
        user = user_of(svc, token)
        d.bind(user=user)
        prefix = GRANTS.sort_key(agent=agent, provider=query.provider)
        partitions = [Partition(None, GRANTS.partition(user=user), prefix)]
        items, following = read_page(
            svc, partitions, query, where_all(equals("status", query.status))
        )
        views = [connection_view(GRANTS.from_item(i)) for i in items]
    return {"items": views, "next_cursor": following}


def revoke_connection(
    svc: Services, caller: Caller, token: str | None, grant_id: str
) -> dict[str, Any]:
    """Revoke one of the user's grants to the calling agent, upstream first; its tokens die."""
    agent = agent_of(svc.config, caller)
    with decision("connections.revoke", principal=caller.arn, agent=agent) as d:
        user = user_of(svc, token)
        d.bind(user=user)
        grant = None
        if GRANT_ID.match(grant_id):
            d.bind(grant_id=grant_id)  # a refusal names what was asked for
            grant = svc.store.grants.by_id(grant_id)
        if (
            grant is None
            or grant.grant_id != grant_id  # the key now holds a newer consent
            or grant.user != user
            or grant.agent != agent
        ):
            raise GrantNotFound("no connection with this id for this user and agent")
        d.bind(provider=grant.provider)
        revoked = revoke_grant(svc, grant, "user_revocation", principal=caller.arn)
        left = svc.store.grants.get(grant.user, grant.agent, grant.provider)
        status = "revoke_pending" if left is not None and left.grant_id == grant_id else "revoked"
        d.note(revoked_tokens=revoked)
        d.conclude(status)
    return {"grant_id": grant_id, "status": status, "revoked_tokens": revoked}
