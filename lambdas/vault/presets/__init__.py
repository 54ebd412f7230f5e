"""Provider presets: one JSON data file per provider, in `data/` beside this module.

A preset fills the provider config keys the operator leaves out (endpoints or discovery URL, scope
separator, offline access, revocation semantics, token answer quirks, API base URLs), each value
with the URL of the vendor documentation it comes from. Placeholders such as `{tenant}` or
`{domain}` in its strings are filled from the provider's `preset_params`. The files ship inside
the `vault` package, so the Lambda bundle (a copy of the package) carries them; `config/presets`
in the repository is a link to that directory. `vault.presets.checker` compares a preset with
what the provider's discovery document says.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["PRESET_DIR", "Preset", "PresetError", "apply", "load", "names"]

PRESET_DIR = Path(__file__).parent / "data"
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
PARAM_PATTERNS = {
    # a DNS name (no port, path, credentials or query can ride along)
    "host": re.compile(
        r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
    ),
    # one URL path segment or DNS label: a tenant id, an environment id, a region...
    "label": re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,128}$"),
}


class PresetError(ValueError):
    """A preset that does not exist, or placeholders it cannot fill."""


class PresetParam(BaseModel):
    """A placeholder of a preset, filled from `preset_params`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["host", "label"]
    description: str = Field(min_length=1)
    example: str
    default: str | None = None

    def check(self, name: str, value: str) -> str:
        if not PARAM_PATTERNS[self.kind].match(value):
            raise PresetError(f"preset_params.{name}: {value!r} is not a {self.kind} name")
        return value


class Expectations(BaseModel):
    """What the vendor documents about its authorization server (None: the preset does not
    say). `vault.presets.checker` compares them with the provider's metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pkce_s256: bool | None = None
    """Supports PKCE with S256."""
    iss_parameter: bool | None = None
    """Sends `iss` in the authorization response (RFC 9207)."""
    revocation: bool | None = None
    """Has an RFC 7009 revocation endpoint (its metadata names it, where it has metadata)."""
    dpop: bool | None = None
    """Supports RFC 9449 DPoP-bound tokens."""
    refresh_tokens: bool | None = None
    """Issues refresh tokens to this kind of client (the vault needs them)."""


class Preset(BaseModel):
    """One preset file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(min_length=1)
    documentation: str = Field(pattern=r"^https://")
    params: dict[str, PresetParam] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    """Provider config values (keys of `ProviderConfig`)."""
    expects: Expectations = Field(default_factory=Expectations)
    notes: tuple[str, ...] = ()
    sources: dict[str, str] = Field(default_factory=dict)
    """The vendor documentation behind each value: `config` keys and `expects.<name>`."""

    @field_validator("sources")
    @classmethod
    def _https_sources(cls, value: dict[str, str]) -> dict[str, str]:
        for key, url in value.items():
            if not url.startswith("https://"):
                raise ValueError(f"sources.{key}: {url!r} is not an https URL")
        return value

    def placeholders(self, value: Any) -> set[str]:
        """The placeholder names a config value uses."""
        if isinstance(value, str):
            return set(PLACEHOLDER.findall(value))
        if isinstance(value, dict):
            return set().union(*(self.placeholders(v) for v in value.values()))
        if isinstance(value, list | tuple):
            return set().union(*(self.placeholders(v) for v in value))
        return set()


@cache
def names() -> tuple[str, ...]:
    """Every preset, by file name."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.json")))


@cache
def load(name: str) -> Preset:
    if name not in names():
        raise PresetError(f"no preset named {name!r}; the presets are: {', '.join(names())}")
    path = PRESET_DIR / f"{name}.json"
    try:
        return Preset.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:  # a broken file in the package: a bug
        raise RuntimeError(f"preset file {path.name} is invalid: {exc}") from exc


def _fill(value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: params[m.group(1)], value)
    if isinstance(value, dict):
        return {k: _fill(v, params) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(v, params) for v in value]
    return value


def apply(data: dict[str, Any]) -> dict[str, Any]:
    """A provider's config with its preset's values filled in.

    Keys given explicitly win whole (an explicit `extra_authorize_params` replaces the preset's);
    explicit `authorization_endpoint` and `token_endpoint` also drop the preset's
    `discovery_url`. Placeholders are filled only in the values taken from the preset.
    """
    name = data.get("preset", "generic")
    if not isinstance(name, str):
        raise PresetError("preset must be a preset name")
    preset = load(name)
    given = data.get("preset_params") or {}
    if not isinstance(given, dict):
        raise PresetError("preset_params must be an object of strings")
    unknown = sorted(set(given) - set(preset.params))
    if unknown:
        expected = ", ".join(preset.params) or "none"
        raise PresetError(f"preset {name!r} has no parameter {unknown} (it takes: {expected})")
    params = {
        key: param.check(key, str(given[key]))
        for key, param in preset.params.items()
        if key in given
    }
    params |= {
        key: param.default
        for key, param in preset.params.items()
        if key not in params and param.default is not None
    }
    taken = {key: value for key, value in preset.config.items() if key not in data}
    if "authorization_endpoint" in data and "token_endpoint" in data:
        taken.pop("discovery_url", None)  # endpoints given: the preset's way to find them is moot
    missing = sorted(set().union(*(preset.placeholders(v) for v in taken.values())) - set(params))
    if missing:
        hints = ", ".join(f"{m} (e.g. {preset.params[m].example!r})" for m in missing)
        raise PresetError(f"preset {name!r} needs preset_params: {hints}")
    return {**_fill(taken, params), **data}
