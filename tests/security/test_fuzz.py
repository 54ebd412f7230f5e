"""Property tests over every route (SECURITY.md row 23, DESIGN invariant 7).

For every input Hypothesis makes up (path parameters, query strings, headers including garbage
DPoP proofs, bodies of wrong types, missing and extra fields, huge strings, binary and base64
bodies, unicode, malformed JSON and JWTs) the answer is a success or a 4xx
`application/problem+json` answer with a stable code: never a 5xx, never a trace or HTML.
A rejection changes nothing stored and leaves an audit event.

One vault (moto account, sessions, a grant) is built per test function and shared by all of its
examples: the @given functions are nested so no function-scoped fixture is reused across
examples behind Hypothesis's back. `HYPOTHESIS_PROFILE=long` (make fuzz) runs 2000+ examples
of each; the default `ci` profile keeps the file near a minute on 2 cores.
"""

from __future__ import annotations

import base64
import json
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st
from joserfc import jws

from tests.security.conftest import FUZZ
from tests.security.helpers import (
    PROBLEM,
    AuditLog,
    agent_with_session,
    connected_agent,
    delete_items,
    fingerprint,
    items_of_type,
    query_of,
)
from tests.support.agent import TestAgent, sign_proof
from tests.support.apigw import DOMAIN, HttpAnswer, LambdaContext, build_event, invoke
from tests.support.harness import Vault
from tests.support.upstream import Upstream

ADMIN = "arn:aws:sts::123456789012:assumed-role/vault-admin/ops"
SCOPES = ["calendar.read", "calendar.write", "mail.read", "offline_access", "openid"]
PROVIDERS = ["calendar", "calendar-post", "dropbox", "Calendar", ""]
ROUTE_NAMES = ("sessions", "session", "renew", "authorizations", "tokens", "complete")

# --- strategies ------------------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=200),
    # huge strings, built by repetition (drawing 20 000 characters one by one is slow)
    st.builds(lambda part, n: (part or "x") * n, st.text(max_size=8), st.integers(500, 5000)),
    st.sampled_from(["", " ", "null", "../..", "%00", "\u202e", "ses_" + "A" * 32, "x" * 129]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
scopes = st.one_of(
    st.lists(st.sampled_from(SCOPES), max_size=4),
    st.lists(texts, max_size=4),
    json_values,
)


def jwt_like(header: st.SearchStrategy[Any], claims: st.SearchStrategy[Any]) -> Any:
    def b64(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return st.builds(
        lambda h, c, sig: f"{b64(h)}.{b64(c)}.{b64(sig)}",
        header,
        claims,
        st.binary(max_size=80),
    )


proof_headers = st.one_of(
    st.fixed_dictionaries(
        {
            "typ": st.sampled_from(["dpop+jwt", "JWT", ""]),
            "alg": st.sampled_from(["ES256", "none", "HS256", "RS256", "ES512"]),
        },
        optional={"jwk": json_values, "kid": texts},
    ),
    json_values,
)
proof_claims = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "jti": texts,
            "htm": texts,
            "htu": texts,
            "iat": json_scalars,
            "sid": texts,
        },
    ),
    json_values,
)
garbage_proofs = st.one_of(
    st.none(),
    texts,
    jwt_like(proof_headers, proof_claims),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", texts, texts, texts),
)
users = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id_token": st.one_of(
                texts,
                jwt_like(
                    json_values,
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "iss": texts,
                            "sub": texts,
                            "aud": json_values,
                            "exp": json_scalars,
                        },
                    ),
                ),
            ),
            "user_id": texts,
        },
    ),
    json_values,
)


