"""In-process moto, made as atomic as the real services.

moto handles each request in plain Python without a lock, so two threads can interleave inside
one conditional write; DynamoDB never does that. Serialising moto's request handling restores
the per-request atomicity our single-flight refresh relies on. For speed only: its table backups
share stream records, as in local mode (agent_vault_local/moto_streams.py), and a KMS key's
unused key pair is made on first use. Nothing of ours is replaced.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from moto.kms import models as kms_models
from moto.kms.utils import generate_private_key as _generate_private_key

from agent_vault_local.moto_streams import share_stream_records

REGION = "eu-west-1"
ACCOUNT = "123456789012"
_lock = threading.RLock()
_original_call = BotocoreStubber.__call__


def _atomic_call(self: BotocoreStubber, event_name: str, request: Any, **kwargs: Any) -> Any:
    with _lock:
        return _original_call(self, event_name, request, **kwargs)


BotocoreStubber.__call__ = _atomic_call  # type: ignore[method-assign]
share_stream_records()


class KeyPairOnFirstUse:
    """moto makes an RSA-2048 key pair for every KMS key, a symmetric one too (about 65 ms a
    test), and uses it only to sign, verify or give the public key: made on first use here."""

    def __init__(self, key_spec: str) -> None:
        self.key_spec = key_spec
        self.made: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy and pickle ask for protocols: not a use of the key
            raise AttributeError(name)
        if self.made is None:
            self.made = _generate_private_key(self.key_spec)
        return getattr(self.made, name)


kms_models.generate_private_key = KeyPairOnFirstUse  # type: ignore[attr-defined,assignment]


class RequestCounter:
    """Counts AWS requests by service and operation (a botocore event hook)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def attach(self, session: boto3.session.Session) -> None:
        session.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[f"{model.service_model.service_name}:{model.name}"] += 1

    def total(self, service: str) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith(service + ":"))

    def reset(self) -> None:
        self.counts.clear()


_LOADER = botocore.loaders.create_loader()
"""One service-model loader per test process. A new boto3 session has a loader of its own, which
reads every service's model from disk again: about 40 ms per client, a quarter of a second per
test. The models are the same files; each test still gets its own session and clients."""


def _session() -> boto3.session.Session:
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    session = boto3.session.Session(
        botocore_session=core,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # boto3 adds its own data folder to the loader at each session: keep one of each
    _LOADER.search_paths[:] = dict.fromkeys(_LOADER.search_paths)
    return session


@contextmanager
def aws() -> Iterator[boto3.session.Session]:
    """A moto account for one test: a boto3 session whose clients all reach it."""
    with mock_aws():
        yield _session()
