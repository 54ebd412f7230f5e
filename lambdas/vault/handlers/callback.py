"""The public OAuth callbacks: the provider sends the user's browser here after consent.

Each provider has its own (`/v1/oauth/callback/{provider}`, RFC 9700 §4.4.2); the shared legacy
one is accepted only for providers that send `iss` (RFC 9207).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import consent
from vault.handlers.http import make_resolver
from vault.observability import lambda_handler
from vault.runtime import services

app = make_resolver()


@app.get("/v1/oauth/callback/<provider>")
def provider_callback(provider: str) -> Response[str]:
    return _redirect(consent.handle_callback(services(), _query(), callback_provider=provider))


@app.get("/v1/oauth/callback")
def oauth_callback() -> Response[str]:
    return _redirect(consent.handle_callback(services(), _query()))


def _query() -> dict[str, str]:
    return {
        k: v
        for k, v in (app.current_event.query_string_parameters or {}).items()
        if isinstance(v, str)
    }


def _redirect(location: str) -> Response[str]:
    return Response(
        status_code=302,
        body="",
        headers={
            "Location": location,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
