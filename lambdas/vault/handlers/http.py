"""What every HTTP handler shares: the resolver, body parsing at the edge, and the one mapping
from errors to RFC 9457 problem answers."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from pydantic import BaseModel, ValidationError

from vault import jsondoc
from vault.audit import begin_request, recorded, request_refused
from vault.errors import (
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    VaultError,
    problem_body,
    problem_headers,
)
from vault.observability import logger
from vault.sessions import HttpCall

MAX_BODY_BYTES = 16 * 1024
Body = TypeVar("Body", bound=BaseModel)


def problem(error: VaultError) -> Response[str]:
    return Response(
        status_code=error.status, body=problem_body(error), headers=problem_headers(error)
    )


def json_response(status: int, payload: dict[str, Any]) -> Response[str]:
    return Response(
        status_code=status,
        body=json.dumps(payload, separators=(",", ":")),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


def make_resolver() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()

    def _begin(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[str]:
        begin_request()
        return next_middleware(app)

    app.use(middlewares=[_begin])

    def _audit_refusal(error: VaultError, *, always: bool = False) -> None:
        """Every refused request leaves an audit event: its decision's, or this one."""
        if recorded() and not always:
            return
        event = app.current_event.raw_event
        iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
        principal = iam.get("userArn")
        request_refused(
            error,
            principal=principal if isinstance(principal, str) else None,
            route=_route_key(event)[:128],
        )

    @app.exception_handler(VaultError)
    def _vault_error(error: VaultError) -> Response[str]:
        if error.status >= 500:
            logger.warning("request failed", extra={"code": error.code, "status": error.status})
        _audit_refusal(error)
        return problem(error)

    @app.not_found
    def _not_found(_: Exception) -> Response[str]:
        error = NotFound("no such route")
        _audit_refusal(error, always=True)
        return problem(error)

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        logger.error("unexpected error", extra={"error_type": type(error).__name__})
        failure = InternalError("the vault failed unexpectedly; retry shortly")
        # a decision that saw the error recorded it as failed; one that ended before did not
        _audit_refusal(failure, always=not recorded("failed"))
        return problem(failure)

    return app


def _route_key(event: dict[str, Any]) -> str:
    """API Gateway's route key. A function URL's event names none (`$default`): the route
    table's for its method and path then, so the audit reads the same behind either endpoint."""
    key = str(event.get("routeKey", ""))
    if key != "$default":
        return key
    from vault.routes import match_route  # only for a refusal at a function URL

    http = (event.get("requestContext") or {}).get("http") or {}
    found = match_route(str(http.get("method", "")), str(event.get("rawPath", "")))
    return found[0].route_key if found is not None else key


def parse_body(app: APIGatewayHttpResolver, model: type[Body]) -> Body:
    """Decode and validate the JSON body; 400/413 problems for anything else."""
    event = app.current_event
    raw: str | bytes = event.body or ""
    if len(raw) > MAX_BODY_BYTES * 2:
        raise PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes")
    if event.is_base64_encoded:
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("the body is not valid base64") from exc
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        document = jsondoc.loads(data)  # UTF-8 only (RFC 8259 §8.1), no BOM, bounded depth
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidRequest("the body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ][:10]
        raise InvalidRequest("the body does not match the expected shape", errors=errors) from exc


def http_call(app: APIGatewayHttpResolver) -> HttpCall:
    """The method and public URL of this request, and its DPoP proof, for proof checks."""
    event = app.current_event
    headers = event.headers or {}
    scheme = headers.get("x-forwarded-proto", "https").split(",")[0].strip() or "https"
    domain = event.request_context.domain_name
    return HttpCall(
        method=event.request_context.http.method,
        url=f"{scheme}://{domain}{event.raw_path}",
        proof=headers.get("dpop"),
        token_proof=headers.get("x-agent-vault-token-dpop"),
    )
