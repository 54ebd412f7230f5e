"""The server's error codes and the SDK's are one contract: every code the vault can answer with
maps to an SDK exception class, the SDK maps no code the vault never sends, and docs/api.md lists
each of them."""

from __future__ import annotations

from pathlib import Path

from agent_vault import errors as sdk
from vault import errors as server

ROOT = Path(__file__).resolve().parents[2]


def _server_codes() -> dict[str, int]:
    codes: dict[str, int] = {}
    pending: list[type[server.VaultError]] = [server.VaultError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        codes[cls.code] = cls.status
    return codes


def test_every_server_code_has_an_sdk_class_and_no_sdk_code_is_invented() -> None:
    server_codes = set(_server_codes())
    sdk_codes = set(sdk._BY_CODE)
    assert server_codes - sdk_codes == set(), "server codes the SDK does not map"
    assert sdk_codes - server_codes == set(), "SDK codes the server never sends"


def test_the_sdk_raises_a_class_of_the_same_status_family() -> None:
    for code, status in _server_codes().items():
        raised = sdk.error_from_response(status, {}, f'{{"code": "{code}"}}'.encode())
        assert raised.code == code
        assert raised.status == status
        # a retryable server failure is never surfaced as a caller mistake, nor the reverse
        assert isinstance(
            raised, sdk.VaultUnavailable | sdk.ProviderError | sdk.ProviderTimeout
        ) == (status >= 500), code


def test_every_code_is_documented() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    missing = sorted(code for code in _server_codes() if f"`{code}`" not in api)
    assert missing == []
