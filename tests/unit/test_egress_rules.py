"""The proxy's pure rules: which addresses it may call, which paths it forwards, and what a
request policy allows (the flow around them is tests/security/test_attacks_proxy.py)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from vault.config import VaultConfig
from vault.egress import Egress, address_allowed
from vault.errors import InvalidRequest, RequestNotAllowed, UpstreamAddressRefused
from vault.policy import check_request_policy
from vault.proxy import path_segments

REFUSED = [
    "169.254.169.254",  # instance metadata
    "fd00:ec2::254",  # instance metadata, IPv6
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:5601:56fe",  # Teredo, its client 169.254.169.1
    "10.1.2.3",
    "172.16.0.1",
    "192.168.0.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "127.0.0.1",
    "::1",
    "0.0.0.0",  # noqa: S104 - the address under test, not a bind
    "::",
    "fe80::1",
    "fc00::1",
    "224.0.0.1",
    "ff02::1",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "240.0.0.1",  # reserved
]
PUBLIC = ["8.8.8.8", "142.250.185.202", "2001:4860:4860::8888", "2a00:1450:4001:82b::200a"]


@pytest.mark.parametrize("address", REFUSED)
def test_no_private_loopback_link_local_or_metadata_address(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_loopback=False)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), allow_loopback=False)


def test_loopback_only_where_allowed_and_nothing_else_with_it() -> None:
    for address in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        assert address_allowed(ipaddress.ip_address(address), allow_loopback=True), address
    for address in ("169.254.169.254", "10.0.0.1", "fd00:ec2::254", "0.0.0.0"):  # noqa: S104
        assert not address_allowed(ipaddress.ip_address(address), allow_loopback=True), address


def _resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return resolve


def test_one_private_answer_among_public_ones_refuses_the_host() -> None:
    """A name that resolves to a public and a private address (DNS rebinding, a split
    horizon) is refused whole: the proxy never picks the good one and hopes."""
    egress = Egress(resolver=_resolver("8.8.8.8", "169.254.169.254"))
    with pytest.raises(UpstreamAddressRefused):
        egress.address_of("api.example.com", 443)
    assert Egress(resolver=_resolver("8.8.8.8")).address_of("api.example.com", 443) == "8.8.8.8"


def test_the_checked_address_is_kept_for_a_minute_and_then_checked_again() -> None:
    now = [0.0]
    answers = iter([["8.8.8.8"], ["169.254.169.254"]])

    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    egress = Egress(resolver=resolve, clock=lambda: now[0])
    assert egress.address_of("api.example.com", 443) == "8.8.8.8"
    now[0] = 30.0
    assert egress.address_of("api.example.com", 443) == "8.8.8.8"  # no second lookup yet
    now[0] = 61.0
    with pytest.raises(UpstreamAddressRefused):
        egress.address_of("api.example.com", 443)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("calendar/v3/events", ("calendar", "v3", "events")),
        ("calendar/v3/events/", ("calendar", "v3", "events")),
        ("users/me%40example.com/a%20b", ("users", "me@example.com", "a b")),
        ("x/~y/-_.z/:@!$&'()*+,;=", ("x", "~y", "-_.z", ":@!$&'()*+,;=")),
        ("...", ("...",)),
    ],
)
def test_paths_the_proxy_forwards(path: str, segments: tuple[str, ...]) -> None:
    assert path_segments(path) == segments


@pytest.mark.parametrize(
    "path",
    [
        "..",
        ".",
        "a/..",
        "a/./b",
        "a//b",
        "/a",
        "a/%2E%2e",
        "a%2fb",
        "a%5Cb",
        "a\\b",
        "a b",
        "a/%0a",
        "a/%7F",
        "a/%zz",
        "a?b",
        "a#b",
        "x" * 2049,
    ],
)
def test_paths_the_proxy_refuses(path: str) -> None:
    with pytest.raises(InvalidRequest):
        path_segments(path)


def _config(rules: list[dict[str, Any]] | None) -> VaultConfig:
    access: dict[str, Any] = {"scopes": ["cal.read"]}
    if rules is not None:
        access["requests"] = rules
    return VaultConfig.model_validate(
        {
            "providers": {
                "cal": {
                    "authorization_endpoint": "https://a.example/auth",
                    "token_endpoint": "https://a.example/token",
                    "client_id": "cid",
                    "scopes": ["cal.read"],
                    "api_base_urls": ["https://api.example"],
                }
            },
            "agents": {"bot": {"role_name": "bot-role", "providers": {"cal": access}}},
            "return_urls": ["https://app.example/return"],
        }
    )


RULES = [
    {"methods": ["GET"], "paths": ["/calendar/v3/**"]},
    {"methods": ["POST"], "paths": ["/calendar/v3/calendars/*/events"]},
    {"methods": ["DELETE"], "paths": ["/calendar/v3/calendars/primary/events/evt-*"]},
]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/calendar/v3", True),  # `**` takes no segment too
        ("GET", "/calendar/v3/calendars/primary/events", True),
        ("GET", "/calendar/v4/calendars", False),
        ("GET", "/calendar/v3x/calendars", False),
        ("HEAD", "/calendar/v3/calendars", False),
        ("POST", "/calendar/v3/calendars/primary/events", True),
        ("POST", "/calendar/v3/calendars/a@b.example/events", True),
        ("POST", "/calendar/v3/calendars/primary/events/evt-1", False),
        ("POST", "/calendar/v3/calendars/events", False),  # `*` is exactly one segment
        ("DELETE", "/calendar/v3/calendars/primary/events/evt-1", True),
        ("DELETE", "/calendar/v3/calendars/primary/events/other", False),
        ("PUT", "/calendar/v3/calendars/primary/events", False),
    ],
)
def test_a_request_policy_allows_exactly_its_methods_and_paths(
    method: str, path: str, allowed: bool
) -> None:
    config = _config(RULES)
    segments = tuple(path[1:].split("/"))
    if allowed:
        check_request_policy(config, "bot", "cal", method, segments)
    else:
        with pytest.raises(RequestNotAllowed):
            check_request_policy(config, "bot", "cal", method, segments)


def test_without_a_policy_every_request_under_the_base_is_allowed() -> None:
    config = _config(None)
    for method in ("GET", "POST", "DELETE", "PATCH", "OPTIONS"):
        check_request_policy(config, "bot", "cal", method, ("any", "path"))
