"""Refresh under contention: N "containers" asking at once for a token that needs a refresh.

Each thread stands for a separate Lambda container: it gets its own `Services` (build_services
with the same settings, config, boto3 session and clock, so a fresh data-key cache, provider
clients, secrets cache and HTTP pool) and calls the domain function
`vault.tokens.get_token(svc, caller, session_id, call, body)` with its own fresh proof. (The
HTTP handler uses its module's one `Services` (`vault.runtime.services()`) and the logger's
module-global keys, so threads standing for separate containers do not go through it.) All
threads are released together by a barrier.

Before each level the session's cached token is deleted, so the first caller must refresh
upstream; the single-flight lease should make that exactly one refresh token grant at the
provider (counted from the provider's own stats) whatever the number of callers. tests/support/
aws.py serialises moto's request handling, so conditional writes are atomic as in DynamoDB.

Per level, against DESIGN.md's budget: the DynamoDB requests each waiting caller (every caller
but the one that refreshed) made, counted per caller by a botocore hook on its container's
clients: in all, and besides the two every token request makes (the session's `Query` and the
proof's jti `PutItem`, the warm retrieval's own) — the budget's "at most 3 per waiting caller"
is on the latter (the waiting: the lost lease attempt and the reads; no polling storm); the
median latency of the waiters that got the token over the refresher's own (target: within
1.5x: a waiter should get the token about when it is stored); and every caller's outcome
(target: all get the token).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

from bench.rig import PROVIDER, SCOPES, Rig
from bench.timing import percentile
from vault.caller import caller_from
from vault.models import scope_key
from vault.runtime import Services, build_services
from vault.schemas import TokenRequest
from vault.sessions import HttpCall
from vault.tokens import get_token

TARGET_REQUESTS_PER_WAITER = 3
TARGET_WAITERS_P50_RATIO = 1.5


def _refreshes(rig: Rig) -> int:
    return int(rig.server.stats()["token_requests"].get("refresh_token", 0))


def _drop_cached_token(rig: Rig, session_id: str) -> None:
    client = rig.vault.session.client("dynamodb")
    client.delete_item(
        TableName=rig.vault.services.settings.table_name,
        Key={
            "pk": {"S": f"SESSION#{session_id}"},
            "sk": {"S": f"TOKEN#{PROVIDER}#{scope_key(tuple(SCOPES))}"},
        },
    )


def _marking(refresh: Any, marks: list[bool], index: int) -> Any:
    def marked(*args: Any, **kwargs: Any) -> Any:
        marks[index] = True
        return refresh(*args, **kwargs)

    return marked


def _container(rig: Rig) -> Services:
    base = rig.vault.services
    return build_services(
        base.settings, config=base.config, session=rig.vault.session, clock=base.clock
    )


class PerCaller:
    """DynamoDB requests per caller: a `before-call` hook on the clients of the callers'
    containers (a client copies its session's hooks when it is made), keyed by the caller index
    its thread runs as."""

    def __init__(self, callers: int) -> None:
        self.counts = [0] * callers
        self.operations: list[Counter[str]] = [Counter() for _ in range(callers)]
        self._local = threading.local()

    def runs_as(self, index: int) -> None:
        self._local.index = index

    def __call__(self, model: Any = None, **_: Any) -> None:
        index = getattr(self._local, "index", None)
        if index is not None:
            self.counts[index] += 1
            self.operations[index][getattr(model, "name", "?")] += 1

    def waiting(self, index: int) -> int:
        """The requests caller `index` made besides the two every token request makes (the
        session's `Query` and the proof's jti `PutItem`, as the warm retrieval makes them)."""
        ops = self.operations[index]
        return self.counts[index] - min(ops["Query"], 1) - min(ops["PutItem"], 1)


def level(rig: Rig, agent: Any, callers: int) -> dict[str, Any]:
    assert agent.session_id is not None
    _drop_cached_token(rig, agent.session_id)
    per_caller = PerCaller(callers)
    events = rig.vault.session.events
    events.register("before-call.dynamodb", per_caller)
    try:
        # one container per caller, built sequentially (creating boto3 clients is not
        # thread-safe); only their clients carry the per-caller hook
        containers = [_container(rig) for _ in range(callers)]
    finally:
        events.unregister("before-call.dynamodb", per_caller)
    event = rig.token_event(agent)
    caller = caller_from(event)
    body = TokenRequest.model_validate({"provider": PROVIDER, "scopes": SCOPES})
    url = rig.token_url(agent)
    calls = [
        HttpCall(method="POST", url=url, proof=agent.proof("POST", event["rawPath"]))
        for _ in range(callers)
    ]
    refreshed = [False] * callers
    for i, container in enumerate(containers):  # mark who refreshed (an instance attribute)
        client = container.providers[PROVIDER]
        client.refresh = _marking(client.refresh, refreshed, i)  # type: ignore[method-assign]
    barrier = threading.Barrier(callers)
    latencies: list[float] = [0.0] * callers
    outcomes: list[str] = [""] * callers
    tokens: list[str] = [""] * callers

    def run(i: int) -> None:
        per_caller.runs_as(i)
        barrier.wait()
        started = time.perf_counter()
        try:
            answer = get_token(containers[i], caller, agent.session_id, calls[i], body)
            outcomes[i] = "ok"
            tokens[i] = answer["access_token"]
        except Exception as exc:
            outcomes[i] = getattr(exc, "code", type(exc).__name__)
        latencies[i] = (time.perf_counter() - started) * 1000

    before = _refreshes(rig)
    rig.vault.counter.reset()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refreshes = _refreshes(rig) - before
    aws = Counter(rig.vault.counter.counts)
    refresher = [latencies[i] for i in range(callers) if refreshed[i]]
    waiters = [latencies[i] for i in range(callers) if not refreshed[i]]
    served = [latencies[i] for i in range(callers) if not refreshed[i] and outcomes[i] == "ok"]
    waiter_requests = [per_caller.counts[i] for i in range(callers) if not refreshed[i]]
    waiting_requests = [per_caller.waiting(i) for i in range(callers) if not refreshed[i]]
    waiter_operations: Counter[str] = Counter()
    for i in range(callers):
        if not refreshed[i]:
            waiter_operations.update(per_caller.operations[i])
    refresher_ms = round(refresher[0], 1) if len(refresher) == 1 else None
    # the waiters' p50 counts those that got the token (a refused caller's time is no wait)
    waiters_p50 = round(statistics.median(served), 1) if served else None
    return {
        "callers": callers,
        "upstream_refreshes": refreshes,
        "waiters": len(waiters),
        "waiters_served": len(served),
        "dynamodb_requests_per_waiter": (
            {
                "max": max(waiter_requests),
                "median": statistics.median(waiter_requests),
                "mean": round(statistics.mean(waiter_requests), 2),
            }
            if waiter_requests
            else None
        ),
        "dynamodb_requests_per_waiter_waiting": (
            {
                "max": max(waiting_requests),
                "median": statistics.median(waiting_requests),
                "mean": round(statistics.mean(waiting_requests), 2),
            }
            if waiting_requests
            else None
        ),
        "dynamodb_requests_of_waiters_by_operation": dict(sorted(waiter_operations.items())),
        "dynamodb_requests_of_refresher": [
            per_caller.counts[i] for i in range(callers) if refreshed[i]
        ],
        "waiters_p50_over_refresher": (
            round(waiters_p50 / refresher_ms, 2) if waiters_p50 and refresher_ms else None
        ),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "max_ms": round(max(latencies), 1),
        "refresher_ms": refresher_ms,
        "waiters_p50_ms": waiters_p50,
        "outcomes": dict(Counter(outcomes)),
        "distinct_tokens": len({t for t in tokens if t}),
        "aws_requests": dict(sorted(aws.items())),
    }


def measure(rig: Rig, levels: tuple[int, ...] = (1, 8, 32, 64)) -> dict[str, Any]:
    agent = rig.connected_agent()
    first = agent.token(PROVIDER, SCOPES)
    if first.status != 200:
        raise RuntimeError(f"first token failed: {first.status} {first.body}")
    return {str(n): level(rig, agent, n) for n in levels}
