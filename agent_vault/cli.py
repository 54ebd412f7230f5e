"""``agent-vault``: the operator CLI (docs/cli.md).

  sessions list | show ID          sessions, by task, agent, user or status
  grants list | show ID            grants, by user, agent, provider or status
  flows list | show ID             consents awaiting binding; any answered flow by id
  revoke --user-iss/--user-sub, --agent, --provider, --grant
                                   revoke grants (upstream first) and their tokens
  apikey set | delete PROVIDER [--user-iss ISS --user SUB]
                                   an API key (flow 12), read from stdin, never an argument
  audit tail [--follow]            the vault's audit events
  config validate FILE             the typed config model, without synthesizing anything
  providers check NAME             a provider's discovery against its preset
  secret set PROVIDER              store a provider's client secret (read from stdin)
  doctor                           check a deployed or local vault end to end
  local up | demo                  local mode (the agent-vault-local package)

Against a deployed stack (the API URL from its CloudFormation outputs, ``--stack``; SigV4 with
the usual AWS credential chain) or local mode (``--local``: the vault, credentials and logs of
the running ``agent-vault local up``). Tables for people, ``--json`` for scripts.

Exit status: 0 done; 1 the vault refused (a 4xx problem), or a check found problems; 2 a usage
error, or a package or file the command needs is missing; 3 the vault, AWS or local mode could
not be reached, or failed (5xx).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from agent_vault.errors import VaultConnectionError, VaultError, VaultUnavailable

__all__ = ["main"]

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
DEFAULT_STACK = "agent-vault-dev-vault"
LOCAL_STATE_ENV = "AGENT_VAULT_LOCAL_STATE"
ADMIN_PROFILE = "admin"
"""The local mode principal the CLI signs as (an admin role)."""
FUNCTIONS = ("AgentApi", "ProxyApi", "Callback", "AdminApi", "Reaper")
"""The vault stack's functions, whose log groups carry the audit events."""

LOCAL_MISSING = (
    "agent-vault: local mode is a separate developer package that is not installed here.\n"
    "  In a checkout: `make install` (or `pip install -e lambdas -e agent -e local`: local mode\n"
    "  needs the service and the sample agent), then `agent-vault local up`."
)
SERVICE_MISSING = (
    "agent-vault: `{command}` needs the vault's service package (`vault`), not installed here.\n"
    "  In a checkout: `make install` (or `pip install -e lambdas`); elsewhere\n"
    "  `pip install agent-vault-service`."
)


class CliError(Exception):
    """A failure to report in one line, with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def default_local_state() -> Path:
    """Where `agent-vault local up` leaves the running local mode's description."""
    explicit = os.environ.get(LOCAL_STATE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agent-vault" / "local.json"


# --- where the vault is ----------------------------------------------------------------------


@dataclass
class Target:
    """A vault to talk to: its API, how to sign for it, where its audit events are."""

    base_url: str
    region: str
    credentials: Any | None
    """None: botocore's default chain."""
    audit_file: Path | None = None
    """Local mode's log file (JSON lines); None: CloudWatch Logs of the stack's functions."""
    stack: str | None = None
    config_path: str | None = None
    """Local mode's vault config."""
    botocore_session: Any = None

    def client(self) -> Any:
        from agent_vault.client import VaultClient

        return VaultClient(
            self.base_url, credentials=self.credentials, region=self.region, timeout=15.0
        )


def _botocore(args: argparse.Namespace) -> Any:
    import botocore.session

    session = botocore.session.Session(profile=args.profile) if args.profile else None
    session = session or botocore.session.get_session()
    if args.region:
        session.set_config_variable("region", args.region)
    return session


def _aws_call(what: str, call: Callable[[], Any]) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        raise CliError(f"{what}: {exc}", UNREACHABLE) from exc
    except BotoCoreError as exc:
        raise CliError(f"{what}: {exc}", UNREACHABLE) from exc


def _local_state(state: Path) -> dict[str, Any]:
    """The running local mode's description (`local.json`)."""
    try:
        info: dict[str, Any] = json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(
            f"no running local mode: {state} does not exist (start `agent-vault local up`, or"
            f" point --local-state / {LOCAL_STATE_ENV} at its local.json)",
            UNREACHABLE,
        ) from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read local mode's state {state}: {exc}", UNREACHABLE) from exc
    return info


def local_target(state: Path) -> Target:
    info = _local_state(state)
    from botocore.credentials import Credentials

    profiles = configparser.ConfigParser()
    profiles.read(info["credentials_file"], encoding="utf-8")
    if ADMIN_PROFILE not in profiles:
        raise CliError(f"local mode's credentials have no {ADMIN_PROFILE!r} profile", USAGE)
    admin = profiles[ADMIN_PROFILE]
    return Target(
        base_url=info["vault_url"],
        region=info["region"],
        credentials=Credentials(
            admin["aws_access_key_id"], admin["aws_secret_access_key"], admin["aws_session_token"]
        ),
        audit_file=Path(info["vault_log"]),
        config_path=info.get("config_path"),
    )


def deployed_target(args: argparse.Namespace) -> Target:
    session = _botocore(args)
    region = session.get_config_variable("region")
    url = args.url or os.environ.get("AGENT_VAULT_URL")
    if url is None:
        if not region:
            raise CliError("no AWS region: pass --region or set AWS_REGION", USAGE)
        cloudformation = session.create_client("cloudformation", region_name=region)
        answer = _aws_call(
            f"cannot read stack {args.stack}",
            lambda: cloudformation.describe_stacks(StackName=args.stack),
        )
        outputs = {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}
        url = outputs.get("ApiUrl")
        if not url:
            raise CliError(f"stack {args.stack} has no ApiUrl output (is it the vault stack?)", 3)
    if not region:
        from agent_vault.client import region_from_url

        region = region_from_url(url)
    if not region:
        raise CliError("no AWS region: pass --region or set AWS_REGION", USAGE)
    credentials = session.get_credentials()
    if credentials is None:
        raise CliError("no AWS credentials found (the usual chain: environment, profile...)", 3)
    return Target(
        base_url=url,
        region=region,
        credentials=credentials,
        stack=args.stack,
        botocore_session=session,
    )


def target_of(args: argparse.Namespace) -> Target:
    if args.local or args.local_state:
        return local_target(Path(args.local_state) if args.local_state else default_local_state())
    return deployed_target(args)


def call(target: Target, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return target.client().request(method, path, body, proof=False)
    except VaultConnectionError as exc:
        raise CliError(f"cannot reach the vault at {target.base_url}: {exc}", UNREACHABLE) from exc


# --- output ----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict) and set(value) == {"iss", "sub"}:
        return f"{value['sub']} @ {value['iss']}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _when(value: Any) -> str:
    if not isinstance(value, int):
        return _cell(value)
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], out: TextIO) -> None:
    """A plain text table: `columns` are (header, key); times (`*_at`) in UTC."""
    cells = [
        [(_when(r.get(key)) if key.endswith("_at") else _cell(r.get(key))) for _, key in columns]
        for r in rows
    ]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, (header, _) in enumerate(columns)
    ]
    lines = [[h for h, _ in columns], *cells]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)


