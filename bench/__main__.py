"""`python -m bench [--quick] [--out PATH]`: measure, price, print a table, write bench/latest.json.

Order: the deployment facts and the bundle (a subprocess with the CDK code), cold-start imports
(fresh interpreters; done before the provider and moto start, to keep this machine quiet), then
the provider + moto rig for the warm path, the consent flow, refresh contention and the proxied
call, then the load run of local mode (its own processes), then the cost model. Beside each
figure, its floor measured in the same run and the ratio (or difference) to it: this machine is
shared, so absolute times are noisy and the ratios are what to compare.

`--quick` is the same with fewer iterations, no import variants and a smaller load run (a smoke
run). Only a full run with nothing skipped writes bench/latest.json and regenerates the README's
figures (bench/readme.py); other runs write to the temporary directory unless `--out` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import LATEST_JSON, REPO_ROOT, prepare_environment
from bench.load import LoadPlan
from bench.proxy import TARGET_OVER_PROVIDER_MS


@dataclass(frozen=True)
class Plan:
    requests: int
    uncached_requests: int
    breakdown_requests: int
    consent_iterations: int
    contention_levels: tuple[int, ...]
    proxy_requests: int
    import_runs: int
    import_variants: bool
    load: LoadPlan


FULL = Plan(
    requests=1000,
    uncached_requests=1000,
    breakdown_requests=500,
    consent_iterations=10,
    contention_levels=(1, 8, 32, 64),
    proxy_requests=500,
    import_runs=5,
    import_variants=True,
    load=LoadPlan(agents=8, requests=25, time_limit_s=120.0),
)
QUICK = Plan(
    requests=200,
    uncached_requests=100,
    breakdown_requests=100,
    consent_iterations=2,
    contention_levels=(1, 8),
    proxy_requests=100,
    import_runs=2,
    import_variants=False,
    load=LoadPlan(agents=4, requests=10, time_limit_s=60.0),
)


SCRATCH_JSON = Path(tempfile.gettempdir()) / "agent-vault-bench.json"
"""Where a quick or partial run writes (never bench/latest.json, which the README shows)."""


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.__stderr__, flush=True)


def _git_commit() -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def _machine() -> dict[str, Any]:
    calibration = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "calibration_sum_range_1000_us": round(calibration, 2),
        "calibration_note": "time of sum(range(1000)) on this machine; compare runs and "
        "machines by it (a recent desktop core does it in ~10 us)",
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every budget line of DESIGN.md the run measured: its id, the target, what was measured
    and whether it was met (None: not measured in this build)."""
    from bench.contention import TARGET_REQUESTS_PER_WAITER, TARGET_WAITERS_P50_RATIO

    warm = result["warm_retrieval"]
    floor = warm["floor"]
    rows: list[tuple[str, str, Any, bool | None]] = [
        (
            "warm_dynamodb",
            "warm: DynamoDB requests per retrieval <= 2",
            warm["dynamodb_requests"],
            warm["dynamodb_requests"] <= 2,
        ),
        (
            "warm_kms",
            "warm: KMS requests per retrieval = 0",
            warm["kms_requests"],
            warm["kms_requests"] == 0,
        ),
        (
            "warm_provider",
            "warm: provider calls per retrieval = 0",
            warm["provider_requests"],
            warm["provider_requests"] == 0,
        ),
        (
            "warm_compute",
            f"warm: compute <= {floor['target_ratio']}x its floor (same DynamoDB calls, bare "
            "botocore, same run)",
            f"{floor['ratio']}x ({floor['figure_ms_median']} / {floor['floor_ms_median']} ms)",
            floor["ratio"] <= floor["target_ratio"],
        ),
    ]
    cold = result.get("cold_start")
    if cold:
        limit = cold["target_difference_ms"]
        for name, h in cold["handlers"].items():
            rows.append(
                (
                    f"cold_{name}",
                    f"cold: import vault.handlers.{name} <= {limit:g} ms CPU over its floor "
                    f"({cold['floor_statement']})",
                    f"+{h['difference_cpu_ms']} ms CPU (importtime +{h['difference_ms']} ms)",
                    h["difference_cpu_ms"] <= limit,
                )
            )
    for level, row in (result.get("refresh_contention") or {}).items():
        rows.append(
            (
                f"contention_{level}_outcomes",
                f"contention: every one of {level} callers gets the token",
                ", ".join(f"{k} {v}" for k, v in row["outcomes"].items()),
                row["outcomes"] == {"ok": int(level)},
            )
        )
        rows.append(
            (
                f"contention_{level}_refreshes",
                f"contention: exactly 1 upstream refresh with {level} callers",
                row["upstream_refreshes"],
                row["upstream_refreshes"] == 1,
            )
        )
        per_waiter = row.get("dynamodb_requests_per_waiter_waiting")
        in_all = row.get("dynamodb_requests_per_waiter")
        if per_waiter is not None and in_all is not None:
            rows.append(
                (
                    f"contention_{level}_requests",
                    f"contention: <= {TARGET_REQUESTS_PER_WAITER} DynamoDB requests per waiting "
                    f"caller with {level} callers (besides the session read and the jti write "
                    "every token request makes)",
                    f"max {per_waiter['max']}, median {per_waiter['median']:g} (in all: max "
                    f"{in_all['max']})",
                    per_waiter["max"] <= TARGET_REQUESTS_PER_WAITER,
                )
            )
        if row.get("waiters"):
            ratio = row.get("waiters_p50_over_refresher")
            rows.append(
                (
                    f"contention_{level}_p50",
                    f"contention: waiters' p50 <= {TARGET_WAITERS_P50_RATIO}x the refresher's "
                    f"time with {level} callers",
                    f"{ratio}x ({row['waiters_p50_ms']} / {row['refresher_ms']} ms)"
                    if ratio is not None
                    else "no waiter got the token",
                    None if ratio is None else ratio <= TARGET_WAITERS_P50_RATIO,
                )
            )
    proxied = result.get("proxied_call")
    if proxied is not None and proxied.get("measured"):
        warm_ops = warm["aws_requests_by_operation"]
        rows.append(
            (
                "proxy_calls",
                "proxy: the warm retrieval's AWS requests plus 1 provider call, no refresh",
                ", ".join(f"{k} {v:g}" for k, v in proxied["aws_requests_by_operation"].items())
                + f"; provider {proxied['provider_api_requests']:g} (token endpoint "
                f"{proxied['provider_token_requests']:g})",
                proxied["aws_requests_by_operation"] == warm_ops
                and proxied["provider_api_requests"] == 1
                and proxied["provider_token_requests"] == 0,
            )
        )
    if proxied is not None:
        rows.append(
            (
                "proxy",
                f"proxy: vault compute <= {TARGET_OVER_PROVIDER_MS:g} ms over its floor (the same "
                "DynamoDB calls, bare botocore, + the provider call, bare urllib3; same run; CPU)",
                f"+{proxied['difference_ms']} ms ({proxied['figure_ms']} / {proxied['floor_ms']}"
                " ms)"
                if proxied.get("measured")
                else proxied.get("note"),
                (proxied["difference_ms"] <= TARGET_OVER_PROVIDER_MS)
                if proxied.get("measured")
                else None,
            )
        )
    load = result.get("load_run")
    if load is not None:
        rows.append(
            (
                "load_errors",
                f"load: 0 errors in {load['agents']} agents x {load['requests_per_agent']} "
                "requests over HTTP",
                load["errors"],
                load["errors"] == 0,
            )
        )
    curve = result.get("memory_curve")
    if curve is not None:
        rows.append(
            (
                "lambda_memory",
                "Lambda memory: the cheapest size (128-1024 MB, arm64) with a modelled cold start "
                f"<= {curve['cold_init_bound_s']:g} s that holds the handler's "
                f"measured RSS x {curve['rss_headroom']:g}",
                f"{curve['deployed_mb']} MB deployed; cheapest fitting "
                f"{curve['cheapest_fitting_mb']} MB (RSS {curve['rss_mb']} MB)",
                curve["deployed_mb"] == curve["cheapest_fitting_mb"],
            )
        )
    cost = result.get("cost_per_million_usd")
    if cost is not None:
        limit = result["agentcore_cost_per_million_usd"] / 5
        rows.append(
            (
                "cost",
                f"cost per million warm retrievals <= 1/5 of AgentCore (${limit:.2f}), "
                "default deployment (agents through API Gateway)",
                f"${cost:.2f}",
                cost <= limit,
            )
        )
        at_url = result.get("cost_per_million_usd_function_url")
        if at_url is not None:
            rows.append(
                (
                    "cost_function_url",
                    f"cost per million warm retrievals <= 1/5 of AgentCore (${limit:.2f}), "
                    'with agent_endpoint "function_url" (agents at the function URLs)',
                    f"${at_url:.2f}",
                    at_url <= limit,
                )
            )
    return [
        {"id": i, "target": t, "measured": m, "met": None if ok is None else bool(ok)}
        for i, t, m, ok in rows
    ]


