"""Start and stop the whole system on loopback: local mode.

:class:`LocalMode` starts, in this process:

1. moto in server mode (``ThreadedMotoServer`` on a free loopback port) standing in for DynamoDB,
   KMS, Secrets Manager, EC2 and ECS, with the vault's two tables, a KMS key, the provider's client
   secret and an ECS cluster whose tasks are the local agent tasks;
2. the authorization server (``oidc-provider`` on Node, :class:`AuthorizationServer`), which is
   the calendar provider, the users' identity provider and the calendar API;
3. the vault's Lambda functions, each a pool of containers (processes forked from one init
   process that imported the handlers with the environment the deployed functions get:
   ``TABLE_NAME``, ``KEY_ID``, ``CALLBACK_URL``..., ``AWS_ENDPOINT_URL`` = moto), one request at
   a time per container (:mod:`agent_vault_local.containers`), behind the local API Gateway
   (:mod:`agent_vault_local.adapter`), which verifies SigV4 for each local principal; and a
   local Lambda ``Invoke`` endpoint for the reaper (EventBridge's way in); the lifecycle events
   function, fed the vault table's moto stream by a :class:`StreamPump` (Lambda's event source
   mapping: same filters, retries and on-failure queue), publishing on moto's EventBridge bus
   ``agent-vault-local``, whose rule delivers every event to the ``lifecycle`` queue;
4. optionally the sample agent (``sample_agent.app``) with uvicorn, signing as its own task.

Everything binds 127.0.0.1 on ports the OS picks. :meth:`LocalMode.stop` stops all of it and
restores the environment. The vault's logs (Powertools JSON, audit events included) go to
``<workdir>/vault.log.jsonl``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from agent_vault.client import UserIdentity
from agent_vault_local.adapter import (
    LocalApiGateway,
    LocalApiServer,
    LocalFunctionUrl,
    LocalLambdaService,
)
from agent_vault_local.containers import ContainerError, LambdaFleet, VaultLog
from agent_vault_local.credentials import (
    DEFAULT_ACCOUNT,
    LocalPrincipal,
    PrincipalRegistry,
    new_principal,
)
from agent_vault_local.events import LambdaContext, scheduled_event
from agent_vault_local.streams import StreamPump
from agent_vault_local.userconfig import Bundled, UserConfig
from vault.lifecycle import SOURCE as LIFECYCLE_SOURCE
from vault.lifecycle import STREAM_FILTERS
from vault.routes import ADMIN_API, AGENT_API, PROXY_API, REAPER, ROUTES, Route
from vault.store.schema import create_tables

__all__ = ["LocalInfo", "LocalMode", "LocalModeError", "LocalModeProcess", "moto_child"]

log = logging.getLogger("agent_vault_local")
T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Local mode runs from a checkout (its Node packages: package.json, node_modules); the handlers
and the sample agent are the installed packages `vault` and `sample_agent`."""


REGION = "us-east-1"
# A guard against a hang, not a wait: a start takes ~5 s on an idle 2-core machine and ~20 s
# on a busy one. A child process gets a margin on top for its interpreter and imports.
STARTUP_TIMEOUT = 120.0
CHILD_MARGIN = 30.0
TABLE_NAME = "agent-vault-local"
REPLAY_TABLE_NAME = "agent-vault-local-replay"
CLIENT_SECRET_PREFIX = "agent-vault/local/provider/"  # noqa: S105 - a name prefix  # nosec B105
CLUSTER = "agent-vault-local"
PROVIDER = "calendar"
PROVIDER_SCOPES = ("calendar.read", "calendar.write", "mail.read")
KEYED_PROVIDER = "keyed"
"""An API-key provider (flow 12): the bundled provider's keyed API, its key set by an admin."""
CALENDAR_AGENT = "calendar-agent"
CALENDAR_ROLE = "calendar-agent-role"
MAIL_AGENT = "mail-agent"
MAIL_ROLE = "mail-agent-role"
BEARER_AGENT = "calendar-bearer-agent"
"""The calendar with `bearer` delivery: the agent holds the token itself (replayable until it
expires), for code that calls the API with the token (the SDK's token tests)."""
BEARER_ROLE = "calendar-bearer-agent-role"
DPOP_AGENT = "calendar-dpop-agent"
"""The calendar with `dpop` delivery: the agent holds a token bound to its session key, which the
calendar API accepts only with a fresh proof of that key (the demo's stolen-token steps)."""
DPOP_ROLE = "calendar-dpop-agent-role"
ADMIN_ROLE = "vault-admin-role"
EVENTS_ROLE = "agent-vault-local-events"
REAPER_FUNCTION = "agent-vault-reaper"
EVENTS_FUNCTION = "agent-vault-events"
EVENTS_HANDLER = "vault.handlers.events.handler"
EVENT_BUS = "agent-vault-local"
LIFECYCLE_QUEUE = "agent-vault-local-lifecycle"
"""Every lifecycle event the bus delivers (a rule on the bus): `make demo` reads it."""
UNDELIVERED_QUEUE = "agent-vault-local-undelivered"
STREAM_POLL_SECONDS = 0.25
"""How often the stream is read (Lambda's poller reads a shard about 4 times a second)."""
SWEEP_SECONDS = 300.0
"""How often the admin function sweeps unbound flows: the deployed schedule's rate
(stacks/constructs/unbound_flow_sweep.py)."""
SWEEP_RULE = "agent-vault-local-unbound-flow-sweep"
APP_AUDIENCE = "agent-app"
SERVICE_NAME = "agent-vault"

