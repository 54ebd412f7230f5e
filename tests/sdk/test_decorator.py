"""``@requires_access_token`` on plain functions, coroutines, threads and asyncio tasks, against
the real vault. The consent callback plays the user: it logs in, consents, and the app binds."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent_vault import (
    AsyncVaultClient,
    ConsentTimeout,
    UserIdentity,
    VaultClient,
    bind_client,
    current_client,
    requires_access_token,
    set_default_client,
    use_client,
)
from agent_vault_local.demo import calendar_events

# the tokens these tests read are handed out: local mode's bearer-delivery agent's tasks
from agent_vault_local.runner import BEARER_TASK_1 as TASK_1
from agent_vault_local.runner import BEARER_TASK_2 as TASK_2
from agent_vault_local.runner import LocalInfo
from tests.local.helpers import approve, vault_client

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2, "consent_timeout": 30}


def user_approves(
    local: LocalInfo, username: str, binder: VaultClient
) -> tuple[list[str], Callable[[str], None]]:
    """An on_auth_url callback that lets ``username`` consent at once (and records the URL)."""
    seen: list[str] = []

    def on_auth_url(url: str) -> None:
        seen.append(url)
        approve(local, url, username, binder)

    return seen, on_auth_url


def events_with(local: LocalInfo) -> Callable[..., int]:
    def call(*, access_token: str) -> int:
        return calendar_events(local, access_token).status

    return call


def test_sync_function(local: LocalInfo, tokens: dict[str, str], no_grants: None) -> None:
    client = vault_client(local, TASK_1, UserIdentity(id_token=tokens["alice"]))
    seen, on_auth_url = user_approves(local, "alice", client)

    @requires_access_token(
        "calendar", ["calendar.read"], client=client, on_auth_url=on_auth_url, **FAST
    )  # type: ignore[arg-type]
    def read_calendar(day: str, *, access_token: str) -> tuple[str, int]:
        return day, calendar_events(local, access_token).status

    assert read_calendar("today") == ("today", 200)
    assert len(seen) == 1  # the URL was handed out once
    assert read_calendar("tomorrow") == ("tomorrow", 200)  # granted and cached: no new consent
    assert len(seen) == 1
    assert read_calendar.__name__ == "read_calendar"
    client.close()


def test_async_function_with_an_async_callback(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = AsyncVaultClient(
        client=vault_client(local, TASK_1, UserIdentity(id_token=tokens["alice"]))
    )
    seen: list[str] = []

    async def on_auth_url(url: str) -> None:
        seen.append(url)
        await asyncio.to_thread(approve, local, url, "alice", client.sync)

    @requires_access_token("calendar", "calendar.read", on_auth_url=on_auth_url, **FAST)  # type: ignore[arg-type]
    async def read_calendar(*, access_token: str) -> int:
        return await asyncio.to_thread(
            calendar_events(local, access_token).__getattribute__, "status"
        )

    async def main() -> int:
        with use_client(client):
            return await read_calendar()

    assert asyncio.run(main()) == 200
    assert len(seen) == 1
    client.sync.close()


def test_asyncio_tasks_each_see_their_own_client(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    clients = {
        name: vault_client(local, TASK_1, UserIdentity(id_token=tokens[name]))
        for name in ("alice", "bob")
    }
    granted: dict[str, Any] = {}

    def on_auth_url(url: str) -> None:
        client = current_client()  # the task's own context
        name = "alice" if client is clients["alice"] else "bob"
        approve(local, url, name, client)

    @requires_access_token("calendar", ["calendar.read"], on_auth_url=on_auth_url, **FAST)  # type: ignore[arg-type]
    async def whoami(*, access_token: str) -> str:
        answer = await asyncio.to_thread(calendar_events, local, access_token)
        return str(answer.json()["user"])

    async def as_user(name: str) -> str:
        with use_client(clients[name]):
            return await whoami()

    async def main() -> None:
        granted["alice"], granted["bob"] = await asyncio.gather(as_user("alice"), as_user("bob"))

    asyncio.run(main())
    assert granted == {"alice": "alice", "bob": "bob"}
    for client in clients.values():
        client.close()


def test_threads_use_the_default_client_or_a_bound_one(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = vault_client(local, TASK_2, UserIdentity(id_token=tokens["alice"]))
    seen, on_auth_url = user_approves(local, "alice", client)
    lock = threading.Lock()

    def serialized(url: str) -> None:
        with lock:
            on_auth_url(url)

    @requires_access_token("calendar", ["calendar.read"], on_auth_url=serialized, **FAST)  # type: ignore[arg-type]
    def status(*, access_token: str) -> int:
        return calendar_events(local, access_token).status

    # A thread pool does not copy the caller's context: bind the client explicitly...
    with use_client(client), ThreadPoolExecutor(4) as pool:
        bound = bind_client(status)
        assert list(pool.map(lambda _: bound(), range(4))) == [200] * 4
    # ...or set a process-wide default that every thread sees.
    set_default_client(client)
    try:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(status())) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 3
    finally:
        set_default_client(None)
    assert len(seen) == 1
    client.close()


def test_consent_timeout(local: LocalInfo, tokens: dict[str, str], no_grants: None) -> None:
    client = vault_client(local, TASK_1, UserIdentity(id_token=tokens["alice"]))
    seen: list[str] = []

    @requires_access_token(
        "calendar",
        ["calendar.read"],
        client=client,
        on_auth_url=seen.append,
        consent_timeout=0.3,
        poll_interval=0.05,
    )
    def never(*, access_token: str) -> None:
        raise AssertionError("called without consent")

    with pytest.raises(ConsentTimeout) as raised:
        never()
    assert seen == [raised.value.authorization_url]
    assert raised.value.flow_id
    client.close()


def test_no_client_is_a_clear_error() -> None:
    @requires_access_token("calendar", ["calendar.read"])
    def orphan(*, access_token: str) -> None:
        raise AssertionError("unreachable")

    ctx = contextvars.Context()  # no use_client, no default
    with pytest.raises(LookupError, match="use_client"):
        ctx.run(orphan)
