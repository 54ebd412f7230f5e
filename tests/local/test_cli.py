"""The operator CLI (`agent-vault`, agent_vault/cli.py) against a real local mode: the local
API Gateway adapter verifying SigV4, the handlers in their containers, moto, the real
oidc-provider. The "deployed" path runs too: the API URL from a CloudFormation stack's outputs
and the audit events from CloudWatch Logs (local mode's moto), credentials from the usual chain.
"""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from agent_vault import UserIdentity
from agent_vault.cli import main
from agent_vault.errors import Forbidden
from agent_vault_local.runner import (
    ADMIN,
    MAIL_TASK,
    REPO_ROOT,
    TASK_1,
    LocalInfo,
    LocalModeProcess,
)
from tests.local.helpers import consent, id_token_for, vault_client
from tests.security.hygiene import HYGIENE

STACK = "agent-vault-clitest-vault"


@pytest.fixture(scope="module")
def local() -> Iterator[LocalInfo]:
    """A local mode of this module's own (the CLI revokes grants in it)."""
    with LocalModeProcess(with_agent=False) as info:
        yield info


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
    assert agents["calendar-agent"] == sorted([local.provider_name, "keyed"])
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


def test_apikey_set_reads_stdin_and_the_proxy_uses_the_key_then_delete(
    local: LocalInfo,
    state: str,
    story: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    where = ("--local-state", state)
    key = "ak_local_" + secrets.token_urlsafe(24)
    HYGIENE.add_secret(key, "API key")
    _keyed_api_accepts(local, {"cli": key})
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    answer = run_json("apikey", "set", "keyed", *where)
    assert answer["provider"] == "keyed" and answer["status"] == "set"
    assert key not in json.dumps(answer)
    alice = vault_client(local, TASK_1, UserIdentity(id_token=id_token_for(local, "alice")))
    alice.start_session()
    with alice.http("keyed") as api:
        got = api.get("keyed/events")
    assert got.status_code == 200 and got.json()["key"] == "cli", got.text
    # the key is never an argument; an empty stdin is a usage error
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("apikey", "set", "keyed", *where)[0] == 2
    # a per-provider key takes no user; the calendar provider takes no key
    monkeypatch.setattr(sys, "stdin", io.StringIO(key))
    assert run("apikey", "set", local.provider_name, *where)[0] == 1
    assert "not_an_api_key_provider" in capsys.readouterr().err
    status, text = run("apikey", "delete", "keyed", *where)
    assert status == 0 and text.strip() == "API key of keyed deleted"
    # the proxy's container may still cache the key (for 30 s); once the provider refuses it
    # too, its 401 makes the proxy read the secret again: gone
    _keyed_api_accepts(local, {})
    with alice.http("keyed") as api, pytest.raises(Forbidden) as gone:
        api.get("keyed/events")
    assert gone.value.code == "api_key_not_set"
    alice.end_session()


def _keyed_api_accepts(local: LocalInfo, keys: dict[str, str]) -> None:
    """The bundled provider's test hook: the keys its keyed API accepts."""
    request = urllib.request.Request(
        local.provider["issuer"] + "/__test/api-keys",
        data=json.dumps({"keys": keys}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def test_revoke_ends_the_grant_and_its_tokens(
    local: LocalInfo, state: str, story: dict[str, Any]
) -> None:
    where = ("--local-state", state)
    user = ("--user-iss", local.provider["issuer"], "--user-sub", "alice")
    answer = run_json("revoke", *where, *user)
    assert answer["revoked_grants"] == 1
    assert run_json("grants", "list", *where, *user)["items"] == []
    assert run_json("sessions", "show", story["alice"], *where)["tokens"] == []


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
    template = {
        "Resources": {
            "AdminApiLogs1A2B3C4D": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": group},
            }
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

    listed = run_json("sessions", "list", "--stack", STACK)
    assert isinstance(listed["items"], list)
    status, text = run("audit", "tail", "--stack", STACK, "--json")
    assert status == 0
    assert [
        {k: v for k, v in json.loads(x).items() if k != "timestamp"} for x in text.split("\n") if x
    ] == [event]
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
