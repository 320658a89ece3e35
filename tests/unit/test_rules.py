"""Table tests for the six rules: at and around every threshold, with ``now`` passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.rules import (
    close_date_passed,
    close_date_pressure,
    evaluate,
    fired,
    high_value_at_risk,
    low_probability,
    next_deadline,
    stale_deal,
    stuck_in_stage,
)
from consumer.state import DAY_MS, DealState
from consumer.thresholds import RuleThresholds
from schemas.events import Stage
from schemas.insights import Priority, RuleName

TH = RuleThresholds()
T0 = 20_000 * DAY_MS  # a day boundary (1960-ish days after the epoch), keeps day math exact
H = 3_600_000


def deal(**kw: object) -> DealState:
    base = DealState(
        workspace_id="ws",
        deal_id="d1",
        title="Deal",
        value=5_000,
        currency="USD",
        stage=Stage.LEAD,
        probability=50,
        close_day=T0 // DAY_MS + 60,
        owner_id="u1",
        created_at_ms=T0,
        last_activity_at_ms=T0,
        stage_entered_at_ms=T0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def prio(finding: object) -> Priority | None:
    return None if finding is None else finding.priority  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("inactive_ms", "expected"),
    [
        (0, None),
        (7 * DAY_MS - 1, None),
        (7 * DAY_MS, None),  # "more than 7 days": exactly 7 does not fire
        (7 * DAY_MS + 1, Priority.HIGH),
        (10 * DAY_MS, Priority.HIGH),
        (14 * DAY_MS, Priority.HIGH),
        (14 * DAY_MS + 1, Priority.CRITICAL),
        (40 * DAY_MS, Priority.CRITICAL),
    ],
)
def test_stale_deal(inactive_ms: int, expected: Priority | None) -> None:
    d = deal(stage=Stage.NEGOTIATION, probability=90)
    assert prio(stale_deal(d, T0 + inactive_ms, TH)) == expected


@pytest.mark.parametrize(
    ("stage", "days_in_stage", "expected"),
    [
        (Stage.LEAD, 14, None),
        (Stage.LEAD, 14.01, Priority.HIGH),
        (Stage.LEAD, 28, Priority.HIGH),
        (Stage.LEAD, 28.01, Priority.CRITICAL),
        (Stage.QUALIFIED, 21, None),
        (Stage.QUALIFIED, 21.01, Priority.HIGH),
        (Stage.QUALIFIED, 42.01, Priority.CRITICAL),
        (Stage.PROPOSAL, 30, None),
        (Stage.PROPOSAL, 30.01, Priority.HIGH),
        (Stage.PROPOSAL, 60.01, Priority.CRITICAL),
        (Stage.NEGOTIATION, 21, None),
        (Stage.NEGOTIATION, 21.01, Priority.HIGH),
        (Stage.NEGOTIATION, 42.01, Priority.CRITICAL),
    ],
)
def test_stuck_in_stage(stage: Stage, days_in_stage: float, expected: Priority | None) -> None:
    d = deal(stage=stage)
    assert prio(stuck_in_stage(d, T0 + int(days_in_stage * DAY_MS), TH)) == expected


def test_stuck_in_stage_needs_a_stage() -> None:
    assert stuck_in_stage(deal(stage=None), T0 + 100 * DAY_MS, TH) is None


@pytest.mark.parametrize(
    ("stage", "probability", "value", "expected"),
    [
        (Stage.LEAD, 15, 5_000, None),
        (Stage.LEAD, 14.9, 5_000, Priority.MEDIUM),
        (Stage.LEAD, 14.9, 10_000, Priority.MEDIUM),  # "more than 10,000" for high
        (Stage.LEAD, 14.9, 10_001, Priority.HIGH),
        (Stage.QUALIFIED, 25, 5_000, None),
        (Stage.QUALIFIED, 24, 5_000, Priority.MEDIUM),
        (Stage.PROPOSAL, 40, 5_000, None),
        (Stage.PROPOSAL, 39, 50_000, Priority.HIGH),
        (Stage.NEGOTIATION, 60, 5_000, None),
        (Stage.NEGOTIATION, 59, 5_000, Priority.MEDIUM),
    ],
)
def test_low_probability(
    stage: Stage, probability: float, value: float, expected: Priority | None
) -> None:
    d = deal(stage=stage, probability=probability, value=value)
    assert prio(low_probability(d, T0, TH)) == expected


@pytest.mark.parametrize(
    ("value", "inactive_days", "probability", "expected"),
    [
        (10_000, 30, 5, None),  # value must be more than 10,000
        (10_001, 0, 50, None),
        (10_001, 5, 50, None),  # exactly 5 days inactive: not more than 5
        (10_001, 5.01, 50, Priority.CRITICAL),
        (10_001, 0, 30, None),  # probability must be below 30
        (10_001, 0, 29.9, Priority.CRITICAL),
        (250_000, 9, 10, Priority.CRITICAL),
    ],
)
def test_high_value_at_risk(
    value: float, inactive_days: float, probability: float, expected: Priority | None
) -> None:
    d = deal(value=value, probability=probability, stage=Stage.NEGOTIATION)
    assert prio(high_value_at_risk(d, T0 + int(inactive_days * DAY_MS), TH)) == expected


@pytest.mark.parametrize(
    ("days_to_close", "probability", "expected"),
    [
        (15, 10, None),
        (14, 69.9, Priority.HIGH),
        (14, 70, None),
        (7, 50, Priority.HIGH),
        (0, 50, Priority.HIGH),  # closes today
        (-1, 50, None),  # passed: the other rule's business
    ],
)
def test_close_date_pressure(days_to_close: int, probability: float, expected: object) -> None:
    d = deal(close_day=T0 // DAY_MS + days_to_close, probability=probability)
    assert prio(close_date_pressure(d, T0 + 10 * H, TH)) == expected


@pytest.mark.parametrize(
    ("days_to_close", "expected"),
    [(1, None), (0, None), (-1, Priority.HIGH), (-30, Priority.HIGH)],
)
def test_close_date_passed(days_to_close: int, expected: Priority | None) -> None:
    d = deal(close_day=T0 // DAY_MS + days_to_close)
    assert prio(close_date_passed(d, T0 + 23 * H, TH)) == expected


def test_unknown_fields_fire_nothing_that_needs_them() -> None:
    d = DealState(workspace_id="ws", deal_id="d", created_at_ms=T0, last_activity_at_ms=T0)
    assert set(evaluate(d, T0 + DAY_MS, TH)) == set()


def test_thresholds_are_configurable() -> None:
    th = RuleThresholds(stale_days=3, stale_critical_days=4)
    assert prio(stale_deal(deal(), T0 + 3 * DAY_MS + 1, th)) == Priority.HIGH
    assert prio(stale_deal(deal(), T0 + 4 * DAY_MS + 1, th)) == Priority.CRITICAL


def test_the_seed_case_fires_only_low_probability() -> None:
    d = deal(
        title="Enterprise SaaS - Alivio Clothing LTD",
        value=8_000,
        probability=12,
        stage=Stage.LEAD,
        created_at_ms=T0 - 10 * DAY_MS,
        stage_entered_at_ms=T0 - 10 * DAY_MS,
        last_activity_at_ms=T0 - 2 * DAY_MS,
        close_day=T0 // DAY_MS + 60,
    )
    findings = evaluate(d, T0, TH)
    assert list(findings) == [RuleName.LOW_PROBABILITY]
    assert findings[RuleName.LOW_PROBABILITY].priority is Priority.MEDIUM


@pytest.mark.parametrize("step_h", [1, 6, 24])
def test_deadlines_never_miss_a_change(step_h: int) -> None:
    """Between two deadlines the rule outcomes are constant: evaluating only at deadlines
    (what the tick index does) sees every change an hourly scan sees."""
    d = deal(value=20_000, probability=65, stage=Stage.PROPOSAL, close_day=T0 // DAY_MS + 20)
    now = T0
    due = next_deadline(d, now, TH)
    previous = {r: f.priority for r, f in evaluate(d, now, TH).items()}
    for t in range(T0, T0 + 90 * DAY_MS, step_h * H):
        current = {r: f.priority for r, f in evaluate(d, t, TH).items()}
        if current != previous:
            assert due is not None, f"change at {t} with no deadline"
            assert due <= t, f"change at {t} before deadline {due}"
            due = next_deadline(d, t, TH)
            previous = current
        while due is not None and due <= t:
            due = next_deadline(d, due, TH)


@given(
    value=st.one_of(st.none(), st.floats(0, 300_000)),
    probability=st.one_of(st.none(), st.floats(0, 100)),
    stage=st.one_of(st.none(), st.sampled_from(list(Stage))),
    close_in=st.one_of(st.none(), st.integers(-60, 120)),
    inactive=st.integers(0, 60 * DAY_MS),
    in_stage=st.integers(0, 90 * DAY_MS),
)
def test_fused_pass_agrees_with_the_rule_functions(
    value: float | None,
    probability: float | None,
    stage: Stage | None,
    close_in: int | None,
    inactive: int,
    in_stage: int,
) -> None:
    now = T0 + 100 * DAY_MS
    d = deal(
        value=value,
        probability=probability,
        stage=stage,
        close_day=None if close_in is None else now // DAY_MS + close_in,
        last_activity_at_ms=now - inactive,
        stage_entered_at_ms=now - in_stage,
    )
    assert fired(d, now, TH) == {r: f.priority for r, f in evaluate(d, now, TH).items()}
