"""SECURITY.md row 48: a principal of the account with `kms:Decrypt` on `*` and table read
cannot decrypt a vault ciphertext (dev and prod templates).

The key policy names the vault's function roles as its only users; administration carries no
use, grant or policy right; the vault table and the provider secrets deny everyone else; and an
EventBridge rule reports envelope use of the key by anyone else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.cfn import PSEUDO, as_list, render
from tests.infra.conftest import KEY_ADMIN_ROLE_ARN, Synthesized, by_type

USE = {
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",
    "kms:PutKeyPolicy",
}
"""Actions that use the key, or hand its use to someone (a grant, a new policy)."""
FUNCTIONS = ("AgentApi", "ProxyApi", "Callback", "AdminApi", "Reaper")
DEPLOY_ROLE = "arn:aws:iam::123456789012:role/cdk-hnb659fds-cfn-exec-role-123456789012-eu-west-1"


@pytest.fixture(params=["synthesized", "synthesized_prod"])
def synthesized_any(request: pytest.FixtureRequest) -> Synthesized:
    synthesized: Synthesized = request.getfixturevalue(request.param)
    return synthesized


def _vault(s: Synthesized) -> dict[str, Any]:
    return s.templates["Vault"]


def _vault_roles(template: dict[str, Any]) -> list[dict[str, Any]]:
    roles = [
        k
        for k in by_type(template, "AWS::IAM::Role")
        if k.startswith(tuple(f"{f}Role" for f in FUNCTIONS))
    ]
    assert len(roles) == len(FUNCTIONS), roles
    return sorted(({"Fn::GetAtt": [r, "Arn"]} for r in roles), key=json.dumps)


def _events_role(template: dict[str, Any]) -> str:
    (role,) = [k for k in by_type(template, "AWS::IAM::Role") if k.startswith("LifecycleEvents")]
    return role


def _key_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    keys = [
        v
        for v in by_type(template, "AWS::KMS::Key").values()
        if "tokens" in v["Properties"]["Description"]
    ]
    (key,) = keys
    return list(key["Properties"]["KeyPolicy"]["Statement"])


def _arn(value: Any) -> str:
    """A principal ARN, `Fn::Sub` of pseudo parameters included."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        text = str(value["Fn::Sub"])
        for name, rendered in PSEUDO.items():
            text = text.replace("${" + name + "}", rendered)
        return text
    return str(render(value))


def _principals(statement: dict[str, Any]) -> list[str]:
    return sorted(_arn(p) for p in as_list(statement["Principal"]["AWS"]))


def _expand(actions: list[str]) -> set[str]:
    """Which of USE a list of actions (wildcards included) allows."""
    import fnmatch

    return {u for u in USE if any(fnmatch.fnmatchcase(u, a) for a in actions)}


def test_row_48_only_the_vault_roles_may_decrypt_or_make_data_keys(
    synthesized_any: Synthesized,
) -> None:
    template = _vault(synthesized_any)
    roles = _vault_roles(template)
    decrypting = []
    for statement in _key_statements(template):
        assert statement["Effect"] == "Allow"
        use = _expand(as_list(statement["Action"]))
        if "kms:GenerateDataKey" in use and "kms:Decrypt" not in use:
            # sealing a provider secret through Secrets Manager, which can never be read back
            assert statement["Sid"] == "PutProviderSecrets", statement
        if "kms:Decrypt" in use:
            decrypting.append(statement)
            # The account delegates to IAM, but only for the vault's roles.
            assert _principals(statement) == ["arn:aws:iam::123456789012:root"], statement
            pinned = statement["Condition"]["ArnEquals"]["aws:PrincipalArn"]
            if statement["Sid"] == "VaultStreamReads":
                # the lifecycle events' function: the table's stream through DynamoDB only
                assert pinned == [{"Fn::GetAtt": [_events_role(template), "Arn"]}], statement
                assert "dynamodb." in json.dumps(
                    render(statement["Condition"]["StringEquals"]["kms:ViaService"])
                )
                assert use == {"kms:Decrypt"}, statement
                continue
            assert sorted(pinned, key=json.dumps) == roles, statement
    assert {s["Sid"] for s in decrypting} == {
        "VaultTableEncryption",
        "VaultReadsProviderSecrets",
        "VaultApiKeySecrets",
        "VaultEnvelopeEncryption",
        "VaultStreamReads",
    }
    # API keys (flow 12): only through Secrets Manager, only the API-key secrets
    api_keys = next(s for s in decrypting if s["Sid"] == "VaultApiKeySecrets")
    assert "secretsmanager." in json.dumps(
        render(api_keys["Condition"]["StringEquals"]["kms:ViaService"])
    )
    secret_arn = json.dumps(api_keys["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"])
    assert ":secret:agent-vault/" in secret_arn and "/apikey/*" in secret_arn
    envelope = next(s for s in decrypting if s["Sid"] == "VaultEnvelopeEncryption")
    assert envelope["Condition"]["StringEquals"] == {
        "kms:EncryptionContext:purpose": ["token", "verifier", "machine_token"]
    }


