"""The cost model: counted requests, measured bytes and times, list prices (bench/prices.py).

Per million warm token retrievals, each line is (how many per retrieval) x (unit price), with the
"how many" measured where it can be (AWS requests and DynamoDB request units counted by the
botocore hook, log bytes written by Powertools, compute timed in the handler) and an explicit
assumption where it cannot (the AWS round trips, a CloudTrail record's size, X-Ray sampling).
Idle monthly: the default deployment (config/example.json) with no traffic, from the facts
bench/deployment.py reads out of the CDK code.

Each per-request figure is priced for both agent endpoints from the same counted calls
(`ENDPOINTS`): the default, API Gateway's HTTP API (its request, its access-log line), and
`agent_endpoint: "function_url"` (the function's own IAM-authorized URL: neither; Lambda does
not charge for function URLs).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

from bench.cold import LAMBDA_EXECUTION_ENV
from bench.prices import HOURS_PER_MONTH, PRICES, price

ASSUMPTIONS: dict[str, Any] = {
    "aws_round_trip_ms": {"dynamodb": 5.0, "kms": 8.0, "secretsmanager": 10.0},
    "aws_round_trip_note": "in-Region round trip per AWS request on a kept-alive HTTPS "
    "connection (DynamoDB single-digit ms); moto's emulation time is "
    "not a round trip, so the measured wire time is replaced by these",
    "vcpu_full_at_mb": 1769,
    "cpu_note": "a Lambda function gets memory/1769 MB of a vCPU, so CPU-bound work measured "
    "on one full core here is scaled by 1769/memory (an upper bound: short bursts "
    "can run faster), and nothing is credited for Graviton vs this machine",
    "cloudtrail_record_bytes": 1500,
    "cloudtrail_note": "size of one data-event record (a Lambda Invoke) as delivered to "
    "CloudWatch Logs by the trail (send_to_cloud_watch_logs); not measurable "
    "here, an estimate",
    "xray_sampled_fraction": 0.05,
    "xray_note": "Lambda active tracing with the default sampling rule (1 request/s, then 5%); "
    "the first 100,000 traces a month are free (not counted)",
    "cold_start_per_retrievals": 1000,
    "cold_start_note": "one cold start (INIT, billed since 2025-08-01) per 1,000 warm "
    "retrievals; its duration is the measured handler import without "
    "bytecode (as the bundle ships) plus building the services, scaled "
    "like the compute",
    "idle_nat_gb_per_month": 1.0,
    "idle_flow_log_gb_per_month": 0.05,
    "idle_trail_log_gb_per_month": 0.1,
    "container_insights_metrics": 20,
    "idle_note": "idle traffic through the NAT (image pulls, log shipping), the flow-log and "
    "trail records it makes, and Container Insights' custom metrics for one "
    "cluster and one service are estimates; everything else is list price x "
    "count from the CDK code",
    "month_hours": HOURS_PER_MONTH,
    "provider_api_ms": 100.0,
    "provider_api_note": "a proxied call's function waits for the provider's API, and Lambda "
    "bills that wait as duration: 100 ms per call is assumed for a public API (the bench's own "
    "provider is on loopback, so its measured time is no guide); the cost line per further "
    "100 ms is reported beside the total",
    "proxy_excluded": "data transfer: the request bytes the proxy sends to the provider over "
    "the internet and the answer returned through API Gateway to the agent (AWS data transfer "
    "out, and NAT gateway processing where the agent's task reaches the API through one), "
    "both proportional to the bodies the agent sends and gets; API Gateway meters HTTP API "
    "requests per 512 KB, so an answer over 512 KB is priced as more than one request (the "
    "measured answer is priced as it is)",
}


TOKENS_ROUTE = "POST /v1/sessions/{session_id}/tokens"
APIGW_METERING_BYTES = 512 * 1024
API_GATEWAY = "api_gateway"
FUNCTION_URL = "function_url"
ENDPOINTS = (API_GATEWAY, FUNCTION_URL)
"""The config's `agent_endpoint` values: how agents reach the agent API and the proxy."""


