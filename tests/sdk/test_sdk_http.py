"""The SDK's httpx client and transports (contract 12): proxy, dpop and bearer delivery.

The provider is the real oidc-provider and its calendar API, which verifies DPoP for real. The
vault's side of contract 12 (the `providers` member of the session answer, `dpop` token delivery,
the proxy route) is played by `StandInVault` until that side is merged: it checks what the SDK
sends with the vault's own checks (SigV4 with local mode's verifier, proofs with
`vault.proofs.verify_proof`) and does what the contract says the vault does with it (forward the
token-endpoint proof as the `DPoP` header of a real refresh; proxy to the real calendar API).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from joserfc import jws

from agent_vault import (
    AsyncVaultTransport,
    ConsentRequired,
    ProviderAccess,
    SessionInfo,
    SessionKey,
    UserIdentity,
    VaultClient,
    VaultError,
    VaultTransport,
    requires_http,
)
from agent_vault.proofs import access_token_hash
from agent_vault_local.adapter import GatewayRefusal, SigV4Verifier
from agent_vault_local.credentials import PrincipalRegistry, new_principal
from agent_vault_local.provider import CALENDAR_EVENTS_PATH, AuthorizationServer
from vault.errors import InvalidProof
from vault.proofs import verify_proof

VAULT = "https://vault.example.test"
REGION = "us-east-1"
PROVIDER = "calendar"
SID = "ses_standin"
SCOPES = ("calendar.read",)
TOKEN_PROOF = "X-Agent-Vault-Token-DPoP"


def _problem(status: int, code: str, **members: Any) -> SimpleNamespace:
    body = {"type": "about:blank", "status": status, "code": code, "detail": code, **members}
    return SimpleNamespace(
        status=status,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/problem+json"},
    )


class StandInVault:
    """The vault as the SDK sees it under contract 12, for one agent of one delivery."""

    def __init__(
        self,
        server: AuthorizationServer,
        delivery: str,
        *,
        api_base_urls: tuple[str, ...] | None = None,
        consented: bool = True,
        says_providers: bool = True,
    ) -> None:
        self.server = server
        self.delivery = delivery
        self.api_base_urls = api_base_urls or (server.calendar_api_base,)
        self.consented = consented
        self.says_providers = says_providers
        """False: a session answer without `providers` (a vault before contract 12)."""
        self.misbound = 0
        """How many of the next DPoP tokens to bind to another key than the session's."""
        self.principal = new_principal("agent", "agent-role", "task-1")
        self.verifier = SigV4Verifier(PrincipalRegistry([self.principal]), region=REGION)
        authorized = server.authorize("alice", "alice-password")
        redeemed = server.token_request(
            {
                "grant_type": "authorization_code",
                "code": authorized.code,
                "redirect_uri": authorized.redirect_uri,
                "code_verifier": authorized.code_verifier,
            }
        )
        assert redeemed.status == 200
        self.refresh_token = str(redeemed.json()["refresh_token"])
        self.jkt: str | None = None
        self.jtis: set[str] = set()
        self.token_requests: list[str | None] = []
        """The X-Agent-Vault-Token-DPoP of every token request (None when absent)."""
        self.handed_out: list[str] = []
        self.proxied: list[httpx.Request] = []
        self.authorizations = 0

    def client(self, **kwargs: Any) -> VaultClient:
        return VaultClient(
            VAULT,
            user=UserIdentity(user_id="alice"),
            credentials=self.principal.credentials(),
            region=REGION,
            http=self,  # type: ignore[arg-type]
            **kwargs,
        )

    # -- the vault's own checks ------------------------------------------------------------------

    def _check(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, sid: str | None
    ) -> None:
        parts = urlsplit(url)
        self.verifier.verify(method, parts.path, parts.query, headers, body)  # SigV4
        proof = next((v for k, v in headers if k.lower() == "dpop"), None)
        checked = verify_proof(
            proof,
            method=method,
            url=url,
            now=time.time(),
            max_age=60,
            session_id=sid,
            expected_jkt=self.jkt if sid else None,  # a session start brings its key
        )
        assert checked.jti not in self.jtis, "a proof was sent twice"
        self.jtis.add(checked.jti)
        if sid is None:
            self.jkt = checked.jkt

    def _refresh(self, dpop: str | None) -> Any:
        response = self.server.token_request(
            {"grant_type": "refresh_token", "refresh_token": self.refresh_token}, dpop=dpop
        )
        body = response.json()
        if response.status == 200:
            self.refresh_token = body["refresh_token"]
        return response, body

    # -- the urllib3 side of VaultClient ---------------------------------------------------------

    def request(
        self, method: str, url: str, body: bytes | None = None, headers: Any = None, **_: Any
    ) -> SimpleNamespace:
        path = urlsplit(url).path
        # what arrives on the wire: urllib3 adds the Host header
        items = [("Host", urlsplit(url).netloc), *(headers or {}).items()]
        try:
            self._check(method, url, items, body or b"", None if path == "/v1/sessions" else SID)
        except (GatewayRefusal, InvalidProof) as exc:
            return _problem(401, "invalid_proof", detail=str(exc))
        if path == "/v1/sessions":
            answer = {
                "session_id": SID,
                "agent": "calendar-agent",
                "user": {"iss": self.server.issuer, "sub": "alice"},
                "jkt": self.jkt,
                "status": "active",
                "created_at": time.time(),
                "expires_at": time.time() + 3600,
            }
            if self.says_providers:
                answer["providers"] = {
                    PROVIDER: {"delivery": self.delivery, "api_base_urls": list(self.api_base_urls)}
                }
            return SimpleNamespace(status=201, data=json.dumps(answer).encode(), headers={})
        if path.endswith("/authorizations"):
            self.authorizations += 1
            answer = {
                "flow_id": f"flow_{self.authorizations}",
                "authorization_url": f"{self.server.authorization_endpoint}?n=1",
                "expires_at": time.time() + 600,
            }
            return SimpleNamespace(status=201, data=json.dumps(answer).encode(), headers={})
        assert path == f"/v1/sessions/{SID}/tokens", path
        return self._token_route(dict(items))

    def _token_route(self, headers: dict[str, str]) -> SimpleNamespace:
        proof = next((v for k, v in headers.items() if k.lower() == TOKEN_PROOF.lower()), None)
        self.token_requests.append(proof)
        if self.delivery == "proxy":
            return _problem(403, "delivery_proxy_only", provider=PROVIDER)
        if not self.consented:
            return _problem(403, "consent_required", provider=PROVIDER, missing_scopes=SCOPES)
        endpoint = self.server.token_endpoint
        if self.delivery == "dpop":
            if proof is None:
                return _problem(400, "dpop_proof_required", htu=endpoint)
            checked = verify_proof(
                proof,
                method="POST",
                url=endpoint,
                now=time.time(),
                max_age=60,
                session_id=None,
                expected_jkt=self.jkt,  # the session's own key, nobody else's
            )
            assert checked.jti not in self.jtis
            self.jtis.add(checked.jti)
        if proof is not None and self.misbound:
            self.misbound -= 1
            proof = SessionKey().dpop_proof("POST", endpoint)
        response, body = self._refresh(proof if self.delivery == "dpop" else None)
        if body.get("error") == "use_dpop_nonce":
            return _problem(
                400, "dpop_nonce_required", nonce=response.headers["DPoP-Nonce"], htu=endpoint
            )
        assert response.status == 200, body
        self.handed_out.append(body["access_token"])
        answer = {
            "access_token": body["access_token"],
            "token_type": body["token_type"],
            "expires_in": body["expires_in"],
            "scope": " ".join(SCOPES),
            "provider": PROVIDER,
        }
        return SimpleNamespace(status=200, data=json.dumps(answer).encode(), headers={})

    def clear(self) -> None:
        """urllib3's PoolManager.clear (VaultClient.close calls it)."""

    # -- the proxy route (an httpx transport) ----------------------------------------------------

    def proxy(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        raw_path, _, query = request.url.raw_path.decode("ascii").partition("?")
        url = f"{request.url.scheme}://{request.url.netloc.decode()}{raw_path}"
        try:
            self._check(
                request.method,
                url + (f"?{query}" if query else ""),
                request.headers.multi_items(),
                body,
                SID,
            )
        except (GatewayRefusal, InvalidProof) as exc:
            return httpx.Response(401, json={"code": "invalid_proof", "detail": str(exc)})
        self.proxied.append(request)
        prefix = f"/v1/sessions/{SID}/proxy/{PROVIDER}"
        assert raw_path.startswith(prefix + "/"), raw_path
        base = request.headers.get("x-agent-vault-api-base", self.api_base_urls[0])
        if not self.consented:
            return httpx.Response(
                403,
                json={"code": "consent_required", "provider": PROVIDER, "missing_scopes": SCOPES},
            )
        if base not in self.api_base_urls or request.method != "GET":
            return httpx.Response(403, json={"code": "request_not_allowed", "detail": base})
        _, token = self._refresh(None)
        upstream = httpx.get(
            base + raw_path[len(prefix) :] + (f"?{query}" if query else ""),
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
        return httpx.Response(
            upstream.status_code,
            headers={
                "Content-Type": upstream.headers["content-type"],
                "X-Agent-Vault-Proxy": "upstream",
            },
            content=upstream.content,
        )


class Counting(httpx.HTTPTransport):
    """The real transport to the provider, counting what it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)


@pytest.fixture
def server(authorization_server: AuthorizationServer) -> Iterator[AuthorizationServer]:
    yield authorization_server
    authorization_server.require_dpop_nonce(token=False, api=False)


def _claims(proof: str) -> dict[str, Any]:
    return dict(json.loads(jws.extract_compact(proof.encode()).payload))


# -- what the vault tells the SDK ----------------------------------------------------------------


def test_the_session_answer_says_how_each_provider_is_reached() -> None:
    info = SessionInfo.from_json(
        {
            "session_id": "ses_x",
            "providers": {
                "calendar": {
                    "delivery": "proxy",
                    "api_base_urls": ["https://www.googleapis.com", "https://x.test/v2"],
                },
                "github": {"delivery": "dpop", "api_base_urls": [], "scopes": ["repo", "user"]},
                "odd": "not an object",
            },
        }
    )
    assert info.providers == {
        "calendar": ProviderAccess("proxy", ("https://www.googleapis.com", "https://x.test/v2")),
        "github": ProviderAccess("dpop", (), ("repo", "user")),
    }
    assert SessionInfo.from_json({"session_id": "ses_y"}).providers == {}


def test_dpop_proof_for_a_provider_follows_rfc_9449() -> None:
    key = SessionKey()
    # RFC 9449 §7.1's example: the ath of this access token
    assert (
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
        == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )
    proof = key.dpop_proof(
        "get", "https://API.example.test/cal/events?day=1#x", nonce="n-1", access_token="tok"
    )
    header = jws.extract_compact(proof.encode()).protected
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk}
    claims = _claims(proof)
    assert set(claims) == {"jti", "htm", "htu", "iat", "nonce", "ath"}
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://api.example.test/cal/events"
    assert claims["nonce"] == "n-1"
    assert claims["ath"] == access_token_hash("tok")
    token_endpoint_proof = _claims(key.dpop_proof("POST", "https://idp.test/token"))
    assert set(token_endpoint_proof) == {"jti", "htm", "htu", "iat"}  # no sid, nonce or ath


# -- dpop delivery -------------------------------------------------------------------------------


def test_dpop_token_request_carries_a_proof_for_the_token_endpoint_and_handles_nonces(
    server: AuthorizationServer,
) -> None:
    vault = StandInVault(server, "dpop")
    client = vault.client()
    server.require_dpop_nonce(token=True)

    token = client.get_token(PROVIDER, SCOPES)

    # no proof -> dpop_proof_required (htu); a proof -> dpop_nonce_required; with the nonce -> ok
    assert [p is not None for p in vault.token_requests] == [False, True, True]
    first, second = (_claims(p) for p in vault.token_requests[1:] if p is not None)
    assert first["htu"] == second["htu"] == server.token_endpoint
    assert "nonce" not in first and second["nonce"]
    assert first["jti"] != second["jti"]
    assert token.token_type == "DPoP"
    session = client.session
    assert session is not None
    assert server.introspect(token.access_token)["cnf"] == {"jkt": session.jkt}
    # the next request signs at once, with the nonce it learned
    client.forget_token(PROVIDER, SCOPES)
    client.get_token(PROVIDER, SCOPES)
    assert len(vault.token_requests) == 4
    assert _claims(vault.token_requests[3] or "")["nonce"] == second["nonce"]


def test_dpop_client_calls_the_real_api_with_a_proof_per_request(
    server: AuthorizationServer,
) -> None:
    vault = StandInVault(server, "dpop")
    sent = Counting()
    server.reset_stats()
    with vault.client().http(PROVIDER, scopes=SCOPES, transport=sent) as api:
        assert str(api.base_url) == server.calendar_api_base + "/"
        for _ in range(2):
            response = api.get(CALENDAR_EVENTS_PATH, params={"day": "today"})
            assert response.status_code == 200, response.text
            assert response.json()["user"] == "alice"
    assert server.stats()["api_requests"] == {"bearer": 0, "dpop": 2}
    token = vault.handed_out[0]
    assert len(vault.handed_out) == 1  # cached
    proofs = [_claims(r.headers["DPoP"]) for r in sent.sent]
    assert [r.headers["Authorization"] for r in sent.sent] == [f"DPoP {token}"] * 2
    assert {p["htu"] for p in proofs} == {server.calendar_url}  # no query
    assert {p["ath"] for p in proofs} == {access_token_hash(token)}
    assert proofs[0]["jti"] != proofs[1]["jti"]


def test_dpop_client_retries_once_with_the_resource_servers_nonce(
    server: AuthorizationServer,
) -> None:
    vault = StandInVault(server, "dpop")
    sent = Counting()
    server.require_dpop_nonce(api=True)
    server.reset_stats()
    with vault.client().http(PROVIDER, scopes=SCOPES, transport=sent) as api:
        assert api.get(CALENDAR_EVENTS_PATH).status_code == 200
        assert api.get(CALENDAR_EVENTS_PATH).status_code == 200  # the nonce is remembered
    assert ["nonce" in _claims(r.headers["DPoP"]) for r in sent.sent] == [False, True, True]
    stats = server.stats()
    assert stats["api_refusals"] == {"use_dpop_nonce": 1}
    assert stats["api_requests"]["dpop"] == 2


def test_a_refused_token_is_replaced_once(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "dpop")
    vault.misbound = 1  # the first token is bound to a key the session does not have
    client = vault.client()
    with client.http(PROVIDER, scopes=SCOPES) as api:
        assert api.get(CALENDAR_EVENTS_PATH).status_code == 200
        assert len(vault.handed_out) == 2
        # a token that stays refused: one new token, then the provider's 401 is the answer
        vault.misbound = 2
        client.forget_token(PROVIDER, SCOPES)
        response = api.get(CALENDAR_EVENTS_PATH)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert len(vault.handed_out) == 4


def test_a_token_never_leaves_for_another_host(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "dpop")
    sent = Counting()
    with vault.client().http(PROVIDER, scopes=SCOPES, transport=sent) as api:
        for url in (
            "https://attacker.example/steal",
            f"{server.issuer}/token",  # same host, outside the API base URL
            f"{server.issuer}/apiary",  # a prefix, not a path under it
            f"{server.calendar_api_base}/%2e%2e/token",  # out again once the server decodes it
            f"{server.calendar_api_base}/calendar%2F..%2F..%2Ftoken",
        ):
            with pytest.raises(VaultError) as refused:
                api.get(url)
            assert refused.value.code == "request_not_allowed"
    assert sent.sent == []
    assert vault.token_requests == []


def test_bearer_delivery_sends_the_token_as_a_bearer_token(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "bearer")
    sent = Counting()
    server.reset_stats()
    with vault.client().http(PROVIDER, scopes=SCOPES, transport=sent) as api:
        assert api.get(CALENDAR_EVENTS_PATH).status_code == 200
    assert sent.sent[0].headers["Authorization"] == f"Bearer {vault.handed_out[0]}"
    assert "DPoP" not in sent.sent[0].headers
    assert vault.token_requests == [None]
    assert server.stats()["api_requests"] == {"bearer": 1, "dpop": 0}


def test_async_dpop_client(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "dpop")
    server.require_dpop_nonce(api=True)

    async def main() -> list[int]:
        async with vault.client().ahttp(PROVIDER, scopes=SCOPES) as api:
            answers = await asyncio.gather(*(api.get(CALENDAR_EVENTS_PATH) for _ in range(3)))
            return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200, 200, 200]
    assert len(vault.handed_out) == 1


# -- proxy delivery ------------------------------------------------------------------------------


def _proxy_client(
    vault: StandInVault, *, proxy_url: str | None = None, **kwargs: Any
) -> httpx.Client:
    client = vault.client(proxy_url=proxy_url)
    transport = VaultTransport(
        client, PROVIDER, transport=httpx.MockTransport(vault.proxy), **kwargs
    )
    return httpx.Client(base_url=transport.base_url, transport=transport)


def test_proxy_delivery_signs_every_call_and_returns_the_providers_answer(
    server: AuthorizationServer,
) -> None:
    vault = StandInVault(server, "proxy")
    with _proxy_client(vault) as api:
        response = api.get(
            CALENDAR_EVENTS_PATH,
            params={"day": "2026-01-02", "q": "a b"},
            headers={"Authorization": "Bearer mine", "Cookie": "c=1", "X-Trace": "t-1"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["user"] == "alice"
        assert response.headers["X-Agent-Vault-Proxy"] == "upstream"
        missing = api.get("/calendar/nothing")  # the provider's own 404 is an answer, not an error
        assert missing.status_code == 404
    first = vault.proxied[0]
    assert first.url.path == f"/v1/sessions/{SID}/proxy/{PROVIDER}{CALENDAR_EVENTS_PATH}"
    assert dict(parse_qsl(first.url.query.decode())) == {"day": "2026-01-02", "q": "a b"}
    assert first.headers["X-Trace"] == "t-1"  # forwarded (unsigned)
    assert "cookie" not in first.headers
    assert first.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")  # SigV4, not ours
    assert "x-agent-vault-api-base" not in first.headers  # the first base URL
    assert vault.token_requests == []  # the token never left the vault


def test_proxied_calls_go_to_the_proxy_url_when_it_is_its_own(
    server: AuthorizationServer,
) -> None:
    """`agent_endpoint: "function_url"`: the egress proxy has a URL of its own."""
    vault = StandInVault(server, "proxy")
    with _proxy_client(vault, proxy_url="https://proxy.example.test/") as api:
        assert api.get(CALENDAR_EVENTS_PATH).status_code == 200
    (sent,) = vault.proxied
    assert sent.url.host == "proxy.example.test"
    assert sent.url.path == f"/v1/sessions/{SID}/proxy/{PROVIDER}{CALENDAR_EVENTS_PATH}"
    assert sent.headers["host"] == "proxy.example.test"  # what was signed is where it went


def test_proxy_names_another_api_base_url(server: AuthorizationServer) -> None:
    second = f"{server.issuer}/api/v2"
    vault = StandInVault(server, "proxy", api_base_urls=(server.calendar_api_base, second))
    with _proxy_client(vault, api_base=second) as api:
        assert str(api.base_url) == second + "/"
        api.get("/calendar/events")
        api.get(f"{server.calendar_api_base}/calendar/events")
    assert vault.proxied[0].headers["X-Agent-Vault-Api-Base"] == second
    assert "x-agent-vault-api-base" not in vault.proxied[1].headers
    with pytest.raises(ValueError, match="not one of"):
        VaultTransport(vault.client(), PROVIDER, api_base="https://elsewhere.test").base_url  # noqa: B018


def test_proxy_refusals_of_the_vault_are_raised_with_their_code(
    server: AuthorizationServer,
) -> None:
    vault = StandInVault(server, "proxy", consented=False)
    with _proxy_client(vault) as api:
        with pytest.raises(ConsentRequired) as consent:
            api.get(CALENDAR_EVENTS_PATH)
        assert consent.value.missing_scopes == list(SCOPES)
        vault.consented = True
        with pytest.raises(VaultError) as refused:
            api.post(CALENDAR_EVENTS_PATH, json={"title": "x"})
        assert (refused.value.status, refused.value.code) == (403, "request_not_allowed")


def test_get_token_of_a_proxy_agent_is_refused(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "proxy")
    with pytest.raises(VaultError) as refused:
        vault.client().get_token(PROVIDER, SCOPES)
    assert (refused.value.status, refused.value.code) == (403, "delivery_proxy_only")


def test_async_proxy_client(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "proxy")

    async def handler(request: httpx.Request) -> httpx.Response:
        return await asyncio.to_thread(vault.proxy, request)

    async def main() -> int:
        client = vault.client()
        transport = AsyncVaultTransport(client, PROVIDER, transport=httpx.MockTransport(handler))
        async with httpx.AsyncClient(base_url=transport.base_url, transport=transport) as api:
            return (await api.get(CALENDAR_EVENTS_PATH)).status_code

    assert asyncio.run(main()) == 200
    assert len(vault.proxied) == 1


# -- without what the vault says (a vault before contract 12) ------------------------------------


def test_overrides_stand_in_for_what_the_vault_does_not_say(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "bearer", says_providers=False)
    client = vault.client()
    with pytest.raises(VaultError) as unknown:
        client.http(PROVIDER)
    assert unknown.value.code == "delivery_unknown"
    with client.http(
        PROVIDER, delivery="bearer", api_base=server.calendar_api_base, scopes=SCOPES
    ) as api:
        assert api.get(CALENDAR_EVENTS_PATH).status_code == 200


# -- the decorator -------------------------------------------------------------------------------


def test_requires_http_waits_for_consent_before_a_dpop_call(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "dpop", consented=False)
    client = vault.client()
    urls: list[str] = []

    def consent(url: str) -> None:
        urls.append(url)
        vault.consented = True

    @requires_http(PROVIDER, SCOPES, client=client, on_auth_url=consent, poll_interval=0.01)
    def events(*, http: httpx.Client) -> Any:
        return http.get(CALENDAR_EVENTS_PATH).json()

    assert events()["user"] == "alice"
    assert len(urls) == 1 and vault.authorizations == 1


def test_requires_http_waits_for_consent_of_a_proxied_call(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "proxy", consented=False)
    client = vault.client()
    calls: list[str] = []

    @requires_http(
        PROVIDER,
        SCOPES,
        client=client,
        transport=httpx.MockTransport(vault.proxy),
        on_auth_url=lambda url: setattr(vault, "consented", True),
        poll_interval=0.01,
    )
    def events(*, http: httpx.Client) -> Any:
        calls.append("call")
        return http.get(CALENDAR_EVENTS_PATH).json()

    assert events()["user"] == "alice"
    assert calls == ["call", "call"]  # refused, then called again once consent was given
    assert vault.authorizations == 1
    # a refused call that is not safe to repeat is not repeated: the URL comes with the error
    vault.consented = False

    urls: list[str] = []

    @requires_http(
        PROVIDER,
        SCOPES,
        client=client,
        transport=httpx.MockTransport(vault.proxy),
        on_auth_url=urls.append,
    )
    def delete(*, http: httpx.Client) -> Any:
        calls.append("delete")
        return http.delete(CALENDAR_EVENTS_PATH)

    with pytest.raises(ConsentRequired) as needed:
        delete()
    assert needed.value.authorization_url == urls[0]
    assert calls[2:] == ["delete"]
    assert [r.method for r in vault.proxied[-1:]] == ["DELETE"]


def test_requires_http_on_a_coroutine_function(server: AuthorizationServer) -> None:
    vault = StandInVault(server, "dpop")
    client = vault.client()

    @requires_http(PROVIDER, SCOPES, client=client)
    async def events(*, http: httpx.AsyncClient) -> Any:
        return (await http.get(CALENDAR_EVENTS_PATH)).json()

    assert asyncio.run(events())["user"] == "alice"
