"""A load run of local mode: N concurrent agents x M warm token requests over HTTP.

Local mode (`agent_vault_local.runner.LocalModeProcess`, as tests/local/conftest.py starts it, in
a child process without the sample agent): moto in server mode, the oidc-provider, the vault's
functions as pools of Lambda-like containers (up to `containers.DEFAULT_MAX_CONTAINERS` per
function, one request at a time each) behind the local API Gateway, which verifies SigV4 for
each local principal. Everything listens on 127.0.0.1; the run refuses any other address.

Each agent is the real SDK, `agent_vault.VaultClient`, signing as a task of local mode's
`calendar-bearer-agent` (its two tasks, round robin; the `calendar-agent` has proxy delivery and
gets no token) with its own session and key. Before the timer (not
counted): alice logs in to the application once, consents once (tests/local/helpers.consent),
every agent starts its session and gets its first token (the vault mints it), then all ask
twice at once (the agent API's pool starts its containers: their cold starts are not timed).
Timed: all agents released together; each asks M times for its token with `forget_token` +
`get_token` (the SDK's cache forgotten, so each is one `POST /v1/sessions/{id}/tokens`: SigV4, a
fresh proof, the gateway, a container, moto over HTTP). `max_attempts=1`: the SDK retries
nothing, so every failure is counted. Latency is the SDK call's, end to end, in this process.

Bounded: at most `agents x requests` requests, each with the SDK's timeout, and a deadline for
the whole timed phase after which no agent starts another request (what was not sent counts as
an error). Any error fails the bench (`LoadRunFailed`), with what went wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent_vault import UserIdentity, VaultClient
from agent_vault_local.containers import DEFAULT_MAX_CONTAINERS
from agent_vault_local.demo import id_token_for, vault_client
from agent_vault_local.runner import BEARER_TASK_1, BEARER_TASK_2, LocalInfo, LocalModeProcess
from bench import BENCH_ENV
from bench.timing import percentile
from tests.local.helpers import consent

SCOPES = ("calendar.read",)
PRINCIPALS = (BEARER_TASK_1, BEARER_TASK_2)
"""The tasks of local mode's calendar agent with `bearer` delivery (its other calendar agent
reaches the calendar through the proxy and gets no token); agents are spread over them round
robin."""
USER = "alice"
LOOPBACK = "127.0.0.1"
FUNCTION = "agent-vault-agent-api"


class LoadRunFailed(RuntimeError):
    """The load run had errors (or could not finish in time): the bench fails."""


@dataclass(frozen=True)
class LoadPlan:
    agents: int
    requests: int
    """Per agent."""
    time_limit_s: float
    """For the timed phase; no request starts after it."""
    request_timeout_s: float = 10.0
    startup_timeout_s: float = 120.0


@contextlib.contextmanager
def _without_bench_environment() -> Iterator[None]:
    """Local mode gets this process's environment minus the in-process handlers' (bench.BENCH_ENV:
    TABLE_NAME, AWS_LAMBDA_FUNCTION_NAME...): its functions get their own from local mode."""
    saved = {k: os.environ.pop(k) for k in BENCH_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _loopback_only(info: LocalInfo) -> None:
    for name, url in (("vault", info.vault_url), ("moto", info.moto_url)):
        host = urlsplit(url).hostname
        if host != LOOPBACK:
            raise LoadRunFailed(f"local mode's {name} listens on {host}, not {LOOPBACK}")


def _reports(info: LocalInfo, since: float, until: float) -> list[dict[str, Any]]:
    """The local Lambda service's platform.report records of the agent API in [since, until]."""
    found = []
    with Path(info.vault_log).open("rb") as log:
        for line in log:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(record, dict)
                and record.get("type") == "platform.report"
                and record.get("function") == FUNCTION
                and since <= record.get("startedAt", 0) <= until
            ):
                found.append(record)
    return found


def _agents(info: LocalInfo, plan: LoadPlan) -> list[VaultClient]:
    user = UserIdentity(id_token=id_token_for(info, USER))
    return [
        vault_client(
            info,
            PRINCIPALS[i % len(PRINCIPALS)],
            user,
            max_attempts=1,
            timeout=plan.request_timeout_s,
        )
        for i in range(plan.agents)
    ]


