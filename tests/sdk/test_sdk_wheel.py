"""The SDK as agents install it: the wheel built from the root pyproject.toml, installed into a
fresh virtual environment.

It holds the `agent_vault` package, its `py.typed` and the `agent-vault` command, and needs
botocore, joserfc and cryptography only: never moto, FastAPI, uvicorn, boto3, Powertools or
pydantic, nor the service, local mode (its provider's server.mjs) or the sample agent. Offline:
`uv build --no-build-isolation` builds with this environment's setuptools, and the fresh
environment gets the pinned versions (requirements/dev.txt) from uv's cache, which `make install`
filled.
"""

from __future__ import annotations

import email.message
import email.parser
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_vault.cli import LOCAL_MISSING

ROOT = Path(__file__).resolve().parents[2]
SDK_DEPENDENCIES = {"botocore", "joserfc", "cryptography"}
NEVER = {
    "moto",
    "fastapi",
    "starlette",
    "uvicorn",
    "boto3",
    "aws-lambda-powertools",
    "pydantic",
    "agent-vault-service",
    "agent-vault-local",
    "agent-vault-sample-agent",
}
NEVER_IMPORTED = ("moto", "fastapi", "uvicorn", "boto3", "aws_lambda_powertools", "pydantic")


@dataclass(frozen=True)
class Built:
    wheel: Path
    names: list[str]
    metadata: email.message.Message
    entry_points: str


def _uv() -> str:
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH: `make install` installs it"
    return uv


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, check=False)


def _name(requirement: str) -> str:
    """The normalized distribution name of a Requires-Dist value."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from the unpacked sdist: nothing stale in build/ gets in
    result = _run(
        _uv(), "build", "--offline", "--no-build-isolation", "--python", sys.executable,
        "--out-dir", out, ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("agent_vault-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    return Built(wheel, names, metadata, entry_points)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with nothing but the wheel and what it requires."""
    home = tmp_path_factory.mktemp("sdk-venv") / "venv"
    created = _run(_uv(), "venv", "--quiet", "--python", sys.executable, home)
    assert created.returncode == 0, created.stderr
    python = home / "bin" / "python"
    installed = _run(
        _uv(), "pip", "install", "--offline", "--quiet", "--python", python,
        "--constraint", ROOT / "requirements" / "dev.txt", built.wheel,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    yield home


def test_the_wheel_holds_the_sdk_package_only(built: Built) -> None:
    sources = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "agent_vault").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    package = [n for n in built.names if not n.split("/", 1)[0].endswith(".dist-info")]
    assert package == sources
    assert "agent_vault/py.typed" in package
    assert not [n for n in built.names if n.endswith(".mjs") or "local" in n.split("/")]
    dist_info = {n.split("/", 1)[1] for n in built.names if n not in package}
    assert dist_info <= {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt"}
    assert "agent-vault = agent_vault.cli:main" in built.entry_points.splitlines()


def test_the_wheel_requires_no_service_test_or_local_mode_dependency(built: Built) -> None:
    requires = built.metadata.get_all("Requires-Dist") or []
    required = {_name(r) for r in requires if "extra ==" not in r}
    assert required == SDK_DEPENDENCIES
    assert required & NEVER == set()
    # the one extra: `http` brings httpx for vault.http(...), imported only when first used
    assert built.metadata.get_all("Provides-Extra") == ["http"]
    assert {_name(r) for r in requires if "extra ==" in r} == {"httpx"}


def test_the_sdk_imports_in_a_fresh_environment(venv: Path) -> None:
    probe = (
        "import json, sys, agent_vault; "
        "print(json.dumps({'version': agent_vault.__version__, 'all': agent_vault.__all__, "
        "'modules': sorted({m.split('.')[0] for m in sys.modules})}))"
    )
    result = _run(venv / "bin" / "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "VaultClient" in found["all"] and found["version"]
    assert [m for m in NEVER_IMPORTED if m in found["modules"]] == []
    listed = _run(_uv(), "pip", "list", "--format", "json", "--python", venv / "bin" / "python")
    assert listed.returncode == 0, listed.stderr
    installed = {_name(d["name"]) for d in json.loads(listed.stdout)}
    assert "agent-vault" in installed and installed >= SDK_DEPENDENCIES
    assert installed & NEVER == set()


def test_agent_vault_local_without_local_mode_names_the_fix(venv: Path) -> None:
    result = _run(venv / "bin" / "agent-vault", "local", "up")
    assert result.returncode == 2
    assert result.stderr.strip() == LOCAL_MISSING
    assert "pip install -e lambdas -e agent -e local" in result.stderr
    assert "Traceback" not in result.stderr
