"""Flow 8: delegation. A session hands a sub-agent a child session; the sub-agent claims it.

`POST /v1/sessions/{id}/delegations` (the parent's principal and proof) offers a pending child
to another configured agent (`agents.<a>.may_delegate_to`, `max_delegation_depth`): providers
and scopes within the parent's rights and the child agent's policy, a life no longer than what
is left of the parent's. `POST /v1/delegations/{id}/claim` by the child agent (its own IAM role,
a proof signed by its own new key) turns it into a session bound to that principal and key:
no key or token crosses between agents.

A child's tokens are minted from its root's user grant (`Session.grantee`); what it may ask for
is checked at every request, from today's config and the ancestors as read then: the root's
policy ∩, at each link, what was delegated ∩ that agent's policy (`policy.session_rights`),
then the grant. It lives only while every ancestor does (`sessions.authorize_session_call`);
ending a session ends its descendants (`revocation.end_session`). The chain is RFC 8693-shaped:
the user as `sub`, the current actor in `act`, each prior actor nested in it.
"""

from __future__ import annotations

import re
from typing import Any

from vault.audit import decision, note_chain
from vault.caller import Caller, agent_of
from vault.errors import (
    DelegationExceedsParent,
    DelegationNotAllowed,
    DelegationNotFound,
    DelegationNotPending,
    Forbidden,
    SessionEnded,
    TaskStopped,
    UnknownProvider,
)
from vault.models import Delegation, Session
from vault.policy import check_agent_policy, session_rights
from vault.runtime import Services
from vault.schemas import StartDelegation
from vault.sessions import HttpCall, authorize_session_call, check_proof, new_id
from vault.store import Conflict

DELEGATION_ID = re.compile(r"^dlg_[A-Za-z0-9_-]{32}$")


def delegate(
    svc: Services, caller: Caller, session_id: str, call: HttpCall, body: StartDelegation
) -> Delegation:
    """Offer a child session of `session_id` to `body.agent` (pending until it claims it)."""
    agent_of(svc.config, caller)
    parent, _ = authorize_session_call(svc, caller, session_id, call)
    with decision(
        "delegation.create",
        agent=parent.agent,
        user=parent.user,
        session_id=parent.session_id,
        task_id=parent.task_id,
    ) as d:
        d.note(child_agent=body.agent, depth=parent.depth + 1)
        config = svc.config
        if body.agent not in config.agents[parent.agent].may_delegate_to:
            raise DelegationNotAllowed(
                f"agent {parent.agent!r} may not delegate to {body.agent!r}"
                f" (agents.{parent.agent}.may_delegate_to)",
                reason="agent_not_allowed",
            )
        if parent.depth + 1 > config.max_delegation_depth:
            raise DelegationNotAllowed(
                f"a child of this session would be {parent.depth + 1} deep; the chain may be at"
                f" most {config.max_delegation_depth} (max_delegation_depth)",
                reason="too_deep",
            )
        rights = session_rights(config, parent)
        providers: dict[str, list[str]] = {}
        for provider, asked in sorted(body.providers.items()):
            if provider not in config.providers:
                raise UnknownProvider(f"no provider named {provider!r} is configured (providers)")
            if provider not in rights:
                raise DelegationExceedsParent(
                    f"this session has nothing at {provider!r} to delegate",
                    provider=provider,
                    reason="provider",
                )
            beyond = sorted(set(asked) - rights[provider])
            if beyond:
                raise DelegationExceedsParent(
                    f"this session may not use {beyond} at {provider!r}: it cannot delegate them",
                    provider=provider,
                    reason="scopes",
                    denied_scopes=beyond,
                    allowed_scopes=sorted(rights[provider]),
                )
            allowed = check_agent_policy(config, body.agent, provider, tuple(asked))
            providers[provider] = list(allowed)
        now = svc.now()
        left = parent.expires_at - now
        ttl = body.ttl_seconds or min(left, config.session_ttl_seconds)
        if ttl > left:
            raise DelegationExceedsParent(
                f"a child lives no longer than its parent: at most {left} s are left",
                reason="lifetime",
                max_ttl_seconds=max(left, 0),
            )
        delegation = Delegation(
            delegation_id=new_id("dlg"),
            parent_session_id=parent.session_id,
            agent=body.agent,
            user=parent.user,
            providers=providers,
            created_at=now,
            claim_by=min(now + ttl, now + config.flow_ttl_seconds),
            expires_at=now + ttl,
        )
        try:
            svc.store.delegations.create(
                delegation, (*(parent.ancestors or ()), parent.session_id), now
            )
        except Conflict as exc:
            raise SessionEnded(
                "the session ended before it could delegate", reason="ended"
            ) from exc
        d.note(delegation_id=delegation.delegation_id)
    return delegation


