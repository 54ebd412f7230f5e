"""Agent routes: sessions, consent requests, tokens, consent binding and delegation
(IAM-authorized); and the connections routes (`vault.handlers.connections_api`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import apikeys, consent, delegation, machine, revocation, sessions, tokens
from vault.caller import caller_from
from vault.handlers import connections_api
from vault.handlers.http import http_call, json_response, parse_body, resolve
from vault.handlers.router import Request, Response, Router
from vault.observability import lambda_handler
from vault.runtime import services
from vault.schemas import (
    ApiKeyRequest,
    CompleteFlow,
    RenewSession,
    StartAuthorization,
    StartDelegation,
    StartSession,
    TokenRequest,
)

app = Router("agent-api")
app.include(connections_api.router)


@app.route("POST /v1/sessions")
def start_session(request: Request) -> Response:
    body = parse_body(request, StartSession)
    svc = services()
    session = sessions.start_session(svc, caller_from(request.event), http_call(request), body)
    return json_response(201, sessions.session_answer(svc, session))


@app.route("GET /v1/sessions/{session_id}")
def get_session(request: Request, session_id: str) -> Response:
    svc = services()
    session, _ = sessions.authorize_session_call(
        svc,
        caller_from(request.event),
        session_id,
        http_call(request),
        require_alive=False,
    )
    return json_response(
        200, sessions.session_answer(svc, session) | delegation.family(svc, session)
    )


@app.route("DELETE /v1/sessions/{session_id}")
def end_session(request: Request, session_id: str) -> Response:
    svc = services()
    caller = caller_from(request.event)
    session, _ = sessions.authorize_session_call(
        svc, caller, session_id, http_call(request), require_alive=False
    )
    revoked = revocation.end_session(svc, session, "ended_by_agent", principal=caller.arn)
    return json_response(
        200, {"session_id": session_id, "status": "ended", "revoked_tokens": revoked}
    )


@app.route("POST /v1/sessions/{session_id}/renew")
def renew_session(request: Request, session_id: str) -> Response:
    body = parse_body(request, RenewSession)
    svc = services()
    session = sessions.renew_session(
        svc, caller_from(request.event), session_id, http_call(request), body
    )
    return json_response(200, sessions.session_answer(svc, session))


@app.route("POST /v1/sessions/{session_id}/authorizations")
def start_authorization(request: Request, session_id: str) -> Response:
    body = parse_body(request, StartAuthorization)
    answer = consent.start_authorization(
        services(), caller_from(request.event), session_id, http_call(request), body
    )
    return json_response(201, answer)


@app.route("POST /v1/sessions/{session_id}/tokens")
def get_token(request: Request, session_id: str) -> Response:
    body = parse_body(request, TokenRequest)
    flow = machine if machine.is_machine(services().config, body.provider) else tokens
    answer = flow.get_token(
        services(), caller_from(request.event), session_id, http_call(request), body
    )
    return json_response(200, answer)


@app.route("POST /v1/sessions/{session_id}/api-key")
def get_api_key(request: Request, session_id: str) -> Response:
    body = parse_body(request, ApiKeyRequest)
    answer = apikeys.get_key(
        services(), caller_from(request.event), session_id, http_call(request), body
    )
    return json_response(200, answer)


@app.route("POST /v1/sessions/{session_id}/delegations")
def delegate(request: Request, session_id: str) -> Response:
    body = parse_body(request, StartDelegation)
    offered = delegation.delegate(
        services(), caller_from(request.event), session_id, http_call(request), body
    )
    return json_response(201, delegation.delegation_answer(offered))


@app.route("POST /v1/delegations/{delegation_id}/claim")
def claim_delegation(request: Request, delegation_id: str) -> Response:
    svc = services()
    child = delegation.claim(svc, caller_from(request.event), delegation_id, http_call(request))
    return json_response(201, sessions.session_answer(svc, child))


@app.route("POST /v1/flows/{flow_id}/complete")
def complete_flow(request: Request, flow_id: str) -> Response:
    body = parse_body(request, CompleteFlow)
    answer = consent.complete_flow(services(), caller_from(request.event), flow_id, body)
    return json_response(200, answer)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event)
