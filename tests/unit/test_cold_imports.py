"""What a cold start imports and builds (DESIGN.md's budget: no X-Ray SDK on the import path,
pydantic models built lazily or once). `make bench` measures the time; this holds the shape.

One fresh interpreter imports every handler, as Lambda's runtime does at init, then reads a
bundled config (`config_document`) as a first request does. Nothing timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.config import read_config_file
from vault.config import config_document

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ("agent_api", "proxy_api", "callback", "admin_api", "reaper")
NOT_AT_COLD_START = (
    "aws_xray_sdk",  # the X-Ray SDK (no Tracer: SECURITY.md row 47)
    "aws_lambda_powertools.utilities.idempotency",  # the reaper is idempotent by construction
    "joserfc.jwt",  # identity tokens and client assertions only: imported at their first use
    "joserfc.jwe",  # nothing of the vault decrypts or encrypts a JWE
    "vault.presets",  # the presets apply at validation, done at synth
)
PROOFS = (
    "vault.proofs",  # DPoP proofs: joserfc's JWS (and its keys' PEM code: cryptography.x509)
    "joserfc.jws",
    "cryptography.x509",
)
ROUTER = "aws_lambda_powertools.event_handler"  # every HTTP function routes with vault's own
NOT_IMPORTED_BY: dict[str, tuple[str, ...]] = {
    # the connections routes import `vault.connections` (and `vault.inspection`) when called
    "agent_api": ("vault.connections", "vault.inspection", ROUTER),
    "proxy_api": (
        "vault.connections",
        "vault.inspection",
        "vault.consent",
        "vault.delegation",
        ROUTER,
    ),
    # no route of these checks a DPoP proof or validates an agent's body
    "callback": (
        *PROOFS,
        "vault.schemas",
        "vault.apikeys",
        "vault.inspection",
        "vault.tokens",
        ROUTER,
    ),
    "admin_api": (*PROOFS, "vault.tokens", "vault.connections", "vault.delegation", ROUTER),
    "reaper": (*PROOFS, "vault.schemas", "vault.sessions", "vault.consent", ROUTER),
}
"""Per function: what it imports for none of its routes (each its own fresh interpreter)."""
FIRST_REQUEST_NEEDS: dict[str, tuple[str, ...]] = {
    # a token request: its body (pydantic), its DPoP proof (joserfc), the token flow
    "agent_api": ("vault.schemas", "vault.proofs", "joserfc.jws", "vault.tokens", "vault.machine"),
    "proxy_api": ("vault.proofs", "joserfc.jws", "vault.proxy", "vault.tokens"),
    "callback": ("vault.consent", "vault.oauth.client"),
    "admin_api": ("vault.inspection", "vault.schemas", "vault.revocation"),
    "reaper": ("vault.revocation", "pydantic.main"),
}
"""What the first ordinary request of each function uses, imported at cold start all the same:
leaving it to that request would only move its time out of the measured import (`make bench`)."""


def _probe(config_path: Path) -> dict[str, object]:
    code = "\n".join(
        [
            "import json, sys",
            *(f"import vault.handlers.{name}" for name in HANDLERS),
            "from pydantic import BaseModel",
            "def models():",
            "    seen, todo = [], [BaseModel]",
            "    while todo:",
            "        for sub in todo.pop().__subclasses__():",
            "            todo.append(sub)",
            "            if sub.__module__.startswith('vault.'):",
            "                seen.append(sub)",
            "    return seen",
            "def built():",
            "    return sorted({f'{m.__module__}.{m.__qualname__}' for m in models()",
            "        if type(m.__pydantic_validator__).__name__ != 'MockValSer'})",
            "at_import = built()",
            "imported = sorted(m for m in sys.modules if m.startswith(PREFIXES))",
            "from vault.config import load_config",
            f"config = load_config({str(config_path)!r})",
            "print(json.dumps({'built_at_import': at_import, 'imported': imported,",
            "    'built_after_config': built(), 'agents': sorted(config.agents),",
            "    'models': len(models())}))",
        ]
    )
    code = code.replace("PREFIXES", repr(NOT_AT_COLD_START))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_cold_start_builds_no_model_and_imports_nothing_it_does_not_need(
    tmp_path: Path,
) -> None:
    config = read_config_file(REPO_ROOT / "config" / "example.json")
    bundled = tmp_path / "vault_config.json"
    bundled.write_text(config_document(config), encoding="utf-8")
    result = _probe(bundled)
    assert result["imported"] == []
    assert result["built_at_import"] == []
    # the bundled config is read back without building its validators
    assert result["built_after_config"] == []
    assert result["agents"] == sorted(config.agents)
    assert isinstance(result["models"], int) and result["models"] > 10  # the probe sees them


def _imported(handler: str) -> subprocess.Popen[str]:
    code = f"import json, sys, vault.handlers.{handler}; print(json.dumps(sorted(sys.modules)))"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def imported_by() -> dict[str, set[str]]:
    """The modules each function imports, one fresh interpreter each (run side by side)."""
    running = {name: _imported(name) for name in HANDLERS}
    result = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        result[name] = set(json.loads(out.strip().splitlines()[-1]))
    return result


def _loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_function_imports_no_module_that_none_of_its_routes_needs(
    handler: str, imported_by: dict[str, set[str]]
) -> None:
    modules = imported_by[handler]
    unneeded = [name for name in NOT_IMPORTED_BY[handler] if _loaded(modules, name)]
    assert unneeded == []
    assert _loaded(modules, f"vault.handlers.{handler}")  # the probe saw the import


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_function_imports_at_cold_start_what_its_first_request_uses(
    handler: str, imported_by: dict[str, set[str]]
) -> None:
    missing = [
        name for name in FIRST_REQUEST_NEEDS[handler] if not _loaded(imported_by[handler], name)
    ]
    assert missing == []


ENTRY_MODULES = (*HANDLERS, "events")
"""Every function's handler module (tests/infra/test_vault_stack.py holds the templates to it)."""
GC_PROBE = """
import gc, importlib, json, sys
import vault  # the pause starts here (a collection while Python compiles it is not ours)
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(1))
importlib.import_module(sys.argv[1])  # the rest of what Lambda's runtime does at INIT
during_init = len(collections)
enabled, frozen = gc.isenabled(), gc.get_freeze_count()
garbage = []
for _ in range(20000):  # cycles, made after INIT: the collector must see to them
    node = {}
    node["self"] = node
    garbage.append(node)
del garbage
print(json.dumps({"during_init": during_init, "enabled": enabled, "frozen": frozen,
    "after_init": len(collections)}))
"""


