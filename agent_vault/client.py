"""The Agent Vault client: session, proofs, SigV4, typed errors, token cache.

>>> client = VaultClient("https://abc.execute-api.eu-west-1.amazonaws.com",
...                      user=UserIdentity(id_token=the_users_id_token))
>>> token = client.get_token("calendar", ["calendar.read"])  # doctest: +SKIP
>>> with client.http("calendar") as api:  # doctest: +SKIP
...     events = api.get("/calendar/v3/events").json()

Every request is signed with SigV4 (for ``execute-api``, or ``lambda`` at a function URL) with
the caller's AWS credentials (the
botocore credential chain: ECS task role, EKS Pod Identity / IRSA, Lambda role, IAM Roles Anywhere
through ``credential_process``, environment, profiles) and carries a fresh DPoP proof signed by the
session key, which lives only in this object's memory.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

if TYPE_CHECKING:
    import botocore.session
    import httpx
    from botocore.credentials import Credentials, ReadOnlyCredentials

from agent_vault.errors import (
    ConsentRequired,
    InvalidUserToken,
    SessionEnded,
    SessionNotFound,
    VaultConnectionError,
    VaultError,
    error_from_response,
)
from agent_vault.proofs import SessionKey

__all__ = [
    "AccessToken",
    "AsyncVaultClient",
    "Authorization",
    "FlowCompletion",
    "ProviderAccess",
    "SessionInfo",
    "UserIdentity",
    "VaultClient",
]

log = logging.getLogger("agent_vault")

SERVICE = "execute-api"
"""The SigV4 service of API Gateway URLs and custom domains."""
FUNCTION_URL_SERVICE = "lambda"
"""The SigV4 service of a Lambda function URL (``<id>.lambda-url.<region>.on.aws``)."""
USER_AGENT = "agent-vault-sdk/0.1.0"
REUSE_MARGIN_FRACTION = 0.5
"""A cached token is reused while at least ``min(refresh_margin, half its lifetime)`` is left,
as the vault does: short-lived provider tokens (seconds or minutes) are still cached."""
_EXECUTE_API_HOST = re.compile(
    r"\.execute-api\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(?:\.cn)?$"
)
_FUNCTION_URL_HOST = re.compile(r"^[a-z0-9]+\.lambda-url\.([a-z]{2}(?:-[a-z]+)+-\d)\.on\.aws$")
TOKEN_PROOF_HEADER = "X-Agent-Vault-Token-DPoP"  # noqa: S105 - a header name  # nosec B105
USER_TOKEN_HEADER = "X-Agent-Vault-User-Token"  # noqa: S105 - a header name  # nosec B105
"""Carries the logged-in user's identity token to the connections routes."""
"""Carries a ``dpop`` agent's proof for the provider's token endpoint on ``POST .../tokens``."""
_RETRYABLE_CONNECTION_ERRORS = (
    urllib3.exceptions.ConnectTimeoutError,  # includes NewConnectionError, NameResolutionError
    urllib3.exceptions.ProtocolError,  # a pooled keep-alive connection closed by the server
)

T = TypeVar("T")


@dataclass(frozen=True)
class UserIdentity:
    """Who the agent acts for: an identity token (JWT) from the application's identity provider,
    or — for agents the deployment trusts to assert it — a user id."""

    id_token: str | None = field(default=None, repr=False)
    user_id: str | None = None

    def __post_init__(self) -> None:
        if (self.id_token is None) == (self.user_id is None):
            raise ValueError("give exactly one of id_token or user_id")

    @classmethod
    def from_id_token(cls, id_token: str) -> UserIdentity:
        return cls(id_token=id_token)

    @classmethod
    def from_user_id(cls, user_id: str) -> UserIdentity:
        return cls(user_id=user_id)

    def to_json(self) -> dict[str, str]:
        if self.id_token is not None:
            return {"id_token": self.id_token}
        assert self.user_id is not None
        return {"user_id": self.user_id}


