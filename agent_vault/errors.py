"""Typed errors of the Agent Vault client.

Every error answer of the vault is an RFC 9457 ``application/problem+json`` document with a stable
``code`` (docs/api.md); :func:`error_from_response` maps it to one exception class, so an agent
catches ``ConsentRequired`` or ``SessionEnded`` rather than parsing status codes. API Gateway's own
refusals (a request whose SigV4 signature it rejected) are not problem documents: they become
:class:`AccessDenied` with the gateway's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AccessDenied",
    "BindingCodeInvalid",
    "ConsentRequired",
    "ConsentTimeout",
    "DPoPNonceRequired",
    "DPoPProofRequired",
    "DelegationNotAllowed",
    "DelegationNotFound",
    "DelegationNotPending",
    "DeliveryProxyOnly",
    "FlowNotFound",
    "FlowNotPending",
    "Forbidden",
    "InvalidProof",
    "InvalidRequest",
    "InvalidUserToken",
    "NotFound",
    "ProofReplayed",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RequestNotAllowed",
    "ReturnUrlNotAllowed",
    "ScopeNotAllowed",
    "SessionEnded",
    "SessionNotFound",
    "TaskStopped",
    "UnknownAgent",
    "UnknownProvider",
    "UpstreamRefused",
    "UserMismatch",
    "VaultConnectionError",
    "VaultError",
    "VaultUnavailable",
    "error_from_response",
]


class VaultError(Exception):
    """An error answer of the vault (or of the API in front of it).

    ``status`` is the HTTP status (0 when no answer arrived), ``code`` the problem ``code``
    (``"access_denied"`` for a gateway refusal), ``detail`` a human explanation, ``retry_after``
    the seconds the vault asked to wait (5xx answers), ``problem`` the whole problem document.
    """

    default_code = "vault_error"

    def __init__(
        self,
        detail: str,
        *,
        status: int = 0,
        code: str | None = None,
        title: str | None = None,
        retry_after: float | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code or self.default_code
        self.title = title or ""
        self.detail = detail
        self.retry_after = retry_after
        self.problem: dict[str, Any] = dict(problem or {})

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status else self.code
        return f"{prefix}: {self.detail}" if self.detail else prefix

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code!r},"
            f" detail={self.detail!r})"
        )


class VaultConnectionError(VaultError):
    """The vault could not be reached (connection refused, DNS, TLS, timeout)."""

    default_code = "connection_error"


class AccessDenied(VaultError):
    """API Gateway (or the function URL) refused the request before the vault saw it (missing or
    bad SigV4 signature, credentials of a principal without permission)."""

    default_code = "access_denied"


class InvalidRequest(VaultError):
    """400 ``invalid_request`` / 413 ``payload_too_large``: the SDK or the caller sent bad input."""

    default_code = "invalid_request"


class UnknownProvider(InvalidRequest):
    """400 ``unknown_provider``: no provider of that name is configured."""

    default_code = "unknown_provider"


class ReturnUrlNotAllowed(InvalidRequest):
    """400 ``return_url_not_allowed``: the return URL is not in the config's ``return_urls``."""

    default_code = "return_url_not_allowed"


class DPoPProofRequired(InvalidRequest):
    """400 ``dpop_proof_required``: a ``dpop`` delivery needs a proof for the provider's token
    endpoint in ``X-Agent-Vault-Token-DPoP`` (``htm`` POST, ``htu`` below, the session key)."""

    default_code = "dpop_proof_required"

    @property
    def htu(self) -> str | None:
        """The provider's token endpoint: the proof's ``htu``."""
        value = self.problem.get("htu")
        return str(value) if value is not None else None

    @property
    def nonce(self) -> str | None:
        """The provider's last DPoP nonce, when the vault knows one."""
        value = self.problem.get("nonce")
        return str(value) if value is not None else None


