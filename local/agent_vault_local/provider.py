"""Start, stop and talk to Agent Vault's local authorization server (oidc-provider on Node).

``AuthorizationServer`` runs ``local/agent_vault_local/provider/server.mjs`` (a configuration of the
OpenID Certified npm package ``oidc-provider``) as a child process on loopback and knows its
issuer, endpoints, clients and test hooks. It is the external OAuth provider of the tests, of
local mode and of the demo, and the users' identity provider (``login_id_token``).

Clients registered at the server:

* ``agent-vault`` (``client_secret_basic``) and ``agent-vault-post`` (``client_secret_post``, same
  secret): the vault; authorization_code + refresh_token, redirect URIs ``redirect_uris``;
* ``agent-vault-public`` (``none``: a public client, PKCE only): the same, unauthenticated;
* ``agent-vault-m2m`` (``client_secret_basic``, same secret) and ``agent-vault-m2m-jwt``
  (``private_key_jwt``, RFC 7523, with the P-256 key ``m2m_private_jwk``): the vault's machine
  credentials, ``client_credentials`` only, for the calendar API's scopes;
* ``agent-app``: the application users log in to; its ID tokens name users to the vault;
* ``calendar-api``: the resource server, which only calls introspection.

Users: ``alice`` / ``alice-password`` and ``bob`` / ``bob-password``.

DPoP (RFC 9449) is on: a token request with a ``DPoP`` proof gets an access token bound to the
proof's key (``token_type: DPoP``, ``cnf.jkt``), and the calendar API (under
``calendar_api_base``) accepts such a token only as ``Authorization: DPoP <token>`` with a proof
of that key (``htm``, ``htu``, ``iat``, ``jti``, ``ath`` checked). ``dpop_nonce`` /
``require_dpop_nonce`` make the token endpoint or the API demand a server nonce
(``use_dpop_nonce``).

Everything here uses the standard library only (``urllib``), never a proxy, and never logs a
token, code or secret.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self, TypedDict

from joserfc.jwk import ECKey

from agent_vault_local.consent_forms import ConsentFormError, complete_consent
from vault import jsondoc
from vault.oauth import client as oauth

__all__ = [
    "CALENDAR_EVENTS_PATH",
    "RESOURCE",
    "USERS",
    "AuthorizationServer",
    "AuthorizationServerError",
    "Authorized",
    "ConsentFormError",
    "FaultSpec",
    "HttpResponse",
    "http_request",
]

SERVER_SCRIPT = Path(__file__).resolve().parent / "provider" / "server.mjs"
REPO_ROOT = Path(__file__).resolve().parents[2]

RESOURCE = "https://api.agent-vault.test/"
"""The resource indicator of the calendar API (scopes calendar.read calendar.write mail.read)."""
VAULT_CLIENT_ID = "agent-vault"
VAULT_POST_CLIENT_ID = "agent-vault-post"
VAULT_SHORT_CLIENT_ID = "agent-vault-short"
M2M_CLIENT_ID = "agent-vault-m2m"
M2M_JWT_CLIENT_ID = "agent-vault-m2m-jwt"
"""A vault client whose access tokens live ``short_access_token_ttl`` seconds (default 20)."""
APP_CLIENT_ID = "agent-app"
CALENDAR_CLIENT_ID = "calendar-api"
USERS: Mapping[str, str] = {"alice": "alice-password", "bob": "bob-password"}
"""The server's users and their passwords (test fixtures, not secrets)."""

DEFAULT_REDIRECT_URIS = ("http://127.0.0.1/v1/oauth/callback",)
DEFAULT_APP_REDIRECT_URIS = ("http://127.0.0.1/app/callback",)
_STDERR_LINES = 200
KEYED_EVENTS_PATH = "keyed/events"
"""The keyed API's route (an API-key resource, flow 12), relative to ``calendar_api_base``."""
CALENDAR_EVENTS_PATH = "/calendar/events"
"""The calendar API's one route, relative to its base URL (``calendar_api_base``)."""
DPoPNoncePlace = Literal["token", "api"]


class AuthorizationServerError(RuntimeError):
    """The server could not start, died, or answered a helper call unexpectedly."""


