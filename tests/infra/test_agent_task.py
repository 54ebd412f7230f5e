"""The sample agent's task: a non-root user, no Linux capability, an init process, and a base
image that is pinned by digest once `make pin-agent-image` has run."""

from __future__ import annotations

import re
from typing import Any

import pytest

from scripts.pin_agent_image import DOCKERFILE, base_image, pin
from stacks.constructs.agent_service import CONTAINER_USER
from tests.infra.conftest import Synthesized, by_type

DIGEST = "sha256:" + "0123456789abcdef" * 4


def _container(synthesized: Synthesized) -> dict[str, Any]:
    (task,) = by_type(synthesized.templates["AgentService"], "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    return container


@pytest.mark.parametrize("which", ["dev", "prod"])
def test_the_agent_runs_unprivileged_with_an_init_process(
    which: str, synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    container = _container(synthesized if which == "dev" else synthesized_prod)
    assert container["User"] == CONTAINER_USER
    uid, gid = container["User"].split(":")
    assert int(uid) >= 1000 and int(gid) >= 1000
    assert container["LinuxParameters"]["Capabilities"] == {"Drop": ["ALL"]}
    assert "Add" not in container["LinuxParameters"]["Capabilities"]
    assert container["LinuxParameters"]["InitProcessEnabled"] is True
    assert container.get("Privileged") in (None, False)


def test_the_task_user_is_the_one_the_dockerfile_creates() -> None:
    dockerfile = DOCKERFILE.read_text()
    uid, gid = CONTAINER_USER.split(":")
    assert re.search(rf"useradd [^\n]*--uid {uid} ", dockerfile)
    assert re.search(rf"^USER {uid}:{gid}$", dockerfile, re.MULTILINE)


def test_the_base_image_is_the_slim_python_of_the_runtime_and_a_digest_is_whole() -> None:
    image, digest = base_image(DOCKERFILE.read_text())
    assert image == "python:3.13-slim"
    # once `make pin-agent-image` has run, FROM carries the whole digest (checked here)
    assert digest is None or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_pinning_rewrites_the_from_line_to_a_digest_and_repins() -> None:
    text = DOCKERFILE.read_text()
    pinned = pin(text, DIGEST)
    assert base_image(pinned) == ("python:3.13-slim", DIGEST)
    assert f"FROM python:3.13-slim@{DIGEST}\n" in pinned
    without_digest = re.compile(r"@sha256:[0-9a-f]{64}")
    assert without_digest.sub("", pinned) == without_digest.sub("", text)  # nothing else changed
    newer = "sha256:" + "f" * 64
    assert base_image(pin(pinned, newer)) == ("python:3.13-slim", newer)
    with pytest.raises(ValueError, match="digest"):
        pin(text, "sha256:short")
    with pytest.raises(ValueError, match="one FROM line"):
        pin(text + "FROM scratch\n", DIGEST)
