"""The store's one item mapper: every kind's item, exactly as stored (docs/architecture.md,
"Tables"; items already in a table must keep reading), and back."""

from __future__ import annotations

import dataclasses
import decimal
from typing import Any

import pytest

from vault.models import (
    Delegation,
    Flow,
    Grant,
    MachineToken,
    PendingFlow,
    Session,
    SessionToken,
    UserRef,
)
from vault.store import schema
from vault.store.mapper import (
    DELEGATIONS,
    FLOWS,
    GRANTS,
    MACHINE_TOKENS,
    PENDING_FLOWS,
    PROOF_JTIS,
    SESSION_CHILDREN,
    SESSIONS,
    TASK_SESSIONS,
    TASK_STOPS,
    TOKENS,
    ItemMapper,
    attribute_value,
    attribute_values,
)
from vault.store.schema import DAY, ProofJti, SessionChild, TaskSession, TaskStopped

USER = UserRef("https://id.example", "alice")
UK = USER.key
T0 = 1_700_000_000

SESSION = Session(
    session_id="ses_1",
    agent="calendar-agent",
    principal_arn="arn:aws:iam::123456789012:role/agent",
    task_id="task-1",
    user=USER,
    jkt="thumb",
    public_jwk={"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
    created_at=T0,
    expires_at=T0 + 3600,
)
TOKEN = SessionToken(
    session_id="ses_1",
    provider="calendar",
    scopes=("calendar.write", "calendar.read"),
    grant_id="gr_1",
    user=USER,
    access_token_ct=b"\x01access",
    expires_at=T0 + 600,
)
PENDING = PendingFlow(
    state_hash="statehash",
    flow_id="fl_1",
    session_id="ses_1",
    agent="calendar-agent",
    provider="calendar",
    scopes=("calendar.read",),
    user=USER,
    verifier_ct=b"\x01verifier",
    return_url="https://app.example/done",
    grant_id="gr_1",
    created_at=T0,
    expires_at=T0 + 600,
)
FLOW = Flow(
    flow_id="fl_1",
    status="pending_binding",
    session_id="ses_1",
    agent="calendar-agent",
    provider="calendar",
    scopes=("calendar.read",),
    user=USER,
    grant_id="gr_1",
    created_at=T0,
    expires_at=T0 + 600,
    granted_scopes=("calendar.read",),
    refresh_token_ct=b"\x01refresh",
    access_token_ct=b"\x01access",
    binding_hash="bindinghash",
)
GRANT = Grant(
    grant_id="gr_1",
    user=USER,
    agent="calendar-agent",
    provider="calendar",
    scopes=("calendar.read",),
    refresh_token_ct=b"\x01refresh",
    created_at=T0,
)

CHILD = Session(
    session_id="ses_2",
    agent="mail-agent",
    principal_arn="arn:aws:sts::123456789012:assumed-role/mail/task-2",
    task_id="task-2",
    user=USER,
    jkt="thumb2",
    public_jwk={"kty": "EC"},
    created_at=T0,
    expires_at=T0 + 600,
    ancestors=("ses_1",),
    delegated={"calendar": ["calendar.read"]},
    grant_agent="calendar-agent",
    act={"sub": "mail-agent", "sid": "ses_2", "act": {"sub": "calendar-agent", "sid": "ses_1"}},
    delegation_id="dlg_1",
)
DELEGATION = Delegation(
    delegation_id="dlg_1",
    parent_session_id="ses_1",
    agent="mail-agent",
    user=USER,
    providers={"calendar": ["calendar.read"]},
    created_at=T0,
    claim_by=T0 + 300,
    expires_at=T0 + 600,
    status="claimed",
    session_id="ses_2",
)


def S(value: str) -> dict[str, str]:
    return {"S": value}


def N(value: int) -> dict[str, str]:
    return {"N": str(value)}


def B(value: bytes) -> dict[str, bytes]:
    return {"B": value}


def L(*values: str) -> dict[str, Any]:
    return {"L": [S(v) for v in values]}


USER_ATTRS = {"user_iss": S(USER.iss), "user_sub": S(USER.sub), "user_key": S(UK)}

STORED: list[tuple[ItemMapper[Any], Any, dict[str, Any]]] = [
    (
        SESSIONS,
        SESSION,
        {
            "pk": S("SESSION#ses_1"),
            "sk": S("SESSION"),
            "type": S("session"),
            "session_id": S("ses_1"),
            "agent": S("calendar-agent"),
            "principal_arn": S("arn:aws:iam::123456789012:role/agent"),
            "task_id": S("task-1"),
            **USER_ATTRS,
            "jkt": S("thumb"),
            "public_jwk": S('{"crv": "P-256", "kty": "EC", "x": "x", "y": "y"}'),
            "status": S("active"),
            "created_at": N(T0),
            "expires_at": N(T0 + 3600),
            "ttl": N(T0 + 3600 + DAY),
            "gsi1pk": S("TASK#task-1"),
            "gsi1sk": S("SESSION#ses_1"),
            "gsi2pk": S("SESSIONS#calendar-agent"),
            "gsi2sk": S(f"{UK}#{T0:012d}#ses_1"),
        },
    ),
    (
        TOKENS,
        TOKEN,
        {
            "pk": S("SESSION#ses_1"),
            "sk": S("TOKEN#calendar#calendar.read calendar.write"),
            "type": S("token"),
            "session_id": S("ses_1"),
            "provider": S("calendar"),
            "scopes": L("calendar.write", "calendar.read"),
            "grant_id": S("gr_1"),
            **USER_ATTRS,
            "access_token": B(b"\x01access"),
            "expires_at": N(T0 + 600),
            "ttl": N(T0 + 600 + DAY),
            "gsi2pk": S("GRANT#gr_1"),
            "gsi2sk": S("TOKEN#ses_1#calendar"),
        },
    ),
    (
        PENDING_FLOWS,
        PENDING,
        {
            "pk": S("STATE#statehash"),
            "sk": S("STATE"),
            "type": S("pending_flow"),
            "state_hash": S("statehash"),
            "flow_id": S("fl_1"),
            "session_id": S("ses_1"),
            "agent": S("calendar-agent"),
            "provider": S("calendar"),
            "scopes": L("calendar.read"),
            **USER_ATTRS,
            "verifier": B(b"\x01verifier"),
            "return_url": S("https://app.example/done"),
            "grant_id": S("gr_1"),
            "created_at": N(T0),
            "expires_at": N(T0 + 600),
            "ttl": N(T0 + 600),
            "status": S("pending"),
        },
    ),
    (
        FLOWS,
        FLOW,
        {
            "pk": S("FLOW#fl_1"),
            "sk": S("FLOW"),
            "type": S("flow"),
            "flow_id": S("fl_1"),
            "status": S("pending_binding"),
            "session_id": S("ses_1"),
            "agent": S("calendar-agent"),
            "provider": S("calendar"),
            "scopes": L("calendar.read"),
            "granted_scopes": L("calendar.read"),
            **USER_ATTRS,
            "grant_id": S("gr_1"),
            "created_at": N(T0),
            "expires_at": N(T0 + 600),
            "ttl": N(T0 + 600 + DAY),
            "refresh_token": B(b"\x01refresh"),
            "access_token": B(b"\x01access"),
            "binding_hash": S("bindinghash"),
            "gsi1pk": S("UNBOUND"),
            "gsi1sk": S(f"{T0 + 600:012d}#fl_1"),
            "gsi2pk": S(f"UNBOUND#{UK}"),
            "gsi2sk": S("FLOW#fl_1"),
        },
    ),
    (
        GRANTS,
        GRANT,
        {
            "pk": S(f"USER#{UK}"),
            "sk": S("GRANT#calendar-agent#calendar"),
            "type": S("grant"),
            "grant_id": S("gr_1"),
            **USER_ATTRS,
            "agent": S("calendar-agent"),
            "provider": S("calendar"),
            "scopes": L("calendar.read"),
            "refresh_token": B(b"\x01refresh"),
            "status": S("active"),
            "version": N(1),
            "created_at": N(T0),
            "gsi1pk": S("AGENT#calendar-agent"),
            "gsi1sk": S(f"GRANT#calendar#{UK}"),
            "gsi2pk": S("GRANT#gr_1"),
            "gsi2sk": S("GRANT"),
        },
    ),
    (
        MACHINE_TOKENS,
        MachineToken(
            "m2m-agent",
            "reports",
            ("reports.read",),
            b"\x01machine",
            T0 + 3600,
            lifetime=3600,
            fetched_at=T0,
        ),
        {
            "pk": S("MACHINE#m2m-agent#reports"),
            "sk": S("TOKEN#reports.read"),
            "type": S("machine_token"),
            "agent": S("m2m-agent"),
            "provider": S("reports"),
            "scopes": L("reports.read"),
            "access_token": B(b"\x01machine"),
            "expires_at": N(T0 + 3600),
            "lifetime": N(3600),
            "fetched_at": N(T0),
            "status": S("active"),
            "ttl": N(T0 + 3600 + DAY),
        },
    ),
    (
        TASK_SESSIONS,
        TaskSession("task-1", "ses_1", T0 + DAY),
        {
            "pk": S("TASK#task-1"),
            "sk": S("SESSION#ses_1"),
            "type": S("task_session"),
            "session_id": S("ses_1"),
            "ttl": N(T0 + DAY),
        },
    ),
    (
        TASK_STOPS,
        TaskStopped("task-1", T0, T0 + 7 * DAY),
        {
            "pk": S("TASK#task-1"),
            "sk": S("STOPPED"),
            "type": S("task_stopped"),
            "task_id": S("task-1"),
            "stopped_at": N(T0),
            "ttl": N(T0 + 7 * DAY),
        },
    ),
    (
        SESSIONS,
        CHILD,
        {
            "pk": S("SESSION#ses_2"),
            "sk": S("SESSION"),
            "type": S("session"),
            "session_id": S("ses_2"),
            "agent": S("mail-agent"),
            "principal_arn": S("arn:aws:sts::123456789012:assumed-role/mail/task-2"),
            "task_id": S("task-2"),
            **USER_ATTRS,
            "jkt": S("thumb2"),
            "public_jwk": S('{"kty": "EC"}'),
            "status": S("active"),
            "created_at": N(T0),
            "expires_at": N(T0 + 600),
            "ancestors": L("ses_1"),
            "delegated": S('{"calendar": ["calendar.read"]}'),
            "grant_agent": S("calendar-agent"),
            "act": S(
                '{"act": {"sid": "ses_1", "sub": "calendar-agent"}, "sid": "ses_2",'
                ' "sub": "mail-agent"}'
            ),
            "delegation_id": S("dlg_1"),
            "ttl": N(T0 + 600 + DAY),
            "gsi1pk": S("TASK#task-2"),
            "gsi1sk": S("SESSION#ses_2"),
            "gsi2pk": S("SESSIONS#mail-agent"),
            "gsi2sk": S(f"{UK}#{T0:012d}#ses_2"),
        },
    ),
    (
        DELEGATIONS,
        DELEGATION,
        {
            "pk": S("DELEGATION#dlg_1"),
            "sk": S("DELEGATION"),
            "type": S("delegation"),
            "delegation_id": S("dlg_1"),
            "parent_session_id": S("ses_1"),
            "agent": S("mail-agent"),
            **USER_ATTRS,
            "providers": S('{"calendar": ["calendar.read"]}'),
            "created_at": N(T0),
            "claim_by": N(T0 + 300),
            "expires_at": N(T0 + 600),
            "status": S("claimed"),
            "session_id": S("ses_2"),
            "ttl": N(T0 + 600 + DAY),
        },
    ),
    (
        SESSION_CHILDREN,
        SessionChild("ses_1", "dlg_1", "mail-agent", T0 + DAY, "ses_2"),
        {
            "pk": S("CHILDREN#ses_1"),
            "sk": S("DELEGATION#dlg_1"),
            "type": S("session_child"),
            "agent": S("mail-agent"),
            "session_id": S("ses_2"),
            "ttl": N(T0 + DAY),
        },
    ),
    (PROOF_JTIS, ProofJti("digest", T0 + 61), {"pk": S("digest"), "ttl": N(T0 + 61)}),
]
IDS = [
    (mapper.kind.type or "proof_jti") + ("_child" if record is CHILD else "")
    for mapper, record, _ in STORED
]


def test_every_kind_is_covered() -> None:
    assert {id(mapper.kind) for mapper, _, _ in STORED} == {id(k) for k in schema.KINDS}


@pytest.mark.parametrize(("mapper", "record", "item"), STORED, ids=IDS)
def test_a_record_is_stored_as_documented(
    mapper: ItemMapper[Any], record: Any, item: dict[str, Any]
) -> None:
    assert mapper.to_item(record) == item


@pytest.mark.parametrize(("mapper", "record", "item"), STORED, ids=IDS)
def test_a_stored_item_reads_back_as_its_record(
    mapper: ItemMapper[Any], record: Any, item: dict[str, Any]
) -> None:
    assert mapper.from_item(item) == record
    assert mapper.from_item(mapper.to_item(record)) == record


@pytest.mark.parametrize(("mapper", "record", "item"), STORED, ids=IDS)
def test_the_key_is_the_items_key(
    mapper: ItemMapper[Any], record: Any, item: dict[str, Any]
) -> None:
    key = {name: item[name] for name in mapper.table.key_attributes}
    assert mapper.key_of(record) == key


@pytest.mark.parametrize(("mapper", "record", "item"), STORED, ids=IDS)
def test_unknown_attributes_are_ignored(
    mapper: ItemMapper[Any], record: Any, item: dict[str, Any]
) -> None:
    newer = {**item, "added_later": S("x"), "a_map": {"M": {"n": N(1)}}, "null": {"NULL": True}}
    assert mapper.from_item(newer) == record


def test_optional_fields_are_stored_when_set_and_read_back() -> None:
    cases: list[tuple[ItemMapper[Any], Any, dict[str, Any]]] = [
        (
            SESSIONS,
            dataclasses.replace(
                SESSION, status="ended", ended_reason="task_stopped", identity_at=T0 + 5
            ),
            {"status": S("ended"), "ended_reason": S("task_stopped"), "identity_at": N(T0 + 5)},
        ),
        (
            TOKENS,
            dataclasses.replace(TOKEN, revoke_pending=True, lifetime=3600),
            {"revoke_pending": {"BOOL": True}, "lifetime": N(3600)},
        ),
        (
            GRANTS,
            dataclasses.replace(
                GRANT, status="broken", version=4, refreshed_at=T0 + 9, broken_reason="x"
            ),
            {
                "status": S("broken"),
                "version": N(4),
                "refreshed_at": N(T0 + 9),
                "broken_reason": S("x"),
            },
        ),
    ]
    for mapper, record, attributes in cases:
        item = mapper.to_item(record)
        assert {k: item[k] for k in attributes} == attributes
        assert mapper.from_item(item) == record


def test_empty_optional_fields_are_left_out() -> None:
    refused = dataclasses.replace(
        FLOW,
        status="refused",
        error="access_denied",
        granted_scopes=(),
        refresh_token_ct=None,
        access_token_ct=None,
        binding_hash=None,
    )
    item = FLOWS.to_item(refused)
    assert item["granted_scopes"] == {"L": []}
    assert item["error"] == S("access_denied")
    assert not {"refresh_token", "access_token", "binding_hash"} & set(item)
    assert FLOWS.from_item(item) == refused
    ended = dataclasses.replace(SESSION, ended_reason="")
    assert "ended_reason" not in SESSIONS.to_item(ended)
    assert "revoke_pending" not in TOKENS.to_item(TOKEN)


def test_a_closed_flow_leaves_the_sparse_indexes() -> None:
    for status in ("active", "refused", "rejected", "expired", "revoked"):
        item = FLOWS.to_item(dataclasses.replace(FLOW, status=status))
        assert not {"gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"} & set(item), status


def test_the_lease_is_read_and_the_abandoned_flag_never_stored() -> None:
    item = {**GRANTS.to_item(GRANT), "lease_owner": S("owner"), "lease_until": {"N": "1.5"}}
    leased = GRANTS.from_item(item)
    assert (leased.lease_owner, leased.lease_until) == ("owner", 1.5)
    assert "lease_abandoned" not in GRANTS.to_item(dataclasses.replace(GRANT, lease_abandoned=True))


def test_numbers_read_back_as_the_fields_types() -> None:
    item = {**SESSIONS.to_item(SESSION), "created_at": {"N": "1700000000.0"}}
    created = SESSIONS.from_item(item).created_at
    assert created == T0 and type(created) is int
    assert type(TOKENS.from_item(TOKENS.to_item(TOKEN)).access_token_ct) is bytes
    assert type(TOKENS.from_item(TOKENS.to_item(TOKEN)).scopes) is tuple


def test_a_missing_required_attribute_is_an_error() -> None:
    item = SESSIONS.to_item(SESSION)
    del item["jkt"]
    with pytest.raises(KeyError):
        SESSIONS.from_item(item)


def test_a_key_from_its_ids() -> None:
    assert TOKENS.key(
        session_id="ses_1", provider="calendar", scopes=("calendar.read", "calendar.write")
    ) == {"pk": S("SESSION#ses_1"), "sk": S("TOKEN#calendar#calendar.read calendar.write")}
    assert GRANTS.key(user=USER, agent="a", provider="p") == {
        "pk": S(f"USER#{UK}"),
        "sk": S("GRANT#a#p"),
    }
    assert PROOF_JTIS.key(digest="d") == {"pk": S("d")}
    with pytest.raises(KeyError):
        SESSIONS.key(flow_id="fl_1")


def test_partitions_and_sort_key_prefixes_for_queries() -> None:
    assert SESSIONS.partition(session_id="s") == "SESSION#s"
    assert SESSIONS.partition(schema.GSI1, task_id="t") == "TASK#t"
    assert TASK_SESSIONS.sort_key() == "SESSION#"
    assert TOKENS.sort_key(schema.GSI2) == "TOKEN#"
    assert FLOWS.partition(schema.GSI1) == "UNBOUND"
    assert FLOWS.partition(schema.GSI2, user=USER) == f"UNBOUND#{UK}"
    assert GRANTS.sort_key() == "GRANT#"
    assert GRANTS.sort_key(schema.GSI1) == "GRANT#"
    assert GRANTS.sort_key(schema.GSI1, provider=None) == "GRANT#"
    assert GRANTS.sort_key(schema.GSI1, provider="calendar") == "GRANT#calendar#"
    assert GRANTS.sort_key(schema.GSI2) == "GRANT"


def test_expression_values() -> None:
    assert attribute_values(
        {":s": "active", ":t": True, ":n": 3, ":f": 1.5, ":whole": 2.0, ":b": b"x"}
    ) == {
        ":s": S("active"),
        ":t": {"BOOL": True},
        ":n": N(3),
        ":f": {"N": "1.5"},
        ":whole": N(2),
        ":b": B(b"x"),
    }
    assert attribute_value(T0 + 0.123) == {"N": "1700000000.123"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ses_x",
        "é ✓",
        0,
        1,
        -7,
        T0,
        10**38 - 1,
        -(10**38) + 1,
        True,
        False,
        None,
        b"x",
        ["a", 1],
        {"k": "v"},
    ],
)
def test_values_written_directly_are_what_the_library_writes(value: Any) -> None:
    from boto3.dynamodb.types import TypeSerializer

    assert attribute_value(value) == TypeSerializer().serialize(value)


def test_an_integer_beyond_dynamodbs_digits_is_refused_by_the_library() -> None:
    with pytest.raises(decimal.Inexact):
        attribute_value(10**38 + 1)


def test_values_read_directly_are_what_the_library_reads() -> None:
    from boto3.dynamodb.types import TypeDeserializer

    item = SESSIONS.to_item(CHILD)  # a delegated session: every kind of attribute
    assert SESSIONS.from_item(item) == CHILD
    library = {k: TypeDeserializer().deserialize(v) for k, v in item.items()}
    assert all(library[k] == v["S"] for k, v in item.items() if "S" in v)
