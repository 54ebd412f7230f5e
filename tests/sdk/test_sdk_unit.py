"""The SDK's pure parts: proofs, error mapping, identities, scopes, retries on connection errors."""

from __future__ import annotations

import json
import socket
import time

import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from agent_vault import (
    AccessDenied,
    ApiKey,
    ConsentRequired,
    FlowNotFound,
    FlowNotPending,
    Forbidden,
    InvalidProof,
    InvalidRequest,
    InvalidUserToken,
    NotFound,
    ProofReplayed,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ReturnUrlNotAllowed,
    ScopeNotAllowed,
    SessionEnded,
    SessionKey,
    SessionNotFound,
    UnknownAgent,
    UnknownProvider,
    UserIdentity,
    UserMismatch,
    VaultClient,
    VaultConnectionError,
    VaultError,
    VaultUnavailable,
)
from agent_vault.client import (
    invoke_permission,
    is_function_url,
    normalize_scopes,
    region_from_url,
    service_for,
)
from agent_vault.errors import error_from_response
from agent_vault.proofs import htu
from agent_vault_local.credentials import new_principal

# -- proofs ----------------------------------------------------------------------------------------


def _decode(proof: str, key: SessionKey) -> tuple[dict[str, object], dict[str, object]]:
    public = ECKey.import_key(key.public_jwk)
    verified = jws.deserialize_compact(proof, public, algorithms=["ES256"])
    return dict(verified.protected), json.loads(verified.payload)


def test_proof_header_and_claims_follow_the_contract() -> None:
    key = SessionKey()
    before = int(time.time())
    proof = key.proof(
        "post",
        "https://abc.execute-api.eu-west-1.amazonaws.com/v1/sessions/ses_x/tokens?ignored=1#frag",
        session_id="ses_x",
    )
    header, claims = _decode(proof, key)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert header["jwk"] == key.public_jwk
    assert "d" not in key.public_jwk and set(key.public_jwk) == {"kty", "crv", "x", "y"}
    assert claims["htm"] == "POST"
    assert claims["htu"] == (
        "https://abc.execute-api.eu-west-1.amazonaws.com/v1/sessions/ses_x/tokens"
    )
    assert claims["sid"] == "ses_x"
    assert isinstance(claims["iat"], int) and before <= claims["iat"] <= int(time.time())
    assert isinstance(claims["jti"], str) and 16 <= len(claims["jti"]) <= 64


def test_session_start_proof_has_no_sid_and_every_proof_a_new_jti() -> None:
    key = SessionKey()
    proofs = [key.proof("POST", "http://127.0.0.1:1/v1/sessions") for _ in range(50)]
    claims = [_decode(p, key)[1] for p in proofs]
    assert all("sid" not in c for c in claims)
    assert len({c["jti"] for c in claims}) == 50


def test_thumbprint_is_rfc7638_of_the_public_key() -> None:
    key = SessionKey()
    assert key.thumbprint == ECKey.import_key(key.public_jwk).thumbprint()
    assert repr(key) == f"SessionKey(jkt={key.thumbprint!r})"  # no key material


def test_proof_by_another_key_does_not_verify() -> None:
    key, other = SessionKey(), SessionKey()
    proof = key.proof("GET", "http://127.0.0.1:1/v1/sessions/ses_x", session_id="ses_x")
    with pytest.raises(Exception):  # noqa: B017 - joserfc's BadSignatureError
        _decode(proof, other)


def test_htu_drops_query_and_fragment_and_lowercases_the_origin() -> None:
    assert htu("HTTPS://Vault.Example.COM/v1/flows/f/complete?x=1#y") == (
        "https://vault.example.com/v1/flows/f/complete"
    )


# -- error mapping --------------------------------------------------------------------------------


