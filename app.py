#!/usr/bin/env python3
"""CDK entry point (`cdk synth`, `cdk deploy`): see stacks/app.py and docs/deploy.md."""

import sys
from pathlib import Path

from stacks.config import ConfigError


def main() -> int:
    try:
        from stacks import nag
        from stacks.app import build_app

        built = build_app()
        assembly = built.app.synth()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    nag.write_acknowledgements(Path(assembly.directory), built.acknowledgements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
