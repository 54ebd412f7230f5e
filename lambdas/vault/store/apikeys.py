"""API keys (flow 12) in Secrets Manager: one secret per API-key provider, or per provider and
user for services that issue per-user keys, encrypted under the vault's KMS key.

A secret's name is `<prefix><provider>` or `<prefix><provider>/user/<user key>` (the user key is
`UserRef.key`, a hash: no user id in a secret's name, nor in CloudTrail). Its value is JSON:
`{"current": ..., "previous": ..., "rotated_at": ...}`; a new key moves the current one to
`previous`, which stays usable for the provider's rotation window. Keys never go to the table,
a log, an error or a URL.

The vault reads a key at proxy time through a small per-container cache (`CACHE_SECONDS`): warm
proxied calls make no Secrets Manager call. A key set, rotated or deleted by the admin route is
seen at once by the container that wrote it and within `CACHE_SECONDS` by every other.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vault.errors import SecretsUnavailable, StoredDataInvalid

CACHE_SECONDS = 30.0
"""How long a container reuses a key it read (the bound on how late another container sees a
rotation or a deletion)."""
CACHE_ENTRIES = 256


@dataclass(frozen=True)
class StoredApiKey:
    """An API key as stored: the current key and, after a rotation, the previous one."""

    name: str
    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    rotated_at: int = 0
    """When `current` was set (epoch seconds)."""

    def previous_usable(self, now: float, window_seconds: int) -> bool:
        """The previous key is still within its rotation window."""
        return self.previous is not None and now < self.rotated_at + window_seconds

    def value(self) -> str:
        return json.dumps(
            {"current": self.current, "previous": self.previous, "rotated_at": self.rotated_at},
            separators=(",", ":"),
        )


def _parse(name: str, text: Any) -> StoredApiKey:
    try:
        data = json.loads(text)
        current, previous, rotated_at = data["current"], data.get("previous"), data["rotated_at"]
        if not isinstance(current, str) or not current:
            raise ValueError("no current key")
        if previous is not None and not isinstance(previous, str):
            raise ValueError("previous is not a string")
        if not isinstance(rotated_at, int):
            raise ValueError("rotated_at is not an integer")
    except (ValueError, TypeError, KeyError) as exc:
        raise StoredDataInvalid("a stored API key is not in the vault's format") from exc
    return StoredApiKey(name, current, previous, rotated_at)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ApiKeyStore:
    """The API-key secrets: read (cached), written, deleted. The only code that touches them."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        key_id: str,
        *,
        cache_seconds: float = CACHE_SECONDS,
        max_entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._key_id = key_id
        self._cache_seconds = cache_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[StoredApiKey, float]] = OrderedDict()

    def name(self, provider: str, user_key: str | None) -> str:
        """The secret of `provider`'s key (of one user's key, by their hashed `UserRef.key`)."""
        return f"{self.prefix}{provider}" + (f"/user/{user_key}" if user_key else "")

    def get(self, name: str, *, fresh: bool = False) -> StoredApiKey | None:
        """The stored key, or None if none is set; from the cache unless `fresh`."""
        now = self._clock()
        if not fresh:
            with self._lock:
                cached = self._cache.get(name)
                if cached is not None and cached[1] > now:
                    self._cache.move_to_end(name)
                    return cached[0]
        try:
            answer = self._client.get_secret_value(SecretId=name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                self.forget(name)
                return None
            raise SecretsUnavailable("the API key could not be read; retry shortly") from None
        except BotoCoreError:
            raise SecretsUnavailable("the API key could not be read; retry shortly") from None
        stored = _parse(name, answer.get("SecretString"))
        self._remember(stored, now)
        return stored

    def put(self, stored: StoredApiKey, *, exists: bool) -> None:
        """Write `stored` (creating the secret, under the vault key, unless it `exists`)."""
        try:
            if exists:
                self._client.put_secret_value(SecretId=stored.name, SecretString=stored.value())
            else:
                try:
                    self._client.create_secret(
                        Name=stored.name,
                        KmsKeyId=self._key_id,
                        SecretString=stored.value(),
                        Description="Agent Vault: an API key (flow 12); set by the admin route",
                    )
                except ClientError as exc:
                    if _code(exc) != "ResourceExistsException":
                        raise
                    self._client.put_secret_value(SecretId=stored.name, SecretString=stored.value())
        except (ClientError, BotoCoreError):
            self.forget(stored.name)
            raise SecretsUnavailable("the API key could not be stored; retry shortly") from None
        self._remember(stored, self._clock())

    def delete(self, name: str) -> bool:
        """Delete the secret at once (no recovery window); False if there was none (Secrets
        Manager may answer a forced deletion of a missing secret with success: read first)."""
        if self.get(name, fresh=True) is None:
            return False
        self.forget(name)
        try:
            self._client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return False
            raise SecretsUnavailable("the API key could not be deleted; retry shortly") from None
        except BotoCoreError:
            raise SecretsUnavailable("the API key could not be deleted; retry shortly") from None
        return True

    def forget(self, name: str) -> None:
        """Drop a cached key (the provider refused it, or it was replaced or deleted)."""
        with self._lock:
            self._cache.pop(name, None)

    def _remember(self, stored: StoredApiKey, now: float) -> None:
        with self._lock:
            self._cache[stored.name] = (stored, now + self._cache_seconds)
            self._cache.move_to_end(stored.name)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
