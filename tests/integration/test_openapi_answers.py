"""The document tells the truth: every route, driven through the real handlers (moto + the real
oidc-provider), answers with exactly what docs/openapi.json says for that status and content type
(the answer schemas refuse unknown members), every body it accepts is valid there, and bodies
it refuses with 400 are refused by the document too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agent_vault.routes import ROUTES, match_route
from tests.support.apigw import HttpAnswer
from tests.support.harness import Vault
from vault import contract


def _failures(schema: Draft202012Validator, instance: Any) -> list[str]:
    """Where and why an instance fails its schema, without its values (tokens stay out)."""
    return [f"{e.json_path}: {e.validator}" for e in schema.iter_errors(instance)]


class Contract:
    """Checks requests and answers against the generated document; remembers what it saw."""

    def __init__(self) -> None:
        self.document = json.loads(contract.render())
        self.seen: set[tuple[str, str]] = set()

    def _schema(self, ref: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator({**ref, "components": self.document["components"]})

    def _operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        found = match_route(method, path.split("?")[0])
        assert found is not None, f"{method} {path} is no route"
        route = found[0]
        return route.route_key, self.document["paths"][route.path][route.method.lower()]

    def body_schema(self, method: str, path: str) -> Draft202012Validator:
        _, operation = self._operation(method, path)
        return self._schema(operation["requestBody"]["content"]["application/json"]["schema"])

    def __call__(
        self, method: str, path: str, body: dict[str, Any] | None, answer: HttpAnswer
    ) -> HttpAnswer:
        route_key, operation = self._operation(method, path)
        if body is not None:
            errors = _failures(self.body_schema(method, path), body)
            assert answer.status >= 400 or errors == [], (route_key, errors)
        answers = operation["responses"]
        key = str(answer.status) if str(answer.status) in answers else f"{answer.status // 100}XX"
        assert key in answers, f"{route_key} answered {answer.status}, not in the document"
        documented = answers[key]
        for name, header in documented.get("headers", {}).items():
            if "const" in header["schema"]:
                assert answer.headers.get(name.lower()) == header["schema"]["const"], name
            if name == "Location":
                assert answer.headers.get("location"), route_key
        if "content" in documented:
            media = answer.headers["content-type"].split(";")[0]
            assert media in documented["content"], (route_key, media)
            schema = self._schema(documented["content"][media]["schema"])
            assert _failures(schema, answer.json) == [], route_key
        else:
            assert answer.body == "", route_key
        self.seen.add((route_key, key))
        return answer


@pytest.fixture
def check() -> Contract:
    return Contract()


def test_every_route_answers_as_documented(vault: Vault, check: Contract) -> None:
    agent = vault.agent()
    user = vault.user("alice")
    started = check("POST", "/v1/sessions", {"user": user}, agent.start_session(user))
    assert started.status == 201
    session = f"/v1/sessions/{agent.session_id}"
    assert check("GET", session, None, agent.call("GET", session)).status == 200
    renew = {"ttl_seconds": 600}
    assert check("POST", f"{session}/renew", renew, agent.call("POST", f"{session}/renew", renew))

    ask = {"provider": "calendar", "scopes": ["calendar.read"]}
    needed = check("POST", f"{session}/tokens", ask, agent.call("POST", f"{session}/tokens", ask))
    assert needed.code == "consent_required"

    flow = check(
        "POST",
        f"{session}/authorizations",
        ask,
        agent.call("POST", f"{session}/authorizations", ask),
    )
    assert flow.status == 201
    query = vault.consent_at_provider(flow.json["authorization_url"], "alice")
    back = check("GET", f"/v1/oauth/callback?{query}", None, vault.callback(query))
    assert back.status == 302
    complete = f"/v1/flows/{flow.json['flow_id']}/complete"
    bound = check("POST", complete, {"user": user}, agent.complete(flow.json["flow_id"], user))
    assert bound.status == 200

    issued = check("POST", f"{session}/tokens", ask, agent.call("POST", f"{session}/tokens", ask))
    assert issued.status == 200
    revoke = {"provider": "calendar"}
    assert check("POST", "/v1/revocations", revoke, vault.admin(revoke)).json == {
        "revoked_grants": 1,
        "revoked_tokens": 1,
    }
    ended = check("DELETE", session, None, agent.call("DELETE", session))
    assert ended.json["status"] == "ended"
    assert check("GET", session, None, agent.call("GET", session)).json["status"] == "ended"
    refused = check("GET", "/v1/oauth/callback?state=used", None, vault.callback("state=used"))
    assert refused.code == "invalid_state"

    succeeded = {route_key for route_key, status in check.seen if status[0] in "23"}
    callbacks = {r.route_key for r in ROUTES if contract.operation_for(r) is contract.CALLBACK}
    assert set(contract.OPERATIONS) <= succeeded, "an operation was not driven to success"
    assert callbacks & succeeded, "the callback was not driven to success"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/sessions", {"user": {}}),
        ("POST", "/v1/sessions", {"user": {"id_token": "x" * 20, "user_id": "alice"}}),
        ("POST", "/v1/sessions", {"user": {"user_id": "alice"}, "extra": 1}),
        ("POST", "/v1/sessions", {"user": {"user_id": "alice"}, "ttl_seconds": "600"}),
        ("POST", "/v1/revocations", {}),
        ("POST", "/v1/revocations", {"agent": None}),
    ],
)
def test_bodies_the_vault_refuses_the_document_refuses(
    vault: Vault, check: Contract, method: str, path: str, body: dict[str, Any]
) -> None:
    agent = vault.agent(role="mail-agent-role")  # may assert a user id
    admin = path == "/v1/revocations"
    answer = vault.admin(body) if admin else agent.call(method, path, body)
    check(method, path, body, answer)
    assert (answer.status, answer.code) == (400, "invalid_request")
    assert answer.json["errors"], answer.body
    assert _failures(check.body_schema(method, path), body) != [], body
