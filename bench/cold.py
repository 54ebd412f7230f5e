"""Cold start: import time of each handler module beside its floor, a bare `import boto3,
aws_lambda_powertools` (and of joserfc beside Authlib), in fresh interpreters of the same run.

Per handler: the figure, the floor and the difference (DESIGN.md's budget: at most 50 ms).

Import time: `python -X importtime -c "<marker>; importlib.import_module('vault.handlers.X')"`
(as Lambda's runtime interface client imports a handler's module: `handler_import`; the
statement `import vault.handlers.X` made the same imports with ~5,000 more page faults and
~20 ms more CPU for `proxy_api` alone, 2026-12-04, an artefact of the form) with the environment
the handlers read at import (bench.BENCH_ENV, as tests/conftest.py); the figure is the sum of the
cumulative times of the top-level imports after the marker (so the interpreter's own start-up is
not counted), median of several interpreters, every probe interleaved with the others so that a
change of load on a shared machine skews them alike. Each run also reports the import's CPU time
(time.process_time), which a busy machine inflates much less than wall time.

Where: the functions' runtime version of Python (3.13, `import_python`) when this machine has
it, else this venv's, said in the result; a Lambda-like import path (`lambda_site`): the bundle's
requirements installed for that Python without bytecode (as the bundle ships them) and the
runtime's boto3 & co. with it, under /tmp; the interpreter runs with `-S -s` so the venv and its
dev-only packages are invisible (the X-Ray SDK and Powertools import httpx or requests when they
are present). joserfc's and Authlib's own import figures (`jose_import_ms`) are the venv's.

First request: the import figure alone would reward leaving to the first request what it needs
anyway, so each function also has an "import + first request" figure (CPU): a fresh interpreter
imports the handler, builds the services (`build_services` over the bundled config: boto3
clients, pools) and does what that function's first ordinary request does short of AWS and
provider calls: agent_api validates a token request's body and verifies its DPoP proof (a real
ES256 proof, signed by the bench), proxy_api verifies a proof, admin_api parses a list query,
reaper validates a task-stopped event, callback has no further local step. Whatever a handler
imports lazily on those paths shows up there.

As built (`cold_import_as_built`): the construct's own bundler builds the bundle again for this
machine's architecture (`bench.deployment.build_twin`: the same pins, `vault` package, config
and bytecode compiled by the runtime's Python), and fresh interpreters import each handler and
the floor from it with its own bytecode, writing none (as from the read-only /var/task), beside
the runtime's boto3 & co. Only when the probes run on the runtime's version.

Bytecode: the headline figures use a private, primed PYTHONPYCACHEPREFIX (bytecode cached); the
"no bytecode" variant compiles every bundled module from source, which is what a Lambda function
does with a bundle that ships no .pyc (its /var/task is read-only, so nothing compiled at a cold
start is kept).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BENCH_ENV, LAMBDAS_DIR, REPO_ROOT, deployment

HANDLERS = ("agent_api", "proxy_api", "callback", "admin_api", "reaper")
FLOOR = "import boto3, aws_lambda_powertools"
"""The floor of a handler's cold import (DESIGN.md's budget: at most 50 ms over it): what any
Powertools Lambda function imports, in a fresh interpreter on the same import path."""
TARGET_DIFFERENCE_MS = 50.0
JOSERFC = "from joserfc import jws, jwt; from joserfc.jwk import ECKey"
AUTHLIB = "from authlib.jose import JsonWebSignature, JsonWebKey, jwt"
AUTHLIB_VENV = Path("/tmp/authlib-venv")
AUTHLIB_VERSION = "1.9.6"
MARK = "#bench-import-mark"
CPU_MARK = "#bench-import-cpu-ms "
CRYPTO_EC = "import cryptography.hazmat.primitives.asymmetric.ec"
LIBRARIES = (
    f"import gc; gc.disable(); {FLOOR}; from pydantic import BaseModel; from joserfc import jws; "
    "from joserfc.jwk import ECKey; from cryptography.hazmat.primitives.ciphers.aead import AESGCM"
)
"""The floor and the libraries the design names for the vault's own work, nothing of ours:
pydantic (STYLE.md: validation at the edge), joserfc (the DPoP proofs' JWS; a well-kept JOSE
library, not our own), cryptography's AES-GCM (the envelope); imported with the garbage
collector paused, as a handler imports them in Lambda (`vault.end_init`). What the handlers
import beyond it is the vault's own code."""
LAMBDA_EXECUTION_ENV = "AWS_Lambda_python3.13"
"""Lambda's `AWS_EXECUTION_ENV` for the functions' runtime: with it, `import vault` pauses the
garbage collector until the handler's module is imported (`vault.end_init`), as deployed."""
BUNDLED_CONFIG = Path(tempfile.gettempdir()) / "bench-vault-config.json"
"""config/example.json as the bundle carries it (`vault.config.config_document`, written by
`measure_imports`): what a deployed function reads at its first request."""


