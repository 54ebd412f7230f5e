"""The external authorization server behaves as the vault relies on.

These drive the real oidc-provider (started by the ``authorization_server`` fixture) with plain
HTTP: discovery, the code flow with PKCE and resource indicators, refresh narrowing and rotation,
reuse detection, revocation, introspection, consent refusal, the identity token, DPoP-bound tokens
(RFC 9449) at the token endpoint and the calendar API, and the test hooks (faults, counters,
nonce demands).
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from agent_vault.proofs import SessionKey
from agent_vault_local.consent_forms import ConsentFormError, complete_consent
from agent_vault_local.provider import (
    CALENDAR_EVENTS_PATH,
    RESOURCE,
    AuthorizationServer,
    Authorized,
    http_request,
)
from vault.oauth.client import new_code_verifier

SCOPES = "openid offline_access calendar.read calendar.write"


@pytest.fixture
def server(authorization_server: AuthorizationServer) -> Iterator[AuthorizationServer]:
    """The session's server, with no faults or DPoP nonce demands left behind by a test."""
    yield authorization_server
    authorization_server.clear_faults()
    authorization_server.require_dpop_nonce(token=False, api=False)


def redeem(server: AuthorizationServer, authorized: Authorized, **extra: str) -> tuple[int, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": authorized.code,
        "redirect_uri": authorized.redirect_uri,
        "code_verifier": authorized.code_verifier,
        **extra,
    }
    response = server.token_request(form, client_id=authorized.client_id)
    return response.status, response.json()


def refresh(
    server: AuthorizationServer, refresh_token: str, scope: str | None = None
) -> tuple[int, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        form["scope"] = scope
    response = server.token_request(form)
    return response.status, response.json()


def consented_tokens(server: AuthorizationServer, user: str = "alice") -> dict[str, Any]:
    authorized = server.authorize(user, f"{user}-password")
    status, body = redeem(server, authorized)
    assert status == 200, body
    return dict(body)


def test_discovery_document(server: AuthorizationServer) -> None:
    response = http_request("GET", server.discovery_url)
    assert response.status == 200
    metadata = response.json()
    assert metadata["issuer"] == server.issuer
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["revocation_endpoint"] == server.revocation_endpoint
    assert metadata["introspection_endpoint"] == server.introspection_endpoint
    assert metadata["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])
    assert {"client_secret_basic", "client_secret_post"} <= set(
        metadata["token_endpoint_auth_methods_supported"]
    )


def test_code_flow_with_pkce_and_resource(server: AuthorizationServer) -> None:
    authorized = server.authorize("alice", "alice-password", scope=SCOPES, resource=RESOURCE)

    callback = urllib.parse.urlsplit(authorized.callback_url)
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == authorized.redirect_uri
    assert authorized.params["state"] == authorized.state
    assert authorized.params["iss"] == server.issuer  # RFC 9207
    assert authorized.params["code"]

    status, body = redeem(server, authorized)
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].count(".") == 0  # opaque, not a JWT
    assert body["refresh_token"]
    assert "id_token" in body
    # the scope answered is the access token's: the resource's scopes only
    assert body["scope"] == "calendar.read calendar.write"

    info = server.introspect(body["access_token"])
    assert info["active"] is True
    assert info["scope"] == "calendar.read calendar.write"
    assert info["aud"] == RESOURCE
    assert info["sub"] == "alice"
    assert info["client_id"] == "agent-vault"
    assert info["iss"] == server.issuer

    status, calendar = server.calendar(body["access_token"])
    assert status == 200
    assert calendar["user"] == "alice"
    assert len(calendar["events"]) == 2


def test_client_secret_post_client_and_default_resource(server: AuthorizationServer) -> None:
    authorized = server.authorize(
        "bob",
        "bob-password",
        client_id="agent-vault-post",
        resource=None,
        scope="offline_access calendar.read",
    )
    status, body = redeem(server, authorized)
    assert status == 200, body
    assert body["scope"] == "calendar.read"
    assert "id_token" not in body  # no openid scope asked
    info = server.introspect(body["access_token"])
    assert (info["active"], info["aud"], info["sub"]) == (True, RESOURCE, "bob")
    # the same client authenticated the other way is refused
    wrong = server.token_request(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        client_id="agent-vault",
    )
    assert wrong.status == 400 and wrong.json()["error"] == "invalid_grant"


def test_no_refresh_token_without_offline_access(server: AuthorizationServer) -> None:
    authorized = server.authorize("alice", "alice-password", scope="openid calendar.read")
    status, body = redeem(server, authorized)
    assert status == 200, body
    assert "refresh_token" not in body
    # offline_access is dropped unless prompt=consent is sent too
    authorized = server.authorize("alice", "alice-password", scope=SCOPES, prompt=None)
    status, body = redeem(server, authorized)
    assert status == 200, body
    assert "refresh_token" not in body
    assert server.introspect(body["access_token"])["active"] is True


def test_pkce_is_required_at_authorization(server: AuthorizationServer) -> None:
    url = server.authorization_url(scope=SCOPES, state="s", code_challenge="x" * 43)
    without = url.replace("code_challenge=", "unused=")
    callback = complete_consent(without, "alice", "alice-password")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)
    assert params["error"] == ["invalid_request"]
    assert params["state"] == ["s"]
    assert "code_challenge" in params["error_description"][0]


