"""The vault's HTTP routes, defined once (docs/architecture.md).

The API stack adds exactly these routes to API Gateway, the local adapter routes requests with
them, `vault.openapi` generates docs/openapi.json from them, each HTTP function's router binds its
own of them by route key (`vault.handlers.router`) and the tests read them here. The SDK does not
import this module: the service and the SDK never import each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, unquote

__all__ = ["ROUTES", "Route", "canonical_path", "encoded_path", "match_route"]

AGENT_API = "vault.handlers.agent_api.handler"
PROXY_API = "vault.handlers.proxy_api.handler"
CALLBACK = "vault.handlers.callback.handler"
ADMIN_API = "vault.handlers.admin_api.handler"
REAPER = "vault.handlers.reaper.handler"

_PARAM = re.compile(r"\{([a-z_]+)(\+?)\}")


@dataclass(frozen=True)
class Route:
    """One API Gateway route: ``METHOD /path/{param}`` → a Lambda handler. ``ANY`` matches every
    method; a last ``{param+}`` (API Gateway's greedy parameter) takes the rest of the path."""

    method: str
    path: str
    handler: str
    """Dotted path of the Lambda handler function."""
    auth: Literal["iam", "none"]
    function: str
    """The logical function name (agent-api, callback, admin-api)."""
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segments = (
            (f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
            if (m := _PARAM.fullmatch(seg))
            else re.escape(seg)
            for seg in self.path.split("/")
        )
        regex = "^" + "/".join(segments) + "$"
        object.__setattr__(self, "_pattern", re.compile(regex))

    @property
    def route_key(self) -> str:
        """API Gateway's ``routeKey`` (e.g. ``POST /v1/sessions/{session_id}/tokens``)."""
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if ``method path`` is this route, else None."""
        if self.method != "ANY" and method.upper() != self.method:
            return None
        found = self._pattern.match(path)
        return found.groupdict() if found else None


_SESSION = "/v1/sessions/{session_id}"

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/sessions", AGENT_API, "iam", "agent-api"),
    Route("GET", "/v1/sessions/{session_id}", AGENT_API, "iam", "agent-api"),
    Route("DELETE", "/v1/sessions/{session_id}", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/sessions/{session_id}/renew", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/sessions/{session_id}/authorizations", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/sessions/{session_id}/tokens", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/sessions/{session_id}/api-key", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/sessions/{session_id}/delegations", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/delegations/{delegation_id}/claim", AGENT_API, "iam", "agent-api"),
    Route("POST", "/v1/flows/{flow_id}/complete", AGENT_API, "iam", "agent-api"),
    # connections (flow 13): the application, for its logged-in user
    Route("GET", "/v1/connections", AGENT_API, "iam", "agent-api"),
    Route("DELETE", "/v1/connections/{grant_id}", AGENT_API, "iam", "agent-api"),
    Route(
        "ANY", "/v1/sessions/{session_id}/proxy/{provider}/{path+}", PROXY_API, "iam", "proxy-api"
    ),
    Route("GET", "/v1/oauth/callback/{provider}", CALLBACK, "none", "callback"),
    Route("GET", "/v1/oauth/callback", CALLBACK, "none", "callback"),
    Route("POST", "/v1/revocations", ADMIN_API, "iam", "admin-api"),
    # API keys (flow 12): written and deleted by admins; the key in the body, never the URL
    Route("PUT", "/v1/admin/api-keys/{provider}", ADMIN_API, "iam", "admin-api"),
    Route("DELETE", "/v1/admin/api-keys/{provider}", ADMIN_API, "iam", "admin-api"),
    # the admin read API (flow 13): read-only, admins only
    Route("GET", "/v1/admin/sessions", ADMIN_API, "iam", "admin-api"),
    Route("GET", "/v1/admin/sessions/{session_id}", ADMIN_API, "iam", "admin-api"),
    Route("GET", "/v1/admin/grants", ADMIN_API, "iam", "admin-api"),
    Route("GET", "/v1/admin/grants/{grant_id}", ADMIN_API, "iam", "admin-api"),
    Route("GET", "/v1/admin/flows", ADMIN_API, "iam", "admin-api"),
    Route("GET", "/v1/admin/flows/{flow_id}", ADMIN_API, "iam", "admin-api"),
)


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route and path parameters for a request, or None (API Gateway answers 404)."""
    for route in ROUTES:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None


PATH_CHARACTERS = "/!$&'()*+,;=:@-._~"
"""What a path carries as itself (RFC 3986 `pchar` and `/`; letters and digits implied):
everything else is percent-encoded, `%` included."""


def encoded_path(decoded: str) -> str:
    """A percent-decoded path encoded again: each character outside `PATH_CHARACTERS` as its
    UTF-8 bytes' `%XX`. API Gateway's HTTP API hands a function the path it received
    percent-decoded (`rawPath`, and `pathParameters` with it; its documentation does not say so,
    projects report it from live events: honojs/hono#2156, aws/aws-lambda-dotnet#1901,
    middleapi/standard-server#93), while a function URL hands it over as sent."""
    return quote(decoded, safe=PATH_CHARACTERS)


def canonical_path(path: str) -> str:
    """One spelling of a percent-encoded path, to compare two: decoded, then `encoded_path`
    (`%2D` is `-`, `%40` is `@`, hex case does not matter; an encoded `/` is a `/`). Raises
    `ValueError` (`UnicodeDecodeError`) for an escape that is not UTF-8."""
    return encoded_path(unquote(path, errors="strict"))
