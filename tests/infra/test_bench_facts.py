"""The cost model reads the deployment's facts from the CDK code: they must match the stacks."""

from __future__ import annotations

from bench.deployment import _facts
from stacks.vault_stack import ITEM_ACCESS


def test_the_cost_model_sees_every_vault_function_and_its_alarms() -> None:
    facts = _facts()
    assert sorted(facts["lambda_functions"]) == sorted(ITEM_ACCESS)
    # Api5xx and DeadLetters, plus Errors and Throttles per function
    assert facts["alarms"] == 2 + 2 * len(ITEM_ACCESS)
