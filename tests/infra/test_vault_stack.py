"""The vault stack provisions docs/architecture.md's contract, with its security properties."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from stacks.constructs.vault_api import (
    ADMIN_ROUTES,
    AGENT_ROUTES,
    CALLBACK_ROUTES,
    PROXY_ROUTES,
)
from tests.infra.cfn import as_list, policy_statements, render
from tests.infra.conftest import Synthesized, by_type

HANDLERS = {
    "vault.handlers.agent_api.handler",
    "vault.handlers.proxy_api.handler",
    "vault.handlers.callback.handler",
    "vault.handlers.admin_api.handler",
    "vault.handlers.reaper.handler",
    "vault.handlers.events.handler",
}


def _vault(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.templates["Vault"]


def _vault_key_id(synthesized: Synthesized) -> str:
    keys = by_type(_vault(synthesized), "AWS::KMS::Key")
    (logical_id,) = [k for k, v in keys.items() if "tokens" in v["Properties"]["Description"]]
    return logical_id


def _tables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tables = by_type(template, "AWS::DynamoDB::Table")
    return {("vault" if "Vault" in k else "replay"): v["Properties"] for k, v in tables.items()}


def test_the_key_rotates_and_has_an_alias(synthesized: Synthesized) -> None:
    template = synthesized.template("Vault")
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "Description": Match.string_like_regexp("tokens"),
        },
    )
    template.has_resource_properties("AWS::KMS::Alias", {"AliasName": "alias/agent-vault-dev"})


def test_the_key_policy_allows_use_only_under_conditions(synthesized: Synthesized) -> None:
    keys = by_type(_vault(synthesized), "AWS::KMS::Key")
    use = {
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKey*",
        "kms:ReEncrypt*",
        "kms:CreateGrant",
    }
    for key in keys.values():
        for statement in key["Properties"]["KeyPolicy"]["Statement"]:
            if use & set(as_list(statement["Action"])):
                assert statement.get("Condition"), statement


def test_envelope_encryption_is_conditioned_on_the_purpose(synthesized: Synthesized) -> None:
    purposes = {}
    for logical_id, statement in policy_statements(_vault(synthesized)):
        condition = statement.get("Condition", {}).get("StringEquals", {})
        if "kms:EncryptionContext:purpose" in condition:
            purposes[logical_id] = (
                sorted(as_list(statement["Action"])),
                sorted(as_list(condition["kms:EncryptionContext:purpose"])),
            )
        elif set(as_list(statement["Action"])) & {"kms:Decrypt", "kms:GenerateDataKey"}:
            # Any other KMS use is through DynamoDB (table SSE) only.
            assert "kms:ViaService" in condition, (logical_id, statement)
    assert {logical_id[:6] for logical_id in purposes} == {
        "AgentA",
        "ProxyA",
        "Callba",
        "AdminA",
        "Reaper",
    }
    # Each statement is one purpose; which function may do what is tests/infra/test_access.py.
    for logical_id, (_, allowed) in purposes.items():
        assert allowed in (["token"], ["verifier"], ["machine_token"]), logical_id


def test_both_tables_are_encrypted_with_the_vault_key_and_recoverable(
    synthesized: Synthesized,
) -> None:
    tables = _tables(_vault(synthesized))
    assert set(tables) == {"vault", "replay"}
    for props in tables.values():
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert props["SSESpecification"]["KMSMasterKeyId"] == {
            "Fn::GetAtt": [_vault_key_id(synthesized), "Arn"]
        }
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
        assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_the_vault_table_has_the_documented_keys_and_indexes(synthesized: Synthesized) -> None:
    vault = _tables(_vault(synthesized))["vault"]
    assert vault["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    indexes = {i["IndexName"]: i for i in vault["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"gsi1", "gsi2"}
    for name, index in indexes.items():
        assert index["KeySchema"] == [
            {"AttributeName": f"{name}pk", "KeyType": "HASH"},
            {"AttributeName": f"{name}sk", "KeyType": "RANGE"},
        ]
        assert index["Projection"] == {"ProjectionType": "ALL"}
    replay = _tables(_vault(synthesized))["replay"]
    assert replay["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]


def test_dev_tables_are_disposable_prod_tables_are_protected(
    synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    for table in by_type(_vault(synthesized), "AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == "Delete"
        assert table["Properties"].get("DeletionProtectionEnabled") is False
    for table in by_type(_vault(synthesized_prod), "AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == "Retain"
        assert table["Properties"]["DeletionProtectionEnabled"] is True


def test_one_function_per_handler_each_with_its_own_role(synthesized: Synthesized) -> None:
    functions = {
        k: v["Properties"]
        for k, v in by_type(_vault(synthesized), "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler", "").startswith("vault.")
    }
    assert {f["Handler"] for f in functions.values()} == HANDLERS
    roles = {f["Role"]["Fn::GetAtt"][0] for f in functions.values()}
    assert len(roles) == 6
    for props in functions.values():
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        env = render(props["Environment"]["Variables"])
        if props["Handler"] == "vault.handlers.events.handler":
            # the lifecycle events' function knows its bus, and no table, key or secret
            assert set(env) == {
                "EVENT_BUS_NAME",
                "POWERTOOLS_SERVICE_NAME",
                "POWERTOOLS_METRICS_NAMESPACE",
            }
            continue
        assert set(env) >= {
            "TABLE_NAME",
            "REPLAY_TABLE_NAME",
            "KEY_ID",
            "CALLBACK_URL",
            "CLIENT_SECRET_PREFIX",
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
        }
        assert env["CLIENT_SECRET_PREFIX"] == "agent-vault/dev/provider/"
        # API keys (flow 12): where the grants point, and what the functions would derive
        assert env["API_KEY_SECRET_PREFIX"] == "agent-vault/dev/apikey/"
        assert env["CALLBACK_URL"].endswith("/v1/oauth/callback")
        assert env["POWERTOOLS_SERVICE_NAME"] == "agent-vault"
        # the proxy may call loopback only in local mode: never a deployed function
        assert "EGRESS_ALLOW_LOOPBACK" not in env


def test_every_log_group_has_a_retention(synthesized: Synthesized) -> None:
    for template in synthesized.templates.values():
        for group in by_type(template, "AWS::Logs::LogGroup").values():
            assert group["Properties"]["RetentionInDays"] == 30


def test_only_the_agent_api_and_the_proxy_write_the_replay_table(
    synthesized: Synthesized,
) -> None:
    writers = set()
    for logical_id, statement in policy_statements(_vault(synthesized)):
        resources = render(as_list(statement["Resource"]))
        if any("TablesReplay" in str(r) for r in resources):
            assert as_list(statement["Action"]) == ["dynamodb:PutItem"]
            writers.add(logical_id)
    assert {w[:8] for w in writers} == {"AgentApi", "ProxyApi"}


def test_the_callback_is_the_only_unauthenticated_route(synthesized: Synthesized) -> None:
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"].get("AuthorizationType")
        for r in by_type(_vault(synthesized), "AWS::ApiGatewayV2::Route").values()
    }
    documented = {
        f"{m} {p}" for m, p in (*AGENT_ROUTES, *PROXY_ROUTES, *ADMIN_ROUTES, *CALLBACK_ROUTES)
    }
    assert set(routes) == documented
    public = {key for key, auth in routes.items() if auth != "AWS_IAM"}
    assert public == {"GET /v1/oauth/callback", "GET /v1/oauth/callback/{provider}"}
    assert {routes[key] for key in public} == {"NONE"}


def test_the_stage_throttles_and_logs_access(synthesized: Synthesized) -> None:
    template = synthesized.template("Vault")
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": "$default",
            "AutoDeploy": True,
            "DefaultRouteSettings": {
                "ThrottlingRateLimit": Match.any_value(),
                "ThrottlingBurstLimit": Match.any_value(),
            },
            "AccessLogSettings": {
                "DestinationArn": Match.any_value(),
                "Format": Match.string_like_regexp("routeKey"),
            },
        },
    )
    stage = next(iter(by_type(_vault(synthesized), "AWS::ApiGatewayV2::Stage").values()))
    # The callback's query string carries `code` and `state`: it is never logged.
    assert "querystring" not in stage["Properties"]["AccessLogSettings"]["Format"].lower()


def test_the_reaper_listens_to_stopped_tasks_of_the_agent_cluster(synthesized: Synthesized) -> None:
    rules = [
        v
        for v in by_type(_vault(synthesized), "AWS::Events::Rule").values()
        if "aws.ecs" in v["Properties"].get("EventPattern", {}).get("source", [])
    ]
    assert len(rules) == 1
    rule = rules[0]["Properties"]
    pattern = render(rule["EventPattern"])
    assert pattern == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "lastStatus": ["STOPPED"],
            "clusterArn": ["arn:aws:ecs:eu-west-1:123456789012:cluster/agent-vault-dev"],
        },
    }
    target = rule["Targets"][0]
    assert target["Arn"]["Fn::GetAtt"][0].startswith("ReaperFunction")
    assert "Arn" in target["DeadLetterConfig"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0


def test_a_schedule_runs_the_admin_functions_sweep_of_unbound_flows(
    synthesized: Synthesized,
) -> None:
    rules = [
        r["Properties"]
        for r in by_type(_vault(synthesized), "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    assert len(rules) == 1
    (rule,) = rules
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = rule["Targets"]
    # the admin function (it may open every token already), never the reaper (session tokens only)
    assert target["Arn"]["Fn::GetAtt"][0].startswith("AdminApiFunction")
    assert "Arn" in target["DeadLetterConfig"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0


def test_the_dead_letter_queue_is_encrypted_and_tls_only(synthesized: Synthesized) -> None:
    template = synthesized.template("Vault")
    template.has_resource_properties("AWS::SQS::Queue", {"SqsManagedSseEnabled": True})
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
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


def test_provider_secrets_are_named_encrypted_and_hold_no_value(synthesized: Synthesized) -> None:
    secrets = [
        v["Properties"]
        for v in by_type(_vault(synthesized), "AWS::SecretsManager::Secret").values()
    ]
    assert sorted(s["Name"] for s in secrets) == [
        "agent-vault/dev/provider/google",
        "agent-vault/dev/provider/mail",
    ]
    for secret in secrets:
        assert "SecretString" not in secret
        assert "GenerateSecretString" in secret
        assert secret["KmsKeyId"] == {"Fn::GetAtt": [_vault_key_id(synthesized), "Arn"]}


def test_alarms_cover_api_5xx_and_every_function(synthesized: Synthesized) -> None:
    alarms = [
        v["Properties"] for v in by_type(_vault(synthesized), "AWS::CloudWatch::Alarm").values()
    ]
    metrics = {(a["Namespace"], a["MetricName"]) for a in alarms}
    assert ("AWS/ApiGateway", "5xx") in metrics
    assert sum(1 for a in alarms if a["MetricName"] == "Errors") == 6
    assert sum(1 for a in alarms if a["MetricName"] == "Throttles") == 6
    assert all(a["AlarmActions"] for a in alarms)
    template = synthesized.template("Vault")
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_outputs_name_what_an_operator_needs(synthesized: Synthesized) -> None:
    outputs = set(_vault(synthesized)["Outputs"])
    assert {
        "ApiUrl",
        "CallbackUrl",
        "VaultTableName",
        "ReplayTableName",
        "KeyArn",
        "ProviderSecretGoogle",
        "ProviderSecretMail",
        "CallbackUrlGoogle",
        "CallbackUrlMail",
    } <= outputs
