#!/usr/bin/env python3
"""CDK entry point (`cdk synth`, `cdk deploy`): see stacks/app.py and docs/deploy.md."""

import sys
from pathlib import Path

from stacks.config import ConfigError


def main() -> int:
    try:
        from stacks import checkov_skips, nag
        from stacks.app import build_app

        built = build_app()
        assembly = built.app.synth()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    nag.write_acknowledgements(Path(assembly.directory), built.acknowledgements)
    checkov_skips.write_skips(Path(assembly.directory), built.checkov_skips_written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
