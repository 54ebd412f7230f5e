"""The default deployment, read from the CDK code: the Lambda bundle and the facts the cost model
needs (memory, architecture, CloudTrail data-event selectors, task size, NAT, keys, alarms...).

`python -m bench.deployment OUT_DIR` runs in its own process (it imports aws_cdk, whose jsii
runtime is a Node child process): it builds the bundle with the construct's own bundler,
`stacks.constructs.vault_code.LocalPythonBundling`, exactly as `cdk synth` does, and prints one
JSON line. `measure()` runs it and measures the bundle. Facts that are plain literals inside a
construct's body (the task size, the NAT count) are read from the source with a pattern; each
fact says where it came from.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import REPO_ROOT

STACKS = REPO_ROOT / "stacks"
DEFAULT_CONFIG = REPO_ROOT / "config" / "example.json"


def _literal(path: Path, pattern: str, default: Any = None) -> Any:
    match = re.search(pattern, path.read_text(encoding="utf-8"))
    return match.group(1) if match else default


def _function_memory(stack_source: str, name: str, default: int) -> int:
    """A function's memory in stacks/vault_stack.py: its `function("Name", ...)` call's
    `memory_size=` if it passes one (the helper passes it on to VaultFunction), else the
    VaultFunction default."""
    call = re.search(rf'function\(\s*"{name}",(.*?)\n        \)', stack_source, re.S)
    if call is None:
        raise RuntimeError(f"no function({name!r}, ...) in stacks/vault_stack.py")
    memory = re.search(r"memory_size=(\d+)", call.group(1))
    return int(memory.group(1)) if memory else default


def _facts() -> dict[str, Any]:
    """In the subprocess: what the CDK code deploys by default (config/example.json)."""
    from stacks.config import read_config_file
    from stacks.constructs import agent_function_urls, audit_trail, vault_api, vault_code
    from stacks.constructs.vault_function import VaultFunction

    config = read_config_file(DEFAULT_CONFIG)
    stack_source = (STACKS / "vault_stack.py").read_text(encoding="utf-8")
    functions = re.findall(r'function\(\s*"(\w+)",\s*"vault\.handlers\.', stack_source)
    default_memory = inspect.signature(VaultFunction.__init__).parameters["memory_size"].default
    selectors = []
    for selector in audit_trail.data_event_selectors(
        config.audit_data_events, table_arn="VAULT_TABLE", function_arns=["VAULT_FUNCTION"]
    ):
        field_selectors: Any = selector.field_selectors
        fields = {f.field: list(f.equal_to or []) for f in field_selectors}
        selectors.append({"name": selector.name, "fields": fields})
    constructs = STACKS / "constructs"
    alarm_sites = (
        len(re.findall(r"\balarm\(", (constructs / "vault_alarms.py").read_text(encoding="utf-8")))
        - 1
    )  # minus the def
    kms_keys = sum(
        len(re.findall(r"\bkms\.Key\(", p.read_text(encoding="utf-8")))
        for p in STACKS.rglob("*.py")
    )
    endpoints = sum(
        len(
            re.findall(
                r"VpcEndpoint\(|add_(interface|gateway)_endpoint\(", p.read_text(encoding="utf-8")
            )
        )
        for p in STACKS.rglob("*.py")
    )
    service = constructs / "agent_service.py"
    return {
        "config": str(DEFAULT_CONFIG.relative_to(REPO_ROOT)),
        "lambda_memory_mb": _function_memory(stack_source, "AgentApi", default_memory),
        "lambda_memory_mb_by_function": {
            name: _function_memory(stack_source, name, default_memory) for name in functions
        },
        "lambda_architecture": str(vault_code.ARCHITECTURE.name),
        "lambda_functions": functions,
        "lambda_tracing_active": "Tracing.ACTIVE"
        in (constructs / "vault_function.py").read_text(encoding="utf-8"),
        "audit_data_events": config.audit_data_events,
        "data_event_selectors": selectors,
        "trail_to_cloudwatch_logs": "send_to_cloud_watch_logs=True"
        in (constructs / "audit_trail.py").read_text(encoding="utf-8"),
        "access_log_format": vault_api.ACCESS_LOG_FORMAT,
        "access_log_class": vault_api.ACCESS_LOG_CLASS.value,
        # both endpoints are priced (bench/cost.py ENDPOINTS); this is the default config's
        "agent_endpoint": config.agent_endpoint,
        "function_url_functions": list(agent_function_urls.AGENT_URL_FUNCTIONS),
        "providers": sorted(config.providers),
        "secrets": len(config.providers),
        # the alarm() call sites: Api5xx, <fn>Errors and <fn>Throttles per function, DeadLetters
        "alarm_call_sites": alarm_sites,
        "alarms": 2 + 2 * len(functions) if alarm_sites == 4 else None,
        "kms_keys": kms_keys,
        # both egress options are priced (bench/cost.py idle_monthly); this is the default's
        "agent_egress": config.agent_egress,
        "nat_gateways": int(
            _literal(constructs / "agent_network.py", r"(?m)^NAT_GATEWAYS = (\d+)", 0)
        ),
        "vpc_endpoints": endpoints,
        "flow_logs": "add_flow_log("
        in (constructs / "agent_network.py").read_text(encoding="utf-8"),
        "fargate_cpu_units": int(_literal(service, r"\bcpu=(\d+)", 256)),
        "fargate_memory_mib": int(_literal(service, r"memory_limit_mib=(\d+)", 512)),
        "fargate_architecture": _literal(service, r"CpuArchitecture\.(\w+)", "X86_64"),
        "fargate_tasks": int(_literal(service, r"desired_count=(\d+)", 1)),
        "container_insights": "ContainerInsights.ENABLED"
        in (constructs / "agent_cluster.py").read_text(encoding="utf-8"),
        "load_balancer": bool(config.certificate_arn),
        "sources": {
            "lambda_memory_mb": "the agent API's: its function(...) call in "
            "stacks/vault_stack.py, else the VaultFunction(memory_size=...) default",
            "lambda_memory_mb_by_function": "each function(...) call in stacks/vault_stack.py, "
            "else the VaultFunction(memory_size=...) default",
            "data_event_selectors": "stacks/constructs/audit_trail.data_event_selectors",
            "function_url_functions": "stacks/constructs/agent_function_urls.py "
            '(agent_endpoint "function_url")',
            "fargate": "stacks/constructs/agent_service.py (FargateTaskDefinition literals)",
            "nat_gateways": "stacks/constructs/agent_network.py (NAT_GATEWAYS, with "
            'agent_egress "nat_gateway")',
            "alarms": "stacks/constructs/vault_alarms.py",
            "kms_keys": "kms.Key( in stacks/**",
        },
    }


def _bundle(out: str) -> dict[str, Any]:
    """In the subprocess: the construct's bundler, exactly as `cdk synth` runs it."""
    from stacks.config import read_config_file
    from stacks.constructs import vault_code
    from stacks.runtime_python import PYTHON_VERSION

    text = vault_code.REQUIREMENTS.read_text(encoding="utf-8")
    requirements = vault_code.bundled_requirements(text)
    config_json = vault_code.config_document(read_config_file(DEFAULT_CONFIG))
    vault_code.LocalPythonBundling(requirements=requirements, config_json=config_json).try_bundle(
        out
    )
    provided = vault_code.provided_by_runtime(text)
    from vault.config import model_stamp

    bundled = json.loads((Path(out) / vault_code.CONFIG_FILE_NAME).read_text(encoding="utf-8"))
    return {
        # the bundle's config carries this model's stamp: the functions load it unvalidated
        "config_validated_by_this_model": bundled.get("validated_by") == model_stamp(),
        "platforms": list(vault_code.WHEEL_PLATFORMS),
        "python_version": PYTHON_VERSION,
        "requirements": requirements.split(),
        "runtime_provided": provided,
    }