def _problem(status: int, code: str, **extra: object) -> bytes:
    return json.dumps(
        {
            "type": f"urn:agent-vault:problem:{code}",
            "title": code,
            "status": status,
            "detail": f"detail of {code}",
            "code": code,
            **extra,
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", InvalidRequest),
        (413, "payload_too_large", InvalidRequest),
        (400, "unknown_provider", UnknownProvider),
        (400, "return_url_not_allowed", ReturnUrlNotAllowed),
        (401, "invalid_proof", InvalidProof),
        (401, "proof_replayed", ProofReplayed),
        (401, "invalid_user_token", InvalidUserToken),
        (403, "unknown_agent", UnknownAgent),
        (403, "forbidden", Forbidden),
        (403, "scope_not_allowed", ScopeNotAllowed),
        (403, "consent_required", ConsentRequired),
        (403, "user_mismatch", UserMismatch),
        (404, "session_not_found", SessionNotFound),
        (404, "flow_not_found", FlowNotFound),
        (404, "not_found", NotFound),
        (410, "session_ended", SessionEnded),
        (409, "flow_not_pending", FlowNotPending),
        (502, "provider_error", ProviderError),
        (504, "provider_timeout", ProviderTimeout),
        (503, "storage_unavailable", VaultUnavailable),
        (503, "crypto_unavailable", VaultUnavailable),
        (503, "secrets_unavailable", VaultUnavailable),
        (503, "refresh_in_progress", VaultUnavailable),
        (500, "internal_error", VaultUnavailable),
        (400, "code_exchange_failed", InvalidRequest),
    ],
)
def test_every_problem_code_maps_to_its_exception(
    status: int, code: str, cls: type[VaultError]
) -> None:
    error = error_from_response(status, {}, _problem(status, code))
    assert type(error) is cls
    assert (error.status, error.code, error.detail) == (status, code, f"detail of {code}")
    assert isinstance(error, VaultError)


def test_hierarchy_lets_callers_catch_broad_families() -> None:
    assert issubclass(ProofReplayed, InvalidProof)
    assert issubclass(ScopeNotAllowed, Forbidden) and issubclass(UserMismatch, Forbidden)
    assert issubclass(ProviderError, ProviderUnavailable)
    assert issubclass(ProviderTimeout, ProviderUnavailable)
    assert issubclass(SessionNotFound, NotFound)


def test_problem_members_are_exposed() -> None:
    consent = error_from_response(
        403,
        {},
        _problem(
            403,
            "consent_required",
            provider="calendar",
            missing_scopes=["calendar.read"],
            authorizations_path="/v1/sessions/ses_x/authorizations",
            reason="no_grant",
        ),
    )
    assert isinstance(consent, ConsentRequired)
    assert consent.provider == "calendar"
    assert consent.missing_scopes == ["calendar.read"]
    assert consent.authorizations_path == "/v1/sessions/ses_x/authorizations"
    assert consent.reason == "no_grant"
    assert consent.authorization_url is None and consent.flow_id is None
    scope = error_from_response(
        403,
        {},
        _problem(
            403, "scope_not_allowed", allowed_scopes=["mail.read"], denied_scopes=["calendar.read"]
        ),
    )
    assert isinstance(scope, ScopeNotAllowed) and scope.allowed_scopes == ["mail.read"]
    assert scope.denied_scopes == ["calendar.read"]


def test_retry_after_from_member_or_header() -> None:
    from_member = error_from_response(503, {}, _problem(503, "storage_unavailable", retry_after=2))
    from_header = error_from_response(502, {"Retry-After": "3"}, _problem(502, "provider_error"))
    assert from_member.retry_after == 2.0 and from_header.retry_after == 3.0
    assert error_from_response(400, {}, _problem(400, "invalid_request")).retry_after is None


