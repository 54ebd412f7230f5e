"""``@requires_access_token`` and ``@requires_http``: a delegated OAuth token, or an httpx
client for a provider's API, for any function, in any framework.

The decorators work on plain functions and coroutine functions, in threads and in asyncio tasks,
with no agent runtime. The client is either passed explicitly (``client=``) or found implicitly:
the one set for the current context with :func:`use_client` (a :class:`contextvars.ContextVar`,
inherited by asyncio tasks and by ``asyncio.to_thread``), else the process-wide default of
:func:`set_default_client` (seen by every thread).

>>> @requires_access_token("calendar", ["calendar.read"], on_auth_url=print)
... def list_events(day: str, *, access_token: str) -> list[dict]:
...     ...
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agent_vault.client import AccessToken, AsyncVaultClient, VaultClient, normalize_scopes
from agent_vault.errors import ConsentRequired, ConsentTimeout

if TYPE_CHECKING:
    from agent_vault.transport import AsyncVaultTransport, VaultTransport

__all__ = [
    "ClientLike",
    "bind_client",
    "current_client",
    "requires_access_token",
    "requires_http",
    "set_default_client",
    "use_client",
]

log = logging.getLogger("agent_vault")

ClientLike = VaultClient | AsyncVaultClient
AuthUrlCallback = Callable[[str], Any]
F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

_current: contextvars.ContextVar[ClientLike | None] = contextvars.ContextVar(
    "agent_vault_client", default=None
)
_default: ClientLike | None = None
_default_lock = threading.Lock()


def set_default_client(client: ClientLike | None) -> None:
    """Set (or clear) the process-wide client, used where no context names one."""
    global _default
    with _default_lock:
        _default = client


@contextmanager
def use_client(client: ClientLike) -> Iterator[ClientLike]:
    """Use ``client`` for decorated calls in this context (and the asyncio tasks it starts)."""
    token = _current.set(client)
    try:
        yield client
    finally:
        _current.reset(token)


def current_client() -> VaultClient:
    """The client for this context: :func:`use_client`'s, else the default one."""
    client = _current.get() or _default
    if client is None:
        raise LookupError(
            "no Agent Vault client: pass client=, wrap the call in `with use_client(client):`,"
            " or call set_default_client(client) once at start-up"
        )
    return client.sync if isinstance(client, AsyncVaultClient) else client


def bind_client(fn: Callable[..., R], client: ClientLike | None = None) -> Callable[..., R]:
    """``fn`` bound to ``client`` (default: the current one), for handing work to a thread pool
    that does not copy the caller's context (``ThreadPoolExecutor.submit``, ``Thread``)."""
    bound = client or current_client()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> R:
        with use_client(bound):
            return fn(*args, **kwargs)

    return run


def _resolve(client: ClientLike | Callable[[], ClientLike] | None) -> VaultClient:
    if client is None:
        return current_client()
    if isinstance(client, AsyncVaultClient):
        return client.sync
    if isinstance(client, VaultClient):
        return client
    resolved = client()
    return resolved.sync if isinstance(resolved, AsyncVaultClient) else resolved


async def _awaited(outcome: Any) -> None:
    await outcome


def _print_auth_url(url: str) -> None:
    print(f"Agent Vault: consent needed. Open this URL to authorize:\n  {url}", file=sys.stderr)


class _ConsentWait:
    """One pending consent: its URL and deadline, shared by every caller waiting for it."""

    def __init__(self, exc: ConsentRequired, timeout: float) -> None:
        self.exc = exc
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def next_delay(self, delay: float) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ConsentTimeout(
                f"consent was not given within {self.timeout:g} s",
                authorization_url=self.exc.authorization_url,
                flow_id=self.exc.flow_id,
                problem=self.exc.problem,
            )
        return min(delay, remaining)


