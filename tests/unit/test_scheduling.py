"""The suite's xdist scheduler keeps each costly shared fixture on one worker."""

from __future__ import annotations

import pytest

from tests.support.scheduling import unit_of


@pytest.mark.parametrize(
    ("first", "second", "group"),
    [
        (
            "tests/infra/test_access.py::test_a[synthesized-ProxyApi]",
            "tests/infra/test_vault_stack.py::test_b",
            "synthesized",
        ),
        (
            "tests/sdk/test_decorator.py::test_a",
            "tests/sdk/test_sdk_vault.py::test_b",
            "local",
        ),
        (
            "tests/local/test_cli.py::test_a",
            "tests/local/test_cli.py::test_b",
            "cli",
        ),
        (
            "tests/local/test_isolation.py::test_a",
            "tests/e2e/test_browser_consent.py::test_consent_in_a_real_browser",
            "local_with_agent",
        ),
    ],
)
def test_the_tests_of_a_shared_fixture_are_one_unit(first: str, second: str, group: str) -> None:
    assert unit_of(first) == unit_of(second) == group


def test_every_other_test_is_a_unit_of_its_own() -> None:
    first = "tests/security/test_fuzz.py::test_fuzz_token_bodies"
    second = "tests/security/test_fuzz.py::test_fuzz_renew_bodies"
    assert unit_of(first) == first
    assert unit_of(second) == second
