"""Local mode on the developer's own config (``agent-vault local up --config my.json``).

The file is the vault's own config (``vault.config.VaultConfig``, config/README.md) with one
addition: a provider given as ``{"bundled": true}`` is served by local mode's bundled
oidc-provider (its discovery URL, client, scopes ``calendar.read calendar.write mail.read``,
calendar API and DPoP are filled in; keys given beside ``bundled`` override them). Local mode
also sets what only it can know: ``account`` and ``region`` (moto's), its admin role, the sample
agent's return URL and the bundled provider as a user identity issuer (users alice and bob).

Client secrets of the other (external) providers never come from the command line: from the
environment (``AGENT_VAULT_SECRET_<NAME>``, the provider's name upper-cased, ``-`` as ``_``) or a
JSON file ``{"<name>": "<secret>"}`` (``--secrets-file``). A provider without one gets a random
placeholder, as a deployed stack's secret does, until ``agent-vault secret set NAME --local``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vault.config import VaultConfig

__all__ = [
    "BUNDLED",
    "SECRET_ENV_PREFIX",
    "Bundled",
    "UserConfig",
    "UserConfigError",
    "client_secrets",
    "load_user_config",
    "secret_env_name",
]

BUNDLED = "bundled"
SECRET_ENV_PREFIX = "AGENT_VAULT_SECRET_"  # noqa: S105 - a variable name prefix  # nosec B105
BUNDLED_SCOPES = ("calendar.read", "calendar.write", "mail.read")


class UserConfigError(ValueError):
    """The config cannot run: every problem, each with the key it is at."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{path}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)
        )


@dataclass(frozen=True)
class Bundled:
    """Where local mode's bundled provider is (known once it runs)."""

    issuer: str
    jwks_uri: str
    resource: str
    calendar_api: str
    audience: str


PLACEHOLDER = Bundled(
    issuer="http://127.0.0.1:1",
    jwks_uri="http://127.0.0.1:1/jwks",
    resource="http://127.0.0.1:1/calendar",
    calendar_api="http://127.0.0.1:1/calendar",
    audience="agent-app",
)
"""Stands in for the bundled provider when a config is validated before anything starts."""


@dataclass(frozen=True)
class UserConfig:
    """A developer's config, validated (with the bundled provider's values stood in)."""

    path: Path
    document: dict[str, Any]
    bundled: tuple[str, ...]
    """The providers local mode's bundled oidc-provider serves."""
    validated: VaultConfig = field(repr=False)

    @property
    def oauth(self) -> tuple[str, ...]:
        """The OAuth providers: each has a callback (an API-key provider has none)."""
        return tuple(n for n, p in self.validated.providers.items() if p.api_key is None)

    @property
    def external(self) -> tuple[str, ...]:
        """The OAuth providers that are not the bundled oidc-provider: each needs its client
        secret and its redirect URI registered there."""
        return tuple(n for n in self.oauth if n not in self.bundled)

    def complete(
        self, bundled: Bundled, *, account: str, region: str, admin_role: str, return_url: str
    ) -> dict[str, Any]:
        """The vault config local mode runs: the user's, with local mode's values filled in."""
        return _complete(
            self.document,
            bundled,
            account=account,
            region=region,
            admin_role=admin_role,
            return_url=return_url,
        )

    def sample_agent(self) -> tuple[str, str] | None:
        """(agent, provider) the sample agent can run as: `sample_agent` (or the first agent)
        with `calendar.read` at a bundled provider; None when no agent can."""
        agents = self.validated.agents
        names = [self.validated.sample_agent] if self.validated.sample_agent else list(agents)
        for name in names:
            for provider, access in agents[name].providers.items():
                if provider in self.bundled and "calendar.read" in access.scopes:
                    return name, provider
        return None


def secret_env_name(provider: str) -> str:
    return SECRET_ENV_PREFIX + provider.upper().replace("-", "_")


