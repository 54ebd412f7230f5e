"""A local stand-in for the vault's API Gateway HTTP API.

It plays API Gateway's part honestly:

* routes with the one route table (:mod:`vault.routes`); an unknown route is 404
  ``{"message": "Not Found"}``, before any authorization, as API Gateway does;
* on IAM routes it **verifies the SigV4 signature** of every request: it recomputes the signature
  with botocore over the same canonical request for the secret of the access key the request names
  (compared with :func:`hmac.compare_digest`), checks the session token, the credential scope
  (date, region, ``execute-api``), the payload hash and that ``X-Amz-Date`` is within 5 minutes,
  and refuses anything else with API Gateway's 403 messages; the public callback route is not
  checked;
* it builds the HTTP API payload v2.0 event API Gateway would send
  (:func:`agent_vault_local.events.build_event`, the one event builder), with
  ``requestContext.authorizer.iam`` filled from the principal it verified (never from anything
  the caller claims), invokes the function with a Lambda-like context, and writes the handler's
  answer (status, headers, cookies, body, base64) back. In local mode the handler it is given
  runs each event in a container of its own, one request at a time
  (:mod:`agent_vault_local.containers`); unit tests may hand it plain callables.

It signs nothing itself and holds no secret but the local principals' own.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from agent_vault_local.credentials import LocalPrincipal, PrincipalRegistry
from agent_vault_local.events import (
    DEFAULT_ACCOUNT,
    Handler,
    LambdaContext,
    build_event,
    function_url_event,
    resolve_handler,
)
from vault.routes import ROUTES, Route, match_route

__all__ = [
    "GatewayRefusal",
    "LocalApiGateway",
    "LocalApiServer",
    "LocalLambdaService",
    "SigV4Verifier",
    "serve",
]

log = logging.getLogger("agent_vault_local.adapter")

SERVICE = "execute-api"
MAX_SKEW_SECONDS = 300
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API's limit
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_AUTH_HEADER = re.compile(r"^AWS4-HMAC-SHA256\s+(?P<params>.+)$")


SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your"
    " AWS Secret Access Key and signing method. Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."  # noqa: S105  # nosec B105


class GatewayRefusal(Exception):
    """API Gateway answers ``status`` with ``{"message": message}`` without calling the vault."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Headers = Sequence[tuple[str, str]]


def _header_map(headers: Headers) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    return found


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminal: str
    signed_headers: tuple[str, ...]
    signature: str


def _parse_authorization(value: str) -> _Authorization:
    match = _AUTH_HEADER.match(value.strip())
    if match is None:
        raise GatewayRefusal(403, "Forbidden")
    params: dict[str, str] = {}
    for part in match.group("params").split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            params[key.strip()] = val.strip()
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if p not in params]
    if missing:
        raise GatewayRefusal(
            403,
            " ".join(f"Authorization header requires '{p}' parameter." for p in missing)
            + f" Authorization={value.split(' ', 1)[0]}",
        )
    scope = params["Credential"].split("/")
    if len(scope) != 5:
        raise GatewayRefusal(403, "Credential should be scoped to a valid region.")
    signed = tuple(params["SignedHeaders"].split(";"))
    return _Authorization(
        scope[0], scope[1], scope[2], scope[3], scope[4], signed, params["Signature"].lower()
    )


