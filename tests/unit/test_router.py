"""The HTTP functions' router (`vault.handlers.router`) and how `vault.handlers.http` serves an
event through it: bindings held to the route table at import, dispatch by API Gateway's route
key or (function URL) by method and path, and every answer that is not the route's own."""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Iterator

import pytest

from tests.security.helpers import AuditLog
from tests.support.apigw import build_event
from vault.errors import Forbidden, StorageUnavailable
from vault.handlers.http import resolve
from vault.handlers.router import Request, Response, RouteError, Router
from vault.observability import metrics
from vault.routes import ROUTES

HTTP_HANDLERS = sorted({route.handler.rpartition(".")[0] for route in ROUTES})
TOKENS = "POST /v1/sessions/{session_id}/tokens"
PROXY = "ANY /v1/sessions/{session_id}/proxy/{provider}/{path+}"


# --- bindings: the route table is the one source -----------------------------------------------


@pytest.mark.parametrize("module_name", HTTP_HANDLERS)
def test_each_function_binds_exactly_its_routes_of_the_table(module_name: str) -> None:
    app = importlib.import_module(module_name).app
    assert isinstance(app, Router)
    own = {r.route_key for r in ROUTES if r.handler.rpartition(".")[0] == module_name}
    assert {r.function for r in ROUTES if r.route_key in own} == {app.function}
    assert set(app.bound) == own


def test_a_key_not_in_the_table_fails_at_binding() -> None:
    with pytest.raises(RouteError, match=r"not in vault\.routes\.ROUTES"):
        Router("agent-api").route("POST /v1/sessions/{session_id}/token")
    with pytest.raises(RouteError, match=r"not in vault\.routes\.ROUTES"):
        Router("agent-api").route("GET /v1/sessions")  # a path of the table, not this method


def test_another_functions_key_fails_at_binding() -> None:
    with pytest.raises(RouteError, match="the admin-api function's route, not the agent-api's"):
        Router("agent-api").route("POST /v1/revocations")
    with pytest.raises(RouteError, match="a router of admin-api included in agent-api's"):
        Router("agent-api").include(Router("admin-api"))


def test_a_route_bound_twice_fails() -> None:
    app, other = Router("agent-api"), Router("agent-api")
    app.route(TOKENS)(_echo)
    with pytest.raises(RouteError, match="bound twice"):
        app.route(TOKENS)
    other.route(TOKENS)(_echo)
    with pytest.raises(RouteError, match="bound twice"):
        app.include(other)


def test_methods_are_only_for_an_any_route() -> None:
    with pytest.raises(RouteError, match="for an ANY route"):
        Router("agent-api").route(TOKENS, methods=("POST",))


def test_a_function_without_routes_in_the_table_has_no_router() -> None:
    with pytest.raises(RouteError, match="no route of the table"):
        Router("reaper")


# --- dispatch --------------------------------------------------------------------------------


def _echo(request: Request, **params: str) -> Response:
    return Response(
        200,
        {"Content-Type": "application/json"},
        json.dumps(
            {
                "params": params,
                "method": request.method,
                "path": request.raw_path,
                "dpop": request.headers.get("dpop"),
            }
        ),
    )


@pytest.fixture
def agent_app() -> Router:
    app = Router("agent-api")
    app.route(TOKENS)(_echo)
    app.route("GET /v1/sessions/{session_id}")(_echo)
    return app


def test_behind_api_gateway_the_route_key_and_path_parameters_decide(agent_app: Router) -> None:
    event = build_event("POST", "/v1/sessions/ses_1/tokens", headers={"DPoP": "proof"})
    assert event["routeKey"] == TOKENS
    event["pathParameters"] = {"session_id": "ses_from_api_gateway"}
    event["rawPath"] = "/somewhere/else"  # no match on the path: API Gateway routed it
    answer = resolve(agent_app, event)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"]) == {
        "params": {"session_id": "ses_from_api_gateway"},
        "method": "POST",
        "path": "/somewhere/else",
        "dpop": "proof",  # header names are looked up lowercase
    }


def test_header_names_sent_in_capitals_are_folded(agent_app: Router) -> None:
    event = build_event("POST", "/v1/sessions/ses_1/tokens")
    event["headers"]["DPoP"] = "proof"
    answer = resolve(agent_app, event)
    assert json.loads(answer["body"])["dpop"] == "proof"


def test_at_a_function_url_the_method_and_path_decide(agent_app: Router) -> None:
    event = build_event("POST", "/v1/sessions/ses_1/tokens", function_url=True)
    assert event["routeKey"] == "$default" and "pathParameters" not in event
    answer = resolve(agent_app, event)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["params"] == {"session_id": "ses_1"}
    fetched = resolve(agent_app, build_event("GET", "/v1/sessions/ses_2", function_url=True))
    assert json.loads(fetched["body"])["params"] == {"session_id": "ses_2"}


def test_the_greedy_parameter_and_the_any_routes_methods() -> None:
    app = Router("proxy-api")
    app.route(PROXY, methods=("GET", "POST"))(_echo)
    path = "/v1/sessions/ses_1/proxy/calendar/a/b%2Fc"
    for function_url in (False, True):
        answer = resolve(app, build_event("POST", path, function_url=function_url))
        assert answer["statusCode"] == 200, answer
        params = json.loads(answer["body"])["params"]
        assert params["session_id"] == "ses_1" and params["provider"] == "calendar"
        refused = resolve(app, build_event("DELETE", path, function_url=function_url))
        assert (refused["statusCode"], json.loads(refused["body"])["code"]) == (404, "not_found")


