"""SECURITY.md row 49 and issue #10 item 3: each function's role allows what its code calls
(the egress proxy's included, issue #12).

The handlers' real code paths run over moto and the real provider, each request through the
handler API Gateway would route it to (the reaper as EventBridge would call it); a botocore hook
records every DynamoDB, KMS and Secrets Manager call with what IAM conditions on it (the item's
partition-key prefix, the index, the encryption context's purpose and keys). The synthesized
role policies (dev and prod) must allow exactly that: every call, and nothing no call needs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stacks.constructs.vault_key import TABLE_ENCRYPTION_ACTIONS, TOKEN_CONTEXT_KEYS
from tests.infra.cfn import as_list
from tests.infra.conftest import Synthesized, by_type
from tests.support import apigw
from tests.support.aws import ACCOUNT
from tests.support.harness import (
    API_KEY_PREFIX,
    REPLAY_TABLE,
    SECRET_PREFIX,
    TABLE,
    Vault,
    reap,
    scheduled_sweep,
    task_stopped,
)
from tests.support.upstream import Reply, Seen, Upstream
from vault import machine
from vault.config import VaultConfig
from vault.handlers import (
    admin_api,
    admin_read,
    agent_api,
    callback,
    connections_api,
    proxy_api,
    reaper,
)
from vault.runtime import build_services

MODULES = (agent_api, proxy_api, callback, admin_api, admin_read, reaper)
"""The handler modules; each takes its container's services from `services()`."""

Access = tuple[str, str, str]
"""(action, resource, condition): e.g. ("dynamodb:PutItem", "vault", "FLOW#"),
("dynamodb:Query", "vault/index/gsi1", ""), ("kms:Decrypt", "token", "session"),
("secretsmanager:GetSecretValue", "secrets", "")."""

FUNCTIONS = {
    "vault.handlers.agent_api.handler": "AgentApi",
    "vault.handlers.proxy_api.handler": "ProxyApi",
    "vault.handlers.callback.handler": "Callback",
    "vault.handlers.admin_api.handler": "AdminApi",
}
_TRANSACT = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _prefix(pk: str) -> str:
    return pk.split("#", 1)[0] + "#"


def _context_kind(context: dict[str, str]) -> str:
    keys = set(context)
    for kind, expected in TOKEN_CONTEXT_KEYS.items():
        if keys == set(expected):
            return kind
    return ",".join(sorted(keys))


class Recorder:
    """Records AWS calls (a botocore `before-parameter-build` hook) and hands them to the
    function whose request was being served."""

    def __init__(self) -> None:
        self.pending: list[Access] = []
        self.used: dict[str, set[Access]] = defaultdict(set)

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service, op = model.service_model.service_name, model.name
        if service == "dynamodb":
            self._dynamodb(op, params)
        elif service == "kms":
            context = params.get("EncryptionContext", {})
            kind = _context_kind(context) if context.get("purpose") == "token" else ""
            self.pending.append((f"kms:{op}", context.get("purpose", "?"), kind))
        elif service == "secretsmanager":
            name = str(params.get("SecretId") or params.get("Name") or "")
            if not name.startswith(API_KEY_PREFIX):
                self.pending.append((f"secretsmanager:{op}", "secrets", ""))
                return
            # an API key (flow 12): Secrets Manager uses the vault key on the caller's behalf
            self.pending.append((f"secretsmanager:{op}", "apikeys", ""))
            kms_use = {"GetSecretValue": "kms:Decrypt", "CreateSecret": "kms:GenerateDataKey"}
            kms_use["PutSecretValue"] = "kms:GenerateDataKey"
            if op in kms_use:
                self.pending.append((kms_use[op], "apikeys", ""))
        else:
            self.pending.append((f"{service}:{op}", "?", ""))

    def _dynamodb(self, op: str, params: dict[str, Any]) -> None:
        if op == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, spec),) = item.items()
                key = spec.get("Key") or spec["Item"]
                self._item(_TRANSACT[kind], spec["TableName"], key["pk"]["S"])
        elif op == "Query":
            if "IndexName" in params:
                self.pending.append(("dynamodb:Query", f"vault/index/{params['IndexName']}", ""))
            else:
                self._item(
                    "Query", params["TableName"], params["ExpressionAttributeValues"][":pk"]["S"]
                )
        elif op == "TransactGetItems":  # IAM authorizes each item's GetItem
            for item in params["TransactItems"]:
                self._item("GetItem", item["Get"]["TableName"], item["Get"]["Key"]["pk"]["S"])
        elif op == "BatchGetItem":  # IAM authorizes each key (dynamodb:LeadingKeys)
            for table, request in params["RequestItems"].items():
                for key in request["Keys"]:
                    self._item(op, table, key["pk"]["S"])
        elif op in {"GetItem", "PutItem", "UpdateItem", "DeleteItem"}:
            key = params.get("Key") or params.get("Item")
            assert key, (op, sorted(params))
            self._item(op, params["TableName"], key["pk"]["S"])
        else:
            self.pending.append((f"dynamodb:{op}", "?", ""))

    def _item(self, op: str, table: str, pk: str) -> None:
        if table == REPLAY_TABLE:
            self.pending.append((f"dynamodb:{op}", "replay", ""))
        else:
            assert table == TABLE, table
            self.pending.append((f"dynamodb:{op}", "vault", _prefix(pk)))

    def served(self, function: str) -> None:
        self.used[function].update(self.pending)
        self.pending.clear()

    def observe(self, event: dict[str, Any], _: Any) -> None:
        found = apigw.match_route(event["requestContext"]["http"]["method"], event["rawPath"])
        self.served(FUNCTIONS[found[0].handler if found else "vault.handlers.agent_api.handler"])

    @contextmanager
    def setup(self) -> Iterator[None]:
        """Test-side calls (seeding data) belong to no function."""
        yield
        self.pending.clear()


