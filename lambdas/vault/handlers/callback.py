"""The public OAuth callback: the provider sends the user's browser here after consent."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from vault import consent
from vault.handlers.http import make_resolver
from vault.observability import logger, metrics
from vault.runtime import services

app = make_resolver()


@app.get("/v1/oauth/callback")
def oauth_callback() -> Response[str]:
    query = {
        k: v
        for k, v in (app.current_event.query_string_parameters or {}).items()
        if isinstance(v, str)
    }
    location = consent.handle_callback(services(), query)
    return Response(
        status_code=302,
        body="",
        headers={
            "Location": location,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
