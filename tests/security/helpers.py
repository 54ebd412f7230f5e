"""Shared checks of the security suite: problem answers, stored-state diffs, audit events,
and the few multi-step setups (a connected agent) the attack tests start from."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.agent import TestAgent
from tests.support.apigw import HttpAnswer
from tests.support.aws import ACCOUNT, REGION
from tests.support.harness import Vault

PROBLEM = "application/problem+json"
Key = tuple[str, str]


# --- answers -----------------------------------------------------------------------------------


def assert_problem(answer: HttpAnswer, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 answer with this status and stable code (and a retry hint on 5xx)."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers.get("content-type") == PROBLEM, answer.headers
    body = answer.json
    assert isinstance(body, dict), answer.body
    assert body["code"] == code, body
    assert body["status"] == status and body["type"] == f"urn:agent-vault:problem:{code}", body
    assert isinstance(body["title"], str) and isinstance(body["detail"], str), body
    assert "Traceback" not in answer.body
    if status >= 500:
        assert answer.headers.get("retry-after", "").isdigit(), answer.headers
        assert body["retry_after"] == int(answer.headers["retry-after"]) > 0, body
    return body


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# --- stored state ------------------------------------------------------------------------------


def by_key(items: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {(i["pk"]["S"], i["sk"]["S"]): i for i in items}


@dataclass
class Diff:
    added: dict[Key, dict[str, Any]] = field(default_factory=dict)
    removed: dict[Key, dict[str, Any]] = field(default_factory=dict)
    changed: dict[Key, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def kinds(self) -> dict[str, list[str]]:
        """What changed, by item type (readable assertion messages)."""

        def kind(item: dict[str, Any]) -> str:
            return str(item.get("type", {}).get("S", item["pk"]["S"].split("#")[0]))

        return {
            "added": sorted(kind(i) for i in self.added.values()),
            "removed": sorted(kind(i) for i in self.removed.values()),
            "changed": sorted(kind(new) for _, new in self.changed.values()),
        }


def diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> Diff:
    old, new = by_key(before), by_key(after)
    return Diff(
        added={k: v for k, v in new.items() if k not in old},
        removed={k: v for k, v in old.items() if k not in new},
        changed={k: (old[k], new[k]) for k in old.keys() & new.keys() if old[k] != new[k]},
    )


def snapshot(vault: Vault) -> list[dict[str, Any]]:
    """Every item of the vault table, as `Vault.snapshot` reads it."""
    return vault.snapshot()


def fingerprint(vault: Vault) -> dict[Key, str]:
    """What is stored, keyed by (pk, sk): read from moto's in-memory table, a few hundred times
    cheaper than a scan (whose response serialisation dominates a fuzz example). Falls back to
    a scan if moto's internals move."""
    name = vault.services.settings.table_name
    try:
        from moto.dynamodb.models import dynamodb_backends

        table = dynamodb_backends[ACCOUNT][REGION].get_table(name)
        return {
            (item.attrs["pk"].value, item.attrs["sk"].value): json.dumps(
                item.to_json(), sort_keys=True, default=str
            )
            for item in table.all_items()
        }
    except (ImportError, AttributeError, KeyError, TypeError):
        return {
            k: json.dumps(v, sort_keys=True, default=str)
            for k, v in by_key(snapshot(vault)).items()
        }


@contextmanager
def unchanged(vault: Vault) -> Iterator[None]:
    """Assert nothing stored changed (the replay cache is not part of the snapshot)."""
    before = snapshot(vault)
    yield
    change = diff(before, snapshot(vault))
    assert change.empty, change.kinds()


def items_of_type(vault: Vault, kind: str) -> list[dict[str, Any]]:
    """The items of one type (filtered in the scan: cheap on a big table)."""
    pages = vault._dynamodb.get_paginator("scan").paginate(
        TableName=vault.services.settings.table_name,
        ConsistentRead=True,
        FilterExpression="#t = :t",
        ExpressionAttributeNames={"#t": "type"},
        ExpressionAttributeValues={":t": {"S": kind}},
    )
    items = [i for page in pages for i in page["Items"]]
    return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


def delete_items(vault: Vault, keys: list[Key]) -> None:
    for pk, sk in keys:
        vault._dynamodb.delete_item(
            TableName=vault.services.settings.table_name,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
        )


# --- audit -------------------------------------------------------------------------------------


class AuditLog(logging.Handler):
    """Collects the `audit` member of every record of the vault's Powertools logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "audit", None)
        if isinstance(event, dict):
            self.events.append(dict(event))

    def clear(self) -> None:
        self.events.clear()

    def one(self) -> dict[str, Any]:
        assert len(self.events) == 1, self.events
        return self.events[0]

    def find(self, action: str, outcome: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("action") == action
            and (outcome is None or e.get("outcome") == outcome)
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def expect(self, action: str, outcome: str, **fields: Any) -> dict[str, Any]:
        """The one matching event (fails listing every event recorded if there is none)."""
        found = self.find(action, outcome, **fields)
        assert found, (
            f"no audit event {action}/{outcome} {fields}; recorded: "
            f"{[(e['action'], e['outcome'], e.get('reason')) for e in self.events]}"
        )
        return found[-1]


# --- setups ------------------------------------------------------------------------------------


def agent_with_session(
    vault: Vault,
    user: str = "alice",
    role: str = "calendar-agent-role",
    task_id: str | None = None,
    *,
    function_url: bool = False,
) -> TestAgent:
    agent = vault.agent(role, task_id, function_url=function_url)
    started = agent.start_session(vault.user(user))
    assert started.status == 201, started.body
    return agent


def connected_agent(
    vault: Vault,
    user: str = "alice",
    scopes: tuple[str, ...] = ("calendar.read", "calendar.write"),
    role: str = "calendar-agent-role",
    provider: str = "calendar",
    *,
    function_url: bool = False,
) -> TestAgent:
    """An agent with a live session and the user's active grant at `provider` (calling the
    vault at its function URLs with `function_url`)."""
    agent = agent_with_session(vault, user, role, function_url=function_url)
    bound = vault.connect(agent, provider=provider, scopes=scopes, username=user)
    assert bound.status == 200, bound.body
    return agent


def grant_item(vault: Vault, user_sub: str | None = None) -> dict[str, Any]:
    grants = [
        g
        for g in items_of_type(vault, "grant")
        if user_sub is None or g["user_sub"]["S"] == user_sub
    ]
    assert len(grants) == 1, grants
    return grants[0]


def put_item(vault: Vault, item: dict[str, Any]) -> None:
    """Write a raw item (an attacker or a restore with write access to the table)."""
    vault._dynamodb.put_item(TableName=vault.services.settings.table_name, Item=item)
