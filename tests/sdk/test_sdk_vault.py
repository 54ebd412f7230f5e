"""The SDK against the real vault: local mode (handlers + moto + oidc-provider) in a child
process, reached through the local API Gateway that verifies SigV4."""

from __future__ import annotations

import asyncio
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent_vault import (
    AsyncVaultClient,
    ConsentRequired,
    DeliveryProxyOnly,
    FlowNotPending,
    Forbidden,
    InvalidProof,
    InvalidUserToken,
    NotFound,
    ProviderError,
    ReturnUrlNotAllowed,
    ScopeNotAllowed,
    SessionKey,
    UnknownProvider,
    UserIdentity,
    UserMismatch,
)
from agent_vault_local.demo import calendar_events, set_provider_api_keys
from agent_vault_local.provider import KEYED_EVENTS_PATH, http_request
from agent_vault_local.runner import ADMIN, KEYED_PROVIDER, LocalInfo

# the tokens these tests read are handed out: local mode's bearer-delivery agent's tasks
from agent_vault_local.runner import BEARER_TASK_1 as TASK_1
from agent_vault_local.runner import BEARER_TASK_2 as TASK_2
from agent_vault_local.runner import TASK_1 as CALENDAR_TASK
from tests.local.helpers import CountingPool, approve, consent, vault_client
from tests.security.hygiene import HYGIENE

CALENDAR = ("calendar.read",)
TOKENS_PATH_SUFFIX = "/tokens"


def alice(tokens: dict[str, str]) -> UserIdentity:
    return UserIdentity(id_token=tokens["alice"])


def test_session_lifecycle(local: LocalInfo, tokens: dict[str, str]) -> None:
    principal = local.principal(TASK_1)
    with vault_client(local, TASK_1, alice(tokens)) as client:
        session = client.start_session()
        assert session.agent == "calendar-bearer-agent"
        assert session.user == {"iss": local.provider["issuer"], "sub": "alice"}
        assert session.task_id == principal.session_name  # from the IAM context, not the body
        assert session.status == "active"
        assert session.expires_at > session.created_at
        assert client.get_session().session_id == session.session_id
        ended = client.end_session()
        assert ended is not None and ended["status"] == "ended"
        assert client.session is None


