"""One structured audit event per decision, through Powertools Logger.

A flow wraps each decision in `decision(action, **where)`: the block binds who (principal,
agent, task), for whom (user) and what (provider, scopes, session, flow, grant) once, adds them
as they become known, and the helper records one event from how the block ends:

    with decision("token.issue", agent=agent, provider=provider, session_id=sid) as d:
        ...                             # d.bind(grant_id=...), d.note(cached=True)
    # ends normally            -> allowed (or the outcome the block set with d.conclude)
    # raises a refusal         -> denied, reason = the error's code, then re-raised
    # raises anything else     -> failed, then re-raised

A refusal is a `VaultError` answered 4xx, or `stored_data_invalid` (tampered data the vault
refuses to use, though it answers 500). A `VaultError` answered 5xx is `failed` with its code;
any other exception is `failed` with `internal_error`. An error that carries a finer `reason`
member (`consent_required`: which consent is missing; `session_ended`: how it ended) gives that
as the event's reason.

An event never carries token material, codes, verifiers, secrets or proofs: `bind` takes only
identifiers and `note` only a fixed set of non-secret members.
"""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from vault.errors import InternalError, StoredDataInvalid, VaultError
from vault.models import UserRef
from vault.observability import logger, metrics

_ALLOWED_EXTRA = {
    "cached",
    "credential",
    # API keys (flow 12): `first`/`rotated`/`unchanged`; which key a proxied call used
    "rotation",
    "api_key_version",
    "revoked_tokens",
    "ended_sessions",
    "revoked_grants",
    "revoked_flows",
    "revoked_machine_tokens",
    "granted_scopes",
    "over_granted_scopes",
    "callback_provider",
    "missing_scopes",
    "upstream",
    "status",
    "return_url",
    "count",
    "trigger",
    "route",
    # proxied calls (no query, no header, no body)
    "method",
    "host",
    "path",
    "bytes",
    "latency_ms",
    # delegation (flow 8): the actor chain, RFC 8693 `act`-shaped (identifiers only)
    "chain",
    "child_agent",
    "delegation_id",
    "depth",
}
_WHERE = ("principal", "agent", "provider", "session_id", "task_id", "flow_id", "grant_id")
_recorded: ContextVar[tuple[str, ...]] = ContextVar("audit_recorded", default=())
_chains: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("audit_chains", default=None)


def begin_request() -> None:
    """A request starts: no decision of it is recorded yet (see `recorded`)."""
    _recorded.set(())
    _chains.set(None)


def note_chain(session_id: str, chain: dict[str, Any]) -> None:
    """A delegated session's actor chain (`Session.chain()`: the user as `sub`, the actors in
    nested `act`): every event of this request that names the session carries it as `chain`.
    A session's chain never changes, so a registration outliving its request stays true."""
    _chains.set({**(_chains.get() or {}), session_id: chain})


def recorded(*outcomes: str) -> bool:
    """Whether the current request already recorded a decision (with one of `outcomes`)."""
    seen = _recorded.get()
    return bool(seen) if not outcomes else any(o in seen for o in outcomes)


def outcome_of(error: BaseException) -> str:
    """`denied` for a refusal, `failed` for anything else (see the module's docstring)."""
    if isinstance(error, VaultError) and (
        error.status < 500 or isinstance(error, StoredDataInvalid)
    ):
        return "denied"
    return "failed"


def reason_of(error: BaseException) -> str:
    """The error's stable code (or its finer `reason` member); `internal_error` if it has none."""
    if not isinstance(error, VaultError):
        return InternalError.code
    finer = error.extra.get("reason")
    return finer if isinstance(finer, str) and finer else error.code


def _check_extra(extra: dict[str, Any]) -> None:
    unknown = set(extra) - _ALLOWED_EXTRA
    if unknown:
        raise ValueError(f"audit does not take {sorted(unknown)}")


