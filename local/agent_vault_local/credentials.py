"""Local IAM principals: what STS would hand each agent task and the admin in AWS.

Local mode issues every principal its own temporary-style credentials (access key id, secret, and
session token) and remembers which assumed-role session they belong to. The local adapter verifies
SigV4 signatures against these secrets and fills API Gateway's IAM request context from the
principal it verified — exactly the information API Gateway takes from IAM in AWS.
"""

from __future__ import annotations

import configparser
import json
import secrets
import string
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from botocore.credentials import Credentials

from agent_vault_local.events import DEFAULT_ACCOUNT

__all__ = ["DEFAULT_ACCOUNT", "LocalPrincipal", "PrincipalRegistry", "new_principal"]

_UPPER_ALNUM = string.ascii_uppercase + string.digits


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_UPPER_ALNUM) for _ in range(length))


@dataclass(frozen=True)
class LocalPrincipal:
    """One assumed-role session (an ECS task's task role, or an operator's admin role)."""

    name: str
    """A label for people (``calendar-agent/task-1``)."""
    kind: Literal["agent", "admin"]
    role_name: str
    session_name: str
    """For an ECS task role: the task id."""
    account_id: str
    role_id: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)

    @property
    def user_arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session_name}"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.role_name}"

    @property
    def user_id(self) -> str:
        """IAM's ``userId`` of an assumed-role session: ``<role id>:<session name>``."""
        return f"{self.role_id}:{self.session_name}"

    def credentials(self) -> Credentials:
        """botocore credentials to sign with (what the SDK's credential chain would find)."""
        return Credentials(self.access_key_id, self.secret_access_key, self.session_token)

    def env(self) -> dict[str, str]:
        """The environment variables a process would run with as this principal."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role_name": self.role_name,
            "session_name": self.session_name,
            "account_id": self.account_id,
            "role_id": self.role_id,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalPrincipal:
        return cls(
            **{
                k: data[k]
                for k in (
                    "name",
                    "kind",
                    "role_name",
                    "session_name",
                    "account_id",
                    "role_id",
                    "access_key_id",
                    "secret_access_key",
                    "session_token",
                )
            }
        )


def new_principal(
    name: str,
    role_name: str,
    session_name: str,
    *,
    kind: Literal["agent", "admin"] = "agent",
    account_id: str = DEFAULT_ACCOUNT,
    role_id: str | None = None,
) -> LocalPrincipal:
    """A principal with fresh random credentials (ASIA... keys, as STS issues)."""
    return LocalPrincipal(
        name=name,
        kind=kind,
        role_name=role_name,
        session_name=session_name,
        account_id=account_id,
        role_id=role_id or _random_id("AROA", 17),
        access_key_id=_random_id("ASIA", 16),
        secret_access_key=secrets.token_urlsafe(30)[:40],
        session_token=secrets.token_urlsafe(96),
    )


class PrincipalRegistry:
    """The principals the local adapter accepts, by access key id (thread-safe)."""

    def __init__(self, principals: Iterable[LocalPrincipal] = ()) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, LocalPrincipal] = {}
        for principal in principals:
            self.add(principal)

    def add(self, principal: LocalPrincipal) -> LocalPrincipal:
        with self._lock:
            self._by_key[principal.access_key_id] = principal
        return principal

    def remove(self, principal: LocalPrincipal) -> None:
        with self._lock:
            self._by_key.pop(principal.access_key_id, None)

    def by_access_key(self, access_key_id: str) -> LocalPrincipal | None:
        with self._lock:
            return self._by_key.get(access_key_id)

    def by_name(self, name: str) -> LocalPrincipal:
        with self._lock:
            for principal in self._by_key.values():
                if principal.name == name:
                    return principal
        raise KeyError(name)

    def __iter__(self) -> Iterator[LocalPrincipal]:
        with self._lock:
            return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_key)

    def write_credentials_file(self, path: Path, *, region: str) -> Path:
        """An AWS shared credentials file with one profile per principal (mode 0600).

        ``AWS_SHARED_CREDENTIALS_FILE=<path> AWS_PROFILE=<name>`` lets any AWS SDK sign as that
        principal against the local adapter.
        """
        parser = configparser.ConfigParser()
        for principal in self:
            profile = principal.name.replace("/", "-")
            parser[profile] = {
                "aws_access_key_id": principal.access_key_id,
                "aws_secret_access_key": principal.secret_access_key,
                "aws_session_token": principal.session_token,
                "region": region,
            }
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        with path.open("w", encoding="utf-8") as handle:
            parser.write(handle)
        return path

    def to_json(self) -> str:
        return json.dumps([p.to_json() for p in self], indent=2)
