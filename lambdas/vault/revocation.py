"""Flow 7: ending sessions and revoking grants, upstream first (RFC 7009), then locally.

A token whose upstream revocation failed is kept, marked `revoke_pending`, never served again,
and revoked again by the next revocation that reaches it: nothing is silently forgotten.

Revocation wins every race: it first closes the door (the session is marked ended, the grant
`revoking`, the task stopped, the unbound flow closed), and only then lists what to revoke. A
refresh that commits before the door closed is in the list; one that commits after fails its
condition, and its caller revokes what it just got (see tokens._refresh).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from vault.audit import decision, note_chain
from vault.caller import Caller, require_admin
from vault.errors import DecryptionFailed, InvalidRequest, OAuthError, UnknownProvider, VaultError
from vault.models import Flow, Grant, MachineToken, Session, SessionToken, UserRef, token_context
from vault.runtime import Services

if TYPE_CHECKING:  # the admin function validates it; the others only revoke
    from vault.schemas import Revocation


def revoke_upstream(
    svc: Services, provider: str, ciphertext: bytes, context: dict[str, str], hint: str
) -> bool:
    """True when the provider confirmed (or has no endpoint, or the token cannot be read)."""
    try:
        token = svc.envelope.decrypt(ciphertext, context)
    except DecryptionFailed:
        return True  # unreadable material is useless to anyone: drop it
    try:
        svc.provider(provider).revoke(token.decode(), hint)
    except (VaultError, OAuthError):
        return False
    return True


def revoke_plain(svc: Services, provider: str, token: str, hint: str) -> bool:
    """Revoke token material the vault holds only in memory (never stored); True if confirmed."""
    try:
        svc.provider(provider).revoke(token, hint)
    except (VaultError, OAuthError):
        return False
    return True


def upstream_at_session_end(svc: Services, token: SessionToken) -> bool:
    """Whether a session's end revokes this token at its provider (see `revoke_tokens`)."""
    provider = svc.config.providers[token.provider]
    return provider.revoke_on_session_end and (
        token.delivery == "bearer" or not provider.revocation_revokes_grant
    )


def revoke_tokens(
    svc: Services, tokens: list[SessionToken], *, session_end: bool = False, stored: bool = True
) -> int:
    """Revoke session tokens upstream and delete them; returns how many were ended.

    Where revoking one access token kills its whole grant at the provider, the grant is marked
    broken here too and its other sessions' tokens are dropped: they are dead upstream already.

    With `session_end` (a session ends or expires, its task stopped), a token that never left
    the vault (`proxy`) or is bound to the session's key, which dies with the task (`dpop`), is
    revoked upstream only where that does not kill the user's grant
    (`revocation_revokes_grant: false`); otherwise it is only deleted and the grant lives on, so
    the agent's next task needs no new consent. A `bearer` token left the vault: it is revoked
    as `revoke_on_session_end` says, as before.

    `stored=False`: tokens the vault never stored (a refresh that lost its race): revoked
    upstream as above, nothing to delete or mark.
    """
    revoked = 0
    dead_grants: set[str] = set()
    for token in tokens:
        provider = svc.config.providers[token.provider]
        upstream = (
            upstream_at_session_end(svc, token) if session_end else provider.revoke_on_session_end
        )
        if not upstream or revoke_upstream(
            svc, token.provider, token.access_token_ct, token.context, "access_token"
        ):
            if stored:
                svc.store.sessions.delete_token(token)
            revoked += 1
            if upstream and provider.revocation_revokes_grant:
                dead_grants.add(token.grant_id)
        elif stored and not token.revoke_pending:
            svc.store.sessions.mark_token_revoke_pending(token)
    for grant_id in dead_grants:
        grant = svc.store.grants.by_id(grant_id)
        if grant is not None and grant.status == "active":
            with decision(
                "grant.revoke",
                agent=grant.agent,
                user=grant.user,
                provider=grant.provider,
                grant_id=grant.grant_id,
            ) as d:
                svc.store.grants.mark_broken(grant, "revoked_with_session")
                d.conclude("revoked", reason="revoked_with_session")
        others = (
            svc.store.sessions.tokens_minted_from(grant)
            if grant is not None
            else svc.store.sessions.tokens_of_grant(grant_id)
        )
        for other in others:
            svc.store.sessions.delete_token(other)
    return revoked