# Consent in progress per (client, provider, scopes): concurrent callers (threads or tasks) that
# need the same consent share one authorization and one on_auth_url call.
_waits: dict[tuple[int, str, tuple[str, ...]], _ConsentWait] = {}
_waits_lock = threading.Lock()

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _ConsentGate:
    """Waiting for consent at ``provider``: start the authorization (or join the one in
    progress), call ``on_auth_url`` once, then poll ``probe`` with exponential backoff until it
    stops raising :class:`ConsentRequired`, or :class:`ConsentTimeout`."""

    def __init__(
        self,
        provider: str,
        notify: AuthUrlCallback,
        consent_timeout: float,
        return_url: str | None,
        poll_interval: float,
        max_poll_interval: float,
    ) -> None:
        self.provider = provider
        self.notify = notify
        self.consent_timeout = consent_timeout
        self.return_url = return_url
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def join(
        self, vault: VaultClient, exc: ConsentRequired, scopes: tuple[str, ...]
    ) -> tuple[_ConsentWait, bool]:
        """The consent wait for this need (started here if there is none); True if new."""
        key = (id(vault), self.provider, scopes)
        with _waits_lock:
            wait = _waits.get(key)
            if wait is not None and not wait.expired:
                return wait, False
            authorization = vault.start_authorization(self.provider, scopes, self.return_url)
            exc.authorization_url = authorization.authorization_url
            exc.flow_id = authorization.flow_id
            wait = _waits[key] = _ConsentWait(exc, self.consent_timeout)
            return wait, True

    def announce(self, vault: VaultClient, exc: ConsentRequired, scopes: tuple[str, ...]) -> None:
        """Start the authorization (or join the one in progress) without waiting for it: ``exc``
        gets its ``authorization_url`` and ``flow_id``; ``on_auth_url`` is called if it is new."""
        wait, started = self.join(vault, exc, scopes)
        exc.authorization_url = wait.exc.authorization_url
        exc.flow_id = wait.exc.flow_id
        if started:
            assert exc.authorization_url is not None
            outcome = self.notify(exc.authorization_url)
            if inspect.isawaitable(outcome):
                asyncio.run(_awaited(outcome))

    async def aannounce(
        self, vault: VaultClient, exc: ConsentRequired, scopes: tuple[str, ...]
    ) -> None:
        wait, started = await asyncio.to_thread(self.join, vault, exc, scopes)
        exc.authorization_url = wait.exc.authorization_url
        exc.flow_id = wait.exc.flow_id
        if started:
            assert exc.authorization_url is not None
            outcome = self.notify(exc.authorization_url)
            if inspect.isawaitable(outcome):
                await outcome

    def _done(self, vault: VaultClient, scopes: tuple[str, ...], wait: _ConsentWait) -> None:
        with _waits_lock:
            key = (id(vault), self.provider, scopes)
            if _waits.get(key) is wait:
                del _waits[key]

    def wait(
        self,
        vault: VaultClient,
        exc: ConsentRequired,
        scopes: tuple[str, ...],
        probe: Callable[[], R],
    ) -> R:
        wait, started = self.join(vault, exc, scopes)
        delay = self.poll_interval
        try:
            if started:
                assert wait.exc.authorization_url is not None
                outcome = self.notify(wait.exc.authorization_url)
                if inspect.isawaitable(outcome):  # an async callback from sync code: run it
                    asyncio.run(_awaited(outcome))
            while True:
                time.sleep(wait.next_delay(delay))
                delay = min(delay * 2, self.max_poll_interval)
                try:
                    return probe()
                except ConsentRequired:
                    continue
        finally:
            self._done(vault, scopes, wait)

    async def await_(
        self,
        vault: VaultClient,
        exc: ConsentRequired,
        scopes: tuple[str, ...],
        probe: Callable[[], Awaitable[R]],
    ) -> R:
        wait, started = await asyncio.to_thread(self.join, vault, exc, scopes)
        delay = self.poll_interval
        try:
            if started:
                assert wait.exc.authorization_url is not None
                outcome = self.notify(wait.exc.authorization_url)
                if inspect.isawaitable(outcome):
                    await outcome
            while True:
                await asyncio.sleep(wait.next_delay(delay))
                delay = min(delay * 2, self.max_poll_interval)
                try:
                    return await probe()
                except ConsentRequired:
                    continue
        finally:
            self._done(vault, scopes, wait)


def requires_access_token(
    provider: str,
    scopes: str | Iterable[str],
    *,
    client: ClientLike | Callable[[], ClientLike] | None = None,
    on_auth_url: AuthUrlCallback | None = None,
    consent_timeout: float = 300.0,
    return_url: str | None = None,
    inject: str = "access_token",
    poll_interval: float = 1.0,
    max_poll_interval: float = 15.0,
) -> Callable[[F], F]:
    """Call the decorated function with ``access_token=<token>`` for ``scopes`` at ``provider``.

    When the user has not consented, the authorization is started, ``on_auth_url(url)`` is called
    once (default: print it to stderr; it may be a coroutine function for async callers), and the
    token route is polled with exponential backoff (``poll_interval`` doubling up to
    ``max_poll_interval``) until the grant is active, or :class:`ConsentTimeout` after
    ``consent_timeout`` seconds.
    """
    wanted = normalize_scopes(scopes)
    gate = _ConsentGate(
        provider,
        on_auth_url or _print_auth_url,
        consent_timeout,
        return_url,
        poll_interval,
        max_poll_interval,
    )

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = await _atoken(gate, _resolve(client), wanted)
                kwargs[inject] = token.access_token
                return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _token(gate, _resolve(client), wanted)
            kwargs[inject] = token.access_token
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def _token(gate: _ConsentGate, vault: VaultClient, scopes: tuple[str, ...]) -> AccessToken:
    """A token for ``scopes``, waiting for consent when there is none."""
    try:
        return vault.get_token(gate.provider, scopes)
    except ConsentRequired as exc:
        return gate.wait(vault, exc, scopes, lambda: vault.get_token(gate.provider, scopes))


