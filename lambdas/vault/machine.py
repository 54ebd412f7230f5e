"""Flow 12: machine credentials. An agent's own access token at a `client_credentials` provider
(OAuth 2LO, RFC 6749 §4.4): no user consents, the vault's client credentials (a client secret,
or a private key for `private_key_jwt`) are read from Secrets Manager like any provider secret.

A session is still required (its proof binds the caller) and the agent's policy still bounds the
scopes, but the token belongs to the agent, not to the session or the user: it is cached per
agent x provider x scopes (never served to another agent: the item's key and the token's KMS
encryption context both name the agent), fetched single-flight under a lease on that item, and
delivered by the agent's `delivery` (the proxy attaches it; `bearer` hands it out). An admin
revocation by agent and/or provider marks the cached tokens `revoking` (a fetch in flight cannot
store after that, and revokes what it got), revokes them upstream (RFC 7009) where the provider
can, and deletes them (`vault.revocation.revoke_machine_tokens`); the agent's next request
fetches a new token.
"""

from __future__ import annotations

import uuid
from typing import Any

from vault import revocation, tokens
from vault.audit import Decision, decision
from vault.caller import Caller, agent_of
from vault.config import VaultConfig
from vault.errors import (
    Busy,
    DecryptionFailed,
    OAuthError,
    ProviderError,
    StoredDataInvalid,
)
from vault.models import MachineToken, Session
from vault.runtime import Services
from vault.schemas import TokenRequest
from vault.sessions import HttpCall, authorize_session_call
from vault.singleflight import Look, await_result, holder_of
from vault.store import Conflict
from vault.store.grants import Lease


def is_machine(config: VaultConfig, provider: str) -> bool:
    """Whether `provider` is a machine (`client_credentials`) provider."""
    found = config.providers.get(provider)
    return found is not None and found.grant_type == "client_credentials"


def get_token(
    svc: Services, caller: Caller, session_id: str, call: HttpCall, body: TokenRequest
) -> dict[str, Any]:
    """`POST /v1/sessions/{id}/tokens` for a machine provider: the agent's machine token for the
    scopes asked (within its policy), with no consent; only for `bearer` delivery."""
    agent = agent_of(svc.config, caller)
    scopes, _ = tokens.handed_out(svc, caller, agent, session_id, body)
    session, _ = authorize_session_call(svc, caller, session_id, call)
    with decision(
        "token.issue",
        agent=agent,
        user=session.user,
        provider=body.provider,
        scopes=scopes,
        session_id=session_id,
        task_id=session.task_id,
    ) as d:
        token, fetched = obtain(svc, agent, body.provider, scopes)
        access_token = open_token(svc, token)
        d.note(cached=not fetched, credential="machine")
    return {
        "access_token": access_token,
        "token_type": "Bearer",  # a token type  # nosec B105
        "expires_in": max(0, token.expires_at - svc.now()),
        "scope": " ".join(scopes),
        "provider": body.provider,
    }


def proxy_token(svc: Services, session: Session, provider: str) -> MachineToken:
    """The machine token the proxy attaches for the session's agent: for every scope of the
    agent's policy at `provider` (one cached token per agent there)."""
    scopes = tuple(sorted(set(svc.config.agents[session.agent].providers[provider].scopes)))
    token, _ = obtain(svc, session.agent, provider, scopes)
    return token


def replace_rejected_token(svc: Services, rejected: MachineToken) -> MachineToken:
    """The provider answered 401 to `rejected`: a new one (single-flight; one fetched
    meanwhile by another request is taken)."""
    token, _ = obtain(
        svc, rejected.agent, rejected.provider, rejected.scopes, seen=rejected, rejected=True
    )
    return token


def drop_rejected_token(svc: Services, token: MachineToken) -> None:
    """Forget a token the provider refused: the next request fetches a new one."""
    svc.store.machine.drop_rejected(token)


def open_token(svc: Services, token: MachineToken) -> str:
    """The access token of a stored machine token; never one that does not decrypt as its own
    (copied from another agent's or other scopes' item, or tampered)."""
    try:
        if token.access_token_ct is None:
            raise DecryptionFailed("no token stored")
        return svc.envelope.decrypt(token.access_token_ct, token.context).decode()
    except DecryptionFailed as exc:
        raise StoredDataInvalid(
            "this agent's stored machine token does not decrypt as its own"
        ) from exc


def _usable(
    token: MachineToken | None, seen: MachineToken | None, now: float, rejected: bool
) -> bool:
    """A stored token to hand out: fresh (and not the one the provider `rejected`), or fetched
    by another request while this one waited (taken while alive, whatever the margin)."""
    if token is None or token.access_token_ct is None or token.status != "active":
        return False
    fresh = token.expires_at - now > tokens.reuse_margin(token.lifetime)
    if fresh and not rejected:
        return True
    return (
        seen is not None
        and token.access_token_ct != seen.access_token_ct
        and token.expires_at > now
    )


