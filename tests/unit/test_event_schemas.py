"""docs/events/*.schema.json are what `vault.lifecycle` publishes (`make events` writes them)."""

from __future__ import annotations

import json
from pathlib import Path

from vault.lifecycle import EVENTS, schemas

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"


def test_each_event_has_its_schema_file_and_it_is_current() -> None:
    files = {p.name.removesuffix(".schema.json") for p in DOCS.glob("*.schema.json")}
    assert (
        files
        == set(EVENTS)
        == {
            "grant.activated",
            "grant.broken",
            "grant.revoked",
            "flow.expired_unbound",
            "session.ended",
        }
    )
    for name, schema in schemas().items():
        written = json.loads((DOCS / f"{name}.schema.json").read_text(encoding="utf-8"))
        assert written == schema, f"docs/events/{name}.schema.json is stale: run `make events`"
        assert written["additionalProperties"] is False
        assert {"change_id", "occurred_at"} <= set(written["required"])


def test_no_schema_has_a_member_for_secret_material() -> None:
    for name, schema in schemas().items():
        members = set(schema["properties"])
        assert not members & {
            "access_token",
            "refresh_token",
            "binding_code",
            "binding_hash",
            "user_key",
            "verifier",
            "state",
            "code",
        }, name
