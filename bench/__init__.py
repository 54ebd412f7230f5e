"""`make bench`: what a token costs in time, AWS calls and money (GitHub issue "make bench").

`python -m bench` runs the vault's real handlers in-process against moto and the local
oidc-provider, counts every AWS request with a botocore event hook, times the handlers with the
AWS round trips taken out, measures cold-start imports and bundle sizes, prices it all with the
list prices of `bench/prices.py`, prints a table and writes `bench/latest.json`.
`python -m bench --quick` is the same with fewer iterations (a smoke run).

The environment below is what the handlers read at import (as in tests/conftest.py); it has to
be in place before anything imports `vault.*`, so `prepare_environment()` runs first.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"
LATEST_JSON = Path(__file__).resolve().parent / "latest.json"

BENCH_ENV = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "TABLE_NAME": "agent-vault-test",
    "POWERTOOLS_SERVICE_NAME": "agent-vault",
    "POWERTOOLS_METRICS_NAMESPACE": "AgentVault",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "AWS_LAMBDA_FUNCTION_NAME": "agent-vault-bench",
}
"""As tests/conftest.py: fake credentials for moto, Powertools' service and namespace, tracing off
(there is no X-Ray daemon in-process; see docs/cost.md for what tracing adds)."""


def prepare_environment() -> None:
    """Set the handlers' environment (the service and local mode are installed packages)."""
    os.environ.update(BENCH_ENV)
    for leaked in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(leaked, None)
