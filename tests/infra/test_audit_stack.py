"""CloudTrail: validated, encrypted, locked-down; data events as the config chooses."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from stacks.audit_stack import AuditStack
from tests.infra.conftest import Synthesized, by_type, cdk_context, config_with

TABLE_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/vault"
FUNCTION_ARNS = [
    f"arn:aws:lambda:eu-west-1:123456789012:function:{n}"
    for n in ("agent-api", "callback", "admin-api", "reaper")
]


def _selectors_for(mode: str) -> list[dict[str, Any]]:
    """The trail's selectors for a mode: the audit stack alone, with literal vault ARNs."""
    app = cdk.App(context=cdk_context())
    stack = AuditStack(
        app,
        "Audit",
        config=config_with(audit_data_events=mode),
        vault_table_arn=TABLE_ARN,
        vault_function_arns=FUNCTION_ARNS,
    )
    trail = next(
        iter(by_type(Template.from_stack(stack).to_json(), "AWS::CloudTrail::Trail").values())
    )
    assert "EventSelectors" not in trail["Properties"]
    return list(trail["Properties"]["AdvancedEventSelectors"])


def _fields(selector: dict[str, Any]) -> dict[str, list[Any]]:
    return {f["Field"]: f["Equals"] for f in selector["FieldSelectors"]}


def _trail(synthesized: Synthesized) -> dict[str, Any]:
    trails = by_type(synthesized.templates["Audit"], "AWS::CloudTrail::Trail")
    assert len(trails) == 1
    return dict(next(iter(trails.values()))["Properties"])


def test_the_trail_validates_and_encrypts_log_files(synthesized: Synthesized) -> None:
    trail = _trail(synthesized)
    assert trail["EnableLogFileValidation"] is True
    assert trail["IsMultiRegionTrail"] is True
    assert trail["KMSKeyId"]["Fn::GetAtt"][0].startswith("TrailKey")
    assert "CloudWatchLogsLogGroupArn" in trail
    template = synthesized.template("Audit")
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_the_trail_bucket_is_private_versioned_encrypted_tls_only_and_logged(
    synthesized: Synthesized,
) -> None:
    buckets = by_type(synthesized.templates["Audit"], "AWS::S3::Bucket")
    logs = next(v["Properties"] for k, v in buckets.items() if k.startswith("TrailLogs"))
    rule = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert logs["VersioningConfiguration"] == {"Status": "Enabled"}
    assert logs["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert logs["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith(
        "TrailAccessLogs"
    )
    assert logs["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
    template = synthesized.template("Audit")
    for _ in buckets:
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            },
        )
    for bucket in by_type(synthesized.templates["Audit"], "AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"


def test_writes_mode_records_vault_table_writes_only(synthesized: Synthesized) -> None:
    selectors = _trail(synthesized)["AdvancedEventSelectors"]
    by_resource = {
        _fields(s).get("resources.type", ["Management"])[0]: _fields(s) for s in selectors
    }
    assert set(by_resource) == {"Management", "AWS::DynamoDB::Table"}
    table = by_resource["AWS::DynamoDB::Table"]
    assert table["readOnly"] == ["false"]
    (table_arn,) = table["resources.ARN"]
    assert "TablesVault" in table_arn["Fn::ImportValue"]
    # Never the replay table: the trail does not even know it.
    assert "Replay" not in str(synthesized.templates["Audit"])


def test_all_mode_records_reads_and_invocations_too() -> None:
    selectors = _selectors_for("all")
    tables = [
        _fields(s)
        for s in selectors
        if _fields(s).get("resources.type") == ["AWS::DynamoDB::Table"]
    ]
    assert tables == [
        {
            "eventCategory": ["Data"],
            "resources.type": ["AWS::DynamoDB::Table"],
            "resources.ARN": [TABLE_ARN],
        }
    ]
    invocations = [
        _fields(s)
        for s in selectors
        if _fields(s).get("resources.type") == ["AWS::Lambda::Function"]
    ]
    assert invocations[0]["resources.ARN"] == FUNCTION_ARNS
    assert len(FUNCTION_ARNS) == 4


def test_writes_mode_selectors_exactly() -> None:
    tables = [
        _fields(s)
        for s in _selectors_for("writes")
        if _fields(s).get("resources.type") == ["AWS::DynamoDB::Table"]
    ]
    assert tables == [
        {
            "eventCategory": ["Data"],
            "resources.type": ["AWS::DynamoDB::Table"],
            "resources.ARN": [TABLE_ARN],
            "readOnly": ["false"],
        }
    ]


@pytest.mark.parametrize("mode", ["none"])
def test_none_mode_records_management_events_only(mode: str) -> None:
    assert [_fields(s) for s in _selectors_for(mode)] == [{"eventCategory": ["Management"]}]
