"""Synthesize the CDK app once per test session (synth is the slow part) and share templates."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk.assertions import Template

from stacks.app import AgentVaultApp, build_app
from stacks.config import CONTEXT_KEY, REPO_ROOT, VaultConfig, parse_config

KEY_ADMIN_ROLE_ARN = "arn:aws:iam::123456789012:role/vault-key-admin"
"""The prod config's key administrator (the dev config leaves it to the account)."""
SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}
"""No pip download of Lambda wheels in tests: the asset is the source directory."""


def cdk_context() -> dict[str, Any]:
    """cdk.json's context: feature flags and the default config, as `cdk synth` sees them."""
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    return {**context, **SKIP_BUNDLING}


def config_with(**changes: Any) -> VaultConfig:
    """The default config with top-level keys changed."""
    data = copy.deepcopy(cdk_context()[CONTEXT_KEY])
    data.update(changes)
    return parse_config(data, source="test")


@dataclass(frozen=True)
class Synthesized:
    built: AgentVaultApp
    templates: dict[str, dict[str, Any]]

    def template(self, stack: str) -> Template:
        return Template.from_json(self.templates[stack])

    def resources(self, stack: str, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.templates[stack]["Resources"].items() if v["Type"] == type_}


def synthesize(tmp: Path, *, config: VaultConfig | None = None) -> Synthesized:
    """Build and synthesize the whole app (cdk-nag and the CDK's validation included)."""
    built = build_app(context=cdk_context(), outdir=str(tmp), config=config)
    assembly = built.app.synth()
    templates = {
        stack.node.id: assembly.get_stack_by_name(stack.stack_name).template
        for stack in built.stacks
    }
    return Synthesized(built=built, templates=templates)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The default config (cdk.json), synthesized once."""
    return synthesize(tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def synthesized_prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """A prod deployment with an explicit account/region, a certificate, the agents at the
    functions' own URLs (`agent_endpoint: "function_url"`) and leaving by their own public IPv4
    addresses (`agent_egress: "public_ip"`), synthesized once."""
    config = config_with(
        environment="prod",
        account="123456789012",
        region="eu-west-1",
        certificate_arn="arn:aws:acm:eu-west-1:123456789012:certificate/0f2c-example",
        key_admin_role_arn=KEY_ADMIN_ROLE_ARN,
        agent_endpoint="function_url",
        agent_egress="public_ip",
    )
    return synthesize(tmp_path_factory.mktemp("cdk-prod"), config=config)


@pytest.fixture(scope="session")
def synthesized_function_url(synthesized_prod: Synthesized) -> Synthesized:
    """A deployment with `agent_endpoint: "function_url"`: the prod one (one synth less)."""
    return synthesized_prod


def by_type(template: Mapping[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}
