"""Waiting for a lease holder without polling: what a caller that lost a single-flight lease does.

The grant's refresh lease (`vault.tokens`) and the machine token's fetch lease (`vault.machine`)
work alike: the lease attempt is one conditional `UpdateItem` that, when it loses, returns the
item as it is (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so the loser learns in the same
request when the holder took the lease (`lease_since`), when its lease runs out (`lease_until`) and
how long the last refresh or fetch of that item took (`refresh_seconds` / `fetch_seconds`,
recorded by the holder that stored its result). From these the loser knows when the result
should be stored (`Holder.expected`): it sleeps until then and reads once (the result, and the
lease in the same request); if the result is not there yet and the holder is still at it, it
sleeps once more (`Holder.still_expected`: four times what the holder has taken so far) and
reads a last time. It gives up with 503 `refresh_in_progress` (retry-after) when it sees the
holder gone without a result (it failed: the retry takes the lease) or still at it at the last
read: it never calls the provider itself, so a failing provider sees one call, not one per
waiter. So a waiting caller makes at most 3 DynamoDB requests after its session read and proof
check (the lost lease attempt and two reads), whatever the number of callers, and gets the
token about when it is stored. (Without a recorded duration, a refresh is expected to take
`DEFAULT_SECONDS`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from vault.errors import Busy
from vault.runtime import Services

T = TypeVar("T")

DEFAULT_SECONDS = 1.0
"""How long a refresh or fetch is expected to take when none of that item was recorded yet."""
ON_TIME_FACTOR, WAKE_MARGIN = 1.2, 0.02
STILL_FACTOR, USUAL_FACTOR = 4.0, 3.0


@dataclass(frozen=True)
class Holder:
    """The lease holder as the lost lease attempt saw it."""

    owner: str
    """Its lease's owner id: while the lease names it, it is still at work."""
    since: float
    """When it took the lease (the clock of `Services.clock`)."""
    until: float
    """When its lease runs out."""
    usual: float | None
    """Seconds the last refresh or fetch of this item took; None if none was recorded."""
    seen_at: float
    """When the lost lease attempt saw it holding."""

    def expected(self) -> float:
        """When its result should be stored: `since + 1.2 x usual` while the holder is on time;
        if it had already held the lease longer than usual when we saw it (a slow provider, a
        busy machine), 1.2 x usual more than what it had taken so far. Never past its lease."""
        usual = self.usual if self.usual and self.usual > 0 else DEFAULT_SECONDS
        taken = max(0.0, self.seen_at - self.since)
        expected = ON_TIME_FACTOR * usual + (taken if taken > usual else 0.0)
        return min(self.since + expected + WAKE_MARGIN, self.until)

    def still_expected(self, now: float) -> float:
        """When to read a last time, the holder being still at it at `now` (its result later
        than expected): after four times what it has taken so far (at least three times the
        usual), never past its lease."""
        usual = self.usual if self.usual and self.usual > 0 else DEFAULT_SECONDS
        taken = max(0.0, now - self.since)
        later = max(STILL_FACTOR * taken, USUAL_FACTOR * usual)
        return min(self.since + later + WAKE_MARGIN, self.until)


def holder_of(
    owner: str | None,
    since: float | None,
    until: float | None,
    usual: float | None,
    *,
    seen_at: float,
    lease: float,
) -> Holder:
    """The holder a lost lease attempt (made at `seen_at`, for `lease` seconds) saw; a lease
    taken before its start was recorded counts from `seen_at`."""
    return Holder(
        owner=owner or "",
        since=seen_at if since is None else since,
        until=until or seen_at + lease,
        usual=usual,
        seen_at=seen_at,
    )


@dataclass(frozen=True)
class Look(Generic[T]):
    """What a waiting caller's read found: its result, or whether the holder still holds the
    lease (`holder`: the lease's owner id now, "" when nobody holds it)."""

    result: T | None
    holder: str


def sleep_until(svc: Services, moment: float) -> None:
    delay = moment - svc.clock()
    if delay > 0:
        svc.sleep(delay)


def await_result(svc: Services, holder: Holder, read: Callable[[], Look[T]], busy: str) -> T:
    """The holder's result: read when it is expected, once more later if the holder is still
    at it (two requests at most); `Busy` (503, retry-after) as soon as the holder is seen gone
    without it (it failed: the caller's retry takes the lease), or if it is still not there at
    the second read."""
    sleep_until(svc, holder.expected())
    for last in (False, True):
        look = read()
        if look.result is not None:
            return look.result
        if look.holder != holder.owner:
            raise Busy(busy + " (the refresh this request waited for stored nothing)")
        if not last:
            sleep_until(svc, holder.still_expected(svc.clock()))
    raise Busy(busy)