def claim(svc: Services, caller: Caller, delegation_id: str, call: HttpCall) -> Session:
    """The child agent takes its delegation: a session bound to its principal and to the key
    that signed this request's proof. Once, before `claim_by`, while every ancestor lives."""
    agent = agent_of(svc.config, caller)
    if not DELEGATION_ID.match(delegation_id):
        raise DelegationNotFound("no such delegation")
    delegation = svc.store.delegations.get(delegation_id)
    if delegation is None:
        raise DelegationNotFound("no such delegation")
    with decision(
        "delegation.claim",
        principal=caller.arn,
        agent=agent,
        user=delegation.user,
        task_id=caller.session_name,
    ) as d:
        d.note(delegation_id=delegation_id)
        if agent != delegation.agent:
            raise Forbidden(f"this delegation is for agent {delegation.agent!r}")
        proof = check_proof(svc, call, None, None)
        now = svc.now()
        if delegation.status != "pending" or now >= delegation.claim_by:
            status = delegation.status if delegation.status != "pending" else "expired"
            raise DelegationNotPending(
                f"this delegation is {status}: a delegation is claimed once, in time",
                delegation_status=status,
            )
        parent = svc.store.sessions.get(delegation.parent_session_id)
        if parent is None or not parent.alive(now):
            raise SessionEnded("the session that delegated this has ended", reason="parent_ended")
        child_id = new_id("ses")
        child = Session(
            session_id=child_id,
            agent=agent,
            principal_arn=caller.arn,
            task_id=caller.session_name,
            user=delegation.user,
            jkt=proof.jkt,
            public_jwk=proof.public_jwk,
            created_at=now,
            expires_at=min(delegation.expires_at, parent.expires_at),
            ancestors=(*(parent.ancestors or ()), parent.session_id),
            delegated=delegation.providers,
            grant_agent=parent.grantee,
            act={"sub": agent, "sid": child_id, "act": parent.actor},
            delegation_id=delegation_id,
        )
        note_chain(child_id, child.chain())
        d.bind(session_id=child_id)
        d.note(depth=child.depth)
        try:
            svc.store.delegations.claim(delegation, child, now)
        except Conflict as exc:
            raise _claim_lost(svc, delegation, child) from exc
    return child


def _claim_lost(svc: Services, delegation: Delegation, child: Session) -> Exception:
    """Why a claim's transaction failed, read back: claimed (or expired) meanwhile, the task
    stopped, or an ancestor ended."""
    now = svc.now()
    current = svc.store.delegations.get(delegation.delegation_id)
    if current is None or current.status != "pending" or now >= current.claim_by:
        claimed = current is not None and current.status != "pending"
        status = current.status if current is not None and claimed else "expired"
        return DelegationNotPending(
            f"this delegation is {status}: a delegation is claimed once, in time",
            delegation_status=status,
        )
    if svc.store.sessions.task_stopped(child.task_id):
        return TaskStopped("this task was stopped; its credentials can start no new session")
    return SessionEnded("the session that delegated this has ended", reason="parent_ended")


def family(svc: Services, session: Session) -> dict[str, Any]:
    """A session's ancestors (root first) and its delegations (claimed or not), for the
    session view; for a child, also what it may use today (`rights`, before the user's grant)."""
    now = svc.clock()
    found = svc.store.delegations.sessions(session.ancestors or ())
    view: dict[str, Any] = {}
    if session.ancestors and all(sid in found for sid in session.ancestors):
        session.lineage = [found[sid] for sid in session.ancestors]
        rights = session_rights(svc.config, session)
        view["rights"] = {name: sorted(scopes) for name, scopes in rights.items()}
    ancestors = [
        _brief(found[sid], now) if sid in found else {"session_id": sid, "status": "gone"}
        for sid in session.ancestors or ()
    ]
    # an unclaimed delegation can be claimed only while this session lives (`claim`)
    claimable = session.alive(now)
    entries = svc.store.delegations.children_of(session.session_id)
    sessions = svc.store.delegations.sessions([e.session_id for e in entries if e.session_id])
    children = []
    for entry in entries:
        child: dict[str, Any] = {"delegation_id": entry.delegation_id, "agent": entry.agent}
        claimed = sessions.get(entry.session_id or "")
        if claimed is not None:
            child.update(_brief(claimed, now))
        else:
            pending = svc.store.delegations.get(entry.delegation_id)
            waiting = (
                claimable
                and pending is not None
                and pending.status == "pending"
                and now < pending.claim_by
            )
            child["status"] = "pending" if waiting else "expired"
        children.append(child)
    return view | {"ancestors": ancestors, "children": children}


def _brief(session: Session, now: float) -> dict[str, Any]:
    view = session.public_view(now)
    return {k: view[k] for k in ("session_id", "agent", "status", "expires_at")}


def delegation_answer(delegation: Delegation) -> dict[str, Any]:
    return {
        "delegation_id": delegation.delegation_id,
        "parent_session_id": delegation.parent_session_id,
        "agent": delegation.agent,
        "providers": delegation.providers,
        "status": delegation.status,
        "claim_by": delegation.claim_by,
        "expires_at": delegation.expires_at,
    }