# --- the table ---------------------------------------------------------------------------------


def _verdict(met: bool | None) -> str:
    return "N/A" if met is None else "MET" if met else "MISSED"


def _rows(title: str, rows: list[tuple[str, Any]]) -> list[str]:
    width = max([len(k) for k, _ in rows] + [10])
    return [f"\n{title}", "-" * len(title), *(f"  {k:<{width}}  {v}" for k, v in rows)]


def render(result: dict[str, Any]) -> str:
    warm = result["warm_retrieval"]
    floor = warm["floor"]
    lines: list[str] = [
        f"Agent Vault bench ({result['mode']}, {result['measured_at']}, "
        f"commit {result['meta'].get('commit')}, load "
        f"{result['meta']['load_average']}, calibration "
        f"{result['meta']['calibration_sum_range_1000_us']} us)"
    ]
    ops = ", ".join(f"{k} {v:g}" for k, v in warm["aws_requests_by_operation"].items())
    lines += _rows(
        f"Warm token retrieval ({warm['requests']} requests, real handler)",
        [
            ("AWS requests per retrieval", ops),
            (
                "DynamoDB / KMS / provider requests",
                f"{warm['dynamodb_requests']:g} / {warm['kms_requests']:g} / "
                f"{warm['provider_requests']:g}",
            ),
            (
                "DynamoDB request units",
                f"{warm['dynamodb_read_units']:g} RRU + {warm['dynamodb_write_units']:g} WRU",
            ),
            (
                "compute median / p95 (CPU, AWS wire excluded)",
                f"{warm['compute_ms_median']} / {warm['compute_ms_p95']} ms",
            ),
            (
                "FLOOR: the same DynamoDB calls, bare botocore (CPU)",
                f"{floor['compute_ms']['median']} / {floor['compute_ms']['p95']} ms "
                f"({', '.join(f'{k} {v:g}' for k, v in floor['requests_by_operation'].items())})",
            ),
            (
                "RATIO handler / floor (median; wall clock)",
                f"{floor['ratio']}x; {floor['ratio_wall']}x  (target <= {floor['target_ratio']}x)",
            ),
            (
                "compute median / p95 (wall clock)",
                f"{warm['compute_wall_ms']['median']} / {warm['compute_wall_ms']['p95']} ms",
            ),
            ("  of which botocore client-side (median)", f"{warm['botocore_client_ms_median']} ms"),
            (
                "KMS Decrypt per 1,000: with / without data-key cache",
                f"{warm['kms_decrypt_per_1000']['with_cache']:g} / "
                f"{warm['kms_decrypt_per_1000']['without_cache']:g}",
            ),
            (
                "compute without the cache (median)",
                f"{warm['compute_ms_without_cache']['median']} ms",
            ),
            (
                "log bytes per retrieval (audit line + EMF)",
                f"{warm['log_bytes_per_request']:g} B in {warm['log_lines_per_request']:g} lines",
            ),
        ],
    )
    lines += _rows(
        "Where the warm compute goes (median ms, wall clock, wire excluded)",
        list(warm["where_time_goes_ms"].items()),
    )
    if "cold_start" in result:
        cold = result["cold_start"]
        rows = [
            (
                f"FLOOR: {cold['floor_statement']} (CPU / importtime)",
                f"{cold['floor_cpu_ms']} / {cold['floor_ms']} ms",
            )
        ]
        for name, h in cold["handlers"].items():
            rows.append(
                (
                    f"vault.handlers.{name}: figure, DIFFERENCE",
                    f"{h['figure_cpu_ms']} / {h['figure_ms']} ms, +{h['difference_cpu_ms']} / +"
                    f"{h['difference_ms']} ms  (target CPU <= +{cold['target_difference_ms']:g})",
                )
            )
            if "with_first_request_cpu_ms" in h:
                rows.append(
                    (
                        "  + its first request, AWS excluded (CPU): figure, DIFFERENCE",
                        f"{h['with_first_request_cpu_ms']} ms, "
                        f"+{h['with_first_request_difference_cpu_ms']} ms",
                    )
                )
        rows.append(
            ("first request: build_services (CPU)", f"{result['services_build_cpu_ms']} ms")
        )
        libs = result.get("libraries_floor")
        if libs:
            rows.append(
                (
                    "the libraries alone (pydantic, joserfc, AES-GCM) over the floor (CPU)",
                    f"+{libs['over_floor_cpu_ms']} ms; the handlers' own code on top: "
                    + ", ".join(
                        f"{k} {v:+}" for k, v in libs["handlers_over_libraries_cpu_ms"].items()
                    )
                    + " ms",
                )
            )
        pause = result.get("init_gc_pause")
        if pause:
            rows.append(
                (
                    "agent_api over the floor, GC paused at INIT (as deployed) / GC running",
                    f"+{pause['paused_agent_api_over_floor_cpu_ms']} / "
                    f"+{pause['agent_api_over_floor_cpu_ms']} ms; with its first request +"
                    f"{pause['paused_agent_api_with_first_request_over_floor_cpu_ms']} / +"
                    f"{pause['agent_api_with_first_request_over_floor_cpu_ms']} ms",
                )
            )
        extra = result.get("agent_api_extra_by_package_ms", {})
        rows.append(
            (
                "agent_api extra imports, by package",
                ", ".join(f"{k} {v}" for k, v in list(extra.items())[:8]),
            )
        )
        jose = result.get("jose_import_ms", {})
        rows.append(
            (
                "JOSE: joserfc / Authlib (importtime, CPU)",
                f"{jose.get('joserfc_ms')} ({jose.get('joserfc_cpu_ms')}) / "
                f"{jose.get('authlib_ms')} ({jose.get('authlib_cpu_ms')}) ms",
            )
        )
        if "no_bytecode" in result:
            nb = result["no_bytecode"]
            rows.append(
                (
                    "no bytecode (as the bundle ships): agent_api / floor",
                    f"{nb['agent_api_ms']} / {nb['floor_ms']} ms (compile +"
                    f"{nb['agent_api_compile_cost_ms']} ms)",
                )
            )
        if "tracing_on_as_deployed" in result:
            tr = result["tracing_on_as_deployed"]
            rows.append(
                (
                    "tracing on (as deployed): agent_api over the floor",
                    f"+{tr['agent_api_over_floor_ms']} ms (CPU +"
                    f"{tr['agent_api_over_floor_cpu_ms']})",
                )
            )
        lines += _rows(
            f"Cold start (median of {result['import_runs']} fresh interpreters, "
            f"Python {result['import_python']})",
            rows,
        )
    bundle = result.get("bundle") or {}
    if "unzipped_mb" in bundle:
        lines += _rows(
            "Lambda bundle (the construct's bundler; one asset, every function)",
            [
                (
                    "unzipped / zipped",
                    f"{bundle['unzipped_mb']} MB / {bundle['zipped_mb']} MB, "
                    f"{bundle['files']} files",
                ),
                ("largest", ", ".join(f"{k} {v}" for k, v in bundle["largest_mb"].items())),
                ("vault package", f"{bundle['vault_package_kb']} kB"),
            ],
        )
    if "consent_flow" in result:
        flow = result["consent_flow"]
        lines += _rows(
            f"Consent flow end to end ({flow['iterations']} runs)",
            [
                ("median / p95", f"{flow['median_ms']} / {flow['p95_ms']} ms"),
                (
                    "steps (median)",
                    ", ".join(f"{k} {v}" for k, v in flow["steps_median_ms"].items()),
                ),
            ],
        )
    if "refresh_contention" in result:
        rows = []
        for n, r in result["refresh_contention"].items():
            rows.append(
                (
                    f"{n} callers",
                    f"{r['upstream_refreshes']} upstream refresh(es), p50 "
                    f"{r['p50_ms']} ms, max {r['max_ms']} ms, outcomes {r['outcomes']}",
                )
            )
            per_waiter = r.get("dynamodb_requests_per_waiter")
            waiting = r.get("dynamodb_requests_per_waiter_waiting")
            if per_waiter is not None and waiting is not None:
                rows.append(
                    (
                        "  DynamoDB requests per waiter: waiting (target <= 3) / in all",
                        f"max {waiting['max']}, median {waiting['median']:g}, mean "
                        f"{waiting['mean']:g} / max {per_waiter['max']}, median "
                        f"{per_waiter['median']:g} (the refresher: "
                        f"{r['dynamodb_requests_of_refresher']} in all; the waiters: "
                        + ", ".join(
                            f"{k} {v}"
                            for k, v in r.get(
                                "dynamodb_requests_of_waiters_by_operation", {}
                            ).items()
                        )
                        + ")",
                    )
                )
            if r.get("waiters"):
                rows.append(
                    (
                        "  waiters' p50 / the refresher's time (target <= 1.5x)",
                        f"{r['waiters_p50_ms']} / {r['refresher_ms']} ms = "
                        f"{r['waiters_p50_over_refresher']}x ({r['waiters_served']} of "
                        f"{r['waiters']} waiters got the token)",
                    )
                )
        lines += _rows("Refresh under contention (separate Services per caller)", rows)
    if "proxied_call" in result:
        lines += _proxy_rows(result["proxied_call"])
    if "load_run" in result:
        load = result["load_run"]
        latency = load["latency_ms"]
        lines += _rows(
            f"Load run of local mode ({load['agents']} agents x {load['requests_per_agent']} "
            "requests, HTTP on loopback)",
            [
                (
                    "requests / errors",
                    f"{load['requests']} / {load['errors']} {load['errors_by_kind'] or ''}",
                ),
                ("throughput", f"{load['throughput_rps']} requests/s in {load['elapsed_s']} s"),
                (
                    "latency p50 / p95 / p99 / max (SDK call, end to end)",
                    f"{latency['p50']} / {latency['p95']} / {latency['p99']} / {latency['max']} ms",
                ),
                (
                    "agent API containers that served",
                    f"{load['containers_serving']} (at most {load['max_containers']})",
                ),
                ("local mode start-up", f"{load['local_mode_startup_s']} s"),
            ],
        )
    if "cost" in result:
        for key, endpoint in (
            ("cost", "agents through API Gateway, the default"),
            ("cost_function_url", 'agents at the function URLs, agent_endpoint "function_url"'),
        ):
            cost = result.get(key)
            if cost is None:
                continue
            lines += _rows(
                f"Cost per million warm retrievals (USD, us-east-1 list prices; {endpoint})",
                [(k, f"{v:.4f}") for k, v in cost["lines_per_million_usd"].items()]
                + [
                    ("TOTAL", f"{cost['cost_per_million_usd']:.2f}"),
                    (
                        "AgentCore Identity",
                        f"{result['agentcore_cost_per_million_usd']:.2f}"
                        f"  (ratio {cost['ratio_to_agentcore']})",
                    ),
                ],
            )
        curve = result.get("memory_curve")
        if curve is not None:
            lines += _rows(
                f"Lambda memory (arm64; CPU share memory/1769 MB; handler RSS {curve['rss_mb']} MB"
                f", fits at x{curve['rss_headroom']:g})",
                [
                    (
                        f"{r['memory_mb']} MB"
                        + (
                            ""
                            if r["fits"]
                            else " (RSS does not fit)"
                            if not r["holds_rss"]
                            else f" (cold start > {curve['cold_init_bound_s']:g} s)"
                        ),
                        f"${r['cost_per_million_usd']:.3f} per million (duration "
                        f"${r['lambda_duration_per_million_usd']:.3f}, INIT "
                        f"${r['lambda_init_per_million_usd']:.3f}); {r['billed_ms']} ms billed; "
                        f"modelled cold start {r['cold_init_s_scaled']:g} s",
                    )
                    for r in curve["rows"]
                ]
                + [
                    (
                        "deployed / cheapest fitting",
                        f"{curve['deployed_mb']} / {curve['cheapest_fitting_mb']} MB",
                    )
                ],
            )
        snap = result.get("snapstart")
        if snap is not None:
            lines += _rows(
                "Lambda SnapStart (priced, not deployed; docs/cost.md)",
                [
                    (
                        "restores (1 per cold start) in place of INIT, per million",
                        f"${snap['restore_per_million_usd']:.4f} for "
                        f"${snap['init_per_million_usd_replaced']:.4f}",
                    ),
                    ("cost per million warm retrievals", f"${snap['cost_per_million_usd']:.3f}"),
                    (
                        f"snapshots cached, a month ({', '.join(snap['functions'])})",
                        f"${snap['cache_monthly_usd']:.2f}",
                    ),
                ],
            )
        idle = result["idle"]
        lines += _rows(
            "Idle monthly cost of the default deployment (USD)",
            [(k, f"{v:.2f}") for k, v in idle["lines_usd"].items()]
            + [("TOTAL", f"{result['idle_monthly_usd']:.2f}")],
        )
        if "idle_monthly_usd_public_ip" in result:
            lines += _rows(
                'The same with agent_egress "public_ip" (no NAT gateway; USD)',
                [
                    (k, f"{v:.2f}")
                    for k, v in result["idle_public_ip"]["lines_usd"].items()
                    if "NAT" in k or "agent tasks" in k
                ]
                + [("TOTAL", f"{result['idle_monthly_usd_public_ip']:.2f}")],
            )
    lines += _rows(
        "Targets",
        [(f"{_verdict(t['met']):<6} {t['target']}", t["measured"]) for t in result["targets"]],
    )
    lines.append(f"\nwritten: {result['written_to']}  ({result['elapsed_s']} s)")
    return "\n".join(lines)


