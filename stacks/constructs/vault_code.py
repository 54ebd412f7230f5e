"""The vault's Lambda code asset: `lambdas/vault` + its pinned wheels + the validated config.

Bundled on this machine, without Docker (CI synthesizes with no Docker engine): pip downloads
the Linux wheels of `requirements/lambda.txt` for the functions' architecture and Python, minus
what the Lambda runtime already provides (boto3 & co.), each checked against its pinned hash,
next to a copy of the `vault` package and the config the handlers read at cold start
(`vault_config.json`, beside the package: `vault.config.config_document`, the validated config
stamped with the model that validated it, which the handlers load without validating again).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

from stacks.config import LAMBDAS_DIR, REPO_ROOT, VaultConfig
from stacks.runtime_python import PYTHON_VERSION, runtime_interpreter
from vault.config import config_document as config_document  # what the bundle carries

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
"""Graviton: cheaper per GB-second; every pinned wheel exists for manylinux aarch64."""
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
"""Amazon Linux 2023 (the python3.13 runtime) has glibc 2.34."""
REQUIREMENTS = REPO_ROOT / "requirements" / "lambda.txt"
CONFIG_FILE_NAME = "vault_config.json"
"""Read by the handlers from beside the `vault` package (/var/task/vault_config.json)."""
PROVIDED_BY_RUNTIME = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}
)
"""Never bundled: the functions use the runtime's AWS SDK (docs/cost.md, "The bundle and the AWS
SDK", says why)."""
_PIN = re.compile(r"^(?P<pin>(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*==\s*\S+)")
_HASH = re.compile(r"--hash=(\S+)")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(normalized name, `name==version`, its hashes) of each requirement of a compiled file
    (`uv pip compile --generate-hashes`: a requirement continues over `\\` line ends)."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        requirement = line.split("#", 1)[0].strip()
        match = _PIN.match(requirement)
        if match:
            pin = re.sub(r"\s+", "", match["pin"])
            found.append((_normalized(match["name"]), pin, tuple(_HASH.findall(requirement))))
    return found


def bundled_requirements(text: str) -> str:
    """The pinned requirements (`name==version` lines) minus those the Lambda runtime provides."""
    kept = [pin for name, pin, _ in _pins(text) if name not in PROVIDED_BY_RUNTIME]
    return "\n".join(kept) + "\n"


def provided_by_runtime(text: str) -> list[str]:
    """The pinned requirements the Lambda runtime provides instead (`name==version`)."""
    return [pin for name, pin, _ in _pins(text) if name in PROVIDED_BY_RUNTIME]


def with_hashes(requirements: str, pinned: str) -> str:
    """`requirements` (`name==version` lines) with the hashes `pinned` records for them, for
    `pip install --require-hashes`; a requirement that `pinned` does not pin stays without (and
    pip refuses it)."""
    hashes = {pin: found for _, pin, found in _pins(pinned)}
    lines = []
    for requirement in requirements.split():
        lines.append(" ".join((requirement, *(f"--hash={h}" for h in hashes.get(requirement, ())))))
    return "\n".join(lines) + "\n"


def _source_files() -> list[Path]:
    return sorted(
        p
        for p in (LAMBDAS_DIR / "vault").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def asset_hash(requirements: str, config_json: str) -> str:
    """Changes whenever the code, the wheels to install, the platform, the config or whether the
    bundle carries bytecode change."""
    digest = hashlib.sha256()
    bytecode = "bytecode" if runtime_interpreter() else "source-only"
    for part in (PYTHON_VERSION, *WHEEL_PLATFORMS, requirements, config_json, bytecode):
        digest.update(part.encode() + b"\0")
    for path in _source_files():
        digest.update(str(path.relative_to(LAMBDAS_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def compile_bytecode(out: Path) -> bool:
    """Compile the bundle for the runtime's Python, if one is here; False when none is."""
    interpreter = runtime_interpreter()
    if interpreter is None:
        print(
            f"note: no python{PYTHON_VERSION} here; the Lambda bundle ships without bytecode "
            "and compiles it at each cold start",
            file=sys.stderr,
        )
        return False
    command = [
        interpreter,
        "-m",
        "compileall",
        "-q",
        "-j",
        "0",
        "--invalidation-mode",
        "unchecked-hash",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 # nosec B603
    if result.returncode != 0:
        raise RuntimeError(f"compiling the Lambda bundle failed:\n{result.stderr}")
    return True


@jsii.implements(cdk.ILocalBundling)
class LocalPythonBundling:
    """Builds the asset with pip on this machine; never falls back to Docker."""

    def __init__(
        self,
        *,
        requirements: str,
        config_json: str,
        platforms: tuple[str, ...] = WHEEL_PLATFORMS,
    ) -> None:
        """`platforms`: the wheels' (the functions' architecture; `make bench` builds a twin
        for its own machine's, to import it)."""
        self._requirements = requirements
        self._config_json = config_json
        self._platforms = platforms

    def try_bundle(self, output_dir: str, options: Any = None) -> bool:
        """Called by the CDK (through jsii, with the bundling options as one argument)."""
        out = Path(output_dir)
        with tempfile.TemporaryDirectory() as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(
                with_hashes(self._requirements, REQUIREMENTS.read_text(encoding="utf-8")),
                encoding="utf-8",
            )
            command = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *(arg for platform in self._platforms for arg in ("--platform", platform)),
                "--only-binary=:all:",
                "--python-version",
                PYTHON_VERSION,
                "--implementation",
                "cp",
                "--no-deps",
                "--require-hashes",
                "--no-compile",
                "--target",
                str(out),
                "-r",
                str(requirements),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 # nosec B603
        if result.returncode != 0:
            # Raise rather than return False: False would make the CDK try Docker instead.
            raise RuntimeError(f"bundling the vault's Lambda dependencies failed:\n{result.stderr}")
        shutil.rmtree(out / "bin", ignore_errors=True)  # console scripts: not needed in Lambda
        shutil.copytree(
            LAMBDAS_DIR / "vault",
            out / "vault",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        (out / CONFIG_FILE_NAME).write_text(self._config_json, encoding="utf-8")
        compile_bytecode(out)
        return True


def vault_code(config: VaultConfig) -> lambda_.Code:
    """The one code asset deployed to every vault function."""
    requirements = bundled_requirements(REQUIREMENTS.read_text(encoding="utf-8"))
    config_json = config_document(config)
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        asset_hash=asset_hash(requirements, config_json),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            # Required by the API but never pulled: local bundling always succeeds or raises.
            image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
            # jsii hands tryBundle its options as one argument, unlike the typed Protocol.
            local=cast(
                cdk.ILocalBundling,
                LocalPythonBundling(requirements=requirements, config_json=config_json),
            ),
        ),
    )
