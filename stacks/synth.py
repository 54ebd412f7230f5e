"""`make synth`: every stack synthesized offline, then the security gates, then one summary.

1. `cdk synth --quiet` through the CDK CLI (no AWS credentials, no Docker, no network but PyPI
   for the Lambda wheels). cdk-nag runs inside it as a validation plugin: an unacknowledged
   finding fails the synth (stacks/nag.py holds the acknowledgements).
2. cfn-lint on the templates (.cfnlintrc.yaml): any error fails.
3. checkov on the templates, from its own environment .venv-checkov: any failed check fails.
   Nothing is skipped by check id; each accepted finding is skipped on its one resource, in the
   template metadata, with its reason (stacks/checkov_skips.py).
4. `agent-vault providers check` for every configured provider (`vault.presets.checker`, the
   same code), where the network is reachable: each discovery read is bounded (3 s), the whole
   gate too (PROVIDERS_CHECK_SECONDS); offline it prints one note. It reports, it never fails
   the synth (a provider's metadata is not the deployment's to fix).

Usage: python -m stacks.synth [--config PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
OUTDIR = REPO_ROOT / "cdk.out"
ACKNOWLEDGEMENTS_FILE = "agent-vault-nag-acknowledgements.json"
"""Written into the cloud assembly by app.py (stacks/nag.py): every acknowledged finding."""
CHECKOV_SKIPS_FILE = "agent-vault-checkov-skips.json"
PROVIDERS_CHECK_SECONDS = 30.0
"""The providers check's whole budget: past it synth goes on without waiting for it."""
"""Written into the cloud assembly by app.py (stacks/checkov_skips.py): every per-resource skip."""


@dataclass
class Gate:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


def _run(
    command: list[str], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 # nosec B603
        command,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def synthesize(config: str | None) -> tuple[Gate, float]:
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    command = [str(CDK), "synth", "--quiet", "--output", str(OUTDIR)]
    if config:
        command += ["--context", f"config={config}"]
    # Stale results must never pass for fresh ones (asset directories stay: a bundling cache).
    for stale in (
        *_templates(),
        OUTDIR / "validation-report.json",
        OUTDIR / ACKNOWLEDGEMENTS_FILE,
        OUTDIR / CHECKOV_SKIPS_FILE,
    ):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    result = _run(command, env=env)
    elapsed = time.perf_counter() - started
    nag = _nag_report()
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-40:]
        found = f"; {nag['failed']} unacknowledged cdk-nag finding(s)" if nag["failed"] else ""
        return Gate(
            "cdk synth + cdk-nag",
            False,
            f"synth failed (exit {result.returncode}){found}",
            nag["details"] + tail,
        ), elapsed
    return Gate(
        "cdk synth + cdk-nag",
        nag["failed"] == 0,
        f"cdk-nag AwsSolutions: {nag['resources']} resources checked, {nag['failed']}"
        f" unacknowledged, {nag['acknowledged']} acknowledged (stacks/nag.py)",
        nag["details"],
    ), elapsed


def _templates() -> list[Path]:
    return sorted(OUTDIR.glob("*.template.json"))


def _nag_report() -> dict[str, Any]:
    """Counts from the validation report and the acknowledgement list in cdk.out."""
    failed, details = 0, []
    report = OUTDIR / "validation-report.json"
    if report.exists():
        for plugin in json.loads(report.read_text()).get("pluginReports", []):
            for violation in plugin.get("violations", []):
                paths = [c.get("constructPath") for c in violation.get("violatingConstructs", [])]
                failed += len(paths)
                details += [f"{violation['ruleName']} at {p}" for p in paths]
    acknowledged = OUTDIR / ACKNOWLEDGEMENTS_FILE
    acks = json.loads(acknowledged.read_text()) if acknowledged.exists() else []
    resources = sum(len(json.loads(t.read_text()).get("Resources", {})) for t in _templates())
    return {"failed": failed, "acknowledged": len(acks), "resources": resources, "details": details}