def _connect(vault: Vault, role: str = "calendar-agent-role", user: str = "alice") -> Any:
    agent = vault.agent(role)
    assert agent.start_session(vault.user(user)).status == 201
    assert vault.connect(agent, username=user).status == 200
    assert agent.token("calendar", ["calendar.read"]).status == 200
    return agent


def _add_machine_provider(vault: Vault, data: dict[str, Any], stand_in: str) -> None:
    """A machine (client_credentials) provider, its secret, a bearer and a proxy agent there."""
    server = vault.server
    vault.session.client("secretsmanager").create_secret(
        Name=SECRET_PREFIX + "machine", SecretString=server.client_secret
    )
    data["providers"]["machine"] = {
        "discovery_url": server.discovery_url,
        "client_id": server.m2m_client_id,
        "grant_type": "client_credentials",
        "scopes": ["calendar.read", "calendar.write"],
        "resource": server.resource,
        "api_base_urls": [server.calendar_api_base, stand_in],
    }
    data["agents"]["m2m-agent"] = {
        "role_name": "m2m-agent-role",
        "providers": {
            "machine": {"scopes": ["calendar.read", "calendar.write"], "delivery": "bearer"}
        },
    }
    data["agents"]["m2m-proxy"] = {
        "role_name": "m2m-proxy-role",
        "providers": {"machine": ["calendar.read"]},
    }


def _add_api_key_providers(vault: Vault, data: dict[str, Any]) -> None:
    """An API-key provider (flow 12) at the keyed API, a proxy and a `returned` agent there."""
    data["providers"]["keyed"] = {
        "api_base_urls": [vault.server.calendar_api_base],
        "api_key": {"header": "X-Api-Key"},
    }
    data["agents"]["key-agent"] = {"role_name": "key-agent-role", "providers": {"keyed": {}}}
    data["agents"]["key-returned"] = {
        "role_name": "key-returned-role",
        "providers": {"keyed": {"delivery": "returned"}},
    }


def _api_key_code_paths(vault: Vault) -> None:
    """API keys (flow 12): set (created, then replaced), used by the proxy and handed out
    (`returned`), deleted."""
    admin = f"arn:aws:sts::{ACCOUNT}:assumed-role/vault-admin/ops"
    path = "/v1/admin/api-keys/keyed"
    vault.server.set_api_keys({"second": "second-key-0123456789"})
    for key in ("first-key-0123456789", "second-key-0123456789"):
        put = apigw.build_event("PUT", path, body=json.dumps({"key": key}), principal_arn=admin)
        assert apigw.invoke(put).status == 200
    proxied = vault.agent("key-agent-role")
    assert proxied.start_session(vault.user("alice")).status == 201
    assert proxied.proxy("GET", "keyed/events", "keyed").status == 200
    returned = vault.agent("key-returned-role")
    assert returned.start_session(vault.user("alice")).status == 201
    handed = returned.call(
        "POST", f"/v1/sessions/{returned.session_id}/api-key", {"provider": "keyed"}
    )
    assert handed.status == 200
    assert apigw.invoke(apigw.build_event("DELETE", path, principal_arn=admin)).status == 200


