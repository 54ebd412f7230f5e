"""The vault's customer-managed KMS key, with a key policy that says who may use it for what."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, DefaultStackSynthesizer, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

ENCRYPTION_PURPOSES = ("token", "verifier", "machine_token")
"""The `purpose` the vault's envelope encryption always puts in the encryption context."""

KEY_ADMIN_ACTIONS = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
)
"""Managing the audit and alarm keys, not using them: no Encrypt, Decrypt, GenerateDataKey or
ReEncrypt (their policies also let the account use or read them where their services need)."""


def account_key_administration() -> iam.PolicyStatement:
    """The audit and alarm keys' administration by the account (KEY_ADMIN_ACTIONS, no use)."""
    return iam.PolicyStatement(
        sid="KeyAdministration",
        principals=[iam.AccountRootPrincipal()],
        actions=list(KEY_ADMIN_ACTIONS),
        resources=["*"],
    )


VAULT_KEY_ADMIN_ACTIONS = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:RotateKeyOnDemand",
    "kms:UpdateKeyDescription",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)
"""Administering the vault key, spelled out: no use (Encrypt, Decrypt, GenerateDataKey*,
ReEncrypt*), no CreateGrant (a grant is use by another name) and no PutKeyPolicy (a policy that
names oneself is use too): `kms:Create*`/`kms:Put*` would include both."""

KEY_POLICY_ACTIONS = ("kms:PutKeyPolicy",)
"""Only the deploying role (CloudFormation) may replace the key policy: KMS refuses a policy
that would leave the caller unable to change it again (the lockout safety check), and a change of
the policy is then a reviewed deployment, recorded by CloudTrail and alarmed on."""

TABLE_ENCRYPTION_ACTIONS = (
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)
"""What DynamoDB asks of a caller of a table encrypted with this key (spelled out rather than
`GenerateDataKey*` / `ReEncrypt*`)."""

SECRET_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
"""What Secrets Manager asks of a caller that puts (GenerateDataKey) or reads (Decrypt) a secret
encrypted with this key."""

TOKEN_CONTEXT_KEYS = {
    "grant": ("purpose", "user", "provider", "grant", "scopes"),
    "session": ("purpose", "user", "provider", "session", "scopes"),
}
"""Encryption context keys of token material (vault.models.token_context): a grant's refresh
token (and a consent's tokens) carry `grant`, a session's access token carries `session`."""


def deploy_role_arn(scope: Construct, configured: str | None) -> str:
    """The role CloudFormation deploys the stacks as: the config's `deploy_role_arn`, else the
    CDK bootstrap's CloudFormation execution role."""
    if configured:
        return configured
    synthesizer = Stack.of(scope).synthesizer
    if isinstance(synthesizer, DefaultStackSynthesizer):
        return Fn.sub(synthesizer.cloud_formation_execution_role_arn)
    return (
        f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/cdk-hnb659fds-cfn-exec-role-"
        f"{Aws.ACCOUNT_ID}-{Aws.REGION}"
    )