def _twin(out: str) -> None:
    """In the subprocess: the construct's bundler again, for this machine's architecture (the
    same pins, vault package, config and bytecode; the wheels built for `platform.machine()`),
    so that the cold probes can import the bundle as built (`bench.cold`)."""
    from stacks.config import read_config_file
    from stacks.constructs import vault_code

    machine = platform.machine()
    platforms = tuple(p.replace("aarch64", machine) for p in vault_code.WHEEL_PLATFORMS)
    requirements = vault_code.bundled_requirements(
        vault_code.REQUIREMENTS.read_text(encoding="utf-8")
    )
    config_json = vault_code.config_document(read_config_file(DEFAULT_CONFIG))
    vault_code.LocalPythonBundling(
        requirements=requirements, config_json=config_json, platforms=platforms
    ).try_bundle(out)


def _in_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m bench.deployment ARGS` (the CDK's jsii kernel in its own process, silenced)."""
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "bench.deployment", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def build_twin(out: Path) -> None:
    """The bundle as the construct builds it, for this machine's architecture, into `out`."""
    done = _in_subprocess("--twin", str(out))
    if done.returncode != 0:
        raise RuntimeError(f"building the bundle's twin failed:\n{done.stderr[-3000:]}")


def _size(out: Path) -> dict[str, Any]:
    sizes: dict[str, int] = defaultdict(int)
    total = files = 0
    for path in out.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            files += 1
            sizes[path.relative_to(out).parts[0]] += size
    scratch = Path(tempfile.mkdtemp(prefix="bench-zip-"))
    try:
        archive_path = scratch / "bundle.zip"
        with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(out))
        zipped = archive_path.stat().st_size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    return {
        "unzipped_mb": round(total / 1e6, 2),
        "zipped_mb": round(zipped / 1e6, 2),
        "files": files,
        "largest_mb": {k: round(v / 1e6, 2) for k, v in largest},
        "vault_package_kb": round(sizes.get("vault", 0) / 1e3, 1),
    }


def measure() -> dict[str, Any]:
    """The bundle (built and measured) and the deployment facts, or an `error`."""
    out = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    try:
        done = _in_subprocess(str(out))
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {"error": (done.stderr or done.stdout)[-3000:]}
        answer: dict[str, Any] = json.loads(lines[-1])
        bundle = {**answer["bundle"], **_size(out)}
        bundle["functions_mb"] = {
            name: bundle["unzipped_mb"] for name in answer["facts"]["lambda_functions"]
        }
        bundle["note"] = (
            "one code asset shared by every function "
            "(stacks/constructs/vault_code.py); Lambda's limit is 250 MB unzipped"
        )
        return {"bundle": bundle, "facts": answer["facts"]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--twin":
        _twin(sys.argv[2])
        raise SystemExit(0)
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.deployment OUT_DIR | --twin OUT_DIR")
    print(json.dumps({"bundle": _bundle(sys.argv[1]), "facts": _facts()}))
