"""Scope rules: requested ⊆ the agent's policy ∩ the user's grant, on every request."""

from __future__ import annotations

from vault.config import VaultConfig
from vault.errors import ConsentRequired, ScopeNotAllowed, UnknownProvider


def check_agent_policy(
    config: VaultConfig, agent: str, provider: str, scopes: tuple[str, ...]
) -> tuple[str, ...]:
    """The requested scopes, sorted and unique, if the agent may ask for them at provider."""
    if provider not in config.providers:
        raise UnknownProvider(f"no provider named {provider!r} is configured (providers)")
    allowed = config.agents[agent].providers.get(provider, ())
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
