"""The egress proxy route (IAM-authorized): `ANY /v1/sessions/{id}/proxy/{provider}/{path+}`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import proxy
from vault.caller import caller_from
from vault.config import HTTP_METHODS
from vault.errors import InvalidRequest, RequestTooLarge
from vault.handlers.http import http_call, resolve
from vault.handlers.router import Request, Response, Router
from vault.observability import lambda_handler
from vault.runtime import services

app = Router("proxy-api")


def _request(request: Request, session_id: str, provider: str) -> proxy.ProxyRequest:
    """The request as API Gateway delivered it: the raw `{path+}` and query, the body decoded."""
    raw = request.body
    if len(raw) > proxy.MAX_REQUEST_BYTES * 4 // 3 + 4:  # base64 of the largest body forwarded
        raise RequestTooLarge(
            f"the proxy forwards bodies of at most {proxy.MAX_REQUEST_BYTES} bytes",
            max_bytes=proxy.MAX_REQUEST_BYTES,
        )
    if request.is_base64_encoded:
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("the body is not valid base64") from exc
    else:
        body = raw.encode("utf-8", "surrogatepass")
    # /v1/sessions/{session_id}/proxy/{provider}/{path+}: everything after the sixth `/`
    path = request.raw_path.split("/", 6)[6]
    return proxy.ProxyRequest(
        session_id=session_id,
        provider=provider,
        path=path,
        query=request.raw_query_string,
        method=request.method.upper(),
        headers=dict(request.headers),
        body=body,
    )


@app.route("ANY /v1/sessions/{session_id}/proxy/{provider}/{path+}", methods=HTTP_METHODS)
def forward(request: Request, session_id: str, provider: str, path: str) -> Response:
    """`path`: API Gateway's `{path+}`; the raw one of the request's path is what is forwarded."""
    del path
    forwarded = _request(request, session_id, provider)
    answer = proxy.forward(services(), caller_from(request.event), http_call(request), forwarded)
    return Response(answer.status, answer.headers, answer.body)


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event)
