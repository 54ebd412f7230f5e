"""Domain errors and their one mapping to RFC 9457 problem answers.

Every error the vault returns is a `VaultError` with a stable `code`; handlers turn it into an
`application/problem+json` response in one place (`problem_body`). Details never carry token
material, codes, verifiers, secrets or proofs.
"""

from __future__ import annotations

import json
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


class VaultError(Exception):
    """An error with a stable code and HTTP status."""

    status = 400
    code = "invalid_request"
    title = "Invalid request"
    retry_after: int | None = None

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:agent-vault:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        # extra members never replace the standard ones (RFC 9457 `status` is the HTTP status)
        body.update({k: v for k, v in self.extra.items() if k not in body})
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class InvalidRequest(VaultError):
    pass


class PayloadTooLarge(VaultError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnknownProvider(VaultError):
    code, title = "unknown_provider", "Unknown provider"


class NotAnApiKeyProvider(VaultError):
    """An API-key operation named a provider that is not configured with `api_key`."""

    code, title = "not_an_api_key_provider", "Not an API-key provider"


class InvalidApiKey(VaultError):
    """An API key that is empty, longer than the provider's `max_key_chars`, or not visible
    ASCII (it must fit a header or a query parameter as it is)."""

    code, title = "invalid_api_key", "Invalid API key"


class ApiKeyNotSet(VaultError):
    """No API key is set for this provider (or, per user, for the session's user): an admin sets
    one (`PUT /v1/admin/api-keys/{provider}`)."""

    status, code, title = 403, "api_key_not_set", "No API key set"


class RequestTooLarge(VaultError):
    """A proxied request's body is beyond what the proxy forwards (Lambda's payload limit)."""

    status, code, title = 413, "request_too_large", "Request too large for the proxy"


class DpopProofRequired(VaultError):
    """A `dpop` agent's token request lacks its proof for the provider's token endpoint
    (`X-Agent-Vault-Token-DPoP`); the problem names the `htu` (and the `nonce`, if known)."""

    code, title = "dpop_proof_required", "DPoP proof for the token endpoint required"


class DpopNonceRequired(VaultError):
    """The provider wants a DPoP nonce in the token-endpoint proof (`use_dpop_nonce`): re-sign
    with the problem's `nonce` and retry once."""

    code, title = "dpop_nonce_required", "DPoP nonce required by the provider"


class ReturnUrlNotAllowed(VaultError):
    code, title = "return_url_not_allowed", "Return URL not allowed"


class InvalidProof(VaultError):
    status, code, title = 401, "invalid_proof", "Invalid proof of possession"


class ProofReplayed(VaultError):
    status, code, title = 401, "proof_replayed", "Proof replayed"


class InvalidUserToken(VaultError):
    status, code, title = 401, "invalid_user_token", "Invalid user identity"


class UnknownAgent(VaultError):
    status, code, title = 403, "unknown_agent", "Unknown agent"


class Forbidden(VaultError):
    status, code, title = 403, "forbidden", "Forbidden"


class TaskStopped(VaultError):
    """The caller's ECS task was recorded as stopped: its credentials start no session."""

    status, code, title = 403, "task_stopped", "Task stopped"


class IdentityRequired(VaultError):
    """A renewal past the first window must carry a fresh identity of the session's user."""

    status, code, title = 401, "identity_required", "Fresh user identity required"


class ScopeNotAllowed(VaultError):
    status, code, title = 403, "scope_not_allowed", "Scope not allowed"


class DeliveryProxyOnly(VaultError):
    """The agent reaches this provider through the proxy only: its token never leaves the vault."""

    status, code, title = 403, "delivery_proxy_only", "Tokens of this provider stay in the vault"


class RequestNotAllowed(VaultError):
    """A proxied request outside the agent's request policy (method, path or API base URL)."""

    status, code, title = 403, "request_not_allowed", "Request not allowed by policy"


class DelegationNotAllowed(VaultError):
    """The config lets this agent delegate to no such agent, or the chain would be too deep
    (`agents.<a>.may_delegate_to`, `max_delegation_depth`); or a child asked for consent."""

    status, code, title = 403, "delegation_not_allowed", "Delegation not allowed"


class DelegationExceedsParent(VaultError):
    """A child would get more than its parent has: a provider or scopes the parent lacks, or a
    life past the parent's end (`reason`: `provider`, `scopes` or `lifetime`)."""

    status, code, title = 403, "delegation_exceeds_parent", "More than the parent has"


class ConsentRequired(VaultError):
    status, code, title = 403, "consent_required", "Consent required"


class UserMismatch(VaultError):
    status, code, title = 403, "user_mismatch", "Consent completed by another user"


class BindingCodeRequired(VaultError):
    code, title = "binding_code_required", "Binding code required"


class BindingCodeInvalid(VaultError):
    """A wrong binding code: the flow is rejected and its tokens revoked (no second guess)."""

    status, code, title = 403, "binding_code_invalid", "Wrong binding code"


class NotFound(VaultError):
    status, code, title = 404, "not_found", "Not found"


class SessionNotFound(VaultError):
    status, code, title = 404, "session_not_found", "Session not found"


class FlowNotFound(VaultError):
    status, code, title = 404, "flow_not_found", "Flow not found"


class GrantNotFound(VaultError):
    status, code, title = 404, "grant_not_found", "Grant not found"


class InvalidFilter(VaultError):
    """A read API query parameter that is unknown, malformed or names nothing configured."""

    code, title = "invalid_filter", "Invalid filter"


class InvalidCursor(VaultError):
    """A read API cursor that this query did not hand out."""

    code, title = "invalid_cursor", "Invalid cursor"


class DelegationNotFound(VaultError):
    status, code, title = 404, "delegation_not_found", "Delegation not found"


class DelegationNotPending(VaultError):
    """A delegation is claimed once, before it expires (`delegation_status`)."""

    status, code, title = 409, "delegation_not_pending", "Delegation is not awaiting its claim"


class MethodNotAllowed(VaultError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class FlowNotPending(VaultError):
    status, code, title = 409, "flow_not_pending", "Flow is not awaiting binding"


class SessionEnded(VaultError):
    status, code, title = 410, "session_ended", "Session ended"


class InvalidState(VaultError):
    code, title = "invalid_state", "Invalid or used state"


class IssuerMismatch(VaultError):
    code, title = "issuer_mismatch", "Authorization response from the wrong issuer"


class CallbackMismatch(VaultError):
    code, title = "callback_mismatch", "Authorization response at another provider's callback"


class CodeExchangeFailed(VaultError):
    code, title = "code_exchange_failed", "Authorization code exchange failed"


class ProviderError(VaultError):
    status, code, title, retry_after = 502, "provider_error", "Provider error", 5


class UpstreamRedirectRefused(VaultError):
    """The provider's API answered a proxied request with a redirect: never followed."""

    status, code, title, retry_after = 502, "upstream_redirect_refused", "Redirect refused", 5


class UpstreamResponseTooLarge(VaultError):
    """The provider's answer is beyond what the proxy returns (Lambda's payload limit)."""

    status, code, title, retry_after = (
        502,
        "upstream_response_too_large",
        "Provider answer too large for the proxy",
        5,
    )


class UpstreamAddressRefused(VaultError):
    """An API base URL's host resolves to an address the proxy never calls (private, loopback,
    link-local, metadata...)."""

    status, code, title, retry_after = (
        502,
        "upstream_address_refused",
        "Provider API address refused",
        5,
    )


class ProviderTimeout(VaultError):
    status, code, title, retry_after = 504, "provider_timeout", "Provider timeout", 5


class StorageUnavailable(VaultError):
    status, code, title, retry_after = 503, "storage_unavailable", "Storage unavailable", 2


class CryptoUnavailable(VaultError):
    status, code, title, retry_after = 503, "crypto_unavailable", "Key service unavailable", 2


class SecretsUnavailable(VaultError):
    status, code, title, retry_after = 503, "secrets_unavailable", "Secrets unavailable", 2


class Busy(VaultError):
    status, code, title, retry_after = 503, "refresh_in_progress", "Refresh in progress", 1


class StoredDataInvalid(VaultError):
    """A stored ciphertext does not decrypt under its own item's context (moved or tampered)."""

    status, code, title, retry_after = 500, "stored_data_invalid", "Stored data failed its check", 5


class InternalError(VaultError):
    status, code, title, retry_after = 500, "internal_error", "Internal error", 5


class DecryptionFailed(Exception):
    """A ciphertext did not decrypt under the context it was read with (tampered or moved)."""


class OAuthError(Exception):
    """The provider answered a token/revocation request with an OAuth error (RFC 6749 §5.2)."""

    def __init__(self, error: str, status: int, description: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.description = description


def problem_body(error: VaultError) -> str:
    return json.dumps(error.problem(), separators=(",", ":"))


def problem_headers(error: VaultError) -> dict[str, str]:
    headers = {"Content-Type": PROBLEM_CONTENT_TYPE, "Cache-Control": "no-store"}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return headers
