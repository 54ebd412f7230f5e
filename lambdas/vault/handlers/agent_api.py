"""Agent routes: sessions, consent requests, tokens, consent binding and delegation
(IAM-authorized); and the connections routes (`vault.handlers.connections_api`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import apikeys, consent, delegation, machine, revocation, sessions, tokens
from vault.caller import caller_from
from vault.handlers import connections_api
from vault.handlers.http import http_call, json_response, make_resolver, parse_body
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

app = make_resolver()
app.include_router(connections_api.router)


@app.post("/v1/sessions")
def start_session() -> Response[str]:
    body = parse_body(app, StartSession)
    svc = services()
    session = sessions.start_session(
        svc, caller_from(app.current_event.raw_event), http_call(app), body
    )
    return json_response(201, sessions.session_answer(svc, session))


@app.get("/v1/sessions/<session_id>")
def get_session(session_id: str) -> Response[str]:
    svc = services()
    session, _ = sessions.authorize_session_call(
        svc,
        caller_from(app.current_event.raw_event),
        session_id,
        http_call(app),
        require_alive=False,
    )
    return json_response(
        200, sessions.session_answer(svc, session) | delegation.family(svc, session)
    )


@app.delete("/v1/sessions/<session_id>")
def end_session(session_id: str) -> Response[str]:
    svc = services()
    caller = caller_from(app.current_event.raw_event)
    session, _ = sessions.authorize_session_call(
        svc, caller, session_id, http_call(app), require_alive=False
    )
    revoked = revocation.end_session(svc, session, "ended_by_agent", principal=caller.arn)
    return json_response(
        200, {"session_id": session_id, "status": "ended", "revoked_tokens": revoked}
    )


@app.post("/v1/sessions/<session_id>/renew")
def renew_session(session_id: str) -> Response[str]:
    body = parse_body(app, RenewSession)
    svc = services()
    session = sessions.renew_session(
        svc, caller_from(app.current_event.raw_event), session_id, http_call(app), body
    )
    return json_response(200, sessions.session_answer(svc, session))


@app.post("/v1/sessions/<session_id>/authorizations")
def start_authorization(session_id: str) -> Response[str]:
    body = parse_body(app, StartAuthorization)
    answer = consent.start_authorization(
        services(), caller_from(app.current_event.raw_event), session_id, http_call(app), body
    )
    return json_response(201, answer)


@app.post("/v1/sessions/<session_id>/tokens")
def get_token(session_id: str) -> Response[str]:
    body = parse_body(app, TokenRequest)
    flow = machine if machine.is_machine(services().config, body.provider) else tokens
    answer = flow.get_token(
        services(), caller_from(app.current_event.raw_event), session_id, http_call(app), body
    )
    return json_response(200, answer)


@app.post("/v1/sessions/<session_id>/api-key")
def get_api_key(session_id: str) -> Response[str]:
    body = parse_body(app, ApiKeyRequest)
    answer = apikeys.get_key(
        services(), caller_from(app.current_event.raw_event), session_id, http_call(app), body
    )
    return json_response(200, answer)


@app.post("/v1/sessions/<session_id>/delegations")
def delegate(session_id: str) -> Response[str]:
    body = parse_body(app, StartDelegation)
    offered = delegation.delegate(
        services(), caller_from(app.current_event.raw_event), session_id, http_call(app), body
    )
    return json_response(201, delegation.delegation_answer(offered))


@app.post("/v1/delegations/<delegation_id>/claim")
def claim_delegation(delegation_id: str) -> Response[str]:
    svc = services()
    child = delegation.claim(
        svc, caller_from(app.current_event.raw_event), delegation_id, http_call(app)
    )
    return json_response(201, sessions.session_answer(svc, child))


@app.post("/v1/flows/<flow_id>/complete")
def complete_flow(flow_id: str) -> Response[str]:
    body = parse_body(app, CompleteFlow)
    answer = consent.complete_flow(
        services(), caller_from(app.current_event.raw_event), flow_id, body
    )
    return json_response(200, answer)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
