"""When a caller that lost a single-flight lease reads again (`vault.singleflight.Holder`)."""

from __future__ import annotations

import pytest

from vault.singleflight import DEFAULT_SECONDS, WAKE_MARGIN, Holder


def holder(*, taken: float, usual: float | None, lease: float = 30.0) -> Holder:
    return Holder(owner="o", since=100.0, until=100.0 + lease, usual=usual, seen_at=100.0 + taken)


def test_a_holder_on_time_is_read_at_a_little_more_than_its_usual_duration() -> None:
    assert holder(taken=0.05, usual=0.2).expected() == pytest.approx(100.0 + 0.24 + WAKE_MARGIN)


def test_a_late_holder_is_read_a_usual_duration_after_what_it_had_taken() -> None:
    # seen 0.5 s into a lease whose refresh usually takes 0.2 s: 0.24 s more, not 2 x 0.5 s
    assert holder(taken=0.5, usual=0.2).expected() == pytest.approx(100.0 + 0.74 + WAKE_MARGIN)


def test_without_a_recorded_duration_one_second_is_expected() -> None:
    assert holder(taken=0.0, usual=None).expected() == pytest.approx(
        100.0 + 1.2 * DEFAULT_SECONDS + WAKE_MARGIN
    )


def test_no_read_is_planned_past_the_lease() -> None:
    late = holder(taken=2.0, usual=1.0, lease=2.5)
    assert late.expected() == 102.5
    assert late.still_expected(101.0) == 102.5


def test_the_last_read_waits_four_times_what_the_holder_has_taken_at_least_three_usual() -> None:
    assert holder(taken=0.1, usual=0.2).still_expected(100.5) == pytest.approx(
        100.0 + 2.0 + WAKE_MARGIN
    )
    assert holder(taken=0.1, usual=0.2).still_expected(100.1) == pytest.approx(
        100.0 + 0.6 + WAKE_MARGIN
    )
