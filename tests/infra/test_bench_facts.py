"""The bench's facts: the cost model reads the deployment from the CDK code, and the README's
figures are generated from the committed bench/latest.json (each figure beside its floor)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import LATEST_JSON
from bench.deployment import _facts
from bench.readme import README, figures, section
from stacks.vault_stack import ITEM_ACCESS
from tests.infra.conftest import Synthesized, by_type


@pytest.fixture(scope="module")
def latest() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(LATEST_JSON.read_text(encoding="utf-8"))
    return result


def test_the_cost_model_sees_every_vault_function_and_its_alarms() -> None:
    facts = _facts()
    assert sorted(facts["lambda_functions"]) == sorted(ITEM_ACCESS)
    # Api5xx and DeadLetters, plus Errors and Throttles per function
    assert facts["alarms"] == 2 + 2 * len(ITEM_ACCESS)


def test_the_cost_model_prices_each_function_at_the_memory_and_architecture_it_deploys_with(
    synthesized: Synthesized,
) -> None:
    """The proxy's cost per million uses the proxy function's memory: the one the stack gives it."""
    facts = _facts()
    deployed = {
        f["Properties"]["Handler"]: f["Properties"]
        for f in by_type(synthesized.templates["Vault"], "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("vault.handlers.")
    }
    handlers = {
        "AgentApi": "agent_api",
        "ProxyApi": "proxy_api",
        "Callback": "callback",
        "AdminApi": "admin_api",
        "Reaper": "reaper",
    }
    assert sorted(facts["lambda_memory_mb_by_function"]) == sorted(handlers)
    for name, memory in facts["lambda_memory_mb_by_function"].items():
        function = deployed[f"vault.handlers.{handlers[name]}.handler"]
        assert function["MemorySize"] == memory, name
        assert function["Architectures"] == [facts["lambda_architecture"]], name
    assert facts["lambda_memory_mb"] == facts["lambda_memory_mb_by_function"]["AgentApi"]


def test_the_function_url_price_is_of_the_functions_that_get_urls(
    synthesized_function_url: Synthesized,
) -> None:
    """The cost model prices the function URL option for the functions the stack gives URLs."""
    facts = _facts()
    assert facts["agent_endpoint"] == "api_gateway"  # the default config's
    vault = synthesized_function_url.built.vault
    assert vault.agent_urls is not None
    assert sorted(facts["function_url_functions"]) == sorted(vault.agent_urls.urls)


def test_both_endpoints_are_priced_from_the_same_counted_calls(latest: dict[str, Any]) -> None:
    """The function URL's line is the default's without API Gateway's request and access log."""
    default, at_url = latest["cost"], latest["cost_function_url"]
    assert (default["endpoint"], at_url["endpoint"]) == ("api_gateway", "function_url")
    dropped = {
        k: v
        for k, v in default["lines_per_million_usd"].items()
        if k.startswith(("API Gateway HTTP API request", "CloudWatch Logs ingestion, access log"))
    }
    assert len(dropped) == 2 and all(v > 0 for v in dropped.values())
    kept = {k: v for k, v in default["lines_per_million_usd"].items() if k not in dropped}
    assert at_url["lines_per_million_usd"] == kept
    assert abs(at_url["cost_per_million_usd"] - sum(kept.values())) < 0.01
    assert latest["cost_per_million_usd_function_url"] == at_url["cost_per_million_usd"]
    targets = {t["id"]: t for t in latest["targets"]}
    limit = latest["agentcore_cost_per_million_usd"] / 5
    assert targets["cost"]["met"] == (latest["cost_per_million_usd"] <= limit)
    assert targets["cost_function_url"]["met"] == (at_url["cost_per_million_usd"] <= limit)
    proxied = latest["proxied_call"]
    assert (
        proxied["cost_function_url"]["cost_per_million_usd"]
        < proxied["cost"]["cost_per_million_usd"]
    )


def test_snapstart_is_priced_from_the_same_run_in_place_of_init(latest: dict[str, Any]) -> None:
    """SnapStart (priced, not deployed): the warm retrieval's lines, its INIT line swapped for one
    restore per cold start at the agent API's memory; a cached snapshot per function waited on."""
    from bench import cost
    from bench.prices import HOURS_PER_MONTH, price

    snap = cost.snapstart(latest["cost"], latest["deployment_facts"])
    assert snap == latest["snapstart"] and snap["deployed"] is False
    lines = latest["cost"]["lines_per_million_usd"]
    (init,) = [v for k, v in lines.items() if k.startswith("Lambda INIT")]
    agent_gb = latest["deployment_facts"]["lambda_memory_mb_by_function"]["AgentApi"] / 1024
    restores = 1e6 / latest["assumptions"]["cold_start_per_retrievals"]
    restore = restores * agent_gb * price("lambda_snapstart_restore_gb")
    assert abs(snap["cost_per_million_usd"] - (sum(lines.values()) - init + restore)) < 0.01
    assert "Reaper" not in snap["functions"] and "AgentApi" in snap["functions"]
    month = HOURS_PER_MONTH * 3600 * price("lambda_snapstart_cache_gb_s")
    memory = latest["deployment_facts"]["lambda_memory_mb_by_function"]
    expected = sum(memory[f] / 1024 * month for f in snap["functions"])
    assert abs(snap["cache_monthly_usd"] - expected) < 0.05


