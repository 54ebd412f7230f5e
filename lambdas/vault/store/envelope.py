"""Envelope encryption: KMS data keys, AES-256-GCM, and a bounded data-key cache.

A blob is `0x01 | len(edk) (2 bytes) | edk | nonce (12) | ciphertext+tag`. The KMS encryption
context names what the blob belongs to (purpose, user, provider, grant/session/flow, and the
scopes of a token) and is also the GCM associated data, so a blob copied to another item fails
to decrypt: KMS refuses the data key under the other context, and a cached key still fails the
GCM tag.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import CryptoUnavailable, DecryptionFailed

VERSION = 1
NONCE_BYTES = 12
_REFUSED = {"InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"}


def _canonical(context: Mapping[str, str]) -> bytes:
    return json.dumps(dict(sorted(context.items())), separators=(",", ":")).encode()


@dataclass
class _CachedKey:
    plaintext: bytes
    edk: bytes
    created: float
    uses: int = 0


class DataKeyCache:
    """LRU of plaintext data keys, bounded by entries, age and uses (for encryption)."""

    def __init__(
        self,
        *,
        max_entries: int = 1000,
        max_age_seconds: float = 300.0,
        max_uses: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[bytes, _CachedKey] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries, self.max_age, self.max_uses = max_entries, max_age_seconds, max_uses
        self._clock = clock

    def get(self, key: bytes, *, counting_use: bool) -> _CachedKey | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry.created > self.max_age or (
                counting_use and entry.uses >= self.max_uses
            ):
                del self._entries[key]
                return None
            if counting_use:
                entry.uses += 1
            self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, entry: _CachedKey) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def new_entry(self, plaintext: bytes, edk: bytes) -> _CachedKey:
        return _CachedKey(plaintext=plaintext, edk=edk, created=self._clock())


class Envelope:
    """Encrypts and decrypts small secrets under a KMS key with an encryption context."""

    def __init__(self, kms: Any, key_id: str, cache: DataKeyCache | None = None) -> None:
        self._kms = kms
        self._key_id = key_id
        self._cache = cache if cache is not None else DataKeyCache()

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        aad = _canonical(context)
        entry = self._cache.get(b"enc:" + aad, counting_use=True)
        if entry is None:
            answer = self._call(
                "generate_data_key",
                KeyId=self._key_id,
                KeySpec="AES_256",
                EncryptionContext=dict(context),
            )
            entry = self._cache.new_entry(answer["Plaintext"], answer["CiphertextBlob"])
            entry.uses = 1
            self._cache.put(b"enc:" + aad, entry)
            self._cache.put(
                b"dec:" + aad + entry.edk, self._cache.new_entry(entry.plaintext, entry.edk)
            )
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(entry.plaintext).encrypt(nonce, plaintext, aad)
        return struct.pack(">BH", VERSION, len(entry.edk)) + entry.edk + nonce + sealed

    def decrypt(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        if len(blob) < 3 + NONCE_BYTES + 16 or blob[0] != VERSION:
            raise DecryptionFailed("not an envelope blob")
        (edk_len,) = struct.unpack(">H", blob[1:3])
        edk = blob[3 : 3 + edk_len]
        nonce = blob[3 + edk_len : 3 + edk_len + NONCE_BYTES]
        sealed = blob[3 + edk_len + NONCE_BYTES :]
        aad = _canonical(context)
        entry = self._cache.get(b"dec:" + aad + edk, counting_use=False)
        if entry is None:
            answer = self._call(
                "decrypt", CiphertextBlob=edk, KeyId=self._key_id, EncryptionContext=dict(context)
            )
            entry = self._cache.new_entry(answer["Plaintext"], edk)
            self._cache.put(b"dec:" + aad + edk, entry)
        try:
            return AESGCM(entry.plaintext).decrypt(nonce, sealed, aad)
        except InvalidTag as exc:
            raise DecryptionFailed("ciphertext does not belong to this item") from exc

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._kms, operation)(**kwargs)
            return result
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _REFUSED and operation == "decrypt":
                raise DecryptionFailed("the key service refused this ciphertext") from exc
            raise CryptoUnavailable("the key service is unavailable; retry shortly") from exc
        except BotoCoreError as exc:
            raise CryptoUnavailable("the key service is unavailable; retry shortly") from exc
