"""SECURITY.md row 50: an account principal cannot delete or rewrite audit trail files (dev and
prod templates): Object Lock, explicit denies, CloudTrail's statements pinned to the trail."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.cfn import as_list, render
from tests.infra.conftest import Synthesized, by_type

TRAIL_ARN = "arn:aws:cloudtrail:eu-west-1:123456789012:trail/agent-vault-{}"
DEPLOY_ROLE = "arn:aws:iam::123456789012:role/cdk-hnb659fds-cfn-exec-role-123456789012-eu-west-1"


@pytest.fixture(params=["synthesized", "synthesized_prod"])
def synthesized_any(request: pytest.FixtureRequest) -> Synthesized:
    synthesized: Synthesized = request.getfixturevalue(request.param)
    return synthesized


def _trail_bucket(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    buckets = {
        k: v for k, v in by_type(template, "AWS::S3::Bucket").items() if k.startswith("TrailLogs")
    }
    ((logical_id, bucket),) = buckets.items()
    return logical_id, bucket["Properties"]


def _bucket_policy(template: dict[str, Any], bucket_id: str) -> list[dict[str, Any]]:
    (policy,) = [
        v
        for v in by_type(template, "AWS::S3::BucketPolicy").values()
        if v["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def test_row_50_log_files_are_under_object_lock_for_the_retention(
    synthesized_any: Synthesized,
) -> None:
    config = synthesized_any.built.config
    _, bucket = _trail_bucket(synthesized_any.templates["Audit"])
    assert bucket["ObjectLockEnabled"] is True
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    retention = bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    mode = "COMPLIANCE" if config.environment == "prod" else "GOVERNANCE"
    assert retention == {"Mode": mode, "Days": config.audit_retention_days}


def test_row_50_nobody_deletes_log_files_or_changes_the_bucket_but_the_deployment(
    synthesized_any: Synthesized,
) -> None:
    template = synthesized_any.templates["Audit"]
    bucket_id, _ = _trail_bucket(template)
    statements = _bucket_policy(template, bucket_id)
    denies = [s for s in statements if s["Effect"] == "Deny"]
    (deletion,) = [s for s in denies if "s3:DeleteObjectVersion" in as_list(s["Action"])]
    assert deletion["Principal"] == {"AWS": "*"} and "Condition" not in deletion
    assert {
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
        "s3:PutObjectRetention",
    } <= set(as_list(deletion["Action"]))
    assert render(deletion["Resource"]).endswith("/*")
    (changes,) = [s for s in denies if "s3:PutBucketPolicy" in as_list(s["Action"])]
    assert changes["Principal"] == {"AWS": "*"}
    assert {
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketVersioning",
    } <= set(as_list(changes["Action"]))
    excepted = changes["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert isinstance(excepted, dict) and set(excepted) == {"Fn::Sub"}
    assert (
        excepted["Fn::Sub"]
        .replace("${AWS::Partition}", "aws")
        .replace("${AWS::AccountId}", "123456789012")
        .replace("${AWS::Region}", "eu-west-1")
        == DEPLOY_ROLE
    )
    # No statement allows anyone a delete.
    for statement in statements:
        if statement["Effect"] == "Allow":
            assert not any("Delete" in a or a.endswith("*") for a in as_list(statement["Action"]))


def test_row_50_cloudtrail_statements_name_this_trail(synthesized_any: Synthesized) -> None:
    template = synthesized_any.templates["Audit"]
    trail_arn = TRAIL_ARN.format(synthesized_any.built.config.environment)
    bucket_id, _ = _trail_bucket(template)
    cloudtrail = [
        s
        for s in _bucket_policy(template, bucket_id)
        if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}
    ]
    keys = [v for v in by_type(template, "AWS::KMS::Key").values()]
    for key in keys:
        cloudtrail += [
            s
            for s in key["Properties"]["KeyPolicy"]["Statement"]
            if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}
        ]
    assert len(cloudtrail) >= 4  # GetBucketAcl, PutObject, the key's encrypt and describe
    for statement in cloudtrail:
        assert render(statement["Condition"]["StringEquals"]["aws:SourceArn"]) == trail_arn
