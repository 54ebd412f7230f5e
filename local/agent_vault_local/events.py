"""What API Gateway and the Lambda runtime hand the vault's handlers, built in one place.

* :func:`build_event`: the API Gateway HTTP API payload 2.0 event of one request (IAM
  authorization: ``requestContext.authorizer.iam`` from the principal that signed it);
* :class:`LambdaContext`: the ``context`` argument (the attributes Powertools reads);
* :func:`resolve_handler`: a Lambda handler setting (``vault.handlers.agent_api.handler``) to
  the function it names.

The local API Gateway (:mod:`agent_vault_local.adapter`), the local containers, the tests
(``tests/support/apigw.py`` only adds the tests' defaults) and the bench all use these. They live
in local mode, not in the service: only a stand-in for API Gateway builds events (the service
takes them), so the Lambda bundle carries nothing that only tests and local mode need.

It imports nothing of the vault (the containers' init process imports it before the vault).
"""

from __future__ import annotations

import base64
import datetime
import importlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode

if TYPE_CHECKING:
    from vault.routes import Route

__all__ = [
    "DEFAULT_ACCOUNT",
    "AssumedRole",
    "Handler",
    "IamPrincipal",
    "LambdaContext",
    "build_event",
    "function_url_event",
    "resolve_handler",
]

DEFAULT_ACCOUNT = "123456789012"  # moto's default account
_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/problem+json",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/javascript",
)

Handler = Callable[[dict[str, Any], Any], Any]


class IamPrincipal(Protocol):
    """Who signed a request, as IAM tells API Gateway (a local principal, or an AssumedRole)."""

    @property
    def access_key_id(self) -> str: ...

    @property
    def account_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def user_arn(self) -> str: ...


@dataclass(frozen=True)
class AssumedRole:
    """A principal known by its ARN (``arn:aws:sts::<account>:assumed-role/<role>/<session>``)."""

    user_arn: str
    account_id: str = DEFAULT_ACCOUNT
    access_key_id: str = "ASIATESTTESTTESTTEST"
    role_id: str = "AROATESTROLEID"

    @property
    def user_id(self) -> str:
        """IAM's ``userId`` of an assumed-role session: ``<role id>:<session name>``."""
        return f"{self.role_id}:{self.user_arn.rsplit('/', 1)[-1]}"


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    function_name: str = "agent-vault"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    timeout_ms: int = 10_000
    region: str = "us-east-1"
    account_id: str = DEFAULT_ACCOUNT
    log_stream_name: str = "local/[$LATEST]local"
    _started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        elapsed = int((time.monotonic() - self._started) * 1000)
        return max(0, self.timeout_ms - elapsed)

    def fields(self) -> dict[str, Any]:
        return {
            "function_name": self.function_name,
            "aws_request_id": self.aws_request_id,
            "function_version": self.function_version,
            "memory_limit_in_mb": self.memory_limit_in_mb,
            "timeout_ms": self.timeout_ms,
            "region": self.region,
            "account_id": self.account_id,
        }


