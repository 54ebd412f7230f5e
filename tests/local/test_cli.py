"""The operator CLI (`agent-vault`, agent_vault/cli.py) against a real local mode: the local
API Gateway adapter verifying SigV4, the handlers in their containers, moto, the real
oidc-provider. The "deployed" path runs too: the API URL from a CloudFormation stack's outputs
and the audit events from CloudWatch Logs (local mode's moto), credentials from the usual chain.

This module's local mode runs on a developer's own config (`local up --config --port`, #15 item
5): local mode's calendar and mail agents, a custom agent with its own policy, the bundled
provider, an external provider whose client secret comes from the environment, and one whose
discovery is unreachable (doctor's failing check).
"""

from __future__ import annotations

import io
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3

from agent_vault import AccessDenied, ConsentRequired, UserIdentity, VaultClient, VaultError
from agent_vault.cli import main
from agent_vault_local import cli as local_cli
from agent_vault_local.runner import (
    ADMIN,
    KEYED_PROVIDER,
    MAIL_TASK,
    REPO_ROOT,
    TASK_1,
    LocalInfo,
    LocalMode,
    LocalModeError,
    LocalModeProcess,
)
from tests.local.helpers import consent, id_token_for, vault_client
from tests.security.hygiene import HYGIENE

STACK = "agent-vault-clitest-vault"
GITHUB_SECRET = "gh-client-secret-" + "7f3a9c1e5b" * 3
"""The external provider's client secret, given in the environment only."""
NOTES_TASK = "notes-agent/task-1"
MY_CONFIG: dict[str, Any] = {
    # agents reach the agent API and the proxy at their own function URLs as well
    "agent_endpoint": "function_url",
    "providers": {
        "calendar": {"bundled": True},
        "github": {"preset": "github", "client_id": "Iv23liClitest", "scopes": ["repo"]},
        "broken": {
            "discovery_url": "http://127.0.0.1:9/.well-known/openid-configuration",
            "client_id": "agent-vault",
            "scopes": ["read"],
            "api_base_urls": ["http://127.0.0.1:9/api"],
        },
        # an API-key provider (flow 12): its key set and deleted by `agent-vault apikey`
        KEYED_PROVIDER: {"api_base_urls": ["http://127.0.0.1:9/api"], "api_key": {}},
    },
    "agents": {
        "calendar-agent": {
            "role_name": "calendar-agent-role",
            "providers": {"calendar": {"scopes": ["calendar.read", "calendar.write"]}},
        },
        "mail-agent": {
            "role_name": "mail-agent-role",
            "providers": {"calendar": {"scopes": ["mail.read"], "delivery": "bearer"}},
        },
        # the custom agent and policy: calendar.read only, tokens handed to the agent
        "notes-agent": {
            "role_name": "notes-agent-role",
            "providers": {
                "calendar": {"scopes": ["calendar.read"], "delivery": "bearer"},
                "github": ["repo"],
            },
        },
    },
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def my_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("my-config") / "my.json"
    path.write_text(json.dumps(MY_CONFIG), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def local_process(my_config: Path, port: int) -> Iterator[LocalModeProcess]:
    """A local mode of this module's own (the CLI revokes grants in it), on the config above
    with a pinned port and the external provider's client secret in the environment."""
    process = LocalModeProcess(
        with_agent=False,
        up_args=["--config", str(my_config), "--port", str(port)],
        env={"AGENT_VAULT_SECRET_GITHUB": GITHUB_SECRET},
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def local(local_process: LocalModeProcess) -> LocalInfo:
    assert local_process.info is not None
    return local_process.info


@pytest.fixture(scope="module")
def state(local: LocalInfo) -> str:
    path = Path(local.workdir) / "local.json"
    assert json.loads(path.read_text(encoding="utf-8"))["vault_url"] == local.vault_url
    assert path.stat().st_mode & 0o777 == 0o600  # it holds local credentials
    return str(path)


@pytest.fixture(scope="module")
def story(local: LocalInfo) -> dict[str, Any]:
    """alice's calendar session with an active grant; bob's mail session. (Local mode's
    calendar agent reaches the provider through the proxy: no token is minted here.)"""
    alice = vault_client(local, TASK_1, UserIdentity(id_token=id_token_for(local, "alice")))
    alice.start_session()
    assert consent(local, alice, "alice")["status"] == "pending_binding"
    bob = vault_client(local, MAIL_TASK, UserIdentity(id_token=id_token_for(local, "bob")))
    bob.start_session()
    return {"alice": alice.session_id, "bob": bob.session_id}


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    return status, out.getvalue()


def run_json(*argv: str) -> Any:
    status, text = run(*argv, "--json")
    assert status == 0, text
    return json.loads(text)


def test_sessions_list_and_show(local: LocalInfo, state: str, story: dict[str, Any]) -> None:
    where = ("--local-state", state)
    listed = run_json("sessions", "list", *where)
    assert {story["alice"], story["bob"]} <= {s["session_id"] for s in listed["items"]}
    mine = run_json(
        "sessions", "list", *where, "--user-iss", local.provider["issuer"], "--user-sub", "alice"
    )
    assert [s["session_id"] for s in mine["items"]] == [story["alice"]]
    by_agent = run_json("sessions", "list", *where, "--agent", "mail-agent")
    assert [s["session_id"] for s in by_agent["items"]] == [story["bob"]]
    shown = run_json("sessions", "show", story["alice"], *where)
    assert shown["status"] == "active"
    assert shown["tokens"] == [] and shown["user"]["sub"] == "alice"
    # for people: a table with a header and one row per session
    status, text = run("sessions", "list", *where, "--agent", "calendar-agent")
    assert status == 0
    header, *rows = text.strip().splitlines()
    assert header.split()[:5] == ["SESSION", "AGENT", "USER", "TASK", "STATUS"]
    assert any(story["alice"] in row and "alice @" in row for row in rows)


def test_grants_list_show_and_pages(local: LocalInfo, state: str, story: dict[str, Any]) -> None:
    where = ("--local-state", state)
    (grant,) = run_json("grants", "list", *where, "--agent", "calendar-agent")["items"]
    assert grant["user"]["sub"] == "alice" and grant["status"] == "active"
    assert grant["scopes"] == ["calendar.read"]
    shown = run_json("grants", "show", grant["grant_id"], *where)
    assert shown["grant_id"] == grant["grant_id"] and shown["tokens"] == []
    # one item a page: a cursor for the next page, and --all follows them all
    first = run_json("sessions", "list", *where, "--limit", "1")
    assert len(first["items"]) == 1 and first["next_cursor"]
    everything = run_json("sessions", "list", *where, "--limit", "1", "--all")
    assert everything["next_cursor"] is None
    assert {story["alice"], story["bob"]} <= {s["session_id"] for s in everything["items"]}
    status, text = run("sessions", "list", *where, "--limit", "1")
    assert status == 0 and "more: --cursor " in text


def test_refusals_have_exit_codes(
    local: LocalInfo, state: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ("--local-state", state)
    assert run("grants", "show", "grt_" + "0" * 26, *where)[0] == 1
    assert "grant_not_found" in capsys.readouterr().err
    assert run("sessions", "list", *where, "--limit", "0")[0] == 1
    err = capsys.readouterr().err
    assert "invalid_filter" in err and "limit" in err
    assert run("grants", "list", *where, "--agent", "nobody")[0] == 1
    assert run("revoke", *where)[0] == 2  # nothing named
    assert run("sessions", "list", "--local-state", str(Path(state).parent / "none.json"))[0] == 3
    # the vault unreachable: local mode's address with nothing listening
    gone = Path(state).parent / "gone.json"
    document = json.loads(Path(state).read_text(encoding="utf-8"))
    gone.write_text(json.dumps(dict(document, vault_url="http://127.0.0.1:9")), encoding="utf-8")
    assert run("sessions", "list", "--local-state", str(gone))[0] == 3


def test_audit_tail_reads_local_modes_log(
    local: LocalInfo, state: str, story: dict[str, Any]
) -> None:
    where = ("--local-state", state)
    run_json("sessions", "list", *where)  # itself an audited admin read
    status, text = run("audit", "tail", *where, "-n", "500", "--json")
    assert status == 0
    events = [json.loads(line) for line in text.splitlines()]
    actions = {e["action"] for e in events}
    assert {"session.start", "consent.complete", "admin.sessions.list"} <= actions
    assert all("outcome" in e for e in events)
    status, text = run("audit", "tail", *where, "-n", "2", "--action", "session.start")
    lines = text.strip().splitlines()
    assert status == 0 and len(lines) == 2 and all(" session.start allowed " in x for x in lines)


def test_config_validate_and_providers_check(local: LocalInfo, state: str) -> None:
    assert run("config", "validate", local.config_path)[0] == 0
    agents = run_json("config", "validate", local.config_path)["agents"]
    configured = json.loads(Path(local.config_path).read_text(encoding="utf-8"))["agents"]
    assert agents == {name: sorted(a["providers"]) for name, a in configured.items()}
    assert agents["calendar-agent"] == [local.provider_name]
    bad = Path(local.workdir) / "bad-config.json"
    document = json.loads(Path(local.config_path).read_text(encoding="utf-8"))
    document["agents"]["calendar-agent"]["providers"] = {"nowhere": ["x"]}
    bad.write_text(json.dumps(document), encoding="utf-8")
    status, text = run("config", "validate", str(bad))
    assert status == 1 and "nowhere" in text
    assert run("config", "validate", str(bad.with_suffix(".missing")))[0] == 2
    # the local provider's discovery against its preset: S256, iss, revocation, DPoP
    report = run_json("providers", "check", local.provider_name, "--local-state", state)
    assert report["ok"] is True and report["s256"]["advertised"] is True
    assert report["issuer"] == local.provider["issuer"]


def test_apikey_set_reads_stdin_and_refusals_have_exit_codes(
    local: LocalInfo,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`apikey set|delete` against local mode, at its API-key provider `keyed` and at an OAuth
    provider (the proxy's use of a key: tests/security/test_attacks_apikeys.py, the demo)."""
    where = ("--local-state", state)
    key = "ak_local_" + secrets.token_urlsafe(24)
    HYGIENE.add_secret(key, "API key")
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    status, text = run("apikey", "set", KEYED_PROVIDER, *where)
    assert (status, text.strip()) == (0, f"API key of {KEYED_PROVIDER} set")
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "2\n"))  # a rotation
    rotated = run_json("apikey", "set", KEYED_PROVIDER, *where)
    assert rotated["status"] == "set" and rotated["previous_valid_until"] is not None
    assert key not in json.dumps(rotated) + capsys.readouterr().err
    assert run_json("apikey", "delete", KEYED_PROVIDER, *where)["deleted"] is True
    assert run("apikey", "delete", KEYED_PROVIDER, *where) == (
        0,
        f"API key of {KEYED_PROVIDER} was not set\n",
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    assert run("apikey", "set", "calendar", *where)[0] == 1  # an OAuth provider: no key
    err = capsys.readouterr().err
    assert "not_an_api_key_provider" in err and key not in err
    assert run("apikey", "delete", "nowhere", *where)[0] == 1
    assert "unknown_provider" in capsys.readouterr().err
    # the key is never an argument; an empty stdin is a usage error before any call
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("apikey", "set", "calendar", *where)[0] == 2
    assert run("apikey", "set", "calendar", "--user", "alice", *where)[0] == 2  # no --user-iss


def test_revoke_ends_the_grant_and_its_tokens(
    local: LocalInfo, state: str, story: dict[str, Any]
) -> None:
    where = ("--local-state", state)
    user = ("--user-iss", local.provider["issuer"], "--user-sub", "alice")
    answer = run_json("revoke", *where, *user)
    assert answer["revoked_grants"] == 1
    assert run_json("grants", "list", *where, *user)["items"] == []
    assert run_json("sessions", "show", story["alice"], *where)["tokens"] == []


# --- local mode on the developer's own config (#15 item 5) -----------------------------------


def test_function_urls_take_agents_signed_for_lambda_and_reach_their_one_function(
    local: LocalInfo,
) -> None:
    """`agent_endpoint: "function_url"` in a developer's config: local mode serves the agent
    API's and the proxy's own URLs as deployed (SigV4 for `lambda`, the agents' roles only)."""
    urls = local.function_urls
    assert set(urls) == {"agent_api", "proxy_api"}
    alice = UserIdentity(id_token=id_token_for(local, "alice"))
    task = local.principal(TASK_1).credentials()

    def client(principal: Any = task, **kw: Any) -> VaultClient:
        return VaultClient(
            urls["agent_api"],
            proxy_url=urls["proxy_api"],
            user=alice,
            credentials=principal,
            region=local.region,
            **kw,
        )

    with client(signing_service="lambda") as agent:
        session = agent.start_session()
        assert agent.get_session().session_id == session.session_id
        # the proxy's URL serves the proxied call: the calendar's answer, or (before alice's
        # consent in this module) the proxy's own consent_required
        try:
            with agent.http("calendar") as api:
                assert api.get("/calendar/events").status_code == 200
        except ConsentRequired as exc:
            assert exc.authorizations_path == f"/v1/sessions/{session.session_id}/authorizations"
        # the agent API's URL reaches the agent API only: an admin route there is no route
        with pytest.raises(VaultError) as elsewhere:
            agent.request("GET", "/v1/admin/sessions", proof=False)
        assert elsewhere.value.status == 404
    # signed for API Gateway (`execute-api`, what the host alone would choose here): refused
    with client() as wrong, pytest.raises(AccessDenied):  # Lambda's 403, not the vault's
        wrong.start_session()
    # an admin's role is no agent's: the URL's resource policy does not name it
    admin = local.principal(ADMIN).credentials()
    with client(admin, signing_service="lambda") as outsider, pytest.raises(AccessDenied):
        outsider.start_session()  # (the vault itself would answer 403 unknown_agent)


def test_local_up_runs_my_config_on_the_pinned_port(local: LocalInfo, port: int) -> None:
    assert local.vault_url == f"http://127.0.0.1:{port}"
    assert local.callback_urls == {
        name: f"http://127.0.0.1:{port}/v1/oauth/callback/{name}"
        for name in ("calendar", "github", "broken")
    }
    assert local.external_providers == ["github", "broken"]
    assert local.placeholder_secrets == ["broken"]  # github's came from the environment
    config = json.loads(Path(local.config_path).read_text(encoding="utf-8"))
    assert config["agents"]["notes-agent"] == MY_CONFIG["agents"]["notes-agent"]
    assert config["providers"]["calendar"]["discovery_url"].startswith(local.provider["issuer"])
    assert sorted(local.tasks) == [
        "calendar-agent/app",
        "calendar-agent/task-1",
        "mail-agent/task-1",
        NOTES_TASK,
    ]


def test_the_banner_prints_each_callback_to_register(
    local: LocalInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    local_cli._print_banner(local, 1.0)
    text = capsys.readouterr().out
    github = next(line for line in text.splitlines() if "callback github" in line)
    assert local.callback_urls["github"] in github and "register this exact redirect URI" in github
    assert "AGENT_VAULT_SECRET_BROKEN" in text and "agent-vault secret set broken --local" in text


def test_the_environments_client_secret_reaches_the_vault_and_no_output(
    local: LocalInfo, local_process: LocalModeProcess, state: str
) -> None:
    # the secret the vault's functions read (GetSecretValue, CLIENT_SECRET_PREFIX + name)
    assert _moto_secret(local, f"{local.client_secret_prefix}github") == GITHUB_SECRET
    run_json("sessions", "list", "--local-state", state)  # the vault has logged something
    outputs = {
        "stderr": local_process.stderr_tail(),
        "READY line": local.to_json(),
        "local.json": Path(state).read_text(encoding="utf-8"),
        "vault log": Path(local.vault_log).read_text(encoding="utf-8"),
        "vault config": Path(local.config_path).read_text(encoding="utf-8"),
    }
    assert len(outputs["vault log"]) > 0
    for name, text in outputs.items():
        assert GITHUB_SECRET not in text, name


def test_a_custom_agent_and_policy_work_end_to_end(local: LocalInfo, state: str) -> None:
    """notes-agent (only in my config): its session, alice's consent at the bundled provider,
    a bearer token the calendar API accepts; and its policy refuses calendar.write."""
    notes = vault_client(local, NOTES_TASK, UserIdentity(id_token=id_token_for(local, "alice")))
    try:
        assert notes.start_session().agent == "notes-agent"
        assert consent(local, notes, "alice")["status"] == "pending_binding"
        token = notes.get_token("calendar", ["calendar.read"])
        answer = urllib3.request(
            "GET",
            local.provider["calendar_url"],
            headers={"Authorization": token.authorization_header},
        )
        assert answer.status == 200, answer.data[:200]
        with pytest.raises(VaultError) as refused:
            notes.start_authorization("calendar", ["calendar.write"])
        assert (refused.value.status, refused.value.code) == (403, "scope_not_allowed")
    finally:
        notes.close()
    (grant,) = run_json("grants", "list", "--local-state", state, "--agent", "notes-agent")["items"]
    assert grant["user"]["sub"] == "alice" and grant["scopes"] == ["calendar.read"]


def test_a_bad_config_fails_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    document = json.loads(json.dumps(MY_CONFIG))
    document["agents"]["notes-agent"]["providers"]["calendar"]["scopes"] = ["calendar.delete"]
    bad.write_text(json.dumps(document), encoding="utf-8")
    workdir = tmp_path / "never"
    status = local_cli.main(["up", "--config", str(bad), "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert status == 2
    assert "agents.notes-agent.providers.calendar: scopes ['calendar.delete']" in err
    assert not workdir.exists()  # nothing started, nothing written
    # a secrets file for a provider the config does not have
    good = tmp_path / "good.json"
    good.write_text(json.dumps(MY_CONFIG), encoding="utf-8")
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"gitlab": "x"}), encoding="utf-8")
    argv = ["up", "--config", str(good), "--secrets-file", str(secrets_file)]
    assert local_cli.main([*argv, "--workdir", str(workdir)]) == 2
    assert "gitlab: not an external provider" in capsys.readouterr().err
    assert not workdir.exists()


def test_a_start_up_step_past_the_deadline_is_named_with_the_option_that_gives_it_longer() -> None:
    mode = LocalMode(startup_timeout=7)
    never: Future[str] = Future()
    with pytest.raises(LocalModeError) as slow:
        mode._finished(never, "moto did not create the AWS resources", time.monotonic() - 1)
    message = str(slow.value)
    assert message.startswith("moto did not create the AWS resources in 7 s")
    assert "agent-vault local up --startup-timeout SECONDS" in message
    # a step that failed with a timeout of its own keeps its own error; a finished one answers
    own: Future[str] = Future()
    own.set_exception(TimeoutError("the step's own"))
    with pytest.raises(TimeoutError, match="the step's own"):
        mode._finished(own, "a step", time.monotonic() + 60)
    done: Future[str] = Future()
    done.set_result("key-arn")
    assert mode._finished(done, "a step", time.monotonic() - 1) == "key-arn"


def test_local_up_gives_its_start_up_steps_the_startup_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--startup-timeout` reaches the steps (a child process's included): no step of a real
    start finishes in 10 ms, and the error names the time it was given."""
    with pytest.raises(LocalModeError) as failed:
        LocalModeProcess(with_agent=False, startup_timeout=0.01).start()
    message = str(failed.value)
    assert "local mode exited with 1 before it was ready" in message
    assert "in 0.01 s" in message and "Traceback" not in message
    for bad in ("0", "-3", "nan", "soon", "3601"):
        with pytest.raises(SystemExit) as refused:
            local_cli.main(["up", "--startup-timeout", bad])
        assert refused.value.code == 2
        assert "is not a number of seconds (0-3600)" in capsys.readouterr().err


def test_client_secrets_come_from_the_file_and_the_environment_wins(tmp_path: Path) -> None:
    from agent_vault_local.userconfig import client_secrets, load_user_config

    path = tmp_path / "my.json"
    path.write_text(json.dumps(MY_CONFIG), encoding="utf-8")
    config = load_user_config(
        path, account="123456789012", region="us-east-1", admin_role="vault-admin-role"
    )
    assert (config.bundled, config.external) == (("calendar",), ("github", "broken"))
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"github": "from-file", "broken": "b"}), encoding="utf-8")
    environ = {"AGENT_VAULT_SECRET_GITHUB": "from-env"}
    found = client_secrets(config, environ, secrets_file)
    assert found == {"github": "from-env", "broken": "b"}
    assert client_secrets(config, {}, None) == {}  # none given: local mode stores placeholders


# --- secret set ------------------------------------------------------------------------------


def _moto_secret(local: LocalInfo, secret_id: str) -> str:
    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=local.moto_url,
        region_name=local.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    value: str = secrets.get_secret_value(SecretId=secret_id)["SecretString"]
    return value


def test_secret_set_reads_stdin_into_local_modes_secret(
    local: LocalInfo,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = "broken-client-secret-" + "9d2e4b" * 4
    monkeypatch.setattr(sys, "stdin", io.StringIO(value + "\n"))
    status, text = run("secret", "set", "broken", "--local-state", state)
    assert status == 0 and value not in text + capsys.readouterr().err
    assert "agent-vault/local/provider/broken" in text
    assert _moto_secret(local, f"{local.client_secret_prefix}broken") == value  # one \n dropped
    # refusals, each naming its fix; nothing stored
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert run("secret", "set", "broken", "--local-state", state)[0] == 2
    assert "no client secret on stdin" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("x"))
    assert run("secret", "set", "gitlab", "--local-state", state)[0] == 2
    err = capsys.readouterr().err
    assert "no provider 'gitlab'" in err and "broken, calendar, github" in err
    assert _moto_secret(local, f"{local.client_secret_prefix}broken") == value


# --- doctor ----------------------------------------------------------------------------------


def test_doctor_checks_local_mode_end_to_end_and_fails_on_a_dead_provider(
    local: LocalInfo, state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("broken-secret"))  # no placeholder left
    assert run("secret", "set", "broken", "--local-state", state)[0] == 0
    status, text = run("doctor", "--local-state", state, "--json")
    assert status == 1  # one check failed
    report = json.loads(text)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert {name: c["status"] for name, c in checks.items()} == {
        "outputs": "ok",
        "sigv4": "ok",
        "session": "ok",
        "callback broken": "ok",
        "callback calendar": "ok",
        "callback github": "ok",
        "secret broken": "ok",
        "secret calendar": "ok",
        "secret github": "ok",
        "provider calendar": "ok",
        "provider github": "ok",
        "provider broken": "fail",
        "provider keyed": "ok",  # an API-key provider: no discovery, no callback, no secret
    }
    assert "api_key" in checks["provider keyed"]["detail"]
    assert "unreachable" in checks["provider broken"]["detail"]
    assert "providers.broken.discovery_url" in checks["provider broken"]["fix"]
    assert "invalid_state" in checks["callback calendar"]["detail"]  # the vault itself answered
    assert checks["session"]["detail"].startswith("calendar-agent/task-1 started and ended ses_")
    # for people: one line a check, the fix on the failing one
    status, text = run("doctor", "--local-state", state)
    lines = text.strip().splitlines()
    assert status == 1 and len(lines) == len(checks)
    (failing,) = [line for line in lines if line.startswith("fail")]
    assert "provider broken" in failing and "-> check providers.broken" in failing
    # the same vault without the dead provider: every check ok, exit 0
    config = json.loads(Path(local.config_path).read_text(encoding="utf-8"))
    del config["providers"]["broken"]
    healthy = tmp_path / "healthy.json"
    healthy.write_text(json.dumps(config), encoding="utf-8")
    report = run_json_status("doctor", "--local-state", state, "--config", str(healthy))
    assert all(c["status"] == "ok" for c in report["checks"]), report


def test_doctor_without_local_mode_fails_the_first_check(tmp_path: Path) -> None:
    status, text = run("doctor", "--local-state", str(tmp_path / "none.json"), "--json")
    assert status == 1
    (only,) = json.loads(text)["checks"]
    assert only["status"] == "fail" and "agent-vault local up" in only["fix"]


def run_json_status(*argv: str) -> Any:
    status, text = run(*argv, "--json")
    report = json.loads(text)
    assert status == (0 if report["ok"] else 1), text
    return report


def test_deployed_path_stack_outputs_sigv4_chain_and_cloudwatch(
    local: LocalInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--stack`: the API URL from the stack's `ApiUrl` output, credentials and region from the
    usual chain (a profile), audit events from the functions' log groups. Local mode's moto is
    the AWS here; its API Gateway adapter is the vault's API."""
    admin = local.principal(ADMIN)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[ops]\naws_access_key_id = {admin.access_key_id}\n"
        f"aws_secret_access_key = {admin.secret_access_key}\n"
        f"aws_session_token = {admin.session_token}\nregion = {local.region}\n",
        encoding="utf-8",
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "ops")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", local.region)  # the suite's is another
    monkeypatch.setenv("AWS_ENDPOINT_URL", local.moto_url)
    aws = boto3.session.Session(region_name=local.region)
    group = f"/aws/lambda/{STACK}-admin-api"
    proxy_group = f"/aws/lambda/{STACK}-proxy-api"
    template = {
        "Resources": {
            "AdminApiLogs1A2B3C4D": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": group},
            },
            "ProxyApiLogs5E6F7A8B": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": proxy_group},
            },
        },
        "Outputs": {"ApiUrl": {"Value": local.vault_url}},
    }
    cloudformation = aws.client("cloudformation")
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    now = int(time.time() * 1000)
    event = {"action": "revocation", "outcome": "done", "principal": "arn:...:ops"}
    logs = aws.client("logs")
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    logs.put_log_events(
        logGroupName=group,
        logStreamName="s",
        logEvents=[
            {"timestamp": now, "message": json.dumps({"message": "x", "audit": event})},
            {"timestamp": now + 1, "message": json.dumps({"message": "not audited"})},
        ],
    )
    proxied = {"action": "proxy.call", "outcome": "allowed", "status": 200}
    logs.create_log_stream(logGroupName=proxy_group, logStreamName="s")
    logs.put_log_events(
        logGroupName=proxy_group,
        logStreamName="s",
        logEvents=[{"timestamp": now + 2, "message": json.dumps({"audit": proxied})}],
    )

    listed = run_json("sessions", "list", "--stack", STACK)
    assert isinstance(listed["items"], list)
    status, text = run("audit", "tail", "--stack", STACK, "--json")
    assert status == 0
    assert [
        {k: v for k, v in json.loads(x).items() if k != "timestamp"} for x in text.split("\n") if x
    ] == [event, proxied]  # every function's log group, the egress proxy's too
    # a stack without the output, and one that does not exist
    assert run("sessions", "list", "--stack", "no-such-stack")[0] == 3
    # an agent's role is no admin: refused by the vault
    task = local.principal(TASK_1)
    credentials.write_text(
        f"[ops]\naws_access_key_id = {task.access_key_id}\n"
        f"aws_secret_access_key = {task.secret_access_key}\n"
        f"aws_session_token = {task.session_token}\nregion = {local.region}\n",
        encoding="utf-8",
    )
    assert run("grants", "list", "--stack", STACK)[0] == 1


def test_deployed_secret_set_and_doctor(
    local: LocalInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Against a "deployed" stack (local mode's moto as AWS, its adapter as the API): `secret
    set` finds the secret by the stack's outputs; doctor reads the outputs, signs, and skips the
    session check (an operator's role is no agent task) with its reason."""
    admin = local.principal(ADMIN)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", admin.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", admin.secret_access_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", admin.session_token)
    monkeypatch.setenv("AWS_DEFAULT_REGION", local.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local.moto_url)
    prefix = "agent-vault/clitest/provider/"
    stack = "agent-vault-clitest2-vault"
    outputs = {
        "ApiUrl": local.vault_url,
        "CallbackUrl": f"{local.vault_url}/v1/oauth/callback",
        "CallbackUrlCalendar": local.callback_urls["calendar"],
        "ClientSecretPrefix": prefix,
        "ProviderSecretCalendar": f"{prefix}calendar",
        "ProviderSecretGhost": f"{prefix}ghost",  # an output, but no secret behind it
    }
    aws = boto3.session.Session(region_name=local.region)
    aws.client("cloudformation").create_stack(
        StackName=stack,
        TemplateBody=json.dumps(
            {
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()},
            }
        ),
    )
    aws.client("secretsmanager").create_secret(Name=f"{prefix}calendar", SecretString="placeholder")
    config = json.loads(Path(local.config_path).read_text(encoding="utf-8"))
    del config["providers"]["broken"]
    healthy = tmp_path / "deployed.json"
    healthy.write_text(json.dumps(config), encoding="utf-8")
    report = run_json_status("doctor", "--stack", stack, "--config", str(healthy))
    assert {c["check"]: c["status"] for c in report["checks"]} == {
        "outputs": "ok",
        "sigv4": "ok",
        "session": "skip",
        "callback calendar": "ok",
        "secret calendar": "warn",  # the stack's placeholder: never put
        "secret ghost": "fail",
        "provider calendar": "ok",
        "provider github": "ok",
        "provider keyed": "ok",
    }
    (placeholder,) = [c for c in report["checks"] if c["check"] == "secret calendar"]
    assert placeholder["fix"] == f"agent-vault secret set calendar --stack {stack}"

    monkeypatch.setattr(sys, "stdin", io.StringIO("deployed-secret-value"))
    status, text = run("secret", "set", "calendar", "--stack", stack)
    assert status == 0 and "deployed-secret-value" not in text
    assert _moto_secret(local, f"{prefix}calendar") == "deployed-secret-value"
    monkeypatch.setattr(sys, "stdin", io.StringIO("x"))
    assert run("secret", "set", "ghost", "--stack", stack)[0] == 3  # no such secret
    assert run("secret", "set", "broken", "--stack", stack)[0] == 2  # not this stack's provider

    report = run_json_status("doctor", "--stack", stack, "--config", str(healthy))
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses["secret calendar"] == "ok" and statuses["session"] == "skip"
    (skipped,) = [c for c in report["checks"] if c["check"] == "session"]
    assert "ECS task" in skipped["detail"]
    # without --config the provider checks are skipped, with the reason
    report = run_json_status("doctor", "--stack", stack)
    (providers,) = [c for c in report["checks"] if c["check"] == "providers"]
    assert providers["status"] == "skip" and "--config" in providers["fix"]
    # a stack without the outputs fails the first check
    report = run_json_status("doctor", "--stack", "no-such-stack")
    assert report["checks"][0]["status"] == "fail" and report["ok"] is False


def test_the_console_script_runs_and_config_validate_needs_only_the_file(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "agent-vault"
    done = subprocess.run(
        [str(script), "config", "validate", str(REPO_ROOT / "config" / "example.json"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["valid"] is True