def _run_every_code_path(
    vault: Vault, recorder: Recorder, stand_in: str, machine_config: VaultConfig
) -> None:
    """Every route and branch that reaches AWS, once."""
    _api_key_code_paths(vault)
    # Machine tokens (flow 12): fetched, then cached, by the agent API and the proxy (a 401 to a
    # POST forgets the refused token); an admin revocation by agent drops them.
    machine_agent = vault.agent("m2m-agent-role")
    assert machine_agent.start_session(vault.user("alice")).status == 201
    for _ in range(2):
        assert machine_agent.token("machine", ["calendar.read"]).status == 200
    with recorder.setup():  # a token another container fetched: the agent API opens it
        other = build_services(
            vault.services.settings,
            config=machine_config,
            session=vault.session,
            clock=vault.clock,
        )
        machine.obtain(other, "m2m-agent", "machine", ("calendar.read", "calendar.write"))
        machine.obtain(other, "m2m-proxy", "machine", ("calendar.read",))
    wide = machine_agent.token("machine", ["calendar.read", "calendar.write"])
    assert wide.status == 200
    machine_proxied = vault.agent("m2m-proxy-role")
    assert machine_proxied.start_session(vault.user("alice")).status == 201
    for _ in range(2):
        assert machine_proxied.proxy("GET", "calendar/events", "machine").status == 200
    refused = machine_proxied.proxy(
        "POST",
        "calendar/events",
        "machine",
        body="{}",
        headers={"X-Agent-Vault-Api-Base": stand_in},
    )
    assert refused.status == 401
    assert machine_proxied.proxy("GET", "calendar/events", "machine").status == 200  # fetched
    assert vault.admin({"agent": "m2m-agent"}).json["revoked_machine_tokens"] == 2

    # Proxy: the first call mints the session's token (lease, refresh, the token stored in the
    # refresh's transaction), the second is warm; a provider's 401 to a POST (`stand_in`, the
    # provider's second API base URL) forgets the refused token.
    proxied = vault.agent("proxy-agent-role")
    assert proxied.start_session(vault.user("alice")).status == 201
    assert vault.connect(proxied, scopes=("calendar.read", "calendar.write")).status == 200
    for _ in range(2):
        assert proxied.proxy("GET", "calendar/events").status == 200
    refused = proxied.proxy(
        "POST", "calendar/events", body="{}", headers={"X-Agent-Vault-Api-Base": stand_in}
    )
    assert refused.status == 401 and refused.headers["x-agent-vault-proxy"] == "upstream"

    # Agent API and callback: a session, consent, binding, a minted then a cached token.
    agent = _connect(vault)
    assert agent.token("calendar", ["calendar.read"]).status == 200  # cached: opens it
    assert (
        agent.call(
            "POST", f"/v1/sessions/{agent.session_id}/renew", {"user": vault.user("alice")}
        ).status
        == 200
    )
    # Callback branches: refused at the provider, no code (the state dropped).
    refused = agent.authorize("calendar", ["calendar.write"])
    query = vault.consent_at_provider(refused.json["authorization_url"], "alice", "deny")
    assert vault.callback(query).status == 302
    dropped = agent.authorize("calendar", ["calendar.write"])
    state = dict(
        p.split("=", 1) for p in dropped.json["authorization_url"].split("?", 1)[1].split("&")
    )["state"]
    assert vault.callback(f"state={state}").status >= 400
    # Binding by the wrong user: the flow is rejected and its tokens revoked.
    other = vault.agent("calendar-agent-role")
    assert other.start_session(vault.user("alice")).status == 201
    assert vault.connect(other, completing_user="bob").status == 403
    # Delegation: the agent offers the proxy agent a child session, which claims it and calls
    # through the proxy (its ancestors read at each request) and reads its view (ancestors,
    # children); the parent's end below ends the child too.
    offered = agent.call(
        "POST",
        f"/v1/sessions/{agent.session_id}/delegations",
        {"agent": "proxy-agent", "providers": {"calendar": ["calendar.read"]}},
    )
    assert offered.status == 201, offered.body
    child = vault.agent("proxy-agent-role")
    claim = f"/v1/delegations/{offered.json['delegation_id']}/claim"
    claimed = child.call("POST", claim, proof=child.proof("POST", claim, session_id=None))
    assert claimed.status == 201, claimed.body
    child.session_id = claimed.json["session_id"]
    assert child.proxy("GET", "calendar/events").status == 200
    assert agent.call("GET", f"/v1/sessions/{agent.session_id}").status == 200
    # The agent ends its session: tokens revoked, the grant marked broken (Google-like); its
    # child ends with it.
    assert agent.end().status in (200, 204)

    # Admin: by grant id, by user, by agent; one upstream revocation failing.
    for body in (
        {"grant_id": "grt_" + "0" * 26},
        {"user": {"iss": vault.server.issuer, "sub": "alice"}},
    ):
        assert vault.admin(body).status == 200
    _connect(vault)
    vault.server.set_faults(revocation_endpoint={"status": 500, "remaining": 2})
    assert vault.admin({"agent": "calendar-agent"}).status == 200  # both kept, marked pending
    vault.server.clear_faults()
    assert vault.admin({"agent": "calendar-agent"}).status == 200  # now revoked and deleted

    # The admin read API: every listing's access pattern, and each view by id.
    read = _connect(vault)
    user = {"user_iss": vault.server.issuer, "user_sub": "alice"}
    for path, query in (
        ("/v1/admin/sessions", {}),
        ("/v1/admin/sessions", {"task": read.task_id}),
        ("/v1/admin/sessions", user),
        ("/v1/admin/grants", {}),
        ("/v1/admin/grants", user),
        ("/v1/admin/flows", {}),
        ("/v1/admin/flows", user),
        (f"/v1/admin/sessions/{read.session_id}", {}),
    ):
        assert vault.admin_get(path, query).status == 200, path
    (grant,) = vault.admin_get("/v1/admin/grants", user).json["items"]
    assert vault.admin_get(f"/v1/admin/grants/{grant['grant_id']}").status == 200
    flow = read.authorize("calendar", ["calendar.read"]).json["flow_id"]
    assert vault.admin_get(f"/v1/admin/flows/{flow}").code == "flow_not_found"  # not answered

    # Connections (flow 13): the application lists its user's grants to its agent (a Query of
    # the user's partition) and revokes one (upstream, its tokens, the grant deleted).
    app = vault.agent("calendar-agent-role")
    user_token = {"X-Agent-Vault-User-Token": vault.id_tokens["alice"]}
    listed = app.call("GET", "/v1/connections", proof=False, headers=user_token)
    (connection,) = listed.json["items"]
    path = f"/v1/connections/{connection['grant_id']}"
    assert app.call("DELETE", path, proof=False, headers=user_token).json["status"] == "revoked"

    # Consents nobody binds: one closed by a revocation of its user, one by the sweep once it
    # expired (the reaper's scheduled event).
    for closer in ("admin", "sweep"):
        unbound = vault.agent("calendar-agent-role")
        assert unbound.start_session(vault.user("alice")).status == 201
        started = unbound.authorize("calendar", ["calendar.read"])
        query = vault.consent_at_provider(started.json["authorization_url"], "alice")
        assert vault.callback(query).status == 302
        if closer == "admin":
            answer = vault.admin({"user": {"iss": vault.server.issuer, "sub": "alice"}})
            assert answer.json["revoked_flows"] == 1
        else:
            vault.clock.advance(vault.services.config.flow_ttl_seconds + 1)
            assert scheduled_sweep()["revoked_flows"] == 1
            recorder.served("AdminApi")

    # Reaper: a stopped task's session with a token; the same event again (idempotent by
    # construction: nothing left to end); an unreadable session (the reaper fails). The
    # stopped task's credentials then start no session.
    reaped = _connect(vault)
    stopped = task_stopped(reaped.task_id)
    for _ in range(2):
        assert reap(stopped)["status"] == "reaped"
        recorder.served("Reaper")
    assert (
        vault.agent("calendar-agent-role", task_id=reaped.task_id)
        .start_session(vault.user("alice"))
        .status
        == 403
    )
    with recorder.setup():
        vault.session.client("dynamodb").put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": "SESSION#ses_broken"},
                "sk": {"S": "SESSION"},
                "gsi1pk": {"S": "TASK#broken-task"},
                "gsi1sk": {"S": "SESSION#ses_broken"},
            },
        )
    with pytest.raises(Exception):  # noqa: B017 (any: the record, not the error, matters)
        reap(task_stopped("broken-task"))
    recorder.served("Reaper")

    # The sweep also ends the sessions that expired unended (their tokens revoked, their
    # children with them, their task entries out of its index) and indexes a renewed one again.
    # Last: the hour it waits outlives the users' identity tokens.
    _connect(vault)  # expires
    renewing = _connect(vault, user="bob")
    vault.clock.advance(vault.services.config.session_ttl_seconds - 10)
    renewed = renewing.call("POST", f"/v1/sessions/{renewing.session_id}/renew", {})
    assert renewed.status == 200, renewed.body
    recorder.served("AgentApi")
    vault.clock.advance(11)
    assert scheduled_sweep()["expired_sessions"] >= 1
    recorder.served("AdminApi")


