"""The sample agent: a small FastAPI service that reads a user's calendar with a delegated token.

It needs no LLM: a tiny rule-based intent parser understands calendar questions. For each user it
keeps one Agent Vault session (an ephemeral key in memory, the user's identity token) and reads
the calendar API through the vault's egress proxy when the session says the provider's delivery
is ``proxy`` (the token never reaches the agent), else with a ``calendar.read`` token the SDK
gets from the vault. When the
user has not consented yet it answers with the consent URL; the vault's callback later sends the
user's browser to ``GET /consent/return`` with the flow id and a one-time binding code, where the
agent binds the consent (``POST /v1/flows/{id}/complete`` with that code) to whoever is logged in
*in that browser*, and only if that browser is the one that asked: ``/ask`` ties the flow to its
browser with a cookie and never hands the flow id out, so a consent link forwarded to someone else
ends at a return page that refuses to bind it.

Who the user is, in order: an ``Authorization: Bearer <id_token>`` header (an API caller), the
``agent_id_token`` cookie set by the optional OIDC login (``/login``), or a configured default user
(local mode, or an agent trusted to assert ``DEFAULT_USER_ID``).

Configuration (environment, read at start-up):

``AGENT_VAULT_URL``      the vault API (``https://<api>.execute-api.<region>.amazonaws.com``;
                         ``VAULT_URL`` is read too)
``AWS_REGION``           the vault's region (ECS sets it)
``CALENDAR_API_URL``     the calendar API (``GET`` with a bearer token, or through the vault's
                         proxy when the session says the provider's delivery is ``proxy``: it
                         must then be under one of the provider's ``api_base_urls``); without
                         it the agent starts but answers calendar questions with 503
``CALENDAR_PROVIDER``    the vault's provider name (``calendar``)
``CALENDAR_SCOPES``      scopes to ask for (``calendar.read``)
``AGENT_PUBLIC_URL``     this service's public base URL (return URL = ``<it>/consent/return``)
``OIDC_ISSUER``, ``OIDC_CLIENT_ID``, ``OIDC_CLIENT_SECRET``  optional: log users in with OIDC
``DEFAULT_USER_ID``      optional: act for this user id (needs ``may_assert_user_id``)
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import html
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from agent_vault import (
    BindingCodeInvalid,
    ConsentRequired,
    FlowNotFound,
    FlowNotPending,
    InvalidUserToken,
    SessionEnded,
    UserIdentity,
    UserMismatch,
    VaultClient,
    VaultError,
)

log = logging.getLogger("agent")

ID_TOKEN_COOKIE = "agent_id_token"  # noqa: S105 - a cookie name  # nosec B105
LOGIN_STATE_COOKIE = "agent_login_state"
RETURN_PATH = "/consent/return"
FLOW_COOKIE = "agent_consent_flow"
"""The flow this browser started (set by ``/ask``): the return page binds no other."""
FLOW_COOKIE_SECONDS = 3600


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcSettings:
    """The application's own login (an OpenID Connect client of the users' identity provider)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class AgentSettings:
    vault_url: str
    calendar_api_url: str | None
    region: str | None = None
    provider: str = "calendar"
    scopes: tuple[str, ...] = ("calendar.read",)
    public_url: str | None = None
    credentials: Any = field(default=None, repr=False)
    """botocore credentials for vault calls (None: the default chain, e.g. the task role)."""
    default_user: Callable[[], UserIdentity] | None = field(default=None, repr=False)
    oidc: OidcSettings | None = None
    max_sessions: int = 100
    http_timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AgentSettings:
        env = dict(os.environ if environ is None else environ)
        vault_url = env.get("AGENT_VAULT_URL") or env.get("VAULT_URL")
        if not vault_url:
            raise RuntimeError("the agent needs AGENT_VAULT_URL (or VAULT_URL) in its environment")
        oidc = None
        if env.get("OIDC_ISSUER") and env.get("OIDC_CLIENT_ID"):
            oidc = OidcSettings(
                env["OIDC_ISSUER"], env["OIDC_CLIENT_ID"], env.get("OIDC_CLIENT_SECRET", "")
            )
        default_user: Callable[[], UserIdentity] | None = None
        if env.get("DEFAULT_USER_ID"):
            identity = UserIdentity(user_id=env["DEFAULT_USER_ID"])
            default_user = lambda: identity  # noqa: E731
        return cls(
            vault_url=vault_url,
            calendar_api_url=env.get("CALENDAR_API_URL") or None,
            region=env.get("AGENT_VAULT_REGION") or env.get("AWS_REGION") or None,
            provider=env.get("CALENDAR_PROVIDER", "calendar"),
            scopes=tuple(env.get("CALENDAR_SCOPES", "calendar.read").split()),
            public_url=env.get("AGENT_PUBLIC_URL") or None,
            oidc=oidc,
            default_user=default_user,
        )


