"""One Secrets Manager secret per OAuth provider: its client secret, set by the operator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct


def secret_prefix(environment: str) -> str:
    """Provider `p`'s client secret is the secret named `<prefix><p>` (CLIENT_SECRET_PREFIX)."""
    return f"agent-vault/{environment}/provider/"


class ProviderSecrets(Construct):
    """The secrets are created holding a random placeholder, never the real client secret.

    CloudFormation must give a new secret a value; a template must never carry a real one. So
    each starts as 32 random characters that no provider accepts (the vault fails closed with a
    provider error) until the operator stores the client secret with `put-secret-value`
    (docs/deploy.md). Later deployments leave the value alone.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        providers: Iterable[str],
        key: kms.IKey,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = secret_prefix(environment)
        self.secrets: dict[str, secretsmanager.Secret] = {}
        for name in providers:
            self.secrets[name] = secretsmanager.Secret(
                self,
                name,
                secret_name=f"{self.prefix}{name}",
                description=f"Agent Vault ({environment}): OAuth client secret for provider"
                f" {name!r}; a placeholder until the operator puts the real one",
                encryption_key=key,
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=32, exclude_punctuation=True
                ),
                removal_policy=removal_policy,
            )

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Read the provider client secrets (GetSecretValue, the one call the vault makes; the
        key policy lets the vault's roles decrypt them through Secrets Manager only)."""
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["secretsmanager:GetSecretValue"],
            resource_arns=[secret.secret_arn for secret in self.secrets.values()],
        )

    def deny_reads_but(self, roles: Sequence[iam.IRole]) -> None:
        """Each secret's resource policy: nobody but `roles` reads its value, whatever their
        IAM policies allow (the operator still puts it: PutSecretValue is not denied)."""
        for secret in self.secrets.values():
            secret.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="OnlyTheVaultReadsTheValue",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["secretsmanager:GetSecretValue"],
                    resources=["*"],
                    conditions={"ArnNotEquals": {"aws:PrincipalArn": [r.role_arn for r in roles]}},
                )
            )
