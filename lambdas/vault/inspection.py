"""Flow 13, the operator's half: read-only views of sessions, grants and consent flows (admins).

Every listing is paginated (`limit` items at most, an opaque `cursor` for the next page) and
filterable; filters by user take the clear `iss` and `sub` and are hashed here as the store
keys them (`UserRef.key`). Each listing reads the access patterns the table has
(docs/architecture.md, "Tables"): one partition of the table or an index at a time, the other
filters as a `FilterExpression`. A page may hold fewer than `limit` items (filtered out, or the
read budget of one request spent): the listing is done only when `next_cursor` is null.

A view never carries token material, ciphertexts, verifiers, binding-code hashes or lease
owners: each is built field by field from the record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from vault.audit import decision
from vault.caller import Caller, require_admin
from vault.consent import FLOW_ID
from vault.errors import (
    FlowNotFound,
    GrantNotFound,
    InvalidCursor,
    InvalidFilter,
    SessionNotFound,
)
from vault.models import Flow, Grant, Session, SessionToken, UserRef
from vault.runtime import Services
from vault.schemas import ProviderName
from vault.sessions import SESSION_ID
from vault.store.mapper import FLOWS, GRANTS, SESSIONS
from vault.store.pages import ForeignStartKey, Partition, StartKey, Where, check_start_key
from vault.store.schema import GSI1, GSI2

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_CURSOR = 2048
MAX_READS = 8
"""DynamoDB queries one request may make (a sparse filter ends a page early, with a cursor)."""
GRANT_ID = re.compile(r"^grt_[A-Za-z0-9_-]{16,64}$")
TASK_ID_PATTERN = r"^[\w+=,.@-]{2,64}$"
"""An ECS task id, as the assumed-role session name carries it (vault.caller)."""

# --- filters ---------------------------------------------------------------------------------

UserIssuer = Annotated[str, StringConstraints(min_length=1, max_length=512)]
UserSubject = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class PageQuery(BaseModel):
    """A page of a listing: `limit` and `cursor`; a subclass adds its filters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = Field(
        DEFAULT_LIMIT, description=f"Items per page, 1-{MAX_LIMIT}."
    )
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CURSOR)] | None = Field(
        None, description="The `next_cursor` of the previous page, with the same filters."
    )

    def filters(self) -> dict[str, Any]:
        """The filters (everything but the page), for binding a cursor to them."""
        return self.model_dump(exclude={"limit", "cursor"}, exclude_none=True)


class _Query(PageQuery):
    user_iss: UserIssuer | None = Field(
        None, description="The user's identity issuer (with `user_sub`)."
    )
    user_sub: UserSubject | None = Field(
        None, description="The user's subject at `user_iss` (with `user_iss`)."
    )
    agent: ProviderName | None = Field(None, description="A configured agent.")

    @property
    def user(self) -> UserRef | None:
        return UserRef(self.user_iss, self.user_sub) if self.user_iss and self.user_sub else None


class SessionQuery(_Query):
    task: Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)] | None = Field(
        None, description="The ECS task id (the agent's assumed-role session name)."
    )
    status: Literal["active", "ended", "expired"] | None = None


class GrantQuery(_Query):
    provider: ProviderName | None = Field(None, description="A configured provider.")
    status: Literal["active", "broken", "revoking"] | None = None


class FlowQuery(_Query):
    provider: ProviderName | None = Field(None, description="A configured provider.")
    status: Literal["pending_binding", "expired", "revoked"] | None = Field(
        None,
        description="Flows awaiting binding, and those closed unbound whose upstream "
        "revocation is still to be retried.",
    )


Q = TypeVar("Q", bound=PageQuery)


def parse_query(model: type[Q], params: dict[str, str] | None) -> Q:
    """The query string as `model`; 400 `invalid_filter` naming each bad parameter."""
    try:
        query = model.model_validate(params or {})
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "query", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ][:10]
        raise InvalidFilter("the query parameters are not valid filters", errors=errors) from exc
    if isinstance(query, _Query) and (query.user_iss is None) != (query.user_sub is None):
        raise InvalidFilter(
            "filter by user with both user_iss and user_sub",
            errors=[
                {
                    "field": "user_iss" if query.user_iss is None else "user_sub",
                    "problem": "missing",
                }
            ],
        )
    return query


def check_names(svc: Services, agent: str | None, provider: str | None) -> None:
    if agent is not None and agent not in svc.config.agents:
        raise InvalidFilter(f"no agent named {agent!r} is configured (agents)")
    if provider is not None and provider not in svc.config.providers:
        raise InvalidFilter(f"no provider named {provider!r} is configured (providers)")


# --- pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Position:
    partition: int
    start: StartKey | None