async def _atoken(gate: _ConsentGate, vault: VaultClient, scopes: tuple[str, ...]) -> AccessToken:
    cached = vault.cached_token(gate.provider, scopes)
    if cached is not None:
        return cached
    try:
        return await asyncio.to_thread(vault.get_token, gate.provider, scopes)
    except ConsentRequired as exc:
        return await gate.await_(
            vault,
            exc,
            scopes,
            lambda: asyncio.to_thread(vault.get_token, gate.provider, scopes),
        )


def _consent_scopes(exc: ConsentRequired, wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    return wanted or normalize_scopes(exc.missing_scopes)


def requires_http(
    provider: str,
    scopes: str | Iterable[str] | None = None,
    *,
    client: ClientLike | Callable[[], ClientLike] | None = None,
    api_base: str | None = None,
    delivery: str | None = None,
    transport: Any = None,
    on_auth_url: AuthUrlCallback | None = None,
    consent_timeout: float = 300.0,
    return_url: str | None = None,
    inject: str = "http",
    poll_interval: float = 1.0,
    max_poll_interval: float = 15.0,
) -> Callable[[F], F]:
    """Call the decorated function with ``http=<client>`` for ``provider``'s API: an
    ``httpx.Client`` (an ``httpx.AsyncClient`` for a coroutine function) of
    :meth:`VaultClient.http`, closed when the function returns.

    Consent is waited for as :func:`requires_access_token` does: before the call when the agent
    gets a token (``dpop``, ``bearer``: ``scopes`` are the token's); for ``proxy`` delivery, when
    a proxied call inside the function is refused with :class:`ConsentRequired`: the
    authorization is started (for ``scopes``, else the missing ones), ``on_auth_url`` called, the
    refused request re-sent with backoff until the vault lets it through, and then the function
    is called once more (so it starts over: make the provider call before any side effect).
    A refused request that is not ``GET``/``HEAD``/``OPTIONS`` is never re-sent: then the
    :class:`ConsentRequired` is raised, with ``authorization_url`` and ``flow_id``.
    ``api_base``, ``delivery`` and ``transport`` (the httpx transport that sends: sync for a
    plain function, async for a coroutine function) are :meth:`VaultClient.http`'s.
    """
    wanted = normalize_scopes(scopes) if scopes is not None else None
    gate = _ConsentGate(
        provider,
        on_auth_url or _print_auth_url,
        consent_timeout,
        return_url,
        poll_interval,
        max_poll_interval,
    )

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                import httpx

                from agent_vault.transport import AsyncVaultTransport

                vault = _resolve(client)
                vault_transport = await asyncio.to_thread(
                    _ready,
                    AsyncVaultTransport,
                    vault,
                    provider,
                    wanted,
                    api_base,
                    delivery,
                    transport,
                )
                async with httpx.AsyncClient(
                    base_url=vault_transport.base_url, transport=vault_transport
                ) as http:
                    kwargs[inject] = http
                    if vault_transport.delivery != "proxy":
                        await _atoken(gate, vault, vault_transport.scopes)
                        return await fn(*args, **kwargs)
                    try:
                        return await fn(*args, **kwargs)
                    except ConsentRequired as exc:
                        refused = vault_transport.consent_refused
                        need = _consent_scopes(exc, wanted)
                        if refused is None or not need:  # not this client's refusal
                            raise
                        if refused.method not in _SAFE_METHODS:
                            await gate.aannounce(vault, exc, need)
                            raise

                        async def resend() -> None:
                            await (await http.send(refused)).aclose()

                        await gate.await_(vault, exc, need, resend)
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import httpx

            from agent_vault.transport import VaultTransport

            vault = _resolve(client)
            vault_transport = _ready(
                VaultTransport, vault, provider, wanted, api_base, delivery, transport
            )
            with httpx.Client(base_url=vault_transport.base_url, transport=vault_transport) as http:
                kwargs[inject] = http
                if vault_transport.delivery != "proxy":
                    _token(gate, vault, vault_transport.scopes)
                    return fn(*args, **kwargs)
                try:
                    return fn(*args, **kwargs)
                except ConsentRequired as exc:
                    refused = vault_transport.consent_refused
                    need = _consent_scopes(exc, wanted)
                    if refused is None or not need:  # not this client's refusal
                        raise
                    if refused.method not in _SAFE_METHODS:
                        gate.announce(vault, exc, need)
                        raise
                    gate.wait(vault, exc, need, lambda: http.send(refused).close())
                return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


TransportT = TypeVar("TransportT", "VaultTransport", "AsyncVaultTransport")


def _ready(
    kind: type[TransportT],
    vault: VaultClient,
    provider: str,
    scopes: tuple[str, ...] | None,
    api_base: str | None,
    delivery: str | None,
    inner: Any,
) -> TransportT:
    """A transport whose plan is made (the session may start: run it off the event loop)."""
    made = kind(
        vault, provider, scopes=scopes, api_base=api_base, delivery=delivery, transport=inner
    )
    made.base_url  # noqa: B018 - makes the plan
    return made
