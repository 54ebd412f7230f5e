"""httpx transports that call a provider's API the way the vault's policy says (``delivery``).

>>> with vault.http("calendar") as api:  # doctest: +SKIP
...     events = api.get("/calendar/v3/events").json()

One transport serves one provider of one :class:`~agent_vault.client.VaultClient` and sends
every request to a URL under one of the provider's API base URLs:

* ``proxy`` — to the vault's proxy, ``{vault}/v1/sessions/{id}/proxy/{provider}/{path}``, signed
  with SigV4 and a fresh proof of the session key like every vault call (the token never leaves
  the vault). ``X-Agent-Vault-Api-Base`` names the base URL unless it is the provider's first.
  The provider's answers carry ``X-Agent-Vault-Proxy: upstream`` and are returned as they are;
  the vault's own refusals are raised as typed :class:`~agent_vault.errors.VaultError`\\ s.
* ``dpop`` — directly to the provider with ``Authorization: DPoP <token>`` and a fresh RFC 9449
  proof (``htm``, ``htu``, ``ath``) of the session key, the key the provider bound the token to.
  A ``use_dpop_nonce`` answer (401 with ``DPoP-Nonce``) is retried once with the nonce, which is
  kept for the next requests to that origin.
* ``bearer`` — directly, with ``Authorization: Bearer <token>``.

With a token (``dpop``, ``bearer``), a 401 ``invalid_token`` is retried once with a new token from
the vault; the token is never sent to any URL outside the provider's API base URLs.

This module imports httpx; ``import agent_vault`` does not (it is loaded on first use).
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

import httpx

from agent_vault import errors
from agent_vault.errors import VaultError, error_from_response

if TYPE_CHECKING:
    from agent_vault.client import AccessToken, VaultClient

__all__ = ["API_BASE_HEADER", "PROXY_MARK_HEADER", "AsyncVaultTransport", "VaultTransport"]

DELIVERIES = ("proxy", "dpop", "bearer")
API_BASE_HEADER = "X-Agent-Vault-Api-Base"
"""Names the provider API base URL a proxied request is for (when it is not the first)."""
PROXY_MARK_HEADER = "X-Agent-Vault-Proxy"
"""On every answer the proxy relays from the provider (``upstream``); never on the vault's own."""
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_PROXIED = _HOP_BY_HOP | {"host", "content-length", "authorization", "dpop", "cookie"}
"""Request headers the SDK never sends to the vault's proxy (which would drop them anyway)."""
_NOT_PROXIED_PREFIXES = ("x-amz-", "x-agent-vault-")
_SIGNED = frozenset({"content-type"})
"""Request headers covered by the proxy call's SigV4 signature besides the SDK's own (host,
x-amz-*, DPoP, the API base): the others go unsigned, so no hop on the way can break it."""
_ERROR_PARAM = re.compile(r'error="([^"]*)"')
_RECOMPUTED = ("content-length", "transfer-encoding")
"""Set again by httpx for the body as it is sent (read whole, to be sent again on a retry)."""


def _refusal(code: str, detail: str) -> VaultError:
    """A refusal of the SDK itself (nothing was sent), of the class the vault's code maps to."""
    return errors._BY_CODE.get(code, VaultError)(detail, code=code)


@dataclass(frozen=True)
class _Plan:
    """How this transport reaches the provider, fixed at the first use."""

    delivery: str
    bases: tuple[str, ...]
    """The API base URLs a request may go to, as configured (the first is the default)."""
    listed: bool
    """True when the vault listed ``bases``; False when they are the caller's ``api_base``."""
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class _Target:
    base: str
    rest: bytes
    """The raw path after the base URL's path ('' or starting with '/')."""
    query: bytes


def _stripped(base: str) -> str:
    return base.rstrip("/")


def _base_parts(base: str) -> tuple[str, str, int | None, bytes]:
    url = httpx.URL(base)
    return url.scheme, url.host, url.port, url.raw_path.split(b"?", 1)[0].rstrip(b"/")