def _digest(filters: dict[str, Any]) -> str:
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(position: _Position, filters: dict[str, Any]) -> str:
    document = {"v": 1, "p": position.partition, "k": position.start, "f": _digest(filters)}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, filters: dict[str, Any], partitions: list[Partition]) -> _Position:
    """The position a cursor of this very query points at; 400 `invalid_cursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not one the vault handed out") from exc
    if (
        not isinstance(document, dict)
        or document.get("v") != 1
        or document.get("f") != _digest(filters)
    ):
        raise InvalidCursor("the cursor belongs to another query (the filters changed)")
    index, start = document.get("p"), document.get("k")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(partitions):
        raise InvalidCursor("the cursor is not one the vault handed out")
    if start is not None:
        if not isinstance(start, dict):
            raise InvalidCursor("the cursor is not one the vault handed out")
        try:
            check_start_key(partitions[index], start)
        except ForeignStartKey as exc:
            raise InvalidCursor("the cursor is not one the vault handed out") from exc
    return _Position(index, start)


def read_page(
    svc: Services,
    partitions: list[Partition],
    query: PageQuery,
    where: Where | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `query.limit` items over the partitions in order, and the next page's cursor."""
    filters = query.filters()
    position = (
        decode_cursor(query.cursor, filters, partitions) if query.cursor else _Position(0, None)
    )
    index, start = position.partition, position.start
    items: list[dict[str, Any]] = []
    reads = 0
    while index < len(partitions) and len(items) < query.limit and reads < MAX_READS:
        found, start = svc.store.pages.page(
            partitions[index], limit=query.limit - len(items), start=start, where=where
        )
        reads += 1
        items += found
        if start is None:
            index += 1
    following = (
        None if index >= len(partitions) else encode_cursor(_Position(index, start), filters)
    )
    return items, following


def where_all(*clauses: tuple[str, dict[str, str], dict[str, Any]]) -> Where | None:
    present = [c for c in clauses if c[0]]
    if not present:
        return None
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for _, n, v in present:
        names |= n
        values |= v
    return Where(" AND ".join(f"({c[0]})" for c in present), names, values)