# -- the intent parser ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    name: str
    day: datetime.date


_CALENDAR_WORDS = re.compile(
    r"\b(calendar|schedule|agenda|meetings?|events?|appointments?|busy|free)\b"
    r"|what('?s| is) on\b"
)


def parse_intent(question: str, today: datetime.date | None = None) -> Intent | None:
    """A calendar question, and for which day; None for anything else."""
    text = question.lower()
    if not _CALENDAR_WORDS.search(text):
        return None
    day = today or datetime.datetime.now(datetime.UTC).date()
    if "tomorrow" in text:
        day += datetime.timedelta(days=1)
    elif "yesterday" in text:
        day -= datetime.timedelta(days=1)
    return Intent("calendar.events", day)


def describe_events(events: list[dict[str, Any]], day: datetime.date) -> str:
    label = "today" if day == datetime.datetime.now(datetime.UTC).date() else day.isoformat()
    if not events:
        return f"Nothing on your calendar {label}."
    parts = []
    for event in events:
        start = str(event.get("start", ""))
        hour = start[11:16] if len(start) >= 16 else start
        parts.append(f"{hour} {event.get('title', '(untitled)')}".strip())
    return f"On your calendar {label}: " + "; ".join(parts) + "."


# -- the agent -----------------------------------------------------------------------------------


class ConsentNeeded(Exception):
    def __init__(self, url: str, flow_id: str | None) -> None:
        super().__init__(url)
        self.url = url
        self.flow_id = flow_id


class CalendarApiError(Exception):
    pass


class NotConfigured(Exception):
    pass


def _identity_key(user: UserIdentity) -> str:
    raw = f"t:{user.id_token}" if user.id_token is not None else f"u:{user.user_id}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _event_list(body: Any) -> list[dict[str, Any]]:
    events = body.get("events", []) if isinstance(body, dict) else []
    return [e for e in events if isinstance(e, dict)]


