"""SECURITY.md row 27, DESIGN invariant 9: no token, code, verifier, secret or proof in a log
line, an error body or a URL.

The suite-wide check lives in tests/security/hygiene.py (every test, every log record, every
answer). These tests make sure it is armed: a whole story registers every kind of secret and
leaks none, and the scanner finds a secret planted in each kind of place it watches.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

from tests.security.helpers import AuditLog, agent_with_session, connected_agent, query_of
from tests.security.hygiene import HYGIENE, Hygiene, _LogCollector
from tests.support.apigw import build_event
from tests.support.harness import Vault, binding_code_of

KINDS = {
    "access token",
    "refresh token",
    "ID token",
    "authorization code",
    "PKCE verifier",
    "client secret",
    "DPoP proof",
    "state",
    "KMS data key",
}


def test_row_27_a_whole_story_leaks_no_secret_anywhere(
    vault: Vault, audit_events: AuditLog
) -> None:
    start = len(HYGIENE.texts)
    known_before = set(HYGIENE.secrets)
    alice = connected_agent(vault, "alice")  # consent, exchange, binding
    assert alice.token("calendar", ["calendar.read"]).status == 200  # refresh, mint
    assert alice.token("calendar", ["calendar.read"]).status == 200  # cached
    assert alice.token("calendar", ["mail.read"]).status == 403
    assert alice.call("GET", f"/v1/sessions/{alice.session_id}", proof="a.b.c").status == 401
    # a refused consent and a binding by the wrong user
    started = alice.authorize("calendar", ["calendar.read"])
    denied = vault.consent_at_provider(started.json["authorization_url"], "alice", "deny")
    assert vault.callback(denied).status == 302
    bob = agent_with_session(vault, "bob")
    started = bob.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "bob")
    back = vault.callback(query)
    assert back.status == 302
    assert vault.callback(query).status == 400  # replayed
    code = binding_code_of(back)
    assert bob.complete(started.json["flow_id"], vault.user("alice"), code).status == 403
    # provider failures on the way
    vault.server.set_faults(token_endpoint={"status": 502})
    assert alice.token("calendar", ["calendar.write"]).status == 502
    # forged iss with a real code
    started = bob.authorize("calendar", ["calendar.read"])
    query = query_of("?" + vault.consent_at_provider(started.json["authorization_url"], "bob"))
    assert vault.callback(urlencode({**query, "iss": "https://evil.example"})).status == 400
    # revocation and the end of the session
    assert vault.admin({"user": {"iss": vault.server.issuer, "sub": "alice"}}).status == 200
    assert alice.end().status == 200

    seen = {kind for value, kind in HYGIENE.secrets.items() if value not in known_before}
    missing = KINDS - seen - {"client secret", "ID token"}  # those two are known per session
    assert not missing, f"the registry did not see: {missing}"
    assert set(HYGIENE.secrets.values()) >= KINDS
    texts = HYGIENE.texts[start:]
    watched = {what.split(" of ")[0].split(" built")[0] for _, what, _ in texts}
    assert watched >= {"log line", "answer body", "authorization URL", "redirect"}, watched
    assert HYGIENE.scan(texts) == []
    assert audit_events.events, "the story was audited"


def test_row_27_the_scanner_finds_what_is_planted() -> None:
    hygiene = Hygiene()
    secret = "tok_Zx81-qQ_mW3pLr9vTb6KcYd2"
    hygiene.add_secret(secret, "access token")
    proof = "eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJlLWJ5dGVzLW9mLWEtcHJvb2Y"
    hygiene.add_secret(proof, "DPoP proof")
    hygiene.add_secret("aaaaaaaaaaaaaaaaaaaaaaaa", "too regular to be a secret")
    hygiene.add_secret("short", "too short to be a secret")
    logger = logging.getLogger("tests.security.planted")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    collector = _LogCollector(hygiene)
    logger.addHandler(collector)
    try:
        logger.warning("refresh failed for %s", secret)
        logger.info("no secret here", extra={"audit": {"token": secret}})
        try:
            raise ValueError(f"bad proof {proof.rsplit('.', 1)[1]}")
        except ValueError:
            logger.exception("unexpected")
        logger.info("nothing to see: aaaaaaaaaaaaaaaaaaaaaaaa short")
        logger.info("a truncated token is a leak too: %s...", secret[:20])
    finally:
        logger.removeHandler(collector)
    hygiene.add_text("answer body", json.dumps({"detail": f"token {secret} refused"}))
    hygiene.add_text("redirect", f"https://app.example.test/return?flow_id=x&t={secret}")
    findings = hygiene.scan(hygiene.texts)
    assert [(f.kind, f.what.split(" (")[0], f.partial) for f in findings] == [
        ("access token", "log line of tests.security.planted", False),
        ("access token", "log line of tests.security.planted", False),
        ("DPoP proof", "log line of tests.security.planted", True),  # its signature
        ("access token", "log line of tests.security.planted", True),  # 20 of 28 characters
        ("access token", "answer body", False),
        ("access token", "redirect", False),
    ]
    assert all(secret not in str(f) and proof not in str(f) for f in findings)


def test_row_27_an_authorization_url_may_carry_state_and_challenge_only(vault: Vault) -> None:
    hygiene = Hygiene()
    hygiene.current = "this test"
    agent = agent_with_session(vault)
    started = agent.authorize("calendar", ["calendar.read"])
    url = started.json["authorization_url"]
    params = query_of(url)
    hygiene.add_secret(params["state"], "state")
    hygiene.observe_http(
        build_event("POST", f"/v1/sessions/{agent.session_id}/authorizations"),
        type(
            "Answer", (), {"status": 201, "body": started.body, "headers": {}, "json": started.json}
        )(),
    )
    assert hygiene.scan(hygiene.texts) == []  # state is where it belongs
    # the same URL carrying a verifier or a client secret would be found
    hygiene.add_secret("v" + "erifier-0123456789abcdefghij", "PKCE verifier")
    leaky = url + "&code_verifier=verifier-0123456789abcdefghij"
    hygiene.observe_http(
        build_event("POST", f"/v1/sessions/{agent.session_id}/authorizations"),
        type(
            "Answer",
            (),
            {
                "status": 201,
                "body": json.dumps({"authorization_url": leaky}),
                "headers": {},
                "json": {"authorization_url": leaky},
            },
        )(),
    )
    assert [f.kind for f in hygiene.scan(hygiene.texts)] == ["PKCE verifier"]
