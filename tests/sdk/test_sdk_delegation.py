"""Delegation through the SDK (flow 8), against the real vault in local mode: the parent's
``delegate`` returns a handle; the sub-agent's own client (another task, another role, its own
key) claims it, then ``http()`` and the decorator work in the child as in any session."""

from __future__ import annotations

import pytest

from agent_vault import (
    Delegation,
    DelegationNotAllowed,
    DelegationNotPending,
    SessionEnded,
    UserIdentity,
    requires_http,
)
from agent_vault_local.runner import BEARER_TASK_1, CALENDAR_AGENT, TASK_2, LocalInfo
from tests.local.helpers import consent, vault_client

EVENTS = "/calendar/events"


def test_a_sub_agent_claims_a_delegation_and_works_as_in_any_session(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    provider = local.provider_name
    parent = vault_client(local, BEARER_TASK_1, UserIdentity(id_token=tokens["alice"]))
    consent(local, parent, "alice", ("calendar.read",))
    handle = parent.delegate(agent=CALENDAR_AGENT, providers={provider: "calendar.read"})
    assert isinstance(handle, Delegation)
    assert (handle.agent, handle.providers) == (CALENDAR_AGENT, {provider: ("calendar.read",)})
    assert handle.parent_session_id == parent.session_id

    child = vault_client(local, TASK_2)  # no user identity: the child never needs one
    info = child.claim_delegation(handle.delegation_id)
    assert info.parent_session_id == parent.session_id and info.agent == CALENDAR_AGENT
    assert info.user["sub"] == "alice"
    assert info.chain is not None
    assert info.chain["act"]["sid"] == info.session_id
    assert info.chain["act"]["act"]["sid"] == parent.session_id
    assert info.jkt != (parent.session.jkt if parent.session else "")  # its own key

    with child.http(provider) as api:  # the child agent's delivery: proxy
        answer = api.get(EVENTS)
        assert answer.status_code == 200, answer.text
        assert answer.json()["user"] == "alice"  # the root's grant, the user's consent

    @requires_http(provider, client=child)
    def read(*, http: object) -> int:
        return int(http.get(EVENTS).status_code)  # type: ignore[attr-defined]

    assert read() == 200

    with pytest.raises(DelegationNotPending) as twice:
        vault_client(local, TASK_2).claim_delegation(handle)
    assert twice.value.problem["delegation_status"] == "claimed"
    with pytest.raises(DelegationNotAllowed) as refused:  # not in its may_delegate_to
        parent.delegate(agent="mail-agent", providers={provider: ["mail.read"]})
    assert refused.value.reason == "agent_not_allowed"

    parent.end_session()
    with pytest.raises(SessionEnded) as ended, child.http(provider) as api:
        api.get(EVENTS)
    assert ended.value.problem["reason"] == "parent_ended"
