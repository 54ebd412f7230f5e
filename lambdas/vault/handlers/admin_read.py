"""The admin read API's routes (flow 13): sessions, grants and consent flows, read-only.

IAM-authorized and admins only, like the revocation route; served by the admin function, whose
router includes this one (`vault.handlers.admin_api`)."""

from __future__ import annotations

from vault import inspection
from vault.caller import Caller, caller_from
from vault.handlers.http import json_response
from vault.handlers.router import Request, Response, Router
from vault.runtime import services

router = Router("admin-api")


def _caller(request: Request) -> Caller:
    return caller_from(request.event)


@router.route("GET /v1/admin/sessions")
def list_sessions(request: Request) -> Response:
    return json_response(200, inspection.list_sessions(services(), _caller(request), request.query))


@router.route("GET /v1/admin/sessions/{session_id}")
def show_session(request: Request, session_id: str) -> Response:
    return json_response(200, inspection.show_session(services(), _caller(request), session_id))


@router.route("GET /v1/admin/grants")
def list_grants(request: Request) -> Response:
    return json_response(200, inspection.list_grants(services(), _caller(request), request.query))


@router.route("GET /v1/admin/grants/{grant_id}")
def show_grant(request: Request, grant_id: str) -> Response:
    return json_response(200, inspection.show_grant(services(), _caller(request), grant_id))


@router.route("GET /v1/admin/flows")
def list_flows(request: Request) -> Response:
    return json_response(200, inspection.list_flows(services(), _caller(request), request.query))


@router.route("GET /v1/admin/flows/{flow_id}")
def show_flow(request: Request, flow_id: str) -> Response:
    return json_response(200, inspection.show_flow(services(), _caller(request), flow_id))