def _proxy_rows(proxied: dict[str, Any]) -> list[str]:
    if not proxied.get("measured"):
        return _rows("Proxied call vs its floor", [("not measured", proxied["note"])])
    ops = ", ".join(f"{k} {v:g}" for k, v in proxied["aws_requests_by_operation"].items())
    wall, own = proxied["proxied_wall_ms"], proxied["provider_own_time_ms"]
    lines = _rows(
        f"Proxied call vs its floor: the same AWS and provider requests with bare clients "
        f"({proxied['requests']} warm GETs, real handler, the bundled calendar API)",
        [
            ("AWS requests per proxied call", ops),
            (
                "provider API / token endpoint calls per proxied call",
                f"{proxied['provider_api_requests']:g} / {proxied['provider_token_requests']:g}",
            ),
            (
                "vault compute median / p95 (CPU, AWS wire excluded)",
                f"{proxied['vault_compute_ms']['median']} / "
                f"{proxied['vault_compute_ms']['p95']} ms",
            ),
            (
                "  the same DynamoDB requests, bare botocore (CPU)",
                f"{proxied['floor_dynamodb_compute_ms']['median']} / "
                f"{proxied['floor_dynamodb_compute_ms']['p95']} ms "
                f"({' + '.join(proxied['floor_operations'])})",
            ),
            (
                "  the same provider request, bare urllib3 (CPU)",
                f"{proxied['bare_client_compute_ms']['median']} / "
                f"{proxied['bare_client_compute_ms']['p95']} ms",
            ),
            (
                "FLOOR: both, per call (CPU)",
                f"{proxied['floor_compute_ms']['median']} / "
                f"{proxied['floor_compute_ms']['p95']} ms",
            ),
            (
                "DIFFERENCE over the floor (CPU; median of pairs)",
                f"+{proxied['difference_ms']} ms; +{proxied['difference_paired_ms_median']} ms "
                f"(target <= +{proxied['target_over_provider_ms']:g} ms)",
            ),
            (
                "difference over the provider request alone (CPU; median of pairs)",
                f"+{proxied['difference_over_provider_ms']} ms; "
                f"+{proxied['difference_over_provider_paired_ms_median']} ms",
            ),
            (
                "provider's own time (direct call, wall clock) median / p95",
                f"{own['median']} / {own['p95']} ms",
            ),
            (
                "proxied call, wall clock, AWS wire excluded, median / p95",
                f"{wall['median']} / {wall['p95']} ms (+{proxied['difference_wall_ms']} ms over "
                f"the floor, +{proxied['difference_wall_over_provider_ms']} ms over the provider "
                "request)",
            ),
            (
                "warm retrieval's compute, same run (median, CPU)",
                f"{proxied.get('warm_retrieval_compute_ms_median')} ms",
            ),
            (
                "log bytes per proxied call",
                f"{proxied['log_bytes_per_request']:g} B in "
                f"{proxied['log_lines_per_request']:g} lines",
            ),
        ],
    )
    lines += _rows(
        "Where the proxied call's compute goes (median ms, CPU, wire excluded)",
        list(proxied["where_time_goes_ms"].items()),
    )
    priced = proxied.get("cost")
    if priced:
        lines += _rows(
            f"Cost per million proxied calls (USD, us-east-1 list prices, "
            f"{priced['lambda_memory_mb']} MB)",
            [(k, f"{v:.4f}") for k, v in priced["lines_per_million_usd"].items()]
            + [
                ("TOTAL", f"{priced['cost_per_million_usd']:.2f}"),
                (
                    "without the provider's time",
                    f"{priced['cost_per_million_usd_without_provider_wait']:.2f}",
                ),
                (
                    "each further 100 ms of provider time",
                    f"+{priced['per_100_ms_of_provider_time_usd']:.2f}",
                ),
                ("excluded", "data transfer (docs/cost.md)"),
            ],
        )
    at_url = proxied.get("cost_function_url")
    if at_url:
        lines += _rows(
            "Cost per million proxied calls at the proxy's function URL"
            ' (agent_endpoint "function_url")',
            [
                ("TOTAL", f"{at_url['cost_per_million_usd']:.2f}"),
                (
                    "without the provider's time",
                    f"{at_url['cost_per_million_usd_without_provider_wait']:.2f}",
                ),
            ],
        )
    return lines


