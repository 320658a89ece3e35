"""velocity_drop: table tests at and around its thresholds, and its deadline."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.rules import fired, next_deadline
from consumer.rules.catalog import velocity_drop
from consumer.state import DAY_MS, HISTORY_DAYS, DealState, activity_days, record_activity
from consumer.thresholds import RuleThresholds
from schemas.insights import Priority, RuleName

TH = RuleThresholds()
TODAY = 20_100
NOW = TODAY * DAY_MS + 3_600_000


def deal(recent: int, baseline: int, value: float | None = 5_000, gap: int = 0) -> DealState:
    """``recent`` activities in the last 14 days (today first), ``baseline`` in the 30 before."""
    history = b""
    days = [TODAY - 14 - gap - i % 30 for i in range(baseline)]
    days += [TODAY - i % 14 for i in range(recent)]
    for day in sorted(days):
        history = record_activity(history, day)
    return DealState("ws", "d", value=value, activity=history)


@pytest.mark.parametrize(
    ("recent", "baseline", "value", "expected"),
    [
        (0, 0, 5_000, None),
        (0, 3, 5_000, None),  # fewer than 4 in the baseline
        (0, 4, 5_000, Priority.MEDIUM),
        (0, 4, None, Priority.MEDIUM),  # needs no value
        (0, 4, 10_000, Priority.MEDIUM),  # "above" 10,000 for high
        (0, 4, 10_001, Priority.HIGH),
        (1, 4, 5_000, None),  # 1/14 per day >= (4/30)/3
        (1, 6, 5_000, None),  # 1/14 = 0.0714 >= (6/30)/3 = 0.0667
        (1, 7, 5_000, Priority.MEDIUM),  # 1/14 < (7/30)/3 = 0.0778
        (2, 30, 5_000, Priority.MEDIUM),
        (5, 30, 5_000, None),  # 5/14 = 0.357 >= 1/3
        (4, 30, 5_000, Priority.MEDIUM),
    ],
)
def test_velocity_drop(recent: int, baseline: int, value: float | None, expected: object) -> None:
    got = velocity_drop.RULE.find(deal(recent, baseline, value), NOW, TH)
    assert (None if got is None else got.priority) == expected
    assert fired(deal(recent, baseline, value), NOW, TH).get(RuleName.VELOCITY_DROP) == expected


def test_velocity_drop_thresholds_are_configurable() -> None:
    th = RuleThresholds(velocity_min_baseline_activities=10)
    assert velocity_drop.RULE.find(deal(0, 9), NOW, th) is None
    assert velocity_drop.RULE.find(deal(0, 10), NOW, th) is not None


@pytest.mark.parametrize(("recent", "baseline", "gap"), [(0, 4, 0), (3, 10, 5), (0, 6, 25)])
def test_a_tick_at_the_deadline_sees_every_change(recent: int, baseline: int, gap: int) -> None:
    """As the window slides (no events), the answer changes only at the deadline."""
    d = deal(recent, baseline, gap=gap)
    now = NOW
    due = next_deadline(d, now, TH)
    previous = fired(d, now, TH).get(RuleName.VELOCITY_DROP)
    changes = 0
    for t in range(NOW, NOW + 90 * DAY_MS, 3 * 3_600_000):
        current = fired(d, t, TH).get(RuleName.VELOCITY_DROP)
        if current != previous:
            changes += 1
            assert due is not None
            assert due <= t
            previous = current
        while due is not None and due <= t:
            due = next_deadline(d, due, TH)
    assert changes >= 1  # the test saw the rule change by time alone


def test_history_is_bounded() -> None:
    history = b""
    for day in range(TODAY - 500, TODAY + 1):
        for _ in range(300):
            history = record_activity(history, day)
    assert len(history) <= 3 * 91


def test_the_deadline_skips_a_day_where_the_rates_are_equal() -> None:
    """At an exact tie of the two rates the rule does not fire, so the deadline is the day after
    which the recent rate is strictly lower (here: day 14, not day 1)."""
    th = RuleThresholds(
        velocity_window_days=14,
        velocity_baseline_days=14,
        velocity_drop_ratio=0.5,
        velocity_min_baseline_activities=1,
    )
    history = b""
    for day in (TODAY - 13, TODAY - 13, TODAY):
        history = record_activity(history, day)
    d = DealState("ws", "d", activity=history)  # no stage, no close date, silent for decades
    tie = (TODAY + 1) * DAY_MS  # recent 1 a fortnight, baseline 2: 1/14 = 0.5 * 2/14
    assert fired(d, tie, th).get(RuleName.VELOCITY_DROP) is None
    assert next_deadline(d, NOW, th) == (TODAY + 14) * DAY_MS
    assert velocity_drop.RULE.next_deadline(d, NOW, th) == (TODAY + 14) * DAY_MS
    assert fired(d, (TODAY + 14) * DAY_MS, th).get(RuleName.VELOCITY_DROP) is Priority.MEDIUM


@settings(max_examples=300)
@given(st.lists(st.integers(-3, 0xFFFF + 3), max_size=80), st.integers(0, 400))
def test_the_history_is_the_counts_of_the_last_days(days: list[int], repeat: int) -> None:
    """``record_activity`` against a plain model: per day the activities (at most 255), the
    days more than ``HISTORY_DAYS`` before the newest dropped, days outside 0..65535 ignored;
    ``repeat`` more activities on the last day exercise the saturation."""
    history = b""
    counts: dict[int, int] = {}
    for day in [*days, *([days[-1]] * repeat if days else [])]:
        history = record_activity(history, day)
        if 0 <= day <= 0xFFFF:
            counts[day] = min(counts.get(day, 0) + 1, 255)
            horizon = max(counts) - HISTORY_DAYS
            counts = {d: c for d, c in counts.items() if d >= horizon}
    assert activity_days(history) == sorted(counts.items())
