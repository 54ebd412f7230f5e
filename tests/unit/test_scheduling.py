"""The suite's xdist scheduler keeps each costly shared fixture on one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.scheduling import unit_of

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def test_pytest_xdist_runs_a_group_on_one_worker(tmp_path: Path) -> None:
    """The scheduler as the installed pytest and xdist run it (the `xdist_group` marker it
    replaces stopped working silently on an upgrade): a suite of its own with 2 workers."""
    test = (
        "import os, pathlib\n"
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(8))\n"
        "def test_one(n, request):\n"
        "    out = pathlib.Path(os.environ['SCHEDULING_OUT'])\n"
        "    name = request.node.nodeid.replace('/', '_').replace(':', '_')\n"
        "    (out / name).write_text(os.environ['PYTEST_XDIST_WORKER'])\n"
    )
    for where in ("tests/infra/test_synth.py", "tests/unit/test_other.py"):
        (tmp_path / where).parent.mkdir(parents=True)
        (tmp_path / where).write_text(test)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "tests.support.scheduling",
            "--import-mode=importlib", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "tests"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "SCHEDULING_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    workers = {p.name: p.read_text() for p in out.iterdir()}
    assert len(workers) == 16
    assert len({w for name, w in workers.items() if name.startswith("tests_infra_")}) == 1
