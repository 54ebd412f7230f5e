"""The HTTP functions' router: API Gateway HTTP API (payload 2.0) and function-URL events to the
route functions, bound by route key from the one route table (`vault.routes`).

A function's router binds only its own entries of `ROUTES` (`Route.function`); a key that is not
in the table, or belongs to another function, fails at import. Behind API Gateway the event's
`routeKey` names the route and `pathParameters` its parameters (a dict lookup); a function URL's
event names none (`routeKey` `$default`), so its method and raw path are matched against this
function's routes. Each request gets a `Request` passed to its route function: nothing of a
request is kept in a module global (local mode and the bench run handlers side by side).

What every answer shares (the refusal audit, errors → problem answers) is `vault.handlers.http`'s.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from vault.routes import ROUTES, Route, encoded_path

__all__ = ["Request", "Response", "RouteError", "RouteFunction", "Router"]


@dataclass(frozen=True, slots=True)
class Request:
    """What a route function reads of its event. Header names are lowercase (API Gateway and
    function URLs send them so; an event built otherwise is folded here)."""

    event: dict[str, Any]
    """The raw event (the caller's identity: `requestContext.authorizer.iam`)."""
    method: str
    """As the event names it (`requestContext.http.method`)."""
    raw_path: str
    """The path, percent-encoded: a function URL's `rawPath` as sent; API Gateway's, which it
    delivers decoded, encoded again (`vault.routes.encoded_path`): there, what the caller
    encoded needlessly (`%2D`) arrives as itself and an encoded `/` as a separator."""
    headers: dict[str, str]

    @property
    def raw_query_string(self) -> str:
        return str(self.event.get("rawQueryString") or "")

    @property
    def query(self) -> dict[str, str]:
        """API Gateway's `queryStringParameters` (a repeated name's values joined by commas)."""
        return dict(self.event.get("queryStringParameters") or {})

    @property
    def body(self) -> str:
        return str(self.event.get("body") or "")

    @property
    def is_base64_encoded(self) -> bool:
        return bool(self.event.get("isBase64Encoded"))

    @property
    def domain_name(self) -> str:
        return str((self.event.get("requestContext") or {}).get("domainName", ""))


@dataclass(frozen=True, slots=True)
class Response:
    """An answer; a `bytes` body is sent base64-encoded (`isBase64Encoded`)."""

    status: int
    headers: dict[str, str]
    body: str | bytes = ""

    def to_event(self) -> dict[str, Any]:
        """The payload 2.0 answer API Gateway and function URLs read."""
        body = self.body
        binary = isinstance(body, bytes)
        return {
            "statusCode": self.status,
            "body": base64.b64encode(body).decode("ascii") if isinstance(body, bytes) else body,
            "isBase64Encoded": binary,
            "headers": dict(self.headers),
            "cookies": [],
        }


RouteFunction = Callable[..., Response]
"""Called with the `Request` and the route's path parameters as keyword arguments."""


@dataclass(frozen=True, slots=True)
class _Bound:
    route: Route
    function: RouteFunction
    params: frozenset[str]
    methods: frozenset[str] | None
    """For an `ANY` route: the methods it serves (another is no route: 404)."""


class RouteError(ValueError):
    """A binding the route table does not allow (raised at import)."""


class Router:
    """One function's routes. `route(key)` binds a route function; `include` takes another
    router's bindings of the same function; `dispatch` finds the route of an event."""

    def __init__(self, function: str) -> None:
        self.function = function
        self._table: dict[str, Route] = {r.route_key: r for r in ROUTES if r.function == function}
        if not self._table:
            raise RouteError(f"no route of the table is the function {function!r}'s")
        self._bound: dict[str, _Bound] = {}

    @property
    def bound(self) -> dict[str, RouteFunction]:
        """Route key → route function, as bound."""
        return {key: b.function for key, b in self._bound.items()}

    def route(
        self, key: str, *, methods: Collection[str] | None = None
    ) -> Callable[[RouteFunction], RouteFunction]:
        """Bind `key` (e.g. ``"POST /v1/sessions/{session_id}/tokens"``), which must be one of
        this function's routes in `vault.routes.ROUTES`. `methods`: for an ``ANY`` route only,
        the methods it serves."""
        route = self._table.get(key)
        if route is None:
            owner = next((r.function for r in ROUTES if r.route_key == key), None)
            raise RouteError(
                f"{key!r} is not in vault.routes.ROUTES"
                if owner is None
                else f"{key!r} is the {owner} function's route, not the {self.function}'s"
            )
        if key in self._bound:
            raise RouteError(f"{key!r} is bound twice")
        if methods is not None and route.method != "ANY":
            raise RouteError(f"{key!r} serves one method; `methods` is for an ANY route")
        allowed = None if methods is None else frozenset(m.upper() for m in methods)
        params = frozenset(_param_names(route))

        def bind(function: RouteFunction) -> RouteFunction:
            self._bound[key] = _Bound(route, function, params, allowed)
            return function

        return bind

    def include(self, other: Router) -> None:
        """Take `other`'s bindings (a module of this function's routes)."""
        if other.function != self.function:
            raise RouteError(f"a router of {other.function} included in {self.function}'s")
        for key, bound in other._bound.items():
            if key in self._bound:
                raise RouteError(f"{key!r} is bound twice")
            self._bound[key] = bound

    def dispatch(
        self, event: dict[str, Any]
    ) -> tuple[RouteFunction, Request, dict[str, str]] | None:
        """The route function, request and path parameters of `event`; None if no route of
        this function serves it."""
        http = (event.get("requestContext") or {}).get("http") or {}
        given_method = str(http.get("method", ""))
        method = given_method.upper()
        raw_path = str(event.get("rawPath", ""))
        found = self._bound.get(str(event.get("routeKey", "")))
        params: dict[str, str] | None = None
        if found is not None:  # API Gateway: the path decoded, and its parameters
            raw_path = encoded_path(raw_path)
            given = event.get("pathParameters") or {}
            # not as API Gateway sends them: the route's own match decides
            params = given if given.keys() == found.params else found.route.match(method, raw_path)
        else:  # a function URL (`$default`): this function's routes, by method and raw path
            for bound in self._bound.values():
                params = bound.route.match(method, raw_path)
                if params is not None:
                    found = bound
                    break
        if found is None or params is None:
            return None
        if found.methods is not None and method not in found.methods:
            return None
        headers = event.get("headers") or {}
        request = Request(
            event=event,
            method=given_method,
            raw_path=raw_path,
            headers=headers
            if all(k.islower() for k in headers)
            else {k.lower(): v for k, v in headers.items()},
        )
        return found.function, request, params


def _param_names(route: Route) -> list[str]:
    return [seg.strip("{}+") for seg in route.path.split("/") if seg.startswith("{")]
