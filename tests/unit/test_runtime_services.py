"""What a container builds for its first request (`vault.runtime.build_services`): Secrets Manager's
client only once a request reads a client secret or an API key."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stacks.config import REPO_ROOT, read_config_file
from tests.support.aws import aws
from vault.runtime import Settings, build_services


def test_secrets_manager_is_built_at_its_first_use_once_for_client_secrets_and_api_keys() -> None:
    config = read_config_file(REPO_ROOT / "config" / "example.json")
    provider = next(iter(config.providers))
    settings = Settings(
        table_name="vault",
        replay_table_name="replay",
        key_id="arn:aws:kms:eu-west-1:123456789012:key/test",
        callback_url="https://vault.example/v1/oauth/callback",
        client_secret_prefix="agent-vault/test/provider/",
    )
    with aws() as session:
        session.client("secretsmanager").create_secret(
            Name=settings.client_secret_prefix + provider, SecretString="s3cr3t-value"
        )
        built: Counter[str] = Counter()

        def creating(event_name: str, **_: Any) -> None:
            built[event_name.rsplit(".", 1)[-1]] += 1

        session.events.register("creating-client-class", creating)
        services = build_services(settings, config=config, session=session)
        assert built["secrets-manager"] == 0
        assert built["dynamodb"] == built["kms"] == 1  # every first request reads and decrypts

        assert services.providers[provider]._client_secret() == "s3cr3t-value"
        assert services.api_keys.get(services.api_keys.name(provider, None)) is None
        assert services.providers[provider]._client_secret() == "s3cr3t-value"
        assert built["secrets-manager"] == 1  # one client, shared, built once
