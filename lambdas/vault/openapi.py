"""The machine-readable API: docs/openapi.json (OpenAPI 3.1), generated.

From the one route table (`vault.routes.ROUTES`), the request models (`vault.schemas`), the
answers and operations of `vault.contract`, and the error classes (every `VaultError` subclass).
`make openapi` (``python -m vault.openapi docs/openapi.json``) writes it;
tests/unit/test_openapi.py fails when the committed file drifts.

No handler imports this module: it costs a Lambda cold start nothing. The handlers parse bodies
themselves (`handlers.http.parse_body`), so Powertools' OpenAPI generator (which needs its
validation middleware and typed route signatures) would describe them less exactly than this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from vault import errors
from vault.config import HTTP_METHODS
from vault.contract import (
    CALLBACK,
    CALLBACK_QUERY,
    OPERATIONS,
    PATH_PARAMS,
    GatewayMessage,
    operation_for,
    path_params,
)
from vault.routes import ROUTES, Route

__all__ = ["error_classes", "methods_of", "openapi", "render"]

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF = "#/components/schemas/{model}"


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
                "`grant_broken`; `session_ended`: how it ended (`parent_ended`: an ancestor "
                "did); `delegation_not_allowed`: `agent_not_allowed`, `too_deep`, `consent` or "
                "`renewal`; `delegation_exceeds_parent`: `provider`, `scopes` or `lifetime`.",
            },
            "max_ttl_seconds": {
                "type": "integer",
                "description": "`delegation_exceeds_parent` (`lifetime`): what is left of the "
                "parent's life.",
            },
            "delegation_status": {
                "type": "string",
                "description": "`delegation_not_pending`: `claimed` or `expired`.",
            },
            "authorizations_path": {"type": "string", "description": "`consent_required`."},
            "allowed_scopes": string_list | {"description": "`scope_not_allowed`."},
            "denied_scopes": string_list | {"description": "`scope_not_allowed`."},
            "flow_status": {"type": "string", "description": "`flow_not_pending`."},
            "provider_error": {"type": "string", "description": "`code_exchange_failed`."},
            "htu": {
                "type": "string",
                "description": "`dpop_proof_required`, `dpop_nonce_required`: the provider's "
                "token endpoint (the `htu` of the proof to send).",
            },
            "nonce": {
                "type": "string",
                "description": "`dpop_nonce_required` (and `dpop_proof_required` when known): "
                "the provider's DPoP nonce to sign.",
            },
            "header": {
                "type": "string",
                "description": "`invalid_proof`, `proof_replayed`: the header whose proof was "
                "refused, when it is not `DPoP`.",
            },
            "proxy_path": {
                "type": "string",
                "description": "`delivery_proxy_only`: where this provider is reached.",
            },
            "method": {"type": "string", "description": "`request_not_allowed`."},
            "api_base_urls": string_list | {"description": "`request_not_allowed`."},
            "max_bytes": {"type": "integer", "description": "`request_too_large`."},
            "upstream_status": {
                "type": "integer",
                "description": "`upstream_redirect_refused`: the provider's status.",
            },
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


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A query model's fields as optional query parameters (unknown ones are refused)."""
    schema = model.model_json_schema(ref_template=REF)
    found = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        field.pop("title", None)
        if "anyOf" in field:  # `X | None`: the parameter is absent rather than null
            (field,) = [s for s in field.pop("anyOf") if s.get("type") != "null"] or [{}]
        parameter = {"name": name, "in": "query", "required": False, "schema": field}
        if description:
            parameter["description"] = description
        found.append(parameter)
    return found


def _operation(route: Route, method: str) -> dict[str, Any]:
    op = operation_for(route)
    operation_id = op.operation_id + "".join(
        f"_by_{name}" for name in path_params(route.path) if op is CALLBACK
    )
    if route.method == "ANY":
        operation_id += f"_{method.lower()}"
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_PARAMS.get(name, {"type": "string"}),
        }
        for name in path_params(route.path)
    ]
    parameters += [
        {"name": name, "in": "header", "required": required, "description": text}
        | {"schema": {"type": "string"}}
        for required, headers in ((True, op.required_headers), (False, op.headers))
        for name, text in headers
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    answers: dict[str, Any] = {}
    if op.proxied:
        answers["default"] = {
            "description": "The provider's answer, whatever its status: its body as sent and "
            "its headers but `Set-Cookie` and hop-by-hop ones. The vault's own refusals are "
            "the problem documents below, without `X-Agent-Vault-Proxy`.",
            "headers": {
                "X-Agent-Vault-Proxy": {
                    "description": "`upstream`: this answer is the provider's.",
                    "schema": {"type": "string", "const": "upstream"},
                }
            },
            "content": {"*/*": {"schema": {}}},
        }
    if op is CALLBACK:
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": name == "state",
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in CALLBACK_QUERY.items()
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


def methods_of(route: Route) -> tuple[str, ...]:
    """The HTTP methods of a route (every one the proxy forwards for `ANY`)."""
    return HTTP_METHODS if route.method == "ANY" else (route.method,)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the vault's HTTP API."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        for method in methods_of(route):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, method)
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
                    "The signature also covers `X-Amz-Date` (and `X-Amz-Security-Token`). "
                    'With `agent_endpoint: "function_url"` the agent and proxy routes are also '
                    "served at the two functions' URLs (`https://{id}.lambda-url.{region}.on.aws`"
                    ", IAM auth): sign for the service `lambda` there.",
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