class CalendarAgent:
    """One vault session per user identity (bounded, LRU), the calendar call, the binding."""

    def __init__(self, settings: AgentSettings, *, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, VaultClient] = OrderedDict()
        self._http = http or httpx.Client(timeout=settings.http_timeout, trust_env=False)
        # Binding needs no session: any task of this agent may complete the agent's flows.
        self._binder = self._new_client(None)

    def _new_client(self, user: UserIdentity | None) -> VaultClient:
        return VaultClient(
            self.settings.vault_url,
            user=user,
            credentials=self.settings.credentials,
            region=self.settings.region,
        )

    def client_for(self, user: UserIdentity) -> VaultClient:
        key = _identity_key(user)
        evicted: VaultClient | None = None
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._new_client(user)
                if len(self._clients) > self.settings.max_sessions:
                    _, evicted = self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
        if evicted is not None:
            evicted.close()
        return client

    def _forget(self, user: UserIdentity) -> None:
        with self._lock:
            self._clients.pop(_identity_key(user), None)

    def public_base(self, request: Request) -> str:
        """This service's public base URL (configured, else as the request reached it)."""
        return (self.settings.public_url or _base_url(request)).rstrip("/")

    def return_url(self, request: Request) -> str:
        return self.public_base(request) + RETURN_PATH

    def calendar_token(self, user: UserIdentity, return_url: str) -> str:
        for attempt in (1, 2):
            client = self.client_for(user)
            try:
                token = client.get_token(
                    self.settings.provider,
                    self.settings.scopes,
                    authorize=True,
                    return_url=return_url,
                )
                return token.access_token
            except ConsentRequired as exc:
                assert exc.authorization_url is not None
                raise ConsentNeeded(exc.authorization_url, exc.flow_id) from exc
            except SessionEnded:
                # The session expired (or was ended): start a new one, once.
                self._forget(user)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def events(self, user: UserIdentity, return_url: str) -> list[dict[str, Any]]:
        url = self.settings.calendar_api_url
        if not url:
            raise NotConfigured("no calendar API is configured (CALENDAR_API_URL)")
        route = self._route(user)
        if route.get("delivery") == "proxy":
            return self._events_through_proxy(user, url, route, return_url)
        for attempt in (1, 2):
            token = self.calendar_token(user, return_url)
            response = self._http.get(
                url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
            )
            if response.status_code == 401 and attempt == 1:
                # The token was revoked or expired early: drop it and ask the vault again.
                self.client_for(user).forget_token(self.settings.provider, self.settings.scopes)
                continue
            if response.status_code != 200:
                raise CalendarApiError(f"the calendar API answered {response.status_code}")
            return _event_list(response.json())
        raise CalendarApiError("the calendar API refused a fresh token")

    def _route(self, user: UserIdentity) -> dict[str, Any]:
        """How the vault has this agent reach the calendar provider (the session's answer)."""
        session = self.client_for(user).ensure_session()
        providers = session.raw.get("providers") or {}
        route = providers.get(self.settings.provider) if isinstance(providers, dict) else None
        return route if isinstance(route, dict) else {}

    def _events_through_proxy(
        self, user: UserIdentity, url: str, route: dict[str, Any], return_url: str
    ) -> list[dict[str, Any]]:
        """`proxy` delivery: the vault calls the calendar API; the token never reaches us."""
        bases = [str(b) for b in route.get("api_base_urls") or []]
        base = next((b for b in bases if url.startswith(b + "/")), None)
        if base is None:
            raise NotConfigured("CALENDAR_API_URL is not under the provider's api_base_urls")
        provider = self.settings.provider
        for attempt in (1, 2):
            client = self.client_for(user)
            sid = client.ensure_session().session_id
            try:
                answer = client.request(
                    "GET",
                    f"/v1/sessions/{sid}/proxy/{provider}/{url[len(base) + 1 :]}",
                    session_id=sid,
                )
            except ConsentRequired as exc:
                started = client.start_authorization(provider, self.settings.scopes, return_url)
                raise ConsentNeeded(started.authorization_url, started.flow_id) from exc
            except SessionEnded:
                self._forget(user)  # expired or ended: a new session, once
                if attempt == 2:
                    raise
                continue
            except VaultError as exc:
                raise CalendarApiError(f"the calendar API answered {exc.status}") from exc
            return _event_list(answer)
        raise AssertionError("unreachable")

    def ask(self, user: UserIdentity, question: str, return_url: str) -> dict[str, Any]:
        intent = parse_intent(question)
        if intent is None:
            return {
                "answer": "I can tell you what is on your calendar. Try: "
                '"what is on my calendar today?"',
                "intent": None,
            }
        events = self.events(user, return_url)
        day = intent.day.isoformat()
        todays = [e for e in events if str(e.get("start", "")).startswith(day)]
        return {
            "answer": describe_events(todays, intent.day),
            "intent": intent.name,
            "day": day,
            "events": todays,
        }

    def complete(self, flow_id: str, user: UserIdentity, binding_code: str) -> dict[str, Any]:
        result = self._binder.complete_flow(flow_id, user, binding_code)
        return {
            "flow_id": result.flow_id,
            "status": result.status,
            "provider": result.provider,
            "scopes": list(result.scopes),
        }

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
        self._binder.close(end_session=False)
        self._http.close()


# -- OIDC login (optional) -----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unverified_claims(jwt: str) -> dict[str, Any]:
    """Claims of a JWT without verification: only for the nonce/expiry of a token we just got
    from the token endpoint over a direct connection; the vault verifies it on every use."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass
class _PendingLogin:
    verifier: str
    nonce: str
    next_url: str
    created: float


class OidcLogin:
    """Authorization code + PKCE login of the application's users (sets the identity cookie)."""

    def __init__(self, settings: OidcSettings, http: httpx.Client) -> None:
        self.settings = settings
        self._http = http
        self._metadata: dict[str, Any] | None = None
        self._pending: dict[str, _PendingLogin] = {}
        self._lock = threading.Lock()

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = self._http.get(url)
            response.raise_for_status()
            self._metadata = dict(response.json())
        return self._metadata

    def begin(self, redirect_uri: str, next_url: str) -> tuple[str, str]:
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        with self._lock:
            now = time.monotonic()
            self._pending = {k: v for k, v in self._pending.items() if now - v.created < 600}
            self._pending[state] = _PendingLogin(verifier, nonce, next_url, now)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self.metadata()['authorization_endpoint']}?{query}", state

    def finish(self, state: str, code: str, redirect_uri: str) -> tuple[str, str]:
        """(id_token, next URL) for a successful login, or ValueError."""
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None:
            raise ValueError("unknown or expired login state")
        response = self._http.post(
            self.metadata()["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": pending.verifier,
            },
            auth=(self.settings.client_id, self.settings.client_secret),
        )
        if response.status_code != 200:
            raise ValueError(f"the token endpoint answered {response.status_code}")
        id_token = response.json().get("id_token")
        if not isinstance(id_token, str):
            raise ValueError("no id_token in the token response")
        if _unverified_claims(id_token).get("nonce") != pending.nonce:
            raise ValueError("the id_token carries another nonce")
        return id_token, pending.next_url


