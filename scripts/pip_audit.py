"""Audit the pinned requirements for known vulnerabilities, tolerating an offline CI.

    python scripts/pip_audit.py [requirements files...]   (default: requirements/dev.txt and
                                                           requirements/lambda.txt)

Exit status:
  0  no known vulnerability; or the advisory service could not be reached (a warning says
     which requirements went unchecked: no network, a proxy, a missing advisory database)
  1  a known vulnerability in a pinned requirement (each is listed with its fix versions)
  2  the audit itself is broken (a bad requirements file, pip-audit missing or failing for a
     reason other than the network)

The files are fully pinned (uv pip compile), so pip-audit runs with `--no-deps --disable-pip`:
no resolver, no virtualenv, one query per package. Environment:
  PIP_AUDIT_SERVICE   pypi (default) or osv
  PIP_AUDIT_TIMEOUT   seconds for the whole run of one file (default 180)
  PIP_AUDIT_IGNORE    comma-separated advisory ids accepted after review (e.g. GHSA-xxxx)
"""

from __future__ import annotations

import json
import os
import re
import subprocess  # nosec B404
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ("requirements/dev.txt", "requirements/lambda.txt")
OK, VULNERABLE, BROKEN = 0, 1, 2
# What an unreachable advisory service looks like in pip-audit's output.
_OFFLINE = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|timed out|Max retries exceeded|"
    r"NameResolutionError|Name or service not known|Temporary failure in name resolution|"
    r"Failed to resolve|Network is unreachable|ProxyError|SSLError|CERTIFICATE_VERIFY_FAILED|"
    r"Connection refused|HTTP(Error)? (403|407|429|5\d\d)|ServiceError|"
    r"Dependency not found on PyPI",
    re.IGNORECASE,
)


@dataclass
class Verdict:
    status: int
    vulnerabilities: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    message: str = ""


def judge(returncode: int | None, stdout: str, stderr: str) -> Verdict:
    """Classify one pip-audit run (`returncode` None: it ran out of time)."""
    if returncode is None:
        return Verdict(OK, message="pip-audit timed out: the advisory service is unreachable")
    try:
        report: dict[str, Any] = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        report = {}
    dependencies = report.get("dependencies") if isinstance(report, dict) else None
    if not isinstance(dependencies, list):
        if _OFFLINE.search(stderr):
            return Verdict(
                OK, message="the advisory service could not be reached: " + _last_line(stderr)
            )
        return Verdict(
            BROKEN,
            message="pip-audit failed: " + (_last_line(stderr) or f"exit status {returncode}"),
        )
    found, unchecked = [], []
    for dep in dependencies:
        if not isinstance(dep, dict):
            continue
        name, version = dep.get("name", "?"), dep.get("version", "?")
        for vuln in dep.get("vulns") or []:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            found.append(
                f"{name}=={version}: {vuln.get('id')}"
                + (f" ({aliases})" if aliases else "")
                + f"; fixed in {fixes}"
            )
        reason = dep.get("skip_reason")
        if reason:
            unchecked.append(f"{name}: {reason}")
    if found:
        return Verdict(VULNERABLE, found, unchecked)
    if returncode not in (0, None) and not unchecked and not _OFFLINE.search(stderr):
        return Verdict(
            BROKEN,
            message="pip-audit failed: " + (_last_line(stderr) or f"exit status {returncode}"),
        )
    if unchecked and all(_OFFLINE.search(u) for u in unchecked):
        return Verdict(
            OK,
            unchecked=unchecked,
            message="the advisory service could not be reached for "
            f"{len(unchecked)} of {len(dependencies)} requirements",
        )
    return Verdict(OK, unchecked=unchecked)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def audit(requirements: Path) -> Verdict:
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(requirements),
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--vulnerability-service",
        os.environ.get("PIP_AUDIT_SERVICE", "pypi"),
    ]
    for advisory in filter(None, os.environ.get("PIP_AUDIT_IGNORE", "").split(",")):
        command += ["--ignore-vuln", advisory.strip()]
    try:
        # our own interpreter, fixed arguments, no shell
        run = subprocess.run(  # noqa: S603  # nosec B603
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=float(os.environ.get("PIP_AUDIT_TIMEOUT", "180")),
        )
    except subprocess.TimeoutExpired:
        return judge(None, "", "")
    except OSError as exc:
        return Verdict(BROKEN, message=f"pip-audit could not run: {exc}")
    return judge(run.returncode, run.stdout, run.stderr)


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or [ROOT / f for f in DEFAULT_FILES]
    worst = OK
    for path in files:
        if not path.is_file():
            print(f"pip-audit: {path}: no such requirements file", file=sys.stderr)
            worst = max(worst, BROKEN)
            continue
        verdict = audit(path)
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if verdict.status == VULNERABLE:
            print(f"pip-audit: {name}: {len(verdict.vulnerabilities)} known vulnerabilities:")
            for line in verdict.vulnerabilities:
                print(f"  {line}")
        elif verdict.status == BROKEN:
            print(f"pip-audit: {name}: {verdict.message}", file=sys.stderr)
        elif verdict.message:
            print(
                f"pip-audit: WARNING {name}: {verdict.message}; not audited, not failing "
                "(run again with network access)",
                file=sys.stderr,
            )
        else:
            print(f"pip-audit: {name}: no known vulnerabilities")
        worst = max(worst, verdict.status)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
