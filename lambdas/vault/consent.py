"""Flows 3 and 4: consent (authorization code + PKCE S256) and consent binding.

The authorization request is checked against the agent's policy before anything is stored. Each
provider has its own callback URL (`/v1/oauth/callback/{provider}`): a code is only redeemed at
the provider named by the callback it arrived at, and only for a flow of that provider (RFC 9700
§4.4.2, mix-up). The callback consumes `state` once, checks `iss` (RFC 9207), redeems the code
with the verifier and stores the tokens encrypted but not usable, with the hash of a one-time
binding code it puts only in the browser's redirect to the application's return URL. Only
`complete` with that code by the flow's own user turns the tokens into an active grant; a wrong
code or another user's completion rejects the flow and revokes the tokens upstream.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from vault.audit import Decision, decision
from vault.caller import Caller, agent_of
from vault.errors import (
    BindingCodeInvalid,
    BindingCodeRequired,
    CallbackMismatch,
    CodeExchangeFailed,
    DecryptionFailed,
    DelegationNotAllowed,
    FlowNotFound,
    FlowNotPending,
    Forbidden,
    InvalidRequest,
    InvalidState,
    InvalidUserToken,
    IssuerMismatch,
    OAuthError,
    ProviderError,
    ProviderTimeout,
    ReturnUrlNotAllowed,
    StoredDataInvalid,
    UnknownProvider,
    UserMismatch,
    VaultError,
)
from vault.models import Flow, Grant, PendingFlow, token_context, verifier_context
from vault.oauth.client import TokenResponse, new_code_verifier
from vault.policy import check_agent_policy
from vault.revocation import revoke_upstream
from vault.runtime import Services
from vault.sessions import HttpCall, authorize_session_call, new_id
from vault.store import Conflict

if TYPE_CHECKING:  # the agent function validates these bodies; the callback brings none
    from vault.schemas import CompleteFlow, StartAuthorization

FLOW_ID = re.compile(r"^flw_[A-Za-z0-9_-]{32}$")
# RFC 6749 §4.1.2.1 error codes: the only provider errors reflected to the return URL.
OAUTH_ERRORS = {
    "invalid_request",
    "unauthorized_client",
    "access_denied",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "consent_required",
    "login_required",
    "interaction_required",
}
MAX_PARAM = 2048


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _binding_hash(code: str) -> str:
    return hashlib.sha256(b"binding\x00" + code.encode()).hexdigest()


def callback_url(svc: Services, provider: str | None) -> str:
    """The redirect URI registered at `provider` (its own), or the legacy shared one (None)."""
    base = svc.settings.callback_url.rstrip("/")
    return base if provider is None else f"{base}/{provider}"


def _return_url(svc: Services, requested: str | None) -> str:
    allowed = svc.config.return_urls
    if requested is None:
        return allowed[0]
    if requested not in allowed:
        raise ReturnUrlNotAllowed(
            f"return_url {requested!r} is not registered; add it to return_urls in the vault "
            "config (exact match) or omit it to use the default"
        )
    return requested


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(p for p in (parts.query, urlencode(params)) if p)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def start_authorization(
    svc: Services, caller: Caller, session_id: str, call: HttpCall, body: StartAuthorization
) -> dict[str, Any]:
    agent = agent_of(svc.config, caller)
    with decision(
        "consent.start",
        only_refusals=True,
        agent=agent,
        principal=caller.arn,
        provider=body.provider,
        scopes=body.scopes,
        session_id=session_id,
    ):
        scopes = check_agent_policy(svc.config, agent, body.provider, tuple(body.scopes))
        if svc.config.providers[body.provider].grant_type == "client_credentials":
            raise InvalidRequest(
                f"provider {body.provider!r} is a machine provider (client_credentials): the"
                " agent's own credentials need no consent; ask POST .../tokens or use the proxy"
            )
        return_url = _return_url(svc, body.return_url)
    session, _ = authorize_session_call(svc, caller, session_id, call)
    with decision(
        "consent.start",
        agent=agent,
        user=session.user,
        provider=body.provider,
        scopes=scopes,
        session_id=session.session_id,
        task_id=session.task_id,
    ) as d:
        if session.ancestors:  # its tokens come from its root's grant: consent is asked there
            raise DelegationNotAllowed(
                "a delegated session does not ask for consent: the session it was delegated"
                " from (its root) does",
                reason="consent",
            )
        provider = svc.provider(body.provider)
        state, verifier = secrets.token_urlsafe(32), new_code_verifier()
        flow_id, grant_id = new_id("flw"), new_id("grt")
        url = provider.authorization_url(
            redirect_uri=callback_url(svc, body.provider),
            state=state,
            verifier=verifier,
            scopes=scopes,
        )
        now = svc.now()
        pending = PendingFlow(
            state_hash=_state_hash(state),
            flow_id=flow_id,
            session_id=session.session_id,
            agent=agent,
            provider=body.provider,
            scopes=scopes,
            user=session.user,
            verifier_ct=svc.envelope.encrypt(
                verifier.encode(), verifier_context(session.user, body.provider, flow_id)
            ),
            return_url=return_url,
            grant_id=grant_id,
            created_at=now,
            expires_at=now + svc.config.flow_ttl_seconds,
        )
        svc.store.flows.put_pending(pending)
        d.bind(flow_id=flow_id)
    return {"flow_id": flow_id, "authorization_url": url, "expires_at": pending.expires_at}


def handle_callback(
    svc: Services, query: dict[str, str], callback_provider: str | None = None
) -> str:
    """The provider's redirect: returns where to send the browser, or raises a problem.

    `callback_provider` is the provider named by the callback's path; None for the legacy shared
    callback, which is accepted only for providers that send `iss` (RFC 9207) and so is checked.
    Failures that say nothing about the code (metadata, keys, storage, the provider unreachable)
    release `state` for a retry; anything else burns it (docs/api.md, the callback's retry rules).
    """
    with decision("consent.callback") as d:
        if callback_provider is not None and callback_provider not in svc.config.providers:
            raise UnknownProvider("no provider has this callback; nothing was redeemed")
        state = query.get("state")
        if not state or len(state) > MAX_PARAM:
            raise InvalidState("the callback has no usable state")
        pending = svc.store.flows.claim_pending(_state_hash(state), svc.clock())
        if pending is None:
            raise InvalidState(
                "this state is unknown, expired or already used; start consent again"
            )
        provider = svc.provider(pending.provider)
        d.bind(
            agent=pending.agent,
            user=pending.user,
            provider=pending.provider,
            session_id=pending.session_id,
            flow_id=pending.flow_id,
        )
        if callback_provider is not None and callback_provider != pending.provider:
            # mix-up: an answer meant for this flow's provider arrived at another provider's
            # callback (or the reverse); redeeming it anywhere could hand the code to the wrong
            # token endpoint
            svc.store.flows.drop_pending(pending.state_hash)
            d.note(callback_provider=callback_provider)
            raise CallbackMismatch(
                f"this authorization response belongs to provider {pending.provider!r}, not "
                f"{callback_provider!r}; it was not redeemed (start consent again)"
            )
        error = query.get("error")
        if error is not None:
            refusal = error if error in OAUTH_ERRORS else "invalid_request"
            svc.store.flows.close_pending(
                pending.state_hash, _flow(pending, "refused", error=refusal)
            )
            d.bind(scopes=pending.scopes)
            d.conclude("refused", reason=refusal)
            return _with_query(
                pending.return_url,
                {"flow_id": pending.flow_id, "status": "refused", "error": refusal},
            )
        try:
            meta = provider.metadata()
            if callback_provider is None and not meta.iss_parameter_supported:
                raise CallbackMismatch(
                    f"provider {pending.provider!r} sends no iss: its authorization responses must "
                    f"arrive at its own callback, {callback_url(svc, pending.provider)}"
                )
            issuer = query.get("iss")
            if (issuer is not None or meta.iss_parameter_supported) and issuer != meta.issuer:
                raise IssuerMismatch(
                    "the authorization response names another issuer (iss); it was not redeemed"
                )
            code = query.get("code")
            if not code or len(code) > MAX_PARAM:
                raise CodeExchangeFailed("the callback carries no authorization code")
        except (IssuerMismatch, CallbackMismatch, CodeExchangeFailed):
            svc.store.flows.drop_pending(pending.state_hash)
            raise
        except (ProviderError, ProviderTimeout):  # metadata unreadable: transient
            svc.store.flows.release_pending(pending.state_hash)  # intact: the user may retry
            raise
        try:
            verifier = svc.envelope.decrypt(
                pending.verifier_ct,
                verifier_context(pending.user, pending.provider, pending.flow_id),
            )
            answer = provider.exchange_code(
                code=code,
                verifier=verifier.decode(),
                redirect_uri=callback_url(svc, callback_provider),
            )
        except DecryptionFailed as exc:
            # its verifier is not its own: unusable
            svc.store.flows.drop_pending(pending.state_hash)
            raise StoredDataInvalid(
                "this flow's stored verifier does not decrypt as its own"
            ) from exc
        except VaultError:  # provider down or slow, keys or client secret unavailable
            svc.store.flows.release_pending(pending.state_hash)  # intact: the user may retry
            d.conclude("failed")
            raise
        except OAuthError as exc:
            svc.store.flows.drop_pending(pending.state_hash)
            d.conclude("failed", reason=exc.error)
            raise CodeExchangeFailed(
                f"the provider refused the code exchange ({exc.error})", provider_error=exc.error
            ) from exc
        if answer.refresh_token is None:
            svc.store.flows.drop_pending(pending.state_hash)
            d.conclude("failed", reason="no_refresh_token")
            raise CodeExchangeFailed(
                f"provider {pending.provider!r} issued no refresh token; check "
                f"providers.{pending.provider}.offline_scope and prompt_consent"
            )
        offline = provider.config.offline_scope
        answered = {s for s in (answer.scopes or pending.scopes) if s != offline}
        # a grant is never wider than its flow asked for, whatever the provider granted (row 37)
        granted = tuple(sorted(answered & set(pending.scopes)))
        over_granted = sorted(answered - set(pending.scopes))
        context = token_context(
            pending.user, pending.provider, grant_id=pending.grant_id, scopes=granted
        )
        if answer.id_token is not None and svc.identity.issues(meta.issuer):
            denied = _consenting_user_refusal(
                svc, provider.config.client_id, answer.id_token, pending
            )
            if denied is not None:
                return _reject_at_callback(svc, pending, answer, denied, d)
        binding_code = secrets.token_urlsafe(32)
        flow = _flow(
            pending,
            "pending_binding",
            granted=granted,
            refresh_ct=svc.envelope.encrypt(answer.refresh_token.encode(), context),
            access_ct=svc.envelope.encrypt(answer.access_token.encode(), context),
            binding_hash=_binding_hash(binding_code),
        )
        try:
            svc.store.flows.close_pending(pending.state_hash, flow)
        except VaultError:
            # the code is spent but its tokens could not be kept: revoke them upstream rather than
            # leave a live grant the vault has forgotten (the state stays claimed: start again).
            # From the plaintext in hand: the callback may seal tokens, never open one.
            upstream = _revoke_answer(svc, pending.provider, answer)
            d.note(upstream="revoked" if upstream else "revoke_failed")
            d.conclude("failed")
            raise
        if over_granted:  # recorded, never granted (row 14)
            d.note(over_granted_scopes=over_granted)
        d.bind(scopes=pending.scopes)
        d.note(granted_scopes=list(granted))
        d.conclude("exchanged")
        # the binding code exists only here, in the browser's redirect to the application
        return _with_query(
            pending.return_url,
            {"flow_id": pending.flow_id, "status": "pending_binding", "binding_code": binding_code},
        )


def _consenting_user_refusal(
    svc: Services, client_id: str, id_token: str, pending: PendingFlow
) -> str | None:
    """None if the provider's ID token names the flow's user (iss, sub); else why not."""
    try:
        consenting = svc.identity.verify(id_token, (client_id,))
    except (InvalidUserToken, ProviderError):  # unverifiable: fail closed
        return InvalidUserToken.code
    return None if consenting == pending.user else UserMismatch.code


def _reject_at_callback(
    svc: Services,
    pending: PendingFlow,
    answer: TokenResponse,
    reason: str,
    d: Decision,
) -> str:
    """The provider's ID token names someone else: nothing is kept, the tokens are revoked
    upstream from the plaintext in hand (the callback may seal tokens, never open one), the flow
    is recorded rejected, and no binding code exists."""
    upstream = _revoke_answer(svc, pending.provider, answer)
    svc.store.flows.close_pending(pending.state_hash, _flow(pending, "rejected", error=reason))
    d.note(upstream="revoked" if upstream else "revoke_failed")
    d.conclude("denied", reason=reason)
    return _with_query(
        pending.return_url, {"flow_id": pending.flow_id, "status": "rejected", "error": reason}
    )


def _flow(
    pending: PendingFlow,
    status: str,
    *,
    granted: tuple[str, ...] = (),
    refresh_ct: bytes | None = None,
    access_ct: bytes | None = None,
    error: str | None = None,
    binding_hash: str | None = None,
) -> Flow:
    return Flow(
        flow_id=pending.flow_id,
        status=status,
        session_id=pending.session_id,
        agent=pending.agent,
        provider=pending.provider,
        scopes=pending.scopes,
        user=pending.user,
        grant_id=pending.grant_id,
        created_at=pending.created_at,
        expires_at=pending.expires_at,
        granted_scopes=granted,
        refresh_token_ct=refresh_ct,
        access_token_ct=access_ct,
        error=error,
        binding_hash=binding_hash,
    )


def complete_flow(
    svc: Services, caller: Caller, flow_id: str, body: CompleteFlow
) -> dict[str, Any]:
    """Binding: the application presents the binding code its return URL received and says who
    is logged in; only that code with the flow's own user activates the grant.

    The flow id alone (which the agent knows) activates nothing. A wrong code is not retried: it
    rejects the flow and revokes its tokens upstream, as another user's completion does, so the
    code cannot be guessed by polling. Losing a race to another completion is a 409.
    """
    agent = agent_of(svc.config, caller)
    flow = svc.store.flows.get(flow_id) if FLOW_ID.match(flow_id) else None
    if flow is None or (flow.status == "pending_binding" and flow.expires_at <= svc.clock()):
        raise FlowNotFound("no such flow, or it expired before binding")
    with decision("consent.complete", principal=caller.arn, flow_id=flow_id) as d:
        if flow.agent != agent:
            raise Forbidden("this flow belongs to another agent")
        if flow.status != "pending_binding":
            raise FlowNotPending(f"this flow is {flow.status}", flow_status=flow.status)
        d.bind(
            agent=agent,
            provider=flow.provider,
            session_id=flow.session_id,
            grant_id=flow.grant_id,
        )
        if body.binding_code is None:
            raise BindingCodeRequired(
                "binding_code is required: the vault put it in the redirect to the application's "
                "return URL, next to flow_id"
            )
        user = svc.identity.user_from(body.user.as_dict(), agent)
        d.bind(user=user)
        context = token_context(
            flow.user, flow.provider, grant_id=flow.grant_id, scopes=flow.granted_scopes
        )
        code_matches = flow.binding_hash is not None and hmac.compare_digest(
            _binding_hash(body.binding_code), flow.binding_hash
        )
        if not code_matches:
            _reject(svc, flow, context, BindingCodeInvalid.code, d)
            raise BindingCodeInvalid(
                "this is not the flow's binding code; the flow was rejected and its tokens revoked "
                "(start consent again)"
            )
        if user != flow.user:
            _reject(svc, flow, context, UserMismatch.code, d)
            raise UserMismatch(
                "the logged-in user is not the user this consent was started for; "
                "the tokens were revoked"
            )
        assert flow.refresh_token_ct is not None  # a pending_binding flow always holds them
        previous = svc.store.grants.get(flow.user, flow.agent, flow.provider)
        grant = Grant(
            grant_id=flow.grant_id,
            user=flow.user,
            agent=flow.agent,
            provider=flow.provider,
            scopes=flow.granted_scopes,
            refresh_token_ct=flow.refresh_token_ct,
            created_at=svc.now(),
        )
        try:
            svc.store.flows.activate(flow, grant)
        except Conflict as exc:
            raise FlowNotPending("this flow was completed concurrently") from exc
        if previous is not None and previous.grant_id != grant.grant_id:
            # Tokens minted from the replaced grant must not outlive it. They are dropped, not
            # revoked upstream: the provider may share one grant between both consents, and
            # revoking there would kill the new one too.
            for stale in svc.store.sessions.tokens_minted_from(previous):
                svc.store.sessions.delete_token(stale)
        if not svc.config.providers[flow.provider].revocation_revokes_grant:
            _revoke_flow_tokens(svc, flow, context, refresh=False)  # the consent's own access token
        d.bind(scopes=flow.granted_scopes)
    return {
        "flow_id": flow.flow_id,
        "status": "active",
        "grant_id": grant.grant_id,
        "provider": flow.provider,
        "scopes": list(flow.granted_scopes),
    }


def _revoke_answer(svc: Services, provider: str, answer: TokenResponse) -> bool:
    """Best-effort upstream revocation of a code exchange's tokens; True if every call
    succeeded."""
    ok = True
    for token, hint in (
        (answer.refresh_token, "refresh_token"),
        (answer.access_token, "access_token"),
    ):
        if token:
            try:
                svc.provider(provider).revoke(token, hint)
            except (VaultError, OAuthError):
                ok = False
    return ok


def _reject(
    svc: Services,
    flow: Flow,
    context: dict[str, str],
    reason: str,
    completing: Decision,
) -> None:
    """Close a pending flow as rejected (the caller then raises the error named `reason`) and
    revoke its tokens upstream; a flow another request closed first (a race) is left alone and
    answered 409, its tokens untouched."""
    try:
        svc.store.flows.reject(flow.flow_id, reason)
    except Conflict as exc:
        raise FlowNotPending("this flow was completed concurrently") from exc
    upstream = _revoke_flow_tokens(svc, flow, context)
    completing.note(upstream="revoked" if upstream else "revoke_failed")


def _revoke_flow_tokens(
    svc: Services, flow: Flow, context: dict[str, str], *, refresh: bool = True
) -> bool:
    """Best-effort upstream revocation of a flow's tokens; True if every call succeeded."""
    ok = True
    if refresh and flow.refresh_token_ct is not None:
        ok &= revoke_upstream(svc, flow.provider, flow.refresh_token_ct, context, "refresh_token")
    if flow.access_token_ct is not None:
        ok &= revoke_upstream(svc, flow.provider, flow.access_token_ct, context, "access_token")
    return ok