def _confined(rest: bytes) -> bool:
    """True when a path under a base URL stays under it however a server decodes it: no ``.``
    or ``..`` segment, and no encoded ``/`` or ``\\`` (as the vault's proxy refuses them)."""
    for segment in rest.split(b"/")[1:]:
        decoded = unquote_to_bytes(segment)
        if decoded in (b".", b"..") or b"/" in decoded or b"\\" in decoded:
            return False
    return True


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _errors(response: httpx.Response) -> set[str]:
    """The ``error`` parameters of the answer's ``WWW-Authenticate`` challenges."""
    found: set[str] = set()
    for value in response.headers.get_list("www-authenticate"):
        found.update(_ERROR_PARAM.findall(value))
    return found


class _Core:
    """What the sync and async transports share: planning, building and judging each call."""

    def __init__(
        self,
        client: VaultClient,
        provider: str,
        *,
        scopes: Any = None,
        api_base: str | None = None,
        delivery: str | None = None,
    ) -> None:
        from agent_vault.client import normalize_scopes

        if delivery is not None and delivery not in DELIVERIES:
            raise ValueError(f"delivery must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
        self.client = client
        self.provider = provider
        self.scopes = normalize_scopes(scopes) if scopes is not None else None
        self.api_base = api_base
        self.delivery = delivery
        self._plan: _Plan | None = None
        self.consent_refused: httpx.Request | None = None
        """The last proxied request the vault refused with ``consent_required``."""
        self._nonces: dict[tuple[str, str, int | None], str] = {}
        self._lock = threading.Lock()

    # -- planning --------------------------------------------------------------------------------

    def plan(self) -> _Plan:
        """Delivery, base URLs and scopes: the caller's overrides, else what the session's answer
        says of this provider (the session is started if there is none yet)."""
        plan = self._plan
        if plan is not None:
            return plan
        with self._lock:
            plan = self._plan = self._plan or self._make_plan()
            return plan

    @property
    def planned(self) -> _Plan | None:
        """The plan, if it was made already (no I/O)."""
        return self._plan

    def _make_plan(self) -> _Plan:
        session = self.client.session
        access = session.providers.get(self.provider) if session is not None else None
        if access is None and (self.delivery is None or self.api_base is None):
            access = self.client.ensure_session().providers.get(self.provider)
        delivery = self.delivery or (access.delivery if access is not None else None)
        if delivery is None or delivery not in DELIVERIES:
            raise VaultError(
                f"the vault did not say how this agent reaches {self.provider!r}"
                f" (delivery {delivery!r}): pass delivery= and api_base=",
                code="delivery_unknown",
            )
        listed = access.api_base_urls if access is not None else ()
        bases = listed
        if self.api_base is not None and listed:
            if not any(_stripped(url) == _stripped(self.api_base) for url in listed):
                raise ValueError(
                    f"api_base {self.api_base!r} is not one of {self.provider!r}'s API base"
                    f" URLs {list(listed)}"
                )
        elif self.api_base is not None:
            bases = (self.api_base,)
        if not bases:
            raise VaultError(
                f"no API base URL is known for {self.provider!r}: pass api_base=",
                code="api_base_unknown",
            )
        scopes = self.scopes if self.scopes is not None else (access.scopes if access else ())
        return _Plan(delivery, bases, bool(listed), scopes)

    @property
    def base_url(self) -> str:
        """The API base URL relative request URLs are resolved against."""
        plan = self.plan()  # checks api_base against the listed ones
        return self.api_base or plan.bases[0]

    def target(self, url: httpx.URL) -> _Target:
        """The API base URL ``url`` is under, or :class:`VaultError` ``request_not_allowed``
        (nothing is sent: neither a token nor the vault's proxy reaches another host or a path
        outside the base URL)."""
        raw_path, _, query = url.raw_path.partition(b"?")
        found: _Target | None = None
        for base in self.plan().bases:
            scheme, host, port, path = _base_parts(base)
            same_origin = (url.scheme, url.host, url.port) == (scheme, host, port)
            if same_origin and (raw_path == path or raw_path.startswith(path + b"/")):
                rest = raw_path[len(path) :]
                if found is None or len(rest) < len(found.rest):  # the most specific base
                    found = _Target(base, rest, query)
        if found is not None and _confined(found.rest):
            return found
        raise _refusal(
            "request_not_allowed",
            f"{url.scheme}://{url.host}{url.path} is not under an API base URL of"
            f" {self.provider!r}; nothing was sent",
        )

    # -- building --------------------------------------------------------------------------------

    def proxy_request(self, request: httpx.Request, body: bytes, target: _Target) -> httpx.Request:
        """The request to the vault's proxy route, signed (SigV4 + a fresh session proof)."""
        client = self.client
        sid = client.ensure_session().session_id
        url = (
            f"{client.proxy_url}/v1/sessions/{quote(sid, safe='')}/proxy/"
            f"{quote(self.provider, safe='')}{target.rest.decode('ascii')}"
        )
        if target.query:
            url += "?" + target.query.decode("ascii")
        plan = self.plan()
        signed: dict[str, str] = {}
        unsigned: list[tuple[str, str]] = []
        for name, value in request.headers.multi_items():
            lower = name.lower()
            if lower in _NOT_PROXIED or lower.startswith(_NOT_PROXIED_PREFIXES):
                continue
            if lower in _SIGNED:
                signed[name] = value
            else:
                unsigned.append((name, value))
        if not plan.listed or target.base != plan.bases[0]:
            signed[API_BASE_HEADER] = target.base
        headers = client.signed_headers(request.method, url, body, signed, session_id=sid)
        return httpx.Request(
            request.method,
            url,
            headers=[*headers.items(), *unsigned],
            content=body,
            extensions=request.extensions,
        )

    def token(self) -> AccessToken:
        scopes = self.plan().scopes
        if not scopes:
            raise ValueError(
                f"which scopes should the token for {self.provider!r} have? pass scopes="
            )
        return self.client.get_token(self.provider, scopes)

    def direct_request(
        self, request: httpx.Request, body: bytes, token: AccessToken
    ) -> httpx.Request:
        """The request to the provider itself, with the token (and a proof for a DPoP one)."""
        headers = request.headers.copy()
        for name in ("authorization", "dpop", *_RECOMPUTED):
            headers.pop(name, None)
        if token.token_type.lower() == "dpop":
            with self._lock:
                nonce = self._nonces.get(_origin(request.url))
            headers["Authorization"] = f"DPoP {token.access_token}"
            headers["DPoP"] = self.client.dpop_proof(
                request.method, str(request.url), nonce=nonce, access_token=token.access_token
            )
        else:
            headers["Authorization"] = f"Bearer {token.access_token}"
        return httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=body,
            extensions=request.extensions,
        )

    # -- judging ---------------------------------------------------------------------------------

    @staticmethod
    def is_vault_refusal(response: httpx.Response) -> bool:
        """A proxied call's answer that comes from the vault itself, not from the provider."""
        return response.status_code >= 400 and PROXY_MARK_HEADER not in response.headers

    def vault_error(self, request: httpx.Request, response: httpx.Response) -> VaultError:
        error = error_from_response(response.status_code, dict(response.headers), response.content)
        if error.code == "consent_required":
            self.consent_refused = request
        return error

    def retry_reason(self, response: httpx.Response, token: AccessToken, tried: set[str]) -> bool:
        """True when a direct call should be sent again (once per reason): with the nonce of a
        ``use_dpop_nonce`` answer, or with a new token after ``invalid_token``."""
        nonce = response.headers.get("dpop-nonce")
        if nonce and token.token_type.lower() == "dpop":
            with self._lock:  # RFC 9449 §9: the next proof to this server carries it
                self._nonces[_origin(response.request.url)] = nonce
        if response.status_code != 401:
            return False
        errors = _errors(response)
        if "use_dpop_nonce" in errors and nonce and "nonce" not in tried:
            tried.add("nonce")
            return True
        if "invalid_token" in errors and "token" not in tried:
            tried.add("token")
            self.client.forget_token(self.provider, self.plan().scopes)
            return True
        return False


