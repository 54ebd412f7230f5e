"""The gates that hold for every stack: cdk-nag clean, no wildcard the design did not accept."""

from __future__ import annotations

from cdk_nag import AwsSolutionsChecks

from tests.infra.cfn import as_list, policy_statements
from tests.infra.conftest import Synthesized

ACCEPTED_RESOURCE_STAR = {
    # (stack, policy logical id prefix, actions): each is acknowledged in stacks/nag.py.
    ("Vault", "AgentApiRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "ProxyApiRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "CallbackRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "AdminApiRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    ("Vault", "ReaperRoleDefaultPolicy", ("xray:PutTelemetryRecords", "xray:PutTraceSegments")),
    (
        "Vault",
        "LifecycleEventsRoleDefaultPolicy",
        ("dynamodb:ListStreams", "xray:PutTelemetryRecords", "xray:PutTraceSegments"),
    ),
    ("AgentService", "SampleAgentTaskExecutionRoleDefaultPolicy", ("ecr:GetAuthorizationToken",)),
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
                stack,
                logical_id,
                statement,
            )


def test_resource_star_only_where_acknowledged(synthesized: Synthesized) -> None:
    found = set()
    for stack, template in synthesized.templates.items():
        for logical_id, statement in policy_statements(template):
            if "*" in as_list(statement.get("Resource", [])):
                prefix = next(
                    (
                        p
                        for s, p, _ in ACCEPTED_RESOURCE_STAR
                        if s == stack and logical_id.startswith(p)
                    ),
                    logical_id,
                )
                found.add((stack, prefix, tuple(sorted(as_list(statement["Action"])))))
    assert found == ACCEPTED_RESOURCE_STAR


def test_each_agent_grant_reaches_its_own_route_of_the_table_and_says_so(
    synthesized: Synthesized,
) -> None:
    """IAM's `*` also matches `/`: an execute-api grant for one route fits deeper paths too.
    Against the route table (ids with a `/` inside as well), each grant reaches its own route
    only, and its acknowledgement says what the wildcard covers."""
    from tests.infra.cfn import API_ID, iam_matches, render
    from vault.routes import ROUTES

    grants = [
        str(arn)
        for _, statement in policy_statements(synthesized.templates["AgentService"])
        if as_list(statement["Action"]) == ["execute-api:Invoke"]
        for arn in render(as_list(statement["Resource"]))
    ]
    assert grants
    base = f"arn:aws:execute-api:eu-west-1:123456789012:{API_ID}/$default"
    for route in ROUTES:
        for ident in ("ses_abc", "ses_a/b"):
            path = route.path.replace("{session_id}", ident).replace("{flow_id}", ident)
            # an `ANY` route's requests carry their own method: one grant per method
            for method in ("GET", "POST", "DELETE") if route.method == "ANY" else (route.method,):
                matching = [g for g in grants if iam_matches(g, f"{base}/{method}{path}")]
                if route.function == "agent-api":
                    assert len(matching) == 1, (route.route_key, matching)
                elif route.function == "proxy-api":
                    # its own grant; for GET and DELETE also the session's (`.../sessions/*`
                    # fits every deeper path): both the agent's routes
                    own = [g for g in matching if "/proxy/" in g]
                    session = [g for g in matching if g.endswith(f"/{method}/v1/sessions/*")]
                    assert len(own) == 1 and sorted(matching) == sorted(own + session), matching
                    assert len(session) == (1 if method in ("GET", "DELETE") else 0), matching
                else:
                    assert matching == [], (route.route_key, method, matching)
    reasons = [
        a.reason
        for a in synthesized.built.acknowledgements
        if "execute-api" in a.rule or "execute-api:Invoke" in a.reason
    ]
    assert reasons
    assert all("also matches `/`" in reason for reason in reasons)