def handler_import(name: str) -> str:
    """The statement importing a function's handler module as Lambda's Python runtime does
    (awslambdaric: `importlib.import_module`); `importlib` itself is imported in the setup."""
    return f"importlib.import_module('vault.handlers.{name}')"


IMPORT_SETUP = "import importlib"
SERVICES_SETUP = (
    f"{IMPORT_SETUP}; {handler_import('agent_api')}; "
    "from vault.runtime import Settings, build_services"
)
SERVICES = (
    "build_services(Settings(table_name='vault', replay_table_name='replay', "
    "key_id='arn:aws:kms:us-east-1:123456789012:key/bench', "
    "callback_url='https://vault.example/v1/oauth/callback', "
    "client_secret_prefix='agent-vault/bench/provider/', "
    f"vault_config_path={str(BUNDLED_CONFIG)!r}))"
)
"""What the first request of a container adds: reading the bundled config (stamped: not
validated again), boto3 clients, pools."""
FIRST_REQUEST_SESSION = "ses_" + "b" * 32
FIRST_REQUEST_IAT = 1_800_000_000
FIRST_REQUEST_STEPS = {
    "agent_api": (
        "from vault.schemas import TokenRequest",
        "body = TokenRequest.model_validate({{'provider': 'mail', 'scopes': ['mail.read']}})",
        "from vault import machine",
        "machine.is_machine(svc.config, body.provider)",
        "from vault.proofs import verify_proof",
        "verify_proof({token_proof!r}, method='POST', url={token_url!r}, now={iat}, "
        "max_age=svc.config.proof_max_age_seconds, session_id={sid!r}, expected_jkt={jkt!r})",
    ),
    "proxy_api": (
        "from vault.proofs import verify_proof",
        "verify_proof({proxy_proof!r}, method='GET', url={proxy_url!r}, now={iat}, "
        "max_age=svc.config.proof_max_age_seconds, session_id={sid!r}, expected_jkt={jkt!r})",
    ),
    "callback": (),
    "admin_api": (
        "from vault.inspection import SessionQuery, parse_query",
        "parse_query(SessionQuery, {{}})",
    ),
    "reaper": (
        "from vault.handlers.reaper import TaskStateChange",
        "TaskStateChange.model_validate({{'id': 'e', 'source': 'aws.ecs', "
        "'detail-type': 'ECS Task State Change', 'detail': {{'lastStatus': 'STOPPED', "
        "'taskArn': 'arn:aws:ecs:eu-west-1:123456789012:task/c/0123456789abcdef'}}}})",
    ),
}
"""Per function, what its first ordinary request does locally after `build_services`."""
FIRST_REQUEST = {
    "agent_api": "a token request: its body validated (pydantic), its DPoP proof verified",
    "proxy_api": "a proxied call: its DPoP proof verified",
    "callback": "a callback: nothing local beyond the services (the rest is AWS and the provider)",
    "admin_api": "a list of sessions: its query parsed (pydantic)",
    "reaper": "a task-stopped event: validated (pydantic)",
}
"""Beside each function's figure in latest.json: what its "first request" step does."""


