"""Policy rules: requested scopes ⊆ the agent's policy ∩ the user's grant, on every request; the
delivery of the agent's tokens; the proxy's request policy (methods and paths)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from vault.config import Delivery, RequestRule, VaultConfig
from vault.errors import ConsentRequired, RequestNotAllowed, ScopeNotAllowed, UnknownProvider


def check_agent_policy(
    config: VaultConfig, agent: str, provider: str, scopes: tuple[str, ...]
) -> tuple[str, ...]:
    """The requested scopes, sorted and unique, if the agent may ask for them at provider."""
    if provider not in config.providers:
        raise UnknownProvider(f"no provider named {provider!r} is configured (providers)")
    access = config.agents[agent].providers.get(provider)
    allowed = access.scopes if access is not None else ()
    wanted = tuple(sorted(set(scopes)))
    beyond = sorted(set(wanted) - set(allowed))
    if beyond:
        raise ScopeNotAllowed(
            f"agent {agent!r} may not ask for {beyond} at {provider!r} "
            f"(agents.{agent}.providers.{provider})",
            provider=provider,
            denied_scopes=beyond,
            allowed_scopes=sorted(allowed),
        )
    return wanted


def delivery_of(config: VaultConfig, agent: str, provider: str) -> Delivery:
    """How `agent`'s tokens at `provider` reach it; 403 if the agent has no policy there."""
    if provider not in config.providers:
        raise UnknownProvider(f"no provider named {provider!r} is configured (providers)")
    if provider not in config.agents[agent].providers:
        raise ScopeNotAllowed(
            f"agent {agent!r} has no access to {provider!r} (agents.{agent}.providers)",
            provider=provider,
            denied_scopes=[],
            allowed_scopes=[],
        )
    return config.delivery(agent, provider)


def require_granted(
    provider: str,
    session_id: str,
    wanted: tuple[str, ...],
    granted: tuple[str, ...] | None,
    reason: str = "no_grant",
) -> None:
    """Raise `consent_required` for the scopes the user's grant does not cover."""
    missing = sorted(set(wanted) - set(granted or ()))
    if granted is None or missing:
        raise ConsentRequired(
            f"the user has not consented to {missing} at {provider!r} for this agent",
            provider=provider,
            missing_scopes=missing,
            reason=reason,
            authorizations_path=f"/v1/sessions/{session_id}/authorizations",
        )


def check_request_policy(
    config: VaultConfig, agent: str, provider: str, method: str, segments: tuple[str, ...]
) -> None:
    """403 `request_not_allowed` unless one of the agent's request rules at `provider` allows
    `method` on the path of these (percent-decoded) segments."""
    rules = config.request_rules(agent, provider)
    if any(_allows(rule, method, segments) for rule in rules):
        return
    raise RequestNotAllowed(
        f"agent {agent!r} may not send {method} /{'/'.join(segments)} to {provider!r} "
        f"(agents.{agent}.providers.{provider}.requests)",
        provider=provider,
        method=method,
    )


def _allows(rule: RequestRule, method: str, segments: tuple[str, ...]) -> bool:
    return method in rule.methods and any(
        _matches(_pattern_segments(pattern), segments) for pattern in rule.paths
    )


def _pattern_segments(pattern: str) -> tuple[str, ...]:
    return tuple(pattern[1:].split("/")) if pattern != "/" else ()


def _matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    """Segment by segment: `**` takes any number of segments, `*` any characters of one."""
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, segments[i:]) for i in range(len(segments) + 1))
    if not segments:
        return False
    regex = "".join(".*" if part == "*" else re.escape(unquote(part)) for part in _stars(head))
    return re.fullmatch(regex, segments[0], re.S) is not None and _matches(rest, segments[1:])


def _stars(segment: str) -> list[str]:
    return [part for part in re.split(r"(\*)", segment) if part]