class DPoPNonceRequired(DPoPProofRequired):
    """400 ``dpop_nonce_required``: the provider wants this ``nonce`` in the token-endpoint
    proof (``use_dpop_nonce``); sign again with it and retry once."""

    default_code = "dpop_nonce_required"


class InvalidProof(VaultError):
    """401 ``invalid_proof``: the DPoP proof was missing, malformed, stale, or signed by the
    wrong key."""

    default_code = "invalid_proof"


class ProofReplayed(InvalidProof):
    """401 ``proof_replayed``: a proof ``jti`` was used twice."""

    default_code = "proof_replayed"


class InvalidUserToken(VaultError):
    """401 ``invalid_user_token``: the user's identity token was refused (signature, issuer,
    audience, expiry), or a ``user_id`` came from an agent not trusted to assert one."""

    default_code = "invalid_user_token"


class Forbidden(VaultError):
    """403 ``forbidden``: the caller may not do this (another agent's session or flow...)."""

    default_code = "forbidden"


class UnknownAgent(Forbidden):
    """403 ``unknown_agent``: the caller's IAM principal is not a configured agent."""

    default_code = "unknown_agent"


class ScopeNotAllowed(Forbidden):
    """403 ``scope_not_allowed``: the scopes exceed the agent's policy (see ``allowed_scopes``)."""

    default_code = "scope_not_allowed"

    @property
    def allowed_scopes(self) -> list[str]:
        """What the agent's policy allows at that provider."""
        value = self.problem.get("allowed_scopes")
        return [str(s) for s in value] if isinstance(value, list) else []

    @property
    def denied_scopes(self) -> list[str]:
        """The requested scopes beyond the policy."""
        value = self.problem.get("denied_scopes")
        return [str(s) for s in value] if isinstance(value, list) else []


class DelegationNotAllowed(Forbidden):
    """403 ``delegation_not_allowed`` / ``delegation_exceeds_parent``: the config lets this
    agent delegate to no such agent, the chain would be too deep, or the child would get more
    than its parent has (a provider, scopes, or a life past the parent's: see ``reason``)."""

    default_code = "delegation_not_allowed"

    @property
    def reason(self) -> str | None:
        value = self.problem.get("reason")
        return value if isinstance(value, str) else None


class DeliveryProxyOnly(Forbidden):
    """403 ``delivery_proxy_only``: this agent reaches the provider through the vault's proxy
    (``/v1/sessions/{id}/proxy/{provider}/...``); the token never leaves the vault."""

    default_code = "delivery_proxy_only"


class RequestNotAllowed(Forbidden):
    """403 ``request_not_allowed``: a proxied request outside the agent's request policy (method,
    path or API base URL); the provider was not called."""

    default_code = "request_not_allowed"


class UserMismatch(Forbidden):
    """403 ``user_mismatch``: the user completing a flow is not the user the flow was started for;
    the grant was revoked."""

    default_code = "user_mismatch"


class BindingCodeInvalid(Forbidden):
    """403 ``binding_code_invalid``: the binding code is not this flow's; the flow was rejected
    and its tokens revoked. Only the code from the callback's redirect to the return URL binds."""

    default_code = "binding_code_invalid"


class ConsentRequired(VaultError):
    """403 ``consent_required``: no active grant covers the scopes; the user must consent.

    When the SDK started the authorization for you (``get_token(..., authorize=True)``),
    ``authorization_url`` is the URL to send the user to and ``flow_id`` the flow to complete.
    """

    default_code = "consent_required"

    def __init__(
        self,
        detail: str,
        *,
        authorization_url: str | None = None,
        flow_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detail, **kwargs)
        self.authorization_url = authorization_url
        self.flow_id = flow_id

    @property
    def provider(self) -> str | None:
        value = self.problem.get("provider")
        return str(value) if value is not None else None

    @property
    def missing_scopes(self) -> list[str]:
        value = self.problem.get("missing_scopes")
        return [str(s) for s in value] if isinstance(value, list) else []

    @property
    def reason(self) -> str | None:
        value = self.problem.get("reason")
        return str(value) if value is not None else None

    @property
    def authorizations_path(self) -> str | None:
        value = self.problem.get("authorizations_path")
        return str(value) if value is not None else None


