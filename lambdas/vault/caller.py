"""The caller, from the verified IAM request context (never from the body): API Gateway's, or
a function URL's with `AWS_IAM` auth, which has the same shape (payload 2.0,
`requestContext.authorizer.iam`; tests/integration/test_function_url.py).

A role is matched by name, then pinned: by account (the ARN's in the config, else the vault's
own, which API Gateway and Lambda's URL front end put in `requestContext.accountId`) and, where
the config names it, by the role's unique id (IAM's `userId` of a session is `<role id>:<session
name>`). A role of the same name in another account, or deleted and re-created, is not the agent
or the admin.
"""

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
_ACCOUNT = re.compile(r"^\d{12}$")
_ROLE_ID = re.compile(r"^AROA[A-Z0-9]{4,124}$")


@dataclass(frozen=True)
class Caller:
    arn: str
    account: str
    role_name: str
    session_name: str
    """For an ECS task role this is the task id."""
    role_id: str | None = None
    """The role's unique id (AROA...), from the session's `userId`."""
    vault_account: str | None = None
    """The account the vault's API belongs to (API Gateway's `requestContext.accountId`)."""


def caller_from(event: dict[str, Any]) -> Caller:
    context = event.get("requestContext") or {}
    iam = (context.get("authorizer") or {}).get("iam") or {}
    arn = iam.get("userArn")
    match = _ASSUMED_ROLE.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise UnknownAgent("the caller is not an IAM role session the vault knows")
    role_id = None
    user_id = iam.get("userId")
    if isinstance(user_id, str):
        role_id, _, session = user_id.partition(":")
        if not _ROLE_ID.match(role_id) or session != match["session"]:
            raise UnknownAgent("the caller is not an IAM role session the vault knows")
    account = context.get("accountId")
    return Caller(
        arn=match.string,
        account=match["account"],
        role_name=match["role"],
        session_name=match["session"],
        role_id=role_id,
        vault_account=account if isinstance(account, str) and _ACCOUNT.match(account) else None,
    )


def _pinned(caller: Caller, account: str | None, role_id: str | None) -> bool:
    """The caller's role is in the expected account (the vault's own unless given) and, when a
    unique id is configured, is that very role."""
    expected = account or caller.vault_account
    if expected is None or caller.account != expected:
        return False
    return role_id is None or caller.role_id == role_id


def agent_of(config: VaultConfig, caller: Caller) -> str:
    agent = config.agents_by_role.get(caller.role_name)
    if agent is None:
        raise UnknownAgent(
            f"role {caller.role_name!r} is not a configured agent (agents.<name>.role_name)"
        )
    pinned = config.agents[agent]
    if not _pinned(caller, pinned.role_account, pinned.role_id):
        raise UnknownAgent(
            f"role {caller.role_name!r} of account {caller.account} is not agent {agent!r}'s role"
            " (agents.<name>.role_arn, role_id)"
        )
    return agent


def require_admin(config: VaultConfig, caller: Caller) -> None:
    admins = config.admins_by_role
    if caller.role_name not in admins or not _pinned(caller, admins[caller.role_name], None):
        raise Forbidden(
            f"role {caller.role_name!r} of account {caller.account} is not an admin"
            " (admin_role_names, admin_role_arns)"
        )
