"""A proxied call against a bare provider call: the placeholder the proxy's merge fills in.

DESIGN.md's budget for a proxied call: the warm retrieval's AWS calls plus the provider call, and
at most 3 ms of vault compute on top of the provider's own time. This build measures it only
when the route table (`vault.routes.ROUTES`) has a proxy route; until then the bench
prints "not measured: no proxy in this build" and records no number.

To fill in after the proxy merges (`measure_proxied_call`): through the rig's handler, the
proxied call's compute with the wire excluded (as bench/warm.py does), and in the same run the
same provider request made directly (the floor); report figure, floor and the difference.
"""

from __future__ import annotations

from typing import Any

from vault.routes import ROUTES, Route

NOT_MEASURED = "not measured: no proxy in this build"
TARGET_OVER_PROVIDER_MS = 3.0


def proxy_route() -> Route | None:
    """The proxy's route, if this build has one (a path segment named `proxy`)."""
    return next((r for r in ROUTES if "proxy" in r.path.split("/")), None)


def measure_proxied_call(rig: Any, route: Route) -> dict[str, Any]:
    """PLACEHOLDER for the lead: proxied call vs bare provider call, in the same run."""
    raise NotImplementedError(
        f"the proxy route {route.route_key} exists but bench.proxy.measure_proxied_call is "
        "still the placeholder: write it (see this module's docstring)"
    )


def measure(rig: Any) -> dict[str, Any]:
    route = proxy_route()
    if route is None:
        return {"measured": False, "note": NOT_MEASURED}
    return {"measured": True, "route": route.route_key, **measure_proxied_call(rig, route)}