def _unauthorized_posts(seen: Seen) -> Reply:
    return Reply(401 if seen.method == "POST" else 200)


@pytest.fixture(scope="module")
def used() -> dict[str, set[Access]]:
    return {}


@pytest.fixture
def recorded(
    vault: Vault, used: dict[str, set[Access]], monkeypatch: pytest.MonkeyPatch
) -> dict[str, set[Access]]:
    if not used:
        recorder = Recorder()
        hook = "before-parameter-build.*.*"
        # Clients copy their session's hooks when made: register, then build the services.
        vault.session.events.register(hook, recorder)
        apigw.OBSERVERS.append(recorder.observe)
        stand_in = Upstream(_unauthorized_posts)
        try:
            stand_in.__enter__()
            data = vault.services.config.model_dump(mode="json", exclude_none=True)
            data["providers"]["calendar"]["api_base_urls"].append(stand_in.url)
            with recorder.setup():  # seeding its secret: no function's call
                _add_machine_provider(vault, data, stand_in.url)
                _add_api_key_providers(vault, data)
            config = VaultConfig.model_validate(data)
            # One container per function, as in Lambda: its own data-key and secret caches (a
            # key one function made is not opened from another's cache).
            for module in MODULES:
                svc = build_services(
                    vault.services.settings, config=config, session=vault.session, clock=vault.clock
                )
                monkeypatch.setattr(module, "services", lambda svc=svc: svc)
            # the read API's router runs in the admin function's container
            monkeypatch.setattr(admin_read, "services", admin_api.services)
            # the connections router runs in the agent function's container
            monkeypatch.setattr(connections_api, "services", agent_api.services)
            _run_every_code_path(vault, recorder, stand_in.url, config)
        finally:
            stand_in.__exit__(None, None, None)
            apigw.OBSERVERS.remove(recorder.observe)
            vault.session.events.unregister(hook, recorder)
        used.update(recorder.used)
    return used


