"""A proxied call against a bare provider call, in the same run (DESIGN.md's budget: the warm
retrieval's AWS calls plus the provider call, and at most 3 ms of vault compute on top of the
provider's own time).

The figure: a warm proxied `GET /v1/sessions/{id}/proxy/calendar/calendar/events` (the
session's token cached, as after its first call) through the real proxy handler
(`vault.handlers.proxy_api.handler`), over moto, to the bundled calendar API of the local
provider (a real resource server on loopback: it introspects every token at oidc-provider, so
the provider's own time is real work; the proxy reaches loopback because the rig's settings say
`egress_allow_loopback`, as local mode's do). As in bench/warm.py, the event and its proof are
made before the timer starts, and the time on the wire of the AWS requests is taken out; the
upstream exchange stays in (it is the provider's own time, plus the vault's HTTP client work).

The floor, interleaved call by call, is what the budget grants besides the 3 ms: the warm
retrieval's AWS calls and the provider call, each made with the least client work possible.
After each proxied call, (1) the same DynamoDB requests the proxy made for one call (recorded
from one call: the session's `Query` and the proof's jti `PutItem`) sent with a bare botocore
client (`bench.warm.BotocoreFloor`: the handler's client config, the same moto, the same clock,
the AWS wire's CPU taken out), and (2) the same provider request (method, URL, headers and body
exactly as the proxy sent them, recorded from one proxied call) made directly with a bare
urllib3 connection pool with keep-alive: the provider's own time. The floor of a call is the
sum of the two; the headline difference is the vault's compute over it. The difference over
the provider request alone (the floor without the DynamoDB calls) is reported beside it as
`difference_over_provider_ms`.

The differences are in CPU time of the calling thread (the vault's compute over bare clients',
immune to the provider's and the machine's noise: the headline, as the warm retrieval's compute
is), and in wall-clock time (what the agent waits more than a direct call to the provider,
including the AWS calls' client work and everything this shared machine's scheduler adds).
"""

from __future__ import annotations

import functools
import gc
import importlib
import statistics
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import urllib3

from agent_vault_local.events import LambdaContext
from bench.rig import GRANTED, Rig
from bench.timing import summary_ms, timed_call
from bench.warm import BotocoreFloor
from tests.support.apigw import build_event
from tests.support.harness import Vault
from vault.egress import Egress, UpstreamAnswer
from vault.routes import ROUTES, Route

NOT_MEASURED = "not measured: no proxy in this build"
TARGET_OVER_PROVIDER_MS = 3.0
PROXY_ROLE = "proxy-agent-role"
"""The rig's config (tests/support/harness.test_config): an agent with `proxy` delivery at the
calendar provider, allowed to GET anything under /calendar."""
PROVIDER = "calendar"
UPSTREAM_PATH = "calendar/events"


def proxy_route() -> Route | None:
    """The proxy's route, if this build has one (a path segment named `proxy`)."""
    return next((r for r in ROUTES if "proxy" in r.path.split("/")), None)


class Recorded:
    """The provider request the proxy sent (recorded from one call of `Egress.send`)."""

    def __init__(self) -> None:
        self.method = ""
        self.url = ""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.answer: UpstreamAnswer | None = None

    def record(self, egress: Egress) -> Any:
        """Wrap `egress.send` for one call; returns the undo."""
        original = egress.send

        def send(method: str, url: str, *, headers: Any, body: bytes, **kw: Any) -> UpstreamAnswer:
            self.method, self.url, self.headers, self.body = method, url, dict(headers), body
            self.answer = original(method, url, headers=headers, body=body, **kw)
            return self.answer

        egress.send = send  # type: ignore[method-assign]
        return lambda: vars(egress).pop("send", None)


class DirectFloor:
    """The same provider request with a bare urllib3 pool (keep-alive), no vault in between."""

    def __init__(self, recorded: Recorded) -> None:
        parts = urlsplit(recorded.url)
        self.pool = urllib3.HTTPConnectionPool(
            parts.hostname or "", parts.port or 80, maxsize=1, retries=False
        )
        self.method = recorded.method
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.headers = {**recorded.headers, "Host": parts.netloc}
        self.body = recorded.body or None
        self.cpu: list[int] = []
        self.wall: list[int] = []
        self.bytes = 0

    def once(self) -> None:
        started_cpu = time.thread_time_ns()
        started = time.perf_counter_ns()
        response = self.pool.urlopen(
            self.method,
            self.target,
            body=self.body,
            headers=self.headers,
            redirect=False,
            preload_content=True,
            decode_content=False,
        )
        elapsed = time.perf_counter_ns() - started
        elapsed_cpu = time.thread_time_ns() - started_cpu
        if response.status != 200:
            raise RuntimeError(f"the direct provider call failed: {response.status}")
        self.bytes = len(response.data)
        self.cpu.append(elapsed_cpu)
        self.wall.append(elapsed)

    def reset(self) -> None:
        self.cpu.clear()
        self.wall.clear()