def details(record: dict[str, Any], out: TextIO) -> None:
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            continue
        shown = _when(value) if key.endswith("_at") else _cell(value)
        print(f"{key:<22} {shown}", file=out)


# --- commands --------------------------------------------------------------------------------

SESSION_COLUMNS = [
    ("SESSION", "session_id"),
    ("AGENT", "agent"),
    ("USER", "user"),
    ("TASK", "task_id"),
    ("STATUS", "status"),
    ("EXPIRES", "expires_at"),
]
GRANT_COLUMNS = [
    ("GRANT", "grant_id"),
    ("USER", "user"),
    ("AGENT", "agent"),
    ("PROVIDER", "provider"),
    ("STATUS", "status"),
    ("BROKEN", "broken_reason"),
    ("SCOPES", "scopes"),
    ("REFRESHED", "refreshed_at"),
    ("SESSIONS", "sessions"),
]
FLOW_COLUMNS = [
    ("FLOW", "flow_id"),
    ("STATUS", "status"),
    ("USER", "user"),
    ("AGENT", "agent"),
    ("PROVIDER", "provider"),
    ("SCOPES", "granted_scopes"),
    ("EXPIRES", "expires_at"),
]
TOKEN_COLUMNS = [
    ("SESSION", "session_id"),
    ("PROVIDER", "provider"),
    ("SCOPES", "scopes"),
    ("GRANT", "grant_id"),
    ("EXPIRES", "expires_at"),
    ("REVOKE PENDING", "revoke_pending"),
]
LISTINGS = {"sessions": SESSION_COLUMNS, "grants": GRANT_COLUMNS, "flows": FLOW_COLUMNS}
FILTERS = {
    "sessions": ("task", "agent", "status"),
    "grants": ("agent", "provider", "status"),
    "flows": ("agent", "provider", "status"),
}


def _pages(target: Target, what: str, query: dict[str, str], every: bool) -> Iterator[Any]:
    while True:
        page = call(target, "GET", f"/v1/admin/{what}?{urlencode(query)}")
        yield page
        if not every or page.get("next_cursor") is None:
            return
        query = {**query, "cursor": page["next_cursor"]}


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    target = target_of(args)
    query = {name: getattr(args, name) for name in FILTERS[args.what] if getattr(args, name)}
    if args.user_iss or args.user_sub:
        query |= {"user_iss": args.user_iss or "", "user_sub": args.user_sub or ""}
    query["limit"] = str(args.limit)
    if args.cursor:
        query["cursor"] = args.cursor
    items: list[dict[str, Any]] = []
    following = None
    for page in _pages(target, args.what, query, args.all):
        items += page["items"]
        following = page.get("next_cursor")
    if args.json:
        print(json.dumps({"items": items, "next_cursor": following}, indent=2), file=out)
        return OK
    if items:
        table(items, LISTINGS[args.what], out)
    else:
        print(f"no {args.what}", file=out)
    if following is not None:
        print(f"\nmore: --cursor {following}  (or --all)", file=out)
    return OK


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    target = target_of(args)
    record = call(target, "GET", f"/v1/admin/{args.what}/{quote(args.id, safe='')}")
    if args.json:
        print(json.dumps(record, indent=2), file=out)
        return OK
    details(record, out)
    if record.get("tokens"):
        print("\ntokens:", file=out)
        table(record["tokens"], TOKEN_COLUMNS, out)
    return OK