def end_session(
    svc: Services,
    session: Session,
    reason: str,
    *,
    principal: str | None = None,
    marked: bool = False,
) -> int:
    """End a session, then revoke its tokens, read only after it is marked ended: a refresh
    that committed before is in the list, and none can commit after (tokens._refresh).

    Every descendant (flow 8) ends with it, each by its own delivery rules: the children are
    listed only after this session is marked ended, so a claim either committed before (and is
    listed) or fails its check that every ancestor is active. Returns the tokens ended, the
    descendants' included. `marked`: the caller marked it ended already (the sweep's
    conditional end)."""
    if session.ancestors:
        note_chain(session.session_id, session.chain())
    with decision(
        "session.end",
        principal=principal,
        agent=session.agent,
        user=session.user,
        session_id=session.session_id,
        task_id=session.task_id,
    ) as d:
        changed = marked or svc.store.sessions.end(session.session_id, reason)
        ended, revoked = _end_descendants(svc, session.session_id, principal)
        _, tokens = svc.store.sessions.bundle(session.session_id)
        revoked += revoke_tokens(svc, tokens, session_end=True)
        d.note(revoked_tokens=revoked, ended_sessions=ended or None)
        d.conclude("ended" if changed else "already_ended", reason=reason)
    return revoked


def _end_descendants(svc: Services, session_id: str, principal: str | None) -> tuple[int, int]:
    """End every claimed child of a session (and theirs): (sessions ended, tokens ended).
    A pending delegation needs nothing: its claim requires every ancestor active."""
    ended = revoked = 0
    for entry in svc.store.delegations.children_of(session_id):
        child = svc.store.sessions.get(entry.session_id) if entry.session_id else None
        if child is None:
            continue
        revoked += end_session(svc, child, "parent_ended", principal=principal)
        ended += 1
    return ended, revoked


def end_task_sessions(svc: Services, task_id: str) -> tuple[int, int]:
    """The reaper's work: the task is recorded as stopped (no session can start for it after
    this write), then every session of it ends, its tokens revoked. Idempotent."""
    now = svc.now()
    svc.store.sessions.mark_task_stopped(task_id, now, now + svc.config.stopped_task_ttl_seconds)
    ended = revoked = 0
    for session in svc.store.sessions.of_task(task_id):
        if session.status == "active" or svc.store.sessions.bundle(session.session_id)[1]:
            revoked += end_session(svc, session, "task_stopped")
            ended += 1
    return ended, revoked


def revoke_grant(svc: Services, grant: Grant, reason: str, *, principal: str | None = None) -> int:
    """Kill a grant: its refresh token upstream, every session token minted from it.

    The grant is marked `revoking` first: no refresh starts after that, and one in flight cannot
    commit (its caller revokes what it got); its tokens are listed only then."""
    current = svc.store.grants.mark_revoking(grant)
    if current is None:  # gone already, or replaced by a newer consent: not this grant
        return 0
    grant = current
    with decision(
        "grant.revoke",
        principal=principal,
        agent=grant.agent,
        user=grant.user,
        provider=grant.provider,
        grant_id=grant.grant_id,
    ) as d:
        upstream_ok = revoke_upstream(
            svc, grant.provider, grant.refresh_token_ct, grant.context, "refresh_token"
        )
        revoked = revoke_tokens(svc, svc.store.sessions.tokens_minted_from(grant))
        if upstream_ok:
            svc.store.grants.delete(grant)
        else:  # kept (never usable) so a later revocation can try upstream again
            svc.store.grants.mark_broken(grant, "revoke_pending")
        d.note(revoked_tokens=revoked)
        d.conclude("revoked" if upstream_ok else "revoke_pending", reason=reason)
    return revoked