def _role_of(template: dict[str, Any], function: str) -> str:
    (role,) = [k for k in by_type(template, "AWS::IAM::Role") if k.startswith(f"{function}Role")]
    return role


def allowed(template: dict[str, Any], function: str) -> tuple[set[Access], set[str]]:
    """What the function's role allows, in the recorder's terms; and its table-encryption
    (`kms:ViaService` dynamodb) actions."""
    role = _role_of(template, function)
    resources = template["Resources"]
    table = {k for k, v in by_type(template, "AWS::DynamoDB::Table").items() if "Vault" in k}
    (vault_table,) = table
    access: set[Access] = set()
    via_dynamodb: set[str] = set()
    for policy in by_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow"
            actions = as_list(st["Action"])
            condition = st.get("Condition", {})
            text = json.dumps(st["Resource"])
            for action in actions:
                if not action.startswith(("dynamodb:", "kms:", "secretsmanager:")):
                    continue  # logs, traces, the reaper's dead letters: not the code's calls
                if action.startswith("dynamodb:"):
                    if "/index/" in text:
                        for resource in as_list(st["Resource"]):
                            index = json.dumps(resource).rsplit("/index/", 1)[1].split('"')[0]
                            access.add((action, f"vault/index/{index}", ""))
                    elif vault_table in text:
                        # no LeadingKeys condition: every item ("" covers any prefix)
                        prefixes = condition.get("ForAllValues:StringLike", {}).get(
                            "dynamodb:LeadingKeys", ["*"]
                        )
                        if prefixes != ["*"]:
                            assert condition["Null"] == {"dynamodb:LeadingKeys": "false"}
                        for prefix in prefixes:
                            assert prefix.endswith("*")
                            access.add((action, "vault", prefix[:-1]))
                    else:
                        assert "Replay" in text, st
                        access.add((action, "replay", ""))
                elif action.startswith("kms:"):
                    equals = condition.get("StringEquals", {})
                    if "secretsmanager." in json.dumps(equals.get("kms:ViaService", "")):
                        secret = condition["StringLike"]["kms:EncryptionContext:SecretARN"]
                        assert "apikey/*" in json.dumps(secret), st
                        access.add((action, "apikeys", ""))
                        continue
                    if "kms:ViaService" in equals:
                        assert "dynamodb." in json.dumps(equals["kms:ViaService"])
                        via_dynamodb.add(action)
                        continue
                    kind = condition.get("ForAnyValue:StringEquals", {}).get(
                        "kms:EncryptionContextKeys", ""
                    )
                    if kind:
                        assert set(
                            condition["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]
                        ) == set(TOKEN_CONTEXT_KEYS[kind])
                    for purpose in as_list(equals["kms:EncryptionContext:purpose"]):
                        access.add((action, purpose, kind))
                else:  # CDK merges statements that differ only in their resources
                    for resource in as_list(st["Resource"]):
                        if "apikey/*" in json.dumps(resource):
                            access.add((action, "apikeys", ""))
                        else:
                            assert "ProviderSecrets" in json.dumps(resource), resource
                            access.add((action, "secrets", ""))
    assert resources[role]["Type"] == "AWS::IAM::Role"
    return access, via_dynamodb


def covers(rule: Access, call: Access) -> bool:
    """An allowed (action, resource, condition) covers a call; no condition (an item grant
    without a key prefix, a token grant without a context kind) covers every call."""
    return rule[:2] == call[:2] and rule[2] in ("", call[2])


@pytest.mark.parametrize("function", ["AgentApi", "ProxyApi", "Callback", "AdminApi", "Reaper"])
@pytest.mark.parametrize("fixture", ["synthesized", "synthesized_prod"])
def test_each_function_is_allowed_exactly_what_its_code_calls(
    recorded: dict[str, set[Access]], function: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    synthesized: Synthesized = request.getfixturevalue(fixture)
    rules, via_dynamodb = allowed(synthesized.templates["Vault"], function)
    calls = recorded[function]
    assert calls, function
    missing = {c for c in calls if not any(covers(r, c) for r in rules)}
    assert missing == set(), f"{function} calls what its role does not allow: {sorted(missing)}"
    extra = {r for r in rules if not any(covers(r, c) for c in calls)}
    assert extra == set(), f"{function}'s role allows what no call needs: {sorted(extra)}"
    assert via_dynamodb == set(TABLE_ENCRYPTION_ACTIONS)


@pytest.mark.parametrize("fixture", ["synthesized", "synthesized_prod"])
def test_row_49_the_callback_cannot_read_grants_or_tokens_nor_open_tokens(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    synthesized: Synthesized = request.getfixturevalue(fixture)
    rules, _ = allowed(synthesized.templates["Vault"], "Callback")
    items = {(action, prefix) for action, resource, prefix in rules if resource == "vault"}
    assert items == {
        ("dynamodb:UpdateItem", "STATE#"),
        ("dynamodb:DeleteItem", "STATE#"),
        ("dynamodb:PutItem", "FLOW#"),
    }
    assert not {r for r in rules if r[1].startswith("vault/index/")}
    assert not {r for r in rules if r[0] == "kms:Decrypt" and r[1] == "token"}
    assert {r for r in rules if r[0].startswith("kms:")} == {
        ("kms:Decrypt", "verifier", ""),
        ("kms:GenerateDataKey", "token", "grant"),
    }
