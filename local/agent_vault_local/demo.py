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

import httpx
from joserfc import jws

from agent_vault.client import AccessToken, Authorization, FlowCompletion, UserIdentity, VaultClient
from agent_vault.errors import (
    ConsentRequired,
    DeliveryProxyOnly,
    Forbidden,
    ScopeNotAllowed,
    SessionEnded,
    TaskStopped,
    VaultError,
    error_from_response,
)
from agent_vault.proofs import SessionKey, access_token_hash
from agent_vault_local.consent_forms import complete_consent
from agent_vault_local.provider import KEYED_EVENTS_PATH, HttpResponse, http_request
from agent_vault_local.runner import (
    ADMIN,
    BEARER_TASK_1,
    CALENDAR_AGENT,
    DPOP_AGENT,
    DPOP_TASK,
    KEYED_PROVIDER,
    MAIL_TASK,
    TASK_1,
    TASK_2,
    LocalInfo,
)
from vault.oauth import client as oauth

__all__ = [
    "Recorder",
    "StepFailed",
    "StepResult",
    "Story",
    "audit_events",
    "calendar_events",
    "grant_of_session",
    "id_token_for",
    "introspect",
    "invoke_reaper",
    "provider_stats",
    "proxied_events",
    "session_items",
    "set_provider_api_keys",
    "stop_task",
    "task_state_change_event",
    "vault_client",
]

SCOPES = ("calendar.read",)
EVENTS_PATH = "calendar/events"
"""The calendar API's events, under the provider's API base URL (``api_base_urls``)."""
API_EVENTS = "/" + EVENTS_PATH
"""The same, relative to the base URL of the SDK's ``client.http(provider)``."""


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


def provider_stats(info: LocalInfo) -> dict[str, Any]:
    """The bundled provider's counters (its loopback test hook ``/__test/stats``): calls its
    calendar API answered (``api_requests`` by scheme) and refused (``api_refusals`` by error),
    codes and refresh tokens redeemed (``token_successes``)..."""
    answer = http_request("GET", f"{info.provider['issuer']}/__test/stats")
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict):
        raise StepFailed(f"the provider's stats answered {answer.status}", None)
    return body


def set_provider_api_keys(info: LocalInfo, keys: dict[str, str]) -> None:
    """The keys the bundled provider's keyed API accepts, by label (its loopback test hook
    ``/__test/api-keys``): what the service would have issued. Replaces those set before."""
    answer = http_request(
        "POST", f"{info.provider['issuer']}/__test/api-keys", json_body={"keys": keys}
    )
    if answer.status != 200:
        raise StepFailed(f"the provider's api-keys hook answered {answer.status}", None)


def _api_calls(stats: dict[str, Any]) -> int:
    """Calls the calendar API answered, whatever the scheme."""
    return sum(int(n) for n in dict(stats.get("api_requests") or {}).values())


class Recorder(httpx.BaseTransport):
    """An httpx transport that sends with ``httpx.HTTPTransport`` and keeps every request it
    sent, exactly as sent (what a wire capture between the agent and the vault would see)."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self._transport = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self._transport.handle_request(request)

    def close(self) -> None:
        self._transport.close()


def _claims(proof: str) -> dict[str, Any]:
    """A proof's claims, unverified: for display (the receiver verifies it); {} if none."""
    if not proof:
        return {}
    claims: dict[str, Any] = json.loads(jws.extract_compact(proof.encode("ascii")).payload)
    return claims


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


def grant_of_session(info: LocalInfo, session_id: str) -> str:
    """The grant the session's token in the vault table was minted from (its one token item)."""
    grants: set[str] = {
        item["grant_id"]["S"]
        for item in session_items(info, session_id)
        if item["sk"]["S"].startswith("TOKEN#") and "grant_id" in item
    }
    if len(grants) != 1:
        raise StepFailed(
            f"the session holds tokens of {len(grants)} grant(s), not one",
            "a proxied call mints one token of the user's grant for the session",
        )
    return grants.pop()


