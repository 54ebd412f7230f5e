"""Honest gates: checkov skips nothing project-wide. Each accepted finding is skipped on its one
resource, in the template's metadata, with a reason; a new resource is checked in full."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
import yaml
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3

from stacks.config import REPO_ROOT
from stacks.constructs.vault_function import VaultFunction
from stacks.synth import CHECKOV
from tests.infra.conftest import Synthesized

CHECKOV_CONFIG = REPO_ROOT / ".checkov.yaml"


def _skips(template: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(logical id, resource type, check id, reason) of every checkov skip in a template."""
    found = []
    for logical_id, resource in template["Resources"].items():
        for entry in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            found.append(
                (logical_id, resource["Type"], entry.get("id", ""), entry.get("comment", ""))
            )
    return found


def _run_checkov(templates: list[Path]) -> list[dict[str, Any]]:
    assert CHECKOV.exists(), (
        f"checkov is not installed at {CHECKOV}: `make synth` (or make"
        " .venv-checkov/.installed) installs it"
    )
    command = [str(CHECKOV), "--config-file", str(CHECKOV_CONFIG), "--output", "json"]
    for template in templates:
        command += ["--file", str(template)]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=600
    )
    reports = json.loads(done.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_the_checkov_config_skips_nothing() -> None:
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    keys = {str(k).replace("_", "-") for k in config}
    assert not keys & {
        "skip-check",
        "skip-path",
        "skip-framework",
        "soft-fail",
        "soft-fail-on",
        "skip-resources-without-violations",
    }, keys
    assert not any(key.startswith("skip") and key != "skip-download" for key in keys), keys


@pytest.mark.parametrize("which", ["dev", "prod"])
def test_every_skip_names_its_resource_and_reason(
    which: str, synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    built = synthesized if which == "dev" else synthesized_prod
    in_templates = sorted(
        (check, reason)
        for template in built.templates.values()
        for _, _, check, reason in _skips(template)
    )
    assert in_templates
    for check, reason in in_templates:
        assert check.startswith("CKV_"), check
        assert len(reason) >= 60, (check, reason)
    # every skip the app wrote is on one resource, and nothing else wrote any
    written = sorted((s.check, s.reason) for s in built.built.checkov_skips_written)
    assert written == in_templates
    assert all(s.path.count("/") >= 2 for s in built.built.checkov_skips_written)
    # no reason that the templates contradict
    for template in built.templates.values():
        for _, _, check, reason in _skips(template):
            assert "stage throttle bounds" not in reason and "never logs a token" not in reason
            assert "only bucket without" not in reason, (check, reason)


def test_checkov_honours_each_skip_and_checks_a_new_resource_in_full(
    synthesized_prod: Synthesized, tmp_path: Path
) -> None:
    # A new vault function, log group and bucket, as someone might add them: no skip is written
    # for them, so checkov checks them although the same checks are skipped on their siblings.
    app = cdk.App(outdir=str(tmp_path / "new"))
    stack = cdk.Stack(app, "NewResources")
    VaultFunction(
        stack,
        "Newcomer",
        handler="index.handler",
        description="a new function",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return {}\n"),
        environment={},
        log_retention=logs.RetentionDays.ONE_MONTH,
        removal_policy=cdk.RemovalPolicy.DESTROY,
        timeout=cdk.Duration.seconds(10),
    )
    s3.Bucket(
        stack,
        "NewBucket",
        enforce_ssl=True,
        versioned=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
    )
    new_template = app.synth().get_stack_by_name("NewResources").template
    assert _skips(new_template) == []
    paths = []
    for name, template in [*synthesized_prod.templates.items(), ("New", new_template)]:
        path = tmp_path / f"{name}.template.json"
        path.write_text(json.dumps(template))
        paths.append(path)

    reports = _run_checkov(paths)
    failed = {
        (c["file_path"].rsplit("/", 1)[-1], c["resource"].split(".")[0], c["check_id"])
        for r in reports
        for c in r["results"]["failed_checks"]
    }
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    # the existing templates: nothing failed, every accepted finding skipped with its reason
    assert {f for f in failed if f[0] != "New.template.json"} == set()
    assert len(skipped) == sum(len(_skips(t)) for t in synthesized_prod.templates.values())
    assert all(len(c["check_result"]["suppress_comment"]) >= 60 for c in skipped)
    # the new resources: every check skipped on their siblings is run, and fails
    assert {(kind, check) for _, kind, check in failed} >= {
        ("AWS::Lambda::Function", "CKV_AWS_115"),
        ("AWS::Lambda::Function", "CKV_AWS_116"),
        ("AWS::Lambda::Function", "CKV_AWS_117"),
        ("AWS::Lambda::Function", "CKV_AWS_173"),
        ("AWS::Logs::LogGroup", "CKV_AWS_158"),
        ("AWS::S3::Bucket", "CKV_AWS_18"),
    }
