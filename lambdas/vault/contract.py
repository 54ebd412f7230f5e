"""The machine-readable API: the answer models and the OpenAPI 3.1 document (docs/openapi.json).

The document is generated from the one route table (`agent_vault.routes.ROUTES`), the request
models (`vault.schemas`), the answer models below and the error classes (`vault.errors`, every
`VaultError` subclass). `make openapi` (``python -m vault.contract docs/openapi.json``) writes it;
tests/unit/test_openapi.py fails when the committed file drifts, and
tests/integration/test_openapi_answers.py holds real answers of the handlers to it.

No handler imports this module: it costs a Lambda cold start nothing. The handlers parse bodies
themselves (`handlers.http.parse_body`), so Powertools' OpenAPI generator (which needs its
validation middleware and typed route signatures) would describe them less exactly than this.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from agent_vault.routes import ROUTES, Route
from vault import errors, schemas
from vault.consent import FLOW_ID
from vault.sessions import SESSION_ID

__all__ = ["OPERATIONS", "Operation", "error_classes", "openapi", "render"]

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{([a-z_]+)\}")

# --- answers ---------------------------------------------------------------------------------
# What the handlers return (`json_response(status, payload)`), field for field. Unknown members
# are refused here on purpose: a handler that starts answering more makes the answers test fail
# until the model (and so the document) says so.


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EpochSeconds = Annotated[int, Field(description="Epoch seconds.")]


class UserRef(_Answer):
    """A user's stable identity: the issuer and subject of their identity token."""

    iss: str = Field(description="Issuer (`urn:agent-vault:asserted:<agent>` for a `user_id`).")
    sub: str = Field(description="Subject at that issuer.")


class SessionView(_Answer):
    """A vault session (`Session.public_view`)."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    agent: str = Field(description="The configured agent the caller's IAM role belongs to.")
    user: UserRef
    task_id: str = Field(description="The caller's task: the assumed-role session name.")
    jkt: str = Field(description="RFC 7638 thumbprint of the session key (DPoP `jwk`).")
    status: Literal["active", "ended", "expired"]
    created_at: EpochSeconds
    expires_at: EpochSeconds


class SessionEndedAnswer(_Answer):
    """The answer of `DELETE /v1/sessions/{session_id}`."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
    status: Literal["ended"]
    revoked_tokens: int = Field(ge=0, description="Session tokens revoked upstream.")


class AuthorizationStarted(_Answer):
    """A consent flow: send the user's browser to `authorization_url`."""

    flow_id: str = Field(pattern=FLOW_ID.pattern)
    authorization_url: str = Field(description="The provider's authorization endpoint (PKCE).")
    expires_at: EpochSeconds


class TokenAnswer(_Answer):
    """An access token minted for this session and exactly the scopes asked for."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=0, description="Seconds the token is still valid.")
    scope: str = Field(description="The granted scopes, space-separated.")
    provider: str


class FlowCompleted(_Answer):
    """The flow is bound to its user: the grant is active."""

    flow_id: str = Field(pattern=FLOW_ID.pattern)
    status: Literal["active"]
    grant_id: str
    provider: str
    scopes: list[str]


class RevocationResult(_Answer):
    """What a revocation revoked (upstream first)."""

    revoked_grants: int = Field(ge=0)
    revoked_tokens: int = Field(ge=0)


class GatewayMessage(BaseModel):
    """API Gateway's own refusal, before any vault code ran (e.g. 403 for a missing or invalid
    SigV4 signature or no `execute-api:Invoke`, 429 when throttled)."""

    message: str


# --- operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What the route table does not say about a route: its body, its answer, who may call it."""

    operation_id: str
    summary: str
    description: str
    status: int
    answer: type[BaseModel] | None
    body: type[BaseModel] | None = None
    proof: bool = False
    """The request carries a `DPoP` proof of the session key (docs/api.md)."""


_OWN = "The calling agent's own session only (the same IAM principal)."