def test_row_48_key_administration_has_no_use_grant_or_policy_right(
    synthesized_any: Synthesized,
) -> None:
    statements = {s["Sid"]: s for s in _key_statements(_vault(synthesized_any))}
    admin = statements["KeyAdministration"]
    assert not any("*" in a for a in as_list(admin["Action"])), admin["Action"]
    assert _expand(as_list(admin["Action"])) == set()
    expected_admin = (
        KEY_ADMIN_ROLE_ARN
        if synthesized_any.built.config.key_admin_role_arn
        else "arn:aws:iam::123456789012:root"
    )
    assert _principals(admin) == sorted([expected_admin, DEPLOY_ROLE])
    # Only the deploying role (CloudFormation) may replace the policy.
    changing = [
        s for s in statements.values() if "kms:PutKeyPolicy" in _expand(as_list(s["Action"]))
    ]
    assert [s["Sid"] for s in changing] == ["KeyPolicyByDeployment"]
    assert _principals(changing[0]) == [DEPLOY_ROLE]
    # Grants: only for DynamoDB and Secrets Manager's own use, by the deploying role.
    granting = [
        s for s in statements.values() if "kms:CreateGrant" in _expand(as_list(s["Action"]))
    ]
    assert [s["Sid"] for s in granting] == ["TableAndSecretGrantsByDeployment"]
    assert granting[0]["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
    assert _principals(granting[0]) == [DEPLOY_ROLE]
    # Putting a provider secret encrypts; it never decrypts.
    assert set(as_list(statements["PutProviderSecrets"]["Action"])) == {
        "kms:GenerateDataKey",
        "kms:Encrypt",
    }
    assert "secretsmanager." in json.dumps(
        render(statements["PutProviderSecrets"]["Condition"]["StringEquals"]["kms:ViaService"])
    )


def test_row_48_the_vault_table_denies_every_other_principal_its_items(
    synthesized_any: Synthesized,
) -> None:
    template = _vault(synthesized_any)
    (table,) = [v for k, v in by_type(template, "AWS::DynamoDB::Table").items() if "Vault" in k]
    (deny,) = table["Properties"]["ResourcePolicy"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
    assert {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:BatchGetItem",
        "dynamodb:PartiQLSelect",
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:RestoreTableToPointInTime",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    } <= set(deny["Action"])
    # CloudFormation keeps managing the table itself.
    assert not {
        "dynamodb:DescribeTable",
        "dynamodb:UpdateTable",
        "dynamodb:DeleteTable",
        "dynamodb:PutResourcePolicy",
    } & set(deny["Action"])
    assert sorted(
        deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"], key=json.dumps
    ) == _vault_roles(template)


def test_row_48_provider_secrets_deny_their_value_to_every_other_principal(
    synthesized_any: Synthesized,
) -> None:
    template = _vault(synthesized_any)
    secrets = by_type(template, "AWS::SecretsManager::Secret")
    policies = by_type(template, "AWS::SecretsManager::ResourcePolicy")
    assert {p["Properties"]["SecretId"]["Ref"] for p in policies.values()} == set(secrets)
    for policy in policies.values():
        statements = policy["Properties"]["ResourcePolicy"]["Statement"]
        (deny,) = [s for s in statements if s["Effect"] == "Deny"]
        assert deny["Principal"] == {"AWS": "*"}
        assert as_list(deny["Action"]) == ["secretsmanager:GetSecretValue"]
        assert sorted(
            deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"], key=json.dumps
        ) == _vault_roles(template)
        assert not [s for s in statements if s["Effect"] == "Allow"]


def _matches(pattern: Any, event: Any) -> bool:
    """EventBridge matching, for the operators the rule uses."""
    if isinstance(event, list):  # an array of objects matches if one element does
        return any(_matches(pattern, element) for element in event)
    if isinstance(pattern, dict):
        for key, sub in pattern.items():
            if key == "$or":
                if not any(_matches(alternative, event) for alternative in sub):
                    return False
                continue
            if isinstance(sub, list):
                if not _matches_value(sub, event, key):
                    return False
            elif not isinstance(event, dict) or key not in event or not _matches(sub, event[key]):
                return False
        return True
    raise AssertionError(pattern)


def _matches_value(options: list[Any], event: Any, key: str) -> bool:
    present = isinstance(event, dict) and key in event
    values = as_list(event[key]) if present else []
    for option in options:
        if isinstance(option, dict) and "exists" in option:
            if option["exists"] == present:
                return True
        elif isinstance(option, dict) and "anything-but" in option:
            if present and all(v not in as_list(option["anything-but"]) for v in values):
                return True
        elif present and option in values:
            return True
    return False


def _decrypt_event(
    key_arn: str, identity: dict[str, Any], context: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "source": "aws.kms",
        "detail-type": "AWS API Call via CloudTrail",
        "detail": {
            "eventSource": "kms.amazonaws.com",
            "eventName": "Decrypt",
            "userIdentity": identity,
            "requestParameters": {
                "encryptionContext": context
                if context is not None
                else {"purpose": "token", "user": "u", "provider": "google", "grant": "grt_x"}
            },
            "resources": [{"ARN": key_arn, "type": "AWS::KMS::Key"}],
        },
    }


def _assumed(role_arn: str) -> dict[str, Any]:
    return {"type": "AssumedRole", "sessionContext": {"sessionIssuer": {"arn": role_arn}}}


def test_row_48_envelope_use_of_the_key_by_another_principal_is_reported(
    synthesized_any: Synthesized,
) -> None:
    template = _vault(synthesized_any)
    (key_id,) = [
        k
        for k, v in by_type(template, "AWS::KMS::Key").items()
        if "tokens" in v["Properties"]["Description"]
    ]
    rules = [
        v
        for v in by_type(template, "AWS::Events::Rule").values()
        if "kms.amazonaws.com" in json.dumps(v)
    ]
    (rule,) = rules
    props = rule["Properties"]
    # KMS calls are read-only management events: delivered only in this state.
    assert props["State"] == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
    (target,) = props["Targets"]
    assert target["Arn"]["Ref"].startswith("AlarmsTopic")
    key_arn = f"<{key_id}.Arn>"
    pattern = render(props["EventPattern"])
    roles = [render(r) for r in _vault_roles(template)]
    intruder = _assumed("arn:aws:iam::123456789012:role/PowerUser")
    assert _matches(pattern, _decrypt_event(key_arn, intruder))
    assert _matches(pattern, _decrypt_event(key_arn, {"type": "IAMUser", "arn": "u"}))
    for role in roles:
        assert not _matches(pattern, _decrypt_event(key_arn, _assumed(role)))
    # Not the table's or the secrets' own use through their services, nor another key.
    assert not _matches(
        pattern,
        _decrypt_event(
            key_arn, intruder, {"aws:dynamodb:tableName": "t", "aws:dynamodb:subscriberId": "1"}
        ),
    )
    assert not _matches(pattern, _decrypt_event("arn:aws:kms:eu-west-1:1:key/other", intruder))
