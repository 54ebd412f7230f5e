"""The public OAuth callbacks: the provider sends the user's browser here after consent.

Each provider has its own (`/v1/oauth/callback/{provider}`, RFC 9700 §4.4.2); the shared legacy
one is accepted only for providers that send `iss` (RFC 9207).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import consent
from vault.handlers.http import resolve
from vault.handlers.router import Request, Response, Router
from vault.observability import lambda_handler
from vault.runtime import services

app = Router("callback")


@app.route("GET /v1/oauth/callback/{provider}")
def provider_callback(request: Request, provider: str) -> Response:
    return _redirect(
        consent.handle_callback(services(), _query(request), callback_provider=provider)
    )


@app.route("GET /v1/oauth/callback")
def oauth_callback(request: Request) -> Response:
    return _redirect(consent.handle_callback(services(), _query(request)))


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if isinstance(v, str)}


def _redirect(location: str) -> Response:
    return Response(
        302,
        {"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event)
