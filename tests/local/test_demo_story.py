"""``make demo``'s story as a test: every step's outcome, against a real local mode."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from agent_vault_local.demo import Story, grant_of_session, introspect, provider_stats
from agent_vault_local.runner import (
    BEARER_AGENT,
    DPOP_AGENT,
    DPOP_TASK,
    REPO_ROOT,
    TASK_1,
    TASK_2,
    LocalInfo,
    LocalModeProcess,
)
from tests.local.helpers import fresh_grants


@pytest.fixture(scope="module")
def local_of_the_story() -> Iterator[LocalInfo]:
    """A local mode of its own: the story stops TASK_1, and a stopped task stays stopped (it
    could start no session in the other tests of the shared local mode)."""
    with LocalModeProcess(with_agent=True) as info:
        yield info


def test_the_story_step_by_step(local_of_the_story: LocalInfo) -> None:
    info = local_of_the_story
    fresh_grants(info, "alice")
    story = Story(info, out=None)
    try:
        session_id = story.start_session()
        assert session_id.startswith("ses_")
        assert story.state.client is not None and story.state.client.session is not None
        assert story.state.client.session.task_id == info.principal(TASK_1).session_name

        authorization = story.token_needs_consent()
        assert authorization.authorization_url.startswith(info.provider["authorization_endpoint"])
        query = parse_qs(urlsplit(authorization.authorization_url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["redirect_uri"] == [info.callback_url]
        assert "calendar.read" in query["scope"][0].split()

        callback = story.consent_at_provider()
        assert callback.startswith(info.callback_url + "?")
        assert {"code", "state", "iss"} <= set(parse_qs(urlsplit(callback).query))

        location = story.callback()
        returned = parse_qs(urlsplit(location).query)
        assert location.startswith(info.return_url)
        assert returned["status"] == ["pending_binding"]
        assert returned["flow_id"] == [authorization.flow_id]
        assert len(returned["binding_code"]) == 1  # only here, never in the agent's answers

        assert story.bind() == {"status": "active"}
        calls = provider_stats(info)["api_requests"]
        events = story.calendar_through_proxy()
        assert [e["title"] for e in events] == ["Team stand-up", "Quarterly planning"]
        # the vault called the calendar API once, with the session's token as a bearer token
        assert provider_stats(info)["api_requests"] == {**calls, "bearer": calls["bearer"] + 1}
        captured = story.state.captured
        assert captured is not None and captured.url.path == (
            f"/v1/sessions/{session_id}/proxy/calendar/calendar/events"
        )
        assert {"authorization", "x-amz-date", "x-amz-security-token", "dpop"} <= set(
            captured.headers.keys()
        )
        assert story.state.grant_id is not None and story.state.grant_id.startswith("grt_")

        # the exact request again, from outside the session: the vault refuses the seen jti
        # before any provider call
        calls = provider_stats(info)["api_requests"]
        assert story.captured_request_replayed() == "proof_replayed"
        assert provider_stats(info)["api_requests"] == calls
        assert story.results[-1].outcome.startswith("401 proof_replayed: ")

        assert story.no_token_for_the_agent() == "delivery_proxy_only"
        assert story.stolen_session_refused() == "forbidden"
        assert story.other_agent_refused() == "scope_not_allowed"

        # flow 12: a key an admin stored reaches the keyed API through the proxy for a proxy
        # agent, which is refused the key itself; a returned-delivery agent gets it from the SDK
        keyed_calls = provider_stats(info)["keyed_requests"]
        keyed = story.api_key_provider()
        assert keyed == {"status": "set", "refused": "delivery_proxy_only", "via": "header"}
        assert provider_stats(info)["keyed_requests"] == keyed_calls + 2  # proxied, then direct
        assert story.state.api_key is not None
        assert story.state.api_key not in story.results[-1].outcome

        # dpop delivery: a token bound to the session key, refused to a thief by the API itself
        completion = story.dpop_agent_consents()
        assert completion.status == "active" and completion.grant_id != story.state.grant_id
        dpop_client = story.state.dpop_client
        assert dpop_client is not None and dpop_client.session is not None
        assert dpop_client.session.agent == DPOP_AGENT
        assert dpop_client.session.task_id == info.principal(DPOP_TASK).session_name
        calls = provider_stats(info)["api_requests"]
        token = story.dpop_token_read()
        assert token.token_type == "DPoP"
        assert introspect(info, token.access_token)["cnf"] == {"jkt": dpop_client.session.jkt}
        assert provider_stats(info)["api_requests"] == {**calls, "dpop": calls["dpop"] + 1}
        refusals = provider_stats(info)["api_refusals"]
        assert story.stolen_dpop_token_as_bearer() == "invalid_token"
        assert "is DPoP-bound" in story.results[-1].outcome
        assert story.stolen_dpop_token_with_own_key() == "invalid_token"
        assert "signed by another key" in story.results[-1].outcome
        stats = provider_stats(info)
        assert stats["api_requests"] == {**calls, "dpop": calls["dpop"] + 1}  # served no thief
        assert stats["api_refusals"].get("invalid_token", 0) == (
            refusals.get("invalid_token", 0) + 2
        )

        event = story.stop_task()
        assert event["source"] == "aws.ecs" and event["detail-type"] == "ECS Task State Change"
        assert event["detail"]["lastStatus"] == "STOPPED"
        assert event["resources"] == [info.tasks[TASK_1]]
        reaped = story.reap()
        assert reaped["status"] == "reaped" and reaped["ended_sessions"] == 1
        assert reaped["revoked_tokens"] == 1

        assert story.session_dead() == "session_ended"
        assert story.stopped_task_stays_stopped() == "task_stopped"
        items = story.token_dead()  # the session's partition: the session, no token
        assert [i["sk"]["S"] for i in items] == ["SESSION"]
        assert items[0]["status"]["S"] == "ended"

        # a replacement task of the same agent: alice's grant serves it, no consent at all
        codes = provider_stats(info)["token_successes"]["authorization_code"]
        replacement = story.replacement_task()
        assert replacement == {"flows": 0, "codes": 0, "grant_id": story.state.grant_id}
        assert provider_stats(info)["token_successes"]["authorization_code"] == codes
        new_session = story.state.clients[-1].session
        assert new_session is not None and new_session.session_id != session_id
        assert new_session.task_id == info.principal(TASK_2).session_name
        assert grant_of_session(info, new_session.session_id) == story.state.grant_id

        # a sub-agent: the dpop agent's session delegates to calendar-agent, whose task claims
        # the child with its own key; the child reads through the proxy, then ends with its parent
        sub = story.sub_agent()
        assert sub["events"] >= 1 and sub["ended"] == "parent_ended"
        chain = sub["chain"]
        assert chain["sub"] == "alice" and chain["act"]["sub"] == "calendar-agent"
        assert chain["act"]["act"]["sub"] == DPOP_AGENT

        revoked = story.admin_revokes()
        assert revoked["revoked_grants"] == 1
        # the lifecycle events EventBridge delivered, each printed under the step that made it
        lifecycle = [
            (e["detail-type"], e["detail"].get("reason"), e["detail"]["agent"])
            for e in story.state.lifecycle
        ]
        assert lifecycle == [
            ("grant.activated", None, "calendar-agent"),
            ("session.ended", "ended_by_agent", BEARER_AGENT),
            ("grant.activated", None, DPOP_AGENT),
            ("session.ended", "task_stopped", "calendar-agent"),
            ("session.ended", "ended_by_agent", DPOP_AGENT),
            ("session.ended", "parent_ended", "calendar-agent"),
            ("grant.revoked", "revocation", DPOP_AGENT),
        ]

        audit = story.audit_trail()
        actions = [(e["action"], e["outcome"]) for e in audit]
        for expected in [
            ("session.start", "allowed"),
            ("proxy.call", "denied"),
            ("consent.start", "allowed"),
            ("consent.callback", "exchanged"),
            ("consent.complete", "allowed"),
            ("proxy.call", "allowed"),
            ("session.access", "denied"),
            ("token.issue", "denied"),
            ("session.end", "ended"),
            ("task.stopped", "reaped"),
            ("delegation.create", "allowed"),
            ("delegation.claim", "allowed"),
            ("apikey.set", "allowed"),
            ("proxy.call", "allowed"),
            ("apikey.deliver", "denied"),
            ("apikey.deliver", "allowed"),
        ]:
            assert expected in actions, expected
        assert [e.get("reason") for e in audit if e["action"] == "session.access"] == [
            "proof_replayed",
            "forbidden",
            "session_ended",  # task-1's session, after the reaper
            "session_ended",  # the child, after its parent ended
        ]
        # only the dpop agent ever got a token; consent was given twice (calendar-agent once,
        # calendar-dpop-agent once), never again for the replacement task
        issued = [e for e in audit if e["action"] == "token.issue" and e["outcome"] == "allowed"]
        assert [e["agent"] for e in issued] == [DPOP_AGENT]
        assert [e["agent"] for e in audit if e["action"] == "consent.start"] == [
            "calendar-agent",
            DPOP_AGENT,
        ]
        assert story.ok and all(result.ok for result in story.results)
        assert len(story.results) == len(Story.STEPS)
        # Nothing secret reached the vault's logs.
        log = Path(info.vault_log).read_text(encoding="utf-8")
        assert story.state.alice is not None and story.state.alice.id_token not in log
        assert parse_qs(urlsplit(callback).query)["code"][0] not in log
        assert story.state.api_key not in log
    finally:
        story.close()


def test_a_failing_step_says_what_and_why(local_with_agent: LocalInfo) -> None:
    lines: list[str] = []
    story = Story(local_with_agent, out=lines.append)
    fresh_grants(local_with_agent, "alice")
    story.start_session = lambda: "ses_x"  # type: ignore[method-assign]
    assert story.run() is False
    failed = [r for r in story.results if not r.ok]
    assert len(failed) == 1 and failed[0].title.startswith("it asks for calendar.read")
    assert any(line.strip().startswith("why:") for line in lines)
    assert any(line.strip().startswith("hint:") for line in lines)


def test_agent_vault_local_demo_exits_zero_and_stops_everything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_vault.cli", "local", "demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "The story ran to the end" in result.stdout
    assert len(re.findall(r"^\s*\d+\. .* ok\s+\d+ ms$", result.stdout, re.MULTILINE)) == len(
        Story.STEPS
    )
    ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", result.stdout)[:3]]
    assert len(ports) == 3
    for port in ports:  # vault, provider and agent are gone
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
