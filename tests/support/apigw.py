"""API Gateway HTTP API (payload 2.0, IAM authorization) events, as the deployed API sends them,
and the handlers run in-process on them; and the same request as a Lambda function URL with
`AWS_IAM` auth sends it (`agent_endpoint: "function_url"`).

The event and the Lambda context are local mode's (`agent_vault_local.events`): one builder for
local mode, the tests and the bench."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_vault_local import events
from agent_vault_local.events import AssumedRole, LambdaContext, resolve_handler
from vault.routes import AGENT_API, PROXY_API, ROUTES, match_route

DOMAIN = "vault.test"
FUNCTION_URL_ID = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"
FUNCTION_URL_DOMAIN = f"{FUNCTION_URL_ID}.lambda-url.us-east-1.on.aws"
ACCOUNT = "123456789012"
OBSERVERS: list[Callable[[dict[str, Any], HttpAnswer], None]] = []
"""Called with every event and answer (tests/security/hygiene.py scans them for secrets)."""


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
    account: str = ACCOUNT,
    domain: str = DOMAIN,
    scheme: str = "https",
    function_url: bool = False,
) -> dict[str, Any]:
    """The event of `method path` (`agent_vault_local.events.build_event`, the one builder) with
    the tests' defaults: the deployed API's https domain and account, the caller by its ARN.

    `function_url`: as a function URL sends it (Lambda's "Invoking function URLs" request
    payload: the same version 2.0 format and `authorizer.iam` (the caller's account in
    `authorizer.iam.accountId`, the function owner's in `requestContext.accountId`), but no
    route (`routeKey` `$default`), no `pathParameters`, the URL's id as `apiId`,
    `authentication` null)."""
    common: dict[str, Any] = {
        "query": query or "",
        "headers": {"user-agent": "tests", **(headers or {})},
        "body": body,
        "principal": None if principal_arn is None else AssumedRole(principal_arn, account),
        "scheme": scheme,
        "account_id": account,
    }
    if function_url:
        return events.function_url_event(
            method, path, domain_name=FUNCTION_URL_DOMAIN if domain == DOMAIN else domain, **common
        )
    found = match_route(method, path)
    return events.build_event(
        method,
        path,
        domain_name=domain,
        route=found[0] if found else None,
        path_parameters=found[1] if found else None,
        api_id="testapi",
        **common,
    )


def function_url_handler(path: str) -> str:
    """The function whose URL an agent calls for `path`: the egress proxy's for proxied calls,
    the agent API's for everything else (each URL reaches its one function, whatever the path)."""
    return PROXY_API if "/proxy/" in path else AGENT_API


def invoke(event: dict[str, Any], handler_name: str | None = None) -> HttpAnswer:
    """Run the handler API Gateway would route this event to (or `handler_name`: the function
    behind a function URL), in-process."""
    if handler_name is None:  # by the route key, as API Gateway routes (`rawPath` is decoded)
        route = next((r for r in ROUTES if r.route_key == event["routeKey"]), None)
        handler_name = route.handler if route else AGENT_API
    handler = resolve_handler(handler_name)
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
