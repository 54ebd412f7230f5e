"""SECURITY.md row 23, DESIGN invariant 7: malformed, huge or binary bodies and query strings on
every route get a 4xx problem+json answer with a stable code, never a 500 or a trace, change
nothing stored, and leave an audit event. (test_fuzz.py explores the same ground at random.)"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jws

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    unchanged,
)
from tests.support.agent import TestAgent
from tests.support.apigw import DOMAIN, build_event, invoke
from tests.support.harness import Vault

ADMIN = "arn:aws:sts::123456789012:assumed-role/vault-admin/ops"

BAD_BODIES: dict[str, tuple[Any, int, str]] = {
    # name: (raw body, status, code)
    "not json": ("{not json", 400, "invalid_request"),
    "truncated": ('{"provider": "calendar", "scopes": ["calendar.re', 400, "invalid_request"),
    "array": ("[1, 2, 3]", 400, "invalid_request"),
    "string": ('"just a string"', 400, "invalid_request"),
    "null": ("null", 400, "invalid_request"),
    "empty": ("", 400, "invalid_request"),
    "nan": ('{"ttl_seconds": NaN}', 400, "invalid_request"),
    "deep": ("[" * 5000 + "]" * 5000, 400, "invalid_request"),
    "binary": (bytes(range(256)) * 4, 400, "invalid_request"),
    "latin-1": ('{"provider": "caf\xe9"}'.encode("latin-1"), 400, "invalid_request"),
    "utf-16": ('{"provider": "calendar"}'.encode("utf-16"), 400, "invalid_request"),
    "utf-8 bom": ('\ufeff{"provider": "calendar"}'.encode(), 400, "invalid_request"),
    "nul bytes": ('{"provider": "cal\x00endar", "scopes": ["\x00"]}', 400, "invalid_request"),
    "huge": ('{"provider": "' + "x" * 20_000 + '"}', 413, "payload_too_large"),
    "huge binary": (b"\xff" * 40_000, 413, "payload_too_large"),
    "wrong types": (
        '{"provider": 1, "scopes": "calendar.read", "user": [], "ttl_seconds": "60",'
        ' "return_url": false, "agent": {}, "grant_id": 7}',
        400,
        "invalid_request",
    ),
    "extra fields": (
        '{"provider": "calendar", "scopes": ["calendar.read"], "admin": true,'
        ' "user": {"id_token": "x.y.z", "sub": "root"}}',
        400,
        "invalid_request",
    ),
    "huge scope list": (
        json.dumps({"provider": "calendar", "scopes": ["a"] * 1000}),
        400,
        "invalid_request",
    ),
    "unicode scope": (
        '{"provider": "calendar", "scopes": ["calendar.read\u202e"]}',
        400,
        "invalid_request",
    ),
    "bool for int": ('{"user": {"user_id": "u"}, "ttl_seconds": true}', 400, "invalid_request"),
}


def routes(agent: TestAgent) -> list[tuple[str, str, str | None]]:
    sid = agent.session_id
    return [
        ("POST", "/v1/sessions", agent.arn),
        ("POST", f"/v1/sessions/{sid}/renew", agent.arn),
        ("POST", f"/v1/sessions/{sid}/authorizations", agent.arn),
        ("POST", f"/v1/sessions/{sid}/tokens", agent.arn),
        ("POST", f"/v1/flows/flw_{'E' * 32}/complete", agent.arn),
        ("POST", "/v1/revocations", ADMIN),
    ]


def test_row_23_malformed_bodies_on_every_route_are_4xx_problems(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    with unchanged(vault):
        for name, (raw, status, code) in BAD_BODIES.items():
            for method, path, principal in routes(agent):
                audit_events.clear()
                sid = None if path == "/v1/sessions" else agent.session_id
                headers = {"DPoP": agent.proof(method, path, session_id=sid)}
                answer = agent.call(
                    method,
                    path,
                    raw_body=raw,
                    proof=False,
                    headers=headers,
                    principal_arn=principal,
                )
                assert (answer.status, answer.code) == (status, code), (name, path, answer.body)
                assert_problem(answer, status, code)
                audit_events.expect("request", "denied", reason=code)


def test_row_23_a_base64_flagged_body_that_is_not_base64_is_refused(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    path = f"/v1/sessions/{agent.session_id}/tokens"
    for body in ("%%%not base64%%%", base64.b64encode(b"[]").decode() + "!", "AAAA" * 5000):
        event = build_event(
            "POST",
            path,
            body=body,
            headers={"DPoP": agent.proof("POST", path)},
            principal_arn=agent.arn,
        )
        event["isBase64Encoded"] = True
        with unchanged(vault):
            answer = invoke(event)
        assert answer.status in (400, 413), answer.body
        assert_problem(answer, answer.status, answer.code or "")
    audit_events.expect("request", "denied", reason="invalid_request")


@pytest.mark.parametrize(
    "query",
    [
        "state=" + "s" * 100_000,
        "state=a&state=b&code=c&code=d",
        "state=%00%01%02&code=%ff%fe",
        "state=%E2%80%AE&iss=%E2%80%AE",
        "error=" + "e" * 10_000,
        "state=&code=&iss=&error=",
        "%zz=%zz&state=%",
        "code=" + "c" * 100_000,
        "a" * 50_000,
    ],
    ids=lambda q: q[:24],
)
def test_row_23_malformed_callback_queries_are_4xx_problems(
    vault: Vault, audit_events: AuditLog, query: str
) -> None:
    with unchanged(vault):
        answer = vault.callback(query)
    assert_problem(answer, 400, "invalid_state")
    audit_events.expect("consent.callback", "denied", reason="invalid_state")


UNROUTED = [
    ("PUT", "/v1/sessions"),
    ("PATCH", "/v1/sessions/ses_x"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/oauth/callback"),
    ("GET", "/v1/revocations"),
    ("GET", "/"),
    ("GET", "/v1/sessions/" + "x" * 5000),
    ("GET", "/v1/sessions/%00/../../tokens"),
    ("POST", "/v1/sessions//tokens"),
    ("GET", "/v2/sessions"),
]


def test_row_23_unknown_routes_and_methods_are_4xx_problems(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    with unchanged(vault):
        for method, path in UNROUTED:
            audit_events.clear()
            answer = agent.call(method, path, {}, proof=agent.proof(method, path))
            assert 400 <= answer.status < 500, (method, path, answer.body)
            assert_problem(answer, answer.status, answer.code or "")
            assert audit_events.find("request", "denied", reason=answer.code) or (
                audit_events.find("session.access", "denied")
            ), (method, path)


def test_row_23_oversized_headers_and_proofs_are_refused(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    path = f"/v1/sessions/{agent.session_id}/tokens"
    body = {"provider": "calendar", "scopes": ["calendar.read"]}
    with unchanged(vault):
        for proof in ("a." * 5000 + "b", "e" * 100_000, agent.proof("POST", path) + "A" * 5000):
            answer = agent.call("POST", path, body, proof=proof)
            assert_problem(answer, 401, "invalid_proof")
        forged_host = agent.call(
            "POST", path, body, headers={"x-forwarded-proto": "https://evil.test/#"}
        )
        assert_problem(forged_host, 401, "invalid_proof")
    audit_events.expect("session.access", "denied", reason="invalid_proof")


# --- row 32: deep nesting inside identity tokens, proofs and bodies ---------------------------

DEPTH = 1300
"""Deeper than Python's recursion limit (a RecursionError, not a ValueError, in json), yet
small enough for a proof's 4096 and an identity token's 8192 characters."""


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _deep(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def _deep_user_tokens(vault: Vault) -> dict[str, str]:
    """Unsigned identity tokens with deep JSON in the header or the claims (the vault must refuse
    them before any signature check would)."""
    claims = json.dumps({"iss": vault.server.issuer, "sub": "alice", "aud": "agent-app"})
    deep_claims = claims[:-1] + ', "x": ' + _deep() + "}"
    header = '{"alg": "RS256", "kid": "k"}'
    deep_header = header[:-1] + ', "x": ' + _deep() + "}"
    signature = _b64("signature")
    return {
        "user JWT header": ".".join((_b64(deep_header), _b64(claims), signature)),
        "user JWT claims": ".".join((_b64(header), _b64(deep_claims), signature)),
    }


@pytest.mark.parametrize("where", ["user JWT header", "user JWT claims"])
def test_row_32_deep_nesting_in_a_user_identity_token_is_a_401(
    vault: Vault, audit_events: AuditLog, where: str
) -> None:
    agent = agent_with_session(vault)
    newcomer = vault.agent()
    token = _deep_user_tokens(vault)[where]
    assert len(token) <= 8192
    with unchanged(vault):
        started = newcomer.start_session({"id_token": token})
        assert_problem(started, 401, "invalid_user_token")
        audit_events.expect("session.start", "denied", reason="invalid_user_token")
        renewed = agent.call(
            "POST", f"/v1/sessions/{agent.session_id}/renew", {"user": {"id_token": token}}
        )
        assert_problem(renewed, 401, "invalid_user_token")
    assert newcomer.session_id is None


def _deep_proofs(agent: TestAgent, method: str, path: str, sid: str | None) -> dict[str, str]:
    """Proofs with deep JSON in the header (unsigned garbage suffices) or in the claims (signed
    with the agent's own key, so only the nesting is wrong)."""
    jwk = agent.key.as_dict(private=False)
    header = json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk})
    claims = json.dumps(
        {
            "jti": "j" * 24,
            "htm": method,
            "htu": f"https://{DOMAIN}{path}",
            "iat": int(agent.clock()),
            **({"sid": sid} if sid else {}),
        }
    )
    deep_header = '{"typ": "dpop+jwt", "alg": "ES256", "x": ' + _deep() + "}"
    signed = jws.serialize_compact(
        json.loads(header), claims[:-1] + ', "x": ' + _deep() + "}", agent.key, algorithms=["ES256"]
    )
    return {
        "proof header": f"{_b64(deep_header)}.{_b64(claims)}.{_b64('signature')}",
        "proof claims": signed,
    }