def test_the_readme_figures_are_those_of_bench_latest_json(latest: dict[str, Any]) -> None:
    """README's generated section is exactly what bench/readme.py makes of bench/latest.json
    (regenerate with `python -m bench.readme` after editing either)."""
    assert section(README.read_text(encoding="utf-8")) == figures(latest)


def test_bench_latest_json_is_a_full_run_with_each_figure_beside_its_floor(
    latest: dict[str, Any],
) -> None:
    assert latest["mode"] == "full"
    floor = latest["warm_retrieval"]["floor"]
    assert floor["requests_by_operation"] == {"dynamodb:PutItem": 1.0, "dynamodb:Query": 1.0}
    assert floor["ratio"] == round(floor["figure_ms_median"] / floor["floor_ms_median"], 2)
    assert floor["figure_ms_median"] == latest["warm_retrieval"]["compute_ms_median"]

    cold = latest["cold_start"]
    assert cold["floor_statement"] == "import boto3, aws_lambda_powertools"
    assert sorted(cold["handlers"]) == ["admin_api", "agent_api", "callback", "proxy_api", "reaper"]
    for handler in cold["handlers"].values():
        assert handler["floor_ms"] == cold["floor_ms"]
        assert handler["difference_ms"] == round(handler["figure_ms"] - cold["floor_ms"], 1)

    contention = latest["refresh_contention"]
    assert sorted(contention, key=int) == ["1", "8", "32", "64"]
    for level, row in contention.items():
        assert sum(row["outcomes"].values()) == int(level)
        if row["waiters"]:
            assert row["dynamodb_requests_per_waiter"]["max"] >= 1
        if row.get("waiters_p50_ms") is not None:
            assert row["waiters_p50_over_refresher"] == round(
                row["waiters_p50_ms"] / row["refresher_ms"], 2
            )

    load = latest["load_run"]
    assert load["errors"] == 0
    assert load["requests"] == load["agents"] * load["requests_per_agent"]
    assert load["latency_ms"]["p50"] <= load["latency_ms"]["p99"]

    proxied = latest["proxied_call"]
    assert proxied["measured"], proxied
    assert proxied["route"] == "ANY /v1/sessions/{session_id}/proxy/{provider}/{path+}"
    assert proxied["difference_ms"] == round(proxied["figure_ms"] - proxied["floor_ms"], 3)
    assert proxied["figure_ms"] == proxied["vault_compute_ms"]["median"]
    assert proxied["floor_ms"] == proxied["floor_compute_ms"]["median"]
    assert proxied["difference_over_provider_ms"] == round(
        proxied["figure_ms"] - proxied["bare_client_compute_ms"]["median"], 3
    )
    assert proxied["floor_operations"] == latest["warm_retrieval"]["floor"]["operations"]
    assert (
        proxied["aws_requests_by_operation"]
        == (latest["warm_retrieval"]["aws_requests_by_operation"])
    )
    assert (proxied["provider_api_requests"], proxied["provider_token_requests"]) == (1, 0)
    priced = proxied["cost"]
    assert (
        priced["lambda_memory_mb"]
        == (latest["deployment_facts"]["lambda_memory_mb_by_function"]["ProxyApi"])
    )
    lines = sum(priced["lines_per_million_usd"].values())
    assert abs(priced["cost_per_million_usd"] - lines) < 0.01
    assert latest["proxy_cost_per_million_usd"] == priced["cost_per_million_usd"]

    ids = {t["id"] for t in latest["targets"]}
    assert {
        "warm_compute",
        "cold_agent_api",
        "cold_proxy_api",
        "contention_64_requests",
        "load_errors",
        "proxy",
        "proxy_calls",
    } <= ids


def test_both_egress_options_are_priced_from_what_each_deploys(
    synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    """The idle month prices the NAT gateways the default template builds, and the public-IP
    option the addresses its tasks get instead (the prod synth has `agent_egress: "public_ip"`)."""
    from bench.cost import idle_monthly

    facts = _facts()
    assert facts["agent_egress"] == "nat_gateway"  # the default config's
    default = synthesized.templates["AgentService"]
    public_ip = synthesized_prod.templates["AgentService"]
    assert facts["nat_gateways"] == len(by_type(default, "AWS::EC2::NatGateway")) > 0
    assert not by_type(public_ip, "AWS::EC2::NatGateway")
    (service,) = by_type(public_ip, "AWS::ECS::Service").values()
    assert service["Properties"]["DesiredCount"] == facts["fargate_tasks"]

    with_nat, without = idle_monthly(facts), idle_monthly(facts, egress="public_ip")

    def lines(idle: dict[str, Any], word: str) -> list[float]:
        return [v for k, v in idle["lines_usd"].items() if word in k]

    assert len(lines(with_nat, "NAT")) == 3 and all(v > 0 for v in lines(with_nat, "NAT"))
    assert lines(without, "NAT") == [0, 0, 0]
    assert lines(with_nat, "agent tasks") == [0] and lines(without, "agent tasks")[0] > 0
    assert without["idle_monthly_usd"] < with_nat["idle_monthly_usd"]