class Breakdown:
    """Where the proxied call's compute goes: wrappers around its steps recording each step's
    thread CPU time minus the AWS wire's CPU inside it (a separate, untimed pass)."""

    STEPS: tuple[tuple[str, str, str], ...] = (
        ("vault.proxy", "forward", "route: proxy.forward (all of the flow)"),
        ("vault.proofs", "verify_proof", "proof verification (joserfc, ES256)"),
        ("vault.store.sessions", "SessionRepository.bundle", "DynamoDB Query + mapping"),
        ("vault.store.replay", "ReplayRepository.remember", "DynamoDB PutItem (jti)"),
        ("vault.tokens", "open_token", "data-key cache + AES-GCM decrypt"),
        ("vault.egress", "Egress.send", "the provider exchange (urllib3, this thread's CPU)"),
        ("vault.audit", "_record", "audit log line (+ metric when not allowed)"),
        ("vault.proxy", "path_segments", "path checks"),
        ("vault.proxy", "check_request_policy", "request policy"),
        ("vault.proxy", "_returned_headers", "response headers"),
        ("vault.handlers.proxy_api", "_request", "event to ProxyRequest"),
    )

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.samples: dict[str, list[int]] = {label: [] for _, _, label in self.STEPS}
        self._current: Counter[str] = Counter()
        self._undo: list[Any] = []

    def __enter__(self) -> Breakdown:
        for module_name, attr, label in self.STEPS:
            owner: Any = importlib.import_module(module_name)
            name = attr
            if "." in attr:
                cls_name, name = attr.split(".")
                owner = getattr(owner, cls_name)
            original = getattr(owner, name)
            setattr(owner, name, self._wrap(original, label))
            self._undo.append((owner, name, original))
        return self

    def __exit__(self, *_: Any) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def _wrap(self, original: Any, label: str) -> Any:
        io_clock, current = self.rig.io_clock, self._current

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wire = io_clock.elapsed_cpu_ns()
            started = time.thread_time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time_ns() - started
                current[label] += spent - (io_clock.elapsed_cpu_ns() - wire)

        return timed

    def collect(self) -> None:
        for label in self.samples:
            self.samples[label].append(self._current.get(label, 0))
        self._current.clear()

    def medians_ms(self, compute: list[int]) -> dict[str, float]:
        med = {label: statistics.median(v) / 1e6 for label, v in self.samples.items()}
        route = med.pop("route: proxy.forward (all of the flow)")
        out = dict(sorted(med.items(), key=lambda kv: -kv[1]))
        inner = sum(v for k, v in med.items() if k != "event to ProxyRequest")
        out["rest of proxy.forward (decision context, config lookups, token choice, URL)"] = max(
            0.0, route - inner
        )
        total = statistics.median(compute) / 1e6
        out["router + decorator (routing, logger context, EMF flush)"] = max(
            0.0, total - route - med["event to ProxyRequest"]
        )
        out["total (median compute, CPU)"] = total
        return {k: round(v, 3) for k, v in out.items()}


def _proxy_agent(vault: Vault) -> Any:
    agent = vault.agent(PROXY_ROLE)
    started = agent.start_session(vault.user("alice"))
    if started.status != 201:
        raise RuntimeError(f"proxy agent's session failed: {started.status} {started.body}")
    bound = vault.connect(agent, scopes=GRANTED)
    if bound.status != 200:
        raise RuntimeError(f"proxy agent's consent failed: {bound.status} {bound.body}")
    return agent


def _api_requests(rig: Rig) -> int:
    return sum(int(v) for v in rig.server.stats().get("api_requests", {}).values())


def _token_requests(rig: Rig) -> int:
    return sum(int(v) for v in rig.server.stats()["token_requests"].values())


