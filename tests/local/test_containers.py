"""Local mode's containers (local/agent_vault_local/containers.py): module state per container, a
handler's exception is the invocation's error, a dead container is replaced."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_vault_local.containers import (
    ContainerError,
    HandlerFailed,
    LambdaFleet,
    VaultLog,
)
from agent_vault_local.events import LambdaContext
from agent_vault_local.runner import REPO_ROOT

HANDLERS = "tests.local.container_handlers"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaFleet]:
    log = VaultLog(tmp_path_factory.mktemp("containers") / "vault.log.jsonl")
    functions = {name: f"{HANDLERS}.{name}" for name in ("whoami", "boom", "die")}
    fleet = LambdaFleet(functions, log, cwd=str(REPO_ROOT), max_containers=2).start()
    try:
        fleet.init(dict(os.environ))
        yield fleet
    finally:
        fleet.stop()
        log.close()


def test_a_warm_container_keeps_its_module_state_and_the_parent_shares_none(
    fleet: LambdaFleet,
) -> None:
    whoami = fleet.handler(f"{HANDLERS}.whoami")
    answers = [whoami({"echo": i}, LambdaContext("whoami")) for i in range(3)]
    assert [a["echo"] for a in answers] == [0, 1, 2]
    assert len({a["pid"] for a in answers}) == 1  # one idle container, reused
    assert answers[0]["pid"] != os.getpid()
    assert [a["served"] for a in answers] == [1, 2, 3]
    assert "/[$LATEST]" in answers[0]["log_stream"]  # the container's own log stream


def test_a_handler_exception_is_the_invocations_error_and_the_container_stays(
    fleet: LambdaFleet,
) -> None:
    boom = fleet.handler(f"{HANDLERS}.boom")
    for _ in range(2):
        with pytest.raises(HandlerFailed) as raised:
            boom({}, LambdaContext("boom"))
        assert raised.value.error_type == "ValueError"
        assert str(raised.value) == "boom"
        assert "container_handlers.py" in raised.value.stack_trace


def test_a_container_that_dies_is_replaced(fleet: LambdaFleet) -> None:
    die = fleet.handler(f"{HANDLERS}.die")
    with pytest.raises(ContainerError, match="exited while serving"):
        die({}, LambdaContext("die"))
    with pytest.raises(ContainerError, match="exited while serving"):
        die({}, LambdaContext("die"))  # served by a new container, which dies too


def test_an_unknown_handler_is_refused(fleet: LambdaFleet) -> None:
    with pytest.raises(ContainerError):
        fleet.handler(f"{HANDLERS}.nothing")


def test_a_handler_that_does_not_import_stops_the_start(tmp_path: Path) -> None:
    log = VaultLog(tmp_path / "vault.log.jsonl")
    fleet = LambdaFleet(
        {"x": "tests.local.no_such_module.handler"},
        log,
        cwd=str(REPO_ROOT),
    ).start()
    try:
        with pytest.raises(ContainerError, match="no_such_module failed to import"):
            fleet.init(dict(os.environ))
    finally:
        fleet.stop()
        log.close()