class _Views:
    """What both transports show of their core (delivery, base URL, scopes, the last refusal)."""

    _core: _Core

    @property
    def base_url(self) -> str:
        """The API base URL relative URLs resolve against (the session may start to learn it)."""
        return self._core.base_url

    @property
    def delivery(self) -> str:
        """``proxy``, ``dpop`` or ``bearer``."""
        return self._core.plan().delivery

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes a ``dpop``/``bearer`` token is asked for (empty if none are known)."""
        return self._core.plan().scopes

    @property
    def consent_refused(self) -> httpx.Request | None:
        """The last request the vault's proxy refused with ``consent_required`` (None if none):
        what ``requires_http`` re-sends while it waits for consent."""
        return self._core.consent_refused


class VaultTransport(_Views, httpx.BaseTransport):
    """An httpx transport for ``provider``'s API through ``client``'s session (sync).

    ``scopes`` is what a ``dpop``/``bearer`` token is asked for (default: the scopes the vault
    names for the provider); ``api_base`` the base URL of relative requests (default: the
    provider's first); ``delivery`` overrides what the vault says (for a vault that does not say
    it yet); ``transport`` is the httpx transport that sends (default ``httpx.HTTPTransport()``).
    """

    def __init__(
        self,
        client: VaultClient,
        provider: str,
        *,
        scopes: Any = None,
        api_base: str | None = None,
        delivery: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(client, provider, scopes=scopes, api_base=api_base, delivery=delivery)
        self._transport = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        target = core.target(request.url)
        body = request.read()
        if core.plan().delivery == "proxy":
            response = self._transport.handle_request(core.proxy_request(request, body, target))
            if core.is_vault_refusal(response):
                try:
                    response.read()
                finally:
                    response.close()
                raise core.vault_error(request, response)
            return response
        tried: set[str] = set()
        while True:
            token = core.token()
            outbound = core.direct_request(request, body, token)
            response = self._transport.handle_request(outbound)
            response.request = outbound
            if not core.retry_reason(response, token, tried):
                return response
            response.read()
            response.close()

    def close(self) -> None:
        self._transport.close()


class AsyncVaultTransport(_Views, httpx.AsyncBaseTransport):
    """The same for ``httpx.AsyncClient``: the vault calls (session, token, signing, with
    blocking I/O at times) run in a worker thread, the provider calls on the event loop."""

    def __init__(
        self,
        client: VaultClient,
        provider: str,
        *,
        scopes: Any = None,
        api_base: str | None = None,
        delivery: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _Core(client, provider, scopes=scopes, api_base=api_base, delivery=delivery)
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        plan = core.planned
        if plan is None:
            plan = await asyncio.to_thread(core.plan)
        target = core.target(request.url)
        body = await request.aread()
        if plan.delivery == "proxy":
            outbound = await asyncio.to_thread(core.proxy_request, request, body, target)
            response = await self._transport.handle_async_request(outbound)
            if core.is_vault_refusal(response):
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                raise core.vault_error(request, response)
            return response
        tried: set[str] = set()
        while True:
            token = core.client.cached_token(core.provider, plan.scopes)
            if token is None:
                token = await asyncio.to_thread(core.token)
            outbound = core.direct_request(request, body, token)
            response = await self._transport.handle_async_request(outbound)
            response.request = outbound
            if not core.retry_reason(response, token, tried):
                return response
            await response.aread()
            await response.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()
