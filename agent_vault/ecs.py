"""The ECS task this code runs in, from the task metadata endpoint v4.

Informational only: the vault takes the task id from the verified IAM request context (the task
role's assumed-role session name), never from anything the agent says. Agents use it for logs
("session ses_x of task 4f1c...") and to check they run where they think.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import urllib3

__all__ = ["task_arn", "task_id", "task_metadata"]

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"


def task_metadata(
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 1.0,
    http: urllib3.PoolManager | None = None,
) -> dict[str, Any] | None:
    """``GET ${ECS_CONTAINER_METADATA_URI_V4}/task``, or None outside ECS or on any failure."""
    env = os.environ if environ is None else environ
    base = env.get(METADATA_ENV)
    if not base:
        return None
    pool = http or urllib3.PoolManager()
    try:
        response = pool.request(
            "GET",
            base.rstrip("/") + "/task",
            retries=False,
            redirect=False,
            timeout=urllib3.Timeout(total=timeout),
        )
    except urllib3.exceptions.HTTPError:
        return None
    if response.status != 200:
        return None
    try:
        data = json.loads(response.data)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def task_arn(**kwargs: Any) -> str | None:
    """The task ARN (``arn:aws:ecs:<region>:<account>:task/<cluster>/<task id>``), if on ECS."""
    metadata = task_metadata(**kwargs)
    value = metadata.get("TaskARN") if metadata else None
    return str(value) if value else None


def task_id(**kwargs: Any) -> str | None:
    """The task id (the last segment of the task ARN), if on ECS."""
    arn = task_arn(**kwargs)
    return arn.rsplit("/", 1)[-1] if arn else None
