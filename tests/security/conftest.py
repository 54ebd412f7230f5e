"""Fixtures of the security suite: audit capture, Hypothesis profiles, secret hygiene.

Hypothesis profiles (select with `HYPOTHESIS_PROFILE`, default `ci`):

- `ci` (default): 100 examples per fuzz test; tests/security/test_fuzz.py stays under a minute
  on 2 cores.
- `long`: `make fuzz`, 2000 examples per fuzz test.

The `vault` fixture is function-scoped and deliberately shared by every example of a fuzz test
(one moto account and one provider per test function): the fuzz tests nest their @given
function inside the test, and the profiles suppress the health checks that sharing trips.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# The log-hygiene plugin is meant for the whole suite (tests/conftest.py registers it with
# `pytest_plugins`); importing its fixtures here keeps it active for this folder on its own.
# Where both are present the fixtures of this folder win by name, so nothing runs twice.
from tests.security.hygiene import (  # noqa: F401
    _secret_hygiene_per_test,
    _secret_hygiene_session,
)

_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=2000, **_COMMON)  # type: ignore[arg-type]
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FUZZ = settings.get_profile(PROFILE if PROFILE in ("ci", "long") else "ci")
