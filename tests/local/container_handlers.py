"""Handlers for tests/local/test_containers.py, run in local mode's containers."""

from __future__ import annotations

import os
from typing import Any

_served = 0  # module state: a container keeps it between its requests, as Lambda does


def whoami(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _served
    _served += 1
    return {
        "pid": os.getpid(),
        "served": _served,
        "log_stream": context.log_stream_name,
        "echo": event.get("echo"),
    }


def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise ValueError("boom")


def die(event: dict[str, Any], context: Any) -> dict[str, Any]:
    os._exit(3)
