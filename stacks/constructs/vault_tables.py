"""The vault table and the proof replay-cache table (docs/architecture.md, "Tables").

Their keys, indexes and TTL are `vault.store.schema`'s, the one definition local mode and the
tests create their tables from too; this construct adds what only AWS has (encryption with the
vault key, point-in-time recovery, deletion protection, resource policy, grants)."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.constructs.vault_key import VaultKey
from vault.store.schema import BILLING_MODE, KEY_TYPE, REPLAY_TABLE, VAULT_TABLE, TableSchema

INDEXES = tuple(index.name for index in VAULT_TABLE.indexes)
_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}

DATA_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:PartiQLSelect",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ExportTableToPointInTime",
    "dynamodb:RestoreTableToPointInTime",
    "dynamodb:RestoreTableFromBackup",
    "dynamodb:CreateBackup",
)
"""Every action that reads, writes or copies the vault table's items: the table's resource
policy denies them to any principal but the vault's functions. Control-plane actions
(DescribeTable, UpdateTable, tags, the resource policy itself) stay with CloudFormation."""


def _key(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[KEY_TYPE])


class VaultTables(Construct):
    """On-demand tables encrypted with the vault key, with TTL and point-in-time recovery.

    In prod they have deletion protection and are retained when the stack goes.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, key: VaultKey, protect: bool
    ) -> None:
        super().__init__(scope, construct_id)
        self._key = key
        self._protect = protect
        self.vault = self._table("Vault", VAULT_TABLE)
        # Proof jtis only (no secret, no CloudTrail data events): a conditional put per request.
        self.replay = self._table("Replay", REPLAY_TABLE)

    def _table(self, construct_id: str, schema: TableSchema) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            construct_id,
            partition_key=_key(schema.partition_key),
            sort_key=_key(schema.sort_key) if schema.sort_key else None,
            billing_mode=dynamodb.BillingMode(BILLING_MODE),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self._key.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=schema.ttl_attribute,
            stream=dynamodb.StreamViewType(schema.stream_view) if schema.stream_view else None,
            deletion_protection=self._protect,
            removal_policy=RemovalPolicy.RETAIN if self._protect else RemovalPolicy.DESTROY,
        )
        for index in schema.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_key(index.pk),
                sort_key=_key(index.sk),
                projection_type=dynamodb.ProjectionType(index.projection),
            )
        return table

    def grant_items(self, grantee: iam.IGrantable, *, prefix: str, actions: Sequence[str]) -> None:
        """Item actions on the vault table, only on items whose partition key starts with
        `prefix` (`dynamodb:LeadingKeys`; a transaction's items are authorized one by one)."""
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[f"dynamodb:{a}" for a in sorted(actions)],
            resource_arns=[self.vault.table_arn],
            conditions={
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{prefix}*"]},
                "Null": {"dynamodb:LeadingKeys": "false"},
            },
        )

    def grant_index_queries(self, grantee: iam.IGrantable, *, indexes: Sequence[str]) -> None:
        """Queries on the named indexes of the vault table."""
        unknown = set(indexes) - set(INDEXES)
        if unknown or not indexes:
            raise ValueError(f"indexes must be a non-empty subset of {INDEXES}")
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["dynamodb:Query"],
            resource_arns=[f"{self.vault.table_arn}/index/{name}" for name in sorted(indexes)],
        )

    def grant_table_encryption(self, grantee: iam.IGrantable) -> None:
        """The vault key, as DynamoDB uses it for a caller of the tables (`kms:ViaService`)."""
        self._key.grant_table_encryption(grantee, write=True)

    def deny_all_but(self, roles: Sequence[iam.IRole]) -> None:
        """The vault table's resource policy: nobody but `roles` reads, writes or copies items,
        whatever their IAM policies allow."""
        self.vault.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyTheVaultReadsOrWritesItems",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(DATA_ACTIONS),
                resources=["*"],  # the table's own ARN would be a circular reference
                conditions={"ArnNotEquals": {"aws:PrincipalArn": [r.role_arn for r in roles]}},
            )
        )

    def grant_replay_writes(self, grantee: iam.IGrantable) -> None:
        """Record a proof's jti (a conditional PutItem) and nothing else."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["dynamodb:PutItem"], resource_arns=[self.replay.table_arn]
        )