def first_request_statements() -> dict[str, str]:
    """Per function: import it, build its services, then its first request's local steps; the
    DPoP proofs are real (signed here, by the test harness's agent code)."""
    from joserfc.jwk import ECKey

    from tests.support.agent import sign_proof

    key = ECKey.generate_key("P-256", auto_kid=False)
    base = f"https://vault.example/v1/sessions/{FIRST_REQUEST_SESSION}"
    urls = {"token_url": f"{base}/tokens", "proxy_url": f"{base}/proxy/mail/api/inbox"}
    values = {
        **urls,
        "iat": FIRST_REQUEST_IAT,
        "sid": FIRST_REQUEST_SESSION,
        "jkt": key.thumbprint(),
        "token_proof": sign_proof(
            key,
            method="POST",
            url=urls["token_url"],
            iat=FIRST_REQUEST_IAT,
            session_id=FIRST_REQUEST_SESSION,
        ),
        "proxy_proof": sign_proof(
            key,
            method="GET",
            url=urls["proxy_url"],
            iat=FIRST_REQUEST_IAT,
            session_id=FIRST_REQUEST_SESSION,
        ),
    }
    return {
        name: "; ".join(
            [
                handler_import(name),
                "from vault.runtime import Settings, build_services",
                f"svc = {SERVICES}",
                *(step.format(**values) for step in FIRST_REQUEST_STEPS[name]),
            ]
        )
        for name in HANDLERS
    }


def write_bundled_config() -> None:
    """config/example.json validated and written as the bundle carries it."""
    from stacks.config import read_config_file
    from vault.config import config_document

    config = read_config_file(REPO_ROOT / "config" / "example.json")
    BUNDLED_CONFIG.write_text(config_document(config), encoding="utf-8")


def import_python(version: str) -> tuple[str, str | None]:
    """The interpreter the probes run: the functions' runtime version (`stacks.runtime_python.
    runtime_interpreter`, the one that compiles the bundle's bytecode) when this machine has it
    with pip, else this venv's own, with a note saying so. Imports cost differently across
    versions: on 2026-12-04 here, agent_api was +141 ms over its floor on 3.13.0 and +118 ms on
    3.11.7 (the floor itself 168 / 149 ms CPU)."""
    from stacks.runtime_python import runtime_interpreter

    found = runtime_interpreter()
    if found is not None:
        ask = "import sys, pip; print(sys.executable)"
        done = subprocess.run([found, "-c", ask], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip(), None  # the interpreter itself, not a version shim
    mine = ".".join(map(str, sys.version_info[:2]))
    return sys.executable, None if mine == version else (
        f"no python{version} with pip on this machine: the cold probes ran on Python {mine}, "
        f"not the functions' runtime version {version}"
    )


def lambda_site(bundled: list[str], runtime: list[str], python: str) -> Path:
    """A Lambda-like import path for `python`: the bundle's requirements installed without
    bytecode (as the bundle ships), the runtime's own packages (boto3 & co.) with it, in two
    directories under /tmp (kept between runs, keyed by the interpreter and the requirements).
    Imports from the venv would see its dev-only packages (httpx, requests, moto...), which
    Powertools and the X-Ray SDK probe for and import when present."""
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = hashlib.sha256("\n".join([version, *bundled, "--", *runtime]).encode()).hexdigest()
    site = Path(tempfile.gettempdir()) / f"bench-lambda-site-{key[:12]}"
    if (site / ".complete").exists():
        return site
    shutil.rmtree(site, ignore_errors=True)
    for part, requirements, compile_flag in (
        ("bundle", bundled, "--no-compile"),
        ("runtime", runtime, "--compile"),
    ):
        command = [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            compile_flag,
            "--target",
            str(site / part),
            *requirements,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"could not install the Lambda-like site:\n{done.stderr[-2000:]}")
    (site / ".complete").write_text("ok\n")
    return site


def _env(
    pycache: str | None, *, site: Path | None, tracing: bool = False, in_lambda: bool = True
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PYTHONPYCACHEPREFIX",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONPATH",
            "VIRTUAL_ENV",
            "AWS_EXECUTION_ENV",
        )
    }
    env.update(BENCH_ENV)
    if in_lambda:
        env["AWS_EXECUTION_ENV"] = LAMBDA_EXECUTION_ENV
    paths = [str(site / "bundle"), str(site / "runtime")] if site else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(LAMBDAS_DIR)])
    if pycache:
        env["PYTHONPYCACHEPREFIX"] = pycache
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if tracing:  # as deployed: Lambda's active tracing on (the handlers import no X-Ray SDK)
        env.pop("POWERTOOLS_TRACE_DISABLED", None)
        env["LAMBDA_TASK_ROOT"] = str(LAMBDAS_DIR)
        env["AWS_XRAY_CONTEXT_MISSING"] = "IGNORE_ERROR"
    return env


