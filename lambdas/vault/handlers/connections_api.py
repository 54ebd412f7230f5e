"""The connections routes (flow 13, the user's half): an application lists and revokes its
logged-in user's grants to its agent (`vault.connections`).

IAM-authorized (the agent's role) plus the user's identity token in `X-Agent-Vault-User-Token`;
served by the agent function, whose router includes this one (`vault.handlers.agent_api`).
`vault.connections` (and the read API's `vault.inspection` under it) is imported by these routes
when one is called: the agent function's token and session routes never need it.
"""

from __future__ import annotations

from vault.caller import caller_from
from vault.handlers.http import json_response
from vault.handlers.router import Request, Response, Router
from vault.runtime import services

router = Router("agent-api")


def _user_token(request: Request) -> str | None:
    from vault.connections import USER_TOKEN_HEADER

    return request.headers.get(USER_TOKEN_HEADER.lower())


@router.route("GET /v1/connections")
def list_connections(request: Request) -> Response:
    from vault import connections

    params = request.query
    answer = connections.list_connections(
        services(), caller_from(request.event), _user_token(request), params
    )
    return json_response(200, answer)


@router.route("DELETE /v1/connections/{grant_id}")
def revoke_connection(request: Request, grant_id: str) -> Response:
    from vault import connections

    answer = connections.revoke_connection(
        services(), caller_from(request.event), _user_token(request), grant_id
    )
    return json_response(200, answer)
