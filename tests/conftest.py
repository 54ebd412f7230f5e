"""Suite-wide setup: the environment the handlers read at import, moto, the real provider."""

from __future__ import annotations

import logging
import os

os.environ.update(
    {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "TABLE_NAME": "agent-vault-test",
        "POWERTOOLS_SERVICE_NAME": "agent-vault",
        "POWERTOOLS_METRICS_NAMESPACE": "AgentVault",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "AWS_LAMBDA_FUNCTION_NAME": "agent-vault-test",
    }
)
for leaked in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(leaked, None)

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from agent_vault_local.provider import AuthorizationServer  # noqa: E402
from agent_vault_local.runner import LocalInfo, LocalModeProcess  # noqa: E402
from tests.security.helpers import AuditLog  # noqa: E402
from tests.support.aws import aws  # noqa: E402
from tests.support.harness import APP_REDIRECT_URI, CALLBACK_URLS, USERS, Vault, make_vault  # noqa: E402
from vault.runtime import use_services  # noqa: E402

# Every log line, answer and URL of the whole suite is scanned for the secrets it issued; `-n 2`
# keeps the tests of a costly shared fixture on one worker (tests/support/scheduling.py).
pytest_plugins = ["tests.security.hygiene", "tests.support.scheduling"]


@pytest.fixture(scope="session")
def authorization_server() -> Iterator[AuthorizationServer]:
    """The real external authorization server (oidc-provider), one per test session/worker."""
    with AuthorizationServer(
        redirect_uris=CALLBACK_URLS, app_redirect_uris=[APP_REDIRECT_URI]
    ) as server:
        yield server


@pytest.fixture(scope="session")
def id_tokens(authorization_server: AuthorizationServer) -> dict[str, str]:
    """Each test user's identity token, from a real login at the provider."""
    return {
        name: authorization_server.login_id_token(name, password)
        for name, password in USERS.items()
    }


@pytest.fixture(scope="session")
def local_with_agent() -> Iterator[LocalInfo]:
    """Local mode with the sample agent, in a child process: tests/local's and the browser's
    (one worker runs them all, tests/support/scheduling.py)."""
    with LocalModeProcess(with_agent=True) as info:
        yield info


@pytest.fixture
def vault(authorization_server: AuthorizationServer, id_tokens: dict[str, str]) -> Iterator[Vault]:
    authorization_server.clear_faults()
    with aws() as session:
        yield make_vault(authorization_server, session, id_tokens)
    use_services(None)


@pytest.fixture
def audit_events() -> Iterator[AuditLog]:
    """Every audit event the vault's Powertools logger ("agent-vault") records in this test."""
    handler = AuditLog()
    vault_logger = logging.getLogger("agent-vault")
    vault_logger.addHandler(handler)
    try:
        yield handler
    finally:
        vault_logger.removeHandler(handler)
