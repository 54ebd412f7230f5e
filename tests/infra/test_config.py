"""The deployment config: one model, validated at synth, errors that name the key."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from stacks.config import (
    CONTEXT_KEY,
    REPO_ROOT,
    ConfigError,
    config_from_context,
    parse_config,
    read_config_file,
)
from stacks.constructs.vault_code import (
    PROVIDED_BY_RUNTIME,
    RUNTIME,
    asset_hash,
    bundled_requirements,
    config_document,
    provided_by_runtime,
    with_hashes,
)
from stacks.runtime_python import PYTHON_VERSION
from vault.config import (
    EVERY_REQUEST,
    HTTP_METHODS,
    AgentConfig,
    IdentityIssuerConfig,
    ProviderConfig,
    RequestRule,
    VaultConfig,
    load_config,
    model_stamp,
)

EXAMPLE = REPO_ROOT / "config" / "example.json"


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def test_the_example_config_is_valid_and_is_cdk_json_default() -> None:
    config = read_config_file(EXAMPLE)
    assert set(config.providers) == {"google", "mail"}
    assert set(config.agents) == {"calendar-agent", "mail-agent"}
    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    assert cdk_json["context"][CONTEXT_KEY] == example()


def test_a_config_file_named_in_the_context_replaces_the_default(tmp_path: Any) -> None:
    data = example()
    data["environment"] = "staging"
    path = tmp_path / "staging.json"
    path.write_text(json.dumps(data))
    context = {CONTEXT_KEY: example(), "config": str(path)}
    assert config_from_context(context.get).environment == "staging"


def _access(data: dict[str, Any], agent: str, provider: str) -> dict[str, Any]:
    """An agent's entry at a provider, as an object (the shorthand list turned into one)."""
    providers = data["agents"][agent]["providers"]
    if isinstance(providers[provider], list):
        providers[provider] = {"scopes": providers[provider]}
    entry: dict[str, Any] = providers[provider]
    return entry


def _error(change: Any) -> str:
    data = copy.deepcopy(example())
    change(data)
    with pytest.raises(ConfigError) as raised:
        parse_config(data, source="test.json")
    return str(raised.value)