def _gc_during_init(module: str, *, in_lambda: bool) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_EXECUTION_ENV"}
    if in_lambda:
        env["AWS_EXECUTION_ENV"] = "AWS_Lambda_python3.13"
    return subprocess.Popen(
        [sys.executable, "-c", GC_PROBE, f"vault.handlers.{module}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _answers(running: dict[str, subprocess.Popen[str]]) -> dict[str, dict[str, Any]]:
    answers = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        answers[name] = json.loads(out.strip().splitlines()[-1])
    return answers


def test_in_lambda_the_garbage_collector_is_paused_through_init_and_runs_after_it() -> None:
    """`vault` pauses the collector at INIT and each entry module's `lambda_handler` ends the
    pause with `gc.freeze()`: no collection while the handler imports, what it made frozen out of
    later collections, and collection back on for what the requests make."""
    answers = _answers({m: _gc_during_init(m, in_lambda=True) for m in ENTRY_MODULES})
    for module, answer in answers.items():
        assert answer["during_init"] == 0, module
        assert answer["enabled"] is True, module
        assert answer["frozen"] > 10_000, module
        assert answer["after_init"] > 0, module


def test_outside_lambda_importing_a_handler_leaves_the_garbage_collector_alone() -> None:
    answers = _answers({m: _gc_during_init(m, in_lambda=False) for m in ("agent_api", "events")})
    for module, answer in answers.items():
        assert answer["during_init"] > 0, module
        assert (answer["enabled"], answer["frozen"]) == (True, 0), module
