"""`python -m vault.presets list` and `python -m vault.presets check --config FILE NAME`.

`check` reads the named provider's discovery document and prints what it advertises next to
what its preset expects; exit status 0 when the vault can use it as configured, 1 when not, 2
when the config or the document cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from vault import presets
from vault.config import load_config
from vault.errors import VaultError
from vault.presets.checker import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vault.presets")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the presets")
    checking = commands.add_parser("check", help="check a provider against its discovery")
    checking.add_argument("--config", required=True, help="the vault config file (JSON)")
    checking.add_argument("--json", action="store_true", help="print the report as JSON")
    checking.add_argument("name", help="the provider's name in the config")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in presets.names():
            preset = presets.load(name)
            print(f"{name:<12} {preset.title:<28} {preset.documentation}")
        return 0
    try:
        config = load_config(args.config)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    provider = config.providers.get(args.name)
    if provider is None:
        print(f"no provider named {args.name!r} in {args.config}", file=sys.stderr)
        return 2
    if provider.api_key is not None:
        print(f"provider {args.name!r} is an API-key provider: it has no OAuth metadata to check")
        return 0
    try:
        report = check(args.name, provider)
    except VaultError as exc:
        print(f"provider {args.name!r}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
