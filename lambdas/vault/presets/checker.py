"""Compare a configured provider with what its discovery document says.

`check` reads the provider's metadata (RFC 8414 / OpenID Connect Discovery) the way the vault
does, and reports S256 support, the RFC 9207 `iss` parameter, the RFC 7009 revocation endpoint
and the RFC 9449 DPoP algorithms, next to what the provider's preset expects and what the vault
will do with the config as given. Problems are what would make the vault refuse or misbehave;
notes are differences worth a look (a preset older than the provider's metadata).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

from vault import presets
from vault.config import ProviderConfig
from vault.errors import VaultError
from vault.oauth.client import ProviderClient


@dataclass(frozen=True)
class Finding:
    """One property: what the metadata advertises, what the preset expects."""

    advertised: Any
    expected: bool | None


@dataclass(frozen=True)
class CheckReport:
    provider: str
    preset: str
    discovery_url: str | None
    issuer: str | None
    s256: Finding
    iss_parameter: Finding
    revocation_endpoint: Finding
    dpop_algs: Finding
    dpop_enabled: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def lines(self) -> list[str]:
        """The report as text, one finding a line."""

        def show(name: str, finding: Finding) -> str:
            expected = "-" if finding.expected is None else str(finding.expected).lower()
            return f"  {name:<20} advertised: {finding.advertised!s:<40} preset expects: {expected}"

        out = [
            f"provider {self.provider} (preset {self.preset})",
            f"  discovery            {self.discovery_url or 'none: preset values are not checked'}",
            f"  issuer               {self.issuer or '-'}",
            show("PKCE S256", self.s256),
            show("iss parameter", self.iss_parameter),
            show("revocation endpoint", self.revocation_endpoint),
            show("DPoP algorithms", self.dpop_algs),
            f"  DPoP enabled         {str(self.dpop_enabled).lower()}",
        ]
        out += [f"PROBLEM: {p}" for p in self.problems]
        out += [f"note: {n}" for n in self.notes]
        out.append("ok" if self.ok else "not ok")
        return out


def check(
    name: str,
    config: ProviderConfig,
    http: urllib3.PoolManager | None = None,
    client_secret: Callable[[], str | None] = lambda: None,
) -> CheckReport:
    """Read the provider's discovery document (if it has one) and compare it with its preset.

    Raises `vault.errors.ProviderError` / `ProviderTimeout` when the document is unreadable.
    """
    expects = presets.load(config.preset).expects
    client = ProviderClient(name, config, http or urllib3.PoolManager(), client_secret)
    document = client.discovery_document()
    methods = document.get("code_challenge_methods_supported")
    s256 = isinstance(methods, list) and "S256" in methods
    iss = document.get("authorization_response_iss_parameter_supported") is True
    revocation = document.get("revocation_endpoint")
    revocation = revocation if isinstance(revocation, str) else None
    issuer = document.get("issuer")
    issuer = issuer if isinstance(issuer, str) else None
    algs = document.get("dpop_signing_alg_values_supported")
    dpop_algs = [a for a in algs if isinstance(a, str)] if isinstance(algs, list) else []
    problems: list[str] = []
    notes: list[str] = []
    if not document:
        notes.append("no discovery document: the configured endpoints are used unchecked")
    else:
        if not s256 and not config.assume_pkce_s256:
            problems.append(
                "the metadata does not list S256 in code_challenge_methods_supported: the vault "
                f"refuses consent unless providers.{name}.assume_pkce_s256 is set"
            )
        if s256 and expects.pkce_s256 is False:
            notes.append("the metadata advertises PKCE S256, which the preset does not expect")
        if config.dpop and "ES256" not in dpop_algs:
            problems.append(
                "dpop is enabled but dpop_signing_alg_values_supported lacks ES256: the vault "
                "refuses to ask for DPoP-bound tokens"
            )
        if config.issuer and issuer is not None and issuer != config.issuer:
            problems.append(f"the metadata's issuer {issuer!r} is not the configured one")
        _compare(notes, "the iss parameter", iss, expects.iss_parameter)
        _compare(notes, "DPoP", bool(dpop_algs), expects.dpop)
        if revocation is None and expects.revocation and not config.revocation_endpoint:
            problems.append("the preset expects a revocation endpoint; the metadata names none")
        if revocation is not None and expects.revocation is False:
            notes.append("the metadata names a revocation endpoint the preset does not expect")
    if expects.refresh_tokens is False:
        problems.append(
            "the preset says this provider issues no refresh token: the vault's consent fails "
            "(code_exchange_failed, no refresh token)"
        )
    return CheckReport(
        provider=name,
        preset=config.preset,
        discovery_url=config.discovery_url,
        issuer=issuer or config.issuer,
        s256=Finding(s256 if document else None, expects.pkce_s256),
        iss_parameter=Finding(iss if document else None, expects.iss_parameter),
        revocation_endpoint=Finding(revocation or config.revocation_endpoint, expects.revocation),
        dpop_algs=Finding(dpop_algs if document else None, expects.dpop),
        dpop_enabled=config.dpop,
        problems=problems,
        notes=notes,
    )


def _compare(notes: list[str], what: str, advertised: bool, expected: bool | None) -> None:
    if expected is None or advertised == expected:
        return
    if expected:
        notes.append(f"the preset expects {what}; the metadata does not advertise it")
    else:
        notes.append(f"the metadata advertises {what}, which the preset does not expect")


@dataclass(frozen=True)
class ProvidersCheck:
    """`check` for every provider of a config (what `make synth` prints)."""

    reports: dict[str, CheckReport] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    """Providers whose discovery document could not be read: why."""
    skipped: list[str] = field(default_factory=list)
    """API-key providers and providers without a discovery URL: nothing to read."""
    offline: str | None = None
    """Why nothing was checked (the network is unreachable), else None."""

    def lines(self) -> list[str]:
        if self.offline is not None:
            return [f"note: providers not checked: {self.offline}"]
        out: list[str] = []
        for name, report in self.reports.items():
            verdict = "ok" if report.ok else "NOT OK"
            out.append(f"{name}: {verdict} (preset {report.preset})")
            out += [f"  PROBLEM: {p}" for p in report.problems]
            out += [f"  note: {n}" for n in report.notes]
        out += [f"{name}: discovery unreadable: {why}" for name, why in self.unreadable.items()]
        out += [f"{name}: nothing to check (no discovery URL)" for name in self.skipped]
        return out


def reachable(url: str, timeout_seconds: float) -> bool:
    """Whether a TCP connection to the URL's host opens within the timeout."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_seconds):
            return True
    except (OSError, UnicodeError):
        return False


