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

from agent_vault_local.demo import Story
from agent_vault_local.runner import REPO_ROOT, TASK_1, LocalInfo, LocalModeProcess
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
        events = story.calendar_through_proxy()
        assert [e["title"] for e in events] == ["Team stand-up", "Quarterly planning"]
        assert story.no_token_for_the_agent() == "delivery_proxy_only"

        assert story.stolen_session_refused() == "forbidden"
        assert story.other_agent_refused() == "scope_not_allowed"

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

        audit = story.audit_trail()
        actions = [(e["action"], e["outcome"]) for e in audit]
        for expected in [
            ("session.start", "allowed"),
            ("proxy.call", "denied"),
            ("consent.start", "allowed"),
            ("consent.callback", "exchanged"),
            ("consent.complete", "allowed"),
            ("proxy.call", "allowed"),
            ("token.issue", "denied"),
            ("session.end", "ended"),
            ("task.stopped", "reaped"),
        ]:
            assert expected in actions, expected
        assert ("token.issue", "allowed") not in actions  # the agent never got the token
        assert story.ok and all(result.ok for result in story.results)
        assert len(story.results) == len(Story.STEPS)
        # Nothing secret reached the vault's logs.
        log = Path(info.vault_log).read_text(encoding="utf-8")
        assert story.state.alice is not None and story.state.alice.id_token not in log
        assert parse_qs(urlsplit(callback).query)["code"][0] not in log
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