def access_log_bytes(
    log_format: str, *, caller_arn: str, response_bytes: int, route_key: str = TOKENS_ROUTE
) -> int:
    """One API Gateway access-log line in the stage's format, with typical values."""
    values = {
        "$context.requestId": "JkBq4gKhIAMEV3w=",
        "$context.requestTimeEpoch": "1764331200000",
        "$context.routeKey": route_key,
        "$context.status": "200",
        "$context.protocol": "HTTP/1.1",
        "$context.responseLength": str(response_bytes),
        "$context.responseLatency": "31",
        "$context.integrationLatency": "29",
        "$context.integrationErrorMessage": "-",
        "$context.authorizer.error": "-",
        "$context.identity.sourceIp": "10.0.12.34",
        "$context.identity.userArn": caller_arn,
    }
    line = log_format
    for key in sorted(values, key=len, reverse=True):
        line = line.replace(key, values[key])
    json.loads(line)  # still a JSON object
    return len(line.encode()) + 1


def per_million(
    warm: dict[str, Any],
    facts: dict[str, Any],
    cold: dict[str, Any],
    *,
    caller_arn: str,
    response_bytes: int,
    route_key: str = TOKENS_ROUTE,
    init_cpu_ms: float | None = None,
    provider_wait_ms: float = 0.0,
    endpoint: str = API_GATEWAY,
) -> dict[str, Any]:
    """Per million requests like `warm` (its counted AWS requests, request units, log bytes and
    median compute). `init_cpu_ms`: the cold start's CPU time (default: the agent API's import
    without bytecode plus building the services); `provider_wait_ms`: time the function waits
    on a provider per request (the proxy), billed as duration; `endpoint`: how the agent
    reaches the function (`ENDPOINTS`): through API Gateway (a request and an access-log line
    each), or at its function URL (neither)."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint {endpoint!r} is not one of {ENDPOINTS}")
    gateway = endpoint == API_GATEWAY
    a = ASSUMPTIONS
    memory_gb = facts["lambda_memory_mb"] / 1024
    arch = facts["lambda_architecture"]
    gb_s = price("lambda_gb_s_arm64" if arch == "arm64" else "lambda_gb_s_x86_64")
    scale = a["vcpu_full_at_mb"] / facts["lambda_memory_mb"]
    requests = warm["aws_requests_by_operation"]
    by_service: dict[str, float] = {}
    for key, count in requests.items():
        service = key.split(":")[0]
        by_service[service] = by_service.get(service, 0.0) + count
    round_trips = sum(n * a["aws_round_trip_ms"].get(s, 10.0) for s, n in by_service.items())
    compute_ms = warm["compute_ms_median"] * scale
    billed_ms = math.ceil(compute_ms + round_trips + provider_wait_ms)
    apigw_requests = max(1, math.ceil(response_bytes / APIGW_METERING_BYTES))

    vault_table = warm.get("vault_table", "")
    data_events = 0.0
    for selector in facts["data_event_selectors"]:
        fields = selector["fields"]
        if fields.get("eventCategory") != ["Data"]:
            continue
        kind = (fields.get("resources.type") or [""])[0]
        if kind == "AWS::Lambda::Function":
            data_events += 1  # every invocation of the agent API function
        elif kind == "AWS::DynamoDB::Table":
            writes_only = fields.get("readOnly") == ["false"]
            for key, count in requests.items():
                service, operation = key.split(":")
                if service != "dynamodb":
                    continue
                table = warm["aws_requests_by_table"].get(key, {})
                on_vault = table.get(vault_table, 0) if table else count
                is_write = operation in (
                    "PutItem",
                    "UpdateItem",
                    "DeleteItem",
                    "TransactWriteItems",
                    "BatchWriteItem",
                )
                if on_vault and (is_write or not writes_only):
                    data_events += on_vault

    trail_log_bytes = (
        data_events * a["cloudtrail_record_bytes"] if facts["trail_to_cloudwatch_logs"] else 0.0
    )
    access_bytes = (
        access_log_bytes(
            facts["access_log_format"],
            caller_arn=caller_arn,
            response_bytes=response_bytes,
            route_key=route_key,
        )
        if gateway
        else 0
    )
    lambda_log_bytes = warm["log_bytes_per_request"]
    log_gb = (lambda_log_bytes + trail_log_bytes) / 1e9
    access_infrequent = facts.get("access_log_class") == "INFREQUENT_ACCESS"
    access_price = price("logs_ingest_gb_infrequent" if access_infrequent else "logs_ingest_gb")

    cold_ms = init_cpu_ms
    if cold_ms is None:
        cold_ms = (
            cold.get("no_bytecode", {}).get("agent_api_cpu_ms")
            or cold.get("cold_import_cpu_ms", {}).get("agent_api", 0.0)
        ) + cold.get("services_build_cpu_ms", 0.0)
    init_gb_s = cold_ms * scale / 1000 * memory_gb

    kms_requests = by_service.get("kms", 0.0)
    lines = {
        f"API Gateway HTTP API request (x{apigw_requests})": apigw_requests
        * price("apigw_http_request"),
        "Lambda request": 1 * price("lambda_request"),
        f"Lambda duration ({billed_ms} ms billed at {facts['lambda_memory_mb']} MB {arch}"
        + (f", {provider_wait_ms:g} ms of it the provider" if provider_wait_ms else "")
        + ")": (billed_ms / 1000 * memory_gb * gb_s),
        f"Lambda INIT (1 per {a['cold_start_per_retrievals']} retrievals, "
        f"{cold_ms * scale / 1000:.1f} s)": init_gb_s * gb_s / a["cold_start_per_retrievals"],
        f"DynamoDB on-demand ({warm['dynamodb_read_units']:g} RRU + "
        f"{warm['dynamodb_write_units']:g} WRU)": warm["dynamodb_read_units"]
        * price("dynamodb_rru")
        + warm["dynamodb_write_units"] * price("dynamodb_wru"),
        f"KMS ({kms_requests:g} requests)": kms_requests * price("kms_request"),
        f"CloudTrail data events ({data_events:g}: '{facts['audit_data_events']}' selectors)": (
            data_events * price("cloudtrail_data_event")
        ),
        f"CloudWatch Logs ingestion ({lambda_log_bytes:.0f} B function + {trail_log_bytes:.0f} B"
        " trail)": log_gb * price("logs_ingest_gb"),
        f"CloudWatch Logs ingestion, access log ({access_bytes} B, "
        f"{'Infrequent Access' if access_infrequent else 'Standard'} class)": access_bytes
        / 1e9
        * access_price,
        f"X-Ray traces ({a['xray_sampled_fraction']:.0%} sampled)": (
            a["xray_sampled_fraction"] * price("xray_trace")
            if facts.get("lambda_tracing_active")
            else 0.0
        ),
    }
    if not gateway:  # at the function URL: no API Gateway request, no access log
        lines = {
            k: v
            for k, v in lines.items()
            if not k.startswith(("API Gateway", "CloudWatch Logs ingestion, access log"))
        }
    million = {k: round(v * 1e6, 4) for k, v in lines.items()}
    total = round(sum(lines.values()) * 1e6, 3)
    agentcore = round(price("agentcore_identity_request") * 1e6, 2)
    return {
        "endpoint": endpoint,
        "cost_per_million_usd": total,
        "lines_per_million_usd": million,
        "agentcore_cost_per_million_usd": agentcore,
        "ratio_to_agentcore": round(total / agentcore, 3),
        "target_ratio": 0.2,
        "billed_ms": billed_ms,
        "compute_ms_scaled": round(compute_ms, 2),
        "aws_round_trip_allowance_ms": round(round_trips, 1),
        "cpu_scale": round(scale, 2),
        "data_events_per_retrieval": data_events,
        "log_bytes_per_retrieval": {
            "function": round(lambda_log_bytes),
            "access_log": access_bytes,
            "trail": round(trail_log_bytes),
        },
    }


def per_million_proxied(
    proxied: dict[str, Any],
    facts: dict[str, Any],
    cold: dict[str, Any],
    *,
    endpoint: str = API_GATEWAY,
) -> dict[str, Any]:
    """Per million warm proxied calls, priced as a warm retrieval is (`per_million`): the proxy
    function's memory from the stack, its counted AWS requests, request units and log bytes, its
    measured compute, its own cold start, and the provider's time billed as duration (assumed,
    `ASSUMPTIONS["provider_api_ms"]`; the line per further 100 ms is given beside it)."""
    a = ASSUMPTIONS
    memory_mb = facts["lambda_memory_mb_by_function"]["ProxyApi"]
    proxy_facts = {**facts, "lambda_memory_mb": memory_mb}
    # the cold start: the proxy's import (bytecode as measured) plus the compile cost the
    # bundle's missing bytecode adds (measured for the agent API), plus building the services
    imports = cold.get("cold_import_cpu_ms", {})
    no_bytecode = cold.get("no_bytecode", {})
    compile_cpu = max(0.0, no_bytecode.get("agent_api_cpu_ms", 0.0) - imports.get("agent_api", 0.0))
    init_cpu_ms = (
        imports.get("proxy_api", imports.get("agent_api", 0.0))
        + (compile_cpu if no_bytecode else 0.0)
        + cold.get("services_build_cpu_ms", 0.0)
    )
    as_warm = {
        **proxied,
        "compute_ms_median": proxied["figure_ms"],
    }
    common: dict[str, Any] = {
        "caller_arn": proxied["caller_arn"],
        "response_bytes": proxied["response_bytes"],
        "route_key": proxied["route"],
        "init_cpu_ms": init_cpu_ms,
        "endpoint": endpoint,
    }
    priced = per_million(
        as_warm, proxy_facts, cold, provider_wait_ms=a["provider_api_ms"], **common
    )
    own = per_million(as_warm, proxy_facts, cold, **common)
    gb_s = price(
        "lambda_gb_s_arm64" if facts["lambda_architecture"] == "arm64" else "lambda_gb_s_x86_64"
    )
    return {
        **priced,
        "lambda_memory_mb": memory_mb,
        "provider_api_ms_assumed": a["provider_api_ms"],
        "cost_per_million_usd_without_provider_wait": own["cost_per_million_usd"],
        "billed_ms_without_provider_wait": own["billed_ms"],
        "per_100_ms_of_provider_time_usd": round(0.1 * memory_mb / 1024 * gb_s * 1e6, 3),
        "init_cpu_ms": round(init_cpu_ms, 1),
        "excluded": a["proxy_excluded"],
    }


def idle_monthly(facts: dict[str, Any], *, egress: str | None = None) -> dict[str, Any]:
    """The deployment's cost a month with no traffic; `egress`: the tasks' way out, priced as
    that `agent_egress` deploys it (default: the config's)."""
    a = ASSUMPTIONS
    hours = HOURS_PER_MONTH
    egress = egress or facts["agent_egress"]
    x86 = facts["fargate_architecture"].upper().startswith("X86")
    vcpu = price("fargate_vcpu_hour_x86" if x86 else "fargate_vcpu_hour_arm")
    gb = price("fargate_gb_hour_x86" if x86 else "fargate_gb_hour_arm")
    task_hour = facts["fargate_cpu_units"] / 1024 * vcpu + facts["fargate_memory_mib"] / 1024 * gb
    nats = facts["nat_gateways"] if egress == "nat_gateway" else 0
    task_ips = facts["fargate_tasks"] if egress == "public_ip" else 0
    lines = {
        f"NAT gateway x{nats}": nats * price("nat_hour") * hours,
        f"public IPv4 of the NAT gateway x{nats}": nats * price("public_ipv4_hour") * hours,
        f"NAT data processed ({a['idle_nat_gb_per_month']} GB, estimate)": (
            a["idle_nat_gb_per_month"] * price("nat_gb") if nats else 0.0
        ),
        f"public IPv4 of the agent tasks x{task_ips}": task_ips * price("public_ipv4_hour") * hours,
        f"Fargate: {facts['fargate_tasks']} sample-agent task ({facts['fargate_cpu_units']} CPU "
        f"units, {facts['fargate_memory_mib']} MiB, {facts['fargate_architecture']})": facts[
            "fargate_tasks"
        ]
        * task_hour
        * hours,
        f"Container Insights (~{a['container_insights_metrics']} metrics, estimate)": (
            a["container_insights_metrics"] * price("custom_metric_month")
            if facts["container_insights"]
            else 0.0
        ),
        f"KMS keys x{facts['kms_keys']}": facts["kms_keys"] * price("kms_key_month"),
        f"Secrets Manager secrets x{facts['secrets']}": facts["secrets"] * price("secret_month"),
        f"CloudWatch alarms x{facts['alarms']}": (facts["alarms"] or 0) * price("alarm_month"),
        "VPC flow logs + trail management events to CloudWatch Logs (estimate)": (
            (a["idle_flow_log_gb_per_month"] if facts["flow_logs"] else 0.0)
            + a["idle_trail_log_gb_per_month"]
        )
        * price("logs_ingest_gb"),
        "CloudTrail management events (first copy)": 0.0,
        "Lambda, API Gateway, DynamoDB on-demand, X-Ray, SNS, SQS, EventBridge at rest": 0.0,
    }
    total = round(sum(lines.values()), 2)
    return {
        "agent_egress": egress,
        "idle_monthly_usd": total,
        "lines_usd": {k: round(v, 2) for k, v in lines.items()},
        "nat_share": round(
            (lines[f"NAT gateway x{nats}"] + lines[f"public IPv4 of the NAT gateway x{nats}"])
            / total,
            3,
        )
        if total
        else 0.0,
    }


SNAPSTART_FUNCTIONS = ("AgentApi", "ProxyApi", "Callback", "AdminApi")
"""The functions a caller waits on (the reaper works for nobody waiting)."""


def snapstart(priced: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """Lambda SnapStart for Python, priced, not deployed (DESIGN.md: an option to document and
    cost): a cold start becomes a restore, billed per GB restored, in place of the INIT line;
    each function's snapshot is billed per GB-second cached, whether or not it is called."""
    a = ASSUMPTIONS
    memory_by_function = facts["lambda_memory_mb_by_function"]
    agent_gb = memory_by_function["AgentApi"] / 1024
    init = next(v for k, v in priced["lines_per_million_usd"].items() if "INIT" in k)
    restores_per_million = 1e6 / a["cold_start_per_retrievals"]
    restore = restores_per_million * agent_gb * price("lambda_snapstart_restore_gb")
    seconds = HOURS_PER_MONTH * 3600
    cache = {
        name: memory_by_function[name] / 1024 * seconds * price("lambda_snapstart_cache_gb_s")
        for name in SNAPSTART_FUNCTIONS
        if name in memory_by_function
    }
    return {
        "deployed": False,
        "functions": list(cache),
        "restore_per_million_usd": round(restore, 4),
        "init_per_million_usd_replaced": round(init, 4),
        "cost_per_million_usd": round(priced["cost_per_million_usd"] - init + restore, 3),
        "cache_monthly_usd_by_function": {k: round(v, 2) for k, v in cache.items()},
        "cache_monthly_usd": round(sum(cache.values()), 2),
        "note": "one restore per cold start (1 per "
        f"{a['cold_start_per_retrievals']} retrievals) at the agent API's memory, in place of "
        "its INIT (billed once per published version instead); one published version per "
        "function kept (older versions' snapshots are billed until deleted); restore latency "
        "cannot be measured here",
    }


def prices_used() -> dict[str, float]:
    return {name: p.usd for name, p in PRICES.items()}


MEMORY_SIZES_MB = (128, 256, 384, 512, 768, 1024)
RSS_HEADROOM = 1.5
"""A memory size is counted as fitting if it holds the handler's measured peak RSS x 1.5
(the runtime's own process, the clients built at the first request, response bodies)."""
COLD_INIT_BOUND_S = 2.5
"""... and if its modelled cold start (the agent API's import with the bytecode the bundle ships,
plus building the services, at the size's CPU share) stays within this: below it the money
saved is cents per million and the price is seconds for the user who meets a cold start."""


def handler_rss_mb() -> float:
    """Peak RSS of a fresh interpreter that imported the agent API's handler (MB), as it would
    be at the end of INIT (before the first request builds its clients)."""
    # VmHWM: the peak RSS of this process's own memory (getrusage's ru_maxrss would carry the
    # parent's peak across fork + exec)
    code = (
        "import importlib, pathlib; importlib.import_module('vault.handlers.agent_api'); "
        "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines() "
        "if l.startswith('VmHWM:')][0].split()[1])"
    )
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "AWS_EXECUTION_ENV": LAMBDA_EXECUTION_ENV,  # as deployed: INIT with the GC paused
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return round(int(done.stdout.split()[-1]) / 1024, 1)


def memory_curve(
    warm: dict[str, Any],
    facts: dict[str, Any],
    cold: dict[str, Any],
    *,
    caller_arn: str,
    response_bytes: int,
    rss_mb: float,
) -> dict[str, Any]:
    """The cost per million warm retrievals and the warm latency at each memory size, from the
    same measured compute (`per_million` at that size: Lambda's CPU share is memory / 1769 MB
    of a vCPU, so CPU-bound time scales by 1769 / memory and the AWS round trips do not), and
    which sizes hold the handler's measured RSS with headroom and keep the modelled cold start
    within COLD_INIT_BOUND_S. The cheapest size that fits is the choice: at a CPU share
    proportional to memory, the GB-seconds of the CPU-bound part are the same at every size and
    only the waiting part costs more with more memory, so smaller is cheaper until the memory
    does not fit or the cold start grows past the bound."""
    init_cpu_ms = cold.get("cold_import_cpu_ms", {}).get("agent_api", 0.0) + cold.get(
        "services_build_cpu_ms", 0.0
    )
    rows = []
    for memory in MEMORY_SIZES_MB:
        priced = per_million(
            warm,
            {**facts, "lambda_memory_mb": memory},
            cold,
            caller_arn=caller_arn,
            response_bytes=response_bytes,
        )
        duration = next(v for k, v in priced["lines_per_million_usd"].items() if "duration" in k)
        init = next(v for k, v in priced["lines_per_million_usd"].items() if "INIT" in k)
        init_s = init_cpu_ms * ASSUMPTIONS["vcpu_full_at_mb"] / memory / 1000
        rows.append(
            {
                "memory_mb": memory,
                "fits": memory >= rss_mb * RSS_HEADROOM and init_s <= COLD_INIT_BOUND_S,
                "holds_rss": memory >= rss_mb * RSS_HEADROOM,
                "cold_init_s_scaled": round(init_s, 2),
                "billed_ms": priced["billed_ms"],
                "compute_ms_scaled": priced["compute_ms_scaled"],
                "lambda_duration_per_million_usd": duration,
                "lambda_init_per_million_usd": init,
                "cost_per_million_usd": priced["cost_per_million_usd"],
            }
        )
    fitting = [r for r in rows if r["fits"]]
    choice = min(fitting, key=lambda r: (r["cost_per_million_usd"], r["billed_ms"]))
    return {
        "rss_mb": rss_mb,
        "rss_headroom": RSS_HEADROOM,
        "cold_init_bound_s": COLD_INIT_BOUND_S,
        "rows": rows,
        "cheapest_fitting_mb": choice["memory_mb"],
        "deployed_mb": facts["lambda_memory_mb"],
    }