def body_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A body of the route's own fields (each maybe missing or mistyped), maybe with extra
    fields, or any JSON at all."""
    return st.one_of(
        st.fixed_dictionaries(
            {}, optional={name: st.one_of(s, json_values) for name, s in fields.items()}
        ),
        st.builds(
            lambda known, extra: {**extra, **known},
            st.fixed_dictionaries({}, optional=fields),
            st.dictionaries(st.text(max_size=12), json_values, min_size=1, max_size=3),
        ),
        json_values,
    )


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.binary(min_size=16_000, max_size=40_000),
    st.sampled_from(["{", "[" * 3000, '{"a": NaN}', "\ufeff{}", '{"provider": "calendar"']),
)

# --- the world each fuzz test works in --------------------------------------------------------


@dataclass
class World:
    vault: Vault
    agent: TestAgent
    audit: AuditLog

    @classmethod
    def build(cls, vault: Vault, audit: AuditLog) -> World:
        return cls(vault, connected_agent(vault, scopes=("calendar.read",)), audit)

    def path(self, route: str, sid: str | None = None, flow_id: str | None = None) -> str:
        sid = self.agent.session_id if sid is None else sid
        return {
            "sessions": "/v1/sessions",
            "session": f"/v1/sessions/{sid}",
            "renew": f"/v1/sessions/{sid}/renew",
            "authorizations": f"/v1/sessions/{sid}/authorizations",
            "tokens": f"/v1/sessions/{sid}/tokens",
            "complete": f"/v1/flows/{flow_id or 'flw_' + 'F' * 32}/complete",
        }[route]

    def proof(self, method: str, path: str, sid: str | None) -> str:
        return sign_proof(
            self.agent.key,
            method=method,
            url=f"https://{DOMAIN}{path}",
            iat=int(self.vault.clock()),
            session_id=sid,
        )

    def check(self, send: Callable[[], HttpAnswer], *, success: set[int]) -> HttpAnswer:
        """Send one request; assert the property; return the answer."""
        before = fingerprint(self.vault)
        self.audit.clear()
        answer = send()
        assert answer.status < 500, answer.body[:500]
        assert "Traceback" not in answer.body and "<html" not in answer.body.lower()
        if answer.status in success:
            # keep the table at its size: the check per example must not grow with the run
            delete_items(self.vault, [k for k in fingerprint(self.vault) if k not in before])
            return answer
        assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
        assert answer.headers.get("content-type") == PROBLEM, answer.headers
        problem = json.loads(answer.body)
        assert isinstance(problem.get("code"), str) and problem["status"] == answer.status
        assert problem["type"] == f"urn:agent-vault:problem:{problem['code']}"
        after = fingerprint(self.vault)
        assert after == before, (problem["code"], sorted(set(after) ^ set(before)))
        assert any(e["outcome"] in ("denied", "refused", "failed") for e in self.audit.events), (
            f"no audit event for a {problem['code']} refusal"
        )
        return answer


def _empty_object(raw: bytes | str) -> bool:
    try:
        return bool(json.loads(raw) == {})
    except (ValueError, TypeError, RecursionError):
        return False


def run(test: Callable[..., None]) -> None:
    FUZZ(test)()


# --- agent routes --------------------------------------------------------------------------


def test_fuzz_start_session_bodies(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    trusted = vault.agent("mail-agent-role")

    @given(
        body=body_of({"user": users, "ttl_seconds": json_scalars}),
        as_trusted=st.booleans(),
    )
    def example(body: Any, as_trusted: bool) -> None:
        agent = trusted if as_trusted else world.agent
        proof = sign_proof(
            agent.key,
            method="POST",
            url=f"https://{DOMAIN}/v1/sessions",
            iat=int(vault.clock()),
            session_id=None,
        )
        world.check(lambda: agent.call("POST", "/v1/sessions", body, proof=proof), success={201})

    run(example)


def test_fuzz_session_path_parameters(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    routes = [
        ("GET", "session"),
        ("DELETE", "session"),
        ("POST", "renew"),
        ("POST", "authorizations"),
        ("POST", "tokens"),
    ]

    @given(
        route=st.sampled_from(routes),
        sid=st.one_of(texts, st.from_regex(r"\Ases_[A-Za-z0-9_-]{32}\Z")),
        signed_for_it=st.booleans(),
    )
    def example(route: tuple[str, str], sid: str, signed_for_it: bool) -> None:
        method, name = route
        if "/" in sid or "?" in sid or "#" in sid or sid == world.agent.session_id:
            sid = sid.replace("/", "").replace("?", "").replace("#", "") or "x"
        path = world.path(name, sid)
        proof = (
            world.proof(method, path, sid)
            if signed_for_it
            else world.proof(method, path, world.agent.session_id)
        )
        body = (
            None
            if method != "POST"
            else ({} if name == "renew" else {"provider": "calendar", "scopes": ["calendar.read"]})
        )
        world.check(lambda: world.agent.call(method, path, body, proof=proof), success=set())

    run(example)


def test_fuzz_token_bodies(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    path = world.path("tokens")

    @given(body=body_of({"provider": st.sampled_from(PROVIDERS), "scopes": scopes}))
    def example(body: Any) -> None:
        proof = world.proof("POST", path, world.agent.session_id)
        answer = world.check(
            lambda: world.agent.call("POST", path, body, proof=proof), success={200}
        )
        if answer.status == 200:  # never more than asked, never outside the policy
            assert set(answer.json["scope"].split()) == set(body["scopes"])
            assert set(body["scopes"]) <= {"calendar.read"}

    run(example)


def test_fuzz_authorization_bodies(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    path = world.path("authorizations")
    returns = st.one_of(
        st.sampled_from(
            [
                "https://app.example.test/consent/return",
                "https://app.example.test/consent/return/",
                "http://localhost:3000/return",
                "https://evil.example/",
                "javascript:alert(1)",
            ]
        ),
        texts,
    )

    @given(
        body=body_of(
            {"provider": st.sampled_from(PROVIDERS), "scopes": scopes, "return_url": returns}
        )
    )
    def example(body: Any) -> None:
        proof = world.proof("POST", path, world.agent.session_id)
        answer = world.check(
            lambda: world.agent.call("POST", path, body, proof=proof), success={201}
        )
        if answer.status == 201:
            params = query_of(answer.json["authorization_url"])
            assert params["code_challenge_method"] == "S256"
            provider = body.get("provider")
            assert params["redirect_uri"] == f"{vault.services.settings.callback_url}/{provider}"
            assert body.get("return_url") in (None, *vault.services.config.return_urls)

    run(example)


def test_fuzz_renew_bodies(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    path = world.path("renew")

    @given(body=body_of({"user": users, "ttl_seconds": json_scalars}))
    def example(body: Any) -> None:
        proof = world.proof("POST", path, world.agent.session_id)
        world.check(lambda: world.agent.call("POST", path, body, proof=proof), success={200})

    run(example)


def test_fuzz_completion_flow_ids_and_bodies(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    started = world.agent.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    assert vault.callback(query).status == 302
    pending_binding = started.json["flow_id"]

    @given(
        flow_id=st.one_of(
            st.just(pending_binding),
            texts.map(lambda s: s.replace("/", "").replace("?", "").replace("#", "") or "x"),
        ),
        body=body_of({"user": users}),
    )
    def example(flow_id: str, body: Any) -> None:
        path = world.path("complete", flow_id=flow_id)
        answer = world.check(
            lambda: world.agent.call("POST", path, body, proof=False), success={200}
        )
        assert answer.status != 200, "no made-up identity binds the flow"

    run(example)


def test_fuzz_garbage_proofs(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)

    @given(route=st.sampled_from(ROUTE_NAMES[:5]), proof=garbage_proofs)
    def example(route: str, proof: str | None) -> None:
        method = "GET" if route == "session" else "POST"
        path = world.path(route)
        body = (
            {"user": vault.user("alice")}
            if route == "sessions"
            else (
                {"provider": "calendar", "scopes": ["calendar.read"]} if method == "POST" else None
            )
        )
        answer = world.check(
            lambda: world.agent.call(method, path, body, proof=proof if proof else False),
            success=set(),
        )
        assert answer.code in ("invalid_proof", "invalid_request", "proof_replayed"), answer.body

    run(example)


def test_fuzz_signed_proofs_with_made_up_claims(vault: Vault, audit_events: AuditLog) -> None:
    """Proofs properly signed by the session's key whose claims are made up: only an exact
    match of every claim passes, and nothing in them crashes the checks."""
    world = World.build(vault, audit_events)
    path = world.path("tokens")
    url = f"https://{DOMAIN}{path}"
    urls = st.one_of(
        st.sampled_from(["https://[vault.test" + path, "https://vault.test:99999" + path]),
        st.sampled_from(
            [
                url,
                url.upper(),
                url + "?q=1",
                url + "#f",
                "https://[vault.test" + path,
                "https://vault.test:99999" + path,
                "https://vault.test:x" + path,
                "http://vault.test:443" + path,
                "//vault.test" + path,
                "",
            ]
        ),
        texts,
    )
    now = object()  # replaced by the current time when the proof is signed
    jti = st.uuids().map(lambda u: u.hex)
    every_claim = st.fixed_dictionaries(
        {  # each claim right, or made up
            "jti": st.one_of(jti, jti, json_values),
            "htm": st.one_of(st.just("POST"), st.just("POST"), texts, json_values),
            "htu": st.one_of(st.just(url), urls),
            "iat": st.one_of(st.just(now), st.just(now), st.integers(-(2**40), 2**40), json_values),
            "sid": st.one_of(st.just(world.agent.session_id), json_values),
        }
    )
    claims = st.builds(
        lambda all_claims, dropped: {k: v for k, v in all_claims.items() if k not in dropped},
        every_claim,
        st.sets(st.sampled_from(["jti", "htm", "htu", "iat", "sid"]), max_size=2),
    )

    @given(claims=claims)
    def example(claims: dict[str, Any]) -> None:
        claims = {k: int(vault.clock()) if v is now else v for k, v in claims.items()}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": world.agent.key.as_dict(private=False)}
        proof = jws.serialize_compact(
            header, json.dumps(claims), world.agent.key, algorithms=["ES256"]
        )
        body = {"provider": "calendar", "scopes": ["calendar.read"]}
        answer = world.check(
            lambda: world.agent.call("POST", path, body, proof=proof), success={200}
        )
        if answer.status == 200:  # then it was a proof for exactly this request
            assert claims["htm"] == "POST" and claims["sid"] == world.agent.session_id
            assert abs(claims["iat"] - vault.clock()) <= 60

    run(example)


def test_fuzz_raw_bodies_and_headers(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)

    @given(
        route=st.sampled_from(
            ["sessions", "renew", "authorizations", "tokens", "complete", "revocations"]
        ),
        raw=raw_bodies,
        flag_base64=st.booleans(),
        headers=st.dictionaries(
            st.sampled_from(
                [
                    "content-type",
                    "x-forwarded-proto",
                    "content-encoding",
                    "host",
                    "x-amz-date",
                    "authorization",
                ]
            ),
            texts,
            max_size=3,
        ),
    )
    def example(route: str, raw: bytes | str, flag_base64: bool, headers: dict[str, str]) -> None:
        if route == "revocations":
            path, principal, sid = "/v1/revocations", ADMIN, None
        else:
            path, principal = world.path(route), world.agent.arn
            sid = None if route in ("sessions", "complete") else world.agent.session_id
        event = build_event(
            "POST",
            path,
            body=raw,
            principal_arn=principal,
            headers={**headers, "DPoP": world.proof("POST", path, sid)},
        )
        if flag_base64 and not event["isBase64Encoded"]:
            event["isBase64Encoded"] = True  # a body that claims base64 and may not be
        # `{}` is a whole renewal (every member is optional): the one body here that may succeed
        renewal = route == "renew" and not event["isBase64Encoded"] and _empty_object(raw)
        world.check(lambda: invoke(event), success={200} if renewal else set())

    run(example)


def test_fuzz_unknown_routes(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    segment = st.one_of(
        st.sampled_from(
            ["v1", "sessions", "flows", "oauth", "tokens", world.agent.session_id, "", ".."]
        ),
        texts,
    )

    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        parts=st.lists(segment, max_size=6),
    )
    def example(method: str, parts: list[str]) -> None:
        path = "/" + "/".join(p.replace("/", "").replace("?", "").replace("#", "") for p in parts)
        event = build_event(
            method,
            path,
            body="{}",
            principal_arn=world.agent.arn,
            headers={"DPoP": world.proof(method, path, world.agent.session_id)},
        )
        world.check(lambda: invoke(event), success={200})

    run(example)


# --- the egress proxy --------------------------------------------------------------------------

FORWARDED_NEVER = ("authorization", "dpop", "cookie", "x-amz", "x-agent-vault-", "proxy-")


def test_fuzz_proxy_requests(vault: Vault, audit_events: AuditLog) -> None:
    """Any method, path, query, headers and body through the proxy: a 4xx problem, or the
    provider's answer; what reaches the provider is under its base URL and carries none of the
    agent's credentials (the loopback stand-in sees every forwarded request)."""
    with Upstream() as api:
        config = vault.services.config.model_dump(mode="json", exclude_none=True)
        config["providers"]["calendar"]["api_base_urls"] = [api.url + "/base"]
        vault.redeploy(config)
        agent = connected_agent(vault, role="proxy-agent-role")
        world = World(vault, agent, audit_events)
        segment = st.one_of(
            st.sampled_from(
                ["calendar", "events", "..", ".", "", "%2e%2e", "%2F", "%5c", "a%00", "http:"]
            ),
            texts,
        )
        header_names = st.sampled_from(
            [
                "authorization",
                "cookie",
                "x-amz-security-token",
                "x-agent-vault-api-base",
                "connection",
                "host",
                "content-type",
                "transfer-encoding",
                "x-custom",
            ]
        )

        @given(
            method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
            parts=st.lists(segment, min_size=1, max_size=5),
            query=st.one_of(st.just(""), texts),
            headers=st.dictionaries(header_names, texts, max_size=3),
            body=st.one_of(st.none(), raw_bodies),
        )
        def example(
            method: str,
            parts: list[str],
            query: str,
            headers: dict[str, str],
            body: bytes | str | None,
        ) -> None:
            rest = "/".join(p.replace("?", "").replace("#", "") for p in parts) or "x"
            path = f"/v1/sessions/{agent.session_id}/proxy/calendar/{rest}"
            event = build_event(
                method,
                path,
                query=urlencode({"q": query}) if query else None,
                body=body,
                principal_arn=agent.arn,
                headers={**headers, "DPoP": world.proof(method, path, agent.session_id)},
            )
            seen = len(api.seen)
            answer = world.check(lambda: invoke(event), success={200})
            if answer.status == 200:
                assert answer.headers.get("x-agent-vault-proxy") == "upstream"
                (forwarded,) = api.seen[seen:]
                assert forwarded.target.startswith("/base/"), forwarded.target
                # one Authorization, the vault's (the session's token), never the agent's
                assert len(forwarded.headers["authorization"]) == 1
                assert forwarded.header("authorization") != headers.get("authorization")
                leaked = [
                    name
                    for name in forwarded.headers
                    if name.startswith(FORWARDED_NEVER) and name != "authorization"
                ]
                assert leaked == [], leaked
            else:
                assert api.seen[seen:] == []  # refused before any call

        run(example)


