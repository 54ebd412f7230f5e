"""Local mode serves concurrent requests as separate Lambda containers would (SECURITY.md row 31,
DESIGN invariant 12): no request ever sees another's event, principal or answer, and a container
serves one request at a time.

Both tests go through the real local API Gateway (SigV4, HTTP) of a local mode in a child process.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent_vault import UserIdentity, VaultClient, VaultError
from agent_vault_local.demo import introspect
from agent_vault_local.runner import BEARER_TASK_1, MAIL_TASK, TASK_1, TASK_2, LocalInfo
from tests.local.helpers import consent, fresh_grants, id_token_for, vault_client

PAIRS = 50
CALENDAR, MAIL = ("calendar.read",), ("mail.read",)


def _at_the_same_moment(work: dict[str, Callable[[], list[str]]]) -> dict[str, list[str]]:
    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        futures = {name: pool.submit(run) for name, run in work.items()}
        return {name: future.result(timeout=300) for name, future in futures.items()}


def test_two_principals_at_the_same_moment_each_get_their_own_answer(
    local_with_agent: LocalInfo,
) -> None:
    """Row 31: alice's calendar agent task (the bearer-delivery one: these tokens are handed
    out) and bob's mail agent task ask for their session and their token at the same moment,
    50 times; every answer is the asker's own."""
    info = local_with_agent
    fresh_grants(info, "alice", "bob")
    alice = UserIdentity(id_token=id_token_for(info, "alice"))
    clients = {
        "alice": vault_client(info, BEARER_TASK_1, alice),
        "bob": vault_client(info, MAIL_TASK, UserIdentity(id_token=id_token_for(info, "bob"))),
    }
    scopes = {"alice": CALENDAR, "bob": MAIL}
    try:
        own_session: dict[str, str] = {}
        own_token: dict[str, str] = {}
        for name, client in clients.items():
            own_session[name] = client.start_session().session_id
            consent(info, client, name, scopes[name])
            own_token[name] = client.get_token(info.provider_name, scopes[name]).access_token
            assert introspect(info, own_token[name])["sub"] == name  # the token is the user's
        labels = {token: f"{name}'s token" for name, token in own_token.items()}
        sessions = {sid: f"{name}'s session" for name, sid in own_session.items()}

        log_offset = Path(info.vault_log).stat().st_size
        barrier = threading.Barrier(len(clients))

        def asker(name: str) -> Callable[[], list[str]]:
            client = clients[name]

            def run() -> list[str]:
                seen: list[str] = []
                for _ in range(PAIRS):
                    client.forget_token(info.provider_name, scopes[name])  # ask the vault
                    barrier.wait(timeout=60)
                    try:
                        token = client.get_token(info.provider_name, scopes[name]).access_token
                        seen.append(labels.get(token, "a token of no one here"))
                    except VaultError as exc:
                        seen.append(f"token: {exc.status} {exc.code}")
                    barrier.wait(timeout=60)
                    try:
                        session = client.get_session()
                        seen.append(
                            f"{sessions.get(session.session_id, 'another session')} "
                            f"of {session.agent} for {session.user.get('sub')}"
                        )
                    except VaultError as exc:
                        seen.append(f"session: {exc.status} {exc.code}")
                return seen

            return run

        seen = _at_the_same_moment({name: asker(name) for name in clients})
        agents = {"alice": "calendar-bearer-agent", "bob": "mail-agent"}
        for name, answers in seen.items():
            expected = [f"{name}'s token", f"{name}'s session of {agents[name]} for {name}"] * PAIRS
            crossed = [a for a in answers if a not in expected]
            assert answers == expected, (
                f"{name} received {len(crossed)} foreign answers: {sorted(set(crossed))}"
            )

        # What each handler saw: every token decision is logged once, under its own request's
        # id, with the principal the gateway verified for that request.
        records = _records(info, log_offset)
        decisions = [r for r in records if (r.get("audit") or {}).get("action") == "token.issue"]
        assert len(decisions) == 2 * PAIRS
        request_ids = [r.get("correlation_id") for r in decisions]
        shared = len(request_ids) - len(set(request_ids))
        assert shared == 0, f"{shared} token decisions were logged under another request's id"
        verified = {
            r["eventRequestId"]: r["principal"]
            for r in records
            if r.get("type") == "platform.report"
        }
        session_of_task = {
            info.principal(BEARER_TASK_1).session_name: own_session["alice"],
            info.principal(MAIL_TASK).session_name: own_session["bob"],
        }
        for decision in decisions:
            task = verified[decision["correlation_id"]].rsplit("/", 1)[-1]  # the ARN's session
            assert (decision["audit"]["task_id"], decision["audit"]["session_id"]) == (
                task,
                session_of_task[task],
            )
    finally:
        for client in clients.values():
            client.close()


def _records(info: LocalInfo, offset: int = 0) -> list[dict[str, Any]]:
    """The JSON records of the vault log from ``offset`` on."""
    with Path(info.vault_log).open("rb") as log:
        log.seek(offset)
        lines = log.read().decode("utf-8").splitlines()
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _reports(info: LocalInfo, function: str, since: float) -> list[dict[str, Any]]:
    """The platform.report records the local Lambda service wrote for ``function``."""
    return [
        r
        for r in _records(info)
        if r.get("type") == "platform.report"
        and r.get("function") == function
        and r.get("startedAt", 0) >= since
    ]


def test_a_container_serves_one_request_at_a_time(local_with_agent: LocalInfo) -> None:
    """Concurrent requests to one function are served by distinct containers: the requests one
    container served never overlap in time, and requests that overlapped had different
    containers."""
    info = local_with_agent
    users = {TASK_1: "alice", TASK_2: "bob", MAIL_TASK: "bob"}
    clients: list[VaultClient] = []
    try:
        for principal, user in users.items():
            client = vault_client(info, principal, UserIdentity(id_token=id_token_for(info, user)))
            client.start_session()
            clients.append(client)
        barrier = threading.Barrier(len(clients))
        since = time.time()

        def run(client: VaultClient) -> Callable[[], list[str]]:
            def rounds() -> list[str]:
                for _ in range(5):
                    barrier.wait(timeout=60)
                    client.get_session()
                return []

            return rounds

        _at_the_same_moment({str(i): run(c) for i, c in enumerate(clients)})
        reports = _reports(info, "agent-vault-agent-api", since)
        assert len(reports) == 5 * len(clients)
        by_container: dict[str, list[dict[str, Any]]] = {}
        for report in reports:
            by_container.setdefault(report["container"], []).append(report)
        for served in by_container.values():
            served.sort(key=lambda r: r["startedAt"])
            for before, after in itertools.pairwise(served):
                assert after["startedAt"] >= before["endedAt"], "a container served two at once"
        overlapping = [
            (a, b)
            for i, a in enumerate(reports)
            for b in reports[i + 1 :]
            if a["startedAt"] < b["endedAt"] and b["startedAt"] < a["endedAt"]
        ]
        assert overlapping, "no two requests ran at the same time"
        assert all(a["container"] != b["container"] for a, b in overlapping)
        assert len(by_container) >= 2
    finally:
        for client in clients:
            client.close()
