"""The vault under measurement: the test harness (tests/support) over moto and the real provider.

Nothing here re-implements the harness: `make_vault` builds the services, `Vault.connect` runs a
whole consent, `TestAgent` signs the proofs, `build_event` makes the API Gateway v2 events.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent_vault_local.provider import AuthorizationServer
from bench.timing import AwsIoClock, ItemSizes
from tests.support.agent import TestAgent
from tests.support.apigw import DOMAIN, build_event
from tests.support.aws import aws
from tests.support.harness import CALLBACK_URLS, USERS, Vault, make_vault
from vault.runtime import use_services

PROVIDER = "calendar"
SCOPES = ["calendar.read"]
GRANTED = ("calendar.read", "calendar.write")


class CountingStream(io.TextIOBase):
    """A stdout stand-in that keeps only how much was written (log lines are not kept)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self.last: list[str] = []

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        self.lines += text.count("\n")
        if len(self.last) < 8:
            self.last.append(text)
        return len(text)

    def reset(self) -> None:
        self.bytes = self.lines = 0
        self.last = []


@dataclass
class Rig:
    server: AuthorizationServer
    vault: Vault
    io_clock: AwsIoClock
    sizes: ItemSizes
    logs: CountingStream

    def connected_agent(self) -> TestAgent:
        """A new agent task with a session for alice and her consent to the calendar scopes."""
        agent = self.vault.agent()
        started = agent.start_session(self.vault.user("alice"))
        assert started.status == 201, started.body
        bound = self.vault.connect(agent, scopes=GRANTED)
        assert bound.status == 200, bound.body
        return agent

    def token_event(self, agent: TestAgent, *, proof: str | None = None) -> dict[str, Any]:
        """The API Gateway v2 event of `POST /v1/sessions/{id}/tokens`, its proof signed now."""
        path = f"/v1/sessions/{agent.session_id}/tokens"
        signed = proof or agent.proof("POST", path)
        return build_event(
            "POST",
            path,
            body=json.dumps({"provider": PROVIDER, "scopes": SCOPES}),
            headers={"DPoP": signed, "content-type": "application/json"},
            principal_arn=agent.arn,
        )

    def token_url(self, agent: TestAgent) -> str:
        return f"https://{DOMAIN}/v1/sessions/{agent.session_id}/tokens"


@contextlib.contextmanager
def quiet_logs(stream: CountingStream) -> Iterator[CountingStream]:
    """Send Powertools' log lines (its handler) and EMF metric lines (print) to `stream`."""
    from vault.observability import logger

    handler = logger.registered_handler
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(stream):
            yield stream
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


@contextlib.contextmanager
def rig(server: AuthorizationServer | None = None) -> Iterator[Rig]:
    """moto + the vault's services + a real provider (started here unless one is given)."""
    with contextlib.ExitStack() as stack:
        if server is None:
            server = stack.enter_context(AuthorizationServer(redirect_uris=CALLBACK_URLS))
        id_tokens = {
            name: server.login_id_token(name, password) for name, password in USERS.items()
        }
        session = stack.enter_context(aws())
        io_clock, sizes = AwsIoClock(), ItemSizes()
        # Attached before make_vault builds the clients: a client copies the session's hooks.
        io_clock.attach(session)
        sizes.attach(session)
        logs = CountingStream()
        stack.enter_context(quiet_logs(logs))
        vault = make_vault(server, session, id_tokens)
        stack.callback(use_services, None)
        yield Rig(server=server, vault=vault, io_clock=io_clock, sizes=sizes, logs=logs)
