"""The caller, from API Gateway's verified IAM request context (never from the body)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vault.config import VaultConfig
from vault.errors import Forbidden, UnknownAgent

_ASSUMED_ROLE = re.compile(
    r"^arn:aws[a-z-]*:sts::(?P<account>\d{12}):assumed-role/(?P<role>[\w+=,.@-]{1,64})"
    r"/(?P<session>[\w+=,.@-]{2,64})$"
)


@dataclass(frozen=True)
class Caller:
    arn: str
    account: str
    role_name: str
    session_name: str
    """For an ECS task role this is the task id."""


def caller_from(event: dict[str, Any]) -> Caller:
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    arn = iam.get("userArn")
    match = _ASSUMED_ROLE.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise UnknownAgent("the caller is not an IAM role session the vault knows")
    return Caller(
        arn=match.string,
        account=match["account"],
        role_name=match["role"],
        session_name=match["session"],
    )


def agent_of(config: VaultConfig, caller: Caller) -> str:
    agent = config.agents_by_role.get(caller.role_name)
    if agent is None:
        raise UnknownAgent(
            f"role {caller.role_name!r} is not a configured agent (agents.<name>.role_name)"
        )
    return agent


def require_admin(config: VaultConfig, caller: Caller) -> None:
    if caller.role_name not in config.admin_role_names:
        raise Forbidden(f"role {caller.role_name!r} is not an admin (admin_role_names)")
