"""SECURITY.md row 47: no token, code or verifier in a trace segment.

The functions run with Lambda's active tracing (the stack's `Tracing: Active`), and the handlers
carry no tracer of their own: nothing of ours is on the X-Ray SDK's import path, so nothing the
handlers hold can be recorded as trace metadata. The suite runs with tracing disabled, so these
tests run the handlers in fresh, Lambda-like interpreters with tracing enabled: one checks what
they import, the other runs a whole token story with the X-Ray daemon address at a UDP collector
on loopback and feeds every datagram it receives to the hygiene scan.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from tests.security.hygiene import HYGIENE, Hygiene, TraceCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ("agent_api", "proxy_api", "callback", "admin_api", "reaper")
STORY_SECRETS = {
    "access token",
    "refresh token",
    "authorization code",
    "PKCE verifier",
    "DPoP proof",
    "state",
    "KMS data key",
    "client secret",
    "ID token",
}


def lambda_environment(daemon_address: str) -> dict[str, str]:
    """What a deployed function with `Tracing: Active` has: the runtime's execution environment
    (INIT pauses the garbage collector, as in Lambda: `vault.end_init`), a task root, a sampled
    trace header and the daemon's address; the suite's POWERTOOLS_TRACE_DISABLED is not
    there."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("POWERTOOLS_TRACE_DISABLED", "PYTHONPATH")
        and not k.startswith(("PYTEST_", "_X_AMZN", "AWS_XRAY"))
    }
    env.update(
        {
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "lambdas")]),
            "LAMBDA_TASK_ROOT": str(REPO_ROOT / "lambdas"),
            "_X_AMZN_TRACE_ID": f"Root=1-{secrets.token_hex(4)}-{secrets.token_hex(12)};"
            f"Parent={secrets.token_hex(8)};Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": daemon_address,
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    )
    return env


def test_row_47_no_handler_imports_the_xray_sdk_or_holds_a_tracer() -> None:
    probe = "; ".join(
        [
            "import json, sys",
            *(f"import vault.handlers.{name}" for name in HANDLERS),
            "from aws_lambda_powertools import Tracer",
            "tracers = sorted(f'{m}.{a}' for m, mod in list(sys.modules.items())"
            " if m == 'vault' or m.startswith('vault.')"
            " for a, v in vars(mod).items() if isinstance(v, Tracer) or v is Tracer)",
            "print(json.dumps({'xray': sorted(m for m in sys.modules"
            " if m.startswith('aws_xray_sdk')),"
            " 'tracers': tracers}))",
        ]
    )
    with TraceCollector() as collector:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            env=lambda_environment(collector.address),
            check=False,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == {"xray": [], "tracers": []}
    assert collector.datagrams == []


def test_row_47_a_traced_token_story_sends_no_secret_to_the_xray_daemon(tmp_path: Path) -> None:
    secrets_file = tmp_path / "story-secrets.json"
    with TraceCollector() as collector:
        done = subprocess.run(
            [sys.executable, "-m", "tests.security.traced_lambda", str(secrets_file)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env=lambda_environment(collector.address),
        )
    assert done.returncode == 0, done.stderr[-3000:]
    issued: dict[str, str] = json.loads(secrets_file.read_text(encoding="utf-8"))
    assert set(issued.values()) >= STORY_SECRETS, set(issued.values())

    hygiene = Hygiene()
    hygiene.current = "traced token story"
    for value, kind in issued.items():
        hygiene.add_secret(value, kind)
        HYGIENE.add_secret(value, kind)  # the suite-wide scan sees them too
    for datagram in collector.datagrams:
        hygiene.observe_trace(datagram)
        HYGIENE.observe_trace(datagram)
    assert [str(f) for f in hygiene.scan(hygiene.texts)] == []
    # Nothing of ours sends a segment at all: Lambda records the invocation segments itself.
    assert len(collector.datagrams) == 0

    # The collector and the scan are armed: a segment carrying the story's access token, sent
    # as the X-Ray SDK sends it, is found.
    token = next(value for value, kind in issued.items() if kind == "access token")
    segment = {
        "name": "## vault.handlers.agent_api.handler",
        "type": "subsegment",
        "metadata": {
            "agent-vault": {
                "handler response": {
                    "body": json.dumps({"access_token": token, "token_type": "DPoP"})
                }
            }
        },
    }
    with TraceCollector() as planted, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        host, port = planted.address.split(":")
        udp.sendto(
            b'{"format": "json", "version": 1}\n' + json.dumps(segment).encode(), (host, int(port))
        )
    assert len(planted.datagrams) == 1
    check = Hygiene()
    check.add_secret(token, "access token")
    check.observe_trace(planted.datagrams[0])
    found = check.scan(check.texts)
    assert [(f.kind, f.what) for f in found] == [
        ("access token", "trace segment ## vault.handlers.agent_api.handler")
    ]
