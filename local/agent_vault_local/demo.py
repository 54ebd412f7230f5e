"""The scripted story of ``make demo``, one step at a time, against a running local mode.

Every step talks to local mode the way the real parts talk in AWS: the SDK signs with SigV4 as a
local agent task, the provider's pages are driven over HTTP, the vault's callback is reached
through the local API Gateway, ECS is moto's, and the reaper is invoked through the Lambda
``Invoke`` API with the event EventBridge would deliver. :class:`Story` only needs a
:class:`~agent_vault_local.runner.LocalInfo`, so it drives local mode in this process or in
another one (the tests run it in a child process).
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_vault.client import Authorization, UserIdentity, VaultClient
from agent_vault.errors import (
    ConsentRequired,
    DeliveryProxyOnly,
    Forbidden,
    ScopeNotAllowed,
    SessionEnded,
    TaskStopped,
    VaultError,
)
from agent_vault_local.consent_forms import complete_consent
from agent_vault_local.provider import HttpResponse, http_request
from agent_vault_local.runner import (
    MAIL_TASK,
    TASK_1,
    TASK_2,
    LocalInfo,
)
from vault.oauth import client as oauth

__all__ = [
    "StepFailed",
    "StepResult",
    "Story",
    "audit_events",
    "calendar_events",
    "id_token_for",
    "introspect",
    "invoke_reaper",
    "proxied_events",
    "session_items",
    "stop_task",
    "task_state_change_event",
    "vault_client",
]

SCOPES = ("calendar.read",)
EVENTS_PATH = "calendar/events"
"""The calendar API's events, under the provider's API base URL (``api_base_urls``)."""


# -- helpers (usable on their own) ---------------------------------------------------------------


def vault_client(
    info: LocalInfo, principal: str, user: UserIdentity | None = None, **kwargs: Any
) -> VaultClient:
    """An SDK client signing as the local principal ``principal`` (e.g. a calendar-agent task)."""
    return VaultClient(
        info.vault_url,
        user=user,
        credentials=info.principal(principal).credentials(),
        region=info.region,
        **kwargs,
    )


def id_token_for(info: LocalInfo, username: str) -> str:
    """Log ``username`` in to the application (client ``agent-app``, code + PKCE) and return the
    ID token the application would hold for them."""
    provider = info.provider
    verifier = oauth.new_code_verifier()
    challenge = oauth.code_challenge(verifier)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": provider["app_client_id"],
            "redirect_uri": provider["app_redirect_uri"],
            "scope": "openid",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    redirect = complete_consent(
        f"{provider['authorization_endpoint']}?{query}", username, info.users[username]
    )
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redirect).query))
    if params.get("state") != state or "code" not in params:
        raise StepFailed(f"the login of {username} did not come back with a code", None)
    answer = http_request(
        "POST",
        provider["token_endpoint"],
        form={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": provider["app_redirect_uri"],
            "code_verifier": verifier,
        },
        basic_auth=(provider["app_client_id"], provider["app_client_secret"]),
    )
    body = answer.json()
    if answer.status != 200 or "id_token" not in body:
        raise StepFailed(f"the ID token request answered {answer.status}", None)
    return str(body["id_token"])


def introspect(info: LocalInfo, token: str) -> dict[str, Any]:
    """RFC 7662 introspection at the provider, as the calendar API (the resource server)."""
    provider = info.provider
    answer = http_request(
        "POST",
        provider["introspection_endpoint"],
        form={"token": token},
        basic_auth=(provider["calendar_api_client_id"], provider["calendar_api_secret"]),
    )
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict):
        raise StepFailed(f"introspection answered {answer.status}", None)
    return body


def calendar_events(info: LocalInfo, token: str) -> HttpResponse:
    return http_request(
        "GET", info.provider["calendar_url"], headers={"Authorization": f"Bearer {token}"}
    )


def proxied_events(
    client: VaultClient, info: LocalInfo, key: Any = None, session_id: str | None = None
) -> Any:
    """GET the calendar's events through the vault's proxy, as the session (or with another
    ``key`` and ``session_id``: a thief's try); the calendar API's JSON answer."""
    sid = session_id or client.session_id
    assert sid is not None
    return client.request(
        "GET",
        f"/v1/sessions/{sid}/proxy/{info.provider_name}/{EVENTS_PATH}",
        key=key,
        session_id=sid,
    )


def session_items(info: LocalInfo, session_id: str) -> list[dict[str, Any]]:
    """Every item of a session's partition in the vault table (moto's DynamoDB)."""
    from agent_vault_local.runner import TABLE_NAME

    dynamodb = _aws_client(
        info,
        "dynamodb",
        endpoint_url=info.moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials # nosec B106
    )
    answer = dynamodb.query(
        TableName=TABLE_NAME,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"SESSION#{session_id}"}},
        ConsistentRead=True,
    )
    items: list[dict[str, Any]] = answer.get("Items", [])
    return items


def _aws_client(info: LocalInfo, service: str, **kwargs: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(  # type: ignore[call-overload]
        service, region_name=info.region, config=Config(retries={"max_attempts": 1}), **kwargs
    )


def stop_task(info: LocalInfo, principal: str, reason: str) -> dict[str, Any]:
    """Stop the ECS task a local principal runs as (in moto) and describe it."""
    ecs = _aws_client(
        info,
        "ecs",
        endpoint_url=info.moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials # nosec B106
    )
    task_arn = info.tasks[principal]
    ecs.stop_task(cluster=info.cluster, task=task_arn, reason=reason)
    described = ecs.describe_tasks(cluster=info.cluster, tasks=[task_arn])["tasks"]
    if not described:
        raise StepFailed("moto does not know the stopped task", None)
    task: dict[str, Any] = described[0]
    return task


def _iso(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return (
            value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v) for v in value]
    return value


def task_state_change_event(task: dict[str, Any], info: LocalInfo) -> dict[str, Any]:
    """The EventBridge event ECS emits when a task stops (``ECS Task State Change``)."""
    now = datetime.datetime.now(datetime.UTC)
    detail = _iso(task)
    detail.setdefault("stopCode", "UserInitiated")
    detail.setdefault("stoppedAt", _iso(now))
    detail.setdefault("stoppingAt", _iso(now))
    detail.setdefault("version", 3)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": info.account_id,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": info.region,
        "resources": [task["taskArn"]],
        "detail": detail,
    }


def invoke_reaper(info: LocalInfo, event: dict[str, Any]) -> dict[str, Any]:
    """Deliver ``event`` to the reaper as EventBridge does: a signed Lambda ``Invoke``."""
    events = info.principal("eventbridge")
    client = _aws_client(
        info,
        "lambda",
        endpoint_url=info.lambda_url,
        aws_access_key_id=events.access_key_id,
        aws_secret_access_key=events.secret_access_key,
        aws_session_token=events.session_token,
    )
    answer = client.invoke(FunctionName=info.reaper_function, Payload=json.dumps(event).encode())
    payload = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError"):
        raise StepFailed(f"the reaper failed: {payload}", "see the vault log for its traceback")
    if not isinstance(payload, dict):
        raise StepFailed(f"the reaper answered {payload!r}", None)
    return payload


def audit_events(info: LocalInfo, since: float = 0.0) -> list[dict[str, Any]]:
    """The vault's audit events (log records with an ``audit`` member) since ``since``."""
    path = Path(info.vault_log)
    if not path.exists():
        return []
    found: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = record.get("audit") if isinstance(record, dict) else None
        if not isinstance(event, dict):
            continue
        stamp = _record_time(record)
        if stamp is not None and stamp < since - 1:
            continue
        found.append({"timestamp": record.get("timestamp"), **event})
    return found


