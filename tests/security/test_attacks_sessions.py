"""SECURITY.md rows 9-11, 15, 16, 24 and 26: attacks on sessions, proofs and identities.

A session id alone is worth nothing: every call must come from the session's IAM principal and
carry a fresh proof signed by the session's key, for this method and URL.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey

from tests.security.helpers import (
    AuditLog,
    agent_with_session,
    assert_problem,
    connected_agent,
    diff,
    items_of_type,
    snapshot,
    unchanged,
)
from tests.support.agent import TestAgent, sign_proof
from tests.support.apigw import DOMAIN, LambdaContext, build_event, invoke
from tests.support.harness import Vault, task_stopped

TOKENS = "/v1/sessions/{}/tokens"


def tokens_path(agent: TestAgent) -> str:
    return TOKENS.format(agent.session_id)


def token_body() -> dict[str, Any]:
    return {"provider": "calendar", "scopes": ["calendar.read"]}


def b64(data: dict[str, Any]) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- row 9: a token request with another session's id ------------------------------------------


def test_row_09_another_principal_cannot_use_a_session_id(
    vault: Vault, audit_events: AuditLog
) -> None:
    victim = connected_agent(vault, "alice")
    thief = agent_with_session(vault, "bob")  # same role, another task: another principal
    path = tokens_path(victim)
    forged = sign_proof(
        thief.key,
        method="POST",
        url=f"https://{DOMAIN}{path}",
        iat=int(vault.clock()),
        session_id=victim.session_id,
    )
    with unchanged(vault):
        answers = [
            thief.call("POST", path, token_body(), proof=forged),
            thief.call(
                "GET",
                f"/v1/sessions/{victim.session_id}",
                proof=thief.proof(
                    "GET", f"/v1/sessions/{victim.session_id}", session_id=victim.session_id
                ),
            ),
            thief.call(
                "POST",
                f"/v1/sessions/{victim.session_id}/authorizations",
                {"provider": "calendar", "scopes": ["calendar.read"]},
                proof=thief.proof(
                    "POST",
                    f"/v1/sessions/{victim.session_id}/authorizations",
                    session_id=victim.session_id,
                ),
            ),
        ]
    for answer in answers:
        assert_problem(answer, 403, "forbidden")
    event = audit_events.expect(
        "session.access", "denied", reason="forbidden", session_id=victim.session_id
    )
    assert event["principal"] == thief.arn


def test_row_09_the_same_principal_cannot_use_its_other_sessions_id_with_this_key(
    vault: Vault, audit_events: AuditLog
) -> None:
    first = connected_agent(vault, "alice")
    second = vault.agent(task_id=first.task_id)  # same task (principal), a new session key
    assert second.start_session(vault.user("bob")).status == 201
    path = tokens_path(first)
    with unchanged(vault):
        answer = second.call(
            "POST",
            path,
            token_body(),
            proof=second.proof("POST", path, session_id=first.session_id),
        )
    assert_problem(answer, 401, "invalid_proof")
    audit_events.expect(
        "session.access", "denied", reason="invalid_proof", session_id=first.session_id
    )


def test_row_09_an_unknown_session_id_is_not_found(vault: Vault, audit_events: AuditLog) -> None:
    agent = agent_with_session(vault)
    for sid in ("ses_" + "A" * 32, "ses_short", "../../etc/passwd", "SESSION#x"):
        path = TOKENS.format(sid)
        with unchanged(vault):
            answer = agent.call(
                "POST", path, token_body(), proof=agent.proof("POST", path, session_id=sid)
            )
        assert answer.status == 404 and answer.code in ("session_not_found", "not_found"), sid
    audit_events.expect("request", "denied", reason="session_not_found")


# --- row 10: a proof signed with a key other than the session's --------------------------------


def test_row_10_a_proof_signed_by_another_key_is_rejected(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    path = tokens_path(agent)
    other = ECKey.generate_key("P-256")
    url = f"https://{DOMAIN}{path}"
    iat = int(vault.clock())
    own_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": agent.key.as_dict(private=False)}
    claims = json.dumps(
        {"jti": uuid.uuid4().hex, "htm": "POST", "htu": url, "iat": iat, "sid": agent.session_id}
    )
    proofs = {
        "other key, its own jwk": sign_proof(
            other, method="POST", url=url, iat=iat, session_id=agent.session_id
        ),
        "other key, the session's jwk": jws.serialize_compact(
            own_header, claims, other, algorithms=["ES256"]
        ),
        "signature cut": agent.proof("POST", path).rsplit(".", 1)[0] + ".",
        "signature of another proof": agent.proof("POST", path).rsplit(".", 1)[0]
        + "."
        + agent.proof("POST", path).rsplit(".", 1)[1],
    }
    for why, proof in proofs.items():
        with unchanged(vault):
            answer = agent.call("POST", path, token_body(), proof=proof)
        assert_problem(answer, 401, "invalid_proof"), why
    assert len(audit_events.find("session.access", "denied", reason="invalid_proof")) == 4


# --- row 11: replayed, stale, wrong-target and missing proofs ----------------------------------


def _proof_variants(agent: TestAgent, vault: Vault, path: str) -> dict[str, str | None]:
    now = int(vault.clock())
    url = f"https://{DOMAIN}{path}"
    sid = agent.session_id
    key = agent.key
    public = key.as_dict(private=False)

    def with_header(header: dict[str, Any], signer: Any = key, alg: str = "ES256") -> str:
        claims = json.dumps(
            {"jti": uuid.uuid4().hex, "htm": "POST", "htu": url, "iat": now, "sid": sid}
        )
        return jws.serialize_compact(header, claims, signer, algorithms=[alg])

    return {
        "missing": None,
        "empty": "",
        "garbage": "not-a-jwt",
        "stale iat": sign_proof(key, method="POST", url=url, iat=now - 75, session_id=sid),
        "future iat": sign_proof(key, method="POST", url=url, iat=now + 75, session_id=sid),
        "iat as string": jws.serialize_compact(
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": public},
            json.dumps(
                {"jti": uuid.uuid4().hex, "htm": "POST", "htu": url, "iat": str(now), "sid": sid}
            ),
            key,
            algorithms=["ES256"],
        ),
        "wrong htm": sign_proof(key, method="GET", url=url, iat=now, session_id=sid),
        "wrong htu path": sign_proof(key, method="POST", url=url + "/x", iat=now, session_id=sid),
        "wrong htu host": sign_proof(
            key, method="POST", url=url.replace(DOMAIN, "evil.test"), iat=now, session_id=sid
        ),
        "malformed htu": sign_proof(
            key, method="POST", url="https://[vault.test" + path, iat=now, session_id=sid
        ),
        "htu bad port": sign_proof(
            key, method="POST", url="https://vault.test:99999" + path, iat=now, session_id=sid
        ),
        "wrong sid": sign_proof(key, method="POST", url=url, iat=now, session_id="ses_" + "B" * 32),
        "no sid": sign_proof(key, method="POST", url=url, iat=now, session_id=None),
        "short jti": sign_proof(key, method="POST", url=url, iat=now, session_id=sid, jti="x"),
        "typ JWT": with_header({"typ": "JWT", "alg": "ES256", "jwk": public}),
        "no jwk": with_header({"typ": "dpop+jwt", "alg": "ES256"}),
        "private jwk": with_header(
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=True)}
        ),
        "HS256": with_header(
            {"typ": "dpop+jwt", "alg": "HS256", "jwk": public},
            OctKey.import_key(b"k" * 32),
            "HS256",
        ),
        "alg none": f"{b64({'typ': 'dpop+jwt', 'alg': 'none', 'jwk': public})}."
        f"{b64({'jti': uuid.uuid4().hex, 'htm': 'POST', 'htu': url, 'iat': now, 'sid': sid})}.",
    }


def test_row_11_stale_mistargeted_malformed_or_missing_proofs_are_rejected(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    path = tokens_path(agent)
    for why in _proof_variants(agent, vault, path):
        proof = _proof_variants(agent, vault, path)[why]  # signed just before it is sent
        audit_events.clear()
        with unchanged(vault):
            answer = agent.call(
                "POST", path, token_body(), proof=proof if proof is not None else False
            )
        assert answer.status == 401 and answer.code == "invalid_proof", (why, answer.body)
        assert_problem(answer, 401, "invalid_proof")
        audit_events.expect(
            "session.access", "denied", reason="invalid_proof", session_id=agent.session_id
        )


def test_row_11_a_replayed_proof_is_rejected(vault: Vault, audit_events: AuditLog) -> None:
    agent = connected_agent(vault)
    path = tokens_path(agent)
    proof = agent.proof("POST", path)
    first = agent.call("POST", path, token_body(), proof=proof)
    assert first.status == 200, first.body
    with unchanged(vault):
        replay = agent.call("POST", path, token_body(), proof=proof)
    assert_problem(replay, 401, "proof_replayed")
    audit_events.expect("session.access", "denied", reason="proof_replayed")
    # the same jti in a newly signed proof is a replay too
    jti = json.loads(jws.extract_compact(proof.encode()).payload)["jti"]
    again = agent.call("POST", path, token_body(), proof=agent.proof("POST", path, jti=jti))
    assert_problem(again, 401, "proof_replayed")


def test_row_11_session_creation_needs_a_valid_fresh_proof(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = vault.agent()
    url = f"https://{DOMAIN}/v1/sessions"
    now = int(vault.clock())
    body = {"user": vault.user("alice")}
    variants = {
        "missing": False,
        "stale": sign_proof(agent.key, method="POST", url=url, iat=now - 120, session_id=None),
        "for another route": sign_proof(
            agent.key, method="POST", url=url + "/x", iat=now, session_id=None
        ),
        "naming a session": sign_proof(
            agent.key, method="POST", url=url, iat=now, session_id="ses_" + "C" * 32
        ),
    }
    for why, proof in variants.items():
        audit_events.clear()
        with unchanged(vault):
            answer = agent.call("POST", "/v1/sessions", body, proof=proof)
        assert answer.code == "invalid_proof", (why, answer.body)
        assert_problem(answer, 401, "invalid_proof")
        audit_events.expect("request", "denied", reason="invalid_proof", principal=agent.arn)
    proof = sign_proof(agent.key, method="POST", url=url, iat=now, session_id=None)
    assert agent.call("POST", "/v1/sessions", body, proof=proof).status == 201
    replayed = agent.call("POST", "/v1/sessions", body, proof=proof)
    assert_problem(replayed, 401, "proof_replayed")
    assert len(items_of_type(vault, "session")) == 1


# --- row 15: unknown provider or agent ----------------------------------------------------------


def test_row_15_an_unknown_provider_is_refused_without_side_effects(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    requests = vault.server.stats()["token_requests"]
    with unchanged(vault):
        authorize = agent.authorize("dropbox", ["files.read"])
        token = agent.token("dropbox", ["files.read"])
        revoke = vault.admin({"provider": "dropbox"})
    for answer in (authorize, token, revoke):
        assert_problem(answer, 400, "unknown_provider")
    assert vault.server.stats()["token_requests"] == requests
    audit_events.expect("consent.start", "denied", reason="unknown_provider", provider="dropbox")
    audit_events.expect("token.issue", "denied", reason="unknown_provider", provider="dropbox")
    audit_events.expect(
        "request", "denied", reason="unknown_provider", route="POST /v1/revocations"
    )


def test_row_15_an_unknown_agent_is_refused_without_side_effects(
    vault: Vault, audit_events: AuditLog
) -> None:
    victim = connected_agent(vault)
    stranger = vault.agent("stranger-role", victim.task_id)
    stranger.session_id = victim.session_id
    with unchanged(vault):
        answers = [
            stranger.start_session(vault.user("alice")),
            stranger.token("calendar", ["calendar.read"]),
            stranger.authorize("calendar", ["calendar.read"]),
        ]
        # reading or ending a session only asks whether it is the caller's own: it is not
        not_its_own = [
            stranger.call("GET", f"/v1/sessions/{victim.session_id}"),
            stranger.call("DELETE", f"/v1/sessions/{victim.session_id}"),
        ]
        unknown_agent_revocation = vault.admin({"agent": "nobody"})
    for answer in answers:
        assert_problem(answer, 403, "unknown_agent")
    for answer in not_its_own:
        assert_problem(answer, 403, "forbidden")
    assert_problem(unknown_agent_revocation, 400, "invalid_request")
    event = audit_events.expect(
        "request", "denied", reason="unknown_agent", route="POST /v1/sessions"
    )
    assert event["principal"] == stranger.arn


# --- row 16: sessions used after DELETE, after expiry, after their task stopped ---------------


def _reap_event(task_id: str) -> dict[str, Any]:
    return task_stopped(task_id)


def _reap(task_id: str) -> dict[str, Any]:
    from vault.handlers.reaper import handler

    return handler(_reap_event(task_id), LambdaContext())  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["deleted", "expired", "task_stopped"])
def test_row_16_a_dead_session_is_refused_and_its_tokens_are_revoked_upstream(
    vault: Vault, audit_events: AuditLog, how: str
) -> None:
    agent = connected_agent(vault)
    token = agent.token("calendar", ["calendar.read"]).json["access_token"]
    other = agent.token("calendar", ["calendar.write"]).json["access_token"]
    assert vault.server.introspect(token)["active"] is True
    if how == "deleted":
        assert agent.end().status == 200
    elif how == "expired":
        vault.clock.advance(vault.services.config.session_ttl_seconds + 1)
    else:
        assert _reap(agent.task_id)["ended_sessions"] == 1
    audit_events.clear()

    answer = agent.token("calendar", ["calendar.read"])

    assert_problem(answer, 410, "session_ended")
    assert vault.server.introspect(token) == {"active": False}
    assert vault.server.introspect(other) == {"active": False}
    assert not [i for i in snapshot(vault) if i["sk"]["S"].startswith("TOKEN#")]
    audit_events.expect(
        "session.access", "denied", reason="session_ended", session_id=agent.session_id
    )
    with unchanged(vault):
        again = agent.token("calendar", ["calendar.read"])
        consent = agent.authorize("calendar", ["calendar.read"])
    assert_problem(again, 410, "session_ended")
    assert_problem(consent, 410, "session_ended")


# --- row 24: no IAM auth, another agent's role --------------------------------------------------


def test_row_24_a_caller_without_iam_auth_is_refused_on_every_route(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    sid = agent.session_id
    calls = [
        ("POST", "/v1/sessions", {"user": vault.user("alice")}),
        ("GET", f"/v1/sessions/{sid}", None),
        ("DELETE", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/renew", {}),
        (
            "POST",
            f"/v1/sessions/{sid}/authorizations",
            {"provider": "calendar", "scopes": ["calendar.read"]},
        ),
        ("POST", f"/v1/sessions/{sid}/tokens", token_body()),
        ("POST", f"/v1/flows/flw_{'D' * 32}/complete", {"user": vault.user("alice")}),
        ("POST", "/v1/revocations", {"agent": "calendar-agent"}),
    ]
    before = snapshot(vault)
    for principal in (
        None,
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::123456789012:role/calendar-agent-role",
        "",
        "*",
    ):
        for method, path, body in calls:
            audit_events.clear()
            answer = agent.call(method, path, body, principal_arn=principal)
            assert_problem(answer, 403, "unknown_agent")
            audit_events.expect("request", "denied", reason="unknown_agent")
    assert diff(before, snapshot(vault)).empty


def test_row_24_one_agent_never_reads_or_binds_another_agents_grants(
    vault: Vault, audit_events: AuditLog
) -> None:
    calendar = connected_agent(vault, "alice", ("calendar.read",))
    mail = agent_with_session(vault, "alice", role="mail-agent-role")
    started = calendar.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    assert vault.callback(query).status == 302

    with unchanged(vault):
        read = mail.call(
            "POST",
            tokens_path(calendar),
            token_body(),
            proof=mail.proof("POST", tokens_path(calendar), session_id=calendar.session_id),
        )
        bind = mail.complete(started.json["flow_id"], vault.user("alice"))
        own = mail.token("calendar", ["calendar.read"])  # the same user, provider and scope
    assert_problem(read, 403, "forbidden")
    assert_problem(bind, 403, "forbidden")
    body = assert_problem(own, 403, "consent_required")
    assert body["reason"] == "no_grant"
    audit_events.expect("session.access", "denied", reason="forbidden")
    audit_events.expect(
        "consent.complete", "denied", reason="forbidden", flow_id=started.json["flow_id"]
    )
    audit_events.expect("token.issue", "denied", reason="no_grant", agent="mail-agent")


def test_row_24_agents_are_not_admins_and_admins_are_not_agents(
    vault: Vault, audit_events: AuditLog
) -> None:
    agent = connected_agent(vault)
    admin = vault.agent("vault-admin", "ops")
    with unchanged(vault):
        revoke = agent.call(
            "POST",
            "/v1/revocations",
            {"user": {"iss": vault.server.issuer, "sub": "alice"}},
            proof=False,
        )
        start = admin.start_session(vault.user("alice"))
    assert_problem(revoke, 403, "forbidden")
    assert_problem(start, 403, "unknown_agent")
    audit_events.expect("request", "denied", reason="forbidden", principal=agent.arn)


# --- row 26: no way to a child session but delegation's own routes -------------------------------
# (delegation itself, and a child asking for more than its parent: test_attacks_delegation.py)


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/sessions/{sid}/children"),
        ("POST", "/v1/sessions/{sid}/token-exchange"),
        ("POST", "/v1/token"),
        ("POST", "/v1/delegations"),
    ],
)
def test_row_26_no_other_route_makes_a_child_session(
    vault: Vault, audit_events: AuditLog, method: str, path: str
) -> None:
    """No token-exchange or other route accepts a child-session request: a child exists only
    through `POST .../delegations` and its claim (test_attacks_delegation.py)."""
    parent = connected_agent(vault, scopes=("calendar.read",))
    path = path.format(sid=parent.session_id)
    body = {
        "provider": "calendar",
        "scopes": ["calendar.read", "calendar.write", "mail.read"],
        "subject_token": "x",
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "actor": {"sub": "sub-agent"},
    }
    before = snapshot(vault)
    answer = parent.call(method, path, body, proof=parent.proof(method, path))
    assert_problem(answer, 404, "not_found")
    assert diff(before, snapshot(vault)).empty
    audit_events.expect("request", "denied", reason="not_found", principal=parent.arn)
    # and nothing of the parent's changed: it still gets exactly its own scope
    assert parent.token("calendar", ["calendar.read"]).status == 200
    refused = parent.token("calendar", ["calendar.write"])
    assert_problem(refused, 403, "consent_required")


def test_row_26_a_child_cannot_be_created_through_the_session_routes_either(vault: Vault) -> None:
    """No body member makes a session a child of another (unknown fields are refused)."""
    parent = connected_agent(vault, scopes=("calendar.read",))
    child = vault.agent()
    with unchanged(vault):
        answer = child.start_session(
            vault.user("alice"), parent_session_id=parent.session_id, act={"sub": parent.arn}
        )
    body = assert_problem(answer, 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == {"parent_session_id", "act"}


def test_row_26_the_harness_routes_unknown_paths_nowhere(vault: Vault) -> None:
    """The harness routes like API Gateway: an unknown route reaches no flow (sanity check of
    row 26's premise)."""
    event = build_event(
        "POST",
        "/v1/sessions/x/children",
        body="{}",
        principal_arn="arn:aws:sts::123456789012:assumed-role/calendar-agent-role/t1",
    )
    assert event["routeKey"] == "$default"
    assert invoke(event).status == 404