def test_missing_or_wrong_code_verifier_is_invalid_grant(server: AuthorizationServer) -> None:
    authorized = server.authorize("alice", "alice-password")
    missing = server.token_request(
        {
            "grant_type": "authorization_code",
            "code": authorized.code,
            "redirect_uri": authorized.redirect_uri,
        }
    )
    assert missing.status == 400 and missing.json()["error"] == "invalid_grant"
    status, body = redeem(server, authorized, code_verifier=new_code_verifier())
    assert (status, body["error"]) == (400, "invalid_grant")
    # a failed PKCE check does not consume the code: the right verifier still redeems it
    status, body = redeem(server, authorized)
    assert status == 200, body


def test_replayed_code_is_invalid_grant_and_revokes_what_it_issued(
    server: AuthorizationServer,
) -> None:
    authorized = server.authorize("alice", "alice-password")
    status, first = redeem(server, authorized)
    assert status == 200
    status, body = redeem(server, authorized)
    assert (status, body["error"]) == (400, "invalid_grant")
    # oidc-provider revokes the whole grant on code reuse (RFC 6749 §4.1.2)
    assert server.introspect(first["access_token"])["active"] is False
    status, body = refresh(server, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


def test_redirect_uri_must_match_exactly(server: AuthorizationServer) -> None:
    with pytest.raises(ConsentFormError, match="redirect_uri"):
        server.authorize("alice", "alice-password", redirect_uri=server.redirect_uris[0] + "/other")


def test_refresh_narrows_scope_and_rotates(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    status, narrowed = refresh(server, tokens["refresh_token"], scope="calendar.read")
    assert status == 200, narrowed
    assert narrowed["scope"] == "calendar.read"
    assert narrowed["refresh_token"] != tokens["refresh_token"]  # rotated
    info = server.introspect(narrowed["access_token"])
    assert (info["active"], info["scope"]) == (True, "calendar.read")

    # the rotated refresh token keeps the whole grant: a later refresh may ask for all of it
    status, full = refresh(server, narrowed["refresh_token"])
    assert status == 200, full
    assert full["scope"] == "calendar.read calendar.write"
    # scopes beyond the grant are refused
    status, body = refresh(server, full["refresh_token"], scope="calendar.read mail.read")
    assert (status, body["error"]) == (400, "invalid_scope")
    # ... without consuming the refresh token
    status, body = refresh(server, full["refresh_token"], scope="calendar.write")
    assert status == 200, body
    # earlier access tokens stay valid after rotation
    assert server.introspect(tokens["access_token"])["active"] is True


def test_reused_refresh_token_revokes_the_grant(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    status, rotated = refresh(server, tokens["refresh_token"])
    assert status == 200
    status, body = refresh(server, tokens["refresh_token"])  # reuse of the rotated-out token
    assert (status, body["error"]) == (400, "invalid_grant")
    assert body["error_description"] == "grant request is invalid"
    # the whole grant is gone: the new refresh token and every access token are dead too
    status, body = refresh(server, rotated["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert server.introspect(rotated["access_token"])["active"] is False
    assert server.introspect(tokens["access_token"])["active"] is False


def test_revoking_an_access_token_revokes_every_token_of_its_grant(
    server: AuthorizationServer,
) -> None:
    tokens = consented_tokens(server)
    status, second = refresh(server, tokens["refresh_token"], scope="calendar.read")
    assert status == 200
    server.reset_stats()

    assert server.revoke(tokens["access_token"], token_type_hint="access_token") == 200
    assert server.introspect(tokens["access_token"]) == {"active": False}
    status, body = server.calendar(tokens["access_token"])
    assert (status, body["error"]) == (401, "invalid_token")
    # RFC 7009 §2.1 lets a server revoke related tokens; oidc-provider revokes every token issued
    # under the grant: the other access token and the (rotated) refresh token die too ...
    assert server.introspect(second["access_token"])["active"] is False
    status, body = refresh(server, second["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    # ... while the grant record itself is kept (no grant.revoked event)
    assert server.stats()["grants_revoked"] == 0
    # revoking again, or revoking garbage, is still 200 (RFC 7009 §2.2)
    assert server.revoke(tokens["access_token"]) == 200
    assert server.revoke(secrets.token_urlsafe(32)) == 200


def test_revoking_a_refresh_token_revokes_the_grant(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    server.reset_stats()
    assert server.revoke(tokens["refresh_token"], token_type_hint="refresh_token") == 200
    assert server.introspect(tokens["access_token"])["active"] is False
    status, body = refresh(server, tokens["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert server.stats()["grants_revoked"] == 1


def test_tokens_of_other_grants_survive_a_revocation(server: AuthorizationServer) -> None:
    alice, bob = consented_tokens(server, "alice"), consented_tokens(server, "bob")
    alice_again = consented_tokens(server, "alice")  # a second consent: another grant
    assert server.revoke(alice["refresh_token"]) == 200
    assert server.introspect(bob["access_token"])["active"] is True
    assert server.introspect(alice_again["access_token"])["active"] is True
    assert refresh(server, alice_again["refresh_token"])[0] == 200


def test_revocation_needs_client_authentication_and_ownership(
    server: AuthorizationServer,
) -> None:
    tokens = consented_tokens(server)
    anonymous = http_request(
        "POST", server.revocation_endpoint, form={"token": tokens["access_token"]}
    )
    assert anonymous.status == 400 and anonymous.json()["error"] == "invalid_request"
    other_client = server.revoke(tokens["access_token"], client_id="agent-app")
    assert other_client == 400
    assert server.introspect(tokens["access_token"])["active"] is True


def test_introspection_policy(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    # the resource server sees access tokens for its resource, not refresh tokens
    assert server.introspect(tokens["access_token"])["active"] is True
    assert server.introspect(tokens["refresh_token"]) == {"active": False}
    # the vault sees its own tokens, refresh tokens included; another client sees nothing
    own = server.introspect(tokens["refresh_token"], client_id="agent-vault")
    assert own["active"] is True and own["scope"] == SCOPES
    assert server.introspect(tokens["access_token"], client_id="agent-app") == {"active": False}
    unauthenticated = http_request(
        "POST", server.introspection_endpoint, form={"token": tokens["access_token"]}
    )
    assert unauthenticated.status in {400, 401}
    # the loopback test hook introspects as the resource server
    query = urllib.parse.urlencode({"token": tokens["access_token"]})
    shortcut = http_request("GET", f"{server.issuer}/__test/introspect?{query}").json()
    assert shortcut["active"] is True and shortcut["sub"] == "alice"


def test_calendar_api_checks_token_and_scope(server: AuthorizationServer) -> None:
    response = http_request("GET", server.calendar_url)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")

    status, body = server.calendar("not-a-token")
    assert (status, body["error"]) == (401, "invalid_token")

    tokens = consented_tokens(server)
    status, write_only = refresh(server, tokens["refresh_token"], scope="calendar.write")
    assert status == 200
    response = http_request(
        "GET",
        server.calendar_url,
        headers={"Authorization": f"Bearer {write_only['access_token']}"},
    )
    assert response.status == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_deny_at_consent_returns_access_denied(server: AuthorizationServer) -> None:
    authorized = server.authorize("alice", "alice-password", decision="deny")
    assert authorized.params["error"] == "access_denied"
    assert authorized.params["state"] == authorized.state
    assert authorized.params["iss"] == server.issuer
    assert "code" not in authorized.params


def test_wrong_password_raises(server: AuthorizationServer) -> None:
    with pytest.raises(ConsentFormError, match="Invalid username or password"):
        server.authorize("alice", "bob-password")
    with pytest.raises(ConsentFormError, match="Invalid username or password"):
        server.login_id_token("mallory", "mallory-password")


def test_login_id_token_is_a_verifiable_identity(server: AuthorizationServer) -> None:
    id_token = server.login_id_token("alice", "alice-password")
    keys = KeySet.import_key_set(http_request("GET", server.jwks_uri).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    claims = token.claims
    assert token.header["alg"] == "RS256"
    assert claims["iss"] == server.issuer
    assert claims["sub"] == "alice"
    assert claims["aud"] == "agent-app"
    assert claims["exp"] > claims["iat"]
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": server.issuer},
        aud={"essential": True, "value": "agent-app"},
    ).validate(claims)
    assert server.login_id_token("bob", "bob-password") != id_token


def test_token_endpoint_faults_and_counters(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    server.reset_stats()

    server.set_faults(token_endpoint={"status": 503, "remaining": 2})
    assert refresh(server, tokens["refresh_token"])[0] == 503
    assert refresh(server, tokens["refresh_token"])[0] == 503
    # the faults answered without processing: the refresh token is still unused
    status, refreshed = refresh(server, tokens["refresh_token"])
    assert status == 200, refreshed
    assert refresh(server, refreshed["refresh_token"], scope="calendar.read")[0] == 200

    stats = server.stats()
    assert stats["token_requests"]["refresh_token"] == 4
    assert stats["token_successes"]["refresh_token"] == 2
    assert stats["token_requests"]["authorization_code"] == 0
    assert stats["faults_injected"] == 2

    assert refresh(server, tokens["refresh_token"])[0] == 400  # reuse after rotation
    stats = server.stats()
    assert stats["grant_errors"][-1] == {
        "grant_type": "refresh_token",
        "error": "invalid_grant",
        "error_description": "grant request is invalid",
    }
    assert stats["grants_revoked"] == 1


def test_stalled_token_endpoint_drops_abandoned_requests(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    server.reset_stats()
    server.set_faults(token_endpoint={"delay_ms": 10_000})
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        http_request(
            "POST",
            server.token_endpoint,
            form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            basic_auth=(server.client_id, server.client_secret),
            timeout=0.3,
        )
    # the caller gave up, so the stalled request never reached oidc-provider
    status, body = refresh(server, tokens["refresh_token"])
    assert status == 200, body
    stats = server.stats()
    assert stats["faults_injected"] == 1
    assert stats["dropped_requests"] == 1
    assert stats["token_requests"]["refresh_token"] == 1
    assert stats["token_successes"]["refresh_token"] == 1


def test_revocation_endpoint_faults(server: AuthorizationServer) -> None:
    tokens = consented_tokens(server)
    server.set_faults(revocation_endpoint={"status": 500})
    assert server.revoke(tokens["access_token"]) == 500
    assert server.introspect(tokens["access_token"])["active"] is True
    assert server.revoke(tokens["access_token"]) == 200
    assert server.introspect(tokens["access_token"])["active"] is False


def test_test_hooks_reject_bad_faults(server: AuthorizationServer) -> None:
    bad = http_request(
        "POST", f"{server.issuer}/__test/faults", json_body={"token_endpoint": {"status": 200}}
    )
    assert bad.status == 400
    unknown = http_request("POST", f"{server.issuer}/__test/faults", json_body={"userinfo": {}})
    assert unknown.status == 400


def test_configured_ttl_and_no_rotation() -> None:
    """A second server shows the knobs: access token lifetime, refresh rotation off."""
    with AuthorizationServer(access_token_ttl=120, rotate_refresh_token=False) as other:
        tokens = consented_tokens(other)
        assert tokens["expires_in"] == 120
        status, refreshed = refresh(other, tokens["refresh_token"])
        assert status == 200
        assert refreshed["expires_in"] == 120
        assert refreshed["refresh_token"] == tokens["refresh_token"]  # the same one, reusable
        assert refresh(other, tokens["refresh_token"])[0] == 200
    assert not other.running


# -- DPoP (RFC 9449): bound tokens at the token endpoint and at the calendar API ----------------


def dpop_refresh(
    server: AuthorizationServer, refresh_token: str, key: SessionKey, nonce: str | None = None
) -> tuple[int, Any, str | None]:
    """A refresh with a proof of ``key`` for the token endpoint: (status, body, DPoP-Nonce)."""
    response = server.token_request(
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        dpop=key.dpop_proof("POST", server.token_endpoint, nonce=nonce),
    )
    return response.status, response.json(), response.headers.get("DPoP-Nonce")


def bound_token(server: AuthorizationServer, key: SessionKey) -> str:
    """An access token bound to ``key`` (a confidential client's refresh with a proof, §5)."""
    status, body, _ = dpop_refresh(server, consented_tokens(server)["refresh_token"], key)
    assert status == 200, body
    return str(body["access_token"])


def calendar_with(server: AuthorizationServer, headers: dict[str, str]) -> tuple[int, str, str]:
    """(status, error, WWW-Authenticate) of a calendar API call with exactly these headers."""
    response = server.calendar_response(headers)
    challenge = ", ".join(response.headers.get_all("WWW-Authenticate") or [])
    return response.status, response.json().get("error", ""), challenge


def test_dpop_refresh_binds_the_access_token_to_the_proofs_key(
    server: AuthorizationServer,
) -> None:
    assert "ES256" in server.metadata["dpop_signing_alg_values_supported"]
    key = SessionKey()
    tokens = consented_tokens(server)
    status, body, _ = dpop_refresh(server, tokens["refresh_token"], key)
    assert status == 200, body
    assert body["token_type"] == "DPoP"
    info = server.introspect(body["access_token"])
    assert info["active"] is True
    assert info["token_type"] == "DPoP"
    assert info["cnf"] == {"jkt": key.thumbprint}
    # a refresh without a proof still gets a bearer token, bound to nothing
    status, plain = refresh(server, body["refresh_token"])
    assert status == 200 and plain["token_type"] == "Bearer"
    assert "cnf" not in server.introspect(plain["access_token"])


def test_calendar_api_takes_a_dpop_bound_token_with_a_proof_of_its_key(
    server: AuthorizationServer,
) -> None:
    key = SessionKey()
    token = bound_token(server, key)
    server.reset_stats()
    proof = key.dpop_proof("GET", server.calendar_url, access_token=token)
    status, body = server.calendar(token, dpop=proof)
    assert status == 200, body
    assert body["user"] == "alice"
    assert server.stats()["api_requests"] == {"bearer": 0, "dpop": 1}
    # bearer tokens keep working as bearer tokens
    status, _ = server.calendar(consented_tokens(server)["access_token"])
    assert status == 200
    assert server.stats()["api_requests"] == {"bearer": 1, "dpop": 1}


def test_a_stolen_dpop_bound_token_is_refused_by_the_calendar_api(
    server: AuthorizationServer,
) -> None:
    """SECURITY.md row 44 at the provider itself: the token without its key is worth nothing."""
    key, thief = SessionKey(), SessionKey()
    token = bound_token(server, key)
    url = server.calendar_url
    server.reset_stats()

    # sent as a bearer token
    status, error, challenge = calendar_with(server, {"Authorization": f"Bearer {token}"})
    assert (status, error) == (401, "invalid_token")
    assert challenge.startswith("DPoP ") and 'error="invalid_token"' in challenge
    # with the DPoP scheme but no proof
    status, error, challenge = calendar_with(server, {"Authorization": f"DPoP {token}"})
    assert (status, error) == (401, "invalid_dpop_proof")
    assert 'error="invalid_dpop_proof"' in challenge
    # with a valid proof of another key (the thief's own)
    proof = thief.dpop_proof("GET", url, access_token=token)
    status, error, challenge = calendar_with(
        server, {"Authorization": f"DPoP {token}", "DPoP": proof}
    )
    assert (status, error) == (401, "invalid_token")
    assert 'error="invalid_token"' in challenge
    # with a proof of the right key made for another token (a proof seen with another request)
    other = key.dpop_proof("GET", url, access_token=token + "x")
    status, error, _ = calendar_with(server, {"Authorization": f"DPoP {token}", "DPoP": other})
    assert (status, error) == (401, "invalid_dpop_proof")
    # ... or for another method or URL, or without ath
    for wrong in (
        key.dpop_proof("POST", url, access_token=token),
        key.dpop_proof("GET", f"{server.calendar_api_base}/calendar/other", access_token=token),
        key.dpop_proof("GET", url),
    ):
        status, error, _ = calendar_with(server, {"Authorization": f"DPoP {token}", "DPoP": wrong})
        assert (status, error) == (401, "invalid_dpop_proof")
    # a proof is good once: the same proof again is a replay
    proof = key.dpop_proof("GET", url, access_token=token)
    good = {"Authorization": f"DPoP {token}", "DPoP": proof}
    assert calendar_with(server, good)[0] == 200
    assert calendar_with(server, good)[:2] == (401, "invalid_dpop_proof")
    # a stale proof (iat ten minutes ago)
    old = key.dpop_proof("GET", url, access_token=token, now=time.time() - 600)
    status, error, _ = calendar_with(server, {"Authorization": f"DPoP {token}", "DPoP": old})
    assert (status, error) == (401, "invalid_dpop_proof")
    # a bearer token presented with the DPoP scheme is no DPoP-bound token either
    plain = consented_tokens(server)["access_token"]
    proof = key.dpop_proof("GET", url, access_token=plain)
    status, error, _ = calendar_with(server, {"Authorization": f"DPoP {plain}", "DPoP": proof})
    assert (status, error) == (401, "invalid_token")

    stats = server.stats()
    assert stats["api_requests"] == {"bearer": 0, "dpop": 1}
    assert stats["api_refusals"] == {"invalid_token": 3, "invalid_dpop_proof": 7}


def test_token_endpoint_demands_a_dpop_nonce_when_configured(server: AuthorizationServer) -> None:
    key = SessionKey()
    tokens = consented_tokens(server)
    server.require_dpop_nonce(token=True)
    assert server.dpop_nonce_demands() == {"token": True, "api": False}
    status, body, nonce = dpop_refresh(server, tokens["refresh_token"], key)
    assert (status, body["error"]) == (400, "use_dpop_nonce")
    assert nonce
    status, body, _ = dpop_refresh(server, tokens["refresh_token"], key, nonce=nonce)
    assert status == 200, body
    assert server.introspect(body["access_token"])["cnf"] == {"jkt": key.thumbprint}
    status, body, _ = dpop_refresh(server, body["refresh_token"], key, nonce="made-up")
    assert (status, body["error"]) == (400, "use_dpop_nonce")


def test_calendar_api_demands_a_dpop_nonce_when_configured(server: AuthorizationServer) -> None:
    key = SessionKey()
    token = bound_token(server, key)
    url = server.calendar_url
    server.require_dpop_nonce(api=True)
    response = server.calendar_response(
        {"Authorization": f"DPoP {token}", "DPoP": key.dpop_proof("GET", url, access_token=token)}
    )
    assert response.status == 401
    assert response.json()["error"] == "use_dpop_nonce"
    assert 'error="use_dpop_nonce"' in response.headers["WWW-Authenticate"]
    nonce = response.headers["DPoP-Nonce"]
    assert nonce
    for attempt_nonce, expected in (("made-up", 401), (nonce, 200), (nonce, 200)):
        proof = key.dpop_proof("GET", url, access_token=token, nonce=attempt_nonce)
        assert server.calendar(token, dpop=proof)[0] == expected, attempt_nonce
    # the demand is the test hook's to switch; a bad request changes nothing
    bad = http_request(
        "POST", f"{server.issuer}/__test/dpop", json_body={"require_nonce": {"api": "yes"}}
    )
    assert bad.status == 400
    assert server.dpop_nonce_demands() == {"token": False, "api": True}
    server.require_dpop_nonce(api=False)
    proof = key.dpop_proof("GET", url, access_token=token)
    assert server.calendar(token, dpop=proof)[0] == 200


def test_the_calendar_api_base_is_the_issuers_api(server: AuthorizationServer) -> None:
    assert server.calendar_api_base == f"{server.issuer}/api"
    assert server.calendar_url == server.calendar_api_base + CALENDAR_EVENTS_PATH