def _prepare(info: LocalInfo, agents: list[VaultClient]) -> None:
    """Sessions, alice's one consent, each agent's first token (minted), then two rounds of all
    agents at once, so the agent API's pool has started its containers (their cold starts are
    not part of the timed run)."""
    first = agents[0]
    first.start_session()
    consent(info, first, USER, SCOPES)
    for agent in agents:
        if agent.session is None:
            agent.start_session()
        agent.get_token(info.provider_name, SCOPES)

    def again(agent: VaultClient) -> None:
        agent.forget_token(info.provider_name, SCOPES)
        agent.get_token(info.provider_name, SCOPES)

    with ThreadPoolExecutor(max_workers=len(agents), thread_name_prefix="load-warm") as pool:
        for _ in range(2):
            list(pool.map(again, agents))


def _timed(info: LocalInfo, agents: list[VaultClient], plan: LoadPlan) -> dict[str, Any]:
    n = len(agents)
    latencies: list[list[float]] = [[] for _ in range(n)]
    errors: list[Counter[str]] = [Counter() for _ in range(n)]
    barrier = threading.Barrier(n + 1)
    deadline: list[float] = [0.0]

    def agent_run(i: int) -> None:
        agent = agents[i]
        barrier.wait(timeout=60)
        for sent in range(plan.requests):
            if time.monotonic() > deadline[0]:
                errors[i]["not sent: the run's time limit passed"] += plan.requests - sent
                return
            agent.forget_token(info.provider_name, SCOPES)
            started = time.perf_counter()
            try:
                token = agent.get_token(info.provider_name, SCOPES)
                if not token.access_token:
                    errors[i]["an empty access token"] += 1
            except Exception as exc:  # every failure is the run's error, by kind
                errors[i][f"{type(exc).__name__}: {getattr(exc, 'code', '')}".strip()] += 1
            latencies[i].append((time.perf_counter() - started) * 1000)

    threads = [
        threading.Thread(target=agent_run, args=(i,), name=f"load-agent-{i}") for i in range(n)
    ]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + plan.time_limit_s
    since = time.time()
    started = time.perf_counter()
    barrier.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=plan.time_limit_s + plan.request_timeout_s + 30)
    elapsed = time.perf_counter() - started
    until = time.time()
    if any(thread.is_alive() for thread in threads):
        raise LoadRunFailed("an agent of the load run did not finish in time")
    every = [ms for per_agent in latencies for ms in per_agent]
    failed: Counter[str] = sum(errors, Counter())
    reports = _reports(info, since, until)
    return {
        "requests": len(every),
        "planned_requests": n * plan.requests,
        "errors": sum(failed.values()),
        "errors_by_kind": dict(failed),
        "elapsed_s": round(elapsed, 2),
        "throughput_rps": round(len(every) / elapsed, 1),
        "latency_ms": {
            "p50": round(statistics.median(every), 1) if every else None,
            "p95": round(percentile(every, 95), 1) if every else None,
            "p99": round(percentile(every, 99), 1) if every else None,
            "max": round(max(every), 1) if every else None,
        },
        "containers_serving": len({r.get("container") for r in reports}),
        "invocations_reported": len(reports),
    }


def measure(plan: LoadPlan) -> dict[str, Any]:
    """Start local mode, run the load, stop local mode; raise LoadRunFailed on any error."""
    began = time.perf_counter()
    with _without_bench_environment():
        local = LocalModeProcess(with_agent=False, startup_timeout=plan.startup_timeout_s)
        info = local.start()
    try:
        _loopback_only(info)
        startup_s = time.perf_counter() - began
        agents = _agents(info, plan)
        try:
            _prepare(info, agents)
            result = _timed(info, agents, plan)
        finally:
            for agent in agents:
                with contextlib.suppress(Exception):
                    agent.close()
    finally:
        local.stop()
    result = {
        "what": f"{plan.agents} concurrent agents (agent_vault.VaultClient) x {plan.requests} "
        "warm token requests each over HTTP (SigV4 + a proof each) through local mode's API "
        f"Gateway on {LOOPBACK}, the agent API as up to {DEFAULT_MAX_CONTAINERS} containers",
        "agents": plan.agents,
        "requests_per_agent": plan.requests,
        "time_limit_s": plan.time_limit_s,
        "max_containers": DEFAULT_MAX_CONTAINERS,
        "local_mode_startup_s": round(startup_s, 1),
        **result,
    }
    if result["errors"] or result["requests"] != result["planned_requests"]:
        raise LoadRunFailed(
            f"the load run had {result['errors']} errors in {result['requests']} of "
            f"{result['planned_requests']} requests: {result['errors_by_kind']}"
        )
    return result
