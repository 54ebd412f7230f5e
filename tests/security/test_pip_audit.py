"""scripts/pip_audit.py: a known vulnerability fails the build, an unreachable advisory service
does not (CI may run offline). Its verdicts are checked here without any network: on
pip-audit's own output shapes, and end to end with a stand-in `pip_audit` module."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pip_audit.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_audit_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


script = load()

VULNERABLE = {
    "dependencies": [
        {
            "name": "urllib3",
            "version": "1.26.4",
            "vulns": [
                {
                    "id": "PYSEC-2021-108",
                    "fix_versions": ["1.26.5"],
                    "aliases": ["CVE-2021-33503"],
                    "description": "...",
                }
            ],
        },
        {"name": "six", "version": "1.17.0", "vulns": []},
    ],
    "fixes": [],
}
OFFLINE_PYPI = {
    "dependencies": [
        {
            "name": "six",
            "skip_reason": "Dependency not found on PyPI and could not be audited: six (1.17.0)",
        },
    ],
    "fixes": [],
}
CLEAN = {"dependencies": [{"name": "six", "version": "1.17.0", "vulns": []}], "fixes": []}


def test_a_known_vulnerability_fails() -> None:
    verdict = script.judge(1, json.dumps(VULNERABLE), "Found 1 known vulnerability in 1 package")
    assert verdict.status == script.VULNERABLE == 1
    assert verdict.vulnerabilities == [
        "urllib3==1.26.4: PYSEC-2021-108 (CVE-2021-33503); fixed in 1.26.5"
    ]


def test_a_vulnerability_fails_even_when_other_packages_went_unchecked() -> None:
    mixed = {"dependencies": VULNERABLE["dependencies"] + OFFLINE_PYPI["dependencies"]}
    assert script.judge(1, json.dumps(mixed), "").status == script.VULNERABLE


@pytest.mark.parametrize(
    "returncode, stdout, stderr",
    [
        (0, json.dumps(OFFLINE_PYPI), ""),
        (
            1,
            "",
            "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', "
            "port=443): Max retries exceeded (NameResolutionError)",
        ),
        (1, "", "urllib3.exceptions.ProxyError: Unable to connect to proxy"),
        (1, "", "ReadTimeout: HTTPSConnectionPool(host='adv.invalid', port=443): Read timed out."),
        (None, "", ""),
    ],
    ids=["pypi-unreachable", "no-dns", "proxy", "read-timeout", "run-timeout"],
)
def test_an_unreachable_advisory_service_warns_and_passes(
    returncode: int | None, stdout: str, stderr: str
) -> None:
    verdict = script.judge(returncode, stdout, stderr)
    assert verdict.status == script.OK
    assert verdict.message  # the warning says the audit did not happen


def test_a_clean_audit_passes_quietly() -> None:
    verdict = script.judge(0, json.dumps(CLEAN), "No known vulnerabilities found")
    assert (verdict.status, verdict.message, verdict.vulnerabilities) == (script.OK, "", [])


def test_a_broken_audit_fails() -> None:
    verdict = script.judge(2, "", "pip-audit: error: argument -r/--requirement: can't open 'x'")
    assert verdict.status == script.BROKEN == 2


def _run_with_stand_in(tmp_path: Path, report: dict[str, object], exit_code: int) -> int:
    fake = tmp_path / "pip_audit"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        f"import sys\nprint({json.dumps(json.dumps(report))})\nsys.exit({exit_code})\n"
    )
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("urllib3==1.26.4\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(requirements)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return run.returncode


def test_end_to_end_exit_status(tmp_path: Path) -> None:
    assert _run_with_stand_in(tmp_path / "a", VULNERABLE, 1) == 1
    assert _run_with_stand_in(tmp_path / "b", OFFLINE_PYPI, 0) == 0
    assert _run_with_stand_in(tmp_path / "c", CLEAN, 0) == 0
