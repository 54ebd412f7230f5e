"""The sample agent: a small FastAPI service that reads a user's calendar with a delegated token.

The modules of :mod:`sample_agent`:

``settings``  the configuration (environment variables, read at start-up)
``intents``   the rule-based intent parser (no LLM)
``agent``     one vault session per user, the calendar call, the binding (the SDK)
``identity``  who a request is for (bearer header, login cookie, default user)
``login``     the optional OIDC login of the application's users (Authlib)
``pages``     the HTML pages
``app``       this module: the routes and the ASGI app (``sample_agent.app:app``)

``GET /connections`` shows the logged-in user the accounts they connected to this agent (the
vault's ``GET /v1/connections``, for the user the login's ID token names) and
``POST /connections/revoke`` disconnects one (``DELETE /v1/connections/{grant_id}``). Like
``/ask``, the POST takes only a JSON body (FastAPI refuses a JSON body sent as a form, so a plain
cross-site form cannot post it) under a ``SameSite=Lax`` login cookie; it also requires the
request's ``Origin`` to be this service's own.

When the user has not consented yet, ``/ask`` answers with the consent URL; the vault's
callback later sends the user's browser to ``GET /consent/return`` with the flow id and a
one-time binding code, where the agent binds the consent (``POST /v1/flows/{id}/complete`` with
that code) to whoever is logged in *in that browser*, and only if that browser is the one that
asked: ``/ask`` ties the flow to its browser with a cookie and never hands the flow id out, so a
consent link forwarded to someone else ends at a return page that refuses to bind it.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_vault import (
    BindingCodeInvalid,
    FlowNotFound,
    FlowNotPending,
    InvalidUserToken,
    NotFound,
    UserMismatch,
    VaultError,
)
from sample_agent import pages
from sample_agent.agent import (
    CalendarAgent,
    CalendarApiError,
    ConsentNeeded,
    NotConfigured,
    NotLoggedIn,
)
from sample_agent.identity import ID_TOKEN_COOKIE, user_of
from sample_agent.settings import SESSION_SECRET_ENV, AgentSettings, OidcSettings, session_key

if TYPE_CHECKING:
    from sample_agent.login import OidcLogin

__all__ = ["AgentSettings", "OidcSettings", "app", "create_app"]

log = logging.getLogger("agent")

RETURN_PATH = "/consent/return"
FLOW_COOKIE = "agent_consent_flow"
"""The flow this browser started (set by ``/ask``): the return page binds no other."""
FLOW_COOKIE_SECONDS = 3600
SESSION_COOKIE = "agent_session"
"""Starlette's signed session: only a login in progress (Authlib's state, nonce, verifier)."""
SESSION_SECONDS = 600


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=500)


class Disconnect(BaseModel):
    grant_id: str = Field(pattern=r"^grt_[A-Za-z0-9_-]{16,64}$")


class _SessionCookies:
    """Starlette's SessionMiddleware, with the cookie's Secure flag decided per request (as the
    agent's other cookies): behind the load balancer the scheme is the forwarded one."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self._plain = SessionMiddleware(app, https_only=False, **options)
        self._secure = SessionMiddleware(app, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        middleware = self._secure if scope.get("scheme") == "https" else self._plain
        await middleware(scope, receive, send)


def public_base(request: Request, settings: AgentSettings) -> str:
    """This service's public base URL (configured, else as the request reached it)."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def same_origin(request: Request, settings: AgentSettings) -> bool:
    """The browser says the request comes from one of this service's own pages."""
    origin = request.headers.get("origin")
    parts = urlsplit(public_base(request, settings))
    return origin is not None and origin == f"{parts.scheme}://{parts.netloc}"


def create_app(settings: AgentSettings | None = None) -> FastAPI:
    """The ASGI app; without ``settings`` they are read from the environment at start-up."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or AgentSettings.from_env()
        agent = CalendarAgent(resolved)
        app.state.agent = agent
        app.state.login = None
        if resolved.oidc is not None:
            from sample_agent.login import OidcLogin  # Authlib: only for an agent with a login

            app.state.login = OidcLogin(resolved.oidc, timeout=resolved.http_timeout)
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
    # The middleware is built before the lifespan reads the settings: its key is known now.
    configured = (
        settings.session_secret if settings is not None else os.environ.get(SESSION_SECRET_ENV)
    )
    app.add_middleware(
        _SessionCookies,
        secret_key=session_key(configured),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_SECONDS,
        same_site="lax",  # the provider's redirect back is a top-level GET from another site
    )

    def agent_of(request: Request) -> CalendarAgent:
        agent: CalendarAgent = request.app.state.agent
        return agent

    def login_of(request: Request) -> OidcLogin | None:
        login: OidcLogin | None = request.app.state.login
        return login

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        return pages.home(
            logged_in=bool(request.cookies.get(ID_TOKEN_COOKIE)),
            can_log_in=login_of(request) is not None,
            default_user=agent_of(request).settings.default_user is not None,
        )

    @app.post("/ask")
    def ask(question: Question, request: Request) -> JSONResponse:
        agent = agent_of(request)
        user = user_of(request, agent.settings)
        if user is None:
            return JSONResponse(
                {"detail": "log in first (or send a bearer identity token)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return_url = public_base(request, agent.settings) + RETURN_PATH
        try:
            answer = agent.ask(user, question.question, return_url)
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
            return pages.page("Nothing to connect", "<p>This page needs a flow_id.</p>", 400)
        if status == "refused":
            return pages.not_connected(
                f"You declined ({html.escape(error or 'refused')}). Nothing was connected.", 200
            )
        if status != "pending_binding" or not binding_code:
            return pages.not_connected("Unknown consent status.", 400)
        started_here = request.cookies.get(FLOW_COOKIE, "")
        if not secrets.compare_digest(started_here.encode(), flow_id.encode()):
            # A consent link forwarded from someone else's session: never bind it here.
            return pages.not_connected(
                "This consent was not started in this browser, so nothing was connected. "
                "Ask the agent again from here.",
                403,
            )
        user = user_of(request, agent.settings)
        if user is None and login_of(request) is not None:
            here = f"{RETURN_PATH}?" + urlencode(
                {"flow_id": flow_id, "status": status, "binding_code": binding_code}
            )
            return RedirectResponse(f"login?{urlencode({'next': here})}", status_code=303)
        if user is None:
            return pages.page("Log in first", "<p id=status>Log in to finish connecting.</p>", 401)
        try:
            result = agent.complete(flow_id, user, binding_code)
        except UserMismatch:
            return pages.not_connected(
                "This consent was started for another user, so it was cancelled and its tokens "
                "revoked.",
                403,
            )
        except BindingCodeInvalid:
            return pages.not_connected(
                "This link is not the one the vault sent, so the consent was cancelled and its "
                "tokens revoked.",
                403,
            )
        except (FlowNotFound, FlowNotPending) as exc:
            return pages.not_connected(html.escape(exc.detail), 409)
        except VaultError as exc:
            return pages.not_connected(f"The vault refused: {html.escape(exc.code)}", 502)
        page = pages.connected(result["provider"], result["scopes"])
        page.delete_cookie(FLOW_COOKIE)
        return page

    @app.get("/connections", response_class=HTMLResponse)
    def connected_accounts(request: Request) -> Response:
        agent = agent_of(request)
        user = user_of(request, agent.settings)
        if user is None or user.id_token is None:
            if login_of(request) is not None:
                return RedirectResponse(f"login?{urlencode({'next': '/connections'})}", 303)
            return pages.page("Log in first", "<p id=status>Log in to see them.</p>", 401)
        try:
            items = agent.connections(user)
        except InvalidUserToken:
            return pages.page("Log in again", "<p id=status>Your login expired.</p>", 401)
        except VaultError as exc:
            return pages.page("Vault error", f"<p id=status>{html.escape(exc.code)}</p>", 502)
        return pages.connections(items)

    @app.post("/connections/revoke")
    def disconnect(body: Disconnect, request: Request) -> JSONResponse:
        agent = agent_of(request)
        if not same_origin(request, agent.settings):
            return JSONResponse({"detail": "not from this site"}, status_code=403)
        user = user_of(request, agent.settings)
        if user is None:
            return JSONResponse({"detail": "log in first"}, status_code=401)
        try:
            answer = agent.revoke_connection(user, body.grant_id)
        except (NotLoggedIn, InvalidUserToken):
            return JSONResponse({"detail": "log in (again) first"}, status_code=401)
        except NotFound:
            return JSONResponse({"detail": "no such connected account"}, status_code=404)
        except VaultError as exc:
            return JSONResponse({"detail": "the vault refused", "code": exc.code}, 502)
        return JSONResponse({"status": answer.get("status")})

    @app.get("/login")
    async def login(request: Request, next: str = "/") -> Response:
        oidc = login_of(request)
        if oidc is None:
            return pages.no_login()
        return await oidc.begin(request, public_base(request, agent_of(request).settings), next)

    @app.get("/login/callback")
    async def login_callback(request: Request) -> Response:
        oidc = login_of(request)
        if oidc is None:
            return pages.no_login()
        return await oidc.finish(request, public_base(request, agent_of(request).settings))

    @app.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("./", status_code=303)
        response.delete_cookie(ID_TOKEN_COOKIE)
        return response

    return app


app = create_app()
