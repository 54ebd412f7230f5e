"""Flow 13, the admin read API: admins only, every filter, pages that add up to the whole
listing, bad filters and cursors refused with stable codes (nothing stored changes), and no
token material, ciphertext, verifier or binding-code hash in any answer.

Real handlers over moto and the real provider (tests/support/harness.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.security.helpers import (
    agent_with_session,
    assert_problem,
    connected_agent,
    items_of_type,
    unchanged,
)
from tests.security.hygiene import HYGIENE
from tests.support.apigw import ACCOUNT, HttpAnswer, build_event, invoke
from tests.support.harness import Vault

LISTINGS = ("/v1/admin/sessions", "/v1/admin/grants", "/v1/admin/flows")


def _all(vault: Vault, path: str, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every item of a listing, page by page (at most 50 pages)."""
    query = dict(query or {})
    items: list[dict[str, Any]] = []
    for _ in range(50):
        answer = vault.admin_get(path, query)
        assert answer.status == 200, answer.body
        items += answer.json["items"]
        cursor = answer.json["next_cursor"]
        if cursor is None:
            return items
        query["cursor"] = cursor
    raise AssertionError("the listing did not end")


def _user(vault: Vault, name: str) -> dict[str, str]:
    return {"user_iss": vault.server.issuer, "user_sub": name}


def test_only_admins_read_and_a_refusal_reads_nothing(vault: Vault) -> None:
    alice = connected_agent(vault, "alice")
    grant = vault.admin_get("/v1/admin/grants").json["items"][0]["grant_id"]
    paths = (
        *LISTINGS,
        f"/v1/admin/sessions/{alice.session_id}",
        f"/v1/admin/grants/{grant}",
        "/v1/admin/flows/flw_" + "0" * 32,
    )
    for role in ("calendar-agent-role/task-1", "some-other-role/ops"):
        for path in paths:
            answer = invoke(
                build_event(
                    "GET", path, principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}"
                )
            )
            assert_problem(answer, 403, "forbidden")
            assert "alice" not in answer.body
    # an admin role of the same name in another account is not the admin (SECURITY row 51)
    foreign = invoke(
        build_event(
            "GET",
            "/v1/admin/grants",
            principal_arn="arn:aws:sts::999999999999:assumed-role/vault-admin/ops",
        )
    )
    assert_problem(foreign, 403, "forbidden")


def test_sessions_by_task_agent_user_and_status(vault: Vault) -> None:
    alice = agent_with_session(vault, "alice")
    bob = agent_with_session(vault, "bob")
    mail = agent_with_session(vault, "alice", role="mail-agent-role")
    ended = agent_with_session(vault, "bob", task_id=alice.task_id)
    assert ended.end().status == 200

    def ids(query: dict[str, str]) -> set[str]:
        return {s["session_id"] for s in _all(vault, "/v1/admin/sessions", query)}

    everyone = {a.session_id for a in (alice, bob, mail, ended)}
    assert ids({}) == everyone
    assert ids({"task": alice.task_id}) == {alice.session_id, ended.session_id}
    assert ids({"task": alice.task_id, "status": "ended"}) == {ended.session_id}
    assert ids({"task": alice.task_id, **_user(vault, "alice")}) == {alice.session_id}
    assert ids({"task": alice.task_id, "agent": "mail-agent"}) == set()
    assert ids({"agent": "mail-agent"}) == {mail.session_id}
    assert ids({"agent": "calendar-agent"}) == {alice.session_id, bob.session_id, ended.session_id}
    assert ids(_user(vault, "alice")) == {alice.session_id, mail.session_id}
    assert ids({"agent": "calendar-agent", **_user(vault, "bob")}) == {
        bob.session_id,
        ended.session_id,
    }
    assert ids({"status": "active"}) == everyone - {ended.session_id}
    assert ids({"status": "expired"}) == set()
    vault.clock.advance(3601)  # past every session's expiry
    assert ids({"status": "expired"}) == everyone - {ended.session_id}
    assert ids({"status": "active"}) == set()

    shown = vault.admin_get(f"/v1/admin/sessions/{ended.session_id}").json
    assert (shown["status"], shown["ended_reason"], shown["tokens"]) == (
        "ended",
        "ended_by_agent",
        [],
    )
    assert shown["user"] == {"iss": vault.server.issuer, "sub": "bob"}
    assert_problem(vault.admin_get("/v1/admin/sessions/ses_" + "x" * 32), 404, "session_not_found")
    assert_problem(vault.admin_get("/v1/admin/sessions/not-an-id"), 404, "session_not_found")