def revoke(svc: Services, caller: Caller, body: Revocation) -> dict[str, int]:
    """Admin revocation by user, agent, provider and/or grant (all given filters must match)."""
    require_admin(svc.config, caller)
    if body.agent and body.agent not in svc.config.agents:
        raise InvalidRequest(f"no agent named {body.agent!r} is configured (agents)")
    if body.provider and body.provider not in svc.config.providers:
        raise UnknownProvider(f"no provider named {body.provider!r} is configured (providers)")
    with decision(
        "revocation",
        principal=caller.arn,
        agent=body.agent,
        provider=body.provider,
        grant_id=body.grant_id,
        user=UserRef(body.user.iss, body.user.sub) if body.user else None,
    ) as d:
        grants: list[Grant]
        if body.grant_id:
            found = svc.store.grants.by_id(body.grant_id)
            grants = [found] if found else []
        elif body.user:
            grants = svc.store.grants.of_user(UserRef(iss=body.user.iss, sub=body.user.sub))
        elif body.agent:
            grants = svc.store.grants.of_agent(body.agent, body.provider)
        else:
            grants = [
                g
                for agent in svc.config.agents
                for g in svc.store.grants.of_agent(agent, body.provider)
            ]
        selected = [
            g
            for g in grants
            if (body.user is None or g.user == UserRef(iss=body.user.iss, sub=body.user.sub))
            and (body.agent is None or g.agent == body.agent)
            and (body.provider is None or g.provider == body.provider)
        ]
        revoked = sum(
            revoke_grant(svc, g, "admin_revocation", principal=caller.arn) for g in selected
        )
        flows = 0
        if body.user is not None:  # the user's consents nobody bound yet die too
            for flow in svc.store.flows.unbound_of_user(
                UserRef(iss=body.user.iss, sub=body.user.sub)
            ):
                if (
                    (body.agent is None or flow.agent == body.agent)
                    and (body.provider is None or flow.provider == body.provider)
                    and (body.grant_id is None or flow.grant_id == body.grant_id)
                ):
                    flows += retire_unbound_flow(svc, flow, "revoked", principal=caller.arn)
        machine_tokens = 0
        if body.user is None and body.grant_id is None:  # an agent's own tokens have neither
            machine_tokens = revoke_machine_tokens(
                svc, body.agent, body.provider, principal=caller.arn
            )
        d.note(
            revoked_grants=len(selected),
            revoked_tokens=revoked,
            revoked_flows=flows,
            revoked_machine_tokens=machine_tokens,
        )
        d.conclude("done")
    return {
        "revoked_grants": len(selected),
        "revoked_tokens": revoked,
        "revoked_flows": flows,
        "revoked_machine_tokens": machine_tokens,
    }


def retire_unbound_flow(
    svc: Services, flow: Flow, status: str, *, now: int | None = None, principal: str | None = None
) -> int:
    """Close a flow nobody bound (`expired` by the sweep, `revoked` by a revocation of its
    user), then revoke its tokens upstream; 1 if its tokens are gone, 0 otherwise. A flow whose
    upstream revocation failed keeps its tokens and index entries: the next sweep retries."""
    if flow.status == "pending_binding":
        closed = svc.store.flows.close_unbound(flow.flow_id, status, now)
        if closed is None:  # bound, rejected or closed meanwhile
            return 0
        flow = closed
    with decision(
        "grant.revoke",
        principal=principal,
        agent=flow.agent,
        user=flow.user,
        provider=flow.provider,
        flow_id=flow.flow_id,
        grant_id=flow.grant_id,
    ) as d:
        context = token_context(
            flow.user, flow.provider, grant_id=flow.grant_id, scopes=flow.granted_scopes
        )
        upstream_ok = True
        for ciphertext, hint in (
            (flow.refresh_token_ct, "refresh_token"),
            (flow.access_token_ct, "access_token"),
        ):
            if ciphertext is not None:
                upstream_ok &= revoke_upstream(svc, flow.provider, ciphertext, context, hint)
        if upstream_ok:
            svc.store.flows.forget_tokens(flow.flow_id)
        d.note(upstream="revoked" if upstream_ok else "revoke_pending")
        d.conclude(
            "expired_unbound" if flow.status == "expired" else "revoked",
            reason="unbound_flow_" + flow.status,
        )
    return 1 if upstream_ok else 0