AGENT_APP = "calendar-agent/app"
TASK_1 = "calendar-agent/task-1"
TASK_2 = "calendar-agent/task-2"
MAIL_TASK = "mail-agent/task-1"
BEARER_TASK_1 = "calendar-bearer-agent/task-1"
BEARER_TASK_2 = "calendar-bearer-agent/task-2"
DPOP_TASK = "calendar-dpop-agent/task-1"
AGENT_TASKS = (
    (CALENDAR_AGENT, CALENDAR_ROLE, (AGENT_APP, TASK_1, TASK_2)),
    (MAIL_AGENT, MAIL_ROLE, (MAIL_TASK,)),
    (BEARER_AGENT, BEARER_ROLE, (BEARER_TASK_1, BEARER_TASK_2)),
    (DPOP_AGENT, DPOP_ROLE, (DPOP_TASK,)),
)
"""Per local agent: its ECS task family, its role and the names of its running tasks."""
ADMIN = "admin"
EVENTS = "eventbridge"

# moto's fake credentials (bandit B105 reviewed)
_MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # nosec B105


def _functions(routes: tuple[Route, ...] = ROUTES) -> dict[str, str]:
    """Function name -> handler, for every function local mode runs."""
    functions = {f"agent-vault-{route.function}": route.handler for route in routes}
    functions[REAPER_FUNCTION] = REAPER
    functions[EVENTS_FUNCTION] = EVENTS_HANDLER
    return functions


class LocalModeError(RuntimeError):
    """Local mode could not start (a missing tool, a handler that fails to import...)."""


def moto_child(fd: int) -> None:
    """The moto server process: serve the inherited listening socket until stdin closes."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from agent_vault_local.moto_streams import share_stream_records

    share_stream_records()  # transactions stay fast however long local mode runs

    server = make_server(
        "127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True, fd=fd
    )
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    sys.stdin.read()  # EOF when the parent stops local mode or dies
    # moto's state is memory only: exit at once, without waiting for the request threads of
    # clients' keep-alive connections (an orderly exit waited about a second for them)
    sys.stderr.flush()
    os._exit(0)


def _in_background(name: str, step: Callable[..., T], *args: Any) -> Future[T]:
    """Run a start-up step in a daemon thread: a start that fails or times out stops without
    waiting for a step that may be stuck."""
    future: Future[T] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(step(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


@dataclass
class LocalInfo:
    """Where everything is and who may call it (JSON-serializable; contains local secrets)."""

    region: str
    account_id: str
    workdir: str
    config_path: str
    vault_log: str
    credentials_file: str
    vault_url: str
    lambda_url: str
    moto_url: str
    agent_url: str | None
    provider_name: str
    provider: dict[str, str]
    users: dict[str, str]
    principals: dict[str, dict[str, Any]]
    tasks: dict[str, str]
    cluster: str
    reaper_function: str
    return_url: str
    started_at: float = field(default_factory=time.time)
    client_secret_prefix: str = CLIENT_SECRET_PREFIX
    """Provider `p`'s client secret is moto's secret `<prefix><p>`."""
    callback_urls: dict[str, str] = field(default_factory=dict)
    """Each configured OAuth provider's own callback: its redirect URI to register."""
    external_providers: list[str] = field(default_factory=list)
    """The configured OAuth providers that are not the bundled oidc-provider."""
    placeholder_secrets: list[str] = field(default_factory=list)
    """External providers started without a client secret (a random placeholder is stored)."""
    agent_provider: str = PROVIDER
    """The provider the sample agent asks for."""
    app_principal: str = AGENT_APP
    """The principal the sample agent signs as."""
    lifecycle_queue_url: str = ""
    """The moto SQS queue every lifecycle event lands in (flow 9, docs/events.md)."""
    function_urls: dict[str, str] = field(default_factory=dict)
    """With `agent_endpoint: "function_url"` in the config: the agent API's (`agent_api`) and
    the egress proxy's (`proxy_api`) own URLs (SigV4 for `lambda`, the agents' roles only)."""

    def principal(self, name: str) -> LocalPrincipal:
        return LocalPrincipal.from_json(self.principals[name])

    @property
    def callback_url(self) -> str:
        """The bundled provider's own OAuth callback (each provider has its own)."""
        return f"{self.vault_url}/v1/oauth/callback/{self.provider_name}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LocalInfo:
        return cls(**json.loads(text))


