"""The gates that hold for every stack: cdk-nag clean, no wildcard the design did not accept."""

from __future__ import annotations

from cdk_nag import AwsSolutionsChecks

from tests.infra.cfn import as_list, policy_statements
from tests.infra.conftest import Synthesized

ACCEPTED_RESOURCE_STAR = {
    # (stack, policy logical id prefix, actions): each is acknowledged in stacks/nag.py.
    ("Vault", "AgentApiRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "CallbackRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "AdminApiRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "ReaperRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("AgentService", "SampleAgentTaskExecutionRoleDefaultPolicy",
     ("ecr:GetAuthorizationToken",)),
}


def test_cdk_nag_finds_nothing_unacknowledged(synthesized: Synthesized) -> None:
    # The synth itself would have failed; this says which finding, if one ever appears.
    report = AwsSolutionsChecks().validate_scope(synthesized.built.app)
    assert [v.rule_name for v in report.violations] == []
    assert report.success


def test_every_acknowledgement_has_a_reason(synthesized: Synthesized) -> None:
    assert synthesized.built.acknowledgements
    for acknowledgement in synthesized.built.acknowledgements:
        assert acknowledgement.rule.startswith("AwsSolutions-")
        assert len(acknowledgement.reason) > 60, acknowledgement


def test_no_policy_allows_every_action(synthesized: Synthesized) -> None:
    for stack, template in synthesized.templates.items():
        for logical_id, statement in policy_statements(template):
            actions = as_list(statement.get("Action", []))
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), (
                stack, logical_id, statement)


def test_resource_star_only_where_acknowledged(synthesized: Synthesized) -> None:
    found = set()
    for stack, template in synthesized.templates.items():
        for logical_id, statement in policy_statements(template):
            if "*" in as_list(statement.get("Resource", [])):
                prefix = next((p for s, p, _ in ACCEPTED_RESOURCE_STAR
                               if s == stack and logical_id.startswith(p)), logical_id)
                found.add((stack, prefix, tuple(sorted(as_list(statement["Action"])))))
    assert found == ACCEPTED_RESOURCE_STAR