@pytest.mark.parametrize(
    ("change", "key", "says"),
    [
        (
            lambda d: d["agents"]["calendar-agent"]["providers"]["google"].append(
                "https://mail.google.com/"
            ),
            "agents.calendar-agent.providers.google",
            "not in providers.google.scopes",
        ),
        (lambda d: d.update(retention=3), "retention", "unknown key"),
        (
            lambda d: d["providers"]["mail"].update(tokn_endpoint="https://x.example"),
            "providers.mail.tokn_endpoint",
            "unknown key",
        ),
        (
            lambda d: d.update(return_urls=["http://app.example.com/back"]),
            "return_urls[0]",
            "must use https",
        ),
        (
            lambda d: d["providers"]["mail"].update(token_endpoint="ftp://mail.example.com/t"),
            "providers.mail.token_endpoint",
            "not an absolute http(s) URL",
        ),
        (
            lambda d: d["agents"]["mail-agent"].update(providers={"github": ["repo"]}),
            "agents.mail-agent.providers.github",
            "no provider named 'github'",
        ),
        (lambda d: d.update(log_retention_days=31), "log_retention_days", "CloudWatch"),
        # delegation (flow 8): only configured agents, a bounded depth
        (
            lambda d: d["agents"]["calendar-agent"].update(may_delegate_to=["nobody"]),
            "agents.calendar-agent.may_delegate_to",
            "no agent named 'nobody'",
        ),
        (
            lambda d: d["agents"]["calendar-agent"].update(
                may_delegate_to=["mail-agent", "mail-agent"]
            ),
            "agents.calendar-agent.may_delegate_to",
            "an agent is listed twice",
        ),
        (
            lambda d: d["agents"]["calendar-agent"].update(may_delegate_to=["Mail Agent"]),
            "agents.calendar-agent.may_delegate_to[0]",
            "pattern",
        ),
        (
            lambda d: d.update(max_delegation_depth=0),
            "max_delegation_depth",
            "greater than or equal to 1",
        ),
        (
            lambda d: d.update(max_delegation_depth=9),
            "max_delegation_depth",
            "less than or equal to 8",
        ),
        (lambda d: d.update(sample_agent="nobody"), "sample_agent", "no agent named"),
        (lambda d: d.update(audit_data_events="some"), "audit_data_events", "writes"),
        (lambda d: d.update(certificate_arn="not-an-arn"), "certificate_arn", "pattern"),
        # delivery: a replayable token is never a default
        (
            lambda d: d["providers"]["google"].update(api_base_urls=[]),  # not the preset's
            "agents.calendar-agent.providers.google",
            "no safe delivery for this agent's tokens: set providers.google.api_base_urls",
        ),
        (
            lambda d: d["providers"]["google"].update(api_base_urls=[]),  # not the preset's
            "agents.calendar-agent.providers.google",
            "enable providers.google.dpop (tokens bound to the session key), or opt in with"
            ' "delivery": "bearer" (a token anyone who intercepts it can replay until it'
            " expires)",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(delivery="dpop"),
            "agents.mail-agent.providers.mail",
            "delivery dpop needs providers.mail.dpop: true",
        ),
        (
            lambda d: (
                d["providers"]["mail"].pop("api_base_urls"),
                _access(d, "mail-agent", "mail").update(delivery="proxy"),
            ),
            "agents.mail-agent.providers.mail",
            "delivery proxy needs providers.mail.api_base_urls",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(
                delivery="bearer", requests=[{"methods": ["GET"]}]
            ),
            "agents.mail-agent.providers.mail",
            "requests is the proxy's policy; it means nothing with delivery bearer",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(delivery="carrier-pigeon"),
            "agents.mail-agent.providers.mail.delivery",
            "'proxy', 'dpop', 'bearer' or 'returned'",
        ),
        (
            lambda d: d["providers"]["mail"].update(api_base_urls=["http://mail.example.com"]),
            "providers.mail.api_base_urls[0]",
            "must use https",
        ),
        (
            lambda d: d["providers"]["mail"].update(api_base_urls=["https://m.example/?v=1"]),
            "providers.mail.api_base_urls[0]",
            "must not carry a query",
        ),
        (
            lambda d: d["providers"]["mail"].update(
                api_base_urls=["https://m.example", "https://m.example/"]
            ),
            "providers.mail.api_base_urls",
            "a base URL is listed twice",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(
                requests=[{"methods": ["FETCH"], "paths": ["/x"]}]
            ),
            "agents.mail-agent.providers.mail.requests[0].methods[0]",
            "'GET'",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(requests=[{"paths": ["inbox"]}]),
            "agents.mail-agent.providers.mail.requests[0].paths[0]",
            "must start with /",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(
                requests=[{"paths": ["/inbox/../admin"]}]
            ),
            "agents.mail-agent.providers.mail.requests[0].paths[0]",
            "'..' segment",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(
                requests=[{"paths": ["/inbox/%2e%2e/admin"]}]
            ),
            "agents.mail-agent.providers.mail.requests[0].paths[0]",
            "is not a plain path segment",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(requests=[{"paths": ["/in**"]}]),
            "agents.mail-agent.providers.mail.requests[0].paths[0]",
            "'**' must be a whole segment",
        ),
        (
            lambda d: _access(d, "mail-agent", "mail").update(requests=[]),
            "agents.mail-agent.providers.mail.requests",
            "at least 1",
        ),
    ],
)
def test_config_errors_name_the_key(change: Any, key: str, says: str) -> None:
    message = _error(change)
    assert f"config error at {key}: " in message
    assert says in message
    assert "test.json" in message