def test_consent_then_a_cached_session_bound_token(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    now = [1_000_000.0]
    pool = CountingPool()
    client = vault_client(local, TASK_1, alice(tokens), http=pool, clock=lambda: now[0])
    with pytest.raises(ConsentRequired) as raised:
        client.get_token("calendar", CALENDAR)
    assert raised.value.missing_scopes == ["calendar.read"]
    assert raised.value.authorization_url is None  # not asked to start one
    with pytest.raises(ConsentRequired) as started:
        client.get_token("calendar", CALENDAR, authorize=True)
    assert started.value.authorization_url and started.value.flow_id
    assert started.value.authorization_url.startswith(local.provider["authorization_endpoint"])
    approve(local, started.value.authorization_url, "alice", client)

    token = client.get_token("calendar", CALENDAR)
    assert token.provider == "calendar" and token.scopes == ("calendar.read",)
    assert token.expires_at > now[0] + 60
    assert calendar_events(local, token.access_token).status == 200

    requests = len([c for c in pool.calls if c[1].endswith(TOKENS_PATH_SUFFIX)])
    assert client.get_token("calendar", "calendar.read") is token  # cached: no request
    assert len([c for c in pool.calls if c[1].endswith(TOKENS_PATH_SUFFIX)]) == requests
    now[0] = token.expires_at - 59  # within the refresh margin: ask the vault again
    again = client.get_token("calendar", CALENDAR)
    assert len([c for c in pool.calls if c[1].endswith(TOKENS_PATH_SUFFIX)]) == requests + 1
    assert again is not token
    client.close()


def test_errors_are_typed(local: LocalInfo, tokens: dict[str, str]) -> None:
    with pytest.raises(InvalidUserToken):
        forged = UserIdentity(id_token="eyJhbGciOiJub25lIn0.e30.not-a-signature")
        vault_client(local, TASK_1, forged).start_session()
    client = vault_client(local, TASK_1, alice(tokens))
    with pytest.raises(UnknownProvider):
        client.start_authorization("nope", CALENDAR)
    with pytest.raises(ScopeNotAllowed) as raised:
        client.get_token("calendar", ["mail.read"])
    assert raised.value.status == 403
    with pytest.raises(ReturnUrlNotAllowed) as refused:
        client.start_authorization("calendar", CALENDAR, return_url="https://evil.example/")
    assert "return_urls" in refused.value.detail
    sid = client.session_id
    assert sid is not None
    with pytest.raises(InvalidProof):  # a proof by another key than the session's
        client.request(
            "POST",
            f"/v1/sessions/{sid}/tokens",
            {"provider": "calendar", "scopes": list(CALENDAR)},
            key=SessionKey(),
            session_id=sid,
        )
    client.close()


def test_binding_by_another_user_is_refused(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = vault_client(local, TASK_1, alice(tokens))
    authorization = client.start_authorization("calendar", CALENDAR)
    # alice's consent URL is forwarded to bob, who consents; the app binds with bob logged in.
    with pytest.raises(UserMismatch):
        approve(local, authorization.authorization_url, "bob", client)
    with pytest.raises(FlowNotPending):
        client.complete_flow(
            authorization.flow_id,
            UserIdentity(id_token=tokens["alice"]),
            "a-binding-code-nobody-issued",
        )
    with pytest.raises(ConsentRequired):
        client.get_token("calendar", CALENDAR)
    client.close()


def test_provider_failures_are_retried_when_the_vault_says_so(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    first = vault_client(local, TASK_1, alice(tokens))
    consent(local, first, "alice")
    faults = f"{local.provider['issuer']}/__test/faults"
    assert (
        http_request(
            "POST", faults, json_body={"token_endpoint": {"status": 503, "remaining": 1}}
        ).status
        == 200
    )
    delays: list[float] = []
    second = vault_client(local, TASK_2, alice(tokens), sleep=delays.append, max_backoff=0.25)
    token = second.get_token("calendar", CALENDAR)  # minted by a refresh: 503 once, then fine
    assert token.access_token
    assert delays == [0.25]  # Retry-After, capped by max_backoff

    assert (
        http_request(
            "POST", faults, json_body={"token_endpoint": {"status": 503, "remaining": 1}}
        ).status
        == 200
    )
    once = vault_client(local, TASK_2, alice(tokens), max_attempts=1)
    with pytest.raises(ProviderError) as raised:
        once.get_token("calendar", CALENDAR)
    assert raised.value.status == 502 and raised.value.retry_after is not None
    http_request("POST", faults, json_body={})
    for client in (first, second, once):
        client.close()


def test_one_client_in_many_threads_asks_once(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    setup = vault_client(local, TASK_1, alice(tokens))
    consent(local, setup, "alice")
    pool = CountingPool()
    client = vault_client(local, TASK_2, alice(tokens), http=pool)
    barrier = threading.Barrier(8)

    def work() -> str:
        barrier.wait()
        return client.get_token("calendar", CALENDAR).access_token

    with ThreadPoolExecutor(8) as executor:
        results = list(executor.map(lambda _: work(), range(8)))
    assert len(set(results)) == 1
    assert [c[0] for c in pool.calls].count("POST") == 2  # one session start, one token request
    client.close()
    setup.close()


def test_async_client(local: LocalInfo, tokens: dict[str, str], no_grants: None) -> None:
    setup = vault_client(local, TASK_1, alice(tokens))
    consent(local, setup, "alice")

    async def main() -> list[str]:
        async with AsyncVaultClient(client=vault_client(local, TASK_2, alice(tokens))) as client:
            found = await asyncio.gather(
                *(client.get_token("calendar", CALENDAR) for _ in range(4))
            )
            assert client.session is not None
            return [t.access_token for t in found]

    assert len(set(asyncio.run(main()))) == 1
    setup.close()


def test_admin_revocation_kills_the_grant(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    client = vault_client(local, TASK_1, alice(tokens))
    consent(local, client, "alice")
    token = client.get_token("calendar", CALENDAR)
    admin = vault_client(local, "admin")
    answer = admin.revoke(user={"iss": local.provider["issuer"], "sub": "alice"})
    assert answer["revoked_grants"] >= 1
    assert calendar_events(local, token.access_token).status == 401
    client.forget_token("calendar", CALENDAR)
    with pytest.raises(ConsentRequired):
        client.get_token("calendar", CALENDAR)
    client.close()


def test_sessions_are_renewed_without_new_consent(local: LocalInfo, tokens: dict[str, str]) -> None:
    client = vault_client(local, TASK_1, alice(tokens), session_ttl_seconds=60)
    session = client.start_session()
    assert session.expires_at - session.created_at == 60
    # Within refresh_margin of its expiry: the next call renews the same session first, for the
    # client's current session life (longer now, so a renewal is visible in the expiry).
    client.session_ttl_seconds = 120
    renewed = client.ensure_session()
    assert renewed.session_id == session.session_id
    assert renewed.expires_at >= session.expires_at + 50
    longer = client.renew_session(user=UserIdentity(id_token=tokens["alice"]), ttl_seconds=600)
    assert longer.session_id == session.session_id
    assert longer.expires_at >= session.expires_at + 500
    with pytest.raises(UserMismatch):
        client.renew_session(user=UserIdentity(id_token=tokens["bob"]))
    client.close()


def test_connections_list_and_revoke_for_the_logged_in_user(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    """The application's client (the agent's role, no session) lists the user's connections
    and revokes one; bob's token sees none of alice's and cannot revoke them."""
    client = vault_client(local, TASK_1, alice(tokens))
    consent(local, client, "alice")
    token = client.get_token("calendar", CALENDAR)
    app = vault_client(local, TASK_2)
    page = app.connections(tokens["alice"], limit=1)
    (connection,) = page.items
    assert (connection.provider, connection.scopes, connection.status) == (
        "calendar",
        ("calendar.read",),
        "active",
    )
    assert connection.last_used_at is not None and connection.last_used_at >= connection.since
    assert list(app.all_connections(tokens["alice"], provider="calendar")) == [connection]
    assert app.connections(tokens["bob"]).items == ()
    with pytest.raises(NotFound) as refused:
        app.revoke_connection(tokens["bob"], connection.grant_id)
    assert refused.value.code == "grant_not_found"
    with pytest.raises(InvalidUserToken):
        app.connections(tokens["alice"] + "x")
    answer = app.revoke_connection(tokens["alice"], connection.grant_id)
    assert answer == {"grant_id": connection.grant_id, "status": "revoked", "revoked_tokens": 1}
    assert calendar_events(local, token.access_token).status == 401
    assert asyncio.run(AsyncVaultClient(client=app).connections(tokens["alice"])).items == ()
    client.forget_token("calendar", CALENDAR)
    with pytest.raises(ConsentRequired):
        client.get_token("calendar", CALENDAR)
    client.close()
    app.close(end_session=False)


def test_a_proxied_path_with_escapes_reaches_the_provider_through_api_gateway(
    local: LocalInfo, tokens: dict[str, str], no_grants: None
) -> None:
    """Local mode's API Gateway hands the vault the path decoded, as AWS's HTTP API does: the
    proof the SDK made for the URL it called still holds (the vault compares paths by what they
    mean) and the path reaches the provider's API (whose own 404 comes back, marked upstream),
    neither refused as a proof for another URL nor as a path the proxy does not forward."""
    with vault_client(local, CALENDAR_TASK, alice(tokens)) as client:
        client.start_session()
        consent(local, client, "alice")
        with client.http(local.provider_name) as api:
            assert api.get("calendar/events").status_code == 200
            for path in ("calendar/events/%C3%9Cber%20x", "calendar/events/a%2Db", "calendar/%25"):
                answer = api.get(path)
                assert (answer.status_code, answer.headers.get("x-agent-vault-proxy")) == (
                    404,
                    "upstream",
                ), (path, answer.text)


def test_api_key_hands_a_returned_key_over_and_never_a_proxy_agents(
    local: LocalInfo, tokens: dict[str, str]
) -> None:
    """Flow 12 through the SDK: `VaultClient.api_key` gives a `returned`-delivery agent the
    key an admin stored and where the provider wants it; a proxy agent is refused it."""
    key = f"ak_sdk_{secrets.token_urlsafe(24)}"
    HYGIENE.add_secret(key, "API key")
    set_provider_api_keys(local, {"sdk": key})
    admin = vault_client(local, ADMIN)
    path = f"/v1/admin/api-keys/{KEYED_PROVIDER}"
    with vault_client(local, TASK_1, alice(tokens)) as holder:
        with pytest.raises(Forbidden) as unset:
            holder.api_key(KEYED_PROVIDER)
        assert unset.value.code == "api_key_not_set"
        admin.request("PUT", path, {"key": key}, proof=False)
        try:
            returned = holder.api_key(KEYED_PROVIDER)
            assert (returned.provider, returned.header, returned.prefix) == (
                KEYED_PROVIDER,
                "X-Api-Key",
                "",
            )
            assert returned.api_key == key and key not in repr(returned)
            assert returned.params == {}
            answer = http_request(
                "GET",
                f"{local.provider['calendar_api_base']}/{KEYED_EVENTS_PATH}",
                headers=returned.headers,
            )
            assert (answer.status, answer.json()["key"]) == (200, "sdk")
            assert asyncio.run(AsyncVaultClient(client=holder).api_key(KEYED_PROVIDER)) == returned
            with vault_client(local, CALENDAR_TASK, alice(tokens)) as proxied:
                with pytest.raises(DeliveryProxyOnly) as refused:
                    proxied.api_key(KEYED_PROVIDER)
                assert refused.value.problem["proxy_path"].endswith(f"/proxy/{KEYED_PROVIDER}/")
            with pytest.raises(UnknownProvider):
                holder.api_key("nowhere")
        finally:
            admin.request("DELETE", path, proof=False)
        # deleted: the next call is refused at once (the SDK keeps no copy)
        with pytest.raises(Forbidden) as deleted:
            holder.api_key(KEYED_PROVIDER)
        assert deleted.value.code == "api_key_not_set"
    admin.close()