class ConsentTimeout(VaultError):
    """The user did not complete consent before the deadline (raised by the decorator)."""

    default_code = "consent_timeout"

    def __init__(
        self,
        detail: str,
        *,
        authorization_url: str | None = None,
        flow_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detail, **kwargs)
        self.authorization_url = authorization_url
        self.flow_id = flow_id


class NotFound(VaultError):
    """404 ``not_found``: no such route or object."""

    default_code = "not_found"


class SessionNotFound(NotFound):
    """404 ``session_not_found``."""

    default_code = "session_not_found"


class FlowNotFound(NotFound):
    """404 ``flow_not_found``."""

    default_code = "flow_not_found"


class DelegationNotFound(NotFound):
    """404 ``delegation_not_found``: no such delegation (the handle is wrong or long gone)."""

    default_code = "delegation_not_found"


class DelegationNotPending(VaultError):
    """409 ``delegation_not_pending``: the delegation was claimed already (once only) or its
    claim window passed (``delegation_status``)."""

    default_code = "delegation_not_pending"


class SessionEnded(VaultError):
    """410 ``session_ended``: the session was ended, expired, or its task stopped.

    Start a new session (``VaultClient.start_session()``) while the task lives.
    """

    default_code = "session_ended"


class TaskStopped(Forbidden):
    """403 ``task_stopped``: this ECS task was recorded as stopped; its credentials can start
    no new session (a replacement task starts its own)."""

    default_code = "task_stopped"


class FlowNotPending(VaultError):
    """409 ``flow_not_pending``: the flow is not awaiting binding (already completed or refused)."""

    default_code = "flow_not_pending"


class ProviderUnavailable(VaultError):
    """502 ``provider_error`` / 504 ``provider_timeout``: the OAuth provider failed; retry later."""

    default_code = "provider_error"


class ProviderError(ProviderUnavailable):
    """502 ``provider_error``: the provider answered with an error or garbage."""

    default_code = "provider_error"


class UpstreamRefused(ProviderError):
    """502 ``upstream_redirect_refused`` / ``upstream_response_too_large`` /
    ``upstream_address_refused``: the proxy refused what the provider's API answered (a redirect,
    an answer beyond the proxy's limit) or where its address resolves to."""

    default_code = "upstream_redirect_refused"


class ProviderTimeout(ProviderUnavailable):
    """504 ``provider_timeout``: the provider did not answer in time."""

    default_code = "provider_timeout"


class VaultUnavailable(VaultError):
    """503 ``storage_unavailable`` / ``crypto_unavailable`` / ``secrets_unavailable`` /
    ``refresh_in_progress``, or any other 5xx: retry after ``retry_after`` (the client already
    retried a bounded number of times)."""

    default_code = "vault_unavailable"