def test_deliveries_default_to_the_safest_the_provider_offers() -> None:
    """proxy with api_base_urls, else dpop with dpop, else nothing (bearer only when asked)."""
    data = example()
    data["providers"]["mail"] = {**data["providers"]["mail"], "dpop": True}
    data["providers"]["mail"].pop("api_base_urls")
    data["agents"]["extra-agent"] = {
        "role_name": "agent-vault-dev-extra",
        "providers": {"mail": {"scopes": ["mail.read"], "delivery": "bearer"}},
    }
    config = parse_config(data, source="test.json")
    assert config.delivery("calendar-agent", "google") == "proxy"
    assert config.delivery("mail-agent", "mail") == "dpop"
    assert config.delivery("extra-agent", "mail") == "bearer"
    (rule,) = config.request_rules("calendar-agent", "google")
    assert rule.paths == ("/**",)
    assert set(rule.methods) == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    # the example itself: every agent's delivery is the proxy, its base URLs as given
    example_config = read_config_file(EXAMPLE)
    assert {
        (agent, provider): example_config.delivery(agent, provider)
        for agent, a in example_config.agents.items()
        for provider in a.providers
    } == {("calendar-agent", "google"): "proxy", ("mail-agent", "mail"): "proxy"}
    assert example_config.providers["google"].api_base_urls == ("https://www.googleapis.com",)


def test_delegation_is_off_unless_configured_and_its_depth_is_small() -> None:
    config = read_config_file(EXAMPLE)
    assert all(agent.may_delegate_to == () for agent in config.agents.values())
    assert config.max_delegation_depth == 2
    data = example()
    data["agents"]["calendar-agent"]["may_delegate_to"] = ["mail-agent", "calendar-agent"]
    data["max_delegation_depth"] = 1
    parsed = parse_config(data, source="test.json")
    assert parsed.agents["calendar-agent"].may_delegate_to == ("mail-agent", "calendar-agent")
    assert parsed.max_delegation_depth == 1


def test_a_request_policy_and_trailing_slashes_read_as_written() -> None:
    data = example()
    data["providers"]["mail"]["api_base_urls"] = ["https://mail.example.com/api/"]
    data["agents"]["mail-agent"]["providers"]["mail"] = {
        "scopes": ["mail.read"],
        "requests": [{"methods": ["GET"], "paths": ["/messages/*", "/labels/**", "/"]}],
    }
    config = parse_config(data, source="test.json")
    assert config.providers["mail"].api_base_urls == ("https://mail.example.com/api",)
    (rule,) = config.request_rules("mail-agent", "mail")
    assert rule.methods == ("GET",) and rule.paths == ("/messages/*", "/labels/**", "/")


def test_a_missing_config_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        config_from_context({"config": str(tmp_path / "absent.json")}.get)


def test_the_bundled_config_is_what_the_handlers_read_back() -> None:
    config = read_config_file(EXAMPLE)
    document = json.loads(config_document(config))
    assert VaultConfig.model_validate(document["config"]) == config