def cfn_lint() -> Gate:
    result = _run(
        [
            str(CFN_LINT),
            "--config-file",
            ".cfnlintrc.yaml",
            "--format",
            "json",
            "--",
            *map(str, _templates()),
        ]
    )
    try:
        matches = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return Gate("cfn-lint", False, "cfn-lint did not run", result.stderr.splitlines()[-20:])
    levels = {"Error": 0, "Warning": 0, "Informational": 0}
    for match in matches:
        levels[match.get("Level", "Error")] = levels.get(match.get("Level", "Error"), 0) + 1
    details = [
        f"{m['Level']} {m['Rule']['Id']} {Path(m['Filename']).name}:"
        f"{m['Location']['Start']['LineNumber']} {m['Message']}"
        for m in matches
    ]
    return Gate(
        "cfn-lint",
        levels["Error"] == 0,
        f"cfn-lint: {levels['Error']} errors, {levels['Warning']} warnings,"
        f" {levels['Informational']} informational",
        details,
    )


def checkov() -> Gate:
    if not CHECKOV.exists():
        return Gate(
            "checkov",
            False,
            f"checkov is not installed at {CHECKOV} (make synth makes"
            " it: uv venv .venv-checkov && uv pip install checkov==3.3.30)",
        )
    command = [str(CHECKOV), "--config-file", ".checkov.yaml", "--output", "json"]
    for template in _templates():
        command += ["--file", str(template)]
    result = _run(command)
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        return Gate("checkov", False, "checkov did not run", result.stderr.splitlines()[-20:])
    reports = reports if isinstance(reports, list) else [reports]
    passed = sum(r["summary"]["passed"] for r in reports)
    failed_checks = [c for r in reports for c in r["results"]["failed_checks"]]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    details = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed_checks]
    unexplained = [
        f"{c['check_id']} {c['resource']}: skipped without a reason"
        for c in skipped
        if len(str((c.get("check_result") or {}).get("suppress_comment", ""))) < 40
    ]
    return Gate(
        "checkov",
        not failed_checks and not unexplained,
        f"checkov: {passed} passed, {len(failed_checks)} failed, {len(skipped)} skipped,"
        f" each on its one resource with its reason (stacks/checkov_skips.py)",
        details + unexplained,
    )


def providers_check(config: str | None) -> Gate:
    """Step 4: what `agent-vault providers check` says of each configured provider; never a
    failure (offline, unreadable or past its budget: a note)."""
    import threading

    found: list[list[str]] = []

    def run() -> None:
        from stacks.config import CONTEXT_KEY, parse_config, read_config_file
        from vault.presets.checker import check_providers

        try:
            if config:
                loaded = read_config_file(config)
            else:
                context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
                loaded = parse_config(context[CONTEXT_KEY], source="cdk.json")
            found.append(check_providers(loaded.providers).lines())
        except Exception as exc:  # a report, never a failure of the synth
            found.append([f"note: providers not checked: {type(exc).__name__}: {exc}"[:300]])

    worker = threading.Thread(target=run, daemon=True)  # never keeps the process alive
    worker.start()
    worker.join(PROVIDERS_CHECK_SECONDS)
    if not found:
        lines = [f"note: providers check still running after {PROVIDERS_CHECK_SECONDS:.0f} s"]
    else:
        lines = found[0]
    offline = len(lines) == 1 and lines[0].startswith("note:")
    summary = lines[0] if offline else "providers check (agent-vault providers check):"
    return Gate("providers check", True, summary, [] if offline else lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a JSON config file (default: cdk.json's context)")
    args = parser.parse_args(argv)

    synth_gate, synth_seconds = synthesize(args.config)
    gates = [synth_gate]
    if synth_gate.ok or _templates():
        with ThreadPoolExecutor(max_workers=2) as pool:  # two independent scanners
            gates += list(pool.map(lambda gate: gate(), (cfn_lint, checkov)))
    gates.append(providers_check(args.config))

    print(f"Templates in {OUTDIR.relative_to(REPO_ROOT)}/ (synth {synth_seconds:.1f} s):")
    for template in _templates():
        count = len(json.loads(template.read_text()).get("Resources", {}))
        print(f"  {template.name:32} {count:4} resources")
    for gate in gates:
        print(f"[{'ok' if gate.ok else 'FAIL'}] {gate.summary}")
        shown = not gate.ok or gate.name in ("cfn-lint", "providers check")
        for line in gate.details[:50] if shown else []:
            print(f"       {line}")
    return 0 if all(gate.ok for gate in gates) else 1


if __name__ == "__main__":
    sys.exit(main())
