"""The vault's records. Plain dataclasses: the store maps them to DynamoDB items."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UserRef:
    """A user's stable identity: the issuer and subject of their identity token."""

    iss: str
    sub: str

    @property
    def key(self) -> str:
        """Opaque, fixed-length key for storage (no PII in DynamoDB keys or CloudTrail)."""
        return hashlib.sha256(f"{self.iss}\x00{self.sub}".encode()).hexdigest()[:40]

    def as_dict(self) -> dict[str, str]:
        return {"iss": self.iss, "sub": self.sub}


def scope_key(scopes: tuple[str, ...] | list[str] | set[str] | frozenset[str]) -> str:
    return " ".join(sorted(set(scopes)))


def token_context(
    user: UserRef,
    provider: str,
    *,
    grant_id: str | None = None,
    session_id: str | None = None,
    scopes: tuple[str, ...] | list[str] | None = None,
) -> dict[str, str]:
    """KMS encryption context of token material: bound to its owner, its grant or session, and
    the scopes of the item holding it (a ciphertext moved to an item with other scopes, or an
    item whose scopes were edited, does not decrypt)."""
    context = {"purpose": "token", "user": user.key, "provider": provider}
    if grant_id is not None:
        context["grant"] = grant_id
    if session_id is not None:
        context["session"] = session_id
    if scopes is not None:
        context["scopes"] = scope_key(scopes)
    return context


def verifier_context(user: UserRef, provider: str, flow_id: str) -> dict[str, str]:
    return {"purpose": "verifier", "user": user.key, "provider": provider, "flow": flow_id}


