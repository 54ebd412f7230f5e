"""Local mode with the sample agent, in a child process, for the tests of this directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_vault_local.runner import LocalInfo, LocalModeProcess


@pytest.fixture(scope="session")
def local_with_agent() -> Iterator[LocalInfo]:
    with LocalModeProcess(with_agent=True) as info:
        yield info
