"""SECURITY.md row 52: the public routes have a throttle of their own, and the reaper has
reserved concurrency so other workloads in the account cannot starve revocation."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.config import ConfigError
from tests.infra.conftest import Synthesized, by_type, config_with
from vault.routes import ROUTES


def _stage(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((logical_id, stage),) = by_type(template, "AWS::ApiGatewayV2::Stage").items()
    return logical_id, stage


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        v["Properties"]["Handler"].split(".")[2]: v["Properties"]
        for v in by_type(template, "AWS::Lambda::Function").values()
        if v["Properties"].get("Handler", "").startswith("vault.")
    }


@pytest.mark.parametrize("which", ["dev", "prod"])
def test_every_public_route_has_its_own_throttle_under_the_stage(
    which: str, synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    template = (synthesized if which == "dev" else synthesized_prod).templates["Vault"]
    _, stage = _stage(template)
    default = stage["Properties"]["DefaultRouteSettings"]
    settings = stage["Properties"].get("RouteSettings", {})
    routes = {
        r["Properties"]["RouteKey"]: (logical_id, r["Properties"])
        for logical_id, r in by_type(template, "AWS::ApiGatewayV2::Route").items()
    }
    public = {
        key for key, (_, props) in routes.items() if props.get("AuthorizationType") != "AWS_IAM"
    }
    # every route the table marks public, and every route the template leaves open
    assert public == {r.route_key for r in ROUTES if r.auth == "none"}
    assert public and set(settings) == public
    for key in public:
        assert 0 < settings[key]["ThrottlingRateLimit"] < default["ThrottlingRateLimit"]
        assert 0 < settings[key]["ThrottlingBurstLimit"] < default["ThrottlingBurstLimit"]
        # a route setting needs its route to exist before the stage
        assert routes[key][0] in stage["DependsOn"]


@pytest.mark.parametrize("which", ["dev", "prod"])
def test_the_reaper_has_reserved_concurrency_the_api_functions_share_the_pool(
    which: str, synthesized: Synthesized, synthesized_prod: Synthesized
) -> None:
    built = synthesized if which == "dev" else synthesized_prod
    functions = _functions(built.templates["Vault"])
    assert set(functions) == {
        "agent_api",
        "proxy_api",
        "callback",
        "admin_api",
        "reaper",
        "events",
    }
    expected = built.built.config.reaper_reserved_concurrency
    assert expected == 2  # the default
    assert functions["reaper"]["ReservedConcurrentExecutions"] == expected
    # docs/cost.md; the events function's stream mapping runs one batch per shard at a time
    for name in ("agent_api", "proxy_api", "callback", "admin_api", "events"):
        assert "ReservedConcurrentExecutions" not in functions[name], name


def test_the_reaper_reservation_is_configurable_never_zero() -> None:
    assert config_with(reaper_reserved_concurrency=None).reaper_reserved_concurrency is None
    assert config_with(reaper_reserved_concurrency=10).reaper_reserved_concurrency == 10
    with pytest.raises(ConfigError, match="reaper_reserved_concurrency"):
        config_with(reaper_reserved_concurrency=0)  # zero would switch revocation off