@contextlib.contextmanager
def _patched_environ(values: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


class LocalMode:
    """The whole system on loopback; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        with_agent: bool = True,
        workdir: str | Path | None = None,
        on_audit: Callable[[dict[str, Any]], None] | None = None,
        keep_workdir: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT,
        config: UserConfig | None = None,
        port: int | None = None,
        client_secrets: dict[str, str] | None = None,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        """`config`: the developer's own (`local up --config`; default: local mode's own);
        `port`: the vault's port (default: one the OS picks); `client_secrets`: the external
        providers' client secrets (never logged)."""
        self.with_agent = with_agent
        self.user_config = config
        self.port = port
        self.client_secrets = dict(client_secrets or {})
        if config is not None and config.sample_agent() is None:
            self.with_agent = False  # no agent of the config can read the bundled calendar
        self._workdir_arg = Path(workdir) if workdir else None
        self.on_audit = on_audit
        self.keep_workdir = keep_workdir
        self.startup_timeout = startup_timeout
        self.sweep_seconds = sweep_seconds
        self.info: LocalInfo | None = None
        self.provider: Any = None
        self._stack = contextlib.ExitStack()
        self._log_file: IO[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> LocalMode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalInfo:
        if self.info is not None:
            raise LocalModeError("local mode is already running")
        try:
            self.info = self._start()
        except BaseException:
            self.stop()
            raise
        return self.info

    def stop(self) -> None:
        """Stop everything started (in reverse order) and restore the environment."""
        try:
            self._stack.close()
        finally:
            self._stack = contextlib.ExitStack()
            self.info = None

    # -- the parts -------------------------------------------------------------------------------

    def _workdir(self) -> Path:
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            return self._workdir_arg
        path = Path(tempfile.mkdtemp(prefix="agent-vault-local-"))
        if not self.keep_workdir:
            self._stack.callback(shutil.rmtree, path, True)
        return path

    def _start_moto(self, sock: socket.socket) -> subprocess.Popen[bytes]:
        """moto in server mode in a child process, serving the socket bound here (so its URL is
        known at once and nothing can take the port). It exits when its stdin closes."""
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module  # nosec B603
            [
                sys.executable,
                "-c",
                f"from agent_vault_local.runner import moto_child; moto_child({sock.fileno()})",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=[sock.fileno()],
            cwd=str(REPO_ROOT),
        )

        def stop_moto() -> None:
            assert process.stdin is not None
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stderr is not None:
                process.stderr.close()

        self._stack.callback(stop_moto)
        return process

    def _bind(self, port: int = 0) -> socket.socket:
        try:
            sock = socket.create_server(("127.0.0.1", port))
        except OSError as exc:
            raise LocalModeError(
                f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc} (another program has"
                " it? choose another --port, or stop that program)"
            ) from None
        self._stack.callback(sock.close)
        return sock

    def _agent_tasks(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """Per agent: its ECS task family, its role and its running tasks' names."""
        config = self.user_config
        if config is None:
            return AGENT_TASKS
        sample = config.sample_agent()
        return tuple(
            (
                name,
                agent.name_of_role,
                (*((f"{name}/app",) if sample and sample[0] == name else ()), f"{name}/task-1"),
            )
            for name, agent in config.validated.agents.items()
        )

    def _aws(self, moto_url: str) -> dict[str, Any]:
        import boto3

        session = boto3.session.Session(
            region_name=REGION,
            aws_access_key_id=_MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        clients: dict[str, Any] = {}
        for name in (
            "dynamodb",
            "dynamodbstreams",
            "kms",
            "secretsmanager",
            "ec2",
            "ecs",
            "events",
            "sqs",
        ):
            clients[name] = session.client(name, endpoint_url=moto_url)
        return clients

    @staticmethod
    def _create_tasks(
        ec2: Any, ecs: Any, agent_tasks: tuple[tuple[str, str, tuple[str, ...]], ...] = AGENT_TASKS
    ) -> tuple[str, dict[str, str]]:
        """An ECS cluster and one running Fargate task per local agent task."""
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(
            GroupName="agents", Description="local agents", VpcId=vpc
        )["GroupId"]
        cluster = ecs.create_cluster(clusterName=CLUSTER)["cluster"]["clusterArn"]
        tasks: dict[str, str] = {}
        for family, role, names in agent_tasks:
            ecs.register_task_definition(
                family=family,
                networkMode="awsvpc",
                requiresCompatibilities=["FARGATE"],
                cpu="256",
                memory="512",
                taskRoleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/{role}",
                containerDefinitions=[
                    {
                        "name": "agent",
                        "image": "agent-vault/agent:local",
                        "essential": True,
                        "cpu": 256,
                        "memory": 512,
                    }
                ],
            )
            for name in names:
                answer = ecs.run_task(
                    cluster=CLUSTER,
                    taskDefinition=family,
                    launchType="FARGATE",
                    count=1,
                    startedBy="agent-vault-local",
                    networkConfiguration={
                        "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}
                    },
                )
                tasks[name] = answer["tasks"][0]["taskArn"]
        return cluster, tasks

    def _principals(self, tasks: dict[str, str]) -> dict[str, LocalPrincipal]:
        principals: dict[str, LocalPrincipal] = {}
        role_of = {name: role for _, role, names in self._agent_tasks() for name in names}
        role_ids: dict[str, str | None] = dict.fromkeys(role_of.values())
        accounts: dict[str, str] = {}
        if self.user_config is not None:  # the role id and account the config pins
            for agent in self.user_config.validated.agents.values():
                role_ids[agent.name_of_role] = agent.role_id
                accounts[agent.name_of_role] = agent.role_account or DEFAULT_ACCOUNT
        for name, arn in tasks.items():
            role = role_of[name]
            principal = new_principal(
                name,
                role,
                arn.rsplit("/", 1)[-1],
                role_id=role_ids[role],
                account_id=accounts.get(role, DEFAULT_ACCOUNT),
            )
            role_ids[role] = principal.role_id  # one role id per role, as in IAM
            principals[name] = principal
        principals[ADMIN] = new_principal(ADMIN, ADMIN_ROLE, "operator", kind="admin")
        principals[EVENTS] = new_principal(EVENTS, EVENTS_ROLE, "eventbridge", kind="admin")
        return principals

    @staticmethod
    def _config(
        issuer: str, jwks_uri: str, resource: str, return_url: str, calendar_api: str
    ) -> dict[str, Any]:
        return {
            "environment": "local",
            "account": DEFAULT_ACCOUNT,
            "region": REGION,
            "providers": {
                PROVIDER: {
                    "discovery_url": f"{issuer}/.well-known/openid-configuration",
                    "client_id": "agent-vault",
                    "scopes": list(PROVIDER_SCOPES),
                    "resource": resource,
                    "timeout_seconds": 5,
                    # the bundled calendar API, reached through the vault's proxy
                    "api_base_urls": [calendar_api],
                    "dpop": True,
                },
                # flow 12: a static key an admin sets (`agent-vault apikey set keyed`), which
                # the proxy puts in the keyed API's X-Api-Key header
                KEYED_PROVIDER: {
                    "api_base_urls": [calendar_api],
                    "timeout_seconds": 5,
                    "api_key": {"header": "X-Api-Key"},
                },
            },
            "agents": {
                CALENDAR_AGENT: {
                    "role_name": CALENDAR_ROLE,
                    "providers": {
                        PROVIDER: {
                            "scopes": ["calendar.read", "calendar.write"],
                            "delivery": "proxy",
                        },
                        # the keyed API's events through the proxy; the agent never sees the key
                        KEYED_PROVIDER: {
                            "requests": [{"methods": ["GET"], "paths": ["/keyed/**"]}]
                        },
                    },
                },
                MAIL_AGENT: {
                    "role_name": MAIL_ROLE,
                    "providers": {PROVIDER: {"scopes": ["mail.read"], "delivery": "bearer"}},
                },
                BEARER_AGENT: {
                    "role_name": BEARER_ROLE,
                    # flow 8: it may hand the calendar agent a child session
                    "may_delegate_to": [CALENDAR_AGENT],
                    "providers": {
                        PROVIDER: {
                            "scopes": ["calendar.read", "calendar.write"],
                            "delivery": "bearer",
                        },
                        # the key itself, for the agent's own HTTP client (`VaultClient.api_key`)
                        KEYED_PROVIDER: {"delivery": "returned"},
                    },
                },
                DPOP_AGENT: {
                    "role_name": DPOP_ROLE,
                    # flow 8 in the demo: it hands the calendar agent a child session
                    "may_delegate_to": [CALENDAR_AGENT],
                    "providers": {
                        PROVIDER: {
                            "scopes": ["calendar.read", "calendar.write"],
                            "delivery": "dpop",
                        }
                    },
                },
            },
            "admin_role_names": [ADMIN_ROLE],
            "return_urls": [return_url],
            "user_identity_issuers": [
                {"issuer": issuer, "jwks_uri": jwks_uri, "audiences": [APP_AUDIENCE]},
            ],
        }

    def _finished(self, future: Future[T], what: str, deadline: float) -> T:
        """The result of a start-up step run in parallel, or a LocalModeError naming the step
        when it has not finished by the start's deadline."""
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            if future.done():
                raise  # the step's own timeout
            raise LocalModeError(
                f"{what} in {self.startup_timeout:g} s; on a busy machine give it longer:"
                " `agent-vault local up --startup-timeout SECONDS`"
            ) from None

    def _start_fleet(self, vault_log: Path) -> LambdaFleet:
        """The functions' init process (it preloads libraries while the rest starts). The
        containers' logs go to ``vault_log`` (Powertools JSON) and audit events to on_audit."""
        sink = VaultLog(vault_log, self.on_audit)
        self._stack.callback(sink.close)
        fleet = LambdaFleet(
            _functions(),
            sink,
            cwd=str(REPO_ROOT),
            service=SERVICE_NAME,
        )
        fleet.start()
        self._stack.callback(fleet.stop)
        return fleet

    def _init_fleet(self, fleet: LambdaFleet) -> None:
        """Import the handlers (the environment is complete now) and start one container per
        function."""
        try:
            fleet.init(dict(os.environ), timeout=self.startup_timeout)
            fleet.warm()
        except ContainerError as exc:
            raise LocalModeError(str(exc)) from exc

    def _start_agent(
        self, info_partial: dict[str, Any], sock: socket.socket, principal: LocalPrincipal
    ) -> None:
        import uvicorn

        from sample_agent.app import AgentSettings, OidcSettings, create_app

        provider = self.provider
        cache: dict[str, tuple[str, float]] = {}
        cache_lock = threading.Lock()

        def local_user() -> UserIdentity:
            """Local mode's configured user (alice), for requests without a logged-in user."""
            with cache_lock:
                cached = cache.get("alice")
                if cached is None or cached[1] < time.time() + 120:
                    token = provider.login_id_token("alice", "alice-password")
                    cache["alice"] = (token, time.time() + 3000)
                    cached = cache["alice"]
            return UserIdentity(id_token=cached[0])

        function_urls = info_partial.get("function_urls") or {}
        settings = AgentSettings(
            vault_url=function_urls.get("agent_api", info_partial["vault_url"]),
            proxy_url=function_urls.get("proxy_api"),
            signing_service="lambda" if function_urls else None,
            calendar_api_url=provider.calendar_url,
            region=REGION,
            provider=info_partial["agent_provider"],
            public_url=info_partial["agent_url"],
            credentials=principal.credentials(),
            default_user=local_user,
            oidc=OidcSettings(provider.issuer, provider.app_client_id, provider.app_client_secret),
        )
        config = uvicorn.Config(
            create_app(settings), log_level="warning", access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sample-agent", daemon=True
        )
        thread.start()

        def stop_agent() -> None:
            server.should_exit = True
            thread.join(timeout=10)

        self._stack.callback(stop_agent)
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:  # readiness, with a deadline
            if not thread.is_alive():
                raise LocalModeError("the sample agent exited during start-up")
            if time.monotonic() > deadline:
                raise LocalModeError("the sample agent did not start in time")
            time.sleep(0.02)

    def _start(self) -> LocalInfo:
        from agent_vault_local.provider import USERS, AuthorizationServer

        workdir = self._workdir()
        vault_sock = self._bind(self.port or 0)  # first: a pinned port that is taken fails fast
        moto_sock, lambda_sock = self._bind(), self._bind()
        agent_sock = self._bind() if self.with_agent else None
        moto_url, vault_url, lambda_url = (_url_of(s) for s in (moto_sock, vault_sock, lambda_sock))
        agent_url = _url_of(agent_sock) if agent_sock else None
        # Without the sample agent the return URL is still the agent's: nothing listens there.
        return_base = agent_url or "http://127.0.0.1:9"
        return_url = f"{return_base}/consent/return"
        callback_url = f"{vault_url}/v1/oauth/callback"  # the base; each provider has its own
        client_secret = secrets.token_urlsafe(32)
        config = self.user_config
        bundled_names = config.bundled if config is not None else (PROVIDER,)
        provider_name = bundled_names[0] if bundled_names else PROVIDER
        sample = config.sample_agent() if config is not None else None
        agent_provider, app_principal = (
            (sample[1], f"{sample[0]}/app") if sample else (PROVIDER, AGENT_APP)
        )
        client_secrets = dict.fromkeys(bundled_names, client_secret)
        placeholders: list[str] = []
        for name in config.external if config is not None else ():
            if name in self.client_secrets:
                client_secrets[name] = self.client_secrets[name]
            else:  # as a deployed stack's: a random value no provider accepts
                client_secrets[name] = secrets.token_urlsafe(32)
                placeholders.append(name)

        # Start-up runs in parallel: moto imports in its own process, Node starts the provider,
        # a thread creates the AWS resources (waiting for moto), the functions' init process
        # preloads its libraries, and this thread imports the sample agent meanwhile.
        moto = self._start_moto(moto_sock)
        provider = AuthorizationServer(
            redirect_uris=[f"{callback_url}/{name}" for name in bundled_names or (PROVIDER,)],
            app_redirect_uris=[f"{return_base}/login/callback"],
            client_secret=client_secret,
            startup_timeout=self.startup_timeout,
        )
        self.provider = provider
        self._stack.callback(provider.stop)
        deadline = time.monotonic() + self.startup_timeout
        provider_started: Future[None] = _in_background("local-start-provider", provider.start)
        # before provider.stop: a Node process still starting would outlive the stop (the step
        # ends by its own deadline); the resources step needs no wait, it only talks to moto
        self._stack.callback(wait, [provider_started])
        resources: Future[tuple[str, str, dict[str, str], dict[str, str]]] = _in_background(
            "local-start-resources", self._create_resources, moto_url, client_secrets
        )

        config_path = workdir / "vault_config.json"
        environment: dict[str, str | None] = {
            "AWS_ENDPOINT_URL": moto_url,
            **_MOTO_CREDENTIALS,
            "AWS_SESSION_TOKEN": None,  # an environment variable name  # nosec B105
            "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None,
            "AWS_CONFIG_FILE": str(workdir / "aws-config-unused"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-credentials-unused"),
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "TABLE_NAME": TABLE_NAME,
            "REPLAY_TABLE_NAME": REPLAY_TABLE_NAME,
            "KEY_ID": None,  # set below, once moto has made the key
            "CALLBACK_URL": callback_url,
            "CLIENT_SECRET_PREFIX": CLIENT_SECRET_PREFIX,
            "EVENT_BUS_NAME": EVENT_BUS,
            "VAULT_CONFIG_PATH": str(config_path),
            # the bundled calendar API listens on 127.0.0.1: the proxy may call loopback here
            # (and only here: the deployed functions never get this setting)
            "EGRESS_ALLOW_LOOPBACK": "true",
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": "AgentVault",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOGGER_LOG_EVENT": "false",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_DEV": None,
        }
        self._stack.enter_context(_patched_environ(environment))
        vault_log = workdir / "vault.log.jsonl"
        fleet = self._start_fleet(vault_log)
        if self.with_agent:
            importlib.import_module("sample_agent.app")
            importlib.import_module("sample_agent.login")  # local mode's agent has a login

        try:
            self._finished(
                provider_started, "the authorization server (Node) did not start", deadline
            )
            key_arn, cluster, tasks, queues = self._finished(
                resources, "moto did not create the AWS resources", deadline
            )
        except Exception:
            if moto.poll() is not None and moto.stderr is not None:
                raise LocalModeError(
                    "moto exited: " + moto.stderr.read().decode("utf-8", "replace")[-2000:]
                ) from None
            raise
        os.environ["KEY_ID"] = key_arn
        if config is None:
            document = self._config(
                provider.issuer,
                provider.jwks_uri,
                provider.resource,
                return_url,
                provider.calendar_api_base,
            )
        else:
            document = config.complete(
                Bundled(
                    issuer=provider.issuer,
                    jwks_uri=provider.jwks_uri,
                    resource=provider.resource,
                    calendar_api=provider.calendar_api_base,
                    audience=APP_AUDIENCE,
                ),
                account=DEFAULT_ACCOUNT,
                region=REGION,
                admin_role=ADMIN_ROLE,
                return_url=return_url,
            )
        config_path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        self._init_fleet(fleet)  # the handlers import with the whole environment
        self._start_stream_pump(moto_url, fleet, queues)
        self._start_sweep(fleet)
        principals = self._principals(tasks)
        api_registry = PrincipalRegistry(p for n, p in principals.items() if n != EVENTS)
        events_registry = PrincipalRegistry([principals[EVENTS]])
        credentials_file = api_registry.write_credentials_file(
            workdir / "credentials", region=REGION
        )

        gateway = LocalApiGateway(
            api_registry,
            region=REGION,
            domain_name=vault_url.removeprefix("http://"),
            resolver=fleet.handler,
        )
        api_server = LocalApiServer(gateway, sock=vault_sock).start()
        self._stack.callback(api_server.stop)
        lambda_service = LocalLambdaService(
            events_registry, {REAPER_FUNCTION: REAPER}, region=REGION, resolver=fleet.handler
        )
        lambda_server = LocalApiServer(lambda_service, sock=lambda_sock).start()
        self._stack.callback(lambda_server.stop)
        function_urls = self._start_function_urls(api_registry, fleet)

        info = LocalInfo(
            region=REGION,
            account_id=DEFAULT_ACCOUNT,
            workdir=str(workdir),
            config_path=str(config_path),
            vault_log=str(vault_log),
            credentials_file=str(credentials_file),
            vault_url=vault_url,
            lambda_url=lambda_url,
            moto_url=moto_url,
            agent_url=agent_url,
            provider_name=provider_name,
            provider={
                "issuer": provider.issuer,
                "discovery_url": provider.discovery_url,
                "authorization_endpoint": provider.authorization_endpoint,
                "token_endpoint": provider.token_endpoint,
                "introspection_endpoint": provider.introspection_endpoint,
                "jwks_uri": provider.jwks_uri,
                "calendar_url": provider.calendar_url,
                "calendar_api_base": provider.calendar_api_base,
                "resource": provider.resource,
                "app_client_id": provider.app_client_id,
                "app_client_secret": provider.app_client_secret,
                "app_redirect_uri": provider.app_redirect_uris[0],
                "calendar_api_client_id": provider.calendar_client_id,
                "calendar_api_secret": provider.calendar_api_secret,
            },
            users=dict(USERS),
            principals={name: p.to_json() for name, p in principals.items()},
            tasks=tasks,
            cluster=cluster,
            reaper_function=REAPER_FUNCTION,
            return_url=return_url,
            callback_urls={
                name: f"{callback_url}/{name}"
                for name in (config.oauth if config is not None else (PROVIDER,))
            },
            external_providers=list(config.external if config is not None else ()),
            placeholder_secrets=placeholders,
            agent_provider=agent_provider,
            app_principal=app_principal,
            lifecycle_queue_url=queues[LIFECYCLE_QUEUE],
            function_urls=function_urls,
        )
        if agent_sock is not None:
            self._start_agent(asdict(info), agent_sock, principals[app_principal])
        return info

    def _start_function_urls(
        self, registry: PrincipalRegistry, fleet: LambdaFleet
    ) -> dict[str, str]:
        """With `agent_endpoint: "function_url"`: the agent API's and the proxy's own URLs, as
        `stacks/constructs/agent_function_urls.py` deploys them (the API Gateway keeps every
        route too, as deployed)."""
        config = self.user_config
        if config is None or config.validated.agent_endpoint != "function_url":
            return {}
        roles = [
            a.role_name or (a.role_arn or "").rsplit("/", 1)[-1]
            for a in config.validated.agents.values()
        ]
        urls: dict[str, str] = {}
        for name, handler in (("agent_api", AGENT_API), ("proxy_api", PROXY_API)):
            sock = self._bind()
            url = _url_of(sock)
            function_url = LocalFunctionUrl(
                registry,
                handler,
                allowed_roles=roles,
                region=REGION,
                domain_name=url.removeprefix("http://"),
                resolver=fleet.handler,
            )
            server = LocalApiServer(function_url, sock=sock).start()
            self._stack.callback(server.stop)
            urls[name] = url
        return urls

    def _start_stream_pump(self, moto_url: str, fleet: LambdaFleet, queues: dict[str, str]) -> None:
        """Lambda's event source mapping for the events function: a thread that reads the
        table's stream a few times a second and runs new records in the function's container."""
        aws = self._aws(moto_url)
        pump = StreamPump(
            dynamodb=aws["dynamodb"],
            streams=aws["dynamodbstreams"],
            table=TABLE_NAME,
            handler=fleet.handler(EVENTS_HANDLER),
            sqs=aws["sqs"],
            failure_queue_url=queues[UNDELIVERED_QUEUE],
            filters=STREAM_FILTERS,
        )
        self._every(STREAM_POLL_SECONDS, "stream-pump", "stream read", pump.drain)

    def _start_sweep(self, fleet: LambdaFleet) -> None:
        """EventBridge's schedule of the unbound-flow sweep: the admin function gets a
        `Scheduled Event` every `sweep_seconds`, in its container."""
        sweep = fleet.handler(ADMIN_API)

        def invoke() -> None:
            context = LambdaContext(function_name="agent-vault-admin-api", region=REGION)
            sweep(scheduled_event(SWEEP_RULE, region=REGION), context)

        self._every(self.sweep_seconds, "unbound-flow-sweep", "unbound-flow sweep", invoke)

    def _every(self, seconds: float, name: str, what: str, action: Callable[[], object]) -> None:
        """Run `action` every `seconds` in a thread of its own until local mode stops; a failure
        is logged and the next round runs (as a Lambda trigger retries)."""
        stopping = threading.Event()

        def run() -> None:
            while not stopping.wait(seconds):
                try:
                    action()
                except Exception as exc:
                    log.warning("%s failed: %s", what, exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()

        def stop() -> None:
            stopping.set()
            thread.join(timeout=10)

        self._stack.callback(stop)

    def _create_resources(
        self, moto_url: str, client_secrets: dict[str, str]
    ) -> tuple[str, str, dict[str, str], dict[str, str]]:
        """Tables, KMS key, the providers' client secrets, the ECS cluster and tasks, the event
        bus with its rule and queues (in moto)."""
        aws = self._aws(moto_url)
        create_tables(aws["dynamodb"], TABLE_NAME, REPLAY_TABLE_NAME)
        key_arn = str(
            aws["kms"].create_key(Description="Agent Vault (local)")["KeyMetadata"]["Arn"]
        )
        for name, value in client_secrets.items():
            aws["secretsmanager"].create_secret(
                Name=f"{CLIENT_SECRET_PREFIX}{name}", SecretString=value
            )
        cluster, tasks = self._create_tasks(aws["ec2"], aws["ecs"], self._agent_tasks())
        return key_arn, cluster, tasks, self._create_event_bus(aws["events"], aws["sqs"])

    @staticmethod
    def _create_event_bus(events: Any, sqs: Any) -> dict[str, str]:
        """The vault's bus, a rule delivering every lifecycle event to a queue, and the stream
        mapping's on-failure queue; returns the queues' URLs by name."""
        events.create_event_bus(Name=EVENT_BUS)
        queues = {
            name: str(sqs.create_queue(QueueName=name)["QueueUrl"])
            for name in (LIFECYCLE_QUEUE, UNDELIVERED_QUEUE)
        }
        arn = sqs.get_queue_attributes(
            QueueUrl=queues[LIFECYCLE_QUEUE], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        events.put_rule(
            Name="lifecycle",
            EventBusName=EVENT_BUS,
            EventPattern=json.dumps({"source": [LIFECYCLE_SOURCE]}),
        )
        events.put_targets(
            Rule="lifecycle", EventBusName=EVENT_BUS, Targets=[{"Id": "queue", "Arn": arn}]
        )
        return queues


class LocalModeProcess:
    """Local mode in a child process (``agent-vault local up --ready-json``), for tools and test
    suites that must not share this process's environment or imported modules with the vault.

    >>> with LocalModeProcess() as info:   # doctest: +SKIP
    ...     client = VaultClient(info.vault_url, ...)
    """

    def __init__(
        self,
        *,
        with_agent: bool = True,
        startup_timeout: float = STARTUP_TIMEOUT,
        env: dict[str, str] | None = None,
        up_args: Sequence[str] = (),
    ) -> None:
        """`up_args`: more options of `local up` (`--config FILE`, `--port N`...)."""
        self.with_agent = with_agent
        self.startup_timeout = startup_timeout
        self.env = env
        self.up_args = tuple(up_args)
        self.info: LocalInfo | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []

    def start(self) -> LocalInfo:
        import queue

        argv = [sys.executable, "-m", "agent_vault_local.cli", "up", "--ready-json"]
        argv += ["--startup-timeout", f"{self.startup_timeout:g}"]
        if not self.with_agent:
            argv.append("--no-agent")
        argv += self.up_args
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module  # nosec B603
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(REPO_ROOT),
            env={**os.environ, **(self.env or {})},
        )
        self._process = process
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream: IO[str], sink: Callable[[str], None], end: bool) -> None:
            try:
                for line in stream:
                    sink(line.rstrip("\n"))
            except (OSError, ValueError):
                pass
            finally:
                if end:
                    lines.put(None)

        assert process.stdout is not None and process.stderr is not None
        threading.Thread(
            target=pump,
            args=(process.stdout, lines.put, True),
            daemon=True,
            name="local-mode-stdout",
        ).start()
        threading.Thread(
            target=pump,
            args=(process.stderr, self._keep_stderr, False),
            daemon=True,
            name="local-mode-stderr",
        ).start()
        # the child's own deadline names the step that was slow; this one is for a child that
        # hangs before it starts its own (its interpreter and imports get a margin)
        patience = self.startup_timeout + CHILD_MARGIN
        deadline = time.monotonic() + patience
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LocalModeError(
                        f"local mode did not become ready in {patience:g} s\n{self.stderr_tail()}"
                    )
                try:
                    line = lines.get(timeout=remaining)
                except queue.Empty:
                    continue
                if line is None:
                    code = process.wait(timeout=10)
                    raise LocalModeError(
                        f"local mode exited with {code} before it was ready\n{self.stderr_tail()}"
                    )
                if line.startswith("READY "):
                    self.info = LocalInfo.from_json(line[len("READY ") :])
                    return self.info
        except BaseException:
            self.stop()
            raise

    def _keep_stderr(self, line: str) -> None:
        self._stderr.append(line)
        del self._stderr[:-200]

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr[-60:])

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # local up stops everything when its stdin closes
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> LocalInfo:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
