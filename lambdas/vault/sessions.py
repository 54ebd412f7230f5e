"""Flow 1 and 2: sessions bound to a caller, a user and a key; every later call proves the key."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vault.audit import decision, note_chain
from vault.caller import Caller, agent_of
from vault.errors import (
    DelegationNotAllowed,
    Forbidden,
    IdentityRequired,
    ProofReplayed,
    SessionEnded,
    SessionNotFound,
    TaskStopped,
    UserMismatch,
)
from vault.models import Session, SessionToken
from vault.revocation import end_session, revoke_tokens
from vault.runtime import Services
from vault.store import Conflict

if TYPE_CHECKING:  # annotations only (`_check_proof` imports `vault.proofs` itself)
    from vault.proofs import Proof
    from vault.schemas import RenewSession, StartSession

SESSION_ID = re.compile(r"^ses_[A-Za-z0-9_-]{32}$")


@dataclass(frozen=True)
class HttpCall:
    """What a proof is checked against: the method and public URL of this request."""

    method: str
    url: str
    proof: str | None
    token_proof: str | None = None
    """`X-Agent-Vault-Token-DPoP`: a `dpop` agent's proof for the provider's token endpoint."""


def session_answer(svc: Services, session: Session) -> dict[str, Any]:
    """A session as the agent routes answer it: with how its agent reaches each provider
    (`delivery`, `api_base_urls`), so the SDK knows where to send each provider's calls."""
    view = session.public_view(svc.clock())
    agent = svc.config.agents.get(session.agent)
    names = list(agent.providers if agent is not None else {})
    if session.ancestors:  # a child reaches only what was delegated to it
        names = [name for name in names if name in (session.delegated or {})]
    view["providers"] = {
        name: {
            "delivery": svc.config.delivery(session.agent, name),
            "api_base_urls": list(svc.config.providers[name].api_base_urls),
        }
        for name in names
    }
    view["depth"] = session.depth
    view["chain"] = session.chain()
    if session.ancestors:
        view["parent_session_id"] = session.parent_session_id
    return view


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def _check_proof(
    svc: Services, call: HttpCall, session_id: str | None, expected_jkt: str | None
) -> Proof:
    # joserfc and cryptography's x509 (what `vault.proofs` imports) load with the functions
    # that check proofs: the agent and proxy functions (`vault.tokens` imports it), not the
    # callback or admin ones (tests/unit/test_cold_imports.py holds both)
    from vault.proofs import verify_proof

    proof = verify_proof(
        call.proof,
        method=call.method,
        url=call.url,
        now=svc.clock(),
        max_age=svc.config.proof_max_age_seconds,
        session_id=session_id,
        expected_jkt=expected_jkt,
    )
    keep_until = proof.iat + svc.config.proof_max_age_seconds
    if not svc.store.replay.remember(proof.jkt, proof.jti, keep_until):
        raise ProofReplayed("this proof's jti was used before; sign a fresh proof per request")
    return proof


check_proof = _check_proof
"""A request's proof: fresh, for this method and URL, of `session_id` and the key `expected_jkt`
(None, None: a new key, as when a session starts or a delegation is claimed), never replayed."""


def start_session(svc: Services, caller: Caller, call: HttpCall, body: StartSession) -> Session:
    agent = agent_of(svc.config, caller)
    proof = _check_proof(svc, call, None, None)
    with decision(
        "session.start", agent=agent, principal=caller.arn, task_id=caller.session_name
    ) as d:
        user = svc.identity.user_from(body.user.as_dict(), agent)
        d.bind(user=user)
        now = svc.now()
        ttl = min(
            body.ttl_seconds or svc.config.session_ttl_seconds, svc.config.session_ttl_seconds
        )
        session = Session(
            session_id=new_id("ses"),
            agent=agent,
            principal_arn=caller.arn,
            task_id=caller.session_name,
            user=user,
            jkt=proof.jkt,
            public_jwk=proof.public_jwk,
            created_at=now,
            expires_at=now + ttl,
        )
        try:
            svc.store.sessions.put(session)  # only while the task is not recorded as stopped
        except Conflict as exc:
            raise TaskStopped(
                "this task was stopped; its credentials can start no new session"
            ) from exc
        d.bind(session_id=session.session_id)
    return session