_BY_CODE: dict[str, type[VaultError]] = {
    "invalid_request": InvalidRequest,
    "payload_too_large": InvalidRequest,
    "request_too_large": InvalidRequest,
    "dpop_proof_required": DPoPProofRequired,
    "dpop_nonce_required": DPoPNonceRequired,
    "unknown_provider": UnknownProvider,
    "return_url_not_allowed": ReturnUrlNotAllowed,
    "invalid_proof": InvalidProof,
    "proof_replayed": ProofReplayed,
    "invalid_user_token": InvalidUserToken,
    "unknown_agent": UnknownAgent,
    "identity_required": InvalidUserToken,
    "task_stopped": TaskStopped,
    "forbidden": Forbidden,
    "scope_not_allowed": ScopeNotAllowed,
    "delivery_proxy_only": DeliveryProxyOnly,
    "request_not_allowed": RequestNotAllowed,
    "consent_required": ConsentRequired,
    "user_mismatch": UserMismatch,
    "binding_code_required": InvalidRequest,
    "binding_code_invalid": BindingCodeInvalid,
    "not_found": NotFound,
    "session_not_found": SessionNotFound,
    "flow_not_found": FlowNotFound,
    # The admin read API's codes (the CLI reads them; agents never meet them).
    "grant_not_found": NotFound,
    "invalid_filter": InvalidRequest,
    "invalid_cursor": InvalidRequest,
    # API keys (flow 12): the admin routes' refusals, and an agent's key not set yet
    "invalid_api_key": InvalidRequest,
    "not_an_api_key_provider": InvalidRequest,
    "api_key_not_set": Forbidden,
    "method_not_allowed": InvalidRequest,
    "session_ended": SessionEnded,
    "flow_not_pending": FlowNotPending,
    "delegation_not_allowed": DelegationNotAllowed,
    "delegation_exceeds_parent": DelegationNotAllowed,
    "delegation_not_found": DelegationNotFound,
    "delegation_not_pending": DelegationNotPending,
    "provider_error": ProviderError,
    "provider_timeout": ProviderTimeout,
    "upstream_redirect_refused": UpstreamRefused,
    "upstream_response_too_large": UpstreamRefused,
    "upstream_address_refused": UpstreamRefused,
    "storage_unavailable": VaultUnavailable,
    "crypto_unavailable": VaultUnavailable,
    "secrets_unavailable": VaultUnavailable,
    "refresh_in_progress": VaultUnavailable,
    "stored_data_invalid": VaultUnavailable,
    "internal_error": VaultUnavailable,
    # Callback-only codes (the browser sees them, not the SDK), mapped for completeness.
    "invalid_state": InvalidRequest,
    "issuer_mismatch": InvalidRequest,
    "callback_mismatch": InvalidRequest,
    "code_exchange_failed": InvalidRequest,
}

_BY_STATUS: dict[int, type[VaultError]] = {
    400: InvalidRequest,
    401: InvalidProof,
    403: Forbidden,
    404: NotFound,
    409: FlowNotPending,
    410: SessionEnded,
    413: InvalidRequest,
    502: ProviderError,
    504: ProviderTimeout,
}


def _retry_after(headers: Mapping[str, str], problem: Mapping[str, Any]) -> float | None:
    value: Any = problem.get("retry_after")
    if value is None:
        for name, header_value in headers.items():
            if name.lower() == "retry-after":
                value = header_value
                break
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # an HTTP-date: treat as "no hint"
    return max(0.0, seconds)


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> VaultError:
    """The exception for an error answer (status >= 400) of the vault or of API Gateway."""
    problem: dict[str, Any] = {}
    try:
        parsed = json.loads(body.decode("utf-8")) if body else {}
        if isinstance(parsed, dict):
            problem = parsed
    except (UnicodeDecodeError, ValueError):
        problem = {}
    retry_after = _retry_after(headers, problem)
    code = problem.get("code")
    if not isinstance(code, str):
        # Not a problem document: API Gateway itself answered ({"message": "..."}), or a
        # function URL's front end ({"Message": "..."}).
        message = problem.get("message") or problem.get("Message")
        detail = str(message) if message else f"HTTP {status}"
        gateway_cls: type[VaultError]
        if status == 403:
            gateway_cls = AccessDenied
        elif status >= 500:
            gateway_cls = VaultUnavailable
        else:
            gateway_cls = _BY_STATUS.get(status, VaultError)
        return gateway_cls(
            detail,
            status=status,
            code=gateway_cls.default_code,
            retry_after=retry_after,
            problem=problem,
        )
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = VaultUnavailable if status >= 500 else VaultError
    detail = problem.get("detail") or problem.get("title") or code
    title = problem.get("title")
    return cls(
        str(detail),
        status=status,
        code=code,
        title=str(title) if title is not None else None,
        retry_after=retry_after,
        problem=problem,
    )