def _aws_client(info: LocalInfo, service: str, **kwargs: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(  # type: ignore[call-overload]
        service, region_name=info.region, config=Config(retries={"max_attempts": 1}), **kwargs
    )


LIFECYCLE_WAIT_SECONDS = 10.0
"""How long a step waits for the lifecycle events it makes (published within a second)."""


def lifecycle_events(
    info: LocalInfo, expect: list[str], wait: float = LIFECYCLE_WAIT_SECONDS
) -> list[dict[str, Any]]:
    """The lifecycle events EventBridge delivered (local mode's queue on the bus), received
    until those named in `expect` (each `detail-type` as often as listed) have arrived or
    `wait` seconds have passed: the events are published from the table's stream, after the
    change, never by the request that made it."""
    sqs = _aws_client(info, "sqs", endpoint_url=info.moto_url)
    found: list[dict[str, Any]] = []
    missing = list(expect)
    deadline = time.monotonic() + wait
    while missing and time.monotonic() < deadline:
        answer = sqs.receive_message(
            QueueUrl=info.lifecycle_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in answer.get("Messages", []):
            event = json.loads(message["Body"])
            found.append(event)
            if event.get("detail-type") in missing:
                missing.remove(event["detail-type"])
            sqs.delete_message(
                QueueUrl=info.lifecycle_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return found


def format_lifecycle(event: dict[str, Any]) -> str:
    """One line per lifecycle event: its type, its reason, whose and which."""
    detail = event.get("detail") or {}
    parts = [str(event.get("detail-type"))]
    if detail.get("reason"):
        parts.append(str(detail["reason"]))
    if detail.get("agent"):
        where = f"{detail['agent']}/{detail['provider']}" if detail.get("provider") else ""
        parts.append(where or str(detail["agent"]))
    for key in ("grant_id", "session_id", "flow_id"):
        if detail.get(key):
            parts.append(f"{key}={_short(str(detail[key]))}")
            break
    user = detail.get("user") or {}
    if user.get("sub"):
        parts.append(f"user={user['sub']}")
    return " ".join(parts)


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
    grant_id: str | None = None
    """alice's grant for calendar-agent, as the first session's token names it."""
    captured: httpx.Request | None = None
    """The proxied request the agent sent, as a capture on the wire would have it."""
    dpop_client: VaultClient | None = None
    dpop_token: AccessToken | None = None
    api_key: str | None = field(default=None, repr=False)
    """The keyed API's key the demo issued and an admin stored (never printed)."""
    clients: list[VaultClient] = field(default_factory=list)
    lifecycle: list[dict[str, Any]] = field(default_factory=list)
    """The lifecycle events (EventBridge) the steps printed."""


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

    def _lifecycle(self, *expect: str) -> list[dict[str, Any]]:
        """Print the lifecycle events the step made (docs/events.md), once delivered."""
        if not self.info.lifecycle_queue_url:
            return []
        events = lifecycle_events(self.info, list(expect))
        for event in events:
            self._say(f"      event: {format_lifecycle(event)}")
        self.state.lifecycle.extend(events)
        return events

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
        self._lifecycle("grant.activated")
        return value

    def _read_through_proxy(self, client: VaultClient) -> tuple[list[Any], httpx.Request]:
        """GET the events with the SDK's ``client.http`` (proxy delivery): the events and the
        request the SDK sent to the vault's proxy route."""
        recorder = Recorder()
        with client.http(self.info.provider_name, transport=recorder) as api:
            answer = api.get(API_EVENTS)
        if answer.status_code != 200:
            raise StepFailed(
                f"the calendar API answered {answer.status_code} through the proxy",
                "the provider's api_base_urls must be the calendar API's base URL",
            )
        events = answer.json().get("events") or []
        if not events:
            raise StepFailed(
                "the calendar API answered no events through the proxy",
                "the provider's api_base_urls must be the calendar API's base URL",
            )
        return list(events), recorder.sent[-1]

    def calendar_through_proxy(self) -> list[dict[str, Any]]:
        def act() -> tuple[str, Any]:
            client = self._client()
            events, sent = self._read_through_proxy(client)
            assert client.session_id is not None
            self.state.captured = sent
            self.state.grant_id = grant_of_session(self.info, client.session_id)
            titles = ", ".join(str(e.get("title")) for e in events)
            return (
                f"200 through the vault's proxy (the SDK's client.http): {len(events)} events"
                f" today ({titles}); the vault attached the session's token of grant"
                f" {_short(self.state.grant_id)}, which never left it"
            ), events

        result: list[dict[str, Any]] = self._step(
            "the same session reads the calendar through the vault's proxy",
            "the grant must be active after binding; read the vault log",
            act,
        )
        return result

    def captured_request_replayed(self) -> str:
        def act() -> tuple[str, Any]:
            captured = self.state.captured
            if captured is None:
                raise StepFailed("no captured request", "run the steps in order")
            proof = _claims(captured.headers["DPoP"])
            before = _api_calls(provider_stats(self.info))
            # the exact bytes again, from a plain HTTP client: no SDK, no session key
            replay = httpx.Request(
                captured.method, captured.url, headers=captured.headers, content=captured.content
            )
            with httpx.Client() as outsider:
                answer = outsider.send(replay)
            after = _api_calls(provider_stats(self.info))
            if answer.status_code < 400 or "X-Agent-Vault-Proxy" in answer.headers:
                raise StepFailed(
                    f"the replayed request reached the provider ({answer.status_code})",
                    "the vault must accept each proof's jti once (the replay table)",
                )
            error = error_from_response(answer.status_code, dict(answer.headers), answer.content)
            if error.code != "proof_replayed" or after != before:
                raise StepFailed(
                    f"the replay got {error.status} {error.code} and the calendar API"
                    f" {after - before} call(s)",
                    "the vault must refuse a seen jti before it calls the provider",
                )
            return (
                f"{error.status} {error.code}: {error.detail} (the same SigV4 signature and"
                f" DPoP proof jti={_short(str(proof.get('jti')))}, htu=…/proxy/"
                f"{self.info.provider_name}/{EVENTS_PATH}); the calendar API's call count"
                f" stayed {after}: nothing reached the provider"
            ), error.code

        return str(
            self._step(
                "a captured proxied request is replayed from outside: refused",
                "each proof's jti is accepted once (the vault's replay table)",
                act,
            )
        )

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

    def api_key_provider(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            assert self.state.alice is not None
            # the service issues a key; an operator stores it in the vault (the CLI's
            # `agent-vault apikey set keyed` sends the same request)
            key = self.state.api_key = f"ak_demo_{secrets.token_urlsafe(24)}"
            set_provider_api_keys(self.info, {"demo": key})
            admin = self._track(vault_client(self.info, ADMIN))
            stored = admin.request(
                "PUT", f"/v1/admin/api-keys/{KEYED_PROVIDER}", {"key": key}, proof=False
            )
            # calendar-agent (proxy delivery): the proxy attaches the key, the agent never has it
            client = self._client()
            with client.http(KEYED_PROVIDER) as api:
                answer = api.get("/" + KEYED_EVENTS_PATH)
            if answer.status_code != 200 or answer.json().get("key") != "demo":
                raise StepFailed(
                    f"the keyed API answered {answer.status_code} through the proxy",
                    "providers.keyed.api_base_urls must be the bundled API's base URL",
                )
            try:
                client.api_key(KEYED_PROVIDER)
            except DeliveryProxyOnly as exc:
                refused = exc.code
            else:
                raise StepFailed(
                    "the vault handed the key to a proxy-delivery agent",
                    "agents.calendar-agent.providers.keyed.delivery must be proxy",
                )
            # calendar-bearer-agent (returned delivery): the SDK hands it the key and where to
            # put it, for the agent's own HTTP client
            holder = self._track(vault_client(self.info, BEARER_TASK_1, self.state.alice))
            returned = holder.api_key(KEYED_PROVIDER)
            with httpx.Client() as own:
                direct = own.get(
                    f"{self.info.provider['calendar_api_base']}/{KEYED_EVENTS_PATH}",
                    headers=returned.headers,
                    params=returned.params,
                )
            holder.end_session()
            if direct.status_code != 200 or returned.api_key != key:
                raise StepFailed(
                    f"the returned key got {direct.status_code} at the keyed API",
                    "agents.calendar-bearer-agent.providers.keyed.delivery must be returned",
                )
            return (
                f"an admin stored the key (PUT /v1/admin/api-keys/{KEYED_PROVIDER}:"
                f" {stored.get('status')}); calendar-agent read {len(answer.json()['events'])}"
                f" events through the proxy with it (via {answer.json()['via']}) and was refused"
                f" the key itself ({refused}); calendar-bearer-agent, with returned delivery,"
                f" got it from VaultClient.api_key() and sent it in {returned.header} itself"
            ), {"status": stored.get("status"), "refused": refused, "via": answer.json()["via"]}

        value: dict[str, Any] = self._step(
            "an API key set by an admin: through the proxy, or handed over (flow 12)",
            "providers.keyed needs api_key; read the vault log",
            act,
        )
        self._lifecycle("session.ended")  # calendar-bearer-agent's session, ended by the agent
        return value

    # -- dpop delivery: the agent holds a token bound to its session key --

    def _dpop_client(self) -> VaultClient:
        if self.state.dpop_client is None:
            raise StepFailed("no session of calendar-dpop-agent", "run the steps in order")
        return self.state.dpop_client

    def _dpop_token(self) -> AccessToken:
        if self.state.dpop_token is None:
            raise StepFailed("no DPoP-bound token", "run the steps in order")
        return self.state.dpop_token

    def dpop_agent_consents(self) -> FlowCompletion:
        def act() -> tuple[str, Any]:
            assert self.state.alice is not None
            client = self._track(vault_client(self.info, DPOP_TASK, self.state.alice))
            session = client.start_session()
            self.state.dpop_client = client
            access = client.provider_access(self.info.provider_name)
            if access is None or access.delivery != "dpop":
                raise StepFailed(
                    f"the session's delivery at the calendar is"
                    f" {access.delivery if access else 'unknown'}",
                    "agents.calendar-dpop-agent.providers.calendar.delivery must be dpop (and"
                    " the provider dpop: true)",
                )
            try:
                client.get_token(self.info.provider_name, SCOPES)
            except ConsentRequired:
                pass
            else:
                raise StepFailed(
                    "calendar-dpop-agent got a token before alice consented for it",
                    "a grant is per user, agent and provider",
                )
            authorization = client.start_authorization(self.info.provider_name, SCOPES)
            callback = complete_consent(
                authorization.authorization_url, "alice", self.info.users["alice"], "allow"
            )
            answer = _get(callback)
            location = answer.headers.get("Location", "")
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
            if answer.status != 302 or query.get("status") != "pending_binding":
                raise StepFailed(
                    f"the callback answered {answer.status} ({query.get('status')})",
                    "read the vault log",
                )
            completion = client.complete_flow(
                authorization.flow_id,
                UserIdentity(id_token=id_token_for(self.info, "alice")),
                query.get("binding_code", ""),
            )
            return (
                f"session {_short(session.session_id)} of {session.agent} (delivery"
                f" {access.delivery}, key jkt={_short(session.jkt)}): consent required, alice"
                f" allowed at the provider, callback, binding: flow {completion.status},"
                f" grant {_short(completion.grant_id)}"
            ), completion

        result: FlowCompletion = self._step(
            "alice consents for calendar-dpop-agent too (dpop delivery)",
            "agents.calendar-dpop-agent needs its role and calendar.read with dpop delivery",
            act,
        )
        self._lifecycle("grant.activated")
        return result

    def dpop_token_read(self) -> AccessToken:
        def act() -> tuple[str, Any]:
            client = self._dpop_client()
            token = client.get_token(self.info.provider_name, SCOPES)
            session = client.session
            assert session is not None
            bound_to = (introspect(self.info, token.access_token).get("cnf") or {}).get("jkt")
            dpop = token.token_type == "DPoP"  # noqa: S105 # nosec B105 - a token type
            if not dpop or bound_to != session.jkt:
                raise StepFailed(
                    f"the token is {token.token_type}, bound to {bound_to}",
                    "the vault must send the SDK's proof for the token endpoint as the DPoP"
                    " header of its refresh request",
                )
            recorder = Recorder()
            with client.http(self.info.provider_name, scopes=SCOPES, transport=recorder) as api:
                answer = api.get(API_EVENTS)
            sent = recorder.sent[-1]
            proof = _claims(sent.headers.get("DPoP", ""))
            on_the_wire = sent.headers.get("Authorization") == f"DPoP {token.access_token}"
            if (
                answer.status_code != 200
                or not on_the_wire
                or proof.get("ath") != access_token_hash(token.access_token)
            ):
                raise StepFailed(
                    f"the calendar API answered {answer.status_code}: {answer.text[:200]}",
                    "the SDK sends the token with the DPoP scheme and a proof of the session key"
                    " for each call (ath = the token's hash)",
                )
            self.state.dpop_token = token  # what a thief on the wire or in the task would take
            events = answer.json().get("events") or []
            path = urllib.parse.urlsplit(str(proof.get("htu"))).path
            return (
                f"token_type {token.token_type}, bound to the session key (introspection:"
                f" cnf.jkt={_short(str(bound_to))}); client.http read {len(events)} events"
                " straight from the calendar API with Authorization: DPoP and a fresh proof"
                f" (htm={proof.get('htm')}, htu=…{path},"
                f" ath={_short(str(proof.get('ath')), 8)})"
            ), token

        result: AccessToken = self._step(
            "it gets a DPoP-bound token and reads the calendar itself",
            "the provider must advertise DPoP and the config say dpop: true",
            act,
        )
        return result

    def _stolen_token_refused(
        self, title: str, headers: Callable[[AccessToken], dict[str, str]], fix: str
    ) -> str:
        def act() -> tuple[str, Any]:
            token = self._dpop_token()
            before = provider_stats(self.info)
            answer = http_request("GET", self.info.provider["calendar_url"], headers=headers(token))
            after = provider_stats(self.info)
            challenge = answer.headers.get("WWW-Authenticate", "")
            body = answer.json() if answer.body.startswith(b"{") else {}
            error = str(body.get("error") or "")
            if (
                answer.status != 401
                or f'error="{error}"' not in challenge
                or _api_calls(after) != _api_calls(before)
            ):
                raise StepFailed(
                    f"the calendar API answered {answer.status} ({challenge or 'no challenge'})",
                    fix,
                )
            return (
                f"the calendar API answered {answer.status}, WWW-Authenticate: {challenge}"
                f" ({body.get('error_description')})"
            ), error

        return str(self._step(title, fix, act))

    def stolen_dpop_token_as_bearer(self) -> str:
        return self._stolen_token_refused(
            "a thief replays the DPoP token as a Bearer token: refused",
            lambda token: {"Authorization": f"Bearer {token.access_token}"},
            "the calendar API must refuse a DPoP-bound token presented as a bearer token",
        )

    def stolen_dpop_token_with_own_key(self) -> str:
        def thief(token: AccessToken) -> dict[str, str]:
            proof = SessionKey().dpop_proof(  # the thief's own key: a valid proof, wrong key
                "GET", self.info.provider["calendar_url"], access_token=token.access_token
            )
            return {"Authorization": f"DPoP {token.access_token}", "DPoP": proof}

        return self._stolen_token_refused(
            "… and as DPoP with a proof of the thief's own key: refused",
            thief,
            "the calendar API must compare the proof's key with the token's cnf.jkt",
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
        self._lifecycle("session.ended")
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

    def replacement_task(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            assert self.state.alice is not None
            if self.state.grant_id is None:
                raise StepFailed("no grant of the first session", "run the steps in order")

            def consents() -> tuple[int, int]:
                started = sum(
                    1 for e in audit_events(self.info) if e.get("action") == "consent.start"
                )
                codes = provider_stats(self.info)["token_successes"]["authorization_code"]
                return started, int(codes)

            before = consents()
            client = self._track(vault_client(self.info, TASK_2, self.state.alice))
            session = client.start_session()
            try:
                events, _ = self._read_through_proxy(client)
            except ConsentRequired as exc:
                raise StepFailed(
                    f"the replacement task was sent to consent again ({exc.status} {exc.code},"
                    f" reason {exc.reason})",
                    "ending a proxy session must delete its tokens, not revoke alice's grant"
                    " upstream (see the reap step's audit: grant.revoke revoked_with_session?)",
                ) from exc
            grant_id = grant_of_session(self.info, session.session_id)
            after = consents()
            flows, codes = after[0] - before[0], after[1] - before[1]
            if flows or codes or grant_id != self.state.grant_id:
                raise StepFailed(
                    f"the replacement needed {flows} consent flow(s), {codes} code(s) at the"
                    f" provider, grant {grant_id} (was {self.state.grant_id})",
                    "ending a proxy session must delete its tokens, not revoke alice's grant"
                    " upstream",
                )
            return (
                f"task {_short(session.task_id or '?')} started session"
                f" {_short(session.session_id)} for alice and read {len(events)} events through"
                f" the proxy; consent flows started: {flows} (audit consent.start), codes"
                f" redeemed at the provider: {codes}; the same grant {_short(grant_id)} as"
                " task-1's session"
            ), {"flows": flows, "codes": codes, "grant_id": grant_id}

        value: dict[str, Any] = self._step(
            "a replacement task serves alice with no new consent",
            "the grant must outlive the stopped task's session",
            act,
        )
        return value

    def sub_agent(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            parent = self._dpop_client()
            handle = parent.delegate(
                agent=CALENDAR_AGENT, providers={self.info.provider_name: SCOPES}, ttl_seconds=300
            )
            # the sub-agent: another agent's task, its own IAM role and its own new key
            child = self._track(vault_client(self.info, TASK_2))
            claimed = child.claim_delegation(handle)
            events, _ = self._read_through_proxy(child)
            parent.end_session()
            try:
                self._read_through_proxy(child)
            except SessionEnded as exc:
                ended = str(exc.problem.get("reason", exc.code))
            else:
                raise StepFailed(
                    "the child session outlived its parent",
                    "ending a session must end its delegated children",
                )
            actors = []
            link = (claimed.chain or {}).get("act")
            while isinstance(link, dict):
                actors.append(str(link.get("sub")))
                link = link.get("act")
            return (
                f"calendar-dpop-agent delegated calendar.read to calendar-agent (child session"
                f" {_short(claimed.session_id)}, chain {' → '.join(actors)} for alice, RFC 8693"
                f" act); the child read {len(events)} events through the proxy with alice's"
                f" grant and no consent; the parent ended, then the child: 410 ({ended})"
            ), {"chain": claimed.chain, "events": len(events), "ended": ended}

        value: dict[str, Any] = self._step(
            "a sub-agent works in a delegated child session, which ends with its parent",
            "agents.calendar-dpop-agent.may_delegate_to must list calendar-agent",
            act,
        )
        self._lifecycle("session.ended", "session.ended")
        return value

    def admin_revokes(self) -> dict[str, Any]:
        def act() -> tuple[str, Any]:
            admin = self._track(vault_client(self.info, ADMIN))
            alice = {"iss": self.info.provider["issuer"], "sub": "alice"}
            result = admin.revoke(user=alice, agent=DPOP_AGENT)
            if result.get("revoked_grants") != 1:
                raise StepFailed(
                    f"the revocation answered {result}",
                    "alice's grant for the dpop agent is made by the dpop_agent_consents step",
                )
            return (
                f"POST /v1/revocations (admin): alice's {DPOP_AGENT} grant revoked at the"
                f" provider, {result.get('revoked_tokens')} token(s) with it; applications"
                " learn it from the event, not from a failed request"
            ), result

        value: dict[str, Any] = self._step(
            "an operator revokes alice's grant for the dpop agent",
            "the admin principal's role must be in admin_role_names",
            act,
        )
        self._lifecycle("grant.revoked")
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
        "captured_request_replayed",
        "no_token_for_the_agent",
        "stolen_session_refused",
        "other_agent_refused",
        "api_key_provider",
        "dpop_agent_consents",
        "dpop_token_read",
        "stolen_dpop_token_as_bearer",
        "stolen_dpop_token_with_own_key",
        "stop_task",
        "reap",
        "session_dead",
        "stopped_task_stays_stopped",
        "token_dead",
        "replacement_task",
        "sub_agent",
        "admin_revokes",
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