def _parse(stderr: str) -> tuple[int, float, dict[str, int]]:
    """(sum of top-level cumulative µs after the marker, CPU ms, self µs per module after it)."""
    total, cpu, selfs = 0, float("nan"), {}
    seen = False
    for line in stderr.splitlines():
        if line.startswith(CPU_MARK):
            cpu = float(line[len(CPU_MARK) :])
            continue
        if MARK in line:
            seen = True
            continue
        if not seen or not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        self_us, cumulative_us, name = int(parts[0]), int(parts[1]), parts[2]
        module = name.strip()
        selfs[module] = self_us
        if not name[1:].startswith(" "):  # top level: one space after the bar, no indent
            total += cumulative_us
    return total, cpu, selfs


@dataclass
class Probe:
    """One import statement, measured in fresh interpreters."""

    statement: str
    setup: str = ""
    """Run before the marker: imported or built, but not measured."""
    python: str = sys.executable
    site: Path | None = None
    tracing: bool = False
    bytecode: bool = True
    in_lambda: bool = True
    """Lambda's `AWS_EXECUTION_ENV` set (False: the GC is not paused at INIT)."""
    totals: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    selfs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def run(self, pycache: str, *, record: bool = True) -> None:
        setup = f"{self.setup}; " if self.setup else ""
        code = (
            f"import sys, time; {setup}sys.stderr.write('{MARK}\\n'); "
            f"c = time.process_time(); "
            f"{self.statement}; "
            f"sys.stderr.write('{CPU_MARK}%f\\n' % ((time.process_time() - c) * 1000))"
        )
        flags = ["-S", "-s"] if self.site else []
        env = _env(
            pycache if self.bytecode else None,
            site=self.site,
            tracing=self.tracing,
            in_lambda=self.in_lambda,
        )
        done = subprocess.run(
            [self.python, *flags, "-X", "importtime", "-c", code],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.statement!r} failed:\n{done.stderr[-2000:]}")
        if record:
            total, cpu, per_module = _parse(done.stderr)
            self.totals.append(total)
            self.cpu.append(cpu)
            for module, us in per_module.items():
                self.selfs[module].append(us)

    @property
    def ms(self) -> float:
        return round(statistics.median(self.totals) / 1000, 1)

    @property
    def cpu_ms(self) -> float:
        return round(statistics.median(self.cpu), 1)

    def self_us(self) -> dict[str, float]:
        return {m: statistics.median(v) for m, v in self.selfs.items()}


def _by_package(extra: dict[str, float]) -> dict[str, float]:
    grouped: dict[str, float] = defaultdict(float)
    for module, us in extra.items():
        top = module.split(".")[0]
        if top == "vault":
            top = ".".join(module.split(".")[:2])
        grouped[top] += us
    return {
        k: round(v / 1000, 1)
        for k, v in sorted(grouped.items(), key=lambda kv: -kv[1])
        if v >= 1000
    }


def _extra_over(handler: Probe, floor: Probe) -> dict[str, float]:
    """What the handler imports that the floor does not, by package (median self ms)."""
    base = set(floor.selfs)
    return _by_package({m: us for m, us in handler.self_us().items() if m not in base})