# -- HTTP ----------------------------------------------------------------------------------------


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=500)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
        "padding:0 1rem}code{background:#eee;padding:0 .2em}</style>"
        f"<h1>{html.escape(title)}</h1>{body}</html>"
    )
    return HTMLResponse(
        document,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; connect-src 'self'; "
            "form-action 'self'",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def user_of(request: Request, agent: CalendarAgent) -> UserIdentity | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and header[7:].strip():
        return UserIdentity(id_token=header[7:].strip())
    cookie = request.cookies.get(ID_TOKEN_COOKIE)
    if cookie:
        return UserIdentity(id_token=cookie)
    if agent.settings.default_user is not None:
        return agent.settings.default_user()
    return None


_HOME_SCRIPT = """
const form = document.getElementById('ask');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const out = document.getElementById('answer');
  out.textContent = '...';
  const r = await fetch('ask', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({question: document.getElementById('q').value})});
  const body = await r.json();
  out.textContent = '';
  if (body.consent_url) {
    const a = document.createElement('a');
    a.href = body.consent_url; a.id = 'consent'; a.textContent = 'Connect your calendar';
    out.append(body.message + ' ', a);
  } else {
    out.textContent = body.answer || body.detail || JSON.stringify(body);
  }
});
"""


def create_app(settings: AgentSettings | None = None) -> FastAPI:
    """The ASGI app; without ``settings`` they are read from the environment at start-up."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or AgentSettings.from_env()
        agent = CalendarAgent(resolved)
        app.state.agent = agent
        app.state.login = OidcLogin(resolved.oidc, agent._http) if resolved.oidc else None
        try:
            yield
        finally:
            agent.close()  # ends every vault session this agent started

    app = FastAPI(
        title="Agent Vault sample agent",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def agent_of(request: Request) -> CalendarAgent:
        agent: CalendarAgent = request.app.state.agent
        return agent

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        agent = agent_of(request)
        login = request.app.state.login
        if request.cookies.get(ID_TOKEN_COOKIE):
            who = "<p id=who>Logged in. <a href='logout'>Log out</a></p>"
        elif login is not None:
            who = (
                "<p id=who>You are not logged in. <a id=login href='login'>Log in</a>"
                + (
                    " (meanwhile this agent acts for its configured user)"
                    if agent.settings.default_user
                    else ""
                )
                + "</p>"
            )
        elif agent.settings.default_user is not None:
            who = "<p id=who>Acting for the configured user.</p>"
        else:
            who = "<p id=who>No user: send <code>Authorization: Bearer &lt;id_token&gt;</code>.</p>"
        body = (
            who + "<form id=ask><input id=q name=question size=40 "
            "value='what is on my calendar today?'> <button>Ask</button></form>"
            f"<p id=answer aria-live=polite></p><script>{_HOME_SCRIPT}</script>"
        )
        return _page("Calendar agent", body)

    @app.post("/ask")
    def ask(question: Question, request: Request) -> JSONResponse:
        agent = agent_of(request)
        user = user_of(request, agent)
        if user is None:
            return JSONResponse(
                {"detail": "log in first (or send a bearer identity token)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            answer = agent.ask(user, question.question, agent.return_url(request))
        except ConsentNeeded as needed:
            # The flow id stays between the vault, this agent and this browser (the cookie):
            # the return page binds only the flow the browser that opens it started here.
            response = JSONResponse(
                {
                    "consent_url": needed.url,
                    "message": "I need your permission to read your calendar: open consent_url "
                    "in this browser, then ask again.",
                },
                status_code=202,
            )
            if needed.flow_id:
                response.set_cookie(
                    FLOW_COOKIE,
                    needed.flow_id,
                    max_age=FLOW_COOKIE_SECONDS,
                    httponly=True,
                    samesite="lax",
                    secure=request.url.scheme == "https",
                )
            return response
        except InvalidUserToken as exc:
            return JSONResponse(
                {"detail": f"your identity was refused: {exc.detail}"}, status_code=401
            )
        except VaultError as exc:
            log.warning("vault error: %s", exc)
            return JSONResponse(
                {"detail": "the token vault refused or failed", "code": exc.code}, status_code=502
            )
        except (CalendarApiError, httpx.HTTPError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=502)
        except NotConfigured as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return JSONResponse(answer)

    @app.get(RETURN_PATH, response_class=HTMLResponse)
    def consent_return(
        request: Request,
        flow_id: str = "",
        status: str = "",
        error: str = "",
        binding_code: str = "",
    ) -> Response:
        agent = agent_of(request)
        if not flow_id:
            return _page("Nothing to connect", "<p>This page needs a flow_id.</p>", 400)
        if status == "refused":
            return _page(
                "Not connected",
                f"<p id=status>You declined ({html.escape(error or 'refused')}). "
                "Nothing was connected.</p>",
            )
        if status != "pending_binding" or not binding_code:
            return _page("Not connected", "<p id=status>Unknown consent status.</p>", 400)
        started_here = request.cookies.get(FLOW_COOKIE, "")
        if not secrets.compare_digest(started_here.encode(), flow_id.encode()):
            # A consent link forwarded from someone else's session: never bind it here.
            return _page(
                "Not connected",
                "<p id=status>This consent was not started in this browser, so "
                "nothing was connected. Ask the agent again from here.</p>",
                403,
            )
        user = user_of(request, agent)
        login = request.app.state.login
        if user is None and login is not None:
            here = f"{RETURN_PATH}?" + urlencode(
                {"flow_id": flow_id, "status": status, "binding_code": binding_code}
            )
            return RedirectResponse(f"login?{urlencode({'next': here})}", status_code=303)
        if user is None:
            return _page("Log in first", "<p id=status>Log in to finish connecting.</p>", 401)
        try:
            result = agent.complete(flow_id, user, binding_code)
        except UserMismatch:
            return _page(
                "Not connected",
                "<p id=status>This consent was started for another user, so it was "
                "cancelled and its tokens revoked.</p>",
                403,
            )
        except BindingCodeInvalid:
            return _page(
                "Not connected",
                "<p id=status>This link is not the one the vault sent, so the consent "
                "was cancelled and its tokens revoked.</p>",
                403,
            )
        except (FlowNotFound, FlowNotPending) as exc:
            return _page("Not connected", f"<p id=status>{html.escape(exc.detail)}</p>", 409)
        except VaultError as exc:
            return _page(
                "Not connected", f"<p id=status>The vault refused: {html.escape(exc.code)}</p>", 502
            )
        scopes = " ".join(result["scopes"])
        page = _page(
            "Connected",
            f"<p id=status>Connected: <b>{html.escape(result['provider'])}</b> "
            f"(<code>{html.escape(scopes)}</code>). You can ask again now.</p>"
            "<p><a href='../'>Back to the agent</a></p>",
        )
        page.delete_cookie(FLOW_COOKIE)
        return page

    @app.get("/login")
    def login(request: Request, next: str = "/") -> Response:
        oidc: OidcLogin | None = request.app.state.login
        if oidc is None:
            return _page("No login", "<p>This agent has no OIDC login configured.</p>", 404)
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        url, state = oidc.begin(agent_of(request).public_base(request) + "/login/callback", target)
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            LOGIN_STATE_COOKIE,
            state,
            max_age=600,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    @app.get("/login/callback")
    def login_callback(
        request: Request, state: str = "", code: str = "", error: str = ""
    ) -> Response:
        oidc: OidcLogin | None = request.app.state.login
        if oidc is None:
            return _page("No login", "<p>This agent has no OIDC login configured.</p>", 404)
        if error or not code or state != request.cookies.get(LOGIN_STATE_COOKIE):
            return _page("Login failed", f"<p>{html.escape(error or 'bad state')}</p>", 400)
        try:
            id_token, target = oidc.finish(
                state, code, agent_of(request).public_base(request) + "/login/callback"
            )
        except (ValueError, httpx.HTTPError) as exc:
            return _page("Login failed", f"<p>{html.escape(str(exc))}</p>", 400)
        expires = int(_unverified_claims(id_token).get("exp", time.time() + 3600))
        base_path = urlsplit(agent_of(request).public_base(request)).path
        response = RedirectResponse(base_path + target, status_code=303)
        response.set_cookie(
            ID_TOKEN_COOKIE,
            id_token,
            max_age=max(60, expires - int(time.time())),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(LOGIN_STATE_COOKIE)
        return response

    @app.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("./", status_code=303)
        response.delete_cookie(ID_TOKEN_COOKIE)
        return response

    return app


app = create_app()
