"""SigV4 as the SDK signs it, verified by the local API Gateway like API Gateway does.

The Lambda behind the gateway here is a recorder (it answers 200 and keeps the event), because
what is under test is the gateway's authorization and the event it builds, not the vault.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from agent_vault import AccessDenied, SessionKey, UserIdentity, VaultClient
from agent_vault_local.adapter import (
    SIGNATURE_MISMATCH,
    GatewayResponse,
    LocalApiGateway,
    LocalApiServer,
)
from agent_vault_local.credentials import LocalPrincipal, PrincipalRegistry, new_principal
from agent_vault_local.events import build_event
from vault.routes import ROUTES, match_route

REGION = "us-east-1"
DOMAIN = "127.0.0.1:4566"


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        assert context.get_remaining_time_in_millis() > 0
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/json"},
            "cookies": ["a=1; Path=/", "b=2; Path=/"],
            "body": json.dumps({"session_id": "ses_x", "status": "active"}),
        }


@pytest.fixture
def agent() -> LocalPrincipal:
    return new_principal("calendar-agent/task-1", "calendar-agent-role", "4f1c2b7e9d")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def gateway(agent: LocalPrincipal, recorder: Recorder) -> LocalApiGateway:
    handlers = {route.handler: recorder for route in ROUTES}
    return LocalApiGateway(
        PrincipalRegistry([agent]), region=REGION, domain_name=DOMAIN, handlers=handlers
    )


def signed(
    principal: LocalPrincipal,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    service: str = "execute-api",
    region: str = REGION,
    headers: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Headers of a request signed the way the SDK signs (botocore SigV4Auth)."""
    request = AWSRequest(
        method=method,
        url=f"http://{DOMAIN}{path}",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    SigV4Auth(principal.credentials(), service, region).add_auth(request)
    return [("Host", DOMAIN), *((k, str(v)) for k, v in request.prepare().headers.items())]


def test_a_correctly_signed_request_reaches_the_lambda_with_the_verified_principal(
    gateway: LocalApiGateway, recorder: Recorder, agent: LocalPrincipal
) -> None:
    body = b'{"user":{"user_id":"u"}}'
    answer = gateway.handle(
        "POST", "/v1/sessions", signed(agent, "POST", "/v1/sessions", body), body
    )
    assert answer.status == 200
    (event,) = recorder.events
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["userArn"] == (
        "arn:aws:sts::123456789012:assumed-role/calendar-agent-role/4f1c2b7e9d"
    )
    assert iam["accessKey"] == agent.access_key_id
    assert iam["callerId"] == iam["userId"] == f"{agent.role_id}:4f1c2b7e9d"
    assert iam["principalOrgId"] is None and iam["cognitoIdentity"] is None
    assert event["body"] == body.decode() and event["isBase64Encoded"] is False


@pytest.mark.parametrize("tamper", ["body", "path", "header", "secret", "region", "service"])
def test_a_tampered_or_wrongly_signed_request_is_refused(
    gateway: LocalApiGateway, recorder: Recorder, agent: LocalPrincipal, tamper: str
) -> None:
    body = b'{"provider":"calendar","scopes":["calendar.read"]}'
    path = "/v1/sessions/ses_a/tokens"
    signer = agent
    kwargs: dict[str, Any] = {"headers": {"DPoP": "proof-a"}}
    if tamper == "secret":
        signer = LocalPrincipal(**{**agent.to_json(), "secret_access_key": "wrong" * 8})
    if tamper == "region":
        kwargs["region"] = "eu-west-1"
    if tamper == "service":
        kwargs["service"] = "lambda"
    headers = signed(signer, "POST", path, body, **kwargs)
    sent_body, sent_path = body, path
    if tamper == "body":
        sent_body = body.replace(b"calendar.read", b"calendar.write")
    if tamper == "path":
        sent_path = "/v1/sessions/ses_b/tokens"
    if tamper == "header":
        headers = [(k, "proof-b" if k.lower() == "dpop" else v) for k, v in headers]
    answer = gateway.handle("POST", sent_path, headers, sent_body)
    assert answer.status == 403
    assert "message" in json.loads(answer.body)
    assert recorder.events == []


def test_unsigned_requests_get_api_gateways_forbidden(
    gateway: LocalApiGateway, recorder: Recorder
) -> None:
    answer = gateway.handle("POST", "/v1/sessions", [("Host", DOMAIN)], b"{}")
    assert (answer.status, json.loads(answer.body)) == (403, {"message": "Forbidden"})
    assert recorder.events == []


def test_signature_mismatch_message(gateway: LocalApiGateway, agent: LocalPrincipal) -> None:
    headers = signed(agent, "POST", "/v1/sessions", b"{}")
    answer = gateway.handle("POST", "/v1/sessions", headers, b'{"x":1}')
    assert json.loads(answer.body) == {"message": SIGNATURE_MISMATCH}


def test_unknown_keys_and_missing_session_tokens_are_refused(
    gateway: LocalApiGateway, agent: LocalPrincipal
) -> None:
    stranger = new_principal("x", "calendar-agent-role", "other")
    answer = gateway.handle("POST", "/v1/sessions", signed(stranger, "POST", "/v1/sessions"), b"")
    assert json.loads(answer.body) == {
        "message": "The security token included in the request is invalid."
    }
    without_token = [
        (k, v)
        for k, v in signed(agent, "POST", "/v1/sessions")
        if k.lower() != "x-amz-security-token"
    ]
    assert gateway.handle("POST", "/v1/sessions", without_token, b"").status == 403


def test_stale_signatures_are_refused(agent: LocalPrincipal, recorder: Recorder) -> None:
    headers = signed(agent, "POST", "/v1/sessions", b"")
    later = LocalApiGateway(
        PrincipalRegistry([agent]),
        region=REGION,
        domain_name=DOMAIN,
        handlers={r.handler: recorder for r in ROUTES},
        clock=lambda: time.time() + 301,
    )
    answer = later.handle("POST", "/v1/sessions", headers, b"")
    assert answer.status == 403
    assert json.loads(answer.body)["message"].startswith("Signature expired")
    earlier = LocalApiGateway(
        PrincipalRegistry([agent]),
        region=REGION,
        domain_name=DOMAIN,
        handlers={r.handler: recorder for r in ROUTES},
        clock=lambda: time.time() - 301,
    )
    assert earlier.handle("POST", "/v1/sessions", headers, b"").status == 403
    assert recorder.events == []


def test_the_callback_is_public_and_unknown_routes_are_404(
    gateway: LocalApiGateway, recorder: Recorder
) -> None:
    answer = gateway.handle(
        "GET",
        "/v1/oauth/callback?state=s&code=c&iss=http%3A%2F%2Fidp",
        [("Host", DOMAIN), ("Cookie", "x=1; y=2")],
        b"",
    )
    assert answer.status == 200
    (event,) = recorder.events
    assert "authorizer" not in event["requestContext"]
    assert event["queryStringParameters"] == {"state": "s", "code": "c", "iss": "http://idp"}
    assert event["rawQueryString"] == "state=s&code=c&iss=http%3A%2F%2Fidp"
    assert event["cookies"] == ["x=1", "y=2"] and "cookie" not in event["headers"]
    for method, path in (
        ("GET", "/v1/nothing"),
        ("PUT", "/v1/sessions"),
        ("GET", "/v1/sessions/a/b"),
    ):
        missing = gateway.handle(method, path, [("Host", DOMAIN)], b"")
        assert (missing.status, json.loads(missing.body)) == (404, {"message": "Not Found"})


def test_the_event_is_api_gateway_payload_2(agent: LocalPrincipal) -> None:
    found = match_route("POST", "/v1/sessions/ses_abc/tokens")
    assert found is not None
    route, params = found
    event = build_event(
        "POST",
        "/v1/sessions/ses_abc/tokens",
        route=route,
        path_parameters=params,
        query="a=1&a=2",
        headers=[
            ("Content-Type", "application/octet-stream"),
            ("X-Multi", "1"),
            ("x-multi", "2"),
            ("User-Agent", "t"),
        ],
        body=b"\x00\xff",
        principal=agent,
        domain_name=DOMAIN,
        now=1.5,
    )
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /v1/sessions/{session_id}/tokens"
    assert event["pathParameters"] == {"session_id": "ses_abc"}
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["headers"]["x-multi"] == "1,2"
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["headers"]["x-forwarded-port"] == "4566"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\xff"
    context = event["requestContext"]
    assert context["stage"] == "$default" and context["domainName"] == DOMAIN
    assert context["http"] == {
        "method": "POST",
        "path": "/v1/sessions/ses_abc/tokens",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "t",
    }
    assert context["timeEpoch"] == 1500
    assert context["requestId"] and context["routeKey"] == event["routeKey"]


def test_handler_answers_are_written_back(gateway: LocalApiGateway, agent: LocalPrincipal) -> None:
    answer = gateway.handle(
        "GET", "/v1/sessions/ses_x", signed(agent, "GET", "/v1/sessions/ses_x"), b""
    )
    assert answer.status == 200
    cookies = [v for k, v in answer.headers if k == "set-cookie"]
    assert cookies == ["a=1; Path=/", "b=2; Path=/"]
    assert json.loads(answer.body)["session_id"] == "ses_x"


def test_a_crashing_handler_is_api_gateways_500(agent: LocalPrincipal) -> None:
    def crash(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    gateway = LocalApiGateway(
        PrincipalRegistry([agent]),
        region=REGION,
        domain_name=DOMAIN,
        handlers={r.handler: crash for r in ROUTES},
    )
    answer: GatewayResponse = gateway.handle(
        "POST", "/v1/sessions", signed(agent, "POST", "/v1/sessions"), b""
    )
    assert (answer.status, json.loads(answer.body)) == (500, {"message": "Internal Server Error"})


# -- the SDK over a real socket -------------------------------------------------------------------


@pytest.fixture
def server(gateway: LocalApiGateway) -> Iterator[LocalApiServer]:
    with LocalApiServer(lambda domain: _rebind(gateway, domain)) as running:
        yield running


def _rebind(gateway: LocalApiGateway, domain: str) -> LocalApiGateway:
    gateway.domain_name = domain
    return gateway


def test_the_sdk_signs_the_exact_bytes_it_sends(
    server: LocalApiServer, recorder: Recorder, agent: LocalPrincipal
) -> None:
    client = VaultClient(
        server.url, user=UserIdentity(user_id="u-1"), credentials=agent.credentials(), region=REGION
    )
    info = client.start_session()
    assert info.session_id == "ses_x"
    (event,) = recorder.events
    assert json.loads(event["body"]) == {"user": {"user_id": "u-1"}}
    assert event["headers"]["dpop"].count(".") == 2
    assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == agent.access_key_id


def test_the_sdk_with_wrong_credentials_gets_access_denied(
    server: LocalApiServer, recorder: Recorder
) -> None:
    stranger = new_principal("x", "calendar-agent-role", "t")
    client = VaultClient(
        server.url,
        user=UserIdentity(user_id="u-1"),
        credentials=stranger.credentials(),
        region=REGION,
    )
    with pytest.raises(AccessDenied) as raised:
        client.start_session()
    assert raised.value.status == 403
    assert recorder.events == []


def test_a_stolen_proof_does_not_help_without_the_signature(
    server: LocalApiServer, recorder: Recorder
) -> None:
    """Proofs are signed into SigV4's canonical request: moving one changes the signature."""
    key = SessionKey()
    import urllib3

    response = urllib3.PoolManager().request(
        "POST",
        f"{server.url}/v1/sessions",
        body=b"{}",
        headers={
            "DPoP": key.proof("POST", f"{server.url}/v1/sessions"),
            "Content-Type": "application/json",
        },
        retries=False,
    )
    assert response.status == 403
    assert recorder.events == []
