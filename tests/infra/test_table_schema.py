"""One table schema (issue #11 item 3): the stack, local mode and the tests all build the vault's
tables from `vault.store.schema`, and nothing else defines them."""

from __future__ import annotations

import subprocess
from typing import Any

import agent_vault_local.runner
import tests.support.harness
from stacks.config import REPO_ROOT
from tests.infra.conftest import Synthesized, by_type
from tests.support.aws import aws
from vault.store import schema

SCHEMAS = {"vault": schema.VAULT_TABLE, "replay": schema.REPLAY_TABLE}


def _template_tables(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    tables = by_type(synthesized.templates["Vault"], "AWS::DynamoDB::Table")
    return {("vault" if "Vault" in k else "replay"): v["Properties"] for k, v in tables.items()}


def test_the_stacks_tables_are_the_schemas(
    synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    for built in (synthesized, synthesized_prod):
        tables = _template_tables(built)
        assert set(tables) == set(SCHEMAS)
        for role, table_schema in SCHEMAS.items():
            definition = table_schema.definition()
            assert {k: tables[role].get(k) for k in definition} == definition, role
            if not table_schema.indexes:
                assert "GlobalSecondaryIndexes" not in tables[role]


def test_create_tables_makes_the_schemas_tables() -> None:
    """What `create_tables` makes (moto's description) is what the schema defines."""
    with aws() as session:
        dynamodb = session.client("dynamodb")
        schema.create_tables(dynamodb, "vault", "replay")
        for name, table_schema in SCHEMAS.items():
            definition = table_schema.definition()
            made = dynamodb.describe_table(TableName=name)["Table"]
            assert made["KeySchema"] == definition["KeySchema"]
            assert made["AttributeDefinitions"] == definition["AttributeDefinitions"]
            assert made["BillingModeSummary"]["BillingMode"] == definition["BillingMode"]
            indexes = [
                {k: i[k] for k in ("IndexName", "KeySchema", "Projection")}
                for i in made.get("GlobalSecondaryIndexes", [])
            ]
            assert indexes == definition.get("GlobalSecondaryIndexes", [])
            ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert ttl == {
                "AttributeName": definition["TimeToLiveSpecification"]["AttributeName"],
                "TimeToLiveStatus": "ENABLED",
            }


def test_local_mode_and_the_tests_create_tables_with_the_schemas_function() -> None:
    assert agent_vault_local.runner.create_tables is schema.create_tables
    assert tests.support.harness.create_tables is schema.create_tables


def _text(path: str) -> str:
    """A listed file's text; "" for one gone since it was listed: a build's staging copy (the
    SDK wheel test's sdist, on the other worker), not code of the repository."""
    try:
        return (REPO_ROOT / path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def test_no_other_code_creates_tables() -> None:
    """No hand-written copy of the tables: only schema.py calls CreateTable or sets the TTL."""
    calls = ("create" + "_table(", "update_time" + "_to_live(")
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    callers = {path for path in tracked if any(call in _text(path) for call in calls)}
    assert callers == {"lambdas/vault/store/schema.py"}