def test_behind_api_gateway_the_decoded_path_is_encoded_again_at_a_function_url_kept() -> None:
    """API Gateway's HTTP API hands over `rawPath` decoded (`vault.routes.encoded_path`); the
    route functions read one form, percent-encoded, whichever endpoint the call came through."""
    app = Router("proxy-api")
    app.route(PROXY, methods=("GET",))(_echo)
    path = "/v1/sessions/ses_1/proxy/calendar/a%20b/%C3%9Cber/x%2Dy/%25/@;=,"
    behind_gateway = build_event("GET", path)
    assert behind_gateway["rawPath"] == "/v1/sessions/ses_1/proxy/calendar/a b/Über/x-y/%/@;=,"
    answer = json.loads(resolve(app, behind_gateway)["body"])
    assert answer["path"] == "/v1/sessions/ses_1/proxy/calendar/a%20b/%C3%9Cber/x-y/%25/@;=,"
    at_url = json.loads(resolve(app, build_event("GET", path, function_url=True))["body"])
    assert at_url["path"] == path


@pytest.fixture
def events(audit_events: AuditLog) -> Iterator[AuditLog]:
    """The test's audit events; the metrics a refusal adds are dropped after it (no
    `lambda_handler` flushes them here)."""
    yield audit_events
    metrics.clear_metrics()


@pytest.mark.parametrize("function_url", [False, True])
def test_an_unknown_route_is_a_404_problem_and_audited(
    agent_app: Router, events: AuditLog, function_url: bool
) -> None:
    # a route of the table this router does not serve, then a path of no route at all
    for path, route in (
        ("/v1/sessions/ses_1/renew", "POST /v1/sessions/{session_id}/renew"),
        ("/v1/nowhere", "$default"),
    ):
        event = build_event(
            "POST", path, principal_arn="arn:aws:sts::1:x", function_url=function_url
        )
        answer = resolve(agent_app, event)
        assert answer["statusCode"] == 404
        assert answer["headers"]["Content-Type"] == "application/problem+json"
        assert json.loads(answer["body"])["code"] == "not_found"
        (event,) = events.events
        assert (event["action"], event["outcome"], event["reason"]) == (
            "request",
            "denied",
            "not_found",
        )
        assert (event["route"], event["principal"]) == (route, "arn:aws:sts::1:x")
        events.events.clear()


def test_a_vault_error_is_its_problem_answer(events: AuditLog) -> None:
    app = Router("agent-api")

    @app.route(TOKENS)
    def _refuse(request: Request, session_id: str) -> Response:
        raise StorageUnavailable("the table is busy")

    answer = resolve(app, build_event("POST", "/v1/sessions/ses_1/tokens"))
    assert answer["statusCode"] == 503
    assert answer["headers"] == {
        "Content-Type": "application/problem+json",
        "Cache-Control": "no-store",
        "Retry-After": "2",
    }
    assert json.loads(answer["body"])["code"] == "storage_unavailable"
    assert [(e["action"], e["reason"], e["route"]) for e in events.events] == [
        ("request", "storage_unavailable", TOKENS)
    ]


def test_an_unexpected_error_is_a_500_without_its_details(events: AuditLog) -> None:
    app = Router("agent-api")

    @app.route(TOKENS)
    def _defect(request: Request, session_id: str) -> Response:
        raise KeyError("ya29.secret-detail")

    answer = resolve(app, build_event("POST", "/v1/sessions/ses_1/tokens"))
    assert answer["statusCode"] == 500
    problem = json.loads(answer["body"])
    assert problem["code"] == "internal_error"
    assert "secret-detail" not in answer["body"] and "KeyError" not in answer["body"]
    assert "Traceback" not in answer["body"]
    assert [(e["action"], e["outcome"], e["reason"]) for e in events.events] == [
        ("request", "failed", "internal_error")
    ]


def test_a_second_request_starts_from_nothing_recorded(events: AuditLog) -> None:
    app = Router("agent-api")

    @app.route(TOKENS)
    def _refuse(request: Request, session_id: str) -> Response:
        raise Forbidden("no")

    for _ in range(2):
        assert resolve(app, build_event("POST", "/v1/sessions/ses_1/tokens"))["statusCode"] == 403
    assert [e["reason"] for e in events.events] == ["forbidden", "forbidden"]


# --- the answer ------------------------------------------------------------------------------


def test_a_bytes_body_is_sent_base64_and_a_text_body_as_is() -> None:
    app = Router("proxy-api")
    data = b"\x00\xff binary \x89PNG"

    @app.route(PROXY)
    def _forward(request: Request, **params: str) -> Response:
        return Response(200, {"Content-Type": "image/png"}, data)

    answer = resolve(app, build_event("GET", "/v1/sessions/ses_1/proxy/calendar/x"))
    assert answer == {
        "statusCode": 200,
        "body": base64.b64encode(data).decode(),
        "isBase64Encoded": True,
        "headers": {"Content-Type": "image/png"},
        "cookies": [],
    }
    text = Response(302, {"Location": "https://x.test/"}).to_event()
    assert (text["body"], text["isBase64Encoded"]) == ("", False)
