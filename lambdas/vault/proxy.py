"""Flow 10: the egress proxy. An agent with `proxy` delivery calls its provider's API through
the vault; the session's token is attached here and never leaves the vault.

`ANY /v1/sessions/{session_id}/proxy/{provider}/{path+}`: the session and its proof are checked as
on every session route (the proof's `htu` is the proxy URL without query); then, before any call
to the provider, the path (no `.`/`..`/empty segments, no encoded `/` `\\` `.`, nothing that could
leave the base URL), the API base URL (the first configured, or `X-Agent-Vault-Api-Base` if it
is exactly another configured one) and the agent's request policy (methods and paths). Only
then is the token minted or taken from the cache and the request sent (vault.egress: no
redirects, no private addresses, bounded time and bodies). Inbound credentials, cookies, AWS and
vault headers and hop-by-hop headers are dropped; so are the provider's `Set-Cookie` and
hop-by-hop headers. A provider 401 refreshes the token once (single-flight) and retries an
idempotent method once; a non-idempotent one gets the 401 and the next call a fresh token.
At an API-key provider (flow 12, vault.apikeys) the key goes in the configured header or query
parameter instead of a token; a 401 retries an idempotent method once with a key set meanwhile,
or the previous key within its rotation window.

One audit event per call (`proxy.call`): method, host, path, status, bytes and latency, the
credential kind (`user`, `machine`, `api_key`; for an API key which version answered); no
query, no header, no body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from vault import apikeys, machine, tokens
from vault.audit import Decision, decision
from vault.caller import Caller, agent_of
from vault.config import HOP_BY_HOP, ProviderConfig
from vault.egress import UpstreamAnswer
from vault.errors import (
    InvalidRequest,
    RequestNotAllowed,
    RequestTooLarge,
    UpstreamRedirectRefused,
    VaultError,
)
from vault.models import Session, SessionToken
from vault.policy import check_delegated, check_request_policy, delivery_of
from vault.runtime import Services
from vault.sessions import HttpCall, authorize_session_call

MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""Bodies the proxy forwards, each way. A synchronous Lambda invocation carries at most 6 MB of
event and 6 MB of answer, and binary bodies travel base64-encoded (4/3 of their size; the proxy
always answers base64): 4 MiB is 5.33 MiB encoded, leaving room for headers and the envelope.
A request beyond it is 413 `request_too_large`; an answer beyond it 502
`upstream_response_too_large` (never a truncated body)."""
DEADLINE_SECONDS = 25.0
"""Upstream time per proxied call, retry included: the function has 29 s (API Gateway's
integration limit is 30 s), which leaves room for the DynamoDB and KMS calls."""
MAX_PATH_CHARS = 2048
MAX_QUERY_CHARS = 4096
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""RFC 9110 §9.2.2: retried once after a refresh when the provider answers 401."""
API_BASE_HEADER = "x-agent-vault-api-base"
PROXY_HEADER = "X-Agent-Vault-Proxy"
"""On every answer that is the provider's (`upstream`); the vault's own problems lack it."""

DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    "authorization",
    "dpop",
    "cookie",
    "host",
    "content-length",
    "expect",
    "forwarded",
    "via",
}
DROPPED_REQUEST_PREFIXES = ("x-amz", "x-agent-vault-", "x-forwarded-")
"""`x-amz` covers `X-Amz-*` (SigV4) and `X-Amzn-*` (API Gateway's trace id)."""
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"set-cookie", "set-cookie2", "content-length"}
DROPPED_RESPONSE_PREFIXES = ("x-agent-vault-",)

_SEGMENT = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+$")
_FORBIDDEN_ESCAPE = re.compile(r"%(?:2[fFeE]|5[cC]|[01][0-9A-Fa-f]|7[fF])")
"""Encoded `/`, `.`, `\\` and control characters: refused, never decoded into a path."""
_QUERY = re.compile(r"^[\x21-\x7e]*$")


@dataclass(frozen=True)
class ProxyRequest:
    """A proxied request as API Gateway delivered it."""

    session_id: str
    provider: str
    path: str
    """`{path+}` as sent (percent-encoded), without the leading `/`."""
    query: str
    method: str
    headers: Mapping[str, str]
    """Lower-cased names (API Gateway's payload 2.0 joins repeated headers with commas)."""
    body: bytes


