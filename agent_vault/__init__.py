"""Agent Vault client SDK: session-bound, delegated OAuth tokens for AI agents on AWS.

>>> from agent_vault import VaultClient, UserIdentity, requires_access_token, requires_http

``VaultTransport`` and ``AsyncVaultTransport`` (httpx) are imported on first use, so importing
the SDK does not import httpx.
"""

from typing import TYPE_CHECKING, Any

from agent_vault.client import (
    AccessToken,
    ApiKey,
    AsyncVaultClient,
    Authorization,
    Connection,
    ConnectionPage,
    Delegation,
    FlowCompletion,
    ProviderAccess,
    SessionInfo,
    UserIdentity,
    VaultClient,
)
from agent_vault.decorator import (
    bind_client,
    current_client,
    requires_access_token,
    requires_http,
    set_default_client,
    use_client,
)
from agent_vault.errors import (
    AccessDenied,
    BindingCodeInvalid,
    ConsentRequired,
    ConsentTimeout,
    DelegationNotAllowed,
    DelegationNotFound,
    DelegationNotPending,
    DeliveryProxyOnly,
    FlowNotFound,
    FlowNotPending,
    Forbidden,
    InvalidProof,
    InvalidRequest,
    InvalidUserToken,
    NotFound,
    ProofReplayed,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ReturnUrlNotAllowed,
    ScopeNotAllowed,
    SessionEnded,
    SessionNotFound,
    TaskStopped,
    UnknownAgent,
    UnknownProvider,
    UserMismatch,
    VaultConnectionError,
    VaultError,
    VaultUnavailable,
)
from agent_vault.proofs import SessionKey

if TYPE_CHECKING:
    from agent_vault.transport import AsyncVaultTransport, VaultTransport

__version__ = "0.1.0"

_LAZY = {"AsyncVaultTransport", "VaultTransport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # httpx is imported with them, on first use
        from agent_vault import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'agent_vault' has no attribute {name!r}")


__all__ = [
    "AccessDenied",
    "AccessToken",
    "ApiKey",
    "AsyncVaultClient",
    "AsyncVaultTransport",
    "Authorization",
    "BindingCodeInvalid",
    "Connection",
    "ConnectionPage",
    "ConsentRequired",
    "ConsentTimeout",
    "Delegation",
    "DelegationNotAllowed",
    "DelegationNotFound",
    "DelegationNotPending",
    "DeliveryProxyOnly",
    "FlowCompletion",
    "FlowNotFound",
    "FlowNotPending",
    "Forbidden",
    "InvalidProof",
    "InvalidRequest",
    "InvalidUserToken",
    "NotFound",
    "ProofReplayed",
    "ProviderAccess",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ReturnUrlNotAllowed",
    "ScopeNotAllowed",
    "SessionEnded",
    "SessionInfo",
    "SessionKey",
    "SessionNotFound",
    "TaskStopped",
    "UnknownAgent",
    "UnknownProvider",
    "UserIdentity",
    "UserMismatch",
    "VaultClient",
    "VaultConnectionError",
    "VaultError",
    "VaultTransport",
    "VaultUnavailable",
    "__version__",
    "bind_client",
    "current_client",
    "requires_access_token",
    "requires_http",
    "set_default_client",
    "use_client",
]