def test_grants_show_scopes_status_broken_reason_refreshes_and_their_sessions(
    vault: Vault,
) -> None:
    alice = connected_agent(vault, "alice")
    assert alice.token("calendar", ["calendar.read"]).status == 200  # a refresh, a minted token
    other = agent_with_session(vault, "alice")
    assert other.token("calendar", ["calendar.read"]).status == 200  # another session's token
    connected_agent(vault, "bob", scopes=("calendar.read",))
    connected_agent(vault, "alice", role="mail-agent-role", scopes=("mail.read",))

    everything = _all(vault, "/v1/admin/grants")
    assert len(everything) == 3
    (grant,) = _all(vault, "/v1/admin/grants", {"agent": "calendar-agent", **_user(vault, "alice")})
    assert grant["scopes"] == ["calendar.read", "calendar.write"]
    assert grant["status"] == "active" and grant["broken_reason"] is None
    assert grant["refreshes"] == 2  # one per session's first token
    assert grant["created_at"] <= grant["refreshed_at"] <= vault.clock()
    assert grant["sessions"] == sorted([alice.session_id, other.session_id])
    assert {
        g["user"]["sub"] for g in _all(vault, "/v1/admin/grants", {"provider": "calendar"})
    } == {
        "alice",
        "bob",
    }
    assert len(_all(vault, "/v1/admin/grants", _user(vault, "alice"))) == 2
    assert (
        len(_all(vault, "/v1/admin/grants", {**_user(vault, "alice"), "provider": "calendar"})) == 2
    )
    assert _all(vault, "/v1/admin/grants", {"provider": "calendar-post"}) == []
    assert len(_all(vault, "/v1/admin/grants", {"agent": "mail-agent"})) == 1

    # the provider refuses the refresh token: the grant is broken, and says why
    shown = vault.admin_get(f"/v1/admin/grants/{grant['grant_id']}").json
    assert [t["session_id"] for t in shown["tokens"]] == sorted(
        [alice.session_id, other.session_id]
    )
    vault.server.set_faults(token_endpoint={"lose_answer": True})
    lost = alice.token("calendar", ["calendar.write"])  # a refresh whose answer is lost
    assert lost.json["reason"] == "grant_broken"
    vault.server.clear_faults()
    (broken,) = _all(vault, "/v1/admin/grants", {"status": "broken"})
    assert (broken["grant_id"], broken["broken_reason"]) == (
        grant["grant_id"],
        "refresh_outcome_unknown",
    )
    assert len(_all(vault, "/v1/admin/grants", {"status": "active"})) == 2
    assert_problem(vault.admin_get("/v1/admin/grants/grt_" + "0" * 26), 404, "grant_not_found")


def test_flows_awaiting_binding_by_user_and_by_id(vault: Vault) -> None:
    alice = agent_with_session(vault, "alice")
    started = alice.authorize("calendar", ["calendar.read"])
    query = vault.consent_at_provider(started.json["authorization_url"], "alice")
    assert vault.callback(query).status == 302  # answered, never bound
    connected_agent(vault, "bob", scopes=("calendar.read",))

    (flow,) = _all(vault, "/v1/admin/flows")
    assert flow["flow_id"] == started.json["flow_id"]
    assert (flow["status"], flow["granted_scopes"]) == ("pending_binding", ["calendar.read"])
    assert _all(vault, "/v1/admin/flows", _user(vault, "alice")) == [flow]
    assert _all(vault, "/v1/admin/flows", _user(vault, "bob")) == []
    assert _all(vault, "/v1/admin/flows", {"agent": "mail-agent"}) == []
    assert _all(vault, "/v1/admin/flows", {"status": "pending_binding"}) == [flow]
    # bob's flow is bound: not awaiting binding, but shown by id
    bobs = [f for f in items_of_type(vault, "flow") if f["user_sub"]["S"] == "bob"]
    (bob_flow,) = bobs
    shown = vault.admin_get(f"/v1/admin/flows/{bob_flow['flow_id']['S']}").json
    assert shown["status"] == "active" and shown["user"]["sub"] == "bob"
    assert_problem(vault.admin_get("/v1/admin/flows/flw_" + "0" * 32), 404, "flow_not_found")


