"""The vault table and the proof replay-cache table (docs/architecture.md, "Tables")."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.constructs.vault_key import VaultKey

TTL_ATTRIBUTE = "ttl"
INDEXES = ("gsi1", "gsi2")

READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query",
                "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable")
WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                 "dynamodb:BatchWriteItem")
"""Transactions are authorized by these item actions (there is no TransactWriteItems action)."""


def _string(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


class VaultTables(Construct):
    """On-demand tables encrypted with the vault key, with TTL and point-in-time recovery.

    In prod they have deletion protection and are retained when the stack goes.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: VaultKey,
                 protect: bool) -> None:
        super().__init__(scope, construct_id)
        self._key = key
        self._protect = protect
        self.vault = self._table("Vault", sort_key="sk")
        for index in INDEXES:
            self.vault.add_global_secondary_index(
                index_name=index,
                partition_key=_string(f"{index}pk"),
                sort_key=_string(f"{index}sk"),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        # Proof jtis only (no secret, no CloudTrail data events): a conditional put per request.
        self.replay = self._table("Replay", sort_key=None)

    def _table(self, construct_id: str, *, sort_key: str | None) -> dynamodb.Table:
        return dynamodb.Table(
            self, construct_id,
            partition_key=_string("pk"),
            sort_key=_string(sort_key) if sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self._key.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute=TTL_ATTRIBUTE,
            deletion_protection=self._protect,
            removal_policy=RemovalPolicy.RETAIN if self._protect else RemovalPolicy.DESTROY,
        )

    def grant_vault_data(self, grantee: iam.IGrantable, *, write: bool,
                         indexes: tuple[str, ...] = ()) -> None:
        """Item reads (and writes) on the vault table, queries on the named indexes only."""
        actions = [*READ_ACTIONS, *(WRITE_ACTIONS if write else ())]
        iam.Grant.add_to_principal(grantee=grantee, actions=actions,
                                   resource_arns=[self.vault.table_arn])
        if indexes:
            iam.Grant.add_to_principal(
                grantee=grantee, actions=["dynamodb:Query"],
                resource_arns=[f"{self.vault.table_arn}/index/{name}" for name in indexes])
        self._key.grant_table_encryption(grantee, write=write)

    def grant_replay_writes(self, grantee: iam.IGrantable) -> None:
        """Record a proof's jti (a conditional PutItem) and nothing else."""
        iam.Grant.add_to_principal(grantee=grantee, actions=["dynamodb:PutItem"],
                                   resource_arns=[self.replay.table_arn])
        self._key.grant_table_encryption(grantee, write=True)