OPERATIONS: dict[str, Operation] = {
    "POST /v1/sessions": Operation(
        "start_session",
        "Start a session",
        "The key that signs the `DPoP` proof becomes the session key; the session is bound to "
        "the caller's IAM principal (its task), its agent and the user.",
        201,
        SessionView,
        schemas.StartSession,
        proof=True,
    ),
    "GET /v1/sessions/{session_id}": Operation(
        "get_session", "Read a session", _OWN, 200, SessionView, proof=True
    ),
    "DELETE /v1/sessions/{session_id}": Operation(
        "end_session",
        "End a session",
        f"{_OWN} Its tokens are revoked upstream.",
        200,
        SessionEndedAnswer,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/renew": Operation(
        "renew_session",
        "Renew a live session",
        f"{_OWN} Moves its expiry; a given identity must be the session's user.",
        200,
        SessionView,
        schemas.RenewSession,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/authorizations": Operation(
        "start_authorization",
        "Start consent at a provider",
        f"{_OWN} Scopes must be within the agent's policy; `return_url` one of `return_urls`.",
        201,
        AuthorizationStarted,
        schemas.StartAuthorization,
        proof=True,
    ),
    "POST /v1/sessions/{session_id}/tokens": Operation(
        "get_token",
        "Get an access token",
        f"{_OWN} A token narrowed to exactly the scopes asked for; 403 `consent_required` "
        "when no active grant covers them.",
        200,
        TokenAnswer,
        schemas.TokenRequest,
        proof=True,
    ),
    "POST /v1/flows/{flow_id}/complete": Operation(
        "complete_flow",
        "Bind a consented flow to the logged-in user",
        "Any task of the flow's agent. The grant becomes active only if the user is the flow's "
        "user; otherwise its tokens are revoked (403 `user_mismatch`).",
        200,
        FlowCompleted,
        schemas.CompleteFlow,
    ),
    "POST /v1/revocations": Operation(
        "revoke",
        "Revoke grants (admins)",
        "Admin principals only (`admin_role_names`). Every criterion given must match.",
        200,
        RevocationResult,
        schemas.Revocation,
    ),
}

CALLBACK = Operation(
    "oauth_callback",
    "The provider's redirect after consent (public)",
    "The user's browser arrives here from the provider. Redirects to the flow's return URL with "
    "`flow_id` and `status=pending_binding`, or `status=refused&error=<code>`.",
    302,
    None,
)
"""Every route of the public callback function answers the same way (whatever its path)."""

_CALLBACK_QUERY = {
    "state": "The flow's state.",
    "code": "The authorization code (on success).",
    "iss": "The provider's issuer (RFC 9207).",
    "error": "The provider's OAuth error (on refusal).",
}

_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "session_id": {"type": "string", "pattern": SESSION_ID.pattern},
    "flow_id": {"type": "string", "pattern": FLOW_ID.pattern},
    "provider": TypeAdapter(schemas.ProviderName).json_schema(),
}


def operation_for(route: Route) -> Operation:
    """The operation of a route; a route the contract does not describe is an error."""
    if route.function == "callback":
        return CALLBACK
    try:
        return OPERATIONS[route.route_key]
    except KeyError:
        raise LookupError(
            f"route {route.route_key!r} has no entry in vault.contract.OPERATIONS: add one"
        ) from None


def path_params(path: str) -> list[str]:
    return _PARAM.findall(path)


# --- errors ----------------------------------------------------------------------------------


def error_classes() -> list[type[errors.VaultError]]:
    """Every error class the vault can answer with (VaultError and all its subclasses)."""
    found: list[type[errors.VaultError]] = []
    pending: list[type[errors.VaultError]] = [errors.VaultError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _problem_schema() -> dict[str, Any]:
    by_code: dict[str, dict[str, Any]] = {}
    for cls in error_classes():
        entry: dict[str, Any] = {"status": cls.status, "title": cls.title}
        if cls.retry_after is not None:
            entry["retry_after"] = cls.retry_after
        by_code[cls.code] = entry
    codes = sorted(by_code)
    string_list = {"type": "array", "items": {"type": "string"}}
    return {
        "type": "object",
        "description": (
            "An RFC 9457 problem document (`application/problem+json`). `code` is stable; "
            "`x-problem-codes` gives each code's status and title. Members beyond the standard "
            "ones depend on the code (docs/api.md)."
        ),
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "pattern": "^urn:agent-vault:problem:[a-z_]+$"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": codes},
            "retry_after": {"type": "integer", "description": "Seconds; 5xx answers only."},
            "errors": {
                "type": "array",
                "description": "`invalid_request`: the fields that did not validate (at most 10).",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
                    "required": ["field", "problem"],
                },
            },
            "provider": {"type": "string"},
            "missing_scopes": string_list | {"description": "`consent_required`."},
            "reason": {
                "type": "string",
                "description": "`consent_required`: `no_grant`, `scopes_not_granted` or "
                "`grant_broken`.",
            },
            "authorizations_path": {"type": "string", "description": "`consent_required`."},
            "allowed_scopes": string_list | {"description": "`scope_not_allowed`."},
            "denied_scopes": string_list | {"description": "`scope_not_allowed`."},
            "flow_status": {"type": "string", "description": "`flow_not_pending`."},
            "provider_error": {"type": "string", "description": "`code_exchange_failed`."},
        },
        "x-problem-codes": by_code,
    }


