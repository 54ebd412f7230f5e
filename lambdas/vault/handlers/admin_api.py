"""Admin routes: revocation by user, agent, provider or grant (IAM-authorized, admins only), API
keys set and deleted (flow 12), the read API's routes (`vault.handlers.admin_read`); and the
scheduled sweep of consents nobody bound. The sweep runs here because this function may already
open every token to revoke it: the reaper stays unable to open a refresh token."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import apikeys, revocation
from vault.audit import decision
from vault.caller import caller_from
from vault.handlers import admin_read
from vault.handlers.http import json_response, parse_body, resolve
from vault.handlers.router import Request, Response, Router
from vault.observability import lambda_handler
from vault.runtime import services
from vault.schemas import ApiKeyWrite, Revocation

app = Router("admin-api")
app.include(admin_read.router)


@app.route("POST /v1/revocations")
def revoke(request: Request) -> Response:
    body = parse_body(request, Revocation)
    answer = revocation.revoke(services(), caller_from(request.event), body)
    return json_response(200, answer)


@app.route("PUT /v1/admin/api-keys/{provider}")
def set_api_key(request: Request, provider: str) -> Response:
    answer = apikeys.set_key(
        services(),
        caller_from(request.event),
        provider,
        lambda: parse_body(request, ApiKeyWrite),
    )
    return json_response(200, answer)


@app.route("DELETE /v1/admin/api-keys/{provider}")
def delete_api_key(request: Request, provider: str) -> Response:
    query = request.query
    answer = apikeys.delete_key(services(), caller_from(request.event), provider, query)
    return json_response(200, answer)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        with decision("flows.sweep") as d:
            swept = revocation.sweep_unbound_flows(services())
            d.note(count=swept)
            d.conclude("done")
        with decision("sessions.sweep") as d:
            ended, revoked = revocation.sweep_expired_sessions(services())
            d.note(count=ended, revoked_tokens=revoked)
            d.conclude("done")
        return {
            "status": "swept",
            "revoked_flows": swept,
            "expired_sessions": ended,
            "revoked_tokens": revoked,
        }
    return resolve(app, event)
