"""`agent_endpoint: "function_url"`: the agent API and the egress proxy get IAM-authorized
function URLs that only the configured agents' roles may call, as URLs only; the default
deployment has none (docs/cost.md, "Agent endpoint")."""

from __future__ import annotations

from typing import Any

from tests.infra.cfn import as_list, policy_statements, render
from tests.infra.conftest import Synthesized, by_type

URL_FUNCTIONS = {"AgentApi", "ProxyApi"}
PREFIX = "agent-vault-prod-"
"""Names in `synthesized_function_url` (the prod synth of tests/infra/conftest.py)."""
ACCOUNT_ROOTS = {"*", "arn:aws:iam::123456789012:root", "123456789012"}


def _function_of(synthesized: Synthesized, reference: Any) -> str:
    """`AgentApi` for a reference to the vault's AgentApi function (by GetAtt or by export)."""
    rendered = str(render(reference))
    for name in synthesized.built.vault.functions:
        logical = synthesized.built.vault.get_logical_id(
            synthesized.built.vault.functions[name].function.node.default_child
        )
        if rendered in {f"<{logical}.Arn>", f"<import {PREFIX}{name.lower()}-arn>"}:
            return name
    raise AssertionError(f"{rendered} is no vault function")


def _url_permissions(synthesized: Synthesized) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(stack, function, principal, properties) of every permission not for a service."""
    found = []
    for stack in ("Vault", "AgentService"):
        for props in (
            r["Properties"]
            for r in by_type(synthesized.templates[stack], "AWS::Lambda::Permission").values()
        ):
            principal = str(render(props["Principal"]))
            if principal.endswith(".amazonaws.com"):
                continue  # API Gateway, EventBridge: each with its SourceArn
            found.append(
                (stack, _function_of(synthesized, props["FunctionName"]), principal, props)
            )
    return found


def _agent_role_arns(synthesized: Synthesized) -> set[str]:
    task_role = next(
        k
        for k, v in by_type(synthesized.templates["AgentService"], "AWS::IAM::Role").items()
        if v["Properties"].get("RoleName")
        == synthesized.built.config.agents["calendar-agent"].name_of_role
    )
    arns = set()
    for name, agent in synthesized.built.config.agents.items():
        if name == "calendar-agent":  # the sample agent: its role is made in AgentService
            arns.add(f"<{task_role}.Arn>")
        else:
            arns.add(agent.role_arn or f"arn:aws:iam::123456789012:role/{agent.name_of_role}")
    return arns


def test_the_default_deployment_has_no_function_url(synthesized: Synthesized) -> None:
    for stack, template in synthesized.templates.items():
        assert by_type(template, "AWS::Lambda::Url") == {}, stack
        assert not [
            s
            for _, s in policy_statements(template)
            if any(str(a).startswith("lambda:Invoke") for a in as_list(s["Action"]))
        ], stack
        assert not any("FunctionUrl" in o for o in template.get("Outputs", {})), stack
    assert _url_permissions(synthesized) == []


def test_the_agent_functions_get_iam_urls(synthesized_function_url: Synthesized) -> None:
    urls = by_type(synthesized_function_url.templates["Vault"], "AWS::Lambda::Url")
    assert {
        _function_of(synthesized_function_url, u["Properties"]["TargetFunctionArn"])
        for u in urls.values()
    } == URL_FUNCTIONS
    assert len(urls) == 2
    for url in urls.values():
        assert url["Properties"]["AuthType"] == "AWS_IAM"
        assert "Cors" not in url["Properties"]


def test_only_the_agent_roles_may_call_the_urls_and_only_as_urls(
    synthesized_function_url: Synthesized,
) -> None:
    permissions = _url_permissions(synthesized_function_url)
    roles = _agent_role_arns(synthesized_function_url)
    granted: set[tuple[str, str, str]] = set()
    for _stack, function, principal, props in permissions:
        assert principal not in ACCOUNT_ROOTS and not principal.endswith(":root"), principal
        assert principal in roles, principal
        assert function in URL_FUNCTIONS
        if props["Action"] == "lambda:InvokeFunctionUrl":
            assert props["FunctionUrlAuthType"] == "AWS_IAM"
        else:
            # the role may not invoke the function directly with an event of its own making
            assert props["Action"] == "lambda:InvokeFunction"
            assert props["InvokedViaFunctionUrl"] is True
        assert "SourceArn" not in props and "SourceAccount" not in props
        granted.add((function, principal, props["Action"]))
    assert granted == {
        (f, r, a)
        for f in URL_FUNCTIONS
        for r in roles
        for a in ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction")
    }
    assert len(permissions) == len(granted)


def test_the_sample_agent_calls_the_function_urls_only(
    synthesized_function_url: Synthesized,
) -> None:
    template = synthesized_function_url.templates["AgentService"]
    statements = [s for _, s in policy_statements(template)]
    invoking = [s for s in statements if any("Invoke" in str(a) for a in as_list(s["Action"]))]
    assert not [s for s in invoking if "execute-api:Invoke" in as_list(s["Action"])]
    by_action = {tuple(as_list(s["Action"])): s for s in invoking}
    assert set(by_action) == {("lambda:InvokeFunctionUrl",), ("lambda:InvokeFunction",)}
    for statement in by_action.values():
        assert statement["Effect"] == "Allow"
        assert sorted(render(as_list(statement["Resource"]))) == [
            f"<import {PREFIX}agentapi-arn>",
            f"<import {PREFIX}proxyapi-arn>",
        ]
    assert by_action[("lambda:InvokeFunctionUrl",)]["Condition"] == {
        "StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}
    }
    assert by_action[("lambda:InvokeFunction",)]["Condition"] == {
        "Bool": {"lambda:InvokedViaFunctionUrl": "true"}
    }
    (task,) = by_type(template, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: render(e["Value"]) for e in container["Environment"]}
    assert env["VAULT_URL"] == f"<import {PREFIX}agentapi-url>"
    assert env["AGENT_VAULT_PROXY_URL"] == f"<import {PREFIX}proxyapi-url>"


def test_the_urls_are_stack_outputs(synthesized_function_url: Synthesized) -> None:
    outputs = synthesized_function_url.templates["Vault"]["Outputs"]
    for name in URL_FUNCTIONS:
        url = outputs[f"{name}FunctionUrl"]
        assert url["Export"]["Name"] == f"{PREFIX}{name.lower()}-url"
        assert render(url["Value"]).endswith(".FunctionUrl>")
        assert outputs[f"{name}FunctionArn"]["Export"]["Name"] == (f"{PREFIX}{name.lower()}-arn")
    # the callback and admin API stay behind API Gateway, as in the default deployment
    assert "ApiUrl" in outputs and "CallbackUrl" in outputs