def _record_time(record: dict[str, Any]) -> float | None:
    raw = record.get("timestamp")
    if not isinstance(raw, str):
        return None
    for pattern in ("%Y-%m-%d %H:%M:%S,%f%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.datetime.strptime(raw, pattern).timestamp()
        except ValueError:
            continue
    return None


def _get(url: str, *, cookies: dict[str, str] | None = None) -> HttpResponse:
    headers = {"Accept": "text/html"}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return http_request("GET", url, headers=headers)


# -- the story -----------------------------------------------------------------------------------


class StepFailed(Exception):
    """A step's outcome was not the expected one."""

    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class StepResult:
    number: int
    title: str
    ok: bool
    outcome: str
    seconds: float
    hint: str | None = None
    value: Any = None


class _Stop(Exception):
    pass


def _short(value: str, keep: int = 12) -> str:
    return value if len(value) <= keep + 1 else value[:keep] + "…"


@dataclass
class _State:
    alice: UserIdentity | None = None
    client: VaultClient | None = None
    authorization: Authorization | None = None
    callback_url: str | None = None
    return_location: str | None = None
    event: dict[str, Any] | None = None
    reaped: dict[str, Any] | None = None
    clients: list[VaultClient] = field(default_factory=list)


class Story:
    """The demo story. ``run()`` runs every step in order and stops at the first failure; the
    step methods can also be called one by one (the tests do)."""

    def __init__(self, info: LocalInfo, *, out: Callable[[str], None] | None = print) -> None:
        self.info = info
        self.out = out
        self.results: list[StepResult] = []
        self.state = _State()
        self.started = time.time()

    # -- bookkeeping --

    def _say(self, text: str) -> None:
        if self.out is not None:
            self.out(text)

    def _step(self, title: str, hint: str, action: Callable[[], tuple[str, Any]]) -> Any:
        number = len(self.results) + 1
        began = time.perf_counter()
        try:
            outcome, value = action()
        except StepFailed as exc:
            return self._failed(number, title, str(exc), exc.hint or hint, began)
        except VaultError as exc:
            return self._failed(
                number, title, f"{exc.status} {exc.code}: {exc.detail}", hint, began
            )
        except Exception as exc:
            return self._failed(number, title, f"{type(exc).__name__}: {exc}", hint, began)
        seconds = time.perf_counter() - began
        self.results.append(StepResult(number, title, True, outcome, seconds, value=value))
        self._say(f"{number:>2}. {title:<62} ok {seconds * 1000:>6.0f} ms")
        self._say(f"      {outcome}")
        return value

    def _failed(self, number: int, title: str, why: str, hint: str, began: float) -> Any:
        seconds = time.perf_counter() - began
        self.results.append(StepResult(number, title, False, why, seconds, hint=hint))
        self._say(f"{number:>2}. {title:<62} FAILED {seconds * 1000:>4.0f} ms")
        self._say(f"      why:  {why}")
        self._say(f"      hint: {hint}")
        raise _Stop(title)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def _client(self) -> VaultClient:
        if self.state.client is None:
            raise StepFailed("no session yet", "run the steps in order")
        return self.state.client

    def _track(self, client: VaultClient) -> VaultClient:
        self.state.clients.append(client)
        return client

    # -- the steps --

    def start_session(self) -> str:
        def act() -> tuple[str, Any]:
            self.state.alice = UserIdentity(id_token=id_token_for(self.info, "alice"))
            client = self._track(vault_client(self.info, TASK_1, self.state.alice))
            session = client.start_session()
            self.state.client = client
            return (
                f"session {_short(session.session_id)} of agent {session.agent} for user "
                f"{session.user.get('sub')}, task {_short(session.task_id or '?')}, key "
                f"jkt={_short(session.jkt)}"
            ), session.session_id

        return str(
            self._step(
                "alice's agent task starts a session (ES256 key, SigV4, DPoP)",
                "is the vault config's agents.calendar-agent.role_name the task's"
                " role, and user_identity_issuers the local provider?",
                act,
            )
        )

    def token_needs_consent(self) -> Authorization:
        def act() -> tuple[str, Any]:
            client = self._client()
            try:
                proxied_events(client, self.info)
            except ConsentRequired as exc:
                authorization = client.start_authorization(self.info.provider_name, SCOPES)
                self.state.authorization = authorization
                host = urllib.parse.urlsplit(authorization.authorization_url).netloc
                return (
                    f"403 consent_required (reason {exc.reason}); the agent starts flow"
                    f" {_short(authorization.flow_id)} for calendar.read → authorize at {host}"
                ), authorization
            raise StepFailed(
                "the calendar answered before anyone consented",
                "the vault must answer consent_required without a grant",
            )

        result: Authorization = self._step(
            "it asks for calendar.read: consent required", "check the proxy route", act
        )
        return result

    def consent_at_provider(self) -> str:
        def act() -> tuple[str, Any]:
            authorization = self.state.authorization
            if authorization is None:
                raise StepFailed("no authorization URL", "run the steps in order")
            callback = complete_consent(
                authorization.authorization_url, "alice", self.info.users["alice"], "allow"
            )
            if not callback.startswith(self.info.callback_url):
                raise StepFailed(
                    f"the provider redirected to {callback.split('?')[0]}",
                    "the provider's redirect URI must be the vault's CALLBACK_URL",
                )
            self.state.callback_url = callback
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
            return (
                f"alice logged in and allowed; the provider redirects to the vault callback "
                f"with code, state and iss={params.get('iss')}"
            ), callback

        return str(
            self._step(
                "alice logs in and consents at the provider",
                "see the provider's stderr; users are alice/bob with <name>-password",
                act,
            )
        )

    def callback(self) -> str:
        def act() -> tuple[str, Any]:
            if self.state.callback_url is None:
                raise StepFailed("no callback URL", "run the steps in order")
            answer = _get(self.state.callback_url)
            location = answer.headers.get("Location", "")
            if answer.status != 302 or not location.startswith(self.info.return_url):
                raise StepFailed(
                    f"the callback answered {answer.status}: {answer.body[:200]!r}",
                    "read the vault log",
                )
            self.state.return_location = location
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
            return (
                f"302 to the app's return URL with flow_id, status={query.get('status')} and"
                " a one-time binding code (the code was exchanged; the grant is not usable"
                " yet, and the agent never sees the binding code)"
            ), location

        return str(
            self._step(
                "the browser reaches the vault callback (public route, no SigV4)",
                "the callback must exchange the code and redirect",
                act,
            )
        )

    def bind(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            location = self.state.return_location
            authorization = self.state.authorization
            if location is None or authorization is None:
                raise StepFailed("no return location", "run the steps in order")
            # The app knows who is logged in: here a *fresh* ID token of alice (another token of
            # the same user; the vault compares issuer and subject, not token bytes).
            logged_in = id_token_for(self.info, "alice")
            binding_code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query)).get(
                "binding_code", ""
            )
            if self.info.agent_url:
                # alice's browser: logged in at the agent, and the one this flow was started for
                # (the agent binds only the flow its cookie names)
                page = _get(
                    location,
                    cookies={
                        "agent_id_token": logged_in,
                        "agent_consent_flow": authorization.flow_id,
                    },
                )
                if page.status != 200 or b"Connected" not in page.body:
                    raise StepFailed(
                        f"the agent's return page answered {page.status}",
                        "see the sample agent's output",
                    )
                return (
                    "the sample agent's return page completed the flow for the user "
                    "logged in there (alice): grant active"
                ), {"status": "active"}
            result = self._client().complete_flow(
                authorization.flow_id, UserIdentity(id_token=logged_in), binding_code
            )
            return f"flow {result.status}, grant {_short(result.grant_id)}", result

        value: dict[str, Any] = self._step(
            "the app binds the consent to its logged-in user",
            "POST /v1/flows/{id}/complete needs the binding code and the same (iss, sub) as the"
            " session",
            act,
        )
        return value

    def calendar_through_proxy(self) -> list[dict[str, Any]]:
        def act() -> tuple[str, Any]:
            answer = proxied_events(self._client(), self.info)
            events = answer.get("events", []) if isinstance(answer, dict) else []
            if not events:
                raise StepFailed(
                    "the calendar API answered no events through the proxy",
                    "the provider's api_base_urls must be the calendar API's base URL",
                )
            titles = ", ".join(str(e.get("title")) for e in events)
            return (
                f"200 through the vault's proxy: {len(events)} events today ({titles}); the"
                " vault attached the session's token, which never left it"
            ), events

        result: list[dict[str, Any]] = self._step(
            "the same session reads the calendar through the vault's proxy",
            "the grant must be active after binding; read the vault log",
            act,
        )
        return result

    def no_token_for_the_agent(self) -> str:
        def act() -> tuple[str, Any]:
            try:
                self._client().get_token(self.info.provider_name, SCOPES)
            except DeliveryProxyOnly as exc:
                return f"{exc.status} {exc.code}: {exc.detail}", exc.code
            raise StepFailed(
                "the vault handed the token to the agent",
                "agents.calendar-agent.providers.calendar.delivery must be proxy",
            )

        return str(
            self._step(
                "the agent asks for the token itself: refused (proxy delivery)",
                "a proxy agent's token never leaves the vault",
                act,
            )
        )

    def stolen_session_refused(self) -> str:
        def act() -> tuple[str, Any]:
            session_id = self._client().session_id
            assert session_id is not None
            thief = self._track(vault_client(self.info, TASK_2))
            from agent_vault.proofs import SessionKey

            try:
                proxied_events(thief, self.info, key=SessionKey(), session_id=session_id)
            except Forbidden as exc:
                return f"{exc.status} {exc.code}: {exc.detail}", exc.code
            raise StepFailed(
                "another task read the calendar through this session",
                "the vault must compare the caller's principal with the session's",
            )

        return str(
            self._step(
                "another task of the same agent replays the session id: refused",
                "sessions are bound to the caller's IAM principal",
                act,
            )
        )

    def other_agent_refused(self) -> str:
        def act() -> tuple[str, Any]:
            assert self.state.alice is not None
            other = self._track(vault_client(self.info, MAIL_TASK, self.state.alice))
            try:
                other.get_token(self.info.provider_name, SCOPES)
            except ScopeNotAllowed as exc:
                return (
                    f"{exc.status} {exc.code}: mail-agent may have "
                    f"{', '.join(exc.allowed_scopes) or 'nothing'} here"
                ), exc.code
            raise StepFailed(
                "mail-agent got a calendar token",
                "agents.mail-agent.providers must not allow calendar.read",
            )

        return str(
            self._step(
                "another agent asks for alice's calendar: refused by policy",
                "policy is checked before any grant",
                act,
            )
        )

    def stop_task(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            task = stop_task(self.info, TASK_1, "the demo stopped the agent task")
            event = task_state_change_event(task, self.info)
            self.state.event = event
            return (
                f"moto ECS: task {_short(task['taskArn'].rsplit('/', 1)[-1])} is "
                f"{task['lastStatus']} ({task.get('stoppedReason')})"
            ), event

        value: dict[str, Any] = self._step("the agent's ECS task stops", "is moto running?", act)
        return value

    def reap(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            if self.state.event is None:
                raise StepFailed("no event", "run the steps in order")
            result = invoke_reaper(self.info, self.state.event)
            if result.get("status") != "reaped" or not result.get("ended_sessions"):
                raise StepFailed(
                    f"the reaper answered {result}", "the reaper must end every session of the task"
                )
            self.state.reaped = result
            return (
                f"EventBridge → reaper: {result.get('ended_sessions')} session(s) ended, "
                f"{result.get('revoked_tokens')} token(s) ended (a proxy token never left the"
                " vault: deleted, not revoked upstream, so alice's consent lives on)"
            ), result

        value: dict[str, Any] = self._step(
            "EventBridge delivers 'ECS Task State Change' to the reaper", "read the vault log", act
        )
        return value

    def session_dead(self) -> str:
        def act() -> tuple[str, Any]:
            try:
                proxied_events(self._client(), self.info)
            except SessionEnded as exc:
                return f"{exc.status} {exc.code}: {exc.detail}", exc.code
            raise StepFailed(
                "the stopped task's session still reaches the calendar",
                "the reaper must mark the task's sessions ended",
            )

        return str(self._step("the session is dead", "the proxy route must answer 410", act))

    def stopped_task_stays_stopped(self) -> str:
        def act() -> tuple[str, Any]:
            assert self.state.alice is not None
            # the stopped task's IAM credentials live on for hours: they start nothing
            revenant = self._track(vault_client(self.info, TASK_1, self.state.alice))
            try:
                revenant.start_session()
            except TaskStopped as exc:
                return f"{exc.status} {exc.code}: {exc.detail}", exc.code
            raise StepFailed(
                "the stopped task's credentials started a new session",
                "the reaper must record the task as stopped; session start must check it",
            )

        return str(
            self._step(
                "the stopped task's credentials start no new session",
                "stopped tasks stay stopped",
                act,
            )
        )

    def token_dead(self) -> list[dict[str, Any]]:
        def act() -> tuple[str, Any]:
            session_id = self._client().session_id
            if session_id is None:
                raise StepFailed("no session", "run the steps in order")
            items = session_items(self.info, session_id)
            tokens = [i for i in items if i["sk"]["S"].startswith("TOKEN#")]
            if tokens:
                raise StepFailed(
                    f"the vault still holds {len(tokens)} token(s) of the ended session",
                    "ending a session must delete its tokens",
                )
            status = next((i["status"]["S"] for i in items if i["sk"]["S"] == "SESSION"), "?")
            return (
                f"session {status}; no token of it is left in the vault table (it never left"
                " the vault, so none is out there to replay)"
            ), items

        value: list[dict[str, Any]] = self._step(
            "its token is gone from the vault", "the reaper ends the session's tokens", act
        )
        return value

    def audit_trail(self) -> list[dict[str, Any]]:
        def act() -> tuple[str, Any]:
            events = audit_events(self.info, self.started)
            if not events:
                raise StepFailed(
                    "no audit events were logged",
                    "audit events are Powertools log records with an 'audit' member",
                )
            lines = [_format_event(e) for e in events]
            return f"{len(events)} audit events:\n" + "\n".join(
                f"        {line}" for line in lines
            ), events

        result: list[dict[str, Any]] = self._step(
            "the audit trail of this run", f"see {self.info.vault_log}", act
        )
        return result

    STEPS = (
        "start_session",
        "token_needs_consent",
        "consent_at_provider",
        "callback",
        "bind",
        "calendar_through_proxy",
        "no_token_for_the_agent",
        "stolen_session_refused",
        "other_agent_refused",
        "stop_task",
        "reap",
        "session_dead",
        "stopped_task_stays_stopped",
        "token_dead",
        "audit_trail",
    )

    def run(self) -> bool:
        """Every step in order; True when all passed."""
        self.started = time.time()
        try:
            for name in self.STEPS:
                getattr(self, name)()
        except _Stop:
            pass
        finally:
            self.close()
        return self.ok

    def close(self) -> None:
        for client in self.state.clients:
            client.close(end_session=False)


def _format_event(event: dict[str, Any]) -> str:
    stamp = str(event.get("timestamp") or "")[11:23]
    keys = (
        "reason",
        "method",
        "path",
        "status",
        "agent",
        "provider",
        "scopes",
        "session_id",
        "task_id",
        "flow_id",
        "grant_id",
        "count",
        "revoked_tokens",
    )
    details = []
    for key in keys:
        if key in event:
            value = event[key]
            text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            details.append(f"{key}={_short(text, 16)}")
    user = event.get("user")
    if isinstance(user, dict) and user.get("sub"):
        details.append(f"user={user['sub']}")
    return f"{stamp} {event.get('action', '?'):<18} {event.get('outcome', '?'):<9} " + " ".join(
        details
    )
