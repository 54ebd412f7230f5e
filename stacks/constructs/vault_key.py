"""The vault's customer-managed KMS key, with a key policy that says who may use it for what."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

ENCRYPTION_PURPOSES = ("token", "verifier")
"""The `purpose` the vault's envelope encryption always puts in the encryption context."""

KEY_ADMIN_ACTIONS = (
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
)
"""Managing the key, not using it: no Encrypt, Decrypt, GenerateDataKey or ReEncrypt."""

SERVICE_USE_ACTIONS = (
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey",
    "kms:CreateGrant",
)


class VaultKey(Construct):
    """A symmetric key with yearly rotation and an alias.

    The key policy delegates to IAM (the account) only:
    - key administration;
    - use through DynamoDB (table SSE), by `kms:ViaService` (the Secrets Manager secrets add the
      same statement for Secrets Manager, and name the roles that may read them);
    - direct GenerateDataKey/Decrypt only with an encryption context whose `purpose` is one of
      ENCRYPTION_PURPOSES (the vault's envelope encryption).
    Which roles may do each is then decided by their IAM policies, written in the stack.
    """

    def __init__(self, scope: Construct, construct_id: str, *, environment: str,
                 removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        account = iam.AccountRootPrincipal()
        policy = iam.PolicyDocument(statements=[
            iam.PolicyStatement(
                sid="KeyAdministration", principals=[account], actions=list(KEY_ADMIN_ACTIONS),
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="UseThroughDynamoDB", principals=[account],
                actions=list(SERVICE_USE_ACTIONS), resources=["*"],
                conditions={
                    "StringEquals": {
                        "kms:CallerAccount": Aws.ACCOUNT_ID,
                        "kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com",
                    },
                },
            ),
            iam.PolicyStatement(
                sid="VaultEnvelopeEncryption", principals=[account],
                actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=["*"],
                conditions={
                    "StringEquals": {"kms:EncryptionContext:purpose": list(ENCRYPTION_PURPOSES)},
                },
            ),
        ])
        self.key = kms.Key(
            self, "Key",
            description=f"Agent Vault ({environment}): tokens, PKCE verifiers, tables, secrets",
            alias=f"alias/agent-vault-{environment}",
            enable_key_rotation=True,
            rotation_period=Duration.days(365),
            policy=policy,
            removal_policy=removal_policy,
            pending_window=Duration.days(30),
        )

    def grant_envelope_encryption(self, grantee: iam.IGrantable, *, purposes: tuple[str, ...],
                                  decrypt_only: bool = False) -> iam.Grant:
        """Let `grantee` make and/or open data keys, only for the given encryption purposes."""
        unknown = set(purposes) - set(ENCRYPTION_PURPOSES)
        if unknown or not purposes:
            raise ValueError(f"purposes must be a non-empty subset of {ENCRYPTION_PURPOSES}")
        actions = ["kms:Decrypt"] if decrypt_only else ["kms:GenerateDataKey", "kms:Decrypt"]
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=actions,
            resource_arns=[self.key.key_arn],
            conditions={"StringEquals": {"kms:EncryptionContext:purpose": list(purposes)}},
        )

    def grant_table_encryption(self, grantee: iam.IGrantable, *, write: bool) -> iam.Grant:
        """What DynamoDB needs of a caller of a table encrypted with this key."""
        actions = ["kms:Decrypt", "kms:DescribeKey"]
        if write:  # spelled out rather than `GenerateDataKey*` / `ReEncrypt*`
            actions += ["kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                        "kms:ReEncryptFrom", "kms:ReEncryptTo"]
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=actions,
            resource_arns=[self.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Aws.REGION}.amazonaws.com"}},
        )
