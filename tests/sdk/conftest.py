"""One local mode (in a child process) for the SDK tests that need a real vault."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_vault_local.runner import LocalInfo, LocalModeProcess
from tests.local.helpers import fresh_grants, id_token_for


@pytest.fixture(scope="session")
def local() -> Iterator[LocalInfo]:
    with LocalModeProcess(with_agent=False) as info:
        yield info


@pytest.fixture(scope="session")
def tokens(local: LocalInfo) -> dict[str, str]:
    """Each local user's identity token (a real login at the local provider)."""
    return {name: id_token_for(local, name) for name in local.users}


@pytest.fixture
def no_grants(local: LocalInfo) -> None:
    """alice and bob start the test without any grant."""
    fresh_grants(local, "alice", "bob")