class VaultKey(Construct):
    """A symmetric key with yearly rotation and an alias; its policy names every user.

    The key policy is written once the vault's function roles exist (`restrict_to`): only those
    roles may use the key, each statement conditioned on `aws:PrincipalArn` (so their IAM
    policies, written function by function in the stack, narrow it further); a key administrator
    manages it without any use, grant or policy right; the deploying role alone may change the
    policy and let DynamoDB and Secrets Manager create their grants. Nobody else in the account,
    whatever their IAM policies say, can decrypt a vault ciphertext.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Agent Vault ({environment}): tokens, PKCE verifiers, tables, secrets",
            alias=f"alias/agent-vault-{environment}",
            enable_key_rotation=True,
            rotation_period=Duration.days(365),
            removal_policy=removal_policy,
            pending_window=Duration.days(30),
        )

    def restrict_to(
        self,
        users: Sequence[iam.IRole],
        *,
        admin_role_arn: str | None,
        deploy_role_arn: str,
        api_key_secrets: str | None = None,
        stream_readers: Sequence[iam.IRole] = (),
    ) -> iam.PolicyDocument:
        """Write the key policy: `users` (the vault's function roles) are its only users;
        `stream_readers` (the events function) only read the table's stream through DynamoDB.

        It replaces whatever constructs added on their own (e.g. Secrets Manager's
        account-wide statement): every statement is here. `api_key_secrets`: the ARN pattern of
        the API-key secrets (flow 12), which the vault's roles write and read through Secrets
        Manager (each role's IAM policy narrows which).
        """
        account = iam.AccountRootPrincipal()
        user_arns = [role.role_arn for role in users]
        vault_only = {"ArnEquals": {"aws:PrincipalArn": user_arns}}
        dynamodb = f"dynamodb.{Aws.REGION}.amazonaws.com"
        secretsmanager = f"secretsmanager.{Aws.REGION}.amazonaws.com"
        admin = iam.ArnPrincipal(admin_role_arn) if admin_role_arn else account
        deployer = iam.ArnPrincipal(deploy_role_arn)

        def vault_use_via(sid: str, actions: Sequence[str], service: str) -> iam.PolicyStatement:
            """The vault's roles (and no one else) use the key through one AWS service."""
            return iam.PolicyStatement(
                sid=sid,
                principals=[account],
                actions=list(actions),
                resources=["*"],
                conditions={
                    **vault_only,
                    "StringEquals": {
                        "kms:ViaService": service,
                        "kms:CallerAccount": Aws.ACCOUNT_ID,
                    },
                },
            )

        document = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="KeyAdministration",
                    principals=[admin, deployer],
                    actions=list(VAULT_KEY_ADMIN_ACTIONS),
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="KeyPolicyByDeployment",
                    principals=[deployer],
                    actions=list(KEY_POLICY_ACTIONS),
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="TableAndSecretGrantsByDeployment",
                    principals=[deployer],
                    actions=["kms:CreateGrant", "kms:DescribeKey"],
                    resources=["*"],
                    conditions={
                        "StringEquals": {"kms:ViaService": [dynamodb, secretsmanager]},
                        "Bool": {"kms:GrantIsForAWSResource": "true"},
                    },
                ),
                iam.PolicyStatement(
                    sid="PutProviderSecrets",
                    principals=[admin, deployer],
                    actions=["kms:GenerateDataKey", "kms:Encrypt"],
                    resources=["*"],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": secretsmanager,
                            "kms:CallerAccount": Aws.ACCOUNT_ID,
                        }
                    },
                ),
                vault_use_via("VaultTableEncryption", TABLE_ENCRYPTION_ACTIONS, dynamodb),
                vault_use_via("VaultReadsProviderSecrets", ("kms:Decrypt",), secretsmanager),
                iam.PolicyStatement(
                    sid="VaultEnvelopeEncryption",
                    principals=[account],
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=["*"],
                    conditions={
                        **vault_only,
                        "StringEquals": {
                            "kms:EncryptionContext:purpose": list(ENCRYPTION_PURPOSES)
                        },
                    },
                ),
            ]
        )
        if api_key_secrets is not None:
            document.add_statements(
                iam.PolicyStatement(
                    sid="VaultApiKeySecrets",
                    principals=[account],
                    actions=list(SECRET_KEY_ACTIONS),
                    resources=["*"],
                    conditions={
                        **vault_only,
                        "StringEquals": {
                            "kms:ViaService": secretsmanager,
                            "kms:CallerAccount": Aws.ACCOUNT_ID,
                        },
                        "StringLike": {"kms:EncryptionContext:SecretARN": api_key_secrets},
                    },
                )
            )
        if stream_readers:
            document.add_statements(
                iam.PolicyStatement(
                    sid="VaultStreamReads",
                    principals=[account],
                    actions=["kms:Decrypt", "kms:DescribeKey"],
                    resources=["*"],
                    conditions={
                        "ArnEquals": {"aws:PrincipalArn": [r.role_arn for r in stream_readers]},
                        "StringEquals": {
                            "kms:ViaService": dynamodb,
                            "kms:CallerAccount": Aws.ACCOUNT_ID,
                        },
                    },
                )
            )
        cfn_key = self.key.node.default_child
        assert isinstance(cfn_key, kms.CfnKey)
        cfn_key.key_policy = document
        return document

    def grant_envelope_encryption(
        self,
        grantee: iam.IGrantable,
        *,
        actions: Sequence[str],
        purpose: str,
        context: str | None = None,
    ) -> iam.Grant:
        """Let `grantee` make (`kms:GenerateDataKey`) and/or open (`kms:Decrypt`) data keys of
        one encryption purpose only; for tokens, optionally only those bound to a `grant` or to
        a `session` (TOKEN_CONTEXT_KEYS)."""
        if purpose not in ENCRYPTION_PURPOSES:
            raise ValueError(f"purpose must be one of {ENCRYPTION_PURPOSES}")
        if not set(actions) <= {"kms:GenerateDataKey", "kms:Decrypt"} or not actions:
            raise ValueError("actions are kms:GenerateDataKey and/or kms:Decrypt")
        conditions: dict[str, dict[str, object]] = {
            "StringEquals": {"kms:EncryptionContext:purpose": purpose}
        }
        if context is not None:
            keys = TOKEN_CONTEXT_KEYS[context]
            conditions["ForAllValues:StringEquals"] = {"kms:EncryptionContextKeys": list(keys)}
            conditions["ForAnyValue:StringEquals"] = {"kms:EncryptionContextKeys": context}
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=sorted(actions),
            resource_arns=[self.key.key_arn],
            conditions=conditions,
        )

    def grant_secret_encryption(
        self, grantee: iam.IGrantable, *, actions: Sequence[str], secrets: str
    ) -> iam.Grant:
        """Let `grantee` put (`kms:GenerateDataKey`) and/or read (`kms:Decrypt`) the secrets
        matching the ARN pattern `secrets` through Secrets Manager, and nothing else."""
        if not set(actions) <= set(SECRET_KEY_ACTIONS) or not actions:
            raise ValueError(f"actions are some of {SECRET_KEY_ACTIONS}")
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=sorted(actions),
            resource_arns=[self.key.key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"secretsmanager.{Aws.REGION}.amazonaws.com"},
                "StringLike": {"kms:EncryptionContext:SecretARN": secrets},
            },
        )

    def grant_table_encryption(self, grantee: iam.IGrantable, *, write: bool) -> iam.Grant:
        """What DynamoDB needs of a caller of a table encrypted with this key."""
        actions = list(TABLE_ENCRYPTION_ACTIONS) if write else ["kms:Decrypt", "kms:DescribeKey"]
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=actions,
            resource_arns=[self.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com"}},
        )