@dataclass(frozen=True)
class AccessToken:
    """A session-scoped access token minted by the vault for this session."""

    access_token: str = field(repr=False)
    expires_at: float
    """Epoch seconds (computed from ``expires_in`` when the request was sent)."""
    scope: str
    provider: str
    token_type: str = "Bearer"  # noqa: S105 - the token type, not a token
    lifetime: float | None = None
    """Seconds it had left when the vault handed it out (``expires_in``)."""

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.scope.replace(",", " ").split())

    def expires_in(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    @property
    def authorization_header(self) -> str:
        return f"{self.token_type} {self.access_token}"


@dataclass(frozen=True)
class ApiKey:
    """An API-key provider's key handed to this session (flow 12, ``returned`` delivery), and
    where the provider expects it: a header (with its prefix, e.g. ``Bearer ``) or a query
    parameter. Never cached by the SDK: ask again for each batch of calls, so a rotated or
    deleted key is not kept."""

    api_key: str = field(repr=False)
    provider: str
    header: str | None = None
    prefix: str = ""
    query_parameter: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiKey:
        header, query = data.get("header"), data.get("query_parameter")
        return cls(
            api_key=str(data["api_key"]),
            provider=str(data.get("provider", "")),
            header=str(header) if header else None,
            prefix=str(data.get("prefix") or ""),
            query_parameter=str(query) if query else None,
        )

    @property
    def headers(self) -> dict[str, str]:
        """The header to send (empty when the key goes in the query)."""
        return {self.header: self.prefix + self.api_key} if self.header else {}

    @property
    def params(self) -> dict[str, str]:
        """The query parameter to send (empty when the key goes in a header)."""
        return {self.query_parameter: self.api_key} if self.query_parameter else {}


@dataclass(frozen=True)
class Authorization:
    """A consent flow the vault started: send the user to ``authorization_url``."""

    flow_id: str
    authorization_url: str
    expires_at: float


@dataclass(frozen=True)
class FlowCompletion:
    """The answer of ``POST /v1/flows/{id}/complete``: the grant is active."""

    flow_id: str
    status: str
    grant_id: str
    provider: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Connection:
    """One of the logged-in user's grants to this agent (``GET /v1/connections``)."""

    grant_id: str
    agent: str
    provider: str
    scopes: tuple[str, ...]
    status: str
    """``active``, ``broken`` (see ``broken_reason``) or ``revoking``."""
    broken_reason: str | None
    since: int
    """When the user consented (epoch seconds)."""
    last_used_at: int | None
    """The last time the vault minted an access token from it for one of the agent's sessions
    (a refresh at the provider); a cached token handed out again does not move it. None: no
    token minted from it since consent."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Connection:
        last_used = data.get("last_used_at")
        return cls(
            grant_id=str(data["grant_id"]),
            agent=str(data.get("agent", "")),
            provider=str(data.get("provider", "")),
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            status=str(data.get("status", "")),
            broken_reason=data.get("broken_reason"),
            since=int(data.get("since", 0)),
            last_used_at=None if last_used is None else int(last_used),
        )


@dataclass(frozen=True)
class ConnectionPage:
    """One page of connections; ``next_cursor`` (None at the end) asks for the next."""

    items: tuple[Connection, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class ProviderAccess:
    """How the session's agent reaches one provider (the session answer's ``providers``)."""

    delivery: str
    """``proxy`` (the token never leaves the vault), ``dpop`` (a token bound to the session key)
    or ``bearer`` (a plain bearer token)."""
    api_base_urls: tuple[str, ...] = ()
    """The provider's API base URLs, the configured first one the default."""
    scopes: tuple[str, ...] = ()
    """The scopes to ask for, when the vault names them."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProviderAccess:
        bases = data.get("api_base_urls") or ()
        scopes = data.get("scopes") or ()
        return cls(
            delivery=str(data.get("delivery", "")),
            api_base_urls=tuple(str(url) for url in bases),
            scopes=normalize_scopes(scopes if isinstance(scopes, str) else map(str, scopes)),
        )


@dataclass(frozen=True)
class SessionInfo:
    """A vault session (docs/api.md)."""

    session_id: str
    agent: str
    user: dict[str, str]
    task_id: str | None
    jkt: str
    status: str
    created_at: float
    expires_at: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    providers: dict[str, ProviderAccess] = field(default_factory=dict, compare=False)
    """How the agent reaches each of its providers, when the vault says (``providers``)."""
    parent_session_id: str | None = None
    """A child session's parent (flow 8); None for a session the agent started itself."""
    chain: dict[str, Any] | None = field(default=None, compare=False)
    """Who acts for whom (RFC 8693 ``act``): the user as ``sub``, this actor outermost."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionInfo:
        user = data.get("user") or {}
        providers = data.get("providers")
        return cls(
            session_id=str(data["session_id"]),
            agent=str(data.get("agent", "")),
            user={str(k): str(v) for k, v in dict(user).items()},
            task_id=None if data.get("task_id") is None else str(data["task_id"]),
            jkt=str(data.get("jkt", "")),
            status=str(data.get("status", "")),
            created_at=float(data.get("created_at", 0)),
            expires_at=float(data.get("expires_at", 0)),
            raw=dict(data),
            providers={
                str(name): ProviderAccess.from_json(access)
                for name, access in (providers.items() if isinstance(providers, Mapping) else ())
                if isinstance(access, Mapping)
            },
            parent_session_id=(
                None if data.get("parent_session_id") is None else str(data["parent_session_id"])
            ),
            chain=dict(chain) if isinstance(chain := data.get("chain"), Mapping) else None,
        )


@dataclass(frozen=True)
class Delegation:
    """A child session offered to another agent (flow 8): the handle a sub-agent claims with
    ``VaultClient.claim_delegation``. Pass ``delegation_id`` to the sub-agent; it is worth
    nothing to anyone but that agent's IAM role, and only once."""

    delegation_id: str
    agent: str
    """The agent that may claim it."""
    providers: dict[str, tuple[str, ...]]
    """What the child may use: provider -> scopes."""
    parent_session_id: str
    claim_by: float
    """Claimable until then (epoch seconds)."""
    expires_at: float
    """The child's end: never past its parent's."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delegation:
        providers = data.get("providers") or {}
        return cls(
            delegation_id=str(data["delegation_id"]),
            agent=str(data.get("agent", "")),
            providers={
                str(name): normalize_scopes(map(str, scopes))
                for name, scopes in (providers.items() if isinstance(providers, Mapping) else ())
                if isinstance(scopes, list)
            },
            parent_session_id=str(data.get("parent_session_id", "")),
            claim_by=float(data.get("claim_by", 0)),
            expires_at=float(data.get("expires_at", 0)),
            raw=dict(data),
        )


def normalize_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes as a sorted tuple without duplicates (a string is split on spaces/commas)."""
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    return tuple(sorted({s for s in items if s}))


