"""``agent-vault``: the operator CLI.

``agent-vault local ...``  local mode, a developer tool in its own package (``agent-vault-local``):
                           ``local up`` starts it until Ctrl-C, ``local demo`` runs the story
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

LOCAL_MISSING = (
    "agent-vault: local mode is a separate developer package that is not installed here.\n"
    "  In a checkout: `make install` (or `pip install -e lambdas -e agent -e local`: local mode\n"
    "  needs the service and the sample agent), then `agent-vault local up`."
)


def _local(rest: Sequence[str]) -> int:
    try:
        local_cli = importlib.import_module("agent_vault_local.cli")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("agent_vault_local"):
            raise
        print(LOCAL_MISSING, file=sys.stderr)
        return 2
    result: int = local_cli.main(rest)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agent-vault",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="run Agent Vault on this machine (agent-vault-local)")
    local.add_argument("rest", nargs=argparse.REMAINDER, help="up | demo, and their options")
    args = parser.parse_args(argv)
    if args.command == "local":
        return _local(args.rest)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses first
    return 2


if __name__ == "__main__":
    sys.exit(main())
