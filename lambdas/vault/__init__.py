"""Agent Vault's service: the Lambda functions' handlers (`vault.handlers`) and what they share.

Lambda's INIT pauses the cyclic garbage collector. Importing a handler makes about a hundred
thousand objects the collector tracks, which live as long as the container (botocore's service
models, pydantic's classes, the route table); none of them is ever garbage, yet the collector scans
them again at every collection while they are made, and again at every full collection of the first
request (which builds the boto3 clients). So, in Lambda only (`AWS_EXECUTION_ENV` is
`AWS_Lambda_...`), the first import of `vault` pauses the collector, and the handler module's
`lambda_handler` (`vault.observability`, the module's last statement) ends the pause with
`end_init`: `gc.freeze()` puts everything made so far out of the collector's sight, and collection
resumes for what the requests make. Outside Lambda (tests, local mode, the CLI) nothing changes.
`make bench` measures it: the handlers' cold import and their import + first request.
"""

from __future__ import annotations

import gc as _gc
import os as _os

_init_paused = (
    _os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_") and _gc.isenabled()
)
if _init_paused:
    _gc.disable()


def end_init() -> None:
    """End INIT's pause of the garbage collector, if it is paused: freeze what INIT made, then
    collect again. Idempotent; a no-op outside Lambda."""
    global _init_paused
    if _init_paused:
        _init_paused = False
        _gc.freeze()
        _gc.enable()