def region_from_url(url: str) -> str | None:
    """The region of an ``execute-api`` or a function URL (None for custom domains and
    loopback)."""
    host = urlsplit(url).hostname or ""
    match = _EXECUTE_API_HOST.search(host) or _FUNCTION_URL_HOST.match(host)
    return match.group(1) if match else None


def is_function_url(url: str) -> bool:
    """A Lambda function URL (``https://<id>.lambda-url.<region>.on.aws``)."""
    return _FUNCTION_URL_HOST.match(urlsplit(url).hostname or "") is not None


def service_for(url: str) -> str:
    """The SigV4 service a request to ``url`` is signed for: ``lambda`` at a function URL,
    else ``execute-api``."""
    return FUNCTION_URL_SERVICE if is_function_url(url) else SERVICE


def invoke_permission(url: str) -> str:
    """The IAM permission a caller needs to call the vault at ``url``."""
    if is_function_url(url):
        return "lambda:InvokeFunctionUrl and lambda:InvokeFunction (via the URL) on the function"
    return "execute-api:Invoke on the route"


class VaultClient:
    """A client for one agent session at Agent Vault.

    Thread-safe: one client may be shared by threads; the session starts once (lazily, on the first
    call that needs it) and tokens are cached until ``min(refresh_margin, half their lifetime)``
    seconds before expiry.
    """

    def __init__(
        self,
        base_url: str,
        *,
        proxy_url: str | None = None,
        user: UserIdentity | None = None,
        credentials: Credentials | ReadOnlyCredentials | Any | None = None,
        region: str | None = None,
        timeout: float = 10.0,
        http: urllib3.PoolManager | None = None,
        session_ttl_seconds: int | None = None,
        max_attempts: int = 3,
        max_backoff: float = 5.0,
        refresh_margin: float = 60.0,
        auto_renew: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        signing_service: str | None = None,
    ) -> None:
        if signing_service not in (None, SERVICE, FUNCTION_URL_SERVICE):
            raise ValueError(
                f"signing_service {signing_service!r}: give {SERVICE!r} (API Gateway) or"
                f" {FUNCTION_URL_SERVICE!r} (a function URL)"
            )
        self.signing_service = signing_service
        """The SigV4 service every request is signed for; None: from each URL's host (a
        function URL's `lambda-url` host is `lambda`, any other `execute-api`). Give `lambda`
        for a function URL behind a custom domain, or local mode's function URLs."""
        parts = urlsplit(base_url)
        if parts.scheme not in {"https", "http"} or not parts.netloc:
            raise ValueError(f"base_url {base_url!r} is not an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not carry a query or fragment")
        self.base_url = base_url.rstrip("/")
        if proxy_url is not None:
            proxy_parts = urlsplit(proxy_url)
            if proxy_parts.scheme not in {"https", "http"} or not proxy_parts.netloc:
                raise ValueError(f"proxy_url {proxy_url!r} is not an absolute http(s) URL")
            if proxy_parts.query or proxy_parts.fragment:
                raise ValueError("proxy_url must not carry a query or fragment")
            if region_from_url(proxy_url) not in {None, region_from_url(base_url)}:
                raise ValueError("proxy_url is in another region than base_url")
        self.proxy_url = (proxy_url or base_url).rstrip("/")
        """Where proxied calls go (``{proxy_url}/v1/sessions/{id}/proxy/...``): the vault's API
        (``base_url``), or the egress proxy's own function URL."""
        self.user = user
        self._botocore_session: botocore.session.Session | None = None
        self._credentials = credentials  # None: botocore's chain, resolved at the first request
        self.region = region or region_from_url(base_url) or self._default_region()
        self.timeout = timeout
        self._http = http if http is not None else urllib3.PoolManager(maxsize=10)
        self.session_ttl_seconds = session_ttl_seconds
        self.max_attempts = max(1, max_attempts)
        self.max_backoff = max_backoff
        self.refresh_margin = refresh_margin
        self.auto_renew = auto_renew
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._key_locks: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], AccessToken] = {}
        self._token_endpoints: dict[str, tuple[str, str | None]] = {}
        """Per ``dpop`` provider: its token endpoint (the proof's htu) and last nonce."""
        self._key: SessionKey | None = None
        self._session: SessionInfo | None = None

    # -- configuration ---------------------------------------------------------------------------

    @classmethod
    def from_env(
        cls,
        *,
        user: UserIdentity | None = None,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> VaultClient:
        """A client for ``AGENT_VAULT_URL`` (region from ``AGENT_VAULT_REGION``/``AWS_REGION``;
        proxied calls to ``AGENT_VAULT_PROXY_URL`` if set, else to ``AGENT_VAULT_URL``; the
        SigV4 service from ``AGENT_VAULT_SIGNING_SERVICE`` if set, else from the URLs)."""
        import os

        env = os.environ if environ is None else environ
        base_url = env.get("AGENT_VAULT_URL")
        if not base_url:
            raise ValueError("AGENT_VAULT_URL is not set")
        region = kwargs.pop("region", None) or env.get("AGENT_VAULT_REGION") or None
        proxy_url = kwargs.pop("proxy_url", None) or env.get("AGENT_VAULT_PROXY_URL") or None
        signing_service = (
            kwargs.pop("signing_service", None) or env.get("AGENT_VAULT_SIGNING_SERVICE") or None
        )
        return cls(
            base_url,
            proxy_url=proxy_url,
            user=user,
            region=region,
            signing_service=signing_service,
            **kwargs,
        )

    def _boto_session(self) -> botocore.session.Session:
        if self._botocore_session is None:
            import botocore.session  # only when the default chain is used (it is heavy)

            self._botocore_session = botocore.session.get_session()
        return self._botocore_session

    def _default_credentials(self) -> Any:
        credentials = self._boto_session().get_credentials()
        if credentials is None:
            raise VaultError(
                "no AWS credentials found (botocore's chain: environment, ECS/EKS container"
                " credentials, instance profile, profiles, credential_process)",
                code="no_credentials",
            )
        return credentials

    def _default_region(self) -> str:
        region = self._boto_session().get_config_variable("region")
        if not region:
            raise ValueError(
                "cannot tell the vault's region: pass region=, or set AWS_REGION"
                " (needed to sign requests to a custom domain)"
            )
        return str(region)

    # -- state -----------------------------------------------------------------------------------

    @property
    def session(self) -> SessionInfo | None:
        """The current session (None before the first call / after ``end_session``)."""
        return self._session

    @property
    def session_id(self) -> str | None:
        session = self._session
        return session.session_id if session else None

    # -- HTTP ------------------------------------------------------------------------------------

    def _sign(self, request: AWSRequest) -> None:
        credentials: Any = self._credentials
        if credentials is None:
            credentials = self._credentials = self._default_credentials()
        # Refreshable credentials (task role, Pod Identity...) give a consistent snapshot.
        freeze = getattr(credentials, "get_frozen_credentials", None)
        frozen = freeze() if freeze is not None else credentials
        service = self.signing_service or service_for(str(request.url))
        SigV4Auth(frozen, service, self.region).add_auth(request)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return random.uniform(0, min(self.max_backoff, 0.2 * 2**attempt))  # noqa: S311 - jitter # nosec B311

    def signed_headers(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        key: SessionKey | None = None,
        session_id: str | None = None,
        proof: bool = True,
    ) -> dict[str, str]:
        """The headers of one request to the vault: ``headers``, a fresh proof of the session
        key (``DPoP``, over method and URL) unless ``proof=False``, and a SigV4 signature over
        method, URL (query included), these headers and ``body``. Send exactly ``body`` to
        ``url`` with them; headers added afterwards are sent unsigned."""
        send = dict(headers or {})
        if proof:
            signing_key = key or self._key
            if signing_key is None:
                raise VaultError("no session key: start a session first", code="no_session")
            send["DPoP"] = signing_key.proof(method, url, session_id=session_id)
        request = AWSRequest(method=method, url=url, data=body, headers=send)
        self._sign(request)
        return {str(k): str(v) for k, v in request.prepare().headers.items()}

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        key: SessionKey | None = None,
        session_id: str | None = None,
        proof: bool = True,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ) -> Any:
        """One signed API call (with retries); returns the parsed JSON answer or raises.
        ``headers`` are sent (and signed) too; a callable is called for each attempt (a proof
        in them must be fresh each time)."""
        url = self.base_url + path
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            extra = dict((headers() if callable(headers) else headers) or {})
            extra.update({"Accept": "application/json", "User-Agent": USER_AGENT})
            if body is not None:
                extra["Content-Type"] = "application/json"
            send_headers = self.signed_headers(
                method, url, data, extra, key=key, session_id=session_id, proof=proof
            )
            try:
                response = self._http.request(
                    method,
                    url,
                    body=data if data else None,
                    headers=send_headers,
                    retries=False,
                    redirect=False,
                    timeout=urllib3.Timeout(total=self.timeout),
                    preload_content=True,
                )
            except _RETRYABLE_CONNECTION_ERRORS as exc:
                if attempt < self.max_attempts:
                    delay = self._backoff(attempt, None)
                    log.debug(
                        "vault connection failed (%s); retry %d in %.2fs", exc, attempt, delay
                    )
                    self._sleep(delay)
                    continue
                raise VaultConnectionError(f"cannot reach the vault at {url}: {exc}") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise VaultConnectionError(f"vault request to {url} failed: {exc}") from exc
            status = response.status
            raw = response.data or b""
            if 200 <= status < 300:
                if not raw:
                    return {}
                try:
                    return json.loads(raw)
                except ValueError as exc:
                    raise VaultError(
                        f"the vault answered {status} with a body that is not JSON", status=status
                    ) from exc
            error = error_from_response(status, dict(response.headers.items()), raw)
            if status >= 500 and error.retry_after is not None and attempt < self.max_attempts:
                delay = self._backoff(attempt, error.retry_after)
                log.debug(
                    "vault answered %s (%s); retry %d in %.2fs", status, error.code, attempt, delay
                )
                self._sleep(delay)
                continue
            raise error

    # -- sessions --------------------------------------------------------------------------------

    def start_session(
        self, *, user: UserIdentity | None = None, ttl_seconds: int | None = None
    ) -> SessionInfo:
        """Start a (new) session with a new key; a previous session of this client is forgotten."""
        identity = user or self.user
        if identity is None:
            raise ValueError("start_session needs the user's identity (user=UserIdentity(...))")
        with self._lock:
            key = SessionKey()
            body: dict[str, Any] = {"user": identity.to_json()}
            ttl = ttl_seconds if ttl_seconds is not None else self.session_ttl_seconds
            if ttl is not None:
                body["ttl_seconds"] = ttl
            answer = self.request("POST", "/v1/sessions", body, key=key)
            info = SessionInfo.from_json(answer)
            if info.jkt and info.jkt != key.thumbprint:
                raise VaultError(
                    "the vault bound the session to another key than ours", code="key_mismatch"
                )
            self.user = identity
            self._key = key
            self._session = info
            self._tokens.clear()
            log.debug("vault session %s started (agent %s)", info.session_id, info.agent)
            return info

    def ensure_session(self) -> SessionInfo:
        """The current session: started if there is none, renewed when it is about to expire
        (``auto_renew``; a long-running task keeps its session and grants without new consent)."""
        session = self._session
        if session is not None and not self._due_for_renewal(session):
            return session
        with self._lock:
            session = self._session
            if session is None:
                return self.start_session()
            if self._due_for_renewal(session):
                try:
                    # the vault wants the user's identity again once its first window passed
                    # (identity_required): present the one this client holds
                    return self.renew_session(user=self.user)
                except (SessionEnded, InvalidUserToken):
                    return self.start_session()
            return session

    def _due_for_renewal(self, session: SessionInfo) -> bool:
        return (
            self.auto_renew
            and not session.parent_session_id  # a child is never renewed: it ends with its parent
            and session.expires_at > 0
            and session.expires_at - self.refresh_margin <= time.time()
        )

    def renew_session(
        self, *, user: UserIdentity | None = None, ttl_seconds: int | None = None
    ) -> SessionInfo:
        """Move a live session's expiry (``POST .../renew``), optionally presenting a fresh
        identity token of the same user (a long-running agent outlives the one it started with).
        """
        with self._lock:
            session = self._session
            if session is None:
                raise VaultError("no session to renew: start one first", code="no_session")
            sid = session.session_id
            body: dict[str, Any] = {}
            if user is not None:
                body["user"] = user.to_json()
            ttl = ttl_seconds if ttl_seconds is not None else self.session_ttl_seconds
            if ttl is not None:
                body["ttl_seconds"] = ttl
            answer = self.request("POST", f"/v1/sessions/{_seg(sid)}/renew", body, session_id=sid)
            info = _keep_providers(SessionInfo.from_json(answer), session)
            self._session = info
            if user is not None:
                self.user = user
            return info

    # -- delegation (flow 8) ---------------------------------------------------------------------

    def delegate(
        self,
        *,
        agent: str,
        providers: Mapping[str, str | Iterable[str]],
        ttl_seconds: int | None = None,
    ) -> Delegation:
        """Offer a child session of this session to ``agent`` (one of this agent's
        ``may_delegate_to``): at most this session's providers and scopes, for at most what is
        left of its life (default: all of it, up to the vault's session TTL). Hand the returned
        ``delegation_id`` to the sub-agent, which claims it with its own client
        (``claim_delegation``); ending this session ends the child."""
        session = self.ensure_session()
        sid = session.session_id
        body: dict[str, Any] = {
            "agent": agent,
            "providers": {name: list(normalize_scopes(s)) for name, s in providers.items()},
        }
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        answer = self.request("POST", f"/v1/sessions/{_seg(sid)}/delegations", body, session_id=sid)
        return Delegation.from_json(answer)

    def claim_delegation(self, handle: Delegation | str) -> SessionInfo:
        """Claim a delegation made for this client's agent: this client's session becomes the
        child session, bound to this task's IAM principal and a new key of this client (no key
        or token comes from the parent). ``get_token``, ``http()`` and the decorators then work
        as in any session, within what was delegated; the child is never renewed, and ends with
        its parent (``SessionEnded``, ``reason`` ``parent_ended``)."""
        delegation_id = handle.delegation_id if isinstance(handle, Delegation) else str(handle)
        with self._lock:
            key = SessionKey()
            answer = self.request("POST", f"/v1/delegations/{_seg(delegation_id)}/claim", key=key)
            info = SessionInfo.from_json(answer)
            if info.jkt and info.jkt != key.thumbprint:
                raise VaultError(
                    "the vault bound the session to another key than ours", code="key_mismatch"
                )
            self._key = key
            self._session = info
            self._tokens.clear()
            log.debug("vault child session %s claimed (agent %s)", info.session_id, info.agent)
            return info

    def get_session(self) -> SessionInfo:
        """Fetch the session's current state from the vault."""
        session = self.ensure_session()
        sid = session.session_id
        answer = self.request("GET", f"/v1/sessions/{_seg(sid)}", session_id=sid)
        info = _keep_providers(SessionInfo.from_json(answer), session)
        with self._lock:
            if self._session is not None and self._session.session_id == sid:
                self._session = info
        return info

    def end_session(self) -> dict[str, Any] | None:
        """End the session (its tokens are revoked upstream). None when there was none."""
        with self._lock:
            session = self._session
            if session is None:
                return None
            sid = session.session_id
            try:
                answer: dict[str, Any] = self.request(
                    "DELETE", f"/v1/sessions/{_seg(sid)}", session_id=sid
                )
            except (SessionEnded, SessionNotFound) as exc:
                answer = {
                    "session_id": sid,
                    "status": "ended",
                    "revoked_tokens": 0,
                    "note": exc.code,
                }
            self._session = None
            self._key = None
            self._tokens.clear()
            return answer

    # -- consent ---------------------------------------------------------------------------------

    def start_authorization(
        self, provider: str, scopes: str | Iterable[str], return_url: str | None = None
    ) -> Authorization:
        """Start consent for ``scopes`` at ``provider``; send the user to the returned URL."""
        session = self.ensure_session()
        sid = session.session_id
        body: dict[str, Any] = {"provider": provider, "scopes": list(normalize_scopes(scopes))}
        if return_url is not None:
            body["return_url"] = return_url
        answer = self.request(
            "POST", f"/v1/sessions/{_seg(sid)}/authorizations", body, session_id=sid
        )
        return Authorization(
            flow_id=str(answer["flow_id"]),
            authorization_url=str(answer["authorization_url"]),
            expires_at=float(answer.get("expires_at", 0)),
        )

    def complete_flow(self, flow_id: str, user: UserIdentity, binding_code: str) -> FlowCompletion:
        """Bind a consented flow to the user who is logged in at the application.

        Call it from the application's return page, which the vault's callback redirected the
        browser to with ``flow_id`` and a one-time ``binding_code`` (it exists nowhere else: the
        agent that started the flow never sees it). Pass the identity of the user whose browser
        arrived there, and only for a flow that browser session started: the grant becomes
        active only if the code is the flow's and the user is the flow's user. A wrong code
        rejects the flow and revokes its tokens (``BindingCodeInvalid``).
        """
        answer = self.request(
            "POST",
            f"/v1/flows/{_seg(flow_id)}/complete",
            {"user": user.to_json(), "binding_code": binding_code},
            proof=False,
        )
        scopes = answer.get("scopes") or []
        if isinstance(scopes, str):
            scopes = scopes.split()
        return FlowCompletion(
            flow_id=str(answer.get("flow_id", flow_id)),
            status=str(answer.get("status", "")),
            grant_id=str(answer.get("grant_id", "")),
            provider=str(answer.get("provider", "")),
            scopes=tuple(str(s) for s in scopes),
        )

    # -- connections (the application, for its logged-in user) -----------------------------------

    def connections(
        self,
        id_token: str,
        *,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ConnectionPage:
        """``GET /v1/connections``: one page of the grants the user whose identity token this
        is gave this agent (the client's credentials must be the agent's role). Pass a page's
        ``next_cursor`` back as ``cursor``, with the same filters, for the next one. Needs no
        session; the token travels in a header, never in the URL."""
        query = {
            name: str(value)
            for name, value in (
                ("provider", provider),
                ("status", status),
                ("limit", limit),
                ("cursor", cursor),
            )
            if value is not None
        }
        path = "/v1/connections" + (f"?{urlencode(query)}" if query else "")
        answer = self.request("GET", path, proof=False, headers=_user_token_header(id_token))
        return ConnectionPage(
            items=tuple(Connection.from_json(c) for c in answer.get("items") or ()),
            next_cursor=answer.get("next_cursor"),
        )

    def all_connections(self, id_token: str, **filters: Any) -> Iterator[Connection]:
        """Every connection of the user to this agent, page after page (``connections``)."""
        cursor: str | None = None
        while True:
            page = self.connections(id_token, cursor=cursor, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def revoke_connection(self, id_token: str, grant_id: str) -> dict[str, Any]:
        """``DELETE /v1/connections/{grant_id}``: revoke one of the user's grants to this agent,
        upstream first; the tokens minted from it die. Another user's grant (or another
        agent's, or none) raises ``NotFound`` (``grant_not_found``). Answers ``{"grant_id",
        "status": "revoked" | "revoke_pending", "revoked_tokens"}``."""
        answer: dict[str, Any] = self.request(
            "DELETE",
            f"/v1/connections/{_seg(grant_id)}",
            proof=False,
            headers=_user_token_header(id_token),
        )
        return answer

    # -- tokens ----------------------------------------------------------------------------------

    def cached_token(self, provider: str, scopes: str | Iterable[str]) -> AccessToken | None:
        """The cached token if it is still good for ``min(refresh_margin, half its lifetime)``
        seconds, else None."""
        cache_key = (provider, normalize_scopes(scopes))
        with self._lock:
            token = self._tokens.get(cache_key)
        if token is None:
            return None
        margin = self.refresh_margin
        if token.lifetime is not None:
            margin = min(margin, REUSE_MARGIN_FRACTION * token.lifetime)
        return token if token.expires_at - margin > self._clock() else None

    def _lock_for(self, cache_key: tuple[str, tuple[str, ...]]) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(cache_key)
            if lock is None:
                lock = self._key_locks[cache_key] = threading.Lock()
            return lock

    def get_token(
        self,
        provider: str,
        scopes: str | Iterable[str],
        *,
        authorize: bool = False,
        return_url: str | None = None,
    ) -> AccessToken:
        """An access token for ``scopes`` at ``provider``, minted for this session.

        Raises :class:`ConsentRequired` when the user has not consented; with ``authorize=True``
        the SDK starts the authorization first and the exception carries ``authorization_url`` and
        ``flow_id``.
        """
        normalized = normalize_scopes(scopes)
        if not normalized:
            raise ValueError("scopes must name at least one scope")
        cache_key = (provider, normalized)
        token = self.cached_token(provider, normalized)
        if token is not None:
            return token
        with self._lock_for(cache_key):
            token = self.cached_token(provider, normalized)
            if token is not None:
                return token
            session = self.ensure_session()
            sid = session.session_id
            sent_at = self._clock()
            try:
                answer = self._token_request(sid, provider, normalized)
            except ConsentRequired as exc:
                if authorize:
                    authorization = self.start_authorization(provider, normalized, return_url)
                    exc.authorization_url = authorization.authorization_url
                    exc.flow_id = authorization.flow_id
                raise
            except SessionEnded:
                with self._lock:
                    self._tokens.clear()
                raise
            expires_in = answer.get("expires_in")
            token = AccessToken(
                access_token=str(answer["access_token"]),
                expires_at=sent_at + (float(expires_in) if expires_in is not None else 0.0),
                scope=str(answer.get("scope", " ".join(normalized))),
                provider=str(answer.get("provider", provider)),
                token_type=str(answer.get("token_type", "Bearer")),
                lifetime=float(expires_in) if expires_in is not None else None,
            )
            if expires_in is not None:
                with self._lock:
                    self._tokens[cache_key] = token
            return token

    def _token_request(self, sid: str, provider: str, scopes: tuple[str, ...]) -> Any:
        """``POST .../tokens``; for a ``dpop`` provider with a proof for its token endpoint in
        ``X-Agent-Vault-Token-DPoP`` (flow 11). The endpoint and nonce come from the vault's
        ``dpop_proof_required`` / ``dpop_nonce_required`` answers (each handled once per call)
        and are remembered for the next requests."""
        path = f"/v1/sessions/{_seg(sid)}/tokens"
        body = {"provider": provider, "scopes": list(scopes)}
        handled: set[str] = set()
        while True:
            target = self._token_endpoints.get(provider)
            key = self._key
            headers = None
            if target is not None and key is not None:
                headers = functools.partial(_token_proof_header, key, *target)
            try:
                return self.request("POST", path, body, session_id=sid, headers=headers)
            except VaultError as exc:
                if exc.code not in {"dpop_proof_required", "dpop_nonce_required"}:
                    raise
                endpoint = exc.problem.get("htu") or (target[0] if target else None)
                fresh_nonce = exc.problem.get("nonce")
                if exc.code in handled or not isinstance(endpoint, str):
                    raise
                handled.add(exc.code)
                with self._lock:
                    self._token_endpoints[provider] = (
                        endpoint,
                        fresh_nonce if isinstance(fresh_nonce, str) else None,
                    )

    def api_key(self, provider: str) -> ApiKey:
        """``POST /v1/sessions/{id}/api-key``: the key of API-key provider ``provider`` for this
        session, where the agent's policy gives it ``returned`` delivery (else
        :class:`DeliveryProxyOnly`: call the provider through ``http(provider)``, which attaches
        the key in the vault). Not cached: each call asks the vault, so a rotation or a deletion
        reaches the agent at its next call."""
        sid = self.ensure_session().session_id
        answer = self.request(
            "POST", f"/v1/sessions/{_seg(sid)}/api-key", {"provider": provider}, session_id=sid
        )
        return ApiKey.from_json(answer)

    def forget_token(self, provider: str, scopes: str | Iterable[str]) -> None:
        """Drop a cached token (e.g. after the resource server answered 401 for it)."""
        with self._lock:
            self._tokens.pop((provider, normalize_scopes(scopes)), None)

    def dpop_proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
    ) -> str:
        """An RFC 9449 proof of the session key for a call at a provider (with ``ath`` when
        ``access_token`` is given): what a DPoP-bound token of this session needs at its API."""
        key = self._key
        if key is None:
            raise VaultError("no session key: start a session first", code="no_session")
        return key.dpop_proof(method, url, nonce=nonce, access_token=access_token)

    # -- the provider's API ------------------------------------------------------------------------

    def provider_access(self, provider: str) -> ProviderAccess | None:
        """How this session's agent reaches ``provider`` (delivery, API base URLs), as the vault
        said when the session started; None when it did not say (or there is no session)."""
        session = self._session
        return session.providers.get(provider) if session is not None else None

    def http(
        self,
        provider: str,
        *,
        api_base: str | None = None,
        scopes: str | Iterable[str] | None = None,
        delivery: str | None = None,
        transport: httpx.BaseTransport | None = None,
        **kwargs: Any,
    ) -> httpx.Client:
        """An ``httpx.Client`` for ``provider``'s API: relative URLs resolve against its API
        base URL (``api_base``, default the first the vault lists) and every request goes the way
        the agent's ``delivery`` says — through the vault's proxy, or with a DPoP-bound or bearer
        token of this session (asked for ``scopes``, default the ones the vault names). Starts
        the session when needed to learn them; ``delivery`` overrides what the vault says.
        ``transport`` is the httpx transport that sends (default ``httpx.HTTPTransport()``; give
        one for TLS, proxy or retry settings); ``kwargs`` go to ``httpx.Client`` (``timeout``,
        ``headers``...). Needs httpx (``pip install "agent-vault[http]"``)."""
        import httpx

        from agent_vault.transport import VaultTransport

        vault_transport = VaultTransport(
            self,
            provider,
            scopes=scopes,
            api_base=api_base,
            delivery=delivery,
            transport=transport,
        )
        return httpx.Client(base_url=vault_transport.base_url, transport=vault_transport, **kwargs)

    def ahttp(
        self,
        provider: str,
        *,
        api_base: str | None = None,
        scopes: str | Iterable[str] | None = None,
        delivery: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncClient:
        """The same as an ``httpx.AsyncClient`` (vault calls run in a worker thread; the
        ``transport`` default is ``httpx.AsyncHTTPTransport()``). Creating it blocks only when
        the session must start first to learn the provider's base URL."""
        import httpx

        from agent_vault.transport import AsyncVaultTransport

        vault_transport = AsyncVaultTransport(
            self,
            provider,
            scopes=scopes,
            api_base=api_base,
            delivery=delivery,
            transport=transport,
        )
        return httpx.AsyncClient(
            base_url=vault_transport.base_url, transport=vault_transport, **kwargs
        )

    # -- administration --------------------------------------------------------------------------

    def revoke(
        self,
        *,
        user: Mapping[str, str] | None = None,
        agent: str | None = None,
        provider: str | None = None,
        grant_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/revocations`` (admin principals only): revoke grants by user (``{"iss",
        "sub"}``), agent, provider or grant id, upstream first; their sessions' tokens die."""
        body: dict[str, Any] = {}
        if user is not None:
            body["user"] = {"iss": user["iss"], "sub": user["sub"]}
        for name, value in (("agent", agent), ("provider", provider), ("grant_id", grant_id)):
            if value is not None:
                body[name] = value
        if not body:
            raise ValueError("name at least one of user, agent, provider or grant_id")
        answer: dict[str, Any] = self.request("POST", "/v1/revocations", body, proof=False)
        return answer

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self, *, end_session: bool = True) -> None:
        """End the session (best effort) and release connections."""
        if end_session:
            try:
                self.end_session()
            except VaultError as exc:
                log.warning("could not end vault session: %s", exc)
        self._http.clear()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VaultClient({self.base_url!r}, session={self.session_id!r})"


def _seg(value: str) -> str:
    """One URL path segment."""
    return quote(value, safe="")


def _user_token_header(id_token: str) -> dict[str, str]:
    if not isinstance(id_token, str) or not id_token:
        raise ValueError("give the logged-in user's identity token (a compact JWT string)")
    return {USER_TOKEN_HEADER: id_token}


def _token_proof_header(key: SessionKey, endpoint: str, nonce: str | None) -> dict[str, str]:
    """A fresh RFC 9449 proof for the provider's token endpoint, in the header the vault
    forwards as ``DPoP`` (one per attempt: a provider refuses a replayed ``jti``)."""
    return {TOKEN_PROOF_HEADER: key.dpop_proof("POST", endpoint, nonce=nonce)}


def _keep_providers(info: SessionInfo, before: SessionInfo) -> SessionInfo:
    """``info`` with ``before``'s providers when its answer named none (the same session)."""
    if info.providers or not before.providers or info.session_id != before.session_id:
        return info
    return replace(info, providers=before.providers)


class AsyncVaultClient:
    """The same client for asyncio code: each call runs the thread-safe sync client in a worker
    thread (``asyncio.to_thread``), so the event loop never blocks on the network."""

    def __init__(
        self, base_url: str | None = None, *, client: VaultClient | None = None, **kwargs: Any
    ) -> None:
        if client is None:
            if base_url is None:
                raise ValueError("give base_url or client")
            client = VaultClient(base_url, **kwargs)
        self.sync = client

    @property
    def session(self) -> SessionInfo | None:
        return self.sync.session

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def start_session(self, **kwargs: Any) -> SessionInfo:
        return await self._run(self.sync.start_session, **kwargs)

    async def get_session(self) -> SessionInfo:
        return await self._run(self.sync.get_session)

    async def end_session(self) -> dict[str, Any] | None:
        return await self._run(self.sync.end_session)

    async def renew_session(self, **kwargs: Any) -> SessionInfo:
        return await self._run(self.sync.renew_session, **kwargs)

    async def delegate(self, **kwargs: Any) -> Delegation:
        return await self._run(self.sync.delegate, **kwargs)

    async def claim_delegation(self, handle: Delegation | str) -> SessionInfo:
        return await self._run(self.sync.claim_delegation, handle)

    async def get_token(
        self, provider: str, scopes: str | Iterable[str], **kwargs: Any
    ) -> AccessToken:
        cached = self.sync.cached_token(provider, scopes)
        if cached is not None:
            return cached
        return await self._run(self.sync.get_token, provider, scopes, **kwargs)

    async def api_key(self, provider: str) -> ApiKey:
        return await self._run(self.sync.api_key, provider)

    async def start_authorization(
        self, provider: str, scopes: str | Iterable[str], return_url: str | None = None
    ) -> Authorization:
        return await self._run(self.sync.start_authorization, provider, scopes, return_url)

    async def complete_flow(
        self, flow_id: str, user: UserIdentity, binding_code: str
    ) -> FlowCompletion:
        return await self._run(self.sync.complete_flow, flow_id, user, binding_code)

    async def connections(self, id_token: str, **kwargs: Any) -> ConnectionPage:
        return await self._run(self.sync.connections, id_token, **kwargs)

    async def revoke_connection(self, id_token: str, grant_id: str) -> dict[str, Any]:
        return await self._run(self.sync.revoke_connection, id_token, grant_id)

    def http(self, provider: str, **kwargs: Any) -> httpx.AsyncClient:
        """``VaultClient.ahttp``: an ``httpx.AsyncClient`` for ``provider``'s API."""
        return self.sync.ahttp(provider, **kwargs)

    async def aclose(self) -> None:
        await self._run(self.sync.close)

    async def __aenter__(self) -> AsyncVaultClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
