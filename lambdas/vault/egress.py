"""The proxy's outbound HTTP (flow 10): one request to a provider's API, on the vault's terms.

- The host is resolved here and every address it resolves to must be a public one (no private,
  loopback, link-local, metadata, shared, reserved or multicast address, nor one of those inside
  an IPv4-mapped, 6to4, Teredo or NAT64 address); the connection then goes to the address that
  was checked (TLS still verifies the host name), so DNS cannot swap in another one between the
  check and the call. Loopback is allowed only with `EGRESS_ALLOW_LOOPBACK` (local mode and the
  tests; the deployed functions never set it).
- Redirects are never followed; no retries; bounded connect and read timeouts and an overall
  deadline; bodies are read up to a limit and never decoded (the agent gets the bytes the
  provider sent, `Content-Encoding` and all).

urllib3 (already in the Lambda runtime, as for the OAuth client) does the HTTP; its pools are
keyed by the checked address and the host name, so keep-alive connections are reused.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

from vault.errors import (
    ProviderError,
    ProviderTimeout,
    UpstreamAddressRefused,
    UpstreamResponseTooLarge,
)

ADDRESS_TTL_SECONDS = 60.0
"""How long a checked resolution is reused (the connection always goes to a checked address)."""
MAX_POOLS = 32
CHUNK_BYTES = 64 * 1024
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]


@dataclass(frozen=True)
class UpstreamAnswer:
    status: int
    headers: list[tuple[str, str]]
    """Every header line as received (names lower-cased), duplicates included."""
    body: bytes


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_allowed(ip: IpAddress, *, allow_loopback: bool) -> bool:
    """A public unicast address (or loopback, where allowed); never one hiding another."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner:
            return all(address_allowed(v4, allow_loopback=allow_loopback) for v4 in inner)
    if allow_loopback and ip.is_loopback:
        return True
    return ip.is_global and not ip.is_multicast


class Egress:
    """Sends the proxy's requests; one per container (thread-safe)."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        resolver: Resolver = socket.getaddrinfo,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_loopback = allow_loopback
        self._resolve = resolver
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses: dict[tuple[str, int], tuple[str, float]] = {}
        self._pools: OrderedDict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = (
            OrderedDict()
        )

    def address_of(self, host: str, port: int) -> str:
        """The address to connect to for `host`: every address it resolves to must be allowed
        (one bad answer refuses them all), else 502 `upstream_address_refused`."""
        now = self._clock()
        with self._lock:
            known = self._addresses.get((host, port))
            if known is not None and known[1] > now:
                return known[0]
        try:
            infos = self._resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ProviderError(f"the provider API host {host!r} does not resolve") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        refused = [
            a for a in addresses if not address_allowed(a, allow_loopback=self.allow_loopback)
        ]
        if not addresses or refused:
            raise UpstreamAddressRefused(
                f"the provider API host {host!r} resolves to an address the proxy never calls"
                " (private, loopback, link-local or metadata); check the provider's api_base_urls"
            )
        chosen = str(addresses[0])
        with self._lock:
            self._addresses[(host, port)] = (chosen, now + ADDRESS_TTL_SECONDS)
        return chosen

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            common: dict[str, Any] = {"maxsize": 4, "block": False, "retries": False}
            if scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    port,
                    server_hostname=host,
                    assert_hostname=host,
                    cert_reqs="CERT_REQUIRED",
                    **common,
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, port, **common)
            self._pools[key] = pool
            while len(self._pools) > MAX_POOLS:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,
        deadline: float,
        max_bytes: int,
    ) -> UpstreamAnswer:
        """One request, no redirect followed; the answer's body at most `max_bytes` (else 502
        `upstream_response_too_large`), all of it before `deadline` (`time.monotonic`)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        address = self.address_of(host, port)
        default_port = (scheme, port) in (("https", 443), ("http", 80))
        shown = f"[{host}]" if ":" in host else host
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        remaining = max(0.1, deadline - self._clock())
        limits = urllib3.Timeout(connect=min(2.0, timeout, remaining), read=min(timeout, remaining))
        try:
            response = self._pool(scheme, address, port, host).urlopen(
                method,
                target,
                body=body if body or method not in ("GET", "HEAD") else None,
                headers={**headers, "Host": shown if default_port else f"{shown}:{port}"},
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                timeout=limits,
            )
        except urllib3.exceptions.ConnectTimeoutError as exc:  # incl. NewConnectionError
            if isinstance(exc, urllib3.exceptions.NewConnectionError):
                raise ProviderError(f"the provider API at {host!r} is unreachable") from exc
            raise ProviderTimeout(f"the provider API at {host!r} did not answer in time") from exc
        except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
            raise ProviderTimeout(f"the provider API at {host!r} did not answer in time") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderError(
                f"the provider API at {host!r} failed ({type(exc).__name__})"
            ) from exc
        try:
            return UpstreamAnswer(
                status=response.status,
                headers=[(k.lower(), v) for k, v in response.headers.items()],
                body=self._read(response, host, deadline, max_bytes),
            )
        finally:
            response.release_conn()

    def _read(self, response: Any, host: str, deadline: float, max_bytes: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            response.close()
            raise UpstreamResponseTooLarge(self._too_large(host, max_bytes))
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if self._clock() > deadline:
                    response.close()
                    raise ProviderTimeout(f"the provider API at {host!r} did not answer in time")
                chunk = response.read1(CHUNK_BYTES)  # one socket read: the deadline holds
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > max_bytes:
                    response.close()
                    raise UpstreamResponseTooLarge(self._too_large(host, max_bytes))
                chunks.append(chunk)
        except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
            raise ProviderTimeout(f"the provider API at {host!r} did not answer in time") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderError(
                f"the provider API at {host!r} failed ({type(exc).__name__})"
            ) from exc

    @staticmethod
    def _too_large(host: str, max_bytes: int) -> str:
        return (
            f"the provider API at {host!r} answered with more than {max_bytes} bytes, more than"
            " the proxy returns (Lambda's response payload limit)"
        )
