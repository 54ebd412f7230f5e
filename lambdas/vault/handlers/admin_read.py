"""The admin read API's routes (flow 13): sessions, grants and consent flows, read-only.

IAM-authorized and admins only, like the revocation route; served by the admin function, whose
resolver includes this router (`vault.handlers.admin_api`)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from vault import inspection
from vault.caller import Caller, caller_from
from vault.handlers.http import json_response
from vault.runtime import services

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]


def _params() -> dict[str, str]:
    return dict(router.current_event.query_string_parameters or {})


def _caller() -> Caller:
    return caller_from(router.current_event.raw_event)


@router.get("/v1/admin/sessions")
def list_sessions() -> Response[str]:
    return json_response(200, inspection.list_sessions(services(), _caller(), _params()))


@router.get("/v1/admin/sessions/<session_id>")
def show_session(session_id: str) -> Response[str]:
    return json_response(200, inspection.show_session(services(), _caller(), session_id))


@router.get("/v1/admin/grants")
def list_grants() -> Response[str]:
    return json_response(200, inspection.list_grants(services(), _caller(), _params()))


@router.get("/v1/admin/grants/<grant_id>")
def show_grant(grant_id: str) -> Response[str]:
    return json_response(200, inspection.show_grant(services(), _caller(), grant_id))


@router.get("/v1/admin/flows")
def list_flows() -> Response[str]:
    return json_response(200, inspection.list_flows(services(), _caller(), _params()))


@router.get("/v1/admin/flows/<flow_id>")
def show_flow(flow_id: str) -> Response[str]:
    return json_response(200, inspection.show_flow(services(), _caller(), flow_id))