def test_pages_add_up_to_the_whole_listing_without_repeats(vault: Vault) -> None:
    sessions = {
        agent_with_session(vault, user, role).session_id
        for user in ("alice", "bob")
        for role in ("calendar-agent-role", "mail-agent-role", "calendar-agent-role")
    }
    for limit in ("1", "2", "4", "100"):
        seen: list[str] = []
        query = {"limit": limit}
        pages = 0
        while True:
            answer = vault.admin_get("/v1/admin/sessions", query).json
            assert len(answer["items"]) <= int(limit)
            seen += [s["session_id"] for s in answer["items"]]
            pages += 1
            if answer["next_cursor"] is None:
                break
            query = {"limit": limit, "cursor": answer["next_cursor"]}
        assert sorted(seen) == sorted(sessions), limit  # each once, none missing
        assert pages >= len(sessions) // int(limit), limit
    first = vault.admin_get("/v1/admin/sessions", {"limit": "25"}).json
    assert len(first["items"]) == 6 and first["next_cursor"] is None


def test_a_listing_reads_only_its_partition(vault: Vault) -> None:
    """The measured query behind the session index entry: sessions of one agent and user read
    only their own items, however many other sessions the table holds (a Scan would read all)."""
    for _ in range(4):
        agent_with_session(vault, "bob")
        agent_with_session(vault, "alice", role="mail-agent-role")
    mine = agent_with_session(vault, "alice")
    scanned: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        scanned.append(parsed["ScannedCount"])

    events = vault.services.store._db.client.meta.events  # the handlers' client
    events.register("after-call.dynamodb.Query", count)
    try:
        answer = vault.admin_get(
            "/v1/admin/sessions", {"agent": "calendar-agent", **_user(vault, "alice")}
        )
    finally:
        events.unregister("after-call.dynamodb.Query", count)
    assert [s["session_id"] for s in answer.json["items"]] == [mine.session_id]
    assert scanned == [1]
    table = vault._dynamodb.scan(TableName=vault.services.settings.table_name, Select="COUNT")
    assert table["ScannedCount"] > 10 * scanned[0]


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/v1/admin/sessions", {"limit": "0"}, "limit"),
        ("/v1/admin/sessions", {"limit": "101"}, "limit"),
        ("/v1/admin/sessions", {"limit": "ten"}, "limit"),
        ("/v1/admin/sessions", {"status": "broken"}, "status"),
        ("/v1/admin/sessions", {"task": "a/b"}, "task"),
        ("/v1/admin/sessions", {"provider": "calendar"}, "provider"),
        ("/v1/admin/sessions", {"user_iss": "https://idp.example"}, "user_sub"),
        ("/v1/admin/grants", {"user_sub": "alice"}, "user_iss"),
        ("/v1/admin/grants", {"agent": "Not An Agent"}, "agent"),
        ("/v1/admin/grants", {"status": "pending_binding"}, "status"),
        ("/v1/admin/grants", {"task": "t-1"}, "task"),
        ("/v1/admin/flows", {"status": "active"}, "status"),
        ("/v1/admin/flows", {"user_sub": "x" * 256, "user_iss": "i"}, "user_sub"),
    ],
)
def test_bad_filters_are_refused_with_a_stable_code(
    vault: Vault, path: str, query: dict[str, str], field: str
) -> None:
    agent_with_session(vault, "alice")
    with unchanged(vault):
        body = assert_problem(vault.admin_get(path, query), 400, "invalid_filter")
    assert field in {e["field"] for e in body["errors"]}, body


