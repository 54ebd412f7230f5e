"""Issue #15 item 6: the saved Logs Insights queries are in the template, over every vault
function's log group, and every audit field each one reads is a field of the real audit events
it is meant to find (recorded here from the vault's real code paths)."""

from __future__ import annotations

import re
from typing import Any

from stacks.constructs.audit_queries import AUDIT_QUERIES
from tests.infra.conftest import Synthesized, by_type
from tests.security.helpers import AuditLog
from tests.support.harness import Vault, revoke_refresh_at_provider

FIELD = re.compile(r"\baudit\.[a-z_]+(?:\.[a-z_]+)*")
EQUALS = re.compile(r'\baudit\.(action|outcome) = "([a-z._]+)"')
IN = re.compile(r"\baudit\.(action|outcome) in \[([^\]]+)\]")


def _queries(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        q["Properties"]["Name"].split("/", 1)[1]: q["Properties"]
        for q in by_type(synthesized.templates["Vault"], "AWS::Logs::QueryDefinition").values()
    }


def test_the_template_saves_each_query_over_every_functions_log_group(
    synthesized: Synthesized,
) -> None:
    queries = _queries(synthesized)
    assert (
        set(queries)
        == set(AUDIT_QUERIES)
        >= {
            "tokens-for-user",
            "refusals-by-reason",
            "refresh-failures-by-provider",
        }
    )
    groups = {
        k
        for k in by_type(synthesized.templates["Vault"], "AWS::Logs::LogGroup")
        if k.startswith(("AgentApi", "ProxyApi", "Callback", "AdminApi", "Reaper"))
    }
    assert len(groups) == 5
    for name, props in queries.items():
        assert props["Name"] == f"agent-vault-dev/{name}"
        assert {g["Ref"] for g in props["LogGroupNames"]} == groups, name
        assert FIELD.search(props["QueryString"]), name


def _path(event: dict[str, Any], field: str) -> bool:
    node: Any = event
    for part in field.split(".")[1:]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _constraints(query: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for member, value in EQUALS.findall(query):
        found.setdefault(member, set()).add(value)
    for member, values in IN.findall(query):
        found.setdefault(member, set()).update(v.strip().strip('"') for v in values.split(","))
    return found


def _story(vault: Vault) -> None:
    """Tokens handed out, a refusal, a refresh that fails, a proxied call, a revocation."""
    agent = vault.agent()
    assert agent.start_session(vault.user("alice")).status == 201
    assert vault.connect(agent, scopes=("calendar.read", "calendar.write")).status == 200
    assert agent.token("calendar", ["calendar.read"]).status == 200
    assert agent.token("calendar", ["mail.read"]).status == 403  # not the agent's scope
    revoke_refresh_at_provider(vault)
    # a token for other scopes needs a refresh: the provider refuses it, the grant breaks
    assert agent.token("calendar", ["calendar.write"]).code == "consent_required"
    proxied = vault.agent("proxy-agent-role")
    assert proxied.start_session(vault.user("bob")).status == 201
    assert vault.connect(proxied, username="bob").status == 200
    assert proxied.proxy("GET", "calendar/events").status == 200
    assert vault.admin({"user": {"iss": vault.server.issuer, "sub": "bob"}}).status == 200


def test_each_querys_fields_are_in_the_real_audit_events_it_finds(
    synthesized: Synthesized, vault: Vault, audit_events: AuditLog
) -> None:
    _story(vault)
    events = audit_events.events
    for name, props in _queries(synthesized).items():
        query = props["QueryString"]
        constraints = _constraints(query)
        assert "action" in constraints or "outcome" in constraints, name
        candidates = [
            e
            for e in events
            if all(e.get(member) in values for member, values in constraints.items())
        ]
        assert candidates, f"{name}: no real audit event is one it finds ({constraints})"
        fields = set(FIELD.findall(query))
        assert any(all(_path(e, f) for f in fields) for e in candidates), (
            f"{name}: no event it finds has all of {sorted(fields)}; "
            f"found {[sorted(e) for e in candidates[:3]]}"
        )
