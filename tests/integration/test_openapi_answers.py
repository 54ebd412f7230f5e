"""The document tells the truth: every route, driven through the real handlers (moto + the real
oidc-provider), answers with exactly what docs/openapi.json says for that status and content type
(the answer schemas refuse unknown members), every body it accepts is valid there, and bodies
it refuses with 400 are refused by the document too.

Every request and answer of a test is checked as it happens (`tests.support.apigw.OBSERVERS`),
whichever helper sent it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.support import apigw
from tests.support.apigw import HttpAnswer
from tests.support.aws import ACCOUNT
from tests.support.harness import Vault
from vault import contract, openapi
from vault.routes import ROUTES, match_route


def _failures(schema: Draft202012Validator, instance: Any) -> list[str]:
    """Where and why an instance fails its schema, without its values (tokens stay out)."""
    return [f"{e.json_path}: {e.validator}" for e in schema.iter_errors(instance)]


class Contract:
    """Checks requests and answers against the generated document; remembers what it saw."""

    def __init__(self) -> None:
        self.document = json.loads(openapi.render())
        self.seen: set[tuple[str, str]] = set()

    def _schema(self, ref: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator({**ref, "components": self.document["components"]})

    def _operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        found = match_route(method, path)
        assert found is not None, f"{method} {path} is no route"
        route = found[0]
        # an `ANY` route (the proxy) is documented once per method
        return route.route_key, self.document["paths"][route.path][method.lower()]

    def body_schema(self, method: str, path: str) -> Draft202012Validator:
        _, operation = self._operation(method, path)
        return self._schema(operation["requestBody"]["content"]["application/json"]["schema"])

    def __call__(self, event: dict[str, Any], answer: HttpAnswer) -> None:
        method, path = event["requestContext"]["http"]["method"], event["rawPath"]
        if match_route(method, path) is None:
            return  # API Gateway would answer itself; not a route of the document
        route_key, operation = self._operation(method, path)
        raw = event.get("body")
        answers = operation["responses"]
        if answer.headers.get("x-agent-vault-proxy") == "upstream":
            # the provider's own answer, whatever its status and body
            header = answers["default"]["headers"]["X-Agent-Vault-Proxy"]["schema"]["const"]
            assert answer.headers["x-agent-vault-proxy"] == header, route_key
            self.seen.add((route_key, str(answer.status)))
            return
        if raw and answer.status < 400:
            body = json.loads(base64.b64decode(raw) if event.get("isBase64Encoded") else raw)
            assert _failures(self.body_schema(method, path), body) == [], route_key
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


@pytest.fixture
def check() -> Iterator[Contract]:
    contract_check = Contract()
    apigw.OBSERVERS.append(contract_check)
    try:
        yield contract_check
    finally:
        apigw.OBSERVERS.remove(contract_check)


def grant_flow(vault: Vault) -> str:
    """The id of the (bound) flow of the one grant."""
    (flow,) = [i for i in vault.items() if i["type"]["S"] == "flow"]
    return str(flow["flow_id"]["S"])


def test_every_route_answers_as_documented(vault: Vault, check: Contract) -> None:
    agent = vault.agent()
    assert agent.start_session(vault.user("alice")).status == 201
    session = f"/v1/sessions/{agent.session_id}"
    assert agent.call("GET", session).status == 200
    assert agent.call("POST", f"{session}/renew", {"ttl_seconds": 600}).status == 200
    assert agent.token("calendar", ["calendar.read"]).code == "consent_required"
    # authorize, consent at the provider, the callback's redirect, the binding
    assert vault.connect(agent, scopes=("calendar.read",)).status == 200
    assert agent.token("calendar", ["calendar.read"]).status == 200
    # the admin read API, each route
    for listing in ("sessions", "grants", "flows"):
        assert vault.admin_get(f"/v1/admin/{listing}", {"limit": "1"}).status == 200
    (grant,) = vault.admin_get("/v1/admin/grants").json["items"]
    assert vault.admin_get(f"/v1/admin/grants/{grant['grant_id']}").status == 200
    assert vault.admin_get(f"{session.replace('/v1/', '/v1/admin/')}").status == 200
    flow = f"/v1/admin/flows/{grant_flow(vault)}"
    assert vault.admin_get(flow).status == 200
    assert vault.admin_get("/v1/admin/grants", {"limit": "0"}).code == "invalid_filter"
    proxied = vault.agent("proxy-agent-role")
    assert proxied.start_session(vault.user("alice")).status == 201
    assert proxied.proxy("GET", "calendar/events").code == "consent_required"
    assert vault.connect(proxied, scopes=("calendar.read",)).status == 200
    assert proxied.proxy("GET", "calendar/events").status == 200
    # delegation: the agent offers the proxy agent a child, which claims it; both views
    offered = agent.call(
        "POST",
        f"{session}/delegations",
        {"agent": "proxy-agent", "providers": {"calendar": ["calendar.read"]}},
    )
    assert offered.status == 201, offered.body
    child = vault.agent("proxy-agent-role")
    claim = f"/v1/delegations/{offered.json['delegation_id']}/claim"
    claimed = child.call("POST", claim, proof=child.proof("POST", claim, session_id=None))
    assert claimed.status == 201, claimed.body
    child.session_id = claimed.json["session_id"]
    assert child.call("GET", f"/v1/sessions/{child.session_id}").status == 200
    assert agent.call("GET", session).json["children"][0]["session_id"] == child.session_id
    revoked = vault.admin({"provider": "calendar"}).json
    assert revoked == {
        "revoked_grants": 2,
        "revoked_tokens": 2,
        "revoked_flows": 0,
        "revoked_machine_tokens": 0,
    }
    # connections: the application lists its user's grants to its agent and revokes one
    assert vault.connect(agent, scopes=("calendar.read",)).status == 200
    user_token = {"X-Agent-Vault-User-Token": vault.id_tokens["alice"]}
    listed = agent.call("GET", "/v1/connections", proof=False, headers=user_token)
    (connection,) = listed.json["items"]
    gone = f"/v1/connections/{connection['grant_id']}"
    assert agent.call("DELETE", gone, proof=False, headers=user_token).status == 200
    assert agent.call("DELETE", gone, proof=False, headers=user_token).code == "grant_not_found"
    assert agent.call("DELETE", session).json["status"] == "ended"
    assert agent.call("GET", session).json["status"] == "ended"
    assert vault.callback("state=used").code == "invalid_state"
    _api_key_routes(vault)

    succeeded = {route_key for route_key, status in check.seen if status[0] in "23"}
    callbacks = {r.route_key for r in ROUTES if contract.operation_for(r) is contract.CALLBACK}
    assert set(contract.OPERATIONS) <= succeeded, "an operation was not driven to success"
    assert callbacks & succeeded, "the callback was not driven to success"
    assert {status for _, status in check.seen} >= {"4XX"}


def _api_key_routes(vault: Vault) -> None:
    """Flow 12: an admin sets and deletes an API key; an agent with `returned` delivery gets it."""
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    data["providers"]["keyed"] = {
        "api_base_urls": [vault.server.calendar_api_base],
        "api_key": {"header": "X-Api-Key"},
    }
    data["agents"]["key-returned"] = {
        "role_name": "key-returned-role",
        "providers": {"keyed": {"delivery": "returned"}},
    }
    vault.redeploy(data)
    admin = f"arn:aws:sts::{ACCOUNT}:assumed-role/vault-admin/ops"
    path = "/v1/admin/api-keys/keyed"
    key = json.dumps({"key": "ak_openapi_" + "k" * 24})
    assert apigw.invoke(apigw.build_event("PUT", path, body=key, principal_arn=admin)).status == 200
    agent = vault.agent("key-returned-role")
    assert agent.start_session(vault.user("alice")).status == 201
    handed = agent.call("POST", f"/v1/sessions/{agent.session_id}/api-key", {"provider": "keyed"})
    assert handed.status == 200, handed.body
    refused = apigw.invoke(apigw.build_event("PUT", path, body='{"key": ""}', principal_arn=admin))
    assert refused.code == "invalid_api_key"
    deleted = apigw.invoke(apigw.build_event("DELETE", path, principal_arn=admin))
    assert deleted.json == {"provider": "keyed", "deleted": True}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/sessions", {"user": {}}),
        ("/v1/sessions", {"user": {"id_token": "x" * 20, "user_id": "alice"}}),
        ("/v1/sessions", {"user": {"user_id": "alice"}, "extra": 1}),
        ("/v1/sessions", {"user": {"user_id": "alice"}, "ttl_seconds": "600"}),
        ("/v1/revocations", {}),
        ("/v1/revocations", {"agent": None}),
    ],
)
def test_bodies_the_vault_refuses_the_document_refuses(
    vault: Vault, check: Contract, path: str, body: dict[str, Any]
) -> None:
    agent = vault.agent(role="mail-agent-role")  # may assert a user id
    admin = path == "/v1/revocations"
    answer = vault.admin(body) if admin else agent.call("POST", path, body)
    assert (answer.status, answer.code) == (400, "invalid_request")
    assert answer.json["errors"], answer.body
    assert _failures(check.body_schema("POST", path), body) != [], body
