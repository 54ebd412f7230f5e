"""Timing helpers: the AWS round-trip clock, DynamoDB capacity from item sizes, percentiles.

What counts as "AWS I/O" (and is subtracted from a handler's wall time): the span from botocore's
`before-send` event to its `before-parse` event, per request. In a deployed function that span
is the HTTPS round trip to DynamoDB or KMS; here it is moto emulating the service (moto's stubber
is itself a `before-send` handler). Everything botocore does on our side of the wire stays in the
measured compute, as it does in Lambda: parameter validation, serialisation, SigV4 signing,
response parsing and CRC checks. Timing the whole API call (`before-call` .. `after-call`)
instead would hide that client-side work, which is a real part of the warm path's cost.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3


@dataclass(frozen=True)
class TimedCall:
    """One handler invocation: its wall and CPU time, and the AWS wire and botocore client time
    measured by the clock during it (ns); `body_bytes` of the answer."""

    wall_ns: int
    cpu_ns: int
    wire_ns: int
    wire_cpu_ns: int
    client_ns: int
    body_bytes: int

    @property
    def compute_ns(self) -> int:
        """CPU time with the wire taken out."""
        return self.cpu_ns - self.wire_cpu_ns

    @property
    def compute_wall_ns(self) -> int:
        """Wall time with the wire taken out."""
        return self.wall_ns - self.wire_ns


def timed_call(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    event: dict[str, Any],
    context: Any,
    clock: AwsIoClock,
    what: str,
) -> TimedCall:
    """Call `handler` once under the clock; an answer other than 200 is an error naming `what`."""
    clock.reset()
    started_cpu = time.thread_time_ns()
    started = time.perf_counter_ns()
    result = handler(event, context)
    elapsed = time.perf_counter_ns() - started
    elapsed_cpu = time.thread_time_ns() - started_cpu
    if result["statusCode"] != 200:
        raise RuntimeError(f"{what} failed: {result['statusCode']} {result.get('body')}")
    return TimedCall(
        wall_ns=elapsed,
        cpu_ns=elapsed_cpu,
        wire_ns=clock.elapsed_ns(),
        wire_cpu_ns=clock.elapsed_cpu_ns(),
        client_ns=clock.client_ns(),
        body_bytes=len(str(result.get("body") or "").encode()),
    )


class AwsIoClock:
    """Per-thread time on the wire of AWS requests, and botocore's own time around it (ns).

    `wire`: `before-send` .. `before-parse` (the round trip; moto here). `client`: the rest of
    each API call, `provide-client-params` .. `after-call` minus the wire: botocore's client-side
    work, which stays in the measured compute.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def attach(self, session: boto3.session.Session) -> None:
        # register_first: moto's stubber is a builtin `before-send` handler and answers the
        # request, so a handler registered after it would never run.
        session.events.register_first("provide-client-params", self._call_start)
        session.events.register_first("before-send", self._start)
        session.events.register_first("before-parse", self._stop)
        session.events.register_last("after-call", self._call_stop)

    def _state(self) -> threading.local:
        local = self._local
        if not hasattr(local, "wire"):
            local.wire = local.call = local.wire_cpu = 0
            local.started = local.call_started = local.started_cpu = None
        return local

    def _call_start(self, **_: Any) -> None:
        self._state().call_started = time.perf_counter_ns()

    def _call_stop(self, **_: Any) -> None:
        local = self._state()
        if local.call_started is not None:
            local.call += time.perf_counter_ns() - local.call_started
            local.call_started = None

    def _start(self, **_: Any) -> None:
        local = self._state()
        local.started_cpu = time.thread_time_ns()
        local.started = time.perf_counter_ns()

    def _stop(self, **_: Any) -> None:
        now, now_cpu = time.perf_counter_ns(), time.thread_time_ns()
        local = self._state()
        if local.started is not None:
            local.wire += now - local.started
            local.wire_cpu += now_cpu - local.started_cpu
            local.started = local.started_cpu = None

    def reset(self) -> None:
        local = self._state()
        local.wire = local.call = local.wire_cpu = 0
        local.started = local.call_started = local.started_cpu = None

    def elapsed_ns(self) -> int:
        """Wall time on the wire since the last reset (this thread)."""
        return int(self._state().wire)

    def elapsed_cpu_ns(self) -> int:
        """This thread's CPU time on the wire (moto emulating the service) since the reset."""
        return int(self._state().wire_cpu)

    def client_ns(self) -> int:
        """botocore's client-side time since the last reset (this thread), wire excluded."""
        local = self._state()
        return int(local.call - local.wire)


class ItemSizes:
    """DynamoDB request units of every Query/GetItem/PutItem seen, from DynamoDB's item-size rules.

    moto does not report consumed capacity, so it is computed the way DynamoDB bills it: a
    strongly consistent read costs 1 RRU per 4 KB of all items read (a Query sums its items,
    then rounds up), a write 1 WRU per 1 KB of the item written (rounded up).
    """

    def __init__(self) -> None:
        self.read_units = 0.0
        self.write_units = 0.0
        self.read_bytes: Counter[str] = Counter()
        self.write_bytes: Counter[str] = Counter()
        self.by_table: dict[str, Counter[str]] = {}
        """`dynamodb:Operation` -> requests per table (for CloudTrail's per-table selectors)."""
        self.requests: list[tuple[str, dict[str, Any]]] = []
        """Every request seen while enabled: (operation, its parameters as the caller gave them);
        the warm floor replays a retrieval's requests with bare botocore."""
        self._local = threading.local()
        self.enabled = False
        """Off while timing: computing item sizes is the bench's work, not the handler's."""

    def attach(self, session: boto3.session.Session) -> None:
        session.events.register("before-parameter-build.dynamodb", self._before)
        session.events.register("after-call.dynamodb", self._after_call)

    def reset(self) -> None:
        self.read_units = self.write_units = 0.0
        self.read_bytes.clear()
        self.write_bytes.clear()
        self.by_table.clear()
        self.requests.clear()

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        if self.enabled:
            self._local.params = copy.deepcopy(params)

    def _after_call(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if not self.enabled:
            return
        request: dict[str, Any] = getattr(self._local, "params", None) or {}
        name, table = model.name, request.get("TableName")
        self.requests.append((name, request))
        tables = (
            [table]
            if table
            else [
                item.get(kind, {}).get("TableName")
                for item in request.get("TransactItems", [])
                for kind in ("Put", "Update", "Delete", "ConditionCheck")
                if kind in item
            ]
        )
        for each in tables:
            self.by_table.setdefault(f"dynamodb:{name}", Counter())[str(each)] += 1
        if name in ("Query", "GetItem", "Scan"):
            items = parsed.get("Items") or ([parsed["Item"]] if parsed.get("Item") else [])
            size = sum(item_size(i) for i in items)
            blocks = max(1, math.ceil(size / 4096))
            self.read_units += blocks * (1.0 if request.get("ConsistentRead") else 0.5)
            self.read_bytes[f"{name}:{table}"] += size
        elif name == "PutItem":
            size = item_size(request.get("Item", {}))
            self.write_units += max(1, math.ceil(size / 1024))
            self.write_bytes[f"{name}:{table}"] += size


def _value_size(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in inner.items())
    if kind in ("SS", "BS"):
        return sum(len(v) if isinstance(v, bytes) else len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(_value_size({"N": v}) for v in inner)
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (approximately for N)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values_ns: Sequence[int]) -> dict[str, float]:
    ms = [v / 1e6 for v in values_ns]
    return {
        "median": round(statistics.median(ms), 3),
        "p95": round(percentile(ms, 95), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3),
        "n": len(ms),
    }
