"""The vault's flows end to end: handlers + moto + the real oidc-provider."""

from __future__ import annotations

from tests.support.harness import Vault


def test_session_consent_binding_and_token(vault: Vault) -> None:
    agent = vault.agent()
    started = agent.start_session(vault.user("alice"))
    assert started.status == 201, started.body
    assert started.json["user"]["sub"] == "alice"
    assert started.json["task_id"] == agent.task_id

    missing = agent.token("calendar", ["calendar.read"])
    assert missing.status == 403 and missing.code == "consent_required"
    assert missing.json["missing_scopes"] == ["calendar.read"]

    bound = vault.connect(agent, scopes=("calendar.read", "calendar.write"))
    assert bound.status == 200, bound.body
    assert set(bound.json["scopes"]) >= {"calendar.read", "calendar.write"}

    issued = agent.token("calendar", ["calendar.read"])
    assert issued.status == 200, issued.body
    assert issued.json["scope"] == "calendar.read"
    token = issued.json["access_token"]
    status, events = vault.server.calendar(token)
    assert status == 200, events
    assert vault.server.introspect(token)["scope"] == "calendar.read"