def sweep_unbound_flows(svc: Services) -> int:
    """The scheduled sweep: every flow that expired unbound is closed and its tokens revoked
    upstream (and those whose revocation failed before, again). Returns how many were done."""
    now = svc.now()
    done = 0
    for flow in svc.store.flows.expired_unbound(now):
        if flow.status in ("pending_binding", "expired", "revoked"):
            done += retire_unbound_flow(svc, flow, "expired", now=now)
    return done


SWEEP_MAX_SESSIONS = 200
"""Expired sessions one sweep ends at most; the rest wait for the next run (5 minutes)."""
SWEEP_BUDGET_SECONDS = 60.0
"""...and it starts no new one after this long (the admin function's timeout is 2 minutes; an
upstream revocation may wait for a slow provider)."""


def sweep_expired_sessions(
    svc: Services,
    *,
    limit: int = SWEEP_MAX_SESSIONS,
    budget_seconds: float = SWEEP_BUDGET_SECONDS,
) -> tuple[int, int]:
    """The scheduled sweep's second half: every session that expired without being ended is
    ended now (reason `expired`: its tokens revoked as at any end, its children with it, its
    `session.ended` event published), minutes after its expiry instead of when DynamoDB's TTL
    deletes it a day or more later. Each task entry the sweep's index holds is taken out once
    done; one whose session was renewed is indexed again at the new expiry (a renewal racing
    the sweep wins: the end is conditional on the expiry). At most `limit` entries and
    `budget_seconds` per run; what is left is the next run's. Returns (sessions, tokens) ended."""
    now = svc.now()
    stop_at = time.monotonic() + budget_seconds
    ended = revoked = 0
    for done, entry in enumerate(svc.store.sessions.expired_entries(now)):
        if done >= limit or time.monotonic() >= stop_at:
            break
        session = svc.store.sessions.get(entry.session_id)
        if session is not None and session.status == "active":
            if svc.store.sessions.end(session.session_id, "expired", expired_by=now):
                revoked += end_session(svc, session, "expired", marked=True)
                ended += 1
            else:  # renewed meanwhile (or ended by someone else): read what it is now
                session = svc.store.sessions.get(entry.session_id)
        renewed = (
            session.expires_at
            if session is not None and session.status == "active" and session.expires_at > now
            else None
        )
        svc.store.sessions.reindex_entry(entry, renewed)
    return ended, revoked


def revoke_machine_tokens(
    svc: Services, agent: str | None, provider: str | None, *, principal: str | None = None
) -> int:
    """An admin revocation's machine part (flow 12, vault.machine): every cached machine token
    of `agent` (or of every agent) at `provider` (or at every machine provider); returns how
    many were revoked."""
    revoked = 0
    for name in (agent,) if agent is not None else tuple(svc.config.agents):
        for where in svc.config.agents[name].providers:
            if (provider is None or where == provider) and svc.config.providers[
                where
            ].grant_type == "client_credentials":
                for token in svc.store.machine.of_agent(name, where):
                    revoked += revoke_machine_token(svc, token, principal=principal)
    return revoked


def revoke_machine_token(
    svc: Services, token: MachineToken, *, principal: str | None = None
) -> int:
    """Close the door on one cached machine token (no fetch stores after this), revoke it
    upstream, delete it; 1 if a token was revoked. A failed upstream revocation keeps it
    `revoking` (never served) for the next revocation to retry."""
    with decision(
        "machine.revoke",
        principal=principal,
        agent=token.agent,
        provider=token.provider,
        scopes=token.scopes,
    ) as d:
        current = svc.store.machine.mark_revoking(token)
        if current is None:
            d.conclude("already_gone")
            return 0
        upstream_ok = current.access_token_ct is None or revoke_upstream(
            svc, current.provider, current.access_token_ct, current.context, "access_token"
        )
        if upstream_ok:
            svc.store.machine.delete(current)
        d.note(upstream="revoked" if upstream_ok else "revoke_pending")
        d.conclude("revoked" if upstream_ok else "revoke_pending", reason="admin_revocation")
    return 1 if upstream_ok and current.access_token_ct is not None else 0