class SigV4Verifier:
    """Checks SigV4 signatures for ``execute-api`` against the local principals' secrets."""

    def __init__(
        self,
        registry: PrincipalRegistry,
        *,
        region: str,
        service: str = SERVICE,
        max_skew: float = MAX_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.region = region
        self.service = service
        self.max_skew = max_skew
        self.clock = clock

    def verify(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Headers,
        body: bytes,
    ) -> LocalPrincipal:
        """The principal that signed this request, or :class:`GatewayRefusal` (403)."""
        by_name = _header_map(headers)
        auth_values = by_name.get("authorization")
        if not auth_values:
            raise GatewayRefusal(403, "Forbidden")
        auth = _parse_authorization(auth_values[0])
        principal = self.registry.by_access_key(auth.access_key_id)
        if principal is None:
            raise GatewayRefusal(403, INVALID_TOKEN)
        amz_date = (by_name.get("x-amz-date") or [""])[0]
        try:
            signed_at = calendar.timegm(time.strptime(amz_date, SIGV4_TIMESTAMP))
        except ValueError:
            raise GatewayRefusal(
                403,
                "Authorization header requires existence of either a 'X-Amz-Date' or a"
                " 'Date' header.",
            ) from None
        now = self.clock()
        if signed_at < now - self.max_skew:
            raise GatewayRefusal(
                403,
                f"Signature expired: {amz_date} is now earlier than "
                f"{_stamp(now - self.max_skew)} ({_stamp(now)} - 5 min.)",
            )
        if signed_at > now + self.max_skew:
            raise GatewayRefusal(
                403,
                f"Signature not yet current: {amz_date} is still later than "
                f"{_stamp(now + self.max_skew)} ({_stamp(now)} + 5 min.)",
            )
        if auth.date != amz_date[:8]:
            raise GatewayRefusal(
                403,
                "Date in Credential scope does not match YYYYMMDD from"
                " ISO-8601 version of date from HTTP.",
            )
        if auth.region != self.region:
            raise GatewayRefusal(403, "Credential should be scoped to a valid region.")
        if auth.service != self.service:
            raise GatewayRefusal(
                403, f"Credential should be scoped to correct service: '{self.service}'."
            )
        if auth.terminal != "aws4_request":
            raise GatewayRefusal(
                403, "Credential should be scoped with a valid terminator: 'aws4_request'."
            )
        signed = set(auth.signed_headers)
        if "host" not in signed or "x-amz-date" not in signed:
            raise GatewayRefusal(403, SIGNATURE_MISMATCH)
        token = (by_name.get("x-amz-security-token") or [""])[0]
        if not hmac.compare_digest(token.encode(), principal.session_token.encode()):
            raise GatewayRefusal(403, INVALID_TOKEN)
        if "x-amz-security-token" not in signed:
            raise GatewayRefusal(403, SIGNATURE_MISMATCH)
        content_sha = by_name.get("x-amz-content-sha256")
        if content_sha and content_sha[0] != hashlib.sha256(body).hexdigest():
            raise GatewayRefusal(
                400, "The provided 'x-amz-content-sha256' header does not match what was computed."
            )

        if not all(name in by_name for name in auth.signed_headers):
            raise GatewayRefusal(403, SIGNATURE_MISMATCH)
        host = by_name["host"][0]
        url = f"http://{host}{raw_path}" + (f"?{raw_query}" if raw_query else "")
        request = AWSRequest(method=method, url=url, data=body)
        for name in auth.signed_headers:  # exactly the signed headers, repeated ones included
            for value in by_name[name]:
                request.headers[name] = value  # HTTPHeaders appends
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(principal.credentials(), self.service, self.region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise GatewayRefusal(403, SIGNATURE_MISMATCH)
        return principal


def _stamp(epoch: float) -> str:
    return time.strftime(SIGV4_TIMESTAMP, time.gmtime(epoch))


def _trace(exc: Exception) -> str:
    """The traceback to log: the container's when the handler raised in one."""
    return str(getattr(exc, "stack_trace", "") or traceback.format_exc())


@dataclass
class GatewayResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _message(status: int, message: str, request_id: str) -> GatewayResponse:
    body = json.dumps({"message": message}).encode()
    return GatewayResponse(
        status, [("content-type", "application/json"), ("apigw-requestid", request_id)], body
    )


@runtime_checkable
class Gateway(Protocol):
    """What the loopback server serves (`LocalApiGateway`, `LocalFunctionUrl`,
    `LocalLambdaService`): one HTTP request in, its answer out."""

    def handle(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse: ...


class LocalApiGateway:
    """Routing, SigV4 authorization, event building and Lambda invocation (no sockets)."""

    def __init__(
        self,
        registry: PrincipalRegistry,
        *,
        region: str,
        domain_name: str,
        api_account_id: str = DEFAULT_ACCOUNT,
        handlers: Mapping[str, Handler] | None = None,
        resolver: Callable[[str], Handler] = resolve_handler,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = SigV4Verifier(registry, region=region, clock=clock)
        self.region = region
        self.domain_name = domain_name
        self.api_account_id = api_account_id
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._resolver = resolver
        self._lock = threading.Lock()
        self.clock = clock
        self.on_event: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None
        """Observer called with (event, result) after each invocation (for tests and traces)."""

    def handler_for(self, route: Route) -> Handler:
        with self._lock:
            handler = self._handlers.get(route.handler)
            if handler is None:
                handler = self._handlers[route.handler] = self._resolver(route.handler)
            return handler

    def handle(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse:
        """Answer one HTTP request as API Gateway + the vault's Lambda would."""
        request_id = base64.b32encode(secrets.token_bytes(10)).decode().rstrip("=")
        raw_path, _, raw_query = target.partition("?")
        raw_query = raw_query.split("#", 1)[0]
        if len(body) > MAX_PAYLOAD_BYTES:
            return _message(413, "Request Entity Too Large", request_id)
        found = match_route(method, raw_path)
        if found is None:
            return _message(404, "Not Found", request_id)
        route, params = found
        principal: LocalPrincipal | None = None
        if route.auth == "iam":
            try:
                principal = self.verifier.verify(method, raw_path, raw_query, headers, body)
            except GatewayRefusal as refusal:
                log.info("refused %s %s: %s", method, raw_path, refusal.message)
                return _message(refusal.status, refusal.message, request_id)
        event = build_event(
            method,
            raw_path,
            domain_name=self.domain_name,
            route=route,
            path_parameters=params,
            query=raw_query,
            headers=headers,
            body=body,
            principal=principal,
            source_ip=source_ip,
            account_id=self.api_account_id,
            request_id=request_id,
            now=self.clock(),
        )
        context = LambdaContext(
            function_name=f"agent-vault-{route.function}",
            region=self.region,
            account_id=self.api_account_id,
        )
        try:
            result = self.handler_for(route)(event, context)
        except Exception as exc:
            log.error("the %s handler raised:\n%s", route.function, _trace(exc))
            if self.on_event is not None:
                self.on_event(event, None)
            return _message(500, "Internal Server Error", request_id)
        if self.on_event is not None:
            self.on_event(event, result if isinstance(result, dict) else {"result": result})
        return self._response(result, request_id)

    @staticmethod
    def _response(result: Any, request_id: str) -> GatewayResponse:
        if not isinstance(result, dict) or "statusCode" not in result:
            # API Gateway's inference for payload 2.0: anything else is a JSON 200 body.
            text = result if isinstance(result, str) else json.dumps(result)
            return GatewayResponse(
                200,
                [("content-type", "application/json"), ("apigw-requestid", request_id)],
                text.encode(),
            )
        status = int(result["statusCode"])
        headers: list[tuple[str, str]] = []
        for name, value in (result.get("headers") or {}).items():
            headers.append((str(name), str(value)))
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((str(name), str(v)) for v in values)
        for cookie in result.get("cookies") or []:
            headers.append(("set-cookie", str(cookie)))
        headers.append(("apigw-requestid", request_id))
        raw = result.get("body")
        if raw is None:
            body = b""
        elif result.get("isBase64Encoded"):
            try:
                body = base64.b64decode(str(raw))
            except binascii.Error:
                log.error("the handler returned isBase64Encoded with a body that is not base64")
                return _message(500, "Internal Server Error", request_id)
        else:
            body = str(raw).encode("utf-8")
        if not any(n.lower() == "content-type" for n, _ in headers) and body:
            headers.append(("content-type", "application/json"))
        return GatewayResponse(status, headers, body)


FUNCTION_URL_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous request limit


class LocalFunctionUrl:
    """One function's own URL with `AuthType: AWS_IAM` (`agent_endpoint: "function_url"`, as
    `stacks/constructs/agent_function_urls.py` deploys it): SigV4 for the service `lambda`, by a
    principal whose role the URL's resource policy names (the agents' roles; any other signer
    gets Lambda's 403), the function URL's event (no route, no path parameters: the function
    routes by method and raw path), the one function whatever the path."""

    def __init__(
        self,
        registry: PrincipalRegistry,
        handler: str,
        *,
        allowed_roles: Sequence[str],
        region: str,
        domain_name: str,
        account_id: str = DEFAULT_ACCOUNT,
        resolver: Callable[[str], Handler] = resolve_handler,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = SigV4Verifier(registry, region=region, service="lambda", clock=clock)
        self.handler = handler
        # its name as the API Gateway's invocations give it (`agent-vault-<route.function>`)
        self.function_name = next(
            f"agent-vault-{r.function}" for r in ROUTES if r.handler == handler
        )
        self.allowed_roles = frozenset(allowed_roles)
        self.region = region
        self.domain_name = domain_name
        self.account_id = account_id
        self._resolver = resolver
        self.clock = clock

    def handle(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse:
        request_id = str(uuid.uuid4())
        raw_path, _, raw_query = target.partition("?")
        raw_query = raw_query.split("#", 1)[0]
        if len(body) > FUNCTION_URL_MAX_PAYLOAD_BYTES:
            return _message(413, "Request Entity Too Large", request_id)
        try:
            principal = self.verifier.verify(method, raw_path, raw_query, headers, body)
        except GatewayRefusal as refusal:
            return _message(refusal.status, refusal.message, request_id)
        if principal.role_name not in self.allowed_roles:
            return _message(403, "Forbidden", request_id)
        event = function_url_event(
            method,
            raw_path,
            domain_name=self.domain_name,
            query=raw_query,
            headers=headers,
            body=body,
            principal=principal,
            source_ip=source_ip,
            account_id=self.account_id,
            request_id=request_id,
            now=self.clock(),
        )
        context = LambdaContext(
            function_name=self.function_name,
            aws_request_id=request_id,
            region=self.region,
            account_id=self.account_id,
        )
        try:
            result = self._resolver(self.handler)(event, context)
        except Exception as exc:
            log.error("the %s handler raised:\n%s", self.handler, _trace(exc))
            return _message(502, "Internal Server Error", request_id)
        return LocalApiGateway._response(result, request_id)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agent-vault-local-apigw"
    sys_version = ""
    gateway: Gateway  # set per server

    def _dispatch(self) -> None:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(
                GatewayResponse(
                    411, [("content-type", "application/json")], b'{"message":"Length Required"}'
                )
            )
            return
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            length = -1
        if length < 0 or length > MAX_PAYLOAD_BYTES:
            self._send(
                GatewayResponse(
                    413,
                    [("content-type", "application/json")],
                    b'{"message":"Request Entity Too Large"}',
                )
            )
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        response = self.gateway.handle(
            self.command,
            self.path,
            list(self.headers.items()),
            body,
            source_ip=self.client_address[0],
        )
        self._send(response)

    def _send(self, response: GatewayResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class LocalApiServer:
    """The local API Gateway on a loopback socket (``ThreadingHTTPServer`` in a thread).

    ``sock`` may be a socket already bound (so the URL is known before the vault is wired).
    """

    def __init__(
        self,
        gateway_factory: Callable[[str], Gateway] | Gateway,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        if sock is None:
            sock = socket.create_server((host, port))
        self._sock = sock
        bound_host, bound_port = sock.getsockname()[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)
        self.url = f"http://{self.host}:{self.port}"
        self.gateway = (
            gateway_factory
            if isinstance(gateway_factory, Gateway)
            else gateway_factory(f"{self.host}:{self.port}")
        )
        handler_cls = type("BoundRequestHandler", (_RequestHandler,), {"gateway": self.gateway})
        self._server = ThreadingHTTPServer(
            (self.host, self.port), handler_cls, bind_and_activate=False
        )
        self._server.socket.close()
        self._server.socket = sock
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def start(self) -> LocalApiServer:
        self._sock.listen(64)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # what a stop waits (socketserver's default: 0.5 s)
            name="local-apigw",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[A-Za-z0-9_:.$-]{1,140})/invocations$")


class LocalLambdaService:
    """The Lambda ``Invoke`` API for the vault's non-HTTP functions (the reaper), so the local
    EventBridge stand-in delivers events the way EventBridge does: a signed ``Invoke`` call.

    ``boto3.client("lambda", endpoint_url=<url>).invoke(FunctionName="agent-vault-reaper",
    Payload=json.dumps(event))`` works against it with the credentials of an allowed principal.
    """

    def __init__(
        self,
        registry: PrincipalRegistry,
        functions: Mapping[str, str],
        *,
        region: str,
        account_id: str = DEFAULT_ACCOUNT,
        resolver: Callable[[str], Handler] = resolve_handler,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = SigV4Verifier(registry, region=region, service="lambda", clock=clock)
        self.functions = dict(functions)
        self.region = region
        self.account_id = account_id
        self._resolver = resolver

    def handle(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse:
        request_id = str(uuid.uuid4())
        raw_path, _, raw_query = target.partition("?")
        match = _INVOKE_PATH.match(raw_path)
        if method != "POST" or match is None:
            return _message(404, "Not Found", request_id)
        try:
            self.verifier.verify(method, raw_path, raw_query, headers, body)
        except GatewayRefusal as refusal:
            return _message(refusal.status, refusal.message, request_id)
        name = unquote(match["name"]).rsplit(":", 1)[-1]
        dotted = self.functions.get(name)
        if dotted is None:
            return GatewayResponse(
                404,
                [
                    ("content-type", "application/json"),
                    ("x-amzn-errortype", "ResourceNotFoundException"),
                ],
                json.dumps({"Type": "User", "message": f"Function not found: {name}"}).encode(),
            )
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return GatewayResponse(
                400,
                [
                    ("content-type", "application/json"),
                    ("x-amzn-errortype", "InvalidRequestContentException"),
                ],
                b'{"Type":"User","message":"Could not parse request body"}',
            )
        context = LambdaContext(
            function_name=name,
            aws_request_id=request_id,
            region=self.region,
            account_id=self.account_id,
        )
        base = [
            ("content-type", "application/json"),
            ("x-amz-executed-version", "$LATEST"),
            ("x-amzn-requestid", request_id),
        ]
        try:
            result = self._resolver(dotted)(event, context)
        except Exception as exc:
            log.error("function %s raised:\n%s", name, _trace(exc))
            payload = {
                "errorMessage": str(exc),
                "errorType": getattr(exc, "error_type", type(exc).__name__),
            }
            return GatewayResponse(
                200, [*base, ("x-amz-function-error", "Unhandled")], json.dumps(payload).encode()
            )
        invocation_type = _header_map(headers).get("x-amz-invocation-type", ["RequestResponse"])
        if invocation_type[0] == "Event":
            return GatewayResponse(202, base, b"")
        return GatewayResponse(200, base, json.dumps(result).encode())


def serve(
    service: Gateway,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
) -> LocalApiServer:
    """A started loopback HTTP server for a gateway or the Lambda service."""
    return LocalApiServer(service, host=host, port=port, sock=sock).start()
