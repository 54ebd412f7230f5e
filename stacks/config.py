"""Load and validate the deployment's one typed config at synth time.

The model is the handlers' own (`lambdas/vault/config.py`), so a config that synthesizes is a
config the Lambda functions accept at cold start. It comes from the `agent-vault` object in the
CDK context (cdk.json), or from a JSON file named with `-c config=PATH`, which replaces it whole.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from vault.config import VaultConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"

if TYPE_CHECKING:
    from aws_cdk.aws_logs import RetentionDays

CONTEXT_KEY = "agent-vault"
"""CDK context key holding the config object (cdk.json)."""
CONFIG_PATH_KEY = "config"
"""CDK context key naming a JSON config file (`cdk synth -c config=config/prod.json`)."""

__all__ = [
    "CONFIG_PATH_KEY",
    "CONTEXT_KEY",
    "ConfigError",
    "VaultConfig",
    "config_from_context",
    "log_retention",
    "parse_config",
    "read_config_file",
]

_KEY_PREFIX = re.compile(r"^(?P<path>[A-Za-z_][\w.-]*): (?P<message>.+)$", re.DOTALL)


class ConfigError(ValueError):
    """The deployment config is missing or invalid; the message names the key at fault."""


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """(key path, message) of one pydantic error; model-level messages carry their own path."""
    message = str(error["msg"]).removeprefix("Value error, ")
    path = _key_path(tuple(error["loc"]))
    match = _KEY_PREFIX.match(message)
    if match:  # e.g. "agents.calendar-agent.providers.google: scopes [...] are not in ..."
        inner = match["path"]
        path = f"{path}.{inner}" if path else inner
        message = match["message"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling; config/README.md lists every key)"
    return path or "(top level)", message


def parse_config(data: Any, *, source: str) -> VaultConfig:
    """Validate a config object; raise ConfigError naming every key at fault and the source."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config error in {source}: expected a JSON object, got {type(data).__name__}"
        )
    try:
        return VaultConfig.model_validate(data)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
        # A list whose item failed is also reported "too short" by pydantic: keep the item's error.
        failed = {tuple(e["loc"][:-1]) for e in errors if e["loc"]}
        lines = [
            f"config error at {path}: {message}"
            for path, message in (
                _describe(e)
                for e in errors
                if not (e["type"] == "too_short" and tuple(e["loc"]) in failed)
            )
        ]
        raise ConfigError(f"invalid config ({source}):\n  " + "\n  ".join(lines)) from None


def read_config_file(path: str | Path) -> VaultConfig:
    """Read and validate a JSON config file."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config error: no config file at {file}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config error: {file} is not valid JSON ({exc})") from None
    return parse_config(data, source=str(file))


def config_from_context(get_context: Any) -> VaultConfig:
    """The config named by the CDK context: `-c config=PATH` if given, else cdk.json's object.

    `get_context` is `app.node.try_get_context`.
    """
    path = get_context(CONFIG_PATH_KEY)
    if path:
        return read_config_file(path)
    data = get_context(CONTEXT_KEY)
    if data is None:
        raise ConfigError(
            f"config error: no config; put an {CONTEXT_KEY!r} object in cdk.json's"
            f" context or pass -c {CONFIG_PATH_KEY}=PATH"
        )
    if isinstance(data, str):  # `-c agent-vault='{...}'` arrives as a string
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"config error: context {CONTEXT_KEY!r} is not JSON ({exc})"
            ) from None
    return parse_config(data, source=f"context {CONTEXT_KEY!r}")


_RETENTION_NAMES = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


def log_retention(config: VaultConfig) -> RetentionDays:
    """The config's `log_retention_days` as the CDK enum (the model allows only these values)."""
    from aws_cdk.aws_logs import RetentionDays  # here: loading the CDK is slow, config is not

    return RetentionDays[_RETENTION_NAMES[config.log_retention_days]]