def test_gateway_refusals_and_garbage_answers() -> None:
    denied = error_from_response(
        403,
        {},
        b'{"message":"The request signature we calculated '
        b'does not match the signature you provided."}',
    )
    assert isinstance(denied, AccessDenied) and "signature" in denied.detail
    # a function URL's front end capitalizes its member
    by_url = error_from_response(403, {}, b'{"Message":"Forbidden. For troubleshooting..."}')
    assert isinstance(by_url, AccessDenied) and by_url.detail.startswith("Forbidden.")
    assert isinstance(error_from_response(502, {}, b"<html>bad gateway</html>"), VaultUnavailable)
    unknown = error_from_response(418, {}, _problem(418, "teapot"))
    assert type(unknown) is VaultError and unknown.code == "teapot"
    future_5xx = error_from_response(500, {}, _problem(500, "internal_error"))
    assert isinstance(future_5xx, VaultUnavailable)


def test_str_names_status_code_and_detail() -> None:
    error = error_from_response(410, {}, _problem(410, "session_ended"))
    assert str(error) == "410 session_ended: detail of session_ended"


# -- identities, scopes, regions ------------------------------------------------------------------


def test_user_identity_takes_exactly_one_form_and_hides_the_token() -> None:
    with pytest.raises(ValueError):
        UserIdentity()
    with pytest.raises(ValueError):
        UserIdentity(id_token="a.b.c", user_id="u")
    identity = UserIdentity(id_token="header.payload.signature")
    assert identity.to_json() == {"id_token": "header.payload.signature"}
    assert "payload" not in repr(identity)
    assert UserIdentity.from_user_id("u-1").to_json() == {"user_id": "u-1"}


@pytest.mark.parametrize(
    "answer, headers, params",
    [
        (
            {"api_key": "k-1", "provider": "p", "header": "X-Api-Key", "prefix": ""},
            {"X-Api-Key": "k-1"},
            {},
        ),
        (
            {"api_key": "k-1", "provider": "p", "header": "Authorization", "prefix": "Bearer "},
            {"Authorization": "Bearer k-1"},
            {},
        ),
        ({"api_key": "k-1", "provider": "p", "query_parameter": "api_key"}, {}, {"api_key": "k-1"}),
    ],
)
def test_an_api_key_says_where_it_goes_and_hides_itself(
    answer: dict[str, str], headers: dict[str, str], params: dict[str, str]
) -> None:
    key = ApiKey.from_json(answer)
    assert (key.headers, key.params, key.provider) == (headers, params, "p")
    assert "k-1" not in repr(key)


def test_scopes_are_normalized() -> None:
    assert normalize_scopes("b a  a") == ("a", "b")
    assert normalize_scopes(["calendar.read", "calendar.read"]) == ("calendar.read",)
    assert normalize_scopes("repo,user") == ("repo", "user")


def test_region_comes_from_execute_api_urls() -> None:
    assert region_from_url("https://abc123.execute-api.eu-west-1.amazonaws.com") == "eu-west-1"
    assert region_from_url("https://vault.example.com") is None
    assert region_from_url("http://127.0.0.1:8080") is None


FUNCTION_URL = "https://a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6.lambda-url.eu-west-1.on.aws"


def test_region_and_service_come_from_function_urls() -> None:
    assert region_from_url(f"{FUNCTION_URL}/") == "eu-west-1"
    assert is_function_url(FUNCTION_URL) and service_for(FUNCTION_URL) == "lambda"
    api = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    assert not is_function_url(api) and service_for(api) == "execute-api"
    # a custom domain is API Gateway's (the SDK cannot tell otherwise): execute-api
    assert service_for("https://vault.example.com") == "execute-api"
    # a host that only contains the pattern is not a function URL
    assert not is_function_url("https://x.lambda-url.eu-west-1.on.aws.evil.example")
    assert region_from_url("https://x.lambda-url.eu-west-1.on.aws.evil.example") is None
    assert "lambda:InvokeFunctionUrl" in invoke_permission(FUNCTION_URL)
    assert invoke_permission(api) == "execute-api:Invoke on the route"