class FaultSpec(TypedDict, total=False):
    """A fault for the next ``remaining`` calls of an endpoint (see ``set_faults``)."""

    status: int | None
    """Answer this HTTP status without processing the request (None: process after the delay)."""
    delay_ms: int
    """Stall this long first (a caller that gives up meanwhile is dropped unprocessed)."""
    lose_answer: bool
    """Process the request, then close the connection without an answer (no status, no delay)."""
    remaining: int
    """How many calls the fault applies to (default 1)."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Authorized:
    """Where a consent ended: the redirect's parameters, and what the client kept to redeem it."""

    callback_url: str
    params: dict[str, str]
    state: str
    code_verifier: str
    redirect_uri: str
    client_id: str

    @property
    def code(self) -> str:
        return self.params["code"]


class _PassThrough(urllib.request.HTTPErrorProcessor):
    """Return every response as it is: no redirects followed, no exception for 4xx/5xx."""

    def http_response(self, request: urllib.request.Request, response: Any) -> Any:
        return response

    https_response = http_response


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _PassThrough())


def http_request(
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    basic_auth: tuple[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """One HTTP request with urllib: no proxy, no redirects followed, any status returned."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("only http(s) URLs")
    data: bytes | None = None
    request_headers = {"Accept": "application/json", **(headers or {})}
    if form is not None:
        pairs = list(form.items()) if isinstance(form, Mapping) else list(form)
        data = urllib.parse.urlencode(pairs).encode("ascii")
        request_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif json_body is not None:
        data = json.dumps(json_body).encode("utf-8")
        request_headers.setdefault("Content-Type", "application/json")
    if basic_auth is not None:
        user, password = (urllib.parse.quote(part, safe="") for part in basic_auth)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request_headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=data, headers=request_headers, method=method)  # noqa: S310
    with _OPENER.open(request, timeout=timeout) as response:
        return HttpResponse(int(response.status), response.headers, response.read())


class AuthorizationServer:
    """oidc-provider on loopback, as a context manager: ``with AuthorizationServer() as server:``.

    ``port=0`` (the default) lets the server bind any free port itself and report it, so there is
    no window in which another process could take a port chosen in advance.
    """

    def __init__(
        self,
        *,
        redirect_uris: Iterable[str] = DEFAULT_REDIRECT_URIS,
        app_redirect_uris: Iterable[str] = DEFAULT_APP_REDIRECT_URIS,
        client_secret: str | None = None,
        app_client_secret: str | None = None,
        calendar_api_secret: str | None = None,
        access_token_ttl: int | None = None,
        short_access_token_ttl: int | None = None,
        id_token_ttl: int | None = None,
        refresh_token_ttl: int | None = None,
        rotate_refresh_token: bool = True,
        dpop_nonce: Iterable[DPoPNoncePlace] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        node: str | None = None,
        node_modules: str | Path | None = None,
        startup_timeout: float = 20.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.redirect_uris = tuple(redirect_uris)
        self.app_redirect_uris = tuple(app_redirect_uris)
        if not self.redirect_uris or not self.app_redirect_uris:
            raise ValueError("redirect_uris and app_redirect_uris need at least one URI each")
        for uri in (*self.redirect_uris, *self.app_redirect_uris):
            if "," in uri:
                raise ValueError(f"a redirect URI may not contain a comma: {uri!r}")
        self.client_secret = client_secret or secrets.token_urlsafe(32)
        self.app_client_secret = app_client_secret or secrets.token_urlsafe(32)
        self.calendar_api_secret = calendar_api_secret or secrets.token_urlsafe(32)
        self._m2m_key = ECKey.generate_key("P-256", private=True)
        self._ttls = {
            "ACCESS_TOKEN_TTL": access_token_ttl,
            "SHORT_ACCESS_TOKEN_TTL": short_access_token_ttl,
            "ID_TOKEN_TTL": id_token_ttl,
            "REFRESH_TOKEN_TTL": refresh_token_ttl,
        }
        self._rotate = rotate_refresh_token
        self._dpop_nonce = tuple(dpop_nonce)
        unknown = set(self._dpop_nonce) - {"token", "api"}
        if unknown:
            raise ValueError(f"dpop_nonce takes 'token' and 'api', not {sorted(unknown)}")
        self._host = host
        self._port = port
        self._node = node
        self._node_modules = node_modules
        self._startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._issuer: str | None = None
        self._bound_port: int | None = None
        self._metadata: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once it listens (raises ``AuthorizationServerError``)."""
        if self._process is not None:
            raise AuthorizationServerError("the authorization server is already started")
        node = self._node or os.environ.get("AGENT_VAULT_NODE") or shutil.which("node")
        if not node:
            raise AuthorizationServerError("Node.js ('node') is not on PATH; install Node 20+")
        env = {
            **os.environ,
            "PORT": str(self._port),
            "HOST": self._host,
            "REDIRECT_URIS": ",".join(self.redirect_uris),
            "APP_REDIRECT_URIS": ",".join(self.app_redirect_uris),
            "CLIENT_SECRET": self.client_secret,
            "APP_CLIENT_SECRET": self.app_client_secret,
            "CALENDAR_API_SECRET": self.calendar_api_secret,
            "M2M_CLIENT_JWKS": json.dumps({"keys": [self._m2m_key.as_dict(private=False)]}),
            "ROTATE_REFRESH_TOKEN": "1" if self._rotate else "0",
            "DPOP_NONCE": ",".join(self._dpop_nonce),
            "EXIT_WITH_STDIN": "1",  # the server exits if this process dies without stop()
        }
        env.pop("ISSUER", None)
        env.pop("DEBUG", None)  # oidc-provider's debug output could print request details
        for name, value in self._ttls.items():
            if value is not None:
                env[name] = str(int(value))
        node_modules = self._node_modules or os.environ.get("AGENT_VAULT_NODE_MODULES")
        if node_modules:
            env["NODE_MODULES_DIR"] = str(Path(node_modules).resolve())
        else:
            env.pop("NODE_MODULES_DIR", None)
        cwd = REPO_ROOT if (REPO_ROOT / "package.json").is_file() else SERVER_SCRIPT.parent

        process = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)  # nosec B603
            [node, str(SERVER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        self._process = process
        assert process.stdout is not None and process.stderr is not None
        lines: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(
                target=self._read_stdout,
                args=(process.stdout, lines),
                daemon=True,
                name="authorization-server-stdout",
            ),
            threading.Thread(
                target=self._read_stderr,
                args=(process.stderr,),
                daemon=True,
                name="authorization-server-stderr",
            ),
        ]
        for thread in self._threads:
            thread.start()

        try:
            ready = self._wait_ready(lines, time.monotonic() + self._startup_timeout)
            self._issuer = str(ready["issuer"])
            self._bound_port = int(ready["port"])
            self._metadata = self._get_json(self.discovery_url)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, lines: queue.Queue[str | None], deadline: float) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AuthorizationServerError(
                    f"the authorization server did not report READY within "
                    f"{self._startup_timeout:g} s\n{self.stderr_tail()}"
                )
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                assert self._process is not None
                code = self._process.wait()
                for thread in self._threads:
                    thread.join(timeout=2)
                raise AuthorizationServerError(
                    f"the authorization server exited with code {code} before it was ready\n"
                    f"{self.stderr_tail()}"
                )
            if line.startswith("READY "):
                ready = json.loads(line[len("READY ") :])
                if not isinstance(ready, dict):
                    raise AuthorizationServerError("malformed READY line")
                return ready

    @staticmethod
    def _read_stdout(pipe: IO[bytes], lines: queue.Queue[str | None]) -> None:
        ready = False
        try:
            for raw in pipe:
                if not ready:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    lines.put(line)
                    ready = line.startswith("READY ")
                # after READY the server prints nothing; anything else is drained and dropped
        except (OSError, ValueError):
            pass
        finally:
            lines.put(None)

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        try:
            for raw in pipe:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr (oidc-provider notices, our errors)."""
        return "\n".join(self._stderr)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and release its pipes."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout)
        finally:
            for thread in self._threads:
                thread.join(timeout=timeout)
            self._threads = []
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()

    # -- where things are ----------------------------------------------------------------------

    def _require_started(self) -> str:
        if self._issuer is None:
            raise AuthorizationServerError("the authorization server is not started")
        return self._issuer

    @property
    def issuer(self) -> str:
        return self._require_started()

    @property
    def port(self) -> int:
        self._require_started()
        assert self._bound_port is not None
        return self._bound_port

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def metadata(self) -> dict[str, Any]:
        """The discovery document, as read at start."""
        self._require_started()
        return dict(self._metadata)

    def _endpoint(self, name: str) -> str:
        self._require_started()
        return str(self._metadata[name])

    @property
    def authorization_endpoint(self) -> str:
        return self._endpoint("authorization_endpoint")

    @property
    def jwks_uri(self) -> str:
        return self._endpoint("jwks_uri")

    @property
    def token_endpoint(self) -> str:
        return self._endpoint("token_endpoint")

    @property
    def revocation_endpoint(self) -> str:
        return self._endpoint("revocation_endpoint")

    @property
    def introspection_endpoint(self) -> str:
        return self._endpoint("introspection_endpoint")

    @property
    def calendar_api_base(self) -> str:
        """The calendar API's base URL (the provider's ``api_base_urls`` in the vault config)."""
        return f"{self.issuer}/api"

    @property
    def calendar_url(self) -> str:
        """The protected resource: GET with ``Authorization: Bearer <token>``."""
        return f"{self.calendar_api_base}/calendar/events"

    @property
    def resource(self) -> str:
        return RESOURCE

    @property
    def client_id(self) -> str:
        """The vault's client (client_secret_basic); ``post_client_id`` uses client_secret_post."""
        return VAULT_CLIENT_ID

    @property
    def post_client_id(self) -> str:
        return VAULT_POST_CLIENT_ID

    @property
    def m2m_client_id(self) -> str:
        """The vault's machine client (client_credentials, client_secret_basic, the same
        secret as ``client_id``)."""
        return M2M_CLIENT_ID

    @property
    def m2m_jwt_client_id(self) -> str:
        """The vault's machine client that authenticates with ``private_key_jwt``."""
        return M2M_JWT_CLIENT_ID

    @property
    def m2m_private_jwk(self) -> str:
        """The private JWK (JSON) of ``m2m_jwt_client_id``: what the vault keeps in Secrets
        Manager as that provider's secret."""
        return json.dumps(self._m2m_key.as_dict(private=True))

    @property
    def short_lived_client_id(self) -> str:
        """A vault client (client_secret_basic) whose access tokens live less than a minute."""
        return VAULT_SHORT_CLIENT_ID

    @property
    def app_client_id(self) -> str:
        return APP_CLIENT_ID

    @property
    def calendar_client_id(self) -> str:
        return CALENDAR_CLIENT_ID

    def _secret_of(self, client_id: str) -> str:
        secrets_by_client = {
            VAULT_CLIENT_ID: self.client_secret,
            VAULT_POST_CLIENT_ID: self.client_secret,
            VAULT_SHORT_CLIENT_ID: self.client_secret,
            M2M_CLIENT_ID: self.client_secret,
            APP_CLIENT_ID: self.app_client_secret,
            CALENDAR_CLIENT_ID: self.calendar_api_secret,
        }
        if client_id not in secrets_by_client:
            raise ValueError(f"unknown client {client_id!r}")
        return secrets_by_client[client_id]

    # -- plain HTTP helpers --------------------------------------------------------------------

    def _get_json(self, url: str) -> dict[str, Any]:
        response = http_request("GET", url, timeout=self.request_timeout)
        if response.status != 200:
            path = urllib.parse.urlsplit(url).path
            raise AuthorizationServerError(f"GET {path}: {response.status}")
        body = response.json()
        if not isinstance(body, dict):
            raise AuthorizationServerError("expected a JSON object")
        return body

    def _post_test_hook(self, path: str, body: Any) -> Any:
        response = http_request(
            "POST", f"{self.issuer}{path}", json_body=body, timeout=self.request_timeout
        )
        if response.status != 200:
            detail = response.body[:200].decode("utf-8", "replace")
            raise AuthorizationServerError(f"POST {path}: {response.status} {detail}")
        return response.json()

    def client_request(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        client_id: str = VAULT_CLIENT_ID,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """POST ``form`` to a provider endpoint, authenticated as ``client_id`` its registered way
        (``agent-vault-post`` in the body, every other client with HTTP Basic)."""
        secret = self._secret_of(client_id)
        if client_id == VAULT_POST_CLIENT_ID:
            return http_request(
                "POST",
                url,
                form={**form, "client_id": client_id, "client_secret": secret},
                headers=headers,
                timeout=self.request_timeout,
            )
        return http_request(
            "POST",
            url,
            form=form,
            basic_auth=(client_id, secret),
            headers=headers,
            timeout=self.request_timeout,
        )

    def token_request(
        self,
        form: Mapping[str, str],
        *,
        client_id: str = VAULT_CLIENT_ID,
        dpop: str | None = None,
    ) -> HttpResponse:
        """POST to the token endpoint as ``client_id``; any status is returned. ``dpop`` is a
        DPoP proof (RFC 9449) for the token endpoint: the access token is bound to its key."""
        headers = {"DPoP": dpop} if dpop is not None else None
        return self.client_request(self.token_endpoint, form, client_id=client_id, headers=headers)

    def revoke(
        self,
        token: str,
        *,
        token_type_hint: Literal["access_token", "refresh_token"] | None = None,
        client_id: str = VAULT_CLIENT_ID,
    ) -> int:
        """RFC 7009 revocation as ``client_id``; returns the HTTP status (200 on success)."""
        form = {"token": token}
        if token_type_hint:
            form["token_type_hint"] = token_type_hint
        return self.client_request(self.revocation_endpoint, form, client_id=client_id).status

    def introspect(self, token: str, *, client_id: str = CALENDAR_CLIENT_ID) -> dict[str, Any]:
        """RFC 7662 introspection, by default as the resource server (``calendar-api``), which
        sees access tokens for the calendar resource; other clients see only their own tokens."""
        response = self.client_request(
            self.introspection_endpoint, {"token": token}, client_id=client_id
        )
        if response.status != 200:
            raise AuthorizationServerError(f"introspection answered {response.status}")
        body = response.json()
        if not isinstance(body, dict):
            raise AuthorizationServerError("introspection did not answer a JSON object")
        return body

    def calendar(self, access_token: str, *, dpop: str | None = None) -> tuple[int, Any]:
        """GET the protected calendar API: (status, JSON body). With a bearer token, or with
        ``dpop`` (a proof for ``GET calendar_url`` with the token's ``ath``) as a DPoP token."""
        headers = {"Authorization": f"Bearer {access_token}"}
        if dpop is not None:
            headers = {"Authorization": f"DPoP {access_token}", "DPoP": dpop}
        response = self.calendar_response(headers)
        return response.status, (response.json() if response.body else None)

    def calendar_response(self, headers: Mapping[str, str]) -> HttpResponse:
        """GET the calendar API with exactly these headers; the whole answer (status, headers
        such as ``WWW-Authenticate`` and ``DPoP-Nonce``, body)."""
        return http_request("GET", self.calendar_url, headers=headers, timeout=self.request_timeout)

    # -- test hooks of this provider setup (loopback only) -------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset: ``token_requests`` (every call reaching the token
        endpoint, by grant type, faulted ones included), ``token_successes``, ``grant_errors``
        (last 50), ``grants_revoked``, ``revocations`` (answered 200), ``introspections``
        (answered 200, the calendar API's own included), ``faults_injected``,
        ``dropped_requests`` (stalled calls whose caller gave up: never processed, not counted in
        ``token_requests``), ``lost_answers`` (processed calls whose answer was withheld),
        ``api_requests`` (calendar API calls answered 200, by scheme: ``bearer``, ``dpop``),
        ``api_refusals`` (the calendar API's 401/403 answers, by error code), ``keyed_requests``
        and ``keyed_refusals`` (the keyed API's 200 answers; its 401s by error code)."""
        return self._get_json(f"{self.issuer}/__test/stats")

    def reset_stats(self) -> None:
        self._post_test_hook("/__test/stats/reset", {})

    def set_faults(
        self,
        *,
        token_endpoint: FaultSpec | None = None,
        revocation_endpoint: FaultSpec | None = None,
    ) -> None:
        """Make the next calls of an endpoint fail or stall; replaces any faults set before.

        ``set_faults(token_endpoint={"status": 503})`` answers the next token call with 503;
        ``{"delay_ms": 3000}`` stalls it (a caller that times out meanwhile is dropped without the
        request being processed); ``{"lose_answer": True}`` processes it and closes the connection
        without an answer; ``"remaining": n`` applies it to n calls.
        """
        body: dict[str, Any] = {}
        if token_endpoint is not None:
            body["token_endpoint"] = dict(token_endpoint)
        if revocation_endpoint is not None:
            body["revocation_endpoint"] = dict(revocation_endpoint)
        self._post_test_hook("/__test/faults", body)

    def clear_faults(self) -> None:
        self._post_test_hook("/__test/faults", {})

    def require_dpop_nonce(self, *, token: bool | None = None, api: bool | None = None) -> None:
        """Make the token endpoint (``token``) or the calendar API (``api``) demand a DPoP nonce
        (answer ``use_dpop_nonce`` with a ``DPoP-Nonce`` header to a proof without a valid one),
        or stop demanding it; None leaves that place as it is."""
        demand = {
            name: value for name, value in (("token", token), ("api", api)) if value is not None
        }
        self._post_test_hook("/__test/dpop", {"require_nonce": demand})

    def set_api_keys(self, keys: Mapping[str, str]) -> None:
        """The keys the keyed API (``keyed_url``) accepts, by label; replaces those set before.
        It answers 200 with the label of the key it got (``key``) and where (``via``: ``header``
        for X-Api-Key, ``authorization`` for a bearer, ``query`` for ``api_key``), else 401."""
        self._post_test_hook("/__test/api-keys", {"keys": dict(keys)})

    @property
    def keyed_url(self) -> str:
        """The keyed API's one route (``keyed/events`` under ``calendar_api_base``)."""
        return f"{self.calendar_api_base}/{KEYED_EVENTS_PATH}"

    def dpop_nonce_demands(self) -> dict[str, bool]:
        """Where a DPoP nonce is demanded now: ``{"token": bool, "api": bool}``."""
        demands = self._get_json(f"{self.issuer}/__test/dpop")["require_nonce"]
        return {str(name): bool(value) for name, value in dict(demands).items()}

    # -- flows -----------------------------------------------------------------------------------

    def authorization_url(
        self,
        *,
        scope: str,
        state: str,
        code_challenge: str,
        client_id: str = VAULT_CLIENT_ID,
        redirect_uri: str | None = None,
        resource: str | None = RESOURCE,
        prompt: str | None = "consent",
        nonce: str | None = None,
    ) -> str:
        """An authorization code request URL with PKCE S256."""
        if redirect_uri is None:
            uris = self.app_redirect_uris if client_id == APP_CLIENT_ID else self.redirect_uris
            redirect_uri = uris[0]
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if resource:
            params["resource"] = resource
        if prompt:
            params["prompt"] = prompt
        if nonce:
            params["nonce"] = nonce
        return f"{self.authorization_endpoint}?{urllib.parse.urlencode(params)}"

    def authorize(
        self,
        username: str,
        password: str,
        *,
        scope: str = "openid offline_access calendar.read calendar.write",
        decision: Literal["allow", "deny"] = "allow",
        client_id: str = VAULT_CLIENT_ID,
        redirect_uri: str | None = None,
        resource: str | None = RESOURCE,
        prompt: str | None = "consent",
    ) -> Authorized:
        """Run the browser's part of an authorization request (login + consent over HTTP) and
        return where the provider redirected, with the state and verifier to redeem the code."""
        verifier = oauth.new_code_verifier()
        challenge = oauth.code_challenge(verifier)
        state = secrets.token_urlsafe(24)
        url = self.authorization_url(
            scope=scope,
            state=state,
            code_challenge=challenge,
            client_id=client_id,
            redirect_uri=redirect_uri,
            resource=resource,
            prompt=prompt,
        )
        callback = complete_consent(url, username, password, decision, timeout=self.request_timeout)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)
        params = {key: values[0] for key, values in query.items()}
        used_redirect = _url_param(url, "redirect_uri")
        return Authorized(callback, params, state, verifier, used_redirect, client_id)

    def login_id_token(self, username: str, password: str) -> str:
        """Log ``username`` in to ``agent-app`` with a real code + PKCE flow (scope ``openid``)
        and return the ID token: how a test gets a user's identity JWT for the vault."""
        verifier = oauth.new_code_verifier()
        challenge = oauth.code_challenge(verifier)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        redirect_uri = self.app_redirect_uris[0]
        url = self.authorization_url(
            scope="openid",
            state=state,
            code_challenge=challenge,
            client_id=APP_CLIENT_ID,
            redirect_uri=redirect_uri,
            resource=None,
            prompt=None,
            nonce=nonce,
        )
        callback = complete_consent(url, username, password, "allow", timeout=self.request_timeout)
        params = {
            k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query).items()
        }
        if "error" in params:
            raise AuthorizationServerError(f"login refused: {params['error']}")
        if params.get("state") != state or params.get("iss") != self.issuer:
            raise AuthorizationServerError("the login redirect has a wrong state or iss")
        response = self.token_request(
            {
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            client_id=APP_CLIENT_ID,
        )
        body = response.json()
        if response.status != 200 or "id_token" not in body:
            raise AuthorizationServerError(
                f"the ID token request failed: {response.status} {body.get('error')}"
            )
        id_token = str(body["id_token"])
        try:  # NOT verified: only to compare the nonce we just sent
            _, claims = jsondoc.unverified_jws(id_token)
        except ValueError as exc:
            raise AuthorizationServerError("the ID token is not a compact JWS") from exc
        if not isinstance(claims, dict) or claims.get("nonce") != nonce:
            raise AuthorizationServerError("the ID token carries another nonce")
        return id_token


def _url_param(url: str, name: str) -> str:
    """The first value of query parameter ``name`` of ``url`` ('' if absent)."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get(name)
    return values[0] if values else ""