@pytest.mark.parametrize("path", LISTINGS)
def test_unconfigured_agent_or_provider_is_a_bad_filter(vault: Vault, path: str) -> None:
    name = "agent" if path.endswith("sessions") else "provider"
    with unchanged(vault):
        body = assert_problem(vault.admin_get(path, {name: "nobody"}), 400, "invalid_filter")
    assert "nobody" in body["detail"]


def _cursor(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def test_cursors_of_other_queries_or_changed_are_refused(vault: Vault) -> None:
    for user in ("alice", "bob", "alice"):
        agent_with_session(vault, user)
    page = vault.admin_get("/v1/admin/sessions", {"limit": "1"}).json
    cursor = page["next_cursor"]
    assert cursor is not None
    assert vault.admin_get("/v1/admin/sessions", {"limit": "2", "cursor": cursor}).status == 200
    document = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    foreign_key = dict(document["k"], gsi2pk="SESSIONS#mail-agent")
    foreign_partition = dict(document, k=foreign_key)
    other_attributes = dict(document, k={"pk": "USER#x", "sk": "GRANT#a#b"})
    bad = [
        ("/v1/admin/sessions", {"cursor": cursor, "agent": "calendar-agent"}),  # other filters
        ("/v1/admin/grants", {"cursor": cursor}),  # another listing
        ("/v1/admin/sessions", {"cursor": "not base64 !"}),
        ("/v1/admin/sessions", {"cursor": _cursor([1, 2])}),
        ("/v1/admin/sessions", {"cursor": _cursor(dict(document, p=7))}),
        ("/v1/admin/sessions", {"cursor": _cursor(dict(document, p=True))}),
        ("/v1/admin/sessions", {"cursor": _cursor(foreign_partition)}),
        ("/v1/admin/sessions", {"cursor": _cursor(other_attributes)}),
        ("/v1/admin/sessions", {"cursor": _cursor(dict(document, k={**document["k"], "sk": 1}))}),
    ]
    with unchanged(vault):
        for path, query in bad:
            assert_problem(vault.admin_get(path, query), 400, "invalid_cursor")


def test_no_answer_carries_token_material_ciphertexts_or_verifiers(vault: Vault) -> None:
    alice = connected_agent(vault, "alice")
    assert alice.token("calendar", ["calendar.read"]).status == 200
    pending = agent_with_session(vault, "bob")
    started = pending.authorize("calendar", ["calendar.read"])  # a verifier stored
    query = vault.consent_at_provider(started.json["authorization_url"], "bob")
    assert vault.callback(query).status == 302  # an unbound flow holding tokens
    grant = vault.admin_get("/v1/admin/grants").json["items"][0]["grant_id"]
    answers: list[HttpAnswer] = [
        *(vault.admin_get(path) for path in LISTINGS),
        vault.admin_get(f"/v1/admin/sessions/{alice.session_id}"),
        vault.admin_get(f"/v1/admin/grants/{grant}"),
        vault.admin_get(f"/v1/admin/flows/{started.json['flow_id']}"),
    ]
    assert all(a.status == 200 for a in answers)
    # every binary attribute stored (refresh and access token ciphertexts, verifiers) and the
    # binding code's hash: none appears, whole or base64, in any answer
    stored: list[str] = []
    for item in vault.items():
        for name, value in item.items():
            if "B" in value:
                raw = bytes(value["B"])
                stored += [raw.hex(), base64.b64encode(raw).decode()[:24]]
            elif name == "binding_hash":
                stored.append(value["S"])
    assert len(stored) >= 6
    for answer in answers:
        assert not [s for s in stored if s in answer.body]
        assert not {"refresh_token", "access_token", "verifier", "binding_hash", "lease_owner"} & (
            set(answer.body.replace('"', " ").split())
        )
    # and no secret the suite saw issued (tokens, codes, verifiers, proofs, data keys)
    texts = [("admin read", f"answer {i}", a.body) for i, a in enumerate(answers)]
    assert HYGIENE.scan(texts) == []