def check_providers(
    providers: Mapping[str, ProviderConfig],
    *,
    timeout_seconds: float = 3.0,
    http: urllib3.PoolManager | None = None,
) -> ProvidersCheck:
    """`check` each provider with a discovery URL, each read bounded by `timeout_seconds`; none
    at all (`offline`) when the first one's host cannot be reached."""
    readable = {n: p for n, p in providers.items() if p.api_key is None and p.discovery_url}
    skipped = [n for n in providers if n not in readable]
    if not readable:
        return ProvidersCheck(skipped=skipped)
    probe = next(iter(readable.values())).discovery_url
    assert probe is not None
    if not reachable(probe, timeout_seconds):
        host = urlsplit(probe).hostname
        return ProvidersCheck(
            skipped=skipped, offline=f"{host} is not reachable (offline?); run them when online"
        )
    pool = http or urllib3.PoolManager()
    reports: dict[str, CheckReport] = {}
    unreadable: dict[str, str] = {}
    for name, provider in readable.items():
        bounded = provider.model_copy(
            update={"timeout_seconds": min(provider.timeout_seconds, timeout_seconds)}
        )
        try:
            reports[name] = check(name, bounded, pool)
        except VaultError as exc:
            unreadable[name] = exc.detail
    return ProvidersCheck(reports=reports, unreadable=unreadable, skipped=skipped)
