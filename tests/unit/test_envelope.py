"""Envelope encryption: KMS data keys, AES-GCM, the encryption context and the data-key cache."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from tests.support.aws import RequestCounter, aws
from vault.errors import CryptoUnavailable, DecryptionFailed
from vault.store.envelope import DataKeyCache, Envelope

CONTEXT = {"purpose": "token", "user": "u1", "provider": "calendar", "session": "ses_a"}


@pytest.fixture
def kms() -> Iterator[tuple[boto3.session.Session, str, RequestCounter]]:
    with aws() as session:
        counter = RequestCounter()
        counter.attach(session)
        key = session.client("kms").create_key()["KeyMetadata"]["Arn"]
        counter.reset()
        yield session, key, counter


def test_round_trip_and_ciphertext_is_not_plaintext(kms) -> None:
    session, key, _ = kms
    envelope = Envelope(session.client("kms"), key)
    blob = envelope.encrypt(b"secret-token", CONTEXT)
    assert b"secret-token" not in blob
    assert envelope.decrypt(blob, CONTEXT) == b"secret-token"


def test_blob_moved_to_another_context_does_not_decrypt_even_with_a_warm_cache(kms) -> None:
    session, key, _ = kms
    envelope = Envelope(session.client("kms"), key)
    blob = envelope.encrypt(b"secret-token", CONTEXT)
    other = {**CONTEXT, "session": "ses_b"}
    with pytest.raises(DecryptionFailed):
        envelope.decrypt(blob, other)  # KMS refuses the data key under another context
    cold = Envelope(session.client("kms"), key, DataKeyCache())
    with pytest.raises(DecryptionFailed):
        cold.decrypt(blob, {**CONTEXT, "user": "u2"})


def test_tampered_blob_fails_the_tag(kms) -> None:
    session, key, _ = kms
    envelope = Envelope(session.client("kms"), key)
    blob = bytearray(envelope.encrypt(b"secret-token", CONTEXT))
    blob[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        envelope.decrypt(bytes(blob), CONTEXT)
    with pytest.raises(DecryptionFailed):
        envelope.decrypt(b"\x02garbage" * 10, CONTEXT)


def test_warm_decrypts_make_no_kms_call(kms) -> None:
    session, key, counter = kms
    envelope = Envelope(session.client("kms"), key)
    blob = envelope.encrypt(b"secret-token", CONTEXT)
    assert counter.counts["kms:GenerateDataKey"] == 1
    for _ in range(100):
        envelope.decrypt(blob, CONTEXT)
    assert counter.total("kms") == 1  # the encryption's data key serves every decrypt


def test_a_cold_container_decrypts_once_then_caches(kms) -> None:
    session, key, counter = kms
    blob = Envelope(session.client("kms"), key).encrypt(b"secret-token", CONTEXT)
    cold = Envelope(session.client("kms"), key)
    for _ in range(10):
        cold.decrypt(blob, CONTEXT)
    assert counter.counts["kms:Decrypt"] == 1


def test_cache_bounds_age_uses_and_entries() -> None:
    now = [0.0]
    cache = DataKeyCache(max_entries=2, max_age_seconds=10, max_uses=2, clock=lambda: now[0])
    cache.put(b"a", cache.new_entry(b"k" * 32, b"edk"))
    assert cache.get(b"a", counting_use=True) is not None
    assert cache.get(b"a", counting_use=True) is not None
    assert cache.get(b"a", counting_use=True) is None  # used up
    cache.put(b"b", cache.new_entry(b"k" * 32, b"edk"))
    now[0] = 11
    assert cache.get(b"b", counting_use=False) is None  # too old
    for name in (b"c", b"d", b"e"):
        cache.put(name, cache.new_entry(b"k" * 32, b"edk"))
    assert cache.get(b"c", counting_use=False) is None  # evicted: only 2 entries kept
    assert cache.get(b"e", counting_use=False) is not None


def test_kms_failure_is_crypto_unavailable(kms) -> None:
    session, _key, _ = kms
    envelope = Envelope(session.client("kms"), "arn:aws:kms:eu-west-1:123456789012:key/nope")
    with pytest.raises(CryptoUnavailable):
        envelope.encrypt(b"x", CONTEXT)