def _bundled_provider(entry: dict[str, Any], bundled: Bundled) -> dict[str, Any]:
    given = {k: v for k, v in entry.items() if k != BUNDLED}
    return {
        "discovery_url": f"{bundled.issuer}/.well-known/openid-configuration",
        "client_id": "agent-vault",
        "scopes": list(BUNDLED_SCOPES),
        "resource": bundled.resource,
        "timeout_seconds": 5,
        "api_base_urls": [bundled.calendar_api],
        "dpop": True,
        **given,
    }


def _complete(
    document: dict[str, Any],
    bundled: Bundled,
    *,
    account: str,
    region: str,
    admin_role: str,
    return_url: str,
) -> dict[str, Any]:
    config = dict(document)
    providers = config.get("providers")
    if isinstance(providers, dict):
        config["providers"] = {
            name: _bundled_provider(entry, bundled)
            if isinstance(entry, dict) and entry.get(BUNDLED) is True
            else entry
            for name, entry in providers.items()
        }
    config["account"] = account
    config["region"] = region
    admins = config.get("admin_role_names", [])
    if isinstance(admins, list) and admin_role not in admins:
        config["admin_role_names"] = [*admins, admin_role]
    returns = config.get("return_urls", [])
    if isinstance(returns, list) and return_url not in returns:
        config["return_urls"] = [*returns, return_url]
    issuers = config.get("user_identity_issuers", [])
    if isinstance(issuers, list):
        config["user_identity_issuers"] = [
            *issuers,
            {
                "issuer": bundled.issuer,
                "jwks_uri": bundled.jwks_uri,
                "audiences": [bundled.audience],
            },
        ]
    return config


def load_user_config(path: str | Path, *, account: str, region: str, admin_role: str) -> UserConfig:
    """Read and validate a developer's config before anything starts (UserConfigError)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserConfigError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    except ValueError as exc:
        raise UserConfigError(path, [f"not JSON: {exc}"]) from None
    if not isinstance(document, dict):
        raise UserConfigError(path, ["(top): a JSON object is expected"])
    providers = document.get("providers")
    bundled = tuple(
        name
        for name, entry in (providers.items() if isinstance(providers, dict) else ())
        if isinstance(entry, dict) and entry.get(BUNDLED) is True
    )
    problems = [
        f"providers.{name}.bundled: only `true` is meaningful"
        for name, entry in (providers.items() if isinstance(providers, dict) else ())
        if isinstance(entry, dict) and BUNDLED in entry and entry[BUNDLED] is not True
    ]
    completed = _complete(
        document,
        PLACEHOLDER,
        account=account,
        region=region,
        admin_role=admin_role,
        return_url="http://127.0.0.1:1/consent/return",
    )
    try:
        validated = VaultConfig.model_validate(completed)
    except ValidationError as exc:
        problems += [
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
    if problems:
        raise UserConfigError(path, problems)
    return UserConfig(path=path, document=document, bundled=bundled, validated=validated)


def client_secrets(
    config: UserConfig,
    environ: Mapping[str, str] | None = None,
    secrets_file: str | Path | None = None,
) -> dict[str, str]:
    """The external providers' client secrets given: the file's, then the environment's (which
    wins). Providers without one are left out (local mode stores a placeholder)."""
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    if secrets_file is not None:
        try:
            loaded = json.loads(Path(secrets_file).read_text(encoding="utf-8"))
        except OSError as exc:
            problem = f"cannot read it: {exc.strerror or exc}"
            raise UserConfigError(secrets_file, [problem]) from None
        except ValueError:
            # the error's text could quote the file: never print it
            raise UserConfigError(secrets_file, ["not JSON"]) from None
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise UserConfigError(secrets_file, ['expected {"<provider>": "<client secret>", ...}'])
        unknown = sorted(set(loaded) - set(config.external))
        if unknown:
            raise UserConfigError(
                secrets_file,
                [f"{name}: not an external provider of {config.path}" for name in unknown],
            )
        found.update(loaded)
    for name in config.external:
        value = environ.get(secret_env_name(name))
        if value:
            found[name] = value
    empty = sorted(n for n, v in found.items() if not v.strip())
    if empty:
        raise UserConfigError(secrets_file or "environment", [f"{n}: empty secret" for n in empty])
    return found
