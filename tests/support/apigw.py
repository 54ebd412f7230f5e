"""API Gateway HTTP API (payload 2.0, IAM authorization) events, as the deployed API sends them."""

from __future__ import annotations

import base64
import importlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from agent_vault.routes import match_route

DOMAIN = "vault.test"
OBSERVERS: list[Callable[[dict[str, Any], HttpAnswer], None]] = []
"""Called with every event and answer (tests/security/hygiene.py scans them for secrets)."""


@dataclass
class LambdaContext:
    function_name: str = "agent-vault-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:agent-vault-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: str
    data: bytes = b""
    """The body's bytes (a base64 answer decoded: the proxy's are)."""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def code(self) -> str | None:
        document = self.json
        return document.get("code") if isinstance(document, dict) else None


def build_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | str | None = None,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    principal_arn: str | None = None,
    account: str = "123456789012",
    domain: str = DOMAIN,
    scheme: str = "https",
) -> dict[str, Any]:
    found = match_route(method, path)
    route_key = found[0].route_key if found else "$default"
    raw_query = query if isinstance(query, str) else urlencode(query or {})
    all_headers = {
        "host": domain,
        "x-forwarded-proto": scheme,
        "user-agent": "tests",
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": all_headers,
        "requestContext": {
            "accountId": account,
            "apiId": "testapi",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "tests",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
    }
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    if pairs:
        merged: dict[str, str] = {}
        for k, v in pairs:  # API Gateway joins repeated parameters with commas
            merged[k] = f"{merged[k]},{v}" if k in merged else v
        event["queryStringParameters"] = merged
    if found and found[1]:
        event["pathParameters"] = found[1]
    if principal_arn is not None:
        session_name = principal_arn.rsplit("/", 1)[-1]
        event["requestContext"]["authorizer"] = {
            "iam": {
                "accessKey": "ASIATESTTESTTESTTEST",
                "accountId": account,
                "callerId": f"AROATESTROLEID:{session_name}",
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": principal_arn,
                "userId": f"AROATESTROLEID:{session_name}",
            }
        }
    if body is not None:
        if isinstance(body, bytes):
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        else:
            event["body"] = body
    return event


def invoke(event: dict[str, Any]) -> HttpAnswer:
    """Run the handler API Gateway would route this event to, in-process."""
    found = match_route(event["requestContext"]["http"]["method"], event["rawPath"])
    target = found[0].handler if found else "vault.handlers.agent_api.handler"
    module_name, _, attr = target.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attr)
    result = handler(event, LambdaContext())
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    raw = result.get("body") or ""
    data = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    answer = HttpAnswer(
        status=result["statusCode"],
        headers=headers,
        body=data.decode("utf-8", "replace"),
        data=data,
    )
    for observe in OBSERVERS:
        observe(event, answer)
    return answer