def _record(
    action: str,
    outcome: str,
    reason: str | None,
    where: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    """Write one event (and, unless allowed, its metric)."""
    _check_extra(extra)
    event: dict[str, Any] = {"action": action, "outcome": outcome}
    if reason is not None:
        event["reason"] = reason
    for name in _WHERE:
        if where.get(name) is not None:
            event[name] = where[name]
    if where.get("user") is not None:
        event["user"] = where["user"].as_dict()
    if where.get("scopes") is not None:
        event["scopes"] = sorted(where["scopes"])
    chain = (_chains.get() or {}).get(where.get("session_id") or "")
    if chain is not None:
        event["chain"] = chain
    event.update({k: v for k, v in extra.items() if v is not None})
    logger.info(f"audit {action} {outcome}", extra={"audit": event})
    _recorded.set((*_recorded.get(), outcome))
    if outcome != "allowed":
        # Metrics count what is worth an alarm or a capacity plan: refusals, failures, refreshes,
        # revocations. Allowed requests are API Gateway's request count; a metric line per warm
        # retrieval would cost more log ingestion than its DynamoDB read.
        metrics.add_metric(name=f"{action}.{outcome}", unit=MetricUnit.Count, value=1)


class Decision:
    """One decision's audit event, recorded when its `with` block ends (see `decision`)."""

    def __init__(self, action: str, *, only_refusals: bool = False) -> None:
        self.action = action
        self.only_refusals = only_refusals
        self._where: dict[str, Any] = {}
        self._extra: dict[str, Any] = {}
        self._outcome: str | None = None
        self._reason: str | None = None

    def bind(
        self,
        *,
        principal: str | None = None,
        agent: str | None = None,
        user: UserRef | None = None,
        provider: str | None = None,
        scopes: tuple[str, ...] | list[str] | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        flow_id: str | None = None,
        grant_id: str | None = None,
    ) -> None:
        """Name what the decision is about, as it becomes known (identifiers only)."""
        given = {
            "principal": principal,
            "agent": agent,
            "user": user,
            "provider": provider,
            "scopes": scopes,
            "session_id": session_id,
            "task_id": task_id,
            "flow_id": flow_id,
            "grant_id": grant_id,
        }
        self._where.update({k: v for k, v in given.items() if v is not None})

    def note(self, **extra: Any) -> None:
        """Add members beyond the identifiers: only the fixed, non-secret set is accepted."""
        _check_extra(extra)
        self._extra.update(extra)

    def conclude(self, outcome: str, *, reason: str | None = None) -> None:
        """Record `outcome` (and `reason`) however the block ends, instead of allowed / denied /
        failed. If the block then raises, the reason defaults to the error's."""
        self._outcome, self._reason = outcome, reason

    def __enter__(self) -> Decision:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            if self._outcome is not None:
                _record(self.action, self._outcome, self._reason, self._where, self._extra)
            elif not self.only_refusals:
                _record(self.action, "allowed", None, self._where, self._extra)
        elif isinstance(error, Exception):  # an interpreter exit is no decision
            outcome = self._outcome or outcome_of(error)
            reason = self._reason or reason_of(error)
            _record(self.action, outcome, reason, self._where, self._extra)
        # the error, if any, propagates


def decision(
    action: str,
    *,
    only_refusals: bool = False,
    principal: str | None = None,
    agent: str | None = None,
    user: UserRef | None = None,
    provider: str | None = None,
    scopes: tuple[str, ...] | list[str] | None = None,
    session_id: str | None = None,
    task_id: str | None = None,
    flow_id: str | None = None,
    grant_id: str | None = None,
) -> Decision:
    """A context manager that records exactly one audit event for the decision in its block.

    `only_refusals=True` makes it a check ahead of a decision (a policy check, a session's
    ownership and proof): it records a refusal or failure and nothing when the block ends
    normally, since the decision that follows records the outcome. Decisions may nest (a token
    request that refreshes a grant): each records its own event.
    """
    made = Decision(action, only_refusals=only_refusals)
    made.bind(
        principal=principal,
        agent=agent,
        user=user,
        provider=provider,
        scopes=scopes,
        session_id=session_id,
        task_id=task_id,
        flow_id=flow_id,
        grant_id=grant_id,
    )
    return made


def request_refused(error: VaultError, *, principal: str | None, route: str) -> None:
    """The fallback event of a request whose refusal no decision recorded (handlers/http.py)."""
    where = {"principal": principal}
    _record(
        "request", outcome_of(error), error.code, where, {"route": route, "status": error.status}
    )