def scheduled_event(rule: str, *, region: str, account: str = DEFAULT_ACCOUNT) -> dict[str, Any]:
    """What an EventBridge schedule delivers to its target function (`Scheduled Event`)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "region": region,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule}"],
        "detail": {},
    }


def resolve_handler(dotted: str) -> Handler:
    """Import ``package.module.function`` (the Lambda handler setting)."""
    module_name, _, attr = dotted.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), attr)
    return handler


def _is_text(content_type: str) -> bool:
    lowered = content_type.lower()
    return any(lowered.startswith(t) for t in _TEXT_TYPES) or lowered.endswith("+json")


def _as_text(body: bytes, content_type: str) -> str | None:
    """The body as API Gateway passes a text content type's (UTF-8), or None: base64."""
    if not _is_text(content_type):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """API Gateway joins repeated headers and query parameters with commas."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def build_event(
    method: str,
    path: str,
    *,
    domain_name: str,
    route: Route | None = None,
    path_parameters: Mapping[str, str] | None = None,
    query: str | Mapping[str, str] = "",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes | str | None = None,
    principal: IamPrincipal | None = None,
    scheme: str = "http",
    source_ip: str = "127.0.0.1",
    account_id: str = DEFAULT_ACCOUNT,
    api_id: str = "local",
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The API Gateway HTTP API payload 2.0 event for one request to ``route`` (None: a route
    the table does not have, API Gateway's ``$default``).

    ``query`` is the raw query string (or a mapping to encode); ``headers`` keep their order and
    repeats (``Cookie`` headers become ``cookies``); ``host``, ``x-forwarded-*`` and the trace id
    are added (a client's own ``x-forwarded-*`` are kept: the vault trusts them no more than
    any header). A ``str`` body is passed as text; a ``bytes`` body as API Gateway passes it: as
    text for a text content type that is UTF-8, else base64 (``isBase64Encoded``). ``path`` is
    the path as sent; the event carries it percent-decoded (``rawPath``, ``http.path``,
    ``pathParameters``), as API Gateway's HTTP API does (`vault.routes.encoded_path`), and the
    query string as sent.
    """
    moment = time.time() if now is None else now
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    cookies: list[str] = []
    plain: list[tuple[str, str]] = []
    for name, value in pairs:
        if name.lower() == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            plain.append((name.lower(), value))
    all_headers = _joined(plain)
    default_port = "443" if scheme == "https" else "80"
    all_headers.setdefault("host", domain_name)
    all_headers.setdefault("x-forwarded-for", source_ip)
    all_headers.setdefault("x-forwarded-proto", scheme)
    all_headers.setdefault(
        "x-forwarded-port", domain_name.rsplit(":", 1)[-1] if ":" in domain_name else default_port
    )
    all_headers["x-amzn-trace-id"] = f"Root=1-{int(moment):08x}-{secrets.token_hex(12)}"

    raw_query = query if isinstance(query, str) else urlencode(query)
    route_key = route.route_key if route is not None else "$default"
    decoded = unquote(path)  # as API Gateway's HTTP API hands over the path (not the query)
    stamp = datetime.datetime.fromtimestamp(moment, tz=datetime.UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": decoded,
        "rawQueryString": raw_query,
        "headers": all_headers,
        "requestContext": {
            "accountId": account_id,
            "apiId": api_id,
            "domainName": domain_name,
            "domainPrefix": domain_name.split(".", 1)[0].split(":", 1)[0],
            "http": {
                "method": method,
                "path": decoded,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": all_headers.get("user-agent", ""),
            },
            "requestId": request_id
            or base64.b32encode(secrets.token_bytes(10)).decode().rstrip("="),
            "routeKey": route_key,
            "stage": "$default",
            "time": stamp.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(moment * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    parameters = _joined(parse_qsl(raw_query, keep_blank_values=True))
    if parameters:
        event["queryStringParameters"] = parameters
    if path_parameters:
        event["pathParameters"] = {k: unquote(v) for k, v in path_parameters.items()}
    if principal is not None:
        event["requestContext"]["authorizer"] = {
            "iam": {
                "accessKey": principal.access_key_id,
                "accountId": principal.account_id,
                "callerId": principal.user_id,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": principal.user_arn,
                "userId": principal.user_id,
            }
        }
    if isinstance(body, str):
        if body:
            event["body"] = body
    elif body:
        text = _as_text(body, all_headers.get("content-type", ""))
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


def function_url_event(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """The event of one request to a function URL with `AuthType: AWS_IAM` (Lambda's "Invoking
    function URLs" request payload): `build_event`'s version 2.0 format and `authorizer.iam`,
    but no route (`routeKey` `$default`), no `pathParameters`, the URL's id (its host's first
    label) as `apiId`, `authentication` null. `kwargs` as `build_event`'s, but `route` and
    `path_parameters`."""
    event = build_event(method, path, **kwargs)
    event["rawPath"] = path  # a function URL hands over the path as sent
    context = event["requestContext"]
    context["http"]["path"] = path
    context.update(
        routeKey="$default",
        apiId=context["domainName"].split(".", 1)[0].split(":", 1)[0],
        authentication=None,
    )
    return event
