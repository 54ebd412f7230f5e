"""SECURITY.md row 51: identities that cannot be impersonated.

Agents and admins are IAM roles. A role of the same name in another account, or a role deleted
and re-created under the same name (another unique id), is not the agent or the admin.
"""

from __future__ import annotations

import json
from typing import Any

from tests.security.helpers import agent_with_session, assert_problem, unchanged
from tests.support.agent import TestAgent
from tests.support.apigw import build_event, invoke
from tests.support.harness import Vault

OTHER_ACCOUNT = "210987654321"
ROLE_ID = "AROATESTROLEID"
"""The unique id tests/support/apigw.py gives every role session (`userId`)."""


def reconfigure(vault: Vault, **agent_changes: Any) -> None:
    """The vault's config with the calendar agent's role entry changed."""
    data = vault.services.config.model_dump(mode="json", exclude_none=True)
    data["agents"]["calendar-agent"].update(agent_changes)
    vault.redeploy(data)


def test_row_51_the_agents_role_name_in_another_account_is_not_the_agent(vault: Vault) -> None:
    impostor = TestAgent("calendar-agent-role", "task-1", vault.clock, account=OTHER_ACCOUNT)
    with unchanged(vault):
        assert_problem(impostor.start_session(vault.user("alice")), 403, "unknown_agent")
    # The same role in the vault's own account is the agent.
    agent_with_session(vault)


def test_row_51_an_admin_roles_name_in_another_account_is_not_an_admin(vault: Vault) -> None:
    body = '{"agent": "calendar-agent"}'
    foreign = invoke(
        build_event(
            "POST",
            "/v1/revocations",
            body=body,
            principal_arn=f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/vault-admin/ops",
        )
    )
    assert_problem(foreign, 403, "forbidden")
    own = vault.admin({"agent": "calendar-agent"})
    assert own.status == 200, own.body


def test_row_51_a_role_pinned_by_arn_is_matched_in_its_account_only(vault: Vault) -> None:
    reconfigure(
        vault,
        role_name=None,
        role_arn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/agents/calendar-agent-role",
    )
    same_name_here = vault.agent("calendar-agent-role")
    assert_problem(same_name_here.start_session(vault.user("alice")), 403, "unknown_agent")
    pinned = TestAgent("calendar-agent-role", "task-2", vault.clock, account=OTHER_ACCOUNT)
    started = pinned.start_session(vault.user("alice"))
    assert started.status == 201, started.body


def test_row_51_a_re_created_role_is_not_the_pinned_agent(vault: Vault) -> None:
    reconfigure(vault, role_id="AROAORIGINALROLE01")  # the role as it was when pinned
    recreated = vault.agent("calendar-agent-role")  # same name and account, new unique id
    with unchanged(vault):
        assert_problem(recreated.start_session(vault.user("alice")), 403, "unknown_agent")
    reconfigure(vault, role_id=ROLE_ID)
    agent_with_session(vault)


def test_row_51_a_session_whose_user_id_is_not_its_role_session_is_refused(vault: Vault) -> None:
    agent = vault.agent("calendar-agent-role", "task-3")
    event = build_event(
        "POST",
        "/v1/sessions",
        body=json.dumps({"user": vault.user("alice")}),
        headers={
            "content-type": "application/json",
            "DPoP": agent.proof("POST", "/v1/sessions", session_id=None),
        },
        principal_arn=agent.arn,
    )
    event["requestContext"]["authorizer"]["iam"]["userId"] = f"{ROLE_ID}:another-session"
    assert_problem(invoke(event), 403, "unknown_agent")
