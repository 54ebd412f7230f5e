"""docs/openapi.json is the API the code serves: regenerated here, it must equal the committed
file; every route of the one route table is in it with its method, parameters and security; every
error code is enumerated; and it is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from vault import openapi
from vault.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as generated now (the first test holds the committed file to it)."""
    generated: dict[str, Any] = json.loads(openapi.render())
    return generated


def test_the_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.exists(), "docs/openapi.json is missing: run `make openapi`"
    assert COMMITTED.read_text(encoding="utf-8") == openapi.render(), (
        "docs/openapi.json drifted from the routes, models or error codes: run `make openapi` "
        "and commit the result"
    )


def test_generation_is_deterministic() -> None:
    assert openapi.render() == openapi.render()


def test_it_is_a_valid_openapi_3_1_document(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_is_there_with_its_method_and_path_parameters(
    document: dict[str, Any],
) -> None:
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if not method.startswith("x-")
    }
    # an `ANY` route (the proxy) is every method it forwards
    assert documented == {(m, r.path) for r in ROUTES for m in openapi.methods_of(r)}
    for route in ROUTES:
        for method in openapi.methods_of(route):
            operation = document["paths"][route.path][method.lower()]
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([a-z_]+\+?)\}", route.path)), route.route_key
            assert all(
                p["required"] for p in operation.get("parameters", []) if p["in"] == "path"
            ), route.route_key


def test_each_route_declares_how_it_is_authorized(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert (schemes["dpop"]["in"], schemes["dpop"]["name"]) == ("header", "DPoP")
    for route in ROUTES:
        method = openapi.methods_of(route)[0]
        security = document["paths"][route.path][method.lower()]["security"]
        if route.auth == "none":
            assert security == [], route.route_key  # the public callback
        else:
            assert len(security) == 1 and "sigv4" in security[0], route.route_key
            # a session route proves possession of the session key (docs/api.md); a claim
            # proves the child's new key, as a session start does
            proves = route.path.startswith(("/v1/sessions", "/v1/delegations"))
            assert ("dpop" in security[0]) == proves, route.route_key


def test_every_error_code_is_enumerated_in_the_problem_schema(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    classes = openapi.error_classes()
    assert problem["properties"]["code"]["enum"] == sorted({c.code for c in classes})
    assert {code: entry["status"] for code, entry in problem["x-problem-codes"].items()} == {
        c.code: c.status for c in classes
    }
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for status in ("4XX", "5XX"):
                content = operation["responses"][status]["content"]
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }


def test_request_bodies_are_the_models_the_handlers_parse(document: dict[str, Any]) -> None:
    """The body schema of each route is the model its route function gives `parse_body`."""
    for route in ROUTES:
        module = importlib.import_module(route.handler.rpartition(".")[0])
        function = module.app.bound.get(route.route_key)
        assert function is not None, f"{route.route_key} is not bound in {route.handler}"
        parsed = re.search(r"parse_body\(request, (\w+)\)", inspect.getsource(function))
        method = openapi.methods_of(route)[0]
        body = document["paths"][route.path][method.lower()].get("requestBody")
        if parsed is None:
            assert body is None, route.route_key
        else:
            schema = body["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{parsed.group(1)}"}, route.route_key


def test_no_handler_imports_the_contract_or_the_generator() -> None:
    """The document costs a Lambda cold start nothing: a fresh interpreter that imports every
    HTTP handler has loaded neither `vault.contract` nor `vault.openapi`."""
    handlers = sorted({route.handler.rpartition(".")[0] for route in ROUTES})
    probe = (
        "import importlib, sys\n"
        f"for name in {handlers!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m in ('vault.contract', 'vault.openapi')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lambdas"), str(ROOT)])},
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