def cmd_revoke(args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {}
    if args.user_iss or args.user_sub:
        if not (args.user_iss and args.user_sub):
            raise CliError("give both --user-iss and --user-sub", USAGE)
        body["user"] = {"iss": args.user_iss, "sub": args.user_sub}
    for name in ("agent", "provider"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if args.grant:
        body["grant_id"] = args.grant
    if not body:
        raise CliError(
            "name what to revoke: --user-iss/--user-sub, --agent, --provider, --grant", 2
        )
    answer = call(target_of(args), "POST", "/v1/revocations", body)
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
    else:
        print(
            f"revoked {answer['revoked_grants']} grant(s), {answer['revoked_tokens']} token(s),"
            f" {answer['revoked_flows']} unbound consent(s)",
            file=out,
        )
    return OK


def _read_api_key(stdin: TextIO) -> str:
    """The key from standard input (a prompt without echo on a terminal); one trailing line
    break dropped, nothing else changed."""
    if stdin.isatty():
        import getpass

        key = getpass.getpass("API key (not echoed): ")
    else:
        key = stdin.read(64 * 1024)
    key = key.removesuffix("\n").removesuffix("\r")
    if not key:
        raise CliError("no API key on standard input (pipe it in: never as an argument)", USAGE)
    return key


def _api_key_user(args: argparse.Namespace) -> dict[str, str] | None:
    if not (args.user_iss or args.user_sub):
        return None
    if not (args.user_iss and args.user_sub):
        raise CliError("give both --user-iss and --user (a per-user key's user)", USAGE)
    return {"iss": args.user_iss, "sub": args.user_sub}


def cmd_apikey(args: argparse.Namespace, out: TextIO) -> int:
    target = target_of(args)
    path = f"/v1/admin/api-keys/{quote(args.provider, safe='')}"
    user = _api_key_user(args)
    if args.action == "set":
        body: dict[str, Any] = {"key": _read_api_key(sys.stdin)}
        if user is not None:
            body["user"] = user
        answer = call(target, "PUT", path, body)
    else:
        query = {"user_iss": user["iss"], "user_sub": user["sub"]} if user else {}
        answer = call(target, "DELETE", path + (f"?{urlencode(query)}" if query else ""))
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
    elif args.action == "set":
        until = answer.get("previous_valid_until")
        rotation = f"; the previous key is tried until {_when(until)}" if until else ""
        print(f"API key of {args.provider} set{rotation}", file=out)
    else:
        done = "deleted" if answer.get("deleted") else "was not set"
        print(f"API key of {args.provider} {done}", file=out)
    return OK


def _audit_event(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    event = record.get("audit") if isinstance(record, dict) else None
    if not isinstance(event, dict):
        return None
    return {"timestamp": record.get("timestamp"), **event}


def _audit_line(event: dict[str, Any]) -> str:
    skip = {"timestamp", "action", "outcome"}
    rest = " ".join(f"{k}={_cell(v)}" for k, v in event.items() if k not in skip)
    return f"{event.get('timestamp', '-')}  {event['action']} {event['outcome']}  {rest}"


def _local_audit(path: Path, follow: bool) -> Iterator[dict[str, Any] | None]:
    """The audit events of local mode's log; with `follow`, then the new ones (None: idle)."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read local mode's log {path}: {exc}", UNREACHABLE) from exc
    with handle:
        while True:
            line = handle.readline()
            if line:
                event = _audit_event(line)
                if event is not None:
                    yield event
            elif not follow:
                return
            else:
                yield None


def _cloudwatch_audit(
    target: Target, since_ms: int, follow: bool
) -> Iterator[dict[str, Any] | None]:
    """The audit events in the stack's function log groups (a CloudWatch Logs filter)."""
    session = target.botocore_session
    region = target.region
    cloudformation = session.create_client("cloudformation", region_name=region)
    paginator = cloudformation.get_paginator("list_stack_resources")
    groups = sorted(
        r["PhysicalResourceId"]
        for page in _aws_call(
            f"cannot list stack {target.stack}",
            lambda: list(paginator.paginate(StackName=target.stack)),
        )
        for r in page["StackResourceSummaries"]
        if r["ResourceType"] == "AWS::Logs::LogGroup"
        and r["LogicalResourceId"].startswith(tuple(f"{f}Logs" for f in FUNCTIONS))
    )
    if not groups:
        raise CliError(f"stack {target.stack} has no function log groups", UNREACHABLE)
    logs = session.create_client("logs", region_name=region)
    seen: set[str] = set()
    start = since_ms
    while True:
        found: list[tuple[int, str, str]] = []
        for group in groups:
            token: str | None = None
            while True:
                request: dict[str, Any] = {
                    "logGroupName": group,
                    "startTime": start,
                    "filterPattern": "audit",
                }
                if token:
                    request["nextToken"] = token
                page = _aws_call(
                    f"cannot read log group {group}",
                    functools.partial(logs.filter_log_events, **request),
                )
                found += [(e["timestamp"], e["eventId"], e["message"]) for e in page["events"]]
                token = page.get("nextToken")
                if not token:
                    break
        for stamp, event_id, message in sorted(found):
            if event_id in seen:
                continue
            seen.add(event_id)
            start = max(start, stamp)
            event = _audit_event(message)
            if event is not None:
                yield event
        if not follow:
            return
        yield None


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    target = target_of(args)
    if target.audit_file is not None:
        events = _local_audit(target.audit_file, args.follow)
    else:
        since = int((time.time() - args.since_minutes * 60) * 1000)
        events = _cloudwatch_audit(target, since, args.follow)

    def emit(event: dict[str, Any]) -> None:
        print(json.dumps(event) if args.json else _audit_line(event), file=out, flush=True)

    backlog: list[dict[str, Any]] = []
    live = False  # following, and the backlog is printed
    for event in events:
        if event is None:  # following: nothing new yet
            if not live:
                for kept in backlog[-args.lines :]:
                    emit(kept)
                live = True
            time.sleep(1.0)
            continue
        if args.action and not str(event.get("action", "")).startswith(args.action):
            continue
        if live:
            emit(event)
        else:
            backlog.append(event)
    if not live:
        for kept in backlog[-args.lines :]:
            emit(kept)
    return OK


def _service(module: str, command: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (exc.name == "vault" or exc.name.startswith("vault.")):
            raise
        raise CliError(SERVICE_MISSING.format(command=command), USAGE) from None


def cmd_config_validate(args: argparse.Namespace, out: TextIO) -> int:
    config_module = _service("vault.config", "config validate")
    pydantic = importlib.import_module("pydantic")
    try:
        data = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc}", USAGE) from exc
    except ValueError as exc:
        print(f"{args.file}: not JSON: {exc}", file=out)
        return REFUSED
    try:
        config = config_module.VaultConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [
            {"at": ".".join(str(p) for p in e["loc"]) or "(top)", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        if args.json:
            print(json.dumps({"valid": False, "problems": problems}, indent=2), file=out)
        else:
            print(f"{args.file}: {len(problems)} problem(s)", file=out)
            for problem in problems:
                print(f"  {problem['at']}: {problem['problem']}", file=out)
        return REFUSED
    summary = {
        "valid": True,
        "environment": config.environment,
        "agents": {name: sorted(agent.providers) for name, agent in config.agents.items()},
        "providers": {name: p.preset for name, p in config.providers.items()},
        "admin_role_names": sorted(config.admin_role_names),
    }
    if args.json:
        print(json.dumps(summary, indent=2), file=out)
    else:
        print(f"{args.file}: valid ({config.environment})", file=out)
        for name, providers in summary["agents"].items():
            print(f"  agent {name}: {', '.join(providers) or '-'}", file=out)
        for name, preset in summary["providers"].items():
            print(f"  provider {name}: preset {preset}", file=out)
    return OK


def cmd_providers_check(args: argparse.Namespace, out: TextIO) -> int:
    presets_cli = _service("vault.presets.__main__", "providers check")
    config = args.config
    if config is None and (args.local or args.local_state):
        config = target_of(args).config_path
    if config is None:
        raise CliError("name the vault config: --config FILE (or --local)", USAGE)
    argv = ["check", "--config", str(config), args.name, *(["--json"] if args.json else [])]
    stdout = sys.stdout
    sys.stdout = out
    try:
        result: int = presets_cli.main(argv)
    finally:
        sys.stdout = stdout
    return result


# --- secret set ------------------------------------------------------------------------------

LOCAL_SECRET_PREFIX = "agent-vault/local/provider/"  # noqa: S105 - a name prefix  # nosec B105
"""Local mode's provider secret names (older local.json files do not say)."""
SECRET_CACHE_MINUTES = 5
"""The functions cache a provider's client secret this long (vault.runtime)."""


def _stack_outputs(args: argparse.Namespace) -> dict[str, str]:
    session = _botocore(args)
    region = session.get_config_variable("region")
    if not region:
        raise CliError("no AWS region: pass --region or set AWS_REGION", USAGE)
    cloudformation = session.create_client("cloudformation", region_name=region)
    answer = _aws_call(
        f"cannot read stack {args.stack}",
        lambda: cloudformation.describe_stacks(StackName=args.stack),
    )
    return {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}


def _secrets_place(args: argparse.Namespace) -> tuple[Any, str, list[str], str]:
    """Secrets Manager (moto for local mode), the secret name prefix, the providers that have a
    secret, and what the vault is (for messages)."""
    if args.local or args.local_state:
        state = Path(args.local_state) if args.local_state else default_local_state()
        info = _local_state(state)
        import botocore.session

        client = botocore.session.get_session().create_client(
            "secretsmanager",
            region_name=info["region"],
            endpoint_url=info["moto_url"],
            aws_access_key_id="testing",  # moto's  # nosec B106
            aws_secret_access_key="testing",  # noqa: S106  # nosec B106
        )
        try:
            configured = json.loads(Path(info["config_path"]).read_text(encoding="utf-8"))
            providers = sorted(configured["providers"])
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"cannot read local mode's config: {exc}", UNREACHABLE) from exc
        prefix = info.get("client_secret_prefix", LOCAL_SECRET_PREFIX)
        return client, prefix, providers, "local mode"
    outputs = _stack_outputs(args)
    prefix = outputs.get("ClientSecretPrefix")
    if not prefix:
        raise CliError(
            f"stack {args.stack} has no ClientSecretPrefix output (is it the vault stack?"
            " pass --stack)",
            UNREACHABLE,
        )
    providers = sorted(
        value.removeprefix(prefix)
        for key, value in outputs.items()
        if key.startswith("ProviderSecret") and value.startswith(prefix)
    )
    session = _botocore(args)
    client = session.create_client(
        "secretsmanager", region_name=session.get_config_variable("region")
    )
    return client, prefix, providers, f"stack {args.stack}"


def _read_secret(provider: str, stdin: TextIO) -> str:
    """The secret from stdin: typed without echo at a terminal, else piped (one trailing line
    break dropped). Never from the command line."""
    import getpass

    if stdin.isatty():
        value = getpass.getpass(f"{provider}'s client secret (not echoed): ", stream=sys.stderr)
    else:
        value = stdin.read()
    if value.endswith("\n"):
        value = value[:-1].removesuffix("\r")
    if not value.strip():
        raise CliError(
            f"no client secret on stdin: pipe it in (e.g. `agent-vault secret set {provider}"
            " < file`, or type it at the prompt); it is never taken from the command line",
            USAGE,
        )
    return value


def cmd_secret_set(args: argparse.Namespace, out: TextIO) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    client, prefix, providers, where = _secrets_place(args)
    if args.provider not in providers:
        raise CliError(
            f"{where} has no provider {args.provider!r} (its providers: "
            f"{', '.join(providers) or 'none'}); add it to the config and deploy (or restart"
            " local mode) first",
            USAGE,
        )
    secret_id = f"{prefix}{args.provider}"
    value = _read_secret(args.provider, sys.stdin)
    try:
        answer = client.put_secret_value(SecretId=secret_id, SecretString=value)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            fix = (
                "restart `agent-vault local up` (it creates one per provider)"
                if where == "local mode"
                else f"deploy the stack with provider {args.provider!r} in its config (it"
                " creates the secret), then run this again"
            )
            raise CliError(f"no secret {secret_id} in {where}: {fix}", UNREACHABLE) from None
        if "AccessDenied" in code or code in {"UnauthorizedOperation", "KMSAccessDeniedException"}:
            raise CliError(
                f"AWS denied storing {secret_id} ({code}): your role needs"
                f" secretsmanager:PutSecretValue on it and kms:GenerateDataKey on the vault key"
                " (KeyArn output)",
                REFUSED,
            ) from None
        raise CliError(f"cannot store {secret_id}: {code or exc}", UNREACHABLE) from None
    except BotoCoreError as exc:
        raise CliError(f"cannot store {secret_id}: {exc}", UNREACHABLE) from None
    del value
    result = {
        "provider": args.provider,
        "secret_id": secret_id,
        "version_id": answer.get("VersionId"),
    }
    if args.json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print(
            f"stored provider {args.provider}'s client secret in {secret_id} ({where}); the"
            f" vault's functions use it within {SECRET_CACHE_MINUTES} minutes",
            file=out,
        )
    return OK


# --- doctor ----------------------------------------------------------------------------------


@dataclass
class Check:
    """One line of `doctor`: ok, warn, fail or skip, what was seen, and the fix."""

    check: str
    status: str
    detail: str
    fix: str = ""


def _doctor_outputs(args: argparse.Namespace, checks: list[Check]) -> dict[str, Any] | None:
    """What the vault is: local mode's state, or the stack's outputs. None: nothing more can
    be checked."""
    if args.local or args.local_state:
        state = Path(args.local_state) if args.local_state else default_local_state()
        try:
            info = _local_state(state)
            missing = [
                k for k in ("vault_url", "credentials_file", "config_path") if not info.get(k)
            ]
        except CliError as exc:
            checks.append(Check("outputs", "fail", str(exc), "start `agent-vault local up`"))
            return None
        if missing:
            checks.append(
                Check("outputs", "fail", f"{state} lacks {', '.join(missing)}", "restart local up")
            )
            return None
        checks.append(Check("outputs", "ok", f"local mode's {state}: vault {info['vault_url']}"))
        callbacks = info.get("callback_urls") or {
            info["provider_name"]: f"{info['vault_url']}/v1/oauth/callback/{info['provider_name']}"
        }
        prefix = info.get("client_secret_prefix", LOCAL_SECRET_PREFIX)
        return {
            "config": args.config or info["config_path"],
            "callbacks": callbacks,
            "secrets": Secrets(
                client=_moto_secrets(info),
                ids={name: f"{prefix}{name}" for name in callbacks},
                placeholders=set(info.get("placeholder_secrets", [])),
                where="--local",
            ),
            "local": info,
        }
    if args.url:
        checks.append(Check("outputs", "skip", "--url given: no stack outputs read"))
        return {"config": args.config, "callbacks": {}, "secrets": None, "local": None}
    try:
        outputs = _stack_outputs(args)
    except CliError as exc:
        checks.append(
            Check("outputs", "fail", str(exc), "deploy the vault stack, or pass --stack/--region")
        )
        return None
    needed = ("ApiUrl", "CallbackUrl", "ClientSecretPrefix")
    missing = [k for k in needed if not outputs.get(k)]
    callbacks = {
        v.rsplit("/", 1)[-1]: v
        for k, v in outputs.items()
        if k.startswith("CallbackUrl") and k != "CallbackUrl"
    }
    if missing:
        checks.append(
            Check(
                "outputs",
                "fail",
                f"stack {args.stack} lacks {', '.join(missing)}",
                "is it the vault stack? pass --stack; or redeploy it (make deploy)",
            )
        )
        if "ApiUrl" in missing:
            return None
    else:
        checks.append(
            Check(
                "outputs",
                "ok",
                f"stack {args.stack}: API {outputs['ApiUrl']}, {len(callbacks)} provider(s)",
            )
        )
    ids = {
        v.removeprefix(outputs.get("ClientSecretPrefix", "")): v
        for k, v in outputs.items()
        if k.startswith("ProviderSecret")
    }
    session = _botocore(args)
    secrets = Secrets(
        client=session.create_client(
            "secretsmanager", region_name=session.get_config_variable("region")
        ),
        ids=ids,
        placeholders=set(ids),  # the stack made each with a placeholder
        where=f"--stack {args.stack}",
    )
    return {"config": args.config, "callbacks": callbacks, "secrets": secrets, "local": None}


def _moto_secrets(info: dict[str, Any]) -> Any:
    """Local mode's Secrets Manager (moto)."""
    import botocore.session

    return botocore.session.get_session().create_client(
        "secretsmanager",
        region_name=info["region"],
        endpoint_url=info["moto_url"],
        aws_access_key_id="testing",  # moto's  # nosec B106
        aws_secret_access_key="testing",  # noqa: S106  # nosec B106
    )


@dataclass
class Secrets:
    """The providers' client secrets, for doctor."""

    client: Any
    ids: dict[str, str]
    """provider -> secret id"""
    placeholders: set[str]
    """The providers whose secret started as a placeholder (a first version only)."""
    where: str
    """`secret set`'s option naming this vault."""


def _doctor_secrets(secrets: Secrets | None, checks: list[Check]) -> None:
    """Each provider's client secret exists and was put after the stack made its placeholder
    (`PutSecretValue` adds a version: AWSCURRENT and AWSPREVIOUS; the value is never read)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if secrets is None:
        checks.append(Check("secrets", "skip", "--url given: the secrets' names are unknown"))
        return
    for name, secret_id in sorted(secrets.ids.items()):
        check = f"secret {name}"
        try:
            versions = secrets.client.describe_secret(SecretId=secret_id).get(
                "VersionIdsToStages", {}
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                checks.append(
                    Check(
                        check,
                        "fail",
                        f"no secret {secret_id}",
                        "redeploy the stack (or restart local mode): it creates one per provider",
                    )
                )
            else:
                checks.append(
                    Check(
                        check,
                        "skip",
                        f"cannot describe it ({code})",
                        "needs secretsmanager:DescribeSecret",
                    )
                )
            continue
        except BotoCoreError as exc:
            checks.append(Check(check, "skip", f"cannot describe it ({exc})"))
            continue
        if name in secrets.placeholders and len(versions) <= 1:
            checks.append(
                Check(
                    check,
                    "warn",
                    f"{secret_id} still holds the placeholder it was created with (the provider"
                    " will refuse the vault)",
                    f"agent-vault secret set {name} {secrets.where}",
                )
            )
        else:
            checks.append(Check(check, "ok", f"{secret_id} is set"))


def _doctor_sigv4(target: Target, checks: list[Check]) -> bool:
    """Signed admin read: ok for an admin, warn when the vault answers but not to an admin."""
    from agent_vault.client import invoke_permission

    try:
        target.client().request("GET", "/v1/admin/sessions?limit=1", None, proof=False)
    except VaultConnectionError as exc:
        checks.append(
            Check(
                "sigv4",
                "fail",
                f"cannot reach {target.base_url}: {exc}",
                "is the API URL right and the vault running?",
            )
        )
        return False
    except VaultError as exc:
        if exc.status == 403 and exc.code != "access_denied":
            checks.append(
                Check(
                    "sigv4",
                    "warn",
                    f"the vault checked the signature but this principal is no admin ({exc.code})",
                    "add your role to admin_role_names (or use an admin profile) for"
                    " list/show/revoke",
                )
            )
            return True
        checks.append(
            Check(
                "sigv4",
                "fail",
                f"the API refused the signed request: {exc}",
                "check the region and credentials; IAM must allow"
                f" {invoke_permission(target.base_url)}",
            )
        )
        return False
    checks.append(Check("sigv4", "ok", f"a signed admin read answered ({target.base_url})"))
    return True


def _doctor_session(local: dict[str, Any] | None, checks: list[Check]) -> None:
    """A session starts and ends: in local mode as an agent task of the config, for the
    bundled provider's user alice. A deployed vault binds sessions to a running ECS task of an
    agent's role; the operator's credentials are not that, so the check is skipped."""
    if local is None:
        checks.append(
            Check(
                "session",
                "skip",
                "a session needs an agent task's role credentials (its ECS task running) and a"
                " user's identity token; an operator's role has neither",
                "run doctor against local mode with the same config, or watch a real agent's"
                " session.start in `agent-vault audit tail`",
            )
        )
        return
    try:  # local mode's own code logs a user in at its bundled provider (as `local` does)
        local_cli = importlib.import_module("agent_vault_local.cli")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("agent_vault_local"):
            raise
        checks.append(Check("session", "skip", "agent-vault-local is not installed"))
        return
    status, detail, fix = local_cli.doctor_session(local)
    checks.append(Check("session", status, detail, fix))


def _doctor_callbacks(callbacks: dict[str, str], checks: list[Check]) -> None:
    """Each provider's callback answers (public, no SigV4): a request without a code or state is
    refused by the vault itself, with its problem code; no answer or a 5xx is a failure."""
    import urllib3

    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10.0), retries=False)
    if not callbacks:
        checks.append(Check("callback", "skip", "no callback URL known (give --stack)"))
        return
    for provider, url in sorted(callbacks.items()):
        name = f"callback {provider}"
        try:
            answer = http.request("GET", url, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            checks.append(
                Check(name, "fail", f"{url}: no answer ({exc})", "is the vault's API deployed?")
            )
            continue
        code = ""
        if answer.headers.get("content-type", "").startswith("application/problem+json"):
            with contextlib.suppress(ValueError, AttributeError):
                code = " " + str(json.loads(answer.data).get("code", ""))
        if answer.status >= 500:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{url} answered {answer.status}{code}",
                    "see the Callback function's logs",
                )
            )
        else:
            checks.append(Check(name, "ok", f"{url} answers ({answer.status}{code})"))


def _doctor_providers(config_path: str | None, checks: list[Check]) -> None:
    """Each provider's discovery against its preset: the code of `providers check`."""
    if config_path is None:
        checks.append(
            Check(
                "providers",
                "skip",
                "no config to read the providers from",
                "pass --config FILE (the config the stack was deployed with)",
            )
        )
        return
    try:
        config_module = _service("vault.config", "doctor")
        checker = _service("vault.presets.checker", "doctor")
        errors = _service("vault.errors", "doctor")
    except CliError as exc:
        checks.append(Check("providers", "skip", str(exc).splitlines()[0]))
        return
    try:
        config = config_module.load_config(config_path)
    except (OSError, ValueError) as exc:
        checks.append(
            Check(
                "providers",
                "fail",
                f"cannot read {config_path}: {str(exc).splitlines()[0]}",
                f"agent-vault config validate {config_path}",
            )
        )
        return
    for name, provider in config.providers.items():
        check_name = f"provider {name}"
        if provider.api_key is not None:
            detail = (
                "an API-key provider (api_key): no OAuth metadata to check;"
                f" its key: agent-vault apikey set {name}"
            )
            checks.append(Check(check_name, "ok", detail))
            continue
        try:
            report = checker.check(name, provider)
        except errors.VaultError as exc:
            checks.append(
                Check(
                    check_name,
                    "fail",
                    f"discovery unreachable: {exc}",
                    f"check providers.{name}.discovery_url and this machine's network",
                )
            )
            continue
        if not report.ok:
            checks.append(
                Check(
                    check_name,
                    "fail",
                    "; ".join(report.problems),
                    f"agent-vault providers check {name} --config {config_path}",
                )
            )
        else:
            seen = report.discovery_url or "no discovery document (endpoints used as configured)"
            checks.append(Check(check_name, "ok", f"{seen} ({report.preset})"))


def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    checks: list[Check] = []
    found = _doctor_outputs(args, checks)
    if found is not None:
        try:
            target = target_of(args)
        except CliError as exc:
            checks.append(Check("sigv4", "fail", str(exc), "check the AWS credential chain"))
            target = None
        if target is not None and _doctor_sigv4(target, checks):
            _doctor_session(found["local"], checks)
        else:
            checks.append(Check("session", "skip", "the API cannot be reached"))
        _doctor_callbacks(found["callbacks"], checks)
        _doctor_secrets(found["secrets"], checks)
        _doctor_providers(found["config"], checks)
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(
            json.dumps({"ok": not failed, "checks": [vars(c) for c in checks]}, indent=2),
            file=out,
        )
    else:
        width = max(len(c.check) for c in checks)
        for c in checks:
            fix = f"  -> {c.fix}" if c.fix and c.status != "ok" else ""
            print(f"{c.status:<4}  {c.check:<{width}}  {c.detail}{fix}", file=out)
    return REFUSED if failed else OK


def _local(rest: Sequence[str]) -> int:
    try:
        local_cli = importlib.import_module("agent_vault_local.cli")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("agent_vault_local"):
            raise
        print(LOCAL_MISSING, file=sys.stderr)
        return USAGE
    result: int = local_cli.main(rest)
    return result


# --- the parser ------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("which vault")
    where.add_argument("--local", action="store_true", help="the running local mode")
    where.add_argument("--local-state", metavar="FILE", help="local mode's local.json")
    where.add_argument(
        "--stack",
        default=os.environ.get("AGENT_VAULT_STACK", DEFAULT_STACK),
        help=f"the vault's CloudFormation stack (default {DEFAULT_STACK}, or AGENT_VAULT_STACK)",
    )
    where.add_argument("--url", help="the vault's API URL (instead of the stack's ApiUrl output)")
    where.add_argument("--region", help="AWS region (default: the usual chain)")
    where.add_argument("--profile", help="AWS profile (default: the usual chain)")
    common.add_argument("--json", action="store_true", help="JSON for scripts")
    return common


def _user_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-iss", help="the user's identity issuer (with --user-sub)")
    parser.add_argument("--user-sub", help="the user's subject at that issuer")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="agent-vault",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _common()
    commands = top.add_subparsers(dest="command", required=True)
    for what, statuses in (
        ("sessions", ("active", "ended", "expired")),
        ("grants", ("active", "broken", "revoking")),
        ("flows", ("pending_binding", "expired", "revoked")),
    ):
        group = commands.add_parser(what, help=f"inspect {what} (admins)")
        actions = group.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", parents=[common], help=f"list {what}")
        if what == "sessions":
            listing.add_argument("--task", help="an ECS task id")
        listing.add_argument("--agent")
        if what != "sessions":
            listing.add_argument("--provider")
        listing.add_argument("--status", choices=statuses)
        _user_options(listing)
        listing.add_argument("--limit", type=int, default=25, help="items per page (1-100)")
        listing.add_argument("--cursor", help="the next page of an earlier listing")
        listing.add_argument("--all", action="store_true", help="every page")
        listing.set_defaults(run=cmd_list, what=what, task=None, provider=None)
        show = actions.add_parser("show", parents=[common], help=f"one of the {what}")
        show.add_argument("id")
        show.set_defaults(run=cmd_show, what=what)
    revoke = commands.add_parser(
        "revoke", parents=[common], help="revoke grants and their tokens (admins)"
    )
    _user_options(revoke)
    revoke.add_argument("--agent")
    revoke.add_argument("--provider")
    revoke.add_argument("--grant", help="a grant id")
    revoke.set_defaults(run=cmd_revoke)
    apikey = commands.add_parser("apikey", help="API keys of API-key providers (admins)")
    apikey_actions = apikey.add_subparsers(dest="action", required=True)
    for action, what in (
        ("set", "set or rotate a provider's API key, read from standard input"),
        ("delete", "delete a provider's API key (current and previous)"),
    ):
        one = apikey_actions.add_parser(action, parents=[common], help=what)
        one.add_argument("provider")
        one.add_argument("--user-iss", help="a per-user key's user: the identity issuer")
        one.add_argument(
            "--user", "--user-sub", dest="user_sub", help="a per-user key's user: the subject"
        )
        one.set_defaults(run=cmd_apikey)
    audit = commands.add_parser("audit", help="the vault's audit events")
    audit_actions = audit.add_subparsers(dest="action", required=True)
    tail = audit_actions.add_parser("tail", parents=[common], help="the latest audit events")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new ones")
    tail.add_argument("--action", dest="action_prefix", help="only actions starting with this")
    tail.add_argument(
        "--since-minutes", type=int, default=60, help="deployed: how far back (default 60)"
    )
    tail.set_defaults(run=cmd_audit)
    config = commands.add_parser("config", help="the vault's configuration")
    config_actions = config.add_subparsers(dest="action", required=True)
    validate = config_actions.add_parser(
        "validate", help="validate a config file (the typed model; nothing is synthesized)"
    )
    validate.add_argument("file")
    validate.add_argument("--json", action="store_true", help="JSON for scripts")
    validate.set_defaults(run=cmd_config_validate)
    providers = commands.add_parser("providers", help="the configured OAuth providers")
    provider_actions = providers.add_subparsers(dest="action", required=True)
    check = provider_actions.add_parser(
        "check",
        parents=[common],
        help="a provider's discovery (S256, iss, revocation, DPoP) against its preset",
    )
    check.add_argument("name")
    check.add_argument("--config", help="the vault config file (default with --local: its own)")
    check.set_defaults(run=cmd_providers_check)
    secret = commands.add_parser("secret", help="the providers' client secrets")
    secret_actions = secret.add_subparsers(dest="action", required=True)
    secret_set = secret_actions.add_parser(
        "set",
        parents=[common],
        help="store a provider's client secret, read from stdin (never from the command line)",
    )
    secret_set.add_argument("provider")
    secret_set.set_defaults(run=cmd_secret_set)
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check a vault end to end: outputs, SigV4, a session, callbacks, providers",
    )
    doctor.add_argument(
        "--config", help="the vault config, for the provider checks (default with --local: its own)"
    )
    doctor.set_defaults(run=cmd_doctor)
    local = commands.add_parser("local", help="run Agent Vault on this machine (agent-vault-local)")
    local.add_argument("rest", nargs=argparse.REMAINDER, help="up | demo, and their options")
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "local":
        return _local(args.rest)
    if args.command == "audit":
        args.action = args.action_prefix
    stream = out or sys.stdout
    try:
        result: int = args.run(args, stream)
        return result
    except CliError as exc:
        print(f"agent-vault: {exc}", file=sys.stderr)
        return exc.status
    except VaultUnavailable as exc:
        print(f"agent-vault: the vault failed: {exc.code}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except VaultError as exc:
        if not exc.status or exc.status >= 500:
            print(f"agent-vault: {exc.code}: {exc}", file=sys.stderr)
            return UNREACHABLE
        print(f"agent-vault: refused ({exc.status} {exc.code}): {exc.detail}", file=sys.stderr)
        for error in exc.problem.get("errors", []):
            if isinstance(error, dict):
                print(f"  {error.get('field')}: {error.get('problem')}", file=sys.stderr)
        return REFUSED


if __name__ == "__main__":
    sys.exit(main())