class Run:
    """N warm proxied calls through the real handler (each followed by the floor's call once,
    if given: interleaved, so a change of load on the shared machine skews both alike)."""

    def __init__(self, rig: Rig, agent: Any, route: Route) -> None:
        self.rig, self.agent = rig, agent
        module, _, name = route.handler.rpartition(".")
        self.handler = getattr(importlib.import_module(module), name)
        self.path = f"/v1/sessions/{agent.session_id}/proxy/{PROVIDER}/{UPSTREAM_PATH}"

    def event(self) -> dict[str, Any]:
        return build_event(
            "GET",
            self.path,
            headers={"DPoP": self.agent.proof("GET", self.path)},
            principal_arn=self.agent.arn,
        )

    def __call__(
        self,
        n: int,
        floor: DirectFloor | None = None,
        collect: Any = None,
        aws_floor: BotocoreFloor | None = None,
    ) -> dict[str, Any]:
        rig = self.rig
        rig.vault.counter.reset()
        rig.logs.reset()
        api_before, tokens_before = _api_requests(rig), _token_requests(rig)
        cpu: list[int] = []
        wall: list[int] = []
        wire: list[int] = []
        body_bytes = 0
        handler = self.handler
        for _ in range(n):
            event = self.event()  # proof signed here, before the timer
            call = timed_call(handler, event, LambdaContext(), rig.io_clock, "proxied call")
            body_bytes = call.body_bytes
            cpu.append(call.compute_ns)
            wall.append(call.compute_wall_ns)
            wire.append(call.wire_ns)
            if collect is not None:
                collect()
            if aws_floor is not None:
                aws_floor.once()
            if floor is not None:
                floor.once()
        counts = Counter(rig.vault.counter.counts)
        direct = len(floor.cpu) if floor is not None else 0
        return {
            "n": n,
            "cpu_ns": cpu,
            "wall_ns": wall,
            "aws_wire_ns": wire,
            "aws_requests": {k: v / n for k, v in sorted(counts.items())},
            # the calendar API's answered calls, the floor's direct ones taken out
            "provider_api_requests": (_api_requests(rig) - api_before - direct) / n,
            "provider_token_requests": (_token_requests(rig) - tokens_before) / n,
            "log_bytes": rig.logs.bytes / n,
            "log_lines": rig.logs.lines / n,
            "response_bytes": body_bytes,
        }