# --- the document ----------------------------------------------------------------------------

_NO_STORE = {
    "Cache-Control": {
        "description": "Always `no-store`.",
        "schema": {"type": "string", "const": "no-store"},
    }
}


def _components() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (op.body, "validation") for op in OPERATIONS.values() if op.body is not None
    ]
    models += [(op.answer, "serialization") for op in OPERATIONS.values() if op.answer]
    models.append((GatewayMessage, "serialization"))
    _, top = models_json_schema(sorted(set(models), key=lambda m: m[0].__name__), ref_template=REF)
    found: dict[str, Any] = top["$defs"]
    found["Problem"] = _problem_schema()
    return found


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": REF.format(model=name)}


def _failure_answers() -> dict[str, Any]:
    content = {
        "application/problem+json": {"schema": _ref("Problem")},
        "application/json": {"schema": _ref(GatewayMessage)},
    }
    retry = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    }
    return {
        "4XX": {
            "description": "Refused: a problem document with a stable `code` (or API Gateway's "
            "own refusal).",
            "headers": _NO_STORE,
            "content": content,
        },
        "5XX": {
            "description": "Failed; retry after `Retry-After` seconds.",
            "headers": _NO_STORE | retry,
            "content": content,
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    op = operation_for(route)
    operation_id = op.operation_id + "".join(
        f"_by_{name}" for name in path_params(route.path) if op is CALLBACK
    )
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _PATH_PARAMS.get(name, {"type": "string"}),
        }
        for name in path_params(route.path)
    ]
    answers: dict[str, Any] = {}
    if op is CALLBACK:
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": name == "state",
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in _CALLBACK_QUERY.items()
        ]
        answers["302"] = {
            "description": "Back to the application's return URL.",
            "headers": _NO_STORE
            | {
                "Location": {
                    "description": "The return URL with `flow_id` and `status` (and `error`).",
                    "schema": {"type": "string"},
                },
                "Referrer-Policy": {"schema": {"type": "string", "const": "no-referrer"}},
            },
        }
    elif op.answer is not None:
        answers[str(op.status)] = {
            "description": op.answer.__doc__.strip().splitlines()[0] if op.answer.__doc__ else "",
            "headers": _NO_STORE,
            "content": {"application/json": {"schema": _ref(op.answer)}},
        }
    answers |= _failure_answers()
    security: list[dict[str, list[str]]] = []
    if route.auth == "iam":
        security = [{"sigv4": [], "dpop": []} if op.proof else {"sigv4": []}]
    document: dict[str, Any] = {
        "operationId": operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": [route.function],
        "security": security,
        "responses": answers,
        "x-agent-vault-handler": route.handler,
    }
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": True,
            "description": "UTF-8 JSON, at most 16 KiB; unknown members are refused.",
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return document


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the vault's HTTP API."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Agent Vault",
            "version": API_VERSION,
            "summary": "Session-bound, delegated OAuth tokens for AI agents.",
            "description": "Generated by `make openapi` from the route table, the request and "
            "answer models and the error classes; the prose is docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [
            {
                "url": "https://{api_id}.execute-api.{region}.amazonaws.com",
                "variables": {
                    "api_id": {"default": "abc123"},
                    "region": {"default": "eu-west-1"},
                },
            }
        ],
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "AWS Signature Version 4 for the service `execute-api` "
                    "(API Gateway IAM authorization): the caller's IAM principal is the agent "
                    "(its role an agent's `role_name`) or an admin (`admin_role_names`). "
                    "The signature also covers `X-Amz-Date` (and `X-Amz-Security-Token`).",
                    "x-amazon-apigateway-authtype": "awsSigv4",
                },
                "dpop": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "DPoP",
                    "description": "A fresh proof of possession of the session key: a compact "
                    "JWS (`typ: dpop+jwt`, `alg: ES256`, the public `jwk`) with claims `jti`, "
                    "`htm`, `htu`, `iat` and `sid` (absent on `POST /v1/sessions`). Each `jti` "
                    "is accepted once.",
                },
            },
        },
    }


def render() -> str:
    """The document as committed: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "docs/openapi.json")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
