"""SECURITY.md row 47 in the templates: Lambda's active tracing stays on, and the code the
functions run carries no X-Ray SDK (nothing of ours can write a trace segment)."""

from __future__ import annotations

from stacks.constructs.vault_code import REQUIREMENTS, bundled_requirements
from tests.infra.conftest import Synthesized, by_type


def test_every_vault_function_keeps_lambdas_active_tracing(
    synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    for built in (synthesized, synthesized_prod):
        functions = [
            f["Properties"]
            for f in by_type(built.templates["Vault"], "AWS::Lambda::Function").values()
            if f["Properties"].get("Handler", "").startswith("vault.")
        ]
        assert len(functions) == 6  # the five of ITEM_ACCESS and the lifecycle events'
        for props in functions:
            assert props["TracingConfig"] == {"Mode": "Active"}
            assert not any(
                k.startswith("POWERTOOLS_TRACER") for k in props["Environment"]["Variables"]
            )


def test_the_function_bundle_carries_no_xray_sdk() -> None:
    bundled = {
        line.split("==")[0].lower()
        for line in bundled_requirements(REQUIREMENTS.read_text()).splitlines()
    }
    assert "aws-xray-sdk" not in bundled
    assert "aws-lambda-powertools" in bundled