@dataclass(frozen=True)
class ProxyAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def path_segments(path: str) -> tuple[str, ...]:
    """The percent-decoded segments of `{path+}`, or 400: no empty (but a trailing), `.` or
    `..` segment, no encoded separator or control character, only RFC 3986 path characters."""
    if len(path) > MAX_PATH_CHARS:
        raise InvalidRequest(f"the proxied path is longer than {MAX_PATH_CHARS} characters")
    raw = path.split("/")
    if raw and raw[-1] == "" and len(raw) > 1:
        raw = raw[:-1]  # a trailing slash is part of the last segment's resource, not a segment
    for segment in raw:
        if segment == "":
            raise InvalidRequest("the proxied path has an empty segment (`//`)")
        if not _SEGMENT.match(segment) or _FORBIDDEN_ESCAPE.search(segment):
            raise InvalidRequest(
                "the proxied path has a character the proxy does not forward (encoded `/`, `\\`"
                " or `.`, or one outside RFC 3986 paths)"
            )
        if unquote(segment) in (".", ".."):
            raise InvalidRequest("the proxied path has a `.` or `..` segment")
    return tuple(unquote(segment) for segment in raw)


def _api_base(provider: str, config: ProviderConfig, asked: str | None) -> str:
    """The configured base URL the request goes to: the first, or exactly the one asked for."""
    if asked is None:
        return config.api_base_urls[0]
    if asked in config.api_base_urls:
        return asked
    raise RequestNotAllowed(
        f"X-Agent-Vault-Api-Base is not one of providers.{provider}.api_base_urls",
        provider=provider,
        api_base_urls=list(config.api_base_urls),
    )


def _upstream_url(base: str, path: str, query: str) -> str:
    """`base/path?query`, checked to stay at the base's origin and under its path."""
    url = f"{base}/{path}" + (f"?{query}" if query else "")
    parts, origin = urlsplit(url), urlsplit(base)
    if parts.netloc != origin.netloc or not parts.path.startswith(origin.path + "/"):
        raise InvalidRequest("the proxied path leaves the provider's API base URL")
    return url


def _forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    named = {n.strip().lower() for n in headers.get("connection", "").split(",") if n.strip()}
    return {
        name: value
        for name, value in headers.items()
        if name not in DROPPED_REQUEST_HEADERS
        and name not in named
        and not name.startswith(DROPPED_REQUEST_PREFIXES)
    }


def _returned_headers(answer: UpstreamAnswer) -> dict[str, str]:
    named = {
        n.strip().lower()
        for name, value in answer.headers
        if name == "connection"
        for n in value.split(",")
        if n.strip()
    }
    kept: dict[str, str] = {}
    for name, value in answer.headers:
        if (
            name in DROPPED_RESPONSE_HEADERS
            or name in named
            or name.startswith(DROPPED_RESPONSE_PREFIXES)
        ):
            continue
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    kept[PROXY_HEADER] = "upstream"
    return kept


def forward(svc: Services, caller: Caller, call: HttpCall, request: ProxyRequest) -> ProxyAnswer:
    """Check, then send one proxied request to the provider's API; the provider's answer."""
    started = time.monotonic()
    agent = agent_of(svc.config, caller)
    session, cached = authorize_session_call(
        svc, caller, request.session_id, call, revoke_expired=False
    )
    provider = request.provider
    with decision(
        "proxy.call",
        agent=agent,
        user=session.user,
        provider=provider,
        session_id=session.session_id,
        task_id=session.task_id,
    ) as d:
        d.note(method=request.method, path="/" + request.path[:256])
        try:
            delivery = delivery_of(svc.config, agent, provider)
            if delivery != "proxy":
                raise RequestNotAllowed(
                    f"agent {agent!r} has {delivery} delivery at {provider!r}: it calls the"
                    " provider itself (POST .../tokens), not through the proxy",
                    provider=provider,
                )
            check_delegated(svc.config, session, provider, ())  # a child: a delegated one
            config = svc.config.providers[provider]
            base = _api_base(provider, config, request.headers.get(API_BASE_HEADER))
            d.note(host=urlsplit(base).hostname)
            segments = path_segments(request.path)
            check_request_policy(svc.config, agent, provider, request.method, segments)
            if len(request.body) > MAX_REQUEST_BYTES:
                raise RequestTooLarge(
                    f"the proxy forwards bodies of at most {MAX_REQUEST_BYTES} bytes",
                    max_bytes=MAX_REQUEST_BYTES,
                )
            if len(request.query) > MAX_QUERY_CHARS or not _QUERY.match(request.query):
                raise InvalidRequest("the query string is too long or not plain URL characters")
            url = _upstream_url(base, request.path, request.query)
            deadline = started + DEADLINE_SECONDS
            if config.api_key is not None:
                d.note(credential="api_key")
                apikeys.check_query(provider, config.api_key, request.query)
                answer = _call_with_api_key(svc, session, config, base, request, deadline, d)
            else:
                d.note(credential="machine" if machine.is_machine(svc.config, provider) else "user")
                answer = _call(svc, session, cached, config, url, request, deadline)
        except VaultError as exc:
            d.note(status=exc.extra.get("upstream_status"), latency_ms=_ms(started))
            raise
        d.note(status=answer.status, bytes=len(answer.body), latency_ms=_ms(started))
    return ProxyAnswer(answer.status, _returned_headers(answer), answer.body)