# --- the run -----------------------------------------------------------------------------------


def run(
    plan: Plan, mode: str, *, skip_cold: bool = False, skip_load: bool = False
) -> dict[str, Any]:
    prepare_environment()
    started = time.time()
    result: dict[str, Any] = {
        "mode": mode,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "meta": {**_machine(), "commit": _git_commit()},
        "timings_s": {},
    }

    def phase(name: str, began: float) -> None:
        result["timings_s"][name] = round(time.time() - began, 1)
        _say(f"{name}: {result['timings_s'][name]} s")

    from bench import cold, cost, deployment

    began = time.time()
    _say("deployment facts and the Lambda bundle (CDK construct's bundler)...")
    deployed = deployment.measure()
    phase("bundle", began)
    if "error" in deployed:
        raise RuntimeError(f"reading the deployment failed:\n{deployed['error']}")
    result["bundle"] = deployed["bundle"]
    result["deployment_facts"] = deployed["facts"]

    if not skip_cold:
        began = time.time()
        _say("cold-start imports (fresh interpreters)...")
        imports = cold.measure_imports(
            plan.import_runs,
            bundled=deployed["bundle"]["requirements"],
            runtime=deployed["bundle"]["runtime_provided"],
            python_version=deployed["bundle"]["python_version"],
            variants=plan.import_variants,
        )
        moved = ("runs", "python", "python_note")
        result.update({k: v for k, v in imports.items() if k not in moved})
        result["import_runs"], result["import_python"] = imports["runs"], imports["python"]
        if imports["python_note"]:
            result["import_python_note"] = imports["python_note"]
            _say(f"note: {imports['python_note']}")
        phase("cold_imports", began)

    from bench import consent, contention, load, proxy, warm
    from bench.rig import rig

    with rig() as measured:
        began = time.time()
        _say(f"warm retrieval ({plan.requests} + {plan.uncached_requests} uncached)...")
        result["warm_retrieval"] = warm.measure(
            measured,
            requests=plan.requests,
            uncached_requests=plan.uncached_requests,
            breakdown_requests=plan.breakdown_requests,
        )
        phase("warm", began)
        began = time.time()
        _say(f"consent flow ({plan.consent_iterations} runs)...")
        result["consent_flow"] = consent.measure(measured, plan.consent_iterations)
        result["consent_flow_ms"] = result["consent_flow"]["median_ms"]
        phase("consent", began)
        began = time.time()
        _say(f"refresh contention {plan.contention_levels}...")
        result["refresh_contention"] = contention.measure(measured, plan.contention_levels)
        phase("contention", began)
        began = time.time()
        _say(f"proxied call vs the provider call alone ({plan.proxy_requests})...")
        result["proxied_call"] = proxy.measure(measured, requests=plan.proxy_requests)
        if result["proxied_call"]["measured"]:
            result["proxied_call"]["warm_retrieval_compute_ms_median"] = result["warm_retrieval"][
                "compute_ms_median"
            ]
        else:
            _say(f"proxied call: {result['proxied_call']['note']}")
        phase("proxy", began)

    if not skip_load:
        began = time.time()
        load_plan = plan.load
        _say(
            f"load run of local mode ({load_plan.agents} agents x {load_plan.requests} "
            "requests over HTTP)..."
        )
        result["load_run"] = load.measure(load_plan)
        phase("load", began)

    w = result["warm_retrieval"]
    priced, priced_at_url = (
        cost.per_million(
            w,
            deployed["facts"],
            result,
            caller_arn=w["caller_arn"],
            response_bytes=w["response_bytes"],
            endpoint=endpoint,
        )
        for endpoint in cost.ENDPOINTS
    )
    idle = cost.idle_monthly(deployed["facts"])
    idle_public_ip = cost.idle_monthly(deployed["facts"], egress="public_ip")
    result["snapstart"] = cost.snapstart(priced, deployed["facts"])
    result["memory_curve"] = cost.memory_curve(
        w,
        deployed["facts"],
        result,
        caller_arn=w["caller_arn"],
        response_bytes=w["response_bytes"],
        rss_mb=cost.handler_rss_mb(),
    )
    proxied = result["proxied_call"]
    if proxied["measured"]:
        proxied["cost"] = cost.per_million_proxied(proxied, deployed["facts"], result)
        result["proxy_cost_per_million_usd"] = proxied["cost"]["cost_per_million_usd"]
        proxied["cost_function_url"] = cost.per_million_proxied(
            proxied, deployed["facts"], result, endpoint=cost.FUNCTION_URL
        )
        result["proxy_cost_per_million_usd_function_url"] = proxied["cost_function_url"][
            "cost_per_million_usd"
        ]
    result.update(
        {
            "cost": priced,
            "cost_function_url": priced_at_url,
            "idle": idle,
            "cost_per_million_usd": priced["cost_per_million_usd"],
            "cost_per_million_usd_function_url": priced_at_url["cost_per_million_usd"],
            "agentcore_cost_per_million_usd": priced["agentcore_cost_per_million_usd"],
            "idle_monthly_usd": idle["idle_monthly_usd"],
            "idle_public_ip": idle_public_ip,
            "idle_monthly_usd_public_ip": idle_public_ip["idle_monthly_usd"],
            "assumptions": cost.ASSUMPTIONS,
            "prices": {
                "as_of": cost_prices_as_of(),
                "region": "us-east-1",
                "table": cost_prices_table(),
            },
            "kms_decrypt_per_1000": w["kms_decrypt_per_1000"],
            "log_bytes_per_request": w["log_bytes_per_request"],
            "bundle_unzipped_mb": result["bundle"].get("unzipped_mb"),
        }
    )
    result["targets"] = targets(result)
    result["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.time() - started, 1)
    return result


def cost_prices_as_of() -> str:
    from bench.prices import AS_OF

    return AS_OF


def cost_prices_table() -> list[dict[str, Any]]:
    from bench.prices import table

    return table()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer iterations, no import variants, a smaller load run (a smoke run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where to write the JSON (default {LATEST_JSON} for a full run with nothing "
        f"skipped, else {SCRATCH_JSON})",
    )
    parser.add_argument(
        "--skip-cold", action="store_true", help="skip the cold-start import measurements"
    )
    parser.add_argument("--skip-load", action="store_true", help="skip the load run of local mode")
    args = parser.parse_args(argv)
    plan, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    complete = not (args.quick or args.skip_cold or args.skip_load)
    out: Path = args.out or (LATEST_JSON if complete else SCRATCH_JSON)
    latest = out.resolve() == LATEST_JSON.resolve()
    if latest and not complete:
        parser.error(f"{LATEST_JSON} (the README's figures) comes only from a complete full run")
    result = run(plan, mode, skip_cold=args.skip_cold, skip_load=args.skip_load)
    result["written_to"] = str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(render(result))
    if latest:
        from bench import readme

        readme.update(result)
        print(f"regenerated: the figures of {readme.README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
