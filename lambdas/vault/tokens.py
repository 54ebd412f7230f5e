"""Flows 5 and 6: session-scoped tokens, minted by a single-flight refresh.

Warm path: one strongly consistent query returns the session and its cached tokens, one
conditional write records the proof's jti, the cached token decrypts with a cached data key.
Cold path: the user's grant must cover the scopes; one caller per grant takes a lease and
refreshes upstream (narrowed to the requested scopes), storing a rotated refresh token and the
new session token in one transaction; concurrent callers wait for its result.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from vault.audit import Decision, decision
from vault.caller import Caller, agent_of
from vault.errors import (
    Busy,
    ConsentRequired,
    DecryptionFailed,
    DeliveryProxyOnly,
    DpopNonceRequired,
    DpopProofRequired,
    InvalidProof,
    OAuthError,
    ProofReplayed,
    ProviderError,
    SessionEnded,
    StorageUnavailable,
    StoredDataInvalid,
)
from vault.models import Grant, Session, SessionToken, scope_key, token_context
from vault.oauth.client import AnswerLost
from vault.policy import (
    check_agent_policy,
    check_delegated,
    delivery_of,
    require_granted,
    session_rights,
)
from vault.proofs import verify_proof
from vault.revocation import revoke_plain, revoke_tokens, upstream_at_session_end
from vault.runtime import Services
from vault.schemas import TokenRequest
from vault.sessions import HttpCall, authorize_session_call
from vault.singleflight import Look, await_result, holder_of, sleep_until
from vault.store import Conflict
from vault.store.grants import Lease

MAX_REUSE_MARGIN_SECONDS = 60
REUSE_MARGIN_FRACTION = 0.5
"""A cached token is handed out only while at least `min(60 s, half its lifetime)` of it is left:
an hour-long token keeps a minute for the agent to use it, and a provider's short-lived tokens
(minutes or seconds) are still cached for half their life instead of refreshed on every request."""
TOKEN_PROOF_HEADER = "X-Agent-Vault-Token-DPoP"  # noqa: S105 (a header name)  # nosec B105
"""Carries a `dpop` agent's proof for the provider's token endpoint (flow 11)."""


def reuse_margin(lifetime: float | None) -> float:
    """Seconds a cached token must still have left to be handed out (see above)."""
    if lifetime is None:  # stored before lifetimes were recorded
        return MAX_REUSE_MARGIN_SECONDS
    return min(MAX_REUSE_MARGIN_SECONDS, REUSE_MARGIN_FRACTION * lifetime)


def _fresh(token: SessionToken | None, now: float) -> bool:
    return (
        token is not None
        and not token.revoke_pending
        and token.expires_at - now > reuse_margin(token.lifetime)
    )


def _minted_meanwhile(token: SessionToken | None, seen: SessionToken | None, now: float) -> bool:
    """A token another caller minted while we waited for its refresh: taken as long as it is
    still alive, whatever the margin, so N callers make one refresh at any token lifetime."""
    return (
        token is not None
        and not token.revoke_pending
        and token.expires_at > now
        and (seen is None or token.access_token_ct != seen.access_token_ct)
    )


def _cached(token: SessionToken | None, now: float, delivery: str) -> bool:
    """A stored token the warm path hands out: fresh, and of this delivery (a bearer token is
    never handed out as DPoP, nor the reverse)."""
    return token is not None and token.delivery == delivery and _fresh(token, now)


def _usable(
    token: SessionToken | None,
    seen: SessionToken | None,
    now: float,
    delivery: str,
    *,
    rejected: bool = False,
) -> bool:
    """A token found while minting: of this delivery, fresh or minted meanwhile; never `seen`
    when the provider `rejected` it."""
    if token is None or token.delivery != delivery:
        return False
    return (_fresh(token, now) and not rejected) or _minted_meanwhile(token, seen, now)


def handed_out(
    svc: Services, caller: Caller, agent: str, session_id: str, body: TokenRequest
) -> tuple[tuple[str, ...], str]:
    """The scopes (within the agent's policy) and delivery of a token request, checked before the
    session is read: a `proxy` agent's token never leaves the vault (403 `delivery_proxy_only`)."""
    with decision(
        "token.issue",
        only_refusals=True,
        agent=agent,
        principal=caller.arn,
        provider=body.provider,
        scopes=body.scopes,
        session_id=session_id,
    ):
        scopes = check_agent_policy(svc.config, agent, body.provider, tuple(body.scopes))
        delivery = delivery_of(svc.config, agent, body.provider)
        if delivery == "proxy":
            proxy_path = f"/v1/sessions/{session_id}/proxy/{body.provider}/"
            raise DeliveryProxyOnly(
                f"agent {agent!r} reaches {body.provider!r} through the proxy: {proxy_path}...;"
                " the token never leaves the vault",
                provider=body.provider,
                proxy_path=proxy_path,
            )
    return scopes, delivery


def get_token(
    svc: Services, caller: Caller, session_id: str, call: HttpCall, body: TokenRequest
) -> dict[str, Any]:
    agent = agent_of(svc.config, caller)
    scopes, delivery = handed_out(svc, caller, agent, session_id, body)
    session, tokens = authorize_session_call(svc, caller, session_id, call)
    with decision(
        "token.issue",
        agent=agent,
        user=session.user,
        provider=body.provider,
        scopes=scopes,
        session_id=session_id,
        task_id=session.task_id,
    ) as d:
        check_delegated(svc.config, session, body.provider, scopes)  # a child: ⊆ its chain's
        proof = None
        if delivery == "dpop":
            proof = _token_endpoint_proof(svc, session, body.provider, call)
        cached = next(
            (t for t in tokens if t.provider == body.provider and t.scopes == scopes), None
        )
        minted = False
        if not _cached(cached, svc.clock(), delivery):
            cached, minted = _mint(svc, session, body.provider, scopes, cached, delivery, proof)
        assert cached is not None
        d.bind(grant_id=cached.grant_id)
        access_token = open_token(svc, cached)
        d.note(cached=not minted)
    return {
        "access_token": access_token,
        "token_type": cached.token_type,
        "expires_in": max(0, cached.expires_at - svc.now()),
        "scope": " ".join(scopes),
        "provider": body.provider,
    }


def open_token(svc: Services, token: SessionToken) -> str:
    """The access token of a stored session token; never one that does not decrypt as its own."""
    try:
        return svc.envelope.decrypt(token.access_token_ct, token.context).decode()
    except DecryptionFailed as exc:  # moved from another item or tampered: never served
        raise StoredDataInvalid("this session's stored token does not decrypt as its own") from exc


def _token_endpoint_proof(svc: Services, session: Session, provider: str, call: HttpCall) -> str:
    """The agent's DPoP proof for the provider's token endpoint (`X-Agent-Vault-Token-DPoP`),
    checked before it is forwarded: signed by the session's own key (its thumbprint is the
    session's), for POST at that token endpoint, fresh, and never seen before (a replayed
    proof would make the provider refuse the refresh as `invalid_grant`)."""
    client = svc.provider(provider)
    meta = client.require_dpop()
    if not call.token_proof:
        known = {"nonce": client.dpop_nonce} if client.dpop_nonce else {}
        raise DpopProofRequired(
            f"{TOKEN_PROOF_HEADER} is required: a DPoP proof (htm POST, htu the provider's token"
            " endpoint) signed by the session key",
            htu=meta.token_endpoint,
            **known,
        )
    max_age = svc.config.proof_max_age_seconds
    try:
        proof = verify_proof(
            call.token_proof,
            method="POST",
            url=meta.token_endpoint,
            now=svc.clock(),
            max_age=max_age,
            session_id=None,
            expected_jkt=session.jkt,
            check_sid=False,
        )
    except InvalidProof as exc:
        raise InvalidProof(
            f"{TOKEN_PROOF_HEADER}: {exc.detail}", header=TOKEN_PROOF_HEADER
        ) from exc
    if not svc.store.replay.remember(proof.jkt, proof.jti, proof.iat + max_age):
        raise ProofReplayed(
            f"{TOKEN_PROOF_HEADER}: this proof's jti was used before; sign a fresh one",
            header=TOKEN_PROOF_HEADER,
        )
    return call.token_proof


def proxy_token(
    svc: Services, session: Session, tokens: list[SessionToken], provider: str
) -> SessionToken:
    """The session's token for the proxy at `provider`: the cached one while fresh, else one
    minted for the agent's scopes there (narrowed to what the user granted)."""
    now = svc.clock()
    # the agent's policy there; a delegated session's: what its chain handed down
    policy = session_rights(svc.config, session).get(provider, frozenset())
    cached = sorted(
        (
            t
            for t in tokens
            if t.provider == provider and _cached(t, now, "proxy") and set(t.scopes) <= policy
        ),
        key=lambda t: -len(t.scopes),
    )
    if cached:
        return cached[0]
    grant = svc.store.grants.get(session.user, session.grantee, provider)
    granted = set(grant.scopes) & set(policy) if grant is not None else set()
    scopes = tuple(sorted(granted or set(policy)))
    seen = next((t for t in tokens if t.provider == provider and t.scopes == scopes), None)
    token, _ = _mint(svc, session, provider, scopes, seen, "proxy", None)
    return token


def replace_rejected_token(svc: Services, session: Session, rejected: SessionToken) -> SessionToken:
    """The provider answered 401 to `rejected`: a new token (one single-flight refresh for all
    the session's requests that saw it fail; one minted meanwhile is taken)."""
    token, _ = _mint(
        svc,
        session,
        rejected.provider,
        rejected.scopes,
        rejected,
        rejected.delivery,
        None,
        rejected=True,
    )
    return token


def _mint(
    svc: Services,
    session: Session,
    provider: str,
    scopes: tuple[str, ...],
    seen: SessionToken | None,
    delivery: str,
    dpop_proof: str | None,
    *,
    rejected: bool = False,
) -> tuple[SessionToken, bool]:
    """A fresh token for (session, scopes): refreshed by us, or by the caller holding the lease.
    `seen` is the stale token (or None) this request found: anything else is newly minted;
    `rejected`: the provider refused `seen`, so it is not taken however fresh it looks.

    The lease attempt is also the read of the grant (one request). A caller that loses it to a
    holder minting this same token waits for that token without polling
    (`vault.singleflight`: two reads at most); one that loses it to a holder minting another
    token of the grant (another session's, or other scopes) waits until that holder should be
    done and tries the lease once more; either way at most 3 requests, then 503."""
    timeout = svc.provider(provider).config.timeout_seconds
    lease_seconds = 2 * timeout + 5
    owner = uuid.uuid4().hex
    purpose = f"{session.session_id}#{scope_key(scopes)}"

    def minted() -> SessionToken | None:
        existing = svc.store.sessions.get_token(session.session_id, provider, scopes)
        return (
            existing if _usable(existing, seen, svc.clock(), delivery, rejected=rejected) else None
        )

    def look() -> Look[SessionToken]:
        grant, existing = svc.store.grants.with_token(
            session.user, session.grantee, provider, session.session_id, scopes
        )
        usable = _usable(existing, seen, svc.clock(), delivery, rejected=rejected)
        holder = grant.lease_owner if grant is not None and grant.lease_owner else ""
        return Look(existing if usable else None, holder)

    for attempt in (1, 2):
        now = svc.clock()
        lease = Lease(owner=owner, since=now, until=now + lease_seconds, purpose=purpose)
        grant, held = svc.store.grants.acquire_lease(session.user, session.grantee, provider, lease)
        try:
            _require_usable(grant, provider, session.authorizations_path, scopes)
        except ConsentRequired:
            if held:  # a grant that does not cover the scopes: give its lease back
                assert grant is not None
                svc.store.grants.release_lease(grant, owner)
            raise
        assert grant is not None
        if not held:
            holder = holder_of(
                grant.lease_owner,
                grant.lease_since,
                grant.lease_until,
                grant.refresh_seconds,
                seen_at=svc.clock(),
                lease=lease_seconds,
            )
            if grant.lease_for == purpose:  # the holder mints this very token
                return await_result(svc, holder, look, BUSY), False
            if attempt == 2:
                break
            sleep_until(svc, holder.expected())
            continue
        # whoever held the lease before us may have minted exactly this token
        try:
            existing = minted()
        except BaseException:  # storage failing: no refresh started, give the lease back
            with contextlib.suppress(StorageUnavailable):
                svc.store.grants.release_lease(grant, owner)
            raise
        if existing is not None:
            svc.store.grants.release_lease(grant, owner)
            return existing, False
        with decision(
            "grant.refresh",
            agent=grant.agent,
            user=grant.user,
            provider=grant.provider,
            scopes=scopes,
            session_id=session.session_id,
            grant_id=grant.grant_id,
        ) as refreshing:
            if grant.lease_abandoned and svc.provider(provider).config.rotates_refresh_tokens:
                # the last holder never reported back (crashed, or its result was not
                # stored): its refresh may have rotated the token we hold, so never replay it
                raise _outcome_unknown(svc, session, grant, scopes, refreshing)
            token = _refresh(svc, session, grant, scopes, owner, delivery, dpop_proof, refreshing)
            return token, True
    raise Busy(BUSY)


BUSY = "another request is refreshing this grant; retry shortly"


def _took(svc: Services, grant: Grant) -> float:
    """How long this request has held the grant's lease: what the next refresh's waiters expect."""
    return max(0.0, svc.clock() - (grant.lease_since or svc.clock()))


def _require_usable(
    grant: Grant | None, provider: str, authorizations_path: str, scopes: tuple[str, ...]
) -> None:
    if grant is None:
        require_granted(provider, authorizations_path, scopes, None, "no_grant")
    elif grant.status == "revoking":
        require_granted(provider, authorizations_path, scopes, None, "grant_revoked")
    elif grant.status != "active":
        require_granted(provider, authorizations_path, scopes, None, "grant_broken")
    else:
        require_granted(provider, authorizations_path, scopes, grant.scopes, "scopes_not_granted")


def _outcome_unknown(
    svc: Services, session: Session, grant: Grant, scopes: tuple[str, ...], refreshing: Decision
) -> ConsentRequired:
    """Mark the grant broken because a refresh's outcome is unknown; the error to raise."""
    svc.store.grants.mark_broken(grant, "refresh_outcome_unknown")
    refreshing.conclude("broken", reason="refresh_outcome_unknown")
    return ConsentRequired(
        f"a refresh at {grant.provider!r} got no answer and may have rotated the user's grant; "
        "it is not retried: ask for consent again",
        provider=grant.provider,
        missing_scopes=list(scopes),
        reason="grant_broken",
        broken_reason="refresh_outcome_unknown",
        authorizations_path=session.authorizations_path,
    )


def _refresh(
    svc: Services,
    session: Session,
    grant: Grant,
    scopes: tuple[str, ...],
    owner: str,
    delivery: str,
    dpop_proof: str | None,
    refreshing: Decision,
) -> SessionToken:
    """Refresh upstream while holding the lease; always leaves the lease released. With
    `dpop_proof` the provider binds the new access token to the proof's (the session's) key.
    Says how it ended through `refreshing`, the refresh's audit decision."""
    client = svc.provider(grant.provider)
    try:
        refresh_token = svc.envelope.decrypt(grant.refresh_token_ct, grant.context).decode()
        answer = client.refresh(refresh_token, scopes, dpop_proof=dpop_proof)
    except OAuthError as exc:
        if exc.error in ("use_dpop_nonce", "invalid_dpop_proof"):
            # the provider refused the agent's proof before touching the refresh token
            svc.store.grants.release_lease(grant, owner)
            refreshing.conclude("failed", reason=exc.error)
            htu = client.metadata().token_endpoint
            if exc.error == "use_dpop_nonce" and client.dpop_nonce:
                raise DpopNonceRequired(
                    f"provider {grant.provider!r} wants a DPoP nonce: sign {TOKEN_PROOF_HEADER}"
                    " again with this nonce",
                    nonce=client.dpop_nonce,
                    htu=htu,
                ) from exc
            raise InvalidProof(
                f"provider {grant.provider!r} refused the {TOKEN_PROOF_HEADER} proof ({exc.error})",
                header=TOKEN_PROOF_HEADER,
                htu=htu,
            ) from exc
        if exc.error == "invalid_grant":
            # the provider no longer honours this grant: mark it once, never retry it
            svc.store.grants.mark_broken(grant, "invalid_grant")
            refreshing.conclude("broken", reason="invalid_grant")
            raise ConsentRequired(
                f"the user's consent at {grant.provider!r} is no longer valid; ask again",
                provider=grant.provider,
                missing_scopes=list(scopes),
                reason="grant_broken",
                authorizations_path=session.authorizations_path,
            ) from exc
        svc.store.grants.release_lease(grant, owner)
        refreshing.conclude("failed", reason=exc.error)
        raise ProviderError(
            f"provider {grant.provider!r} refused the refresh ({exc.error})"
        ) from exc
    except AnswerLost as exc:
        if not client.config.rotates_refresh_tokens:
            svc.store.grants.release_lease(grant, owner)
            raise
        # The provider may have rotated the refresh token and its answer is lost: the token we
        # hold may be spent, and replaying it makes a rotating provider revoke the whole grant
        # (every session's live tokens). Never replay it: break the grant once, ask for consent.
        raise _outcome_unknown(svc, session, grant, scopes, refreshing) from exc
    except DecryptionFailed as exc:  # moved from another grant or tampered: never used
        svc.store.grants.release_lease(grant, owner)
        raise StoredDataInvalid(
            "the grant's stored refresh token does not decrypt as its own"
        ) from exc
    except BaseException:
        svc.store.grants.release_lease(grant, owner)
        raise
    now = svc.now()
    new_refresh = None
    if answer.refresh_token is not None and answer.refresh_token != refresh_token:
        new_refresh = svc.envelope.encrypt(answer.refresh_token.encode(), grant.context)
    context = token_context(
        grant.user, grant.provider, session_id=session.session_id, scopes=scopes
    )
    token = SessionToken(
        session_id=session.session_id,
        provider=grant.provider,
        scopes=scopes,
        grant_id=grant.grant_id,
        user=grant.user,
        access_token_ct=svc.envelope.encrypt(answer.access_token.encode(), context),
        expires_at=now + answer.expires_in,
        lifetime=answer.expires_in,
        delivery=delivery,
    )
    broader = answer.scopes is not None and not set(answer.scopes) <= set(scopes)
    try:
        svc.store.grants.store_refresh(
            grant, owner, new_refresh, None if broader else token, now, _took(svc, grant)
        )
    except Conflict as exc:
        _lost_commit(svc, session, grant, owner, token, new_refresh, answer, now, refreshing)
        refreshing.conclude("failed", reason="lease_lost")
        raise Busy("the refresh lease expired before the result was stored; retry") from exc
    if broader:
        # the provider ignored the narrowing: never hand out more than was asked for
        refreshing.note(granted_scopes=list(answer.scopes or ()))
        refreshing.conclude("failed", reason="scope_not_narrowed")
        raise ProviderError(
            f"provider {grant.provider!r} returned a token broader than requested; set "
            f"providers.{grant.provider}.narrow_scopes_on_refresh to false only if it cannot "
            "narrow"
        )
    refreshing.conclude("refreshed")
    return token


def _lost_commit(
    svc: Services,
    session: Session,
    grant: Grant,
    owner: str,
    token: SessionToken,
    new_refresh: bytes | None,
    answer: Any,
    now: int,
    refreshing: Decision,
) -> None:
    """The refresh's commit failed its condition. If a revocation closed the door meanwhile
    (the grant is `revoking` or gone, or the session ended), what the provider just issued is
    revoked upstream and nothing is served: revocation wins. Returns (the caller answers
    `refresh_in_progress`) for a lost lease or a grant replaced by a new consent."""
    current = svc.store.grants.get(grant.user, grant.agent, grant.provider)
    if current is not None and current.grant_id != grant.grant_id:
        # a new consent replaced the grant: the provider may share one grant between both, so
        # nothing is revoked upstream (as when binding replaces a grant); the retry uses the new
        return
    if current is None or current.status != "active":
        # the grant is being revoked (or was broken): its revoker knows only the tokens stored
        # before it closed the door, so these two are ours to kill (a rotated refresh included)
        reason = (
            "grant_broken"
            if current is not None and current.status == "broken"
            else ("grant_revoked")
        )
        access_ok = revoke_plain(svc, grant.provider, answer.access_token, "access_token")
        refresh_ok = new_refresh is None or revoke_plain(
            svc, grant.provider, answer.refresh_token, "refresh_token"
        )
        refreshing.note(upstream="revoked" if access_ok and refresh_ok else "revoke_failed")
        refreshing.conclude("discarded", reason=reason)
        raise ConsentRequired(
            f"the user's grant at {grant.provider!r} was revoked; ask for consent again",
            provider=grant.provider,
            missing_scopes=list(token.scopes),
            reason=reason,
            authorizations_path=session.authorizations_path,
        )
    latest = svc.store.sessions.get(session.session_id)
    if latest is not None and latest.alive(svc.clock()):
        return
    # the session ended (or expired) while the provider answered: the grant lives on, so keep
    # a rotated refresh token, then revoke the access token as the session's end would have
    if current.lease_owner == owner:
        try:
            svc.store.grants.store_refresh(grant, owner, new_refresh, None, now, _took(svc, grant))
        except Conflict:
            svc.store.grants.release_lease(grant, owner)
    revoked = revoke_tokens(svc, [token], session_end=True, stored=False)
    if not upstream_at_session_end(svc, token):
        upstream = "kept"  # never left the vault, or bound to the dead session's key
    else:
        upstream = "revoked" if revoked else "revoke_failed"
    refreshing.note(upstream=upstream)
    refreshing.conclude("discarded", reason="session_ended")
    ended = (latest.ended_reason if latest is not None else None) or "expired"
    raise SessionEnded(f"the session is {ended}; start a new one", reason=ended)