def test_the_bundled_config_was_validated_by_this_model_and_is_not_validated_again(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundle's `vault_config.json` (`config_document`, what `vault_code` bundles) carries
    the stamp of the model that validated it; the handlers' `load_config` then builds the same
    config without running a validator (none built at cold start)."""
    config = read_config_file(EXAMPLE)
    bundled = tmp_path / "vault_config.json"
    bundled.write_text(config_document(config), encoding="utf-8")
    document = json.loads(bundled.read_text(encoding="utf-8"))
    assert document["validated_by"] == model_stamp()
    validated = VaultConfig.model_validate(document["config"])  # the same model accepts it
    assert validated == config

    def no_validation(*_: Any, **__: Any) -> None:
        raise AssertionError("the stamped bundle was validated again")

    with monkeypatch.context() as patched:
        patched.setattr(VaultConfig, "model_validate", no_validation)
        loaded = load_config(bundled)
    assert loaded == validated
    assert loaded.model_dump(mode="json") == validated.model_dump(mode="json")
    # the rebuilt config has the validated one's types: tuples, nested models, derived fields
    assert loaded.return_urls == config.return_urls and isinstance(loaded.return_urls, tuple)
    assert loaded.providers["google"] == config.providers["google"]
    assert loaded.agents_by_role == config.agents_by_role
    for name, agent in config.agents.items():
        assert loaded.agents[name].providers == agent.providers
        for provider in agent.providers:
            assert loaded.delivery(name, provider) == config.delivery(name, provider)
            assert loaded.request_rules(name, provider) == config.request_rules(name, provider)


def test_a_config_file_of_another_model_or_by_hand_is_validated_in_full(tmp_path: Any) -> None:
    config = read_config_file(EXAMPLE)
    document = json.loads(config_document(config))
    document["config"]["session_ttl_seconds"] = 5  # below the model's minimum
    for stamp in ("0" * 64, None):
        path = tmp_path / "vault_config.json"
        if stamp is None:  # a plain config file (local mode's, the tests'): no stamp at all
            path.write_text(json.dumps(document["config"]), encoding="utf-8")
        else:  # a bundle validated by another model
            path.write_text(json.dumps({**document, "validated_by": stamp}), encoding="utf-8")
        with pytest.raises(ValidationError, match="session_ttl_seconds"):
            load_config(path)
    assert load_config(EXAMPLE) == config


def test_runtime_provided_packages_are_not_bundled() -> None:
    pinned = (REPO_ROOT / "requirements" / "lambda.txt").read_text()
    bundled = bundled_requirements(pinned)
    names = {line.split("==")[0].lower() for line in bundled.splitlines()}
    assert not names & PROVIDED_BY_RUNTIME
    assert {"aws-lambda-powertools", "pydantic", "cryptography", "joserfc"} <= names


def test_the_functions_runtime_is_the_python_the_wheels_bytecode_and_runtime_tests_are_for() -> (
    None
):
    """The wheels are downloaded, the bytecode compiled and `make test-runtime` run for
    `stacks.runtime_python.PYTHON_VERSION`; the functions must run that version."""
    assert RUNTIME.name == f"python{PYTHON_VERSION}"


def test_the_bundle_installs_each_wheel_by_its_pinned_hash() -> None:
    pinned = (REPO_ROOT / "requirements" / "lambda.txt").read_text()
    bundled = bundled_requirements(pinned).split()
    hashed = with_hashes("\n".join(bundled), pinned).splitlines()
    assert [line.split()[0] for line in hashed] == bundled
    assert all(re.search(r" --hash=sha256:[0-9a-f]{64}\b", line) for line in hashed), hashed
    assert with_hashes("left-pad==1.0", pinned) == "left-pad==1.0\n"  # pip refuses it
    provided = provided_by_runtime(pinned)
    assert {p.split("==")[0] for p in provided} <= PROVIDED_BY_RUNTIME and "botocore" in str(
        provided
    )


@pytest.mark.parametrize(
    "path", ["requirements/dev.txt", "requirements/lambda.txt", "agent/requirements.txt"]
)
def test_compiled_requirements_pin_every_package_by_hash_and_name_no_index(path: str) -> None:
    text = (REPO_ROOT / path).read_text()
    pins = [line for line in text.splitlines() if re.match(r"[A-Za-z0-9]", line)]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._\[\],-]+==\S+ \\", line) for line in pins)
    assert len(pins) == len(bundled_requirements(text).split()) + len(provided_by_runtime(text))
    assert not re.search(r"https?://|--(extra-)?index-url|--find-links|^-[if] ", text, re.M)


def test_the_code_asset_hash_follows_the_config() -> None:
    requirements = bundled_requirements((REPO_ROOT / "requirements" / "lambda.txt").read_text())
    config = read_config_file(EXAMPLE)
    other = config.model_copy(update={"flow_ttl_seconds": 300})
    assert asset_hash(requirements, config_document(config)) == asset_hash(
        requirements, config_document(config)
    )
    assert asset_hash(requirements, config_document(config)) != asset_hash(
        requirements, config_document(other)
    )
    assert asset_hash(requirements, "{}") != asset_hash(requirements + "x==1\n", "{}")


def test_the_config_readme_documents_every_key() -> None:
    readme = (REPO_ROOT / "config" / "README.md").read_text()
    models = [VaultConfig, ProviderConfig, AgentConfig, IdentityIssuerConfig]
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models
        for name in model.model_fields
        if f"`{name}`" not in readme
    ]
    assert undocumented == []


def test_the_default_request_policy_is_the_models_defaults() -> None:
    assert (RequestRule(),) == EVERY_REQUEST
    assert EVERY_REQUEST[0].methods == HTTP_METHODS and EVERY_REQUEST[0].paths == ("/**",)