@dataclass
class Session:
    session_id: str
    agent: str
    principal_arn: str
    task_id: str
    user: UserRef
    jkt: str
    public_jwk: dict[str, Any]
    created_at: int
    expires_at: int
    status: str = "active"
    ended_reason: str | None = None
    identity_at: int | None = None
    """When the user's identity was last verified (start, or a renewal carrying it)."""
    # --- delegation (flow 8): set on a child session only --------------------------------------
    ancestors: tuple[str, ...] | None = None
    """The sessions this one was delegated from, the root (an agent's own session) first and
    the parent last."""
    delegated: dict[str, list[str]] | None = None
    """What the parent handed down: provider -> scopes (never more than the parent has)."""
    grant_agent: str | None = None
    """The agent whose user grant the chain's tokens are minted from (the root's agent)."""
    act: dict[str, Any] | None = None
    """The actor chain, RFC 8693 §4.1 `act` shape: this session's actor outermost, each prior
    actor nested in it, down to the root's (the user is the chain's `sub`)."""
    delegation_id: str | None = None
    """The delegation this child was claimed from."""
    lineage: list[Session] | None = None
    """Not stored: the ancestors as read (alive) when the session was last authorized."""

    @property
    def identity_verified_at(self) -> int:
        return self.identity_at if self.identity_at is not None else self.created_at

    @property
    def parent_session_id(self) -> str | None:
        return self.ancestors[-1] if self.ancestors else None

    @property
    def depth(self) -> int:
        """0 for a session an agent started itself, 1 for its child, ..."""
        return len(self.ancestors or ())

    @property
    def grantee(self) -> str:
        """The agent whose grant this session's tokens come from (its own, or its root's)."""
        return self.grant_agent or self.agent

    @property
    def authorizations_path(self) -> str:
        """Where this session's user is asked for consent (`consent_required` names it): its
        own authorizations route, or for a delegated session its root's (a child never asks)."""
        root = self.ancestors[0] if self.ancestors else self.session_id
        return f"/v1/sessions/{root}/authorizations"

    @property
    def actor(self) -> dict[str, Any]:
        """This session's `act` member: itself as the current actor, prior actors nested."""
        return self.act or {"sub": self.agent, "sid": self.session_id}

    def chain(self) -> dict[str, Any]:
        """Who acts for whom, RFC 8693-shaped: the user as `sub`, the actors in `act`."""
        return {"iss": self.user.iss, "sub": self.user.sub, "act": self.actor}

    def alive(self, now: float) -> bool:
        return self.status == "active" and now < self.expires_at

    def public_view(self, now: float) -> dict[str, Any]:
        status = self.status if self.status != "active" or self.alive(now) else "expired"
        return {
            "session_id": self.session_id,
            "agent": self.agent,
            "user": self.user.as_dict(),
            "task_id": self.task_id,
            "jkt": self.jkt,
            "status": status,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


@dataclass
class SessionToken:
    """An access token minted for one session and one exact set of scopes."""

    session_id: str
    provider: str
    scopes: tuple[str, ...]
    grant_id: str
    user: UserRef
    access_token_ct: bytes
    expires_at: int
    revoke_pending: bool = False
    lifetime: int | None = None
    """Seconds the provider gave the token when it was minted (None on items stored before)."""
    delivery: str = "bearer"
    """How it is used: `proxy` (it never leaves the vault), `dpop` (handed out, bound by the
    provider to the session key) or `bearer` (handed out as is; items stored before)."""

    @property
    def token_type(self) -> str:
        """`DPoP` for a token bound to the session key (RFC 9449), else `Bearer`."""
        return "DPoP" if self.delivery == "dpop" else "Bearer"

    @property
    def context(self) -> dict[str, str]:
        return token_context(
            self.user, self.provider, session_id=self.session_id, scopes=self.scopes
        )


@dataclass
class PendingFlow:
    """A consent started and not yet answered: found by the hash of its single-use `state`."""

    state_hash: str
    flow_id: str
    session_id: str
    agent: str
    provider: str
    scopes: tuple[str, ...]
    user: UserRef
    verifier_ct: bytes
    return_url: str
    grant_id: str
    created_at: int
    expires_at: int
    status: str = "pending"


@dataclass
class Flow:
    """A consent answered by the provider: awaiting binding by the application, or closed."""

    flow_id: str
    status: str  # pending_binding | active | refused | rejected | expired | revoked (docs/api.md)
    session_id: str
    agent: str
    provider: str
    scopes: tuple[str, ...]
    user: UserRef
    grant_id: str
    created_at: int
    expires_at: int
    granted_scopes: tuple[str, ...] = ()
    refresh_token_ct: bytes | None = None
    access_token_ct: bytes | None = None
    error: str | None = None
    binding_hash: str | None = None
    """SHA-256 of the one-time binding code (the code itself is only in the browser's redirect)."""


@dataclass
class Grant:
    """A user's active consent for one agent at one provider; holds the refresh token."""

    grant_id: str
    user: UserRef
    agent: str
    provider: str
    scopes: tuple[str, ...]
    refresh_token_ct: bytes
    created_at: int
    status: str = "active"  # active | broken | revoking
    version: int = 1
    refreshed_at: int | None = None
    broken_reason: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    lease_since: float | None = None
    """When the lease holder took it: its waiters sleep until it should be done
    (`vault.singleflight`)."""
    lease_for: str | None = None
    """The session token the holder is minting (`<session id>#<scope key>`)."""
    refresh_seconds: float | None = None
    """How long the last refresh held the lease: what its waiters expect the next to take."""
    live_tokens: tuple[str, ...] = ()
    """The session tokens minted from it that may still be live, as `<session id>#<scope
    key>#<expires_at>`: written with each token in the refresh's transaction, so a revocation
    reads them strongly consistently with the grant (gsi2 may not list a token stored a moment
    before). Expired ones are dropped at the next refresh (`live_token_refs`)."""
    lease_abandoned: bool = False
    """Not stored: set by `acquire_lease` when the previous lease ran out unreleased (its
    holder's refresh may have rotated the refresh token; the outcome is unknown)."""

    @property
    def context(self) -> dict[str, str]:
        return token_context(self.user, self.provider, grant_id=self.grant_id, scopes=self.scopes)


def live_token_refs(grant: Grant, token: SessionToken, now: int) -> tuple[str, ...]:
    """`grant.live_tokens` once `token` is stored: the unexpired ones, and it."""
    kept = [r for r in grant.live_tokens if int(r.rsplit("#", 1)[1]) > now]
    return (*kept, f"{token.session_id}#{scope_key(token.scopes)}#{token.expires_at}")


def token_ref_key(ref: str) -> tuple[str, str]:
    """(session id, scope key) of a `Grant.live_tokens` entry."""
    session_id, rest = ref.split("#", 1)
    return session_id, rest.rsplit("#", 1)[0]


def machine_token_context(agent: str, provider: str, scopes: tuple[str, ...]) -> dict[str, str]:
    """KMS encryption context of a machine token: bound to the agent, the provider and the
    scopes of its item (a ciphertext copied to another agent's or scopes' item does not decrypt)."""
    return {
        "purpose": "machine_token",
        "agent": agent,
        "provider": provider,
        "scopes": scope_key(scopes),
    }


@dataclass
class MachineToken:
    """An agent's own access token at a `client_credentials` provider (flow 12), cached per
    agent x scopes, and the fetch lease that makes its fetching single-flight."""

    agent: str
    provider: str
    scopes: tuple[str, ...]
    access_token_ct: bytes | None = None
    expires_at: int = 0
    lifetime: int | None = None
    fetched_at: int | None = None
    status: str = "active"  # active | revoking
    lease_owner: str | None = None
    lease_until: float | None = None
    lease_since: float | None = None
    """When the lease holder took it (see `Grant.lease_since`)."""
    fetch_seconds: float | None = None
    """How long the fetch of the stored token held the lease (see `Grant.refresh_seconds`)."""

    @property
    def context(self) -> dict[str, str]:
        return machine_token_context(self.agent, self.provider, self.scopes)


@dataclass
class Delegation:
    """A child session offered by a parent session to another agent (flow 8), until claimed."""

    delegation_id: str
    parent_session_id: str
    agent: str
    """The agent that may claim it (its own IAM role, its own session key)."""
    user: UserRef
    providers: dict[str, list[str]]
    """What the child may use: provider -> scopes (within the parent's rights at creation)."""
    created_at: int
    claim_by: int
    """After this it can no longer be claimed."""
    expires_at: int
    """The child session's expiry (never past the parent's)."""
    status: str = "pending"  # pending | claimed
    session_id: str | None = None
    """The child session, once claimed."""