def authlib_python() -> str | None:
    """A throwaway venv with Authlib (never a project requirement), made with uv if missing."""
    python = AUTHLIB_VENV / "bin" / "python"
    probe = [
        str(python),
        "-c",
        f"import authlib; assert authlib.__version__ == '{AUTHLIB_VERSION}'",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return str(python)
    uv = shutil.which("uv")
    if uv is None:
        return None
    steps = [
        [uv, "venv", "--quiet", "--allow-existing", str(AUTHLIB_VENV), "--python", sys.executable],
        [uv, "pip", "install", "--quiet", "--python", str(python), f"authlib=={AUTHLIB_VERSION}"],
    ]
    for step in steps:
        if subprocess.run(step, capture_output=True, check=False, timeout=300).returncode != 0:
            return None
    ok = subprocess.run(probe, capture_output=True, check=False).returncode == 0
    return str(python) if ok else None


def runtime_requirements(provided: list[str]) -> list[str]:
    """What the python3.13 runtime brings (boto3 & co.): the pins of requirements/lambda.txt,
    plus boto3 and s3transfer at this venv's versions (lambda.txt does not pin them)."""
    from importlib.metadata import version

    names = {line.split("==")[0].lower() for line in provided}
    extra = [f"{name}=={version(name)}" for name in ("boto3", "s3transfer") if name not in names]
    return [*provided, *extra]


def measure_imports(
    runs: int,
    *,
    bundled: list[str],
    runtime: list[str],
    python_version: str,
    variants: bool = True,
) -> dict[str, Any]:
    python, python_note = import_python(python_version)
    site = lambda_site(bundled, runtime_requirements(runtime), python)
    write_bundled_config()
    pycache = tempfile.mkdtemp(prefix="bench-pycache-")
    cleanup: list[Path] = [Path(pycache)]
    try:
        floor = Probe(FLOOR, site=site, python=python)
        libraries = Probe(LIBRARIES, site=site, python=python)
        handlers = {
            name: Probe(handler_import(name), setup=IMPORT_SETUP, site=site, python=python)
            for name in HANDLERS
        }
        services = Probe(SERVICES, setup=SERVICES_SETUP, site=site, python=python)
        first = {
            name: Probe(statement, setup=IMPORT_SETUP, site=site, python=python)
            for name, statement in first_request_statements().items()
        }
        agent_api = handler_import("agent_api")
        probes: list[Probe] = [floor, libraries, *handlers.values(), services, *first.values()]
        joserfc = Probe(JOSERFC)
        crypto = Probe(CRYPTO_EC)
        probes += [joserfc, crypto]
        authlib_py = authlib_python()
        authlib = Probe(AUTHLIB, python=authlib_py) if authlib_py else None
        authlib_crypto = Probe(CRYPTO_EC, python=authlib_py) if authlib_py else None
        probes += [p for p in (authlib, authlib_crypto) if p]
        built: dict[str, Probe] = {}
        if variants and python_note is None:
            # the bundle as the construct builds it (for this machine's architecture), with the
            # bytecode it ships and nothing written: as a function imports it from /var/task
            as_built = Path(tempfile.mkdtemp(prefix="bench-as-built-"))
            cleanup.append(as_built)
            deployment.build_twin(as_built / "bundle")
            (as_built / "runtime").symlink_to(site / "runtime")
            built = {
                "floor": Probe(FLOOR, site=as_built, python=python, bytecode=False),
                **{
                    name: Probe(
                        handler_import(name),
                        setup=IMPORT_SETUP,
                        site=as_built,
                        python=python,
                        bytecode=False,
                    )
                    for name in HANDLERS
                },
            }
            probes += built.values()
        few: list[Probe] = []
        if variants:
            # the handlers carry no Tracer (row 47): as deployed = tracing env on, no SDK
            traced_floor = Probe(FLOOR, site=site, python=python, tracing=True)
            traced = Probe(agent_api, setup=IMPORT_SETUP, site=site, python=python, tracing=True)
            raw_floor = Probe(FLOOR, site=site, python=python, bytecode=False)
            raw = Probe(agent_api, setup=IMPORT_SETUP, site=site, python=python, bytecode=False)
            few = [traced_floor, traced, raw_floor, raw]
            # the GC running through INIT: as many runs as the headline figures, for the ratio
            collected = Probe(
                agent_api, setup=IMPORT_SETUP, site=site, python=python, in_lambda=False
            )
            collected_first = Probe(
                first["agent_api"].statement,
                setup=IMPORT_SETUP,
                site=site,
                python=python,
                in_lambda=False,
            )
            probes += [collected, collected_first]
        for probe in probes + few:  # prime the bytecode cache (not recorded)
            if probe.bytecode:
                probe.run(pycache, record=False)
        for attempt in range(runs):  # interleaved, so a busy machine skews every probe alike
            for probe in probes + (few if attempt < max(2, runs // 2) else []):
                probe.run(pycache)
        result: dict[str, Any] = {
            "cold_start": {
                "floor_statement": FLOOR,
                "floor_ms": floor.ms,
                "floor_cpu_ms": floor.cpu_ms,
                "target_difference_ms": TARGET_DIFFERENCE_MS,
                "handlers": {
                    name: {
                        "figure_ms": h.ms,
                        "figure_cpu_ms": h.cpu_ms,
                        "floor_ms": floor.ms,
                        "floor_cpu_ms": floor.cpu_ms,
                        "difference_ms": round(h.ms - floor.ms, 1),
                        "difference_cpu_ms": round(h.cpu_ms - floor.cpu_ms, 1),
                        "with_first_request_cpu_ms": first[name].cpu_ms,
                        "with_first_request_difference_cpu_ms": round(
                            first[name].cpu_ms - floor.cpu_ms, 1
                        ),
                    }
                    for name, h in handlers.items()
                },
                "first_request": {
                    name: f"build_services (bundled config, boto3 clients), then {what}"
                    for name, what in FIRST_REQUEST.items()
                },
            },
            "libraries_floor": {
                "statement": LIBRARIES,
                "cpu_ms": libraries.cpu_ms,
                "over_floor_cpu_ms": round(libraries.cpu_ms - floor.cpu_ms, 1),
                "handlers_over_libraries_cpu_ms": {
                    name: round(h.cpu_ms - libraries.cpu_ms, 1) for name, h in handlers.items()
                },
            },
            "cold_import_ms": {name: h.ms for name, h in handlers.items()},
            "cold_import_cpu_ms": {name: h.cpu_ms for name, h in handlers.items()},
            "services_build_ms": services.ms,
            "services_build_cpu_ms": services.cpu_ms,
            "runs": runs,
            "agent_api_extra_by_package_ms": _extra_over(handlers["agent_api"], floor),
            "reaper_extra_by_package_ms": _extra_over(handlers["reaper"], floor),
            "python": subprocess.run(
                [python, "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),
            "python_note": python_note,
        }
        jose: dict[str, Any] = {
            "joserfc_ms": joserfc.ms,
            "joserfc_cpu_ms": joserfc.cpu_ms,
            "joserfc_statement": JOSERFC,
            "cryptography_ec_ms": crypto.ms,
        }
        if authlib and authlib_crypto:
            jose.update(
                {
                    "authlib_ms": authlib.ms,
                    "authlib_cpu_ms": authlib.cpu_ms,
                    "authlib_statement": AUTHLIB,
                    "authlib_version": AUTHLIB_VERSION,
                    "authlib_cryptography_ec_ms": authlib_crypto.ms,
                }
            )
        else:
            jose["authlib_ms"] = None
            jose["authlib_note"] = f"could not make {AUTHLIB_VENV} with uv"
        result["jose_import_ms"] = jose
        if built:
            result["cold_import_as_built"] = {
                "what": "the construct's bundle built for this machine's architecture "
                "(bench.deployment.build_twin: the same pins, vault package, config and "
                "bytecode), imported with its own bytecode and nothing written (as from "
                "/var/task); the floor from the same bundle",
                "floor_cpu_ms": built["floor"].cpu_ms,
                "over_floor_cpu_ms": {
                    name: round(built[name].cpu_ms - built["floor"].cpu_ms, 1) for name in HANDLERS
                },
            }
        if variants:
            traced_floor, traced, raw_floor, raw = few
            result["init_gc_pause"] = {
                "note": "agent_api with the garbage collector running through INIT (outside "
                "Lambda: no AWS_EXECUTION_ENV), beside the headline figures (paused, as deployed)",
                "agent_api_over_floor_cpu_ms": round(collected.cpu_ms - floor.cpu_ms, 1),
                "agent_api_with_first_request_over_floor_cpu_ms": round(
                    collected_first.cpu_ms - floor.cpu_ms, 1
                ),
                "paused_agent_api_over_floor_cpu_ms": round(
                    handlers["agent_api"].cpu_ms - floor.cpu_ms, 1
                ),
                "paused_agent_api_with_first_request_over_floor_cpu_ms": round(
                    first["agent_api"].cpu_ms - floor.cpu_ms, 1
                ),
            }
            result["tracing_on_as_deployed"] = {
                "floor_with_tracer_ms": traced_floor.ms,
                "agent_api_ms": traced.ms,
                "agent_api_over_floor_ms": round(traced.ms - traced_floor.ms, 1),
                "agent_api_over_floor_cpu_ms": round(traced.cpu_ms - traced_floor.cpu_ms, 1),
            }
            result["no_bytecode"] = {
                "floor_ms": raw_floor.ms,
                "agent_api_ms": raw.ms,
                "agent_api_over_floor_ms": round(raw.ms - raw_floor.ms, 1),
                "floor_cpu_ms": raw_floor.cpu_ms,
                "agent_api_cpu_ms": raw.cpu_ms,
                "agent_api_over_floor_cpu_ms": round(raw.cpu_ms - raw_floor.cpu_ms, 1),
                "agent_api_compile_cost_ms": round(raw.ms - handlers["agent_api"].ms, 1),
                "floor_compile_cost_ms": round(raw_floor.ms - floor.ms, 1),
            }
        return result
    finally:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