def _call(
    svc: Services,
    session: Session,
    cached: list[SessionToken],
    config: ProviderConfig,
    url: str,
    request: ProxyRequest,
    deadline: float,
) -> UpstreamAnswer:
    """Send with the session's token; on a 401, refresh once and retry an idempotent method."""
    if machine.is_machine(svc.config, request.provider):
        return _call_with_machine_token(svc, session, config, url, request, deadline)
    token = tokens.proxy_token(svc, session, cached, request.provider)
    answer = _send(svc, token, config, url, request, deadline)
    if answer.status == 401:
        if request.method in IDEMPOTENT and deadline - time.monotonic() > config.timeout_seconds:
            token = tokens.replace_rejected_token(svc, session, token)
            answer = _send(svc, token, config, url, request, deadline)
        else:  # not retried: the next request of the session mints a new token
            svc.store.sessions.drop_rejected_token(token)
    _refuse_redirect(answer)
    return answer


def _call_with_machine_token(
    svc: Services,
    session: Session,
    config: ProviderConfig,
    url: str,
    request: ProxyRequest,
    deadline: float,
) -> UpstreamAnswer:
    """As `_call`, with the agent's machine token at a `client_credentials` provider (flow 12)."""
    token = machine.proxy_token(svc, session, request.provider)
    answer = _send_with(svc, machine.open_token(svc, token), config, url, request, deadline)
    if answer.status == 401:
        if request.method in IDEMPOTENT and deadline - time.monotonic() > config.timeout_seconds:
            token = machine.replace_rejected_token(svc, token)
            answer = _send_with(svc, machine.open_token(svc, token), config, url, request, deadline)
        else:
            machine.drop_rejected_token(svc, token)
    _refuse_redirect(answer)
    return answer


def _call_with_api_key(
    svc: Services,
    session: Session,
    config: ProviderConfig,
    base: str,
    request: ProxyRequest,
    deadline: float,
    d: Decision,
) -> UpstreamAnswer:
    """As `_call`, with the provider's (or the session user's) API key (flow 12). On a 401 to
    an idempotent method, one retry: with a key another container set meanwhile, else with the
    previous key while its rotation window lasts."""
    assert config.api_key is not None
    stored = apikeys.key_for(svc, session, request.provider)
    answer = _send_key(svc, stored.current, config, base, request, deadline)
    version = "current"
    if answer.status == 401:
        apikeys.forget(svc, stored)
        if request.method in IDEMPOTENT and deadline - time.monotonic() > config.timeout_seconds:
            latest = apikeys.key_for(svc, session, request.provider, fresh=True)
            retry: str | None = None
            if latest.current != stored.current:
                retry = latest.current
            elif latest.previous is not None and latest.previous_usable(
                svc.clock(), config.api_key.rotation_window_seconds
            ):
                retry, version = latest.previous, "previous"
            if retry is not None:
                answer = _send_key(svc, retry, config, base, request, deadline)
    d.note(api_key_version=version)
    _refuse_redirect(answer)
    return answer


def _send_key(
    svc: Services,
    key: str,
    config: ProviderConfig,
    base: str,
    request: ProxyRequest,
    deadline: float,
) -> UpstreamAnswer:
    assert config.api_key is not None
    headers, query = apikeys.inject(
        config.api_key, key, _forwarded_headers(request.headers), request.query
    )
    return svc.egress.send(
        request.method,
        _upstream_url(base, request.path, query),
        headers=headers,
        body=request.body,
        timeout=config.timeout_seconds,
        deadline=deadline,
        max_bytes=MAX_RESPONSE_BYTES,
    )


def _refuse_redirect(answer: UpstreamAnswer) -> None:
    if 300 <= answer.status < 400 and answer.status != 304:
        raise UpstreamRedirectRefused(
            f"the provider's API answered {answer.status} (a redirect): the proxy never follows"
            " one, nor returns where it points",
            upstream_status=answer.status,
        )


def _send(
    svc: Services,
    token: SessionToken,
    config: ProviderConfig,
    url: str,
    request: ProxyRequest,
    deadline: float,
) -> UpstreamAnswer:
    return _send_with(svc, tokens.open_token(svc, token), config, url, request, deadline)


def _send_with(
    svc: Services,
    access_token: str,
    config: ProviderConfig,
    url: str,
    request: ProxyRequest,
    deadline: float,
) -> UpstreamAnswer:
    headers = _forwarded_headers(request.headers)
    headers["authorization"] = f"Bearer {access_token}"
    return svc.egress.send(
        request.method,
        url,
        headers=headers,
        body=request.body,
        timeout=config.timeout_seconds,
        deadline=deadline,
        max_bytes=MAX_RESPONSE_BYTES,
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
