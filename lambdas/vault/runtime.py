"""Wiring: the settings read at cold start and the collaborators every flow takes.

Flows receive a `Services` object instead of reading globals or the environment, so tests and
local mode build one with a controllable clock and in-process AWS.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import boto3
import urllib3
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vault.config import VaultConfig, load_config
from vault.egress import Egress
from vault.errors import SecretsUnavailable, UnknownProvider
from vault.identity import IdentityVerifier
from vault.oauth.client import ProviderClient
from vault.store import Store
from vault.store.apikeys import ApiKeyStore
from vault.store.envelope import DataKeyCache, Envelope

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "vault_config.json"
SECRET_MAX_AGE_SECONDS = 300
# Bounded time on every AWS call (an API Gateway request has 30 s); the store builds every
# request itself, so botocore's client-side parameter validation is skipped (~0.1 ms a call).
AWS_CLIENTS = Config(
    connect_timeout=2,
    read_timeout=5,
    parameter_validation=False,
    retries={"mode": "standard", "max_attempts": 3},
)


T = TypeVar("T")


class Lazy(Generic[T]):
    """A collaborator built at its first use, once (thread-safe). Secrets Manager serves only the
    requests that read a client secret or an API key: a container whose first request reads
    neither does not build its client (~6 ms of CPU here, beside ~50 ms for the container's
    first boto3 client and ~11 ms for the next)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._built: T | None = None
        self._lock = threading.Lock()

    def built(self) -> T:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
        return self._built

    def __getattr__(self, name: str) -> Any:
        """The built object's attributes (a client's operations), so it stands for the client."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.built(), name)


class Settings(BaseModel):
    """The function's environment, validated once at cold start."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    table_name: str = Field(min_length=3)
    replay_table_name: str = Field(min_length=3)
    key_id: str = Field(min_length=1)
    callback_url: str = Field(pattern=r"^https?://")
    client_secret_prefix: str = Field(min_length=1)
    api_key_secret_prefix: str | None = Field(default=None, min_length=1)
    """API-key secrets' names start with this (default: beside the client secrets,
    `.../apikey/` for `.../provider/`)."""
    vault_config_path: str = str(DEFAULT_CONFIG_PATH)
    egress_allow_loopback: bool = False
    """The proxy may call loopback addresses: set by local mode (and the tests), whose provider
    APIs listen on 127.0.0.1; never by the deployed stack."""

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        names = (
            "table_name",
            "replay_table_name",
            "key_id",
            "callback_url",
            "client_secret_prefix",
            "api_key_secret_prefix",
            "vault_config_path",
            "egress_allow_loopback",
        )
        values = {n: env[n.upper()] for n in names if n.upper() in env}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            missing = ", ".join(str(e["loc"][0]).upper() for e in exc.errors())
            raise RuntimeError(
                f"the vault's environment is incomplete or invalid: {missing}"
            ) from None

    @property
    def api_key_prefix(self) -> str:
        if self.api_key_secret_prefix is not None:
            return self.api_key_secret_prefix
        return self.client_secret_prefix.removesuffix("provider/") + "apikey/"


@dataclass
class Services:
    """Everything a flow needs, built once per container."""

    config: VaultConfig
    settings: Settings
    store: Store
    envelope: Envelope
    identity: IdentityVerifier
    providers: dict[str, ProviderClient]
    egress: Egress
    api_keys: ApiKeyStore
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def provider(self, name: str) -> ProviderClient:
        client = self.providers.get(name)
        if client is None:
            raise UnknownProvider(f"no provider named {name!r} is configured (providers)")
        return client

    def now(self) -> int:
        return int(self.clock())


def build_services(
    settings: Settings | None = None,
    *,
    config: VaultConfig | None = None,
    session: boto3.session.Session | None = None,
    clock: Callable[[], float] = time.time,
) -> Services:
    settings = settings or Settings.from_environ()
    config = config or load_config(settings.vault_config_path)
    session = session or boto3.session.Session()
    http = urllib3.PoolManager(num_pools=8, maxsize=8)
    secretsmanager = Lazy(lambda: session.client("secretsmanager", config=AWS_CLIENTS))
    secrets = Lazy(lambda: SecretsProvider(boto3_client=secretsmanager.built()))

    def secret_of(name: str) -> Callable[[], str | None]:
        def fetch() -> str | None:
            try:
                value = secrets.built().get(
                    settings.client_secret_prefix + name, max_age=SECRET_MAX_AGE_SECONDS
                )
            except GetParameterError as exc:
                raise SecretsUnavailable(
                    f"the client secret of provider {name!r} could not be read"
                ) from exc
            return value if isinstance(value, str) else None

        return fetch

    providers = {
        name: ProviderClient(name, cfg, http, secret_of(name), clock)
        for name, cfg in config.providers.items()
    }
    return Services(
        config=config,
        settings=settings,
        store=Store(
            session.client("dynamodb", config=AWS_CLIENTS),
            settings.table_name,
            settings.replay_table_name,
        ),
        envelope=Envelope(
            session.client("kms", config=AWS_CLIENTS), settings.key_id, DataKeyCache()
        ),
        identity=IdentityVerifier(config, http, clock),
        providers=providers,
        egress=Egress(allow_loopback=settings.egress_allow_loopback),
        api_keys=ApiKeyStore(secretsmanager, settings.api_key_prefix, settings.key_id),
        clock=clock,
    )


_current: Services | None = None


def services() -> Services:
    """The container's services, built on first use (cold start)."""
    global _current
    if _current is None:
        _current = build_services()
    return _current


def use_services(value: Services | None) -> None:
    """Install (or with None, forget) the services the handlers use: tests and local mode."""
    global _current
    _current = value
