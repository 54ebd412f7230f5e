"""The egress proxy route (IAM-authorized): `ANY /v1/sessions/{id}/proxy/{provider}/{path+}`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import proxy
from vault.caller import caller_from
from vault.config import HTTP_METHODS
from vault.errors import InvalidRequest, RequestTooLarge
from vault.handlers.http import http_call, make_resolver
from vault.observability import lambda_handler
from vault.runtime import services

app = make_resolver()


def _request(session_id: str, provider: str) -> proxy.ProxyRequest:
    """The request as API Gateway delivered it: the raw `{path+}` and query, the body decoded."""
    event = app.current_event
    raw: str = event.body or ""
    if len(raw) > proxy.MAX_REQUEST_BYTES * 4 // 3 + 4:  # base64 of the largest body forwarded
        raise RequestTooLarge(
            f"the proxy forwards bodies of at most {proxy.MAX_REQUEST_BYTES} bytes",
            max_bytes=proxy.MAX_REQUEST_BYTES,
        )
    if event.is_base64_encoded:
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("the body is not valid base64") from exc
    else:
        body = raw.encode("utf-8", "surrogatepass")
    # /v1/sessions/{session_id}/proxy/{provider}/{path+}: everything after the sixth `/`
    path = event.raw_path.split("/", 6)[6]
    return proxy.ProxyRequest(
        session_id=session_id,
        provider=provider,
        path=path,
        query=event.raw_query_string or "",
        method=event.request_context.http.method.upper(),
        headers={k.lower(): v for k, v in (event.headers or {}).items()},
        body=body,
    )


@app.route("/v1/sessions/<session_id>/proxy/<provider>/.+", method=list(HTTP_METHODS))
def forward(session_id: str, provider: str) -> Response[bytes]:
    request = _request(session_id, provider)
    answer = proxy.forward(
        services(), caller_from(app.current_event.raw_event), http_call(app), request
    )
    return Response(status_code=answer.status, headers=answer.headers, body=answer.body)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