def authorize_session_call(
    svc: Services,
    caller: Caller,
    session_id: str,
    call: HttpCall,
    *,
    require_alive: bool = True,
    revoke_expired: bool = True,
) -> tuple[Session, list[SessionToken]]:
    """Load a session with its tokens (one query), check it is the caller's, the proof, and
    (unless asked not to) that it is alive. A dead session's remaining tokens are revoked then,
    unless `revoke_expired` is false (the proxy's function may not: the agent API, `DELETE` and
    the reaper do it)."""
    if not SESSION_ID.match(session_id):
        raise SessionNotFound("no such session")
    session, tokens = svc.store.sessions.bundle(session_id)
    if session is None:
        raise SessionNotFound("no such session")
    if session.ancestors:  # every event of a delegated session carries its chain
        note_chain(session_id, session.chain())
    with decision(
        "session.access", only_refusals=True, principal=caller.arn, session_id=session_id
    ) as d:
        if session.principal_arn != caller.arn:
            raise Forbidden("this session belongs to another caller")
        d.bind(agent=session.agent, task_id=session.task_id)
        _check_proof(svc, call, session_id, session.jkt)
        if require_alive and not session.alive(svc.clock()):
            # an expired session's tokens die with it (an ended one's were revoked when it
            # ended; any left are those whose upstream revocation is still pending)
            revoked = (
                revoke_tokens(svc, tokens, session_end=True) if tokens and revoke_expired else 0
            )
            d.note(status=session.status, revoked_tokens=revoked)
            d.conclude("denied", reason=SessionEnded.code)
            raise SessionEnded(
                f"the session is {session.ended_reason or 'expired'}; start a new one",
                reason=session.ended_reason or "expired",
            )
        if require_alive and session.ancestors:
            _require_ancestors_alive(svc, session, end_if_dead=revoke_expired)
    return session, tokens


def _require_ancestors_alive(svc: Services, session: Session, *, end_if_dead: bool) -> None:
    """A delegated session lives only while every ancestor does (flow 8): read them (one
    strongly consistent batch) into `session.lineage`, or refuse `session_ended` /
    `parent_ended`. Ending a parent ends its descendants at once; this check makes the refusal
    independent of that cascade (a parent that expired, a cascade cut short). With
    `end_if_dead` the session is ended here too (its tokens revoked, its own children ended)."""
    assert session.ancestors
    found = svc.store.delegations.sessions(session.ancestors)
    now = svc.clock()
    lineage = [found.get(sid) for sid in session.ancestors]
    alive = [a for a in lineage if a is not None and a.alive(now)]
    if len(alive) != len(lineage):
        if end_if_dead:
            end_session(svc, session, "parent_ended")
        raise SessionEnded(
            "a session this one was delegated from has ended; so has this one",
            reason="parent_ended",
        )
    session.lineage = alive


def renew_session(
    svc: Services, caller: Caller, session_id: str, call: HttpCall, body: RenewSession
) -> Session:
    """Extend a live session (its task still runs) without new consent.

    A long-running agent outlives the identity token it started with: it may present a fresh
    token of the same user, compared by issuer and subject. Renewal never goes past the
    session's absolute maximum life (`session_max_life_seconds` from its start: there it simply
    expires), and once a first window (`session_ttl_seconds`) has passed since the user's
    identity was last verified, it needs that fresh identity.
    """
    session, _ = authorize_session_call(svc, caller, session_id, call)
    with decision(
        "session.renew", agent=session.agent, session_id=session_id, task_id=session.task_id
    ) as d:
        if session.ancestors:
            raise DelegationNotAllowed(
                "a delegated session is not renewed (its life never exceeds its parent's); the"
                " parent delegates again",
                reason="renewal",
            )
        now = svc.now()
        max_end = session.created_at + svc.config.session_max_life_seconds
        identity_due = now - session.identity_verified_at >= svc.config.session_ttl_seconds
        if identity_due and body.user is None:
            raise IdentityRequired(
                "renewing past the first window needs a fresh identity of the session's user (user)"
            )
        if body.user is not None:
            user = svc.identity.user_from(body.user.as_dict(), session.agent)
            if user != session.user:
                raise UserMismatch("a session can only be renewed for the user it was started for")
        ttl = min(
            body.ttl_seconds or svc.config.session_ttl_seconds, svc.config.session_ttl_seconds
        )
        expires_at = min(now + ttl, max_end)
        verified = body.user is not None
        if not svc.store.sessions.extend(session_id, expires_at, now, identity_verified=verified):
            raise SessionEnded("the session ended before it could be renewed; start a new one")
        session.expires_at = expires_at
        if verified:
            session.identity_at = now
        d.bind(user=session.user)
    return session
