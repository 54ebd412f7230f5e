"""How `pytest -n 2` shares the suite between its workers (a pytest-xdist scheduler).

A costly fixture that lives for the whole session or module (the CDK app synthesized, a local
mode in a child process) is built once per worker that runs one of its tests. xdist's default
scheduler sends single tests to whichever worker is free, so every such fixture was built on both
workers. Its `xdist_group` marker would keep them together, but it does nothing with pytest 9
(xdist 3.8 appends the group to `item._nodeid`, which pytest 9 no longer reads as the node id).

So the controller groups by path instead: each group below runs on one worker, as one unit; every
other test is a unit of its own and goes to whichever worker is free. xdist sends the largest
units first, so the groups start at once and the single tests fill in around them.
"""

from __future__ import annotations

from typing import Any

import pytest

SHARED_FIXTURE_GROUPS: tuple[tuple[str, str], ...] = (
    ("tests/infra/", "synthesized"),  # the app synthesized twice (default and prod config)
    ("tests/sdk/", "local"),  # a local mode for the SDK
    ("tests/local/test_cli.py", "cli"),  # the CLI's own local mode (a config of its own)
    ("tests/local/", "local_with_agent"),  # a local mode with the sample agent...
    ("tests/e2e/", "local_with_agent"),  # ...which the browser drives too
)
"""(node-id prefix, group): the first prefix that matches wins."""


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its group, or the test itself."""
    return next(
        (group for prefix, group in SHARED_FIXTURE_GROUPS if nodeid.startswith(prefix)), nodeid
    )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The grouping above for `-n N` (xdist's `--dist load`, its default); any other `--dist`
    asked for on the command line is left to xdist."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return SharedFixtureScheduling(config, log)
