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


@pytest.fixture(scope="module")
def latest() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(LATEST_JSON.read_text(encoding="utf-8"))
    return result


def test_the_cost_model_sees_every_vault_function_and_its_alarms() -> None:
    facts = _facts()
    assert sorted(facts["lambda_functions"]) == sorted(ITEM_ACCESS)
    # Api5xx and DeadLetters, plus Errors and Throttles per function
    assert facts["alarms"] == 2 + 2 * len(ITEM_ACCESS)


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
    assert sorted(cold["handlers"]) == ["admin_api", "agent_api", "callback", "reaper"]
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

    assert latest["proxied_call"]["measured"] or latest["proxied_call"]["note"] == (
        "not measured: no proxy in this build"
    )
    ids = {t["id"] for t in latest["targets"]}
    assert {"warm_compute", "cold_agent_api", "contention_64_requests", "load_errors"} <= ids
