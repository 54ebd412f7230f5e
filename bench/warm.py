"""Warm token retrieval: a valid cached session token, through the real agent API handler.

Per request: the proof is signed (client side) and the API Gateway v2 event built *before* the
timer starts; the timer covers exactly `vault.handlers.agent_api.handler(event, context)`; the
time on the wire of its AWS requests (bench.timing.AwsIoClock) is subtracted. What is left is
the function's compute: the router (`vault.handlers.router`) and `lambda_handler`, body parsing,
proof verification, botocore's client-side work, the repository, the data-key cache and AES-GCM,
the audit line and the metric.

Beside it, in the same run and interleaved request by request, its floor (`BotocoreFloor`): the
same DynamoDB requests sent with a bare botocore client, timed the same way. The budget is the
ratio of the two medians (DESIGN.md: at most 1.5x).
"""

from __future__ import annotations

import copy
import functools
import gc
import secrets
import statistics
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore import xform_name

from agent_vault_local.events import LambdaContext
from bench.rig import Rig
from bench.timing import summary_ms, timed_call
from tests.support.aws import REGION, RequestCounter
from vault.handlers import agent_api
from vault.runtime import AWS_CLIENTS
from vault.store.envelope import DataKeyCache, Envelope

TARGET_RATIO = 1.5
"""DESIGN.md's budget: the handler's compute within 1.5x of the floor measured in the same run."""


def _stats(rig: Rig) -> dict[str, int]:
    return dict(rig.server.stats()["token_requests"])