@pytest.mark.parametrize(
    ("url", "service", "said"),
    [
        (FUNCTION_URL, "lambda", None),
        ("https://abc123.execute-api.eu-west-1.amazonaws.com", "execute-api", None),
        # a custom domain (or local mode's loopback URL) in front of a function URL
        ("https://vault.example.com", "lambda", "lambda"),
    ],
)
def test_requests_are_signed_for_the_endpoints_service_and_region(
    url: str, service: str, said: str | None
) -> None:
    """The signature verifies for (the URL's region, its service) and for nothing else."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = new_principal("t", "r", "s").credentials()
    client = VaultClient(url, credentials=credentials, region="eu-west-1", signing_service=said)
    assert client.region == "eu-west-1"
    target = f"{url}/v1/sessions/ses_x/tokens"
    body = b'{"provider":"calendar","scopes":["calendar.read"]}'
    headers = client.signed_headers(
        "POST", target, body, {"Content-Type": "application/json"}, proof=False
    )
    authorization = headers.pop("Authorization")
    scope = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    assert scope.endswith(f"/eu-west-1/{service}/aws4_request"), scope

    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    assert signed == ["content-type", "host", "x-amz-date", "x-amz-security-token"]
    sent = {k: v for k, v in headers.items() if k.lower() in signed}

    def signature_for(signing_service: str) -> str:
        signer = SigV4Auth(credentials.get_frozen_credentials(), signing_service, "eu-west-1")
        request = AWSRequest(method="POST", url=target, data=body, headers=sent)
        request.context["timestamp"] = headers["X-Amz-Date"]
        canonical = signer.canonical_request(request)
        return signer.signature(signer.string_to_sign(request, canonical), request)

    assert authorization.endswith(f"Signature={signature_for(service)}")
    other = "execute-api" if service == "lambda" else "lambda"
    assert not authorization.endswith(f"Signature={signature_for(other)}")


def test_the_signing_service_is_lambda_or_execute_api_and_comes_from_the_environment() -> None:
    with pytest.raises(ValueError, match="signing_service 'sts'"):
        VaultClient("https://vault.example.com", region="eu-west-1", signing_service="sts")
    env = {"AGENT_VAULT_URL": "http://127.0.0.1:9", "AGENT_VAULT_SIGNING_SERVICE": "lambda"}
    assert VaultClient.from_env(environ=env, region="eu-west-1").signing_service == "lambda"
    env.pop("AGENT_VAULT_SIGNING_SERVICE")
    assert VaultClient.from_env(environ=env, region="eu-west-1").signing_service is None


def test_the_proxy_url_is_a_url_of_the_same_region() -> None:
    credentials = new_principal("t", "r", "s").credentials()
    proxy = "https://p9o8i7u6y5t4r3e2w1q0.lambda-url.eu-west-1.on.aws/"
    client = VaultClient(FUNCTION_URL, proxy_url=proxy, credentials=credentials)
    assert client.proxy_url == proxy.rstrip("/")
    assert VaultClient(FUNCTION_URL, credentials=credentials).proxy_url == FUNCTION_URL
    env = {"AGENT_VAULT_URL": FUNCTION_URL, "AGENT_VAULT_PROXY_URL": proxy}
    assert VaultClient.from_env(environ=env, credentials=credentials).proxy_url == proxy[:-1]
    for bad in ("vault.example.com", f"{proxy}?q=1", proxy.replace("eu-west-1", "us-east-1")):
        with pytest.raises(ValueError, match="proxy_url"):
            VaultClient(FUNCTION_URL, proxy_url=bad, credentials=credentials)


def test_base_url_is_validated() -> None:
    credentials = new_principal("t", "r", "s").credentials()
    for bad in ("ftp://x", "vault.example.com", "https://x/?q=1"):
        with pytest.raises(ValueError):
            VaultClient(bad, credentials=credentials, region="eu-west-1")


# -- retries on connection errors ------------------------------------------------------------------


def test_connection_errors_are_retried_with_backoff_then_raised() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delays: list[float] = []
    client = VaultClient(
        f"http://127.0.0.1:{port}",
        user=UserIdentity(user_id="u"),
        credentials=new_principal("t", "r", "s").credentials(),
        region="us-east-1",
        max_attempts=3,
        max_backoff=0.5,
        sleep=delays.append,
    )
    with pytest.raises(VaultConnectionError) as raised:
        client.start_session()
    assert raised.value.status == 0
    assert len(delays) == 2 and all(0 <= d <= 0.5 for d in delays)
    assert client.session is None


# -- ECS task metadata ----------------------------------------------------------------------


def test_task_arn_from_the_metadata_endpoint_v4() -> None:
    import http.server
    import threading

    from agent_vault import ecs

    arn = "arn:aws:ecs:eu-west-1:111122223333:task/agents/0123456789abcdef0123456789abcdef"

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"TaskARN": arn, "Cluster": "agents"}).encode()
            self.send_response(200 if self.path == "/v4/abc/task" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        environ = {"ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{server.server_port}/v4/abc"}
        assert ecs.task_arn(environ=environ) == arn
        assert ecs.task_id(environ=environ) == "0123456789abcdef0123456789abcdef"
        assert ecs.task_metadata(environ={}) is None  # not on ECS
        wrong = {"ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{server.server_port}/v4/x"}
        assert ecs.task_arn(environ=wrong) is None
    finally:
        server.shutdown()
        server.server_close()


# -- the token cache ---------------------------------------------------------------------------


class _VaultAnswers:
    """The vault's HTTP side, as a urllib3 pool: a session, then tokens of `lifetime` seconds."""

    def __init__(self, lifetime: int) -> None:
        self.lifetime = lifetime
        self.token_requests = 0

    def request(self, method: str, url: str, headers: dict[str, str], **_: object) -> object:
        from types import SimpleNamespace

        if url.endswith("/v1/sessions"):
            proof = next(v for k, v in headers.items() if k.lower() == "dpop")
            jwk = jws.extract_compact(proof.encode()).protected["jwk"]
            body = {
                "session_id": "ses_x",
                "agent": "a",
                "user": {},
                "jkt": ECKey.import_key(jwk).thumbprint(),
                "status": "active",
                "created_at": 1000,
                "expires_at": 4_000_000_000,
            }
            status = 201
        else:
            self.token_requests += 1
            body = {
                "access_token": f"tok-{self.token_requests}",
                "token_type": "Bearer",
                "expires_in": self.lifetime,
                "scope": "calendar.read",
                "provider": "calendar",
            }
            status = 200
        return SimpleNamespace(status=status, data=json.dumps(body).encode(), headers={})


def test_short_lived_tokens_are_cached_for_half_their_life() -> None:
    """Row 38 in the SDK: a 20 s token is reused while 10 s are left (the fixed 60 s margin
    never cached it); an hour-long one keeps the 60 s margin."""
    now = [1000.0]
    for lifetime, reused_until, margin in ((20, 1009.5, 10), (3600, 4539.5, 60)):
        vault = _VaultAnswers(lifetime)
        client = VaultClient(
            "https://vault.example.test",
            user=UserIdentity(user_id="u"),
            credentials=new_principal("t", "r", "s").credentials(),
            region="us-east-1",
            http=vault,
            clock=lambda: now[0],
        )  # type: ignore[arg-type]
        now[0] = 1000.0
        first = client.get_token("calendar", "calendar.read")
        now[0] = reused_until
        assert client.get_token("calendar", "calendar.read") is first, lifetime
        assert vault.token_requests == 1
        now[0] = 1000.0 + lifetime - margin + 0.5
        assert client.get_token("calendar", "calendar.read").access_token == "tok-2"
        assert vault.token_requests == 2
