"""What every HTTP handler shares: serving an event through its function's router
(`vault.handlers.router`), body parsing at the edge, and the one mapping from errors to RFC 9457
problem answers."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

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
from vault.handlers.router import Request, Response, Router
from vault.observability import logger
from vault.routes import match_route
from vault.sessions import HttpCall

MAX_BODY_BYTES = 16 * 1024
Body = TypeVar("Body", bound=BaseModel)


def problem(error: VaultError) -> Response:
    return Response(error.status, problem_headers(error), problem_body(error))


def json_response(status: int, payload: dict[str, Any]) -> Response:
    return Response(
        status,
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
        json.dumps(payload, separators=(",", ":")),
    )


def resolve(app: Router, event: dict[str, Any]) -> dict[str, Any]:
    """Serve one HTTP event: its route's answer, or the problem answer of what it raised (every
    refusal audited once, an unexpected error answered 500 without its details)."""
    begin_request()
    try:
        found = app.dispatch(event)
        if found is None:
            error: VaultError = NotFound("no such route")
            _audit_refusal(event, error, always=True)
            return problem(error).to_event()
        function, request, params = found
        return function(request, **params).to_event()
    except VaultError as refused:
        if refused.status >= 500:
            logger.warning("request failed", extra={"code": refused.code, "status": refused.status})
        _audit_refusal(event, refused)
        return problem(refused).to_event()
    except Exception as unexpected:
        logger.error("unexpected error", extra={"error_type": type(unexpected).__name__})
        failure = InternalError("the vault failed unexpectedly; retry shortly")
        # a decision that saw the error recorded it as failed; one that ended before did not
        _audit_refusal(event, failure, always=not recorded("failed"))
        return problem(failure).to_event()


def _audit_refusal(event: dict[str, Any], error: VaultError, *, always: bool = False) -> None:
    """Every refused request leaves an audit event: its decision's, or this one."""
    if recorded() and not always:
        return
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    principal = iam.get("userArn")
    request_refused(
        error,
        principal=principal if isinstance(principal, str) else None,
        route=_route_key(event)[:128],
    )


def _route_key(event: dict[str, Any]) -> str:
    """API Gateway's route key. A function URL's event names none (`$default`): the route
    table's for its method and path then, so the audit reads the same behind either endpoint."""
    key = str(event.get("routeKey", ""))
    if key != "$default":
        return key
    http = (event.get("requestContext") or {}).get("http") or {}
    found = match_route(str(http.get("method", "")), str(event.get("rawPath", "")))
    return found[0].route_key if found is not None else key


def parse_body(request: Request, model: type[Body]) -> Body:
    """Decode and validate the JSON body; 400/413 problems for anything else."""
    raw: str | bytes = request.body
    if len(raw) > MAX_BODY_BYTES * 2:
        raise PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes")
    if request.is_base64_encoded:
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


def http_call(request: Request) -> HttpCall:
    """The method and public URL of this request, and its DPoP proof, for proof checks."""
    headers = request.headers
    scheme = headers.get("x-forwarded-proto", "https").split(",")[0].strip() or "https"
    return HttpCall(
        method=request.method,
        url=f"{scheme}://{request.domain_name}{request.raw_path}",
        proof=headers.get("dpop"),
        token_proof=headers.get("x-agent-vault-token-dpop"),
    )