def measure_proxied_call(rig: Rig, route: Route, *, requests: int = 500) -> dict[str, Any]:
    """A warm proxied GET against the same provider request made directly, in the same run."""
    agent = _proxy_agent(rig.vault)
    run = Run(rig, agent, route)

    # the first call mints the session's token; one more records the request the proxy sends
    first = run(1)
    recorded = Recorded()
    undo = recorded.record(rig.vault.services.egress)
    try:
        run(1)
    finally:
        undo()
    if recorded.answer is None or recorded.answer.status != 200:
        raise RuntimeError("the proxied call did not reach the provider's API")
    floor = DirectFloor(recorded)
    # the DynamoDB requests of one proxied call, exactly as the handler made them (not timed)
    rig.sizes.reset()
    rig.sizes.enabled = True
    run(1)
    rig.sizes.enabled = False
    aws_floor = BotocoreFloor(rig, list(rig.sizes.requests))
    # warm-up: imports, lazy clients, pools, the cache
    run(min(100, requests), floor=floor, aws_floor=aws_floor)
    floor.reset()
    aws_floor.reset()

    gc.collect()
    timed = run(requests, floor=floor, aws_floor=aws_floor)
    if timed["provider_token_requests"] or timed["aws_requests"].get("kms:Decrypt"):
        raise RuntimeError(f"the proxied calls were not warm: {timed['aws_requests']}")
    floor_ops = {k: v / requests for k, v in sorted(aws_floor.counter.counts.items())}
    handler_ddb = {k: v for k, v in timed["aws_requests"].items() if k.startswith("dynamodb:")}
    if floor_ops != handler_ddb:
        raise RuntimeError(f"the floor sent {floor_ops}, the proxy {handler_ddb}")

    # item sizes and request units (hooks on, not timed)
    rig.sizes.reset()
    rig.sizes.enabled = True
    sized = run(50)
    rig.sizes.enabled = False
    n = sized["n"]
    by_table = {
        op: {t: round(c / n, 3) for t, c in tables.items()}
        for op, tables in rig.sizes.by_table.items()
    }

    with Breakdown(rig) as breakdown:
        parts = run(min(300, requests), collect=breakdown.collect)
        where = breakdown.medians_ms(parts["cpu_ns"])

    cpu = summary_ms(timed["cpu_ns"])
    wall = summary_ms(timed["wall_ns"])
    provider_cpu = summary_ms(floor.cpu)
    floor_wall = summary_ms(floor.wall)
    both = [a + b for a, b in zip(aws_floor.compute, floor.cpu, strict=True)]
    both_wall = [a + b for a, b in zip(aws_floor.compute_wall, floor.wall, strict=True)]
    floor_cpu = summary_ms(both)
    paired = [a - b for a, b in zip(timed["cpu_ns"], both, strict=True)]
    paired_provider = [a - b for a, b in zip(timed["cpu_ns"], floor.cpu, strict=True)]
    paired_wall = [a - b for a, b in zip(timed["wall_ns"], both_wall, strict=True)]
    aws: dict[str, float] = {k: round(v, 3) for k, v in timed["aws_requests"].items()}

    def by_service(service: str) -> float:
        return round(sum(v for k, v in aws.items() if k.startswith(service + ":")), 3)

    return {
        "what": f"warm GET {route.route_key} (the session's token cached) through "
        f"{route.handler} over moto, to the bundled calendar API on loopback "
        f"(GET /{UPSTREAM_PATH}: introspects the token at oidc-provider), AWS wire excluded",
        "floor_what": "the same DynamoDB requests as one proxied call ("
        + " + ".join(aws_floor.operations)
        + ") with a bare botocore client (runtime.AWS_CLIENTS) against the same moto, plus the "
        "same provider request (method, URL, headers, body as the proxy sent it) with a bare "
        "urllib3 pool (keep-alive); both after each proxied call (interleaved), same clocks",
        "requests": timed["n"],
        "figure_ms": cpu["median"],
        "floor_ms": floor_cpu["median"],
        "difference_ms": round(cpu["median"] - floor_cpu["median"], 3),
        "floor_compute_ms": floor_cpu,
        "floor_dynamodb_compute_ms": summary_ms(aws_floor.compute),
        "floor_operations": aws_floor.operations,
        "provider_floor_ms": provider_cpu["median"],
        "difference_over_provider_ms": round(cpu["median"] - provider_cpu["median"], 3),
        "difference_over_provider_paired_ms_median": round(
            statistics.median(paired_provider) / 1e6, 3
        ),
        "clock": "CPU time of the calling thread (time.thread_time_ns), the AWS wire's CPU "
        "taken out: the vault's compute (its HTTP client work included) over bare clients'; "
        "the provider runs in its own process and is not in it",
        "vault_compute_ms": cpu,
        "bare_client_compute_ms": provider_cpu,
        "difference_paired_ms_median": round(statistics.median(paired) / 1e6, 3),
        "proxied_wall_ms": wall,
        "provider_own_time_ms": floor_wall,
        "provider_own_time_ms_median": floor_wall["median"],
        "proxied_wall_ms_median": wall["median"],
        "floor_wall_ms": summary_ms(both_wall),
        "difference_wall_ms": round(wall["median"] - summary_ms(both_wall)["median"], 3),
        "difference_wall_over_provider_ms": round(wall["median"] - floor_wall["median"], 3),
        "difference_wall_paired_ms_median": round(statistics.median(paired_wall) / 1e6, 3),
        "where_time_goes_ms": where,
        "aws_wire_ms_median_in_moto": round(statistics.median(timed["aws_wire_ns"]) / 1e6, 3),
        "target_over_provider_ms": TARGET_OVER_PROVIDER_MS,
        "aws_requests_by_operation": aws,
        "aws_requests_per_call": round(sum(aws.values()), 3),
        "dynamodb_requests": by_service("dynamodb"),
        "kms_requests": by_service("kms"),
        "provider_api_requests": round(timed["provider_api_requests"], 3),
        "provider_token_requests": round(timed["provider_token_requests"], 3),
        "first_call_aws_requests": {k: round(v, 3) for k, v in first["aws_requests"].items()},
        "aws_requests_by_table": by_table,
        "vault_table": rig.vault.services.settings.table_name,
        "dynamodb_read_units": round(rig.sizes.read_units / n, 3),
        "dynamodb_write_units": round(rig.sizes.write_units / n, 3),
        "log_bytes_per_request": round(timed["log_bytes"], 1),
        "log_lines_per_request": round(timed["log_lines"], 2),
        "response_bytes": timed["response_bytes"],
        "upstream_response_bytes": floor.bytes,
        "caller_arn": agent.arn,
    }


def measure(rig: Rig, *, requests: int = 500) -> dict[str, Any]:
    route = proxy_route()
    if route is None:
        return {"measured": False, "note": NOT_MEASURED}
    return {
        "measured": True,
        "route": route.route_key,
        **measure_proxied_call(rig, route, requests=requests),
    }
