"""The functions' Python (the python3.13 runtime) on this machine, found without the CDK.

The Lambda bundle compiles its bytecode with it (`stacks.constructs.vault_code`), `make
test-runtime` runs the vault's and the SDK's tests on it, and `make bench` imports the handlers
on it (`bench.cold`). `RUNTIME` in vault_code.py must name the same version.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PYTHON_VERSION = "3.13"


def runtime_interpreter() -> str | None:
    """A CPython of the Lambda runtime's version on this machine (on PATH, or pyenv's), or None.

    /var/task is read-only, so a bundle without bytecode is compiled again at every cold start
    (~0.7 s); .pyc files from another Python version would be ignored by the runtime.
    """
    name = f"python{PYTHON_VERSION}"
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{PYTHON_VERSION}*/bin/{name}"))
    candidates = [shutil.which(name), *map(str, pyenv)]
    for candidate in filter(None, candidates):
        probe = subprocess.run(  # noqa: S603 # nosec B603 - a local interpreter asked its version
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == PYTHON_VERSION:
            return candidate
    return None
