"""``agent-vault local``: local mode's commands (the SDK's ``agent-vault`` hands ``local`` here).

``agent-vault local up``    start local mode (moto, oidc-provider, vault, sample agent) until Ctrl-C
                           (``--config my.json``: your own agents, policies and providers;
                           ``--port N``: the vault's port; docs/local-mode.md)
``agent-vault local demo``  the scripted story, step by step; exit status 1 if a step fails
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from agent_vault.cli import LOCAL_STATE_ENV, default_local_state
from agent_vault_local.userconfig import secret_env_name

__all__ = ["main"]


def _format_audit(event: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("time", time.time()))))
    skip = {"time", "action", "outcome"}
    details = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in skip)
    return f"  audit {stamp} {event.get('action', '?')} {event.get('outcome', '?')} {details}"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _wait_for_stop(watch_stdin: bool) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if watch_stdin:

        def read_stdin() -> None:
            try:
                while sys.stdin.readline():
                    pass
            finally:
                stop.set()

        threading.Thread(target=read_stdin, name="stdin-watch", daemon=True).start()
    while not stop.wait(timeout=1.0):
        pass


def _named(exc: BaseException) -> str:
    """The error with its type (a timeout's message may be empty)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _user_config(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """The developer's config and external client secrets, validated before anything starts
    (UserConfigError)."""
    from agent_vault_local.credentials import DEFAULT_ACCOUNT
    from agent_vault_local.runner import ADMIN_ROLE, REGION
    from agent_vault_local.userconfig import (
        UserConfigError,
        client_secrets,
        load_user_config,
    )

    if args.config is None:
        if args.secrets_file is not None:
            raise UserConfigError(args.secrets_file, ["--secrets-file needs --config"])
        return None, {}
    config = load_user_config(
        args.config, account=DEFAULT_ACCOUNT, region=REGION, admin_role=ADMIN_ROLE
    )
    return config, client_secrets(config, secrets_file=args.secrets_file)


def local_up(args: argparse.Namespace) -> int:
    from agent_vault_local.runner import LocalMode
    from agent_vault_local.userconfig import UserConfigError

    try:
        config, client_secrets = _user_config(args)
    except UserConfigError as exc:
        print(f"local mode cannot start with this config: {exc}", file=sys.stderr)
        return 2
    quiet = bool(args.ready_json)
    on_audit = None if quiet else (lambda event: print(_format_audit(event), flush=True))
    started = time.monotonic()
    mode = LocalMode(
        with_agent=not args.no_agent,
        workdir=args.workdir,
        on_audit=on_audit,
        keep_workdir=bool(args.workdir),
        config=config,
        port=args.port,
        client_secrets=client_secrets,
        startup_timeout=args.startup_timeout,
    )
    atexit.register(mode.stop)
    try:
        info = mode.start()
    except Exception as exc:
        print(f"local mode failed to start: {_named(exc)}\n{START_HINT}", file=sys.stderr)
        return 1
    state = _publish_state(info, shared=not quiet or LOCAL_STATE_ENV in os.environ)
    atexit.register(_withdraw_state, state, info.to_json())
    try:
        if quiet:
            print("READY " + info.to_json(), flush=True)
        else:
            _print_banner(info, time.monotonic() - started)
        _wait_for_stop(watch_stdin=quiet)
    finally:
        if not quiet:
            print("stopping...", flush=True)
        _withdraw_state(state, info.to_json())
        mode.stop()
    return 0


def _publish_state(info: Any, *, shared: bool) -> list[Path]:
    """Where `agent-vault --local` finds this local mode: `local.json` in the workdir and, when
    `shared` (a person's `local up`, or AGENT_VAULT_LOCAL_STATE set), the CLI's default place
    (`agent_vault.cli.default_local_state`). Mode 0600: it holds local secrets."""
    paths = [Path(info.workdir) / "local.json"]
    if shared:
        paths.append(default_local_state())
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(info.to_json(), encoding="utf-8")
    return paths


def _withdraw_state(paths: list[Path], written: str) -> None:
    """Remove the state files this run wrote (not those a later local mode replaced)."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == written:
                path.unlink()


def _print_banner(info: Any, seconds: float) -> None:
    app = info.principals.get(info.app_principal)
    rows = [
        (
            "sample agent",
            info.agent_url or "(not started)",
            "open it in a browser; log in as alice / alice-password",
        ),
        ("vault API", info.vault_url, f"SigV4 for execute-api in {info.region}"),
        *(
            (
                f"{name} function URL",
                url,
                f"SigV4 for lambda in {info.region}, agents' roles only (agent_endpoint)",
            )
            for name, url in sorted(info.function_urls.items())
        ),
        *(
            (
                f"callback {name}",
                url,
                "register this exact redirect URI at the provider"
                if name in info.external_providers
                else "public (no SigV4); registered at the bundled provider",
            )
            for name, url in (info.callback_urls or {info.provider_name: info.callback_url}).items()
        ),
        ("provider", info.provider["issuer"], "oidc-provider; users alice, bob (<name>-password)"),
        (
            "calendar API",
            info.provider["calendar_url"],
            "bearer or DPoP-bound tokens, checked by introspection",
        ),
        ("moto", info.moto_url, "DynamoDB, KMS, Secrets Manager, ECS"),
        ("vault config", info.config_path, ""),
        ("vault logs", info.vault_log, "Powertools JSON, audit events included"),
        ("credentials", info.credentials_file, "one AWS profile per local principal"),
    ]
    print(f"Agent Vault local mode is up ({seconds:.1f} s). Ctrl-C stops everything.\n")
    for name, where, note in rows:
        print(f"  {name:<18} {where:<52} {note}")
    for name in info.placeholder_secrets:
        print(
            f"\n  provider {name} has no client secret yet (a placeholder it will refuse): set"
            f" {secret_env_name(name)} before `local up`, or now:"
            f" agent-vault secret set {name} --local"
        )
    print("\nLocal principals (AWS profiles in the credentials file):")
    for name, principal in info.principals.items():
        if name == "eventbridge":
            continue
        arn = (
            f"arn:aws:sts::{principal['account_id']}:assumed-role/"
            f"{principal['role_name']}/{principal['session_name']}"
        )
        print(f"  {name.replace('/', '-'):<24} {arn}")
    tasks = [n for n in info.tasks if n != info.app_principal]
    if info.agent_url and app is not None:
        print(f"""
Try it in a browser:
  1. open {info.agent_url}/ and log in as alice / alice-password
  2. ask "what is on my calendar today?" and follow "Connect your calendar"
  3. consent at the provider; the vault's callback sends you back to the agent ("Connected")
  4. ask again: the agent answers from the calendar API with a session-bound token

Or with the SDK, signing as a local agent task:
  AWS_SHARED_CREDENTIALS_FILE={info.credentials_file} AWS_PROFILE={tasks[0].replace("/", "-")} \\
  python -c "from agent_vault import VaultClient; ..."   (base_url {info.vault_url})
The sample agent signs as {app["role_name"]}/{app["session_name"]}.
""")
    print("Audit events:", flush=True)


def local_demo(args: argparse.Namespace) -> int:
    from agent_vault_local.demo import Story
    from agent_vault_local.runner import LocalMode

    started = time.monotonic()
    print("Starting local mode (moto, oidc-provider, vault handlers, sample agent)...", flush=True)
    mode = LocalMode(with_agent=True)
    atexit.register(mode.stop)
    try:
        try:
            info = mode.start()
        except Exception as exc:
            print(f"local mode failed to start: {_named(exc)}\n{START_HINT}", file=sys.stderr)
            return 1
        print(
            f"  up in {time.monotonic() - started:.1f} s: vault {info.vault_url}, "
            f"provider {info.provider['issuer']}, agent {info.agent_url}\n",
            flush=True,
        )
        story = Story(info)
        ok = story.run()
    finally:
        mode.stop()
    total = time.monotonic() - started
    print(
        f"\n{'The story ran to the end' if ok else 'The story FAILED'} "
        f"({total:.1f} s in all, every process stopped)."
    )
    return 0 if ok else 1


def doctor_session(state: dict[str, Any]) -> tuple[str, str, str]:
    """`agent-vault doctor --local`'s session check: the config's first agent task starts and
    ends a session for the bundled provider's user alice (a real login there). Returns
    (ok | fail | skip, what happened, the fix)."""
    from agent_vault import UserIdentity, VaultClient, VaultError
    from agent_vault_local.demo import id_token_for
    from agent_vault_local.runner import LocalInfo

    info = LocalInfo.from_json(json.dumps(state))
    task = next((n for n in info.tasks if not n.endswith("/app")), None)
    if task is None:
        return "skip", "local mode runs no agent task", ""
    try:
        user = UserIdentity(id_token=id_token_for(info, "alice"))
    except Exception as exc:  # the login at the bundled provider, over HTTP
        return (
            "fail",
            f"no identity token for alice: {_named(exc)}",
            "is the bundled provider running? restart local up",
        )
    client = VaultClient(
        info.vault_url,
        user=user,
        credentials=info.principal(task).credentials(),
        region=info.region,
        timeout=15.0,
    )
    try:
        started = client.start_session()
        client.end_session()
    except VaultError as exc:
        return (
            "fail",
            f"{task} could not start and end a session for alice: {exc}",
            "see `agent-vault audit tail --local` for the refusal",
        )
    finally:
        client.close(end_session=False)
    return "ok", f"{task} started and ended {started.session_id} for alice", ""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0-3600)")
    return seconds


START_HINT = (
    "hint: local mode needs Node 20+ with node_modules/oidc-provider (npm ci) and the "
    "Python packages of requirements/dev.txt; `make demo` installs both first"
)


def main(argv: Sequence[str] | None = None) -> int:
    from agent_vault_local.runner import STARTUP_TIMEOUT

    parser = argparse.ArgumentParser(
        prog="agent-vault local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    local_commands = parser.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser("up", help="start local mode until Ctrl-C")
    up.add_argument("--no-agent", action="store_true", help="do not start the sample agent")
    up.add_argument("--workdir", help="keep config, logs and credentials in this directory")
    up.add_argument(
        "--config",
        metavar="FILE",
        help="your own vault config (agents, policies, providers; a provider given as"
        ' {"bundled": true} is the bundled oidc-provider); validated before anything starts',
    )
    up.add_argument(
        "--secrets-file",
        metavar="FILE",
        help='external providers\' client secrets, {"<provider>": "<secret>"} (the environment\'s'
        " AGENT_VAULT_SECRET_<PROVIDER> wins); never on the command line",
    )
    up.add_argument(
        "--port",
        type=_port,
        help="the vault's port on 127.0.0.1 (default: any free one), so its callback URL can be"
        " registered at a provider",
    )
    up.add_argument(
        "--startup-timeout",
        type=_seconds,
        default=STARTUP_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a start-up step may take before local mode gives up (default:"
        f" {STARTUP_TIMEOUT:g}; a start takes ~5 s, longer on a busy machine)",
    )
    up.add_argument(
        "--ready-json",
        action="store_true",
        help="print one 'READY <json>' line and run until stdin closes (for tools)",
    )
    up.set_defaults(run=local_up)
    demo = local_commands.add_parser("demo", help="run the scripted story")
    demo.set_defaults(run=local_demo)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
