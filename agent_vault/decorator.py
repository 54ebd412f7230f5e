"""``@requires_access_token``: a delegated OAuth token for any function, in any framework.

The decorator works on plain functions and coroutine functions, in threads and in asyncio tasks,
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from agent_vault.client import AccessToken, AsyncVaultClient, VaultClient, normalize_scopes
from agent_vault.errors import ConsentRequired, ConsentTimeout

__all__ = [
    "ClientLike",
    "bind_client",
    "current_client",
    "requires_access_token",
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
    notify = on_auth_url or _print_auth_url

    def join_wait(vault: VaultClient, exc: ConsentRequired) -> tuple[_ConsentWait, bool]:
        """The consent wait for this need (started here if there is none); True if new."""
        key = (id(vault), provider, wanted)
        with _waits_lock:
            wait = _waits.get(key)
            if wait is not None and not wait.expired:
                return wait, False
            authorization = vault.start_authorization(provider, wanted, return_url)
            exc.authorization_url = authorization.authorization_url
            exc.flow_id = authorization.flow_id
            wait = _waits[key] = _ConsentWait(exc, consent_timeout)
            return wait, True

    def done(vault: VaultClient, wait: _ConsentWait) -> None:
        with _waits_lock:
            key = (id(vault), provider, wanted)
            if _waits.get(key) is wait:
                del _waits[key]

    def obtain(vault: VaultClient) -> AccessToken:
        try:
            return vault.get_token(provider, wanted)
        except ConsentRequired as exc:
            wait, started = join_wait(vault, exc)
        delay = poll_interval
        try:
            if started:
                assert wait.exc.authorization_url is not None
                outcome = notify(wait.exc.authorization_url)
                if inspect.isawaitable(outcome):  # an async callback from sync code: run it
                    asyncio.run(_awaited(outcome))
            while True:
                time.sleep(wait.next_delay(delay))
                delay = min(delay * 2, max_poll_interval)
                try:
                    return vault.get_token(provider, wanted)
                except ConsentRequired:
                    continue
        finally:
            done(vault, wait)

    async def aobtain(vault: VaultClient) -> AccessToken:
        cached = vault.cached_token(provider, wanted)
        if cached is not None:
            return cached
        try:
            return await asyncio.to_thread(vault.get_token, provider, wanted)
        except ConsentRequired as exc:
            wait, started = await asyncio.to_thread(join_wait, vault, exc)
        delay = poll_interval
        try:
            if started:
                assert wait.exc.authorization_url is not None
                outcome = notify(wait.exc.authorization_url)
                if inspect.isawaitable(outcome):
                    await outcome
            while True:
                await asyncio.sleep(wait.next_delay(delay))
                delay = min(delay * 2, max_poll_interval)
                try:
                    return await asyncio.to_thread(vault.get_token, provider, wanted)
                except ConsentRequired:
                    continue
        finally:
            done(vault, wait)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = await aobtain(_resolve(client))
                kwargs[inject] = token.access_token
                return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = obtain(_resolve(client))
            kwargs[inject] = token.access_token
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
