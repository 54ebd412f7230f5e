"""The preset checker reads a real provider's metadata (the suite's oidc-provider) and compares it
with what a preset expects; `python -m vault.presets check` prints the same report."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent_vault_local.provider import AuthorizationServer
from vault.config import ProviderConfig
from vault.presets.checker import check


def local(server: AuthorizationServer, **extra: Any) -> ProviderConfig:
    return ProviderConfig.model_validate(
        {
            "discovery_url": server.discovery_url,
            "issuer": server.issuer,
            "client_id": server.client_id,
            "scopes": ["calendar.read"],
            **extra,
        }
    )


def test_the_generic_preset_against_the_real_provider(
    authorization_server: AuthorizationServer,
) -> None:
    report = check("local", local(authorization_server))
    assert report.issuer == authorization_server.issuer
    assert (report.s256.advertised, report.s256.expected) == (True, None)
    assert report.iss_parameter.advertised is True
    assert report.revocation_endpoint.advertised == authorization_server.revocation_endpoint
    assert "ES256" in report.dpop_algs.advertised
    assert report.ok and report.problems == [] and report.notes == []


def test_a_preset_whose_expectations_differ_is_reported(
    authorization_server: AuthorizationServer,
) -> None:
    # the Cognito preset (discovery URL given explicitly) expects no iss parameter and no DPoP
    config = local(
        authorization_server, preset="cognito", preset_params={"domain": "a.example.com"}
    )
    report = check("pool", config)
    assert report.ok  # nothing that stops the vault...
    assert report.notes == [  # ...but the provider is not what the preset describes
        "the metadata advertises the iss parameter, which the preset does not expect",
        "the metadata advertises DPoP, which the preset does not expect",
    ]
    assert (report.iss_parameter.expected, report.dpop_algs.expected) == (False, False)


def test_what_would_stop_the_vault_is_a_problem(authorization_server: AuthorizationServer) -> None:
    wrong_issuer = local(authorization_server, issuer="https://other.example")
    report = check("local", wrong_issuer)
    assert not report.ok
    assert report.problems == [
        f"the metadata's issuer {authorization_server.issuer!r} is not the configured one"
    ]
    no_refresh = local(authorization_server, preset="facebook")
    assert any("issues no refresh token" in p for p in check("fb", no_refresh).problems)


def test_the_command_line_check(authorization_server: AuthorizationServer, tmp_path: Path) -> None:
    config = {
        "providers": {"local": local(authorization_server).model_dump(mode="json")},
        "agents": {
            "a": {
                "role_name": "a-role",
                "providers": {"local": {"scopes": ["calendar.read"], "delivery": "bearer"}},
            }
        },
        "return_urls": ["https://app.example/return"],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "vault.presets", "check", "--config", str(path)]
    done = subprocess.run([*command, "local"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "PKCE S256" in done.stdout and done.stdout.rstrip().endswith("ok")
    as_json = subprocess.run(
        [*command, "--json", "local"], capture_output=True, text=True, check=False
    )
    assert json.loads(as_json.stdout)["revocation_endpoint"]["advertised"] == (
        authorization_server.revocation_endpoint
    )
    missing = subprocess.run([*command, "nope"], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "no provider named 'nope'" in missing.stderr


def _config_file(tmp_path: Path, discovery_url: str) -> Path:
    """A whole vault config with an OAuth provider at `discovery_url` and an API-key one."""
    data = {
        "providers": {
            "local": {"discovery_url": discovery_url, "client_id": "c", "scopes": ["a"]},
            "keyed": {"api_base_urls": ["https://api.example.com"], "api_key": {}},
        },
        "agents": {
            "a": {
                "role_name": "a-role",
                "providers": {"local": {"scopes": ["a"], "delivery": "bearer"}, "keyed": {}},
            }
        },
        "return_urls": ["https://app.example.com/return"],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_synth_runs_the_same_providers_check_where_the_provider_is_reachable(
    authorization_server: AuthorizationServer, tmp_path: Path
) -> None:
    from stacks.synth import providers_check

    gate = providers_check(str(_config_file(tmp_path, authorization_server.discovery_url)))
    assert gate.ok
    assert gate.details == [
        "local: ok (preset generic)",
        "keyed: nothing to check (no discovery URL)",
    ]


def test_synth_skips_the_providers_check_offline_with_one_note(tmp_path: Path) -> None:
    from stacks.synth import providers_check

    with socket.socket() as closed:  # a loopback port nobody listens on: unreachable at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    gate = providers_check(str(_config_file(tmp_path, f"http://127.0.0.1:{port}/.well-known/x")))
    assert gate.ok and gate.details == []
    assert gate.summary == (
        "note: providers not checked: 127.0.0.1 is not reachable (offline?); run them when online"
    )