@pytest.mark.parametrize("where", ["proof header", "proof claims"])
def test_row_32_deep_nesting_in_a_proof_header_or_its_claims_is_a_401(
    vault: Vault, audit_events: AuditLog, where: str
) -> None:
    agent = connected_agent(vault, scopes=("calendar.read",))
    newcomer = vault.agent()
    token_path = f"/v1/sessions/{agent.session_id}/tokens"
    proof = _deep_proofs(agent, "POST", token_path, agent.session_id)[where]
    assert len(proof) <= 4096
    with unchanged(vault):
        answer = agent.call(
            "POST", token_path, {"provider": "calendar", "scopes": ["calendar.read"]}, proof=proof
        )
        assert_problem(answer, 401, "invalid_proof")
        audit_events.expect("session.access", "denied", reason="invalid_proof")
        started = newcomer.call(
            "POST",
            "/v1/sessions",
            {"user": vault.user("alice")},
            proof=_deep_proofs(newcomer, "POST", "/v1/sessions", None)[where],
        )
        assert_problem(started, 401, "invalid_proof")
    assert newcomer.session_id is None


def test_row_32_deep_nesting_inside_a_body_member_is_a_400(
    vault: Vault, audit_events: AuditLog
) -> None:
    """Nesting that json itself survives (below ~1000 levels) but deeper than any body of the
    API, inside members the schema checks later: refused at parsing, on every route."""
    agent = connected_agent(vault, scopes=("calendar.read",))
    deep = _deep(600)
    bodies = [
        '{"user": {"id_token": "a.b.c", "extra": ' + deep + "}}",
        '{"provider": "calendar", "scopes": ' + deep + "}",
        '{"user": ' + deep + ', "ttl_seconds": 60}',
    ]
    with unchanged(vault):
        for raw in bodies:
            for method, path, principal in routes(agent):
                audit_events.clear()
                sid = None if path == "/v1/sessions" else agent.session_id
                answer = agent.call(
                    method,
                    path,
                    raw_body=raw,
                    proof=False,
                    principal_arn=principal,
                    headers={"DPoP": agent.proof(method, path, session_id=sid)},
                )
                assert_problem(answer, 400, "invalid_request")
                audit_events.expect("request", "denied", reason="invalid_request")