def _user_clause(user: UserRef | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    return ("user_key = :uk", {}, {":uk": user.key}) if user else ("", {}, {})


def equals(attribute: str, value: str | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    if value is None:
        return "", {}, {}
    return f"#{attribute} = :{attribute}", {f"#{attribute}": attribute}, {f":{attribute}": value}


# --- views -----------------------------------------------------------------------------------


def session_view(session: Session, now: int) -> dict[str, Any]:
    alive = session.alive(now)
    status = session.status if session.status != "active" or alive else "expired"
    return {
        "session_id": session.session_id,
        "agent": session.agent,
        "user": session.user.as_dict(),
        "task_id": session.task_id,
        "principal_arn": session.principal_arn,
        "jkt": session.jkt,
        "status": status,
        "ended_reason": session.ended_reason,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "identity_verified_at": session.identity_verified_at,
    }


def token_view(token: SessionToken) -> dict[str, Any]:
    """What a session token is, never what it holds."""
    return {
        "session_id": token.session_id,
        "provider": token.provider,
        "scopes": sorted(token.scopes),
        "grant_id": token.grant_id,
        "expires_at": token.expires_at,
        "revoke_pending": token.revoke_pending,
    }


def grant_view(grant: Grant, sessions: list[str]) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "user": grant.user.as_dict(),
        "agent": grant.agent,
        "provider": grant.provider,
        "scopes": sorted(grant.scopes),
        "status": grant.status,
        "broken_reason": grant.broken_reason,
        "created_at": grant.created_at,
        "refreshed_at": grant.refreshed_at,
        "refreshes": grant.version - 1,
        "sessions": sessions,
    }


def flow_view(flow: Flow) -> dict[str, Any]:
    return {
        "flow_id": flow.flow_id,
        "status": flow.status,
        "session_id": flow.session_id,
        "agent": flow.agent,
        "provider": flow.provider,
        "user": flow.user.as_dict(),
        "scopes": sorted(flow.scopes),
        "granted_scopes": sorted(flow.granted_scopes),
        "grant_id": flow.grant_id,
        "error": flow.error,
        "created_at": flow.created_at,
        "expires_at": flow.expires_at,
    }


def _minted_sessions(svc: Services, grant_id: str) -> tuple[list[str], list[SessionToken]]:
    """The sessions holding a token minted from the grant (by `gsi2` `GRANT#<gid>`)."""
    tokens = svc.store.sessions.tokens_of_grant(grant_id)
    return sorted({t.session_id for t in tokens}), tokens


# --- the routes' work ------------------------------------------------------------------------


def _audited(caller: Caller, action: str, **where: Any) -> Any:
    return decision(action, principal=caller.arn, **where)


def list_sessions(svc: Services, caller: Caller, params: dict[str, str] | None) -> dict[str, Any]:
    require_admin(svc.config, caller)
    query = parse_query(SessionQuery, params)
    check_names(svc, query.agent, None)
    user = query.user
    now = svc.now()
    status: dict[str, tuple[str, dict[str, Any]]] = {
        "active": ("#s = :active AND expires_at > :now", {":active": "active", ":now": now}),
        "expired": ("#s = :active AND expires_at <= :now", {":active": "active", ":now": now}),
        "ended": ("#s = :ended", {":ended": "ended"}),
    }
    status_clause: tuple[str, dict[str, str], dict[str, Any]] = ("", {}, {})
    if query.status is not None:
        expression, values = status[query.status]
        status_clause = (expression, {"#s": "status"}, values)
    if query.task is not None:
        partitions = [Partition(GSI1, SESSIONS.partition(GSI1, task_id=query.task), "SESSION#")]
        where = where_all(equals("agent", query.agent), _user_clause(user), status_clause)
    else:
        agents = [query.agent] if query.agent else sorted(svc.config.agents)
        prefix = SESSIONS.sort_key(GSI2, user=user) if user else ""
        partitions = [Partition(GSI2, SESSIONS.partition(GSI2, agent=a), prefix) for a in agents]
        where = where_all(status_clause)
    with _audited(caller, "admin.sessions.list", agent=query.agent, user=user, task_id=query.task):
        items, following = read_page(svc, partitions, query, where)
        views = [session_view(SESSIONS.from_item(i), now) for i in items]
    return {"items": views, "next_cursor": following}


def show_session(svc: Services, caller: Caller, session_id: str) -> dict[str, Any]:
    require_admin(svc.config, caller)
    with _audited(caller, "admin.sessions.show", session_id=session_id):
        session, tokens = (
            svc.store.sessions.bundle(session_id) if SESSION_ID.match(session_id) else (None, [])
        )
        if session is None:
            raise SessionNotFound("no session with this id")
        view = session_view(session, svc.now())
        view["tokens"] = [token_view(t) for t in tokens]
    return view


def list_grants(svc: Services, caller: Caller, params: dict[str, str] | None) -> dict[str, Any]:
    require_admin(svc.config, caller)
    query = parse_query(GrantQuery, params)
    check_names(svc, query.agent, query.provider)
    user = query.user
    status_clause = equals("status", query.status)
    if user is not None:
        prefix = GRANTS.sort_key(agent=query.agent, provider=query.provider)
        partitions = [Partition(None, GRANTS.partition(user=user), prefix)]
        where = where_all(
            equals("provider", query.provider if not query.agent else None), status_clause
        )
    else:
        agents = [query.agent] if query.agent else sorted(svc.config.agents)
        prefix = GRANTS.sort_key(GSI1, provider=query.provider)
        partitions = [Partition(GSI1, GRANTS.partition(GSI1, agent=a), prefix) for a in agents]
        where = where_all(status_clause)
    with _audited(
        caller, "admin.grants.list", agent=query.agent, user=user, provider=query.provider
    ):
        items, following = read_page(svc, partitions, query, where)
        views = []
        for item in items:
            grant = GRANTS.from_item(item)
            views.append(grant_view(grant, _minted_sessions(svc, grant.grant_id)[0]))
    return {"items": views, "next_cursor": following}


def show_grant(svc: Services, caller: Caller, grant_id: str) -> dict[str, Any]:
    require_admin(svc.config, caller)
    with _audited(caller, "admin.grants.show", grant_id=grant_id):
        grant = svc.store.grants.by_id(grant_id) if GRANT_ID.match(grant_id) else None
        if grant is None:
            raise GrantNotFound("no grant with this id")
        sessions, tokens = _minted_sessions(svc, grant.grant_id)
        view = grant_view(grant, sessions)
        view["tokens"] = [token_view(t) for t in tokens]
    return view


def list_flows(svc: Services, caller: Caller, params: dict[str, str] | None) -> dict[str, Any]:
    require_admin(svc.config, caller)
    query = parse_query(FlowQuery, params)
    check_names(svc, query.agent, query.provider)
    user = query.user
    if user is not None:
        partitions = [Partition(GSI2, FLOWS.partition(GSI2, user=user), "FLOW#")]
    else:
        partitions = [Partition(GSI1, FLOWS.partition(GSI1), "")]
    where = where_all(
        equals("agent", query.agent),
        equals("provider", query.provider),
        equals("status", query.status),
    )
    with _audited(
        caller, "admin.flows.list", agent=query.agent, user=user, provider=query.provider
    ):
        items, following = read_page(svc, partitions, query, where)
        views = [flow_view(FLOWS.from_item(i)) for i in items]
    return {"items": views, "next_cursor": following}


def show_flow(svc: Services, caller: Caller, flow_id: str) -> dict[str, Any]:
    require_admin(svc.config, caller)
    with _audited(caller, "admin.flows.show", flow_id=flow_id):
        flow = svc.store.flows.get(flow_id) if FLOW_ID.match(flow_id) else None
        if flow is None:
            raise FlowNotFound("no flow with this id")
        view = flow_view(flow)
    return view
