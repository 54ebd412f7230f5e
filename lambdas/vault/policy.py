"""Policy rules: requested scopes ⊆ the agent's policy ∩ the user's grant, on every request; the
delivery of the agent's tokens; the proxy's request policy (methods and paths); what a delegated
session may use (its parent's rights ∩ its own agent's policy, down the chain)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from vault.config import Delivery, RequestRule, VaultConfig
from vault.errors import (
    ConsentRequired,
    DelegationExceedsParent,
    RequestNotAllowed,
    ScopeNotAllowed,
    UnknownProvider,
)
from vault.models import Session


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
    authorizations_path: str,
    wanted: tuple[str, ...],
    granted: tuple[str, ...] | None,
    reason: str = "no_grant",
) -> None:
    """Raise `consent_required` for the scopes the user's grant does not cover, naming where
    consent is asked (`Session.authorizations_path`)."""
    missing = sorted(set(wanted) - set(granted or ()))
    if granted is None or missing:
        raise ConsentRequired(
            f"the user has not consented to {missing} at {provider!r} for this agent",
            provider=provider,
            missing_scopes=missing,
            reason=reason,
            authorizations_path=authorizations_path,
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


def _policy(config: VaultConfig, agent: str) -> dict[str, frozenset[str]]:
    known = config.agents.get(agent)
    providers = known.providers if known is not None else {}
    return {name: frozenset(access.scopes) for name, access in providers.items()}


def session_rights(config: VaultConfig, session: Session) -> dict[str, frozenset[str]]:
    """What a session may ask for, per provider, before the user's grant: its agent's policy;
    for a delegated session, the root's policy narrowed at each link of the chain to what was
    delegated ∩ that link's agent's policy (read from today's config: a narrowed policy
    narrows every descendant at once). `session.lineage` holds the ancestors, root first."""
    if not session.ancestors:
        return _policy(config, session.agent)
    lineage = session.lineage
    if lineage is None or len(lineage) != len(session.ancestors):
        raise ValueError("a delegated session's ancestors must be read before its rights")
    root, *links = lineage
    rights = _policy(config, root.agent)
    for link in (*links, session):
        delegated = link.delegated or {}
        policy = _policy(config, link.agent)
        rights = {
            name: scopes & frozenset(delegated[name]) & policy[name]
            for name, scopes in rights.items()
            if name in delegated and name in policy
        }
    return {name: scopes for name, scopes in rights.items() if scopes}


def check_delegated(
    config: VaultConfig, session: Session, provider: str, scopes: tuple[str, ...]
) -> None:
    """403 `delegation_exceeds_parent` when a delegated session asks for a provider or scopes
    beyond what its chain handed down (nothing for a session an agent started itself)."""
    if not session.ancestors:
        return
    allowed = session_rights(config, session).get(provider)
    if allowed is None:
        raise DelegationExceedsParent(
            f"provider {provider!r} was not delegated to this session",
            provider=provider,
            reason="provider",
        )
    beyond = sorted(set(scopes) - allowed)
    if beyond:
        raise DelegationExceedsParent(
            f"scopes {beyond} at {provider!r} were not delegated to this session",
            provider=provider,
            reason="scopes",
            denied_scopes=beyond,
            allowed_scopes=sorted(allowed),
        )
