"""The connections routes (flow 13, the user's half): an application lists and revokes its
logged-in user's grants to its agent (`vault.connections`).

IAM-authorized (the agent's role) plus the user's identity token in `X-Agent-Vault-User-Token`;
served by the agent function, whose resolver includes this router (`vault.handlers.agent_api`).
`vault.connections` (and the read API's `vault.inspection` under it) is imported by these routes
when one is called: the agent function's token and session routes never need it.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from vault.caller import caller_from
from vault.handlers.http import json_response
from vault.runtime import services

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]


def _user_token() -> str | None:
    from vault.connections import USER_TOKEN_HEADER

    return router.current_event.headers.get(USER_TOKEN_HEADER)


@router.get("/v1/connections")
def list_connections() -> Response[str]:
    from vault import connections

    params = dict(router.current_event.query_string_parameters or {})
    answer = connections.list_connections(
        services(), caller_from(router.current_event.raw_event), _user_token(), params
    )
    return json_response(200, answer)


@router.delete("/v1/connections/<grant_id>")
def revoke_connection(grant_id: str) -> Response[str]:
    from vault import connections

    answer = connections.revoke_connection(
        services(), caller_from(router.current_event.raw_event), _user_token(), grant_id
    )
    return json_response(200, answer)