def _provider_delta(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


class BotocoreFloor:
    """The floor of a warm retrieval's compute: the DynamoDB requests the handler made for one
    retrieval (recorded by `ItemSizes` while enabled: today one `Query` of the session and its
    tokens and one conditional `PutItem` of the proof's jti), sent again with a bare botocore
    client (its own `botocore.session`, the handler's client config `runtime.AWS_CLIENTS`) to the
    same moto, timed with the same clock: thread CPU time minus the CPU time inside the wire
    spans (`AwsIoClock`, `before-send` .. `before-parse`). The client carries the same bench hooks
    as the handler's (the wire clock, a request counter, the disabled item-size hook), so what
    the two figures differ by is the vault's own work.
    """

    def __init__(self, rig: Rig, requests: list[tuple[str, dict[str, Any]]]) -> None:
        if not requests:
            raise RuntimeError("the warm retrieval made no DynamoDB request to replay")
        self.rig = rig
        self.requests = requests
        self.client = botocore.session.get_session().create_client(
            "dynamodb", region_name=REGION, config=AWS_CLIENTS
        )
        hooks = types.SimpleNamespace(events=self.client.meta.events)
        rig.io_clock.attach(hooks)  # type: ignore[arg-type]
        rig.sizes.attach(hooks)  # type: ignore[arg-type]
        self.counter = RequestCounter()
        self.counter.attach(hooks)  # type: ignore[arg-type]
        self.compute: list[int] = []
        self.compute_wall: list[int] = []

    @property
    def operations(self) -> list[str]:
        return [name for name, _ in self.requests]

    def _prepared(self) -> list[tuple[Callable[..., Any], dict[str, Any]]]:
        """Fresh parameters: a write conditioned on a new key gets a new key of the same length
        (a replayed jti would be refused), so each write succeeds as the handler's does."""
        calls = []
        for name, params in self.requests:
            fresh = copy.deepcopy(params)
            if name == "PutItem" and "attribute_not_exists" in fresh.get("ConditionExpression", ""):
                used = fresh["Item"]["pk"]["S"]
                fresh["Item"]["pk"] = {"S": secrets.token_hex(len(used))[: len(used)]}
            calls.append((getattr(self.client, xform_name(name)), fresh))
        return calls

    def once(self) -> None:
        calls = self._prepared()
        io_clock = self.rig.io_clock
        io_clock.reset()
        started_cpu = time.thread_time_ns()
        started = time.perf_counter_ns()
        for call, params in calls:
            call(**params)
        elapsed = time.perf_counter_ns() - started
        elapsed_cpu = time.thread_time_ns() - started_cpu
        self.compute.append(elapsed_cpu - io_clock.elapsed_cpu_ns())
        self.compute_wall.append(elapsed - io_clock.elapsed_ns())

    def reset(self) -> None:
        self.compute.clear()
        self.compute_wall.clear()
        self.counter.reset()


class Run:
    """N warm retrievals: compute times, AWS requests, provider calls, log bytes."""

    def __init__(self, rig: Rig, agent: Any) -> None:
        self.rig, self.agent = rig, agent

    def __call__(
        self,
        n: int,
        *,
        collect: Callable[[], None] | None = None,
        floor: BotocoreFloor | None = None,
    ) -> dict[str, Any]:
        """`floor`: after each retrieval, the floor's requests once (interleaved, so a change of
        load on a shared machine skews both alike)."""
        rig = self.rig
        rig.vault.counter.reset()
        rig.logs.reset()
        provider_before = _stats(rig)
        compute: list[int] = []
        compute_wall: list[int] = []
        wall: list[int] = []
        client: list[int] = []
        body_bytes = 0
        handler = agent_api.handler
        for _ in range(n):
            event = rig.token_event(self.agent)  # proof signed here, before the timer
            call = timed_call(handler, event, LambdaContext(), rig.io_clock, "warm retrieval")
            body_bytes = call.body_bytes
            wall.append(call.wall_ns)
            compute.append(call.compute_ns)
            compute_wall.append(call.compute_wall_ns)
            client.append(call.client_ns)
            if collect:
                collect()
            if floor is not None:
                floor.once()
        counts = Counter(rig.vault.counter.counts)
        return {
            "n": n,
            "compute_ns": compute,
            "compute_wall_ns": compute_wall,
            "wall_ns": wall,
            "botocore_client_ns": client,
            "aws_requests": {k: v / n for k, v in sorted(counts.items())},
            "provider_requests": _provider_delta(provider_before, _stats(rig)) / n,
            "log_bytes": rig.logs.bytes / n,
            "log_lines": rig.logs.lines / n,
            "response_bytes": body_bytes,
        }


class Breakdown:
    """Where the compute goes: wrappers around the warm path's steps, wire time taken out.

    Each wrapper records its step's wall time minus the AWS wire time inside it; botocore's
    client-side time is recorded per request from the AwsIoClock. A wrapper costs well under a
    microsecond; this pass is separate from the headline timing anyway.
    """

    STEPS: tuple[tuple[str, str, str], ...] = (
        ("vault.tokens", "get_token", "route: tokens.get_token (all of the flow)"),
        ("vault.proofs", "verify_proof", "proof verification (joserfc, ES256)"),
        ("vault.store.sessions", "SessionRepository.bundle", "DynamoDB Query + mapping"),
        ("vault.store.replay", "ReplayRepository.remember", "DynamoDB PutItem (jti)"),
        ("vault.store.envelope", "Envelope.decrypt", "data-key cache + AES-GCM decrypt"),
        ("vault.audit", "_record", "audit log line (+ metric when not allowed)"),
        ("vault.handlers.agent_api", "parse_body", "body parsing (pydantic)"),
        ("vault.handlers.agent_api", "json_response", "response JSON"),
    )

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.samples: dict[str, list[int]] = defaultdict(list)
        self._current: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> Breakdown:
        import importlib

        for module_name, attr, label in self.STEPS:
            module = importlib.import_module(module_name)
            owner: Any = module
            name = attr
            if "." in attr:
                cls_name, name = attr.split(".")
                owner = getattr(module, cls_name)
            original = getattr(owner, name)
            setattr(owner, name, self._wrap(original, label))
            self._undo.append(functools.partial(setattr, owner, name, original))
        return self

    def __exit__(self, *_: Any) -> None:
        for undo in reversed(self._undo):
            undo()

    def _wrap(self, original: Callable[..., Any], label: str) -> Callable[..., Any]:
        io_clock = self.rig.io_clock
        current = self._current

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wire = io_clock.elapsed_ns()
            started = time.perf_counter_ns()
            try:
                return original(*args, **kwargs)
            finally:
                current[label] += time.perf_counter_ns() - started - (io_clock.elapsed_ns() - wire)

        return timed

    def collect(self) -> None:
        for label in {s[2] for s in self.STEPS}:
            self.samples[label].append(self._current.get(label, 0))
        self._current.clear()

    def medians_ms(self, compute: list[int], client: list[int]) -> dict[str, float]:
        med = {label: statistics.median(v) / 1e6 for label, v in self.samples.items()}
        total = statistics.median(compute) / 1e6
        route = med.pop("route: tokens.get_token (all of the flow)")
        out = dict(sorted(med.items(), key=lambda kv: -kv[1]))
        out["  of which botocore client-side (serialise, SigV4, parse)"] = (
            statistics.median(client) / 1e6
        )
        inner = sum(
            v for k, v in med.items() if k not in ("body parsing (pydantic)", "response JSON")
        )
        out["rest of tokens.get_token (policy, model lookups)"] = max(0.0, route - inner)
        outside = (
            total - route - med.get("body parsing (pydantic)", 0) - med.get("response JSON", 0)
        )
        out["router + decorator (routing, logger context, EMF flush)"] = max(0.0, outside)
        out["total (median compute, wall clock)"] = total
        return {k: round(v, 3) for k, v in out.items()}


def measure(
    rig: Rig, *, requests: int, uncached_requests: int, breakdown_requests: int
) -> dict[str, Any]:
    agent = rig.connected_agent()
    first = agent.token("calendar", ["calendar.read"])  # through TestAgent.token(): mints
    if first.status != 200:
        raise RuntimeError(f"first token failed: {first.status} {first.body}")
    run = Run(rig, agent)
    run(min(100, requests))  # warm-up: imports, lazy clients, the data-key cache

    # the DynamoDB requests of one retrieval, exactly as the handler made them (not timed)
    rig.sizes.reset()
    rig.sizes.enabled = True
    run(1)
    rig.sizes.enabled = False
    floor = BotocoreFloor(rig, list(rig.sizes.requests))
    for _ in range(min(100, requests)):  # warm-up of the floor's client
        floor.once()
    floor.reset()

    gc.collect()
    cached = run(requests, floor=floor)
    floor_ops = {k: v / len(floor.compute) for k, v in sorted(floor.counter.counts.items())}
    handler_ddb = {k: v for k, v in cached["aws_requests"].items() if k.startswith("dynamodb:")}
    if floor_ops != handler_ddb:
        raise RuntimeError(f"the floor sent {floor_ops}, the handler {handler_ddb}")

    # item sizes and request units (hooks on, not timed)
    rig.sizes.reset()
    rig.sizes.enabled = True
    sized = run(50)
    rig.sizes.enabled = False
    read_units = rig.sizes.read_units / sized["n"]
    write_units = rig.sizes.write_units / sized["n"]
    read_bytes = {k: v / sized["n"] for k, v in rig.sizes.read_bytes.items()}
    write_bytes = {k: v / sized["n"] for k, v in rig.sizes.write_bytes.items()}
    by_table = {
        op: {t: round(n / sized["n"], 3) for t, n in tables.items()}
        for op, tables in rig.sizes.by_table.items()
    }

    with Breakdown(rig) as breakdown:
        parts = run(breakdown_requests, collect=breakdown.collect)
        where = breakdown.medians_ms(parts["compute_wall_ns"], parts["botocore_client_ns"])

    # without the data-key cache: an Envelope whose cache keeps nothing (max_entries=0)
    services = rig.vault.services
    kept = services.envelope
    services.envelope = Envelope(
        rig.vault.session.client("kms"), services.settings.key_id, DataKeyCache(max_entries=0)
    )
    try:
        uncached = run(uncached_requests)
    finally:
        services.envelope = kept

    def kms_per_1000(r: dict[str, Any]) -> float:
        return round(
            float(sum(v for k, v in r["aws_requests"].items() if k.startswith("kms:"))) * 1000, 1
        )

    def by_service(r: dict[str, Any], service: str) -> float:
        return round(
            float(sum(v for k, v in r["aws_requests"].items() if k.startswith(service + ":"))), 3
        )

    compute = summary_ms(cached["compute_ns"])
    floor_compute = summary_ms(floor.compute)
    floor_wall = summary_ms(floor.compute_wall)
    compute_wall = summary_ms(cached["compute_wall_ns"])
    return {
        "floor": {
            "what": "the same DynamoDB requests as one retrieval ("
            + " + ".join(floor.operations)
            + ") with a bare botocore client (runtime.AWS_CLIENTS) against the same moto, "
            "interleaved with the handler's requests, same clock",
            "operations": floor.operations,
            "requests_by_operation": floor_ops,
            "compute_ms": floor_compute,
            "compute_wall_ms": floor_wall,
            "figure_ms_median": compute["median"],
            "floor_ms_median": floor_compute["median"],
            "ratio": round(compute["median"] / floor_compute["median"], 2),
            "ratio_wall": round(compute_wall["median"] / floor_wall["median"], 2),
            "target_ratio": TARGET_RATIO,
        },
        "requests": cached["n"],
        "aws_requests_by_operation": {k: round(v, 3) for k, v in cached["aws_requests"].items()},
        "dynamodb_requests": by_service(cached, "dynamodb"),
        "kms_requests": by_service(cached, "kms"),
        "secretsmanager_requests": by_service(cached, "secretsmanager"),
        "provider_requests": round(cached["provider_requests"], 3),
        "compute_ms_median": compute["median"],
        "compute_ms_p95": compute["p95"],
        "compute_ms": compute,
        "compute_clock": "CPU time of the handler's thread minus its CPU time inside the AWS "
        "wire spans (time.thread_time_ns): a busy shared machine does not "
        "inflate it; compute_wall_ms is the same with wall-clock time",
        "compute_wall_ms": compute_wall,
        "wall_ms_in_process": summary_ms(cached["wall_ns"]),
        "botocore_client_ms_median": round(
            statistics.median(cached["botocore_client_ns"]) / 1e6, 3
        ),
        "where_time_goes_ms": where,
        "kms_decrypt_per_1000": {
            "with_cache": kms_per_1000(cached),
            "without_cache": kms_per_1000(uncached),
        },
        "compute_ms_without_cache": summary_ms(uncached["compute_ns"]),
        "requests_without_cache": uncached["n"],
        "aws_requests_by_table": by_table,
        "vault_table": rig.vault.services.settings.table_name,
        "replay_table": rig.vault.services.settings.replay_table_name,
        "dynamodb_read_units": round(read_units, 3),
        "dynamodb_write_units": round(write_units, 3),
        "dynamodb_read_bytes": {k: round(v) for k, v in read_bytes.items()},
        "dynamodb_write_bytes": {k: round(v) for k, v in write_bytes.items()},
        "log_bytes_per_request": round(cached["log_bytes"], 1),
        "response_bytes": cached["response_bytes"],
        "caller_arn": agent.arn,
        "log_lines_per_request": round(cached["log_lines"], 2),
    }