# --- the callback ---------------------------------------------------------------------------


def test_fuzz_callback_queries(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    params = st.dictionaries(
        st.one_of(
            st.sampled_from(
                [
                    "state",
                    "code",
                    "iss",
                    "error",
                    "error_description",
                    "return_url",
                    "session_state",
                ]
            ),
            st.text(max_size=8),
        ),
        texts,
        max_size=5,
    )

    @given(query=st.one_of(params, st.text(max_size=500)))
    def example(query: dict[str, str] | str) -> None:
        world.check(
            lambda: vault.callback(query if isinstance(query, str) else urlencode(query)),
            success=set(),
        )

    run(example)


def test_fuzz_callback_with_a_live_state(vault: Vault, audit_events: AuditLog) -> None:
    """Each example answers a real pending flow with made-up `code`, `iss` and `error`."""
    World.build(vault, audit_events)
    agent = agent_with_session(vault, "bob")
    issuer = vault.server.issuer

    @given(
        code=st.one_of(st.none(), texts),
        iss=st.one_of(st.none(), st.just(issuer), texts),
        error=st.one_of(st.none(), st.sampled_from(["access_denied", "server_error"]), texts),
    )
    def example(code: str | None, iss: str | None, error: str | None) -> None:
        started = agent.authorize("calendar", ["calendar.read"])
        state = query_of(started.json["authorization_url"])["state"]
        query = {
            k: v
            for k, v in {"state": state, "code": code, "iss": iss, "error": error}.items()
            if v is not None
        }
        grants = items_of_type(vault, "grant")
        audit_events.clear()
        answer = vault.callback(urlencode(query))
        assert answer.status < 500, answer.body
        if answer.status == 302:
            location = answer.headers["location"]
            assert location.startswith("https://app.example.test/consent/return?")
            back = query_of(location)
            assert back["status"] == "refused" and back["error"] in (
                "access_denied",
                "server_error",
                "invalid_request",
            ), back
            assert set(back) == {"flow_id", "status", "error"}
        else:
            assert answer.headers["content-type"] == PROBLEM
            assert answer.code in ("issuer_mismatch", "code_exchange_failed"), answer.body
        assert items_of_type(vault, "grant") == grants
        assert audit_events.find("consent.callback")
        delete_items(vault, [(i["pk"]["S"], i["sk"]["S"]) for i in items_of_type(vault, "flow")])

    run(example)


# --- admin ----------------------------------------------------------------------------------


def test_fuzz_revocation_bodies(vault: Vault, audit_events: AuditLog) -> None:
    world = World.build(vault, audit_events)
    user = st.fixed_dictionaries(
        {},
        optional={
            "iss": st.one_of(st.just(vault.server.issuer), texts),
            "sub": st.one_of(st.just("nobody"), texts),
        },
    )

    @given(
        body=body_of(
            {
                "user": user,
                "agent": st.sampled_from(["mail-agent", "nobody", "Calendar-agent", ""]),
                "provider": st.sampled_from(PROVIDERS),
                "grant_id": st.one_of(st.from_regex(r"\Agrt_[A-Za-z0-9_-]{16,64}\Z"), texts),
            }
        )
    )
    def example(body: Any) -> None:
        event = build_event("POST", "/v1/revocations", body=json.dumps(body), principal_arn=ADMIN)
        world.check(lambda: invoke(event), success={200})

    run(example)


# --- the reaper -----------------------------------------------------------------------------


def test_fuzz_reaper_events(vault: Vault, audit_events: AuditLog) -> None:
    """Whatever EventBridge delivers, the reaper answers (never raises into the retry queue)
    and ends nothing unless a real task of a vault session stopped."""
    from vault.handlers.reaper import handler

    world = World.build(vault, audit_events)
    arns = st.one_of(
        st.builds(lambda t: f"arn:aws:ecs:eu-west-1:123456789012:task/agents/{t}", texts),
        st.just(f"arn:aws:ecs:eu-west-1:123456789012:task/agents/{uuid.uuid4().hex}"),
        texts,
    )
    events = st.one_of(
        st.fixed_dictionaries(
            {
                "id": st.one_of(st.uuids().map(str), texts),
                "source": st.sampled_from(["aws.ecs", "aws.ec2", ""]),
                "detail-type": st.sampled_from(["ECS Task State Change", "x"]),
                "detail": st.one_of(
                    st.fixed_dictionaries(
                        {
                            "taskArn": arns,
                            "lastStatus": st.sampled_from(["STOPPED", "RUNNING", ""]),
                        },
                        optional={"desiredStatus": texts},
                    ),
                    json_values,
                ),
            },
            optional={"version": json_values, "account": texts, "resources": json_values},
        ),
        st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    )

    @given(event=events)
    def example(event: dict[str, Any]) -> None:
        before = fingerprint(vault)
        result = handler(event, LambdaContext())
        assert isinstance(result, dict) and result.get("status") in ("ignored", "reaped")
        sessions = items_of_type(vault, "session")
        assert all(s["status"]["S"] == "active" for s in sessions), "no vault task stopped"
        if result["status"] == "ignored":
            assert fingerprint(vault) == before
        else:
            assert result["ended_sessions"] == 0

    run(example)
    # the world's own session survived every made-up event
    assert world.agent.token("calendar", ["calendar.read"]).status == 200