def obtain(
    svc: Services,
    agent: str,
    provider: str,
    scopes: tuple[str, ...],
    *,
    seen: MachineToken | None = None,
    rejected: bool = False,
) -> tuple[MachineToken, bool]:
    """The agent's machine token for (provider, scopes): the cached one while fresh, else one
    fetched by this request (holding the lease) or by the request that holds it. Returns the
    token and whether this request fetched it."""
    repo = svc.store.machine
    timeout = svc.provider(provider).config.timeout_seconds
    lease_seconds = 2 * timeout + 5

    def active(token: MachineToken | None) -> MachineToken | None:
        if token is not None and token.status != "active":
            raise Busy(
                f"a revocation of agent {agent!r}'s machine token at {provider!r} is under way;"
                " retry shortly"
            )
        return token

    def look() -> Look[MachineToken]:
        token = active(repo.get(agent, provider, scopes))
        usable = _usable(token, seen, svc.clock(), rejected)
        holder = token.lease_owner if token is not None and token.lease_owner else ""
        return Look(token if usable else None, holder)

    current = look().result
    if current is not None:
        return current, False
    owner = uuid.uuid4().hex
    now = svc.clock()
    lease = Lease(owner=owner, since=now, until=now + lease_seconds)
    found, held = repo.acquire_lease(agent, provider, scopes, lease)
    active(found)
    if found is not None and _usable(found, seen, svc.clock(), rejected):
        if held:  # stored just before our lease
            repo.release_lease(found, owner)
        return found, False
    if held:
        assert found is not None
        return _fetch(svc, found, owner), True
    # another request is fetching it: wait for its token without polling (two reads at most)
    assert found is not None
    holder = holder_of(
        found.lease_owner,
        found.lease_since,
        found.lease_until,
        found.fetch_seconds,
        seen_at=svc.clock(),
        lease=lease_seconds,
    )
    busy = "another request is fetching this machine token; retry shortly"
    return await_result(svc, holder, look, busy), False


def _fetch(svc: Services, leased: MachineToken, owner: str) -> MachineToken:
    """Fetch a token upstream while holding the lease; always leaves the lease released."""
    repo = svc.store.machine
    provider, scopes = leased.provider, leased.scopes
    with decision("machine.fetch", agent=leased.agent, provider=provider, scopes=scopes) as d:
        client = svc.provider(provider)
        try:
            answer = client.client_credentials(scopes)
        except OAuthError as exc:
            repo.release_lease(leased, owner)
            d.conclude("failed", reason=exc.error)
            raise ProviderError(
                f"provider {provider!r} refused the agent's client credentials ({exc.error})",
                provider=provider,
                provider_error=exc.error,
            ) from exc
        except BaseException:
            repo.release_lease(leased, owner)
            raise
        if answer.scopes is not None and set(answer.scopes) != set(scopes):
            # never more than asked; and fewer means the client is not allowed them there
            repo.release_lease(leased, owner)
            _discard(svc, provider, answer.access_token, d)
            d.note(granted_scopes=list(answer.scopes))
            d.conclude("failed", reason="scopes_not_as_requested")
            raise ProviderError(
                f"provider {provider!r} granted the scopes {sorted(answer.scopes)}, not the"
                f" {sorted(scopes)} asked for: check the client's scopes there",
                provider=provider,
            )
        took = max(0.0, svc.clock() - (leased.lease_since or svc.clock()))
        now = svc.now()
        token = MachineToken(
            agent=leased.agent,
            provider=provider,
            scopes=scopes,
            access_token_ct=svc.envelope.encrypt(answer.access_token.encode(), leased.context),
            expires_at=now + answer.expires_in,
            lifetime=answer.expires_in,
            fetched_at=now,
            fetch_seconds=round(took, 3),
        )
        try:
            repo.store(token, owner)
        except Conflict as exc:
            # a revocation closed the door (or the lease ran out): what we got is revoked
            current = repo.get(leased.agent, provider, scopes)
            reason = "revoked" if current is None or current.status != "active" else "lease_lost"
            _discard(svc, provider, answer.access_token, d)
            d.conclude("discarded", reason=reason)
            raise Busy(
                "the machine token was revoked or its lease ran out while it was fetched; retry"
            ) from exc
        d.conclude("fetched")
    return token


def _discard(svc: Services, provider: str, access_token: str, d: Decision) -> None:
    """Revoke upstream a token this request fetched and will not keep."""
    revoked = revocation.revoke_plain(svc, provider, access_token, "access_token")
    d.note(upstream="revoked" if revoked else "revoke_failed")
