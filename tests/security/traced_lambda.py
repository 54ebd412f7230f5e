"""A whole token story in a Lambda-like process with tracing enabled (SECURITY.md row 47).

Run by tests/security/test_tracing.py, never collected on its own:

    python -m tests.security.traced_lambda SECRETS_FILE

The parent gives it the environment a deployed function has with `Tracing: Active`:
LAMBDA_TASK_ROOT, `_X_AMZN_TRACE_ID` with `Sampled=1`, AWS_XRAY_DAEMON_ADDRESS (the parent's
UDP collector) and no POWERTOOLS_TRACE_DISABLED. Whatever the handlers' code would send to the
X-Ray daemon goes to the parent. Here the real handlers run every function's path once
(session, consent, callback, binding, token refresh and cache, admin revocation, end, reaper)
over moto and the real oidc-provider, with the suite's hygiene observers registering every secret
the story issues; the secrets go to SECRETS_FILE (JSON: secret -> kind) for the parent's scan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent_vault_local.provider import AuthorizationServer
from tests.security.helpers import connected_agent
from tests.security.hygiene import HYGIENE
from tests.support.aws import aws
from tests.support.harness import (
    APP_REDIRECT_URI,
    CALLBACK_URLS,
    USERS,
    make_vault,
    reap,
    task_stopped,
)


def run_story(secrets_file: Path) -> None:
    HYGIENE.install()
    with AuthorizationServer(
        redirect_uris=CALLBACK_URLS, app_redirect_uris=[APP_REDIRECT_URI]
    ) as server:
        id_tokens = {name: server.login_id_token(name, pw) for name, pw in USERS.items()}
        with aws() as session:
            vault = make_vault(server, session, id_tokens)
            HYGIENE.observe_vault(vault)
            alice = connected_agent(vault, "alice")  # agent API + the public callback
            for _ in range(2):  # a refresh and a mint, then the cached token
                answer = alice.token("calendar", ["calendar.read"])
                assert answer.status == 200, answer.body
            bob = connected_agent(vault, "bob")
            assert bob.token("calendar", ["calendar.read"]).status == 200
            revoked = vault.admin({"user": {"iss": server.issuer, "sub": "bob"}})
            assert revoked.status == 200, revoked.body  # the admin API
            assert alice.end().status == 200
            assert reap(task_stopped(bob.task_id))["status"] == "reaped"  # the reaper
    secrets_file.write_text(json.dumps(HYGIENE.secrets), encoding="utf-8")


if __name__ == "__main__":
    run_story(Path(sys.argv[1]))
