"""The pipeline_gap insight's lifecycle, as a table of forecasts (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from consumer.forecast.gap import GapState, deal_id, gap_priority, step
from schemas.forecasts import DealForecast, ForecastGapCloser
from schemas.insights import Lifecycle, Priority, RuleName, insight_id_for

Q1_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
Q1_END = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
THRESHOLD = 0.6


def day(n: int) -> dt.datetime:
    return dt.datetime(2026, 2, n, tzinfo=dt.UTC)


def fc(
    as_of: dt.datetime,
    p_reach: float | None,
    *,
    target: float | None = 1000.0,
    scope: str = "workspace",
    workspace: str = "acme",
) -> DealForecast:
    return DealForecast(
        workspace_id=workspace,
        scope=scope,
        period="2026-Q1",
        period_start=Q1_START,
        period_end=Q1_END,
        as_of=as_of,
        simulations=100,
        open_deals=3,
        won=100.0,
        p10=200.0,
        p50=500.0,
        p90=900.0,
        expected=520.0,
        weighted_pipeline=510.0,
        commit=300.0,
        best_case=600.0,
        pipeline=1200.0,
        target=target,
        coverage=1.2,
        gap=None if target is None else target - 500.0,
        p_reach_target=p_reach,
        gap_closers=[
            ForecastGapCloser(
                deal_id="big", value=800, probability=0.4, p_reach_if_won=0.9, lift=0.5
            )
        ],
    )


def test_the_priority_is_high_below_the_threshold_and_critical_below_half_of_it() -> None:
    assert gap_priority(0.6, 0.6) is None
    assert gap_priority(0.59, 0.6) is Priority.HIGH
    assert gap_priority(0.3, 0.6) is Priority.HIGH
    assert gap_priority(0.29, 0.6) is Priority.CRITICAL


def test_raised_escalated_and_resolved_once_each_over_a_run_of_forecasts() -> None:
    forecasts = [
        fc(day(1), 0.8),  # fine
        fc(day(2), 0.5),  # raised, high
        fc(day(3), 0.45),  # still high: nothing
        fc(day(3), 0.1),  # the same as-of again: ignored
        fc(day(4), 0.2),  # escalated, critical
        fc(day(5), 0.4),  # better but still below: stays open critical, nothing sent
        fc(day(1), 0.95),  # an older as-of: ignored
        fc(day(6), 0.7),  # resolved
        fc(day(7), 0.9),  # fine: nothing
    ]
    state: GapState | None = None
    events = []
    for f in forecasts:
        state, event = step(state, f, THRESHOLD)
        if event is not None:
            events.append(event)
    assert [(e.lifecycle, e.priority, e.detected_at) for e in events] == [
        (Lifecycle.RAISED, Priority.HIGH, day(2)),
        (Lifecycle.ESCALATED, Priority.CRITICAL, day(4)),
        (Lifecycle.RESOLVED, Priority.CRITICAL, day(6)),
    ]
    expected_id = insight_id_for(
        "acme", "pipeline:2026-Q1", "pipeline_gap", round(day(2).timestamp() * 1000)
    )
    assert {e.insight_id for e in events} == {expected_id}
    assert {e.raised_at for e in events} == {day(2)}
    for e in events:
        assert (e.rule, e.workspace_id, e.deal_id) == (
            RuleName.PIPELINE_GAP,
            "acme",
            deal_id("2026-Q1"),
        )
        assert e.data.deal_id == "pipeline:2026-Q1"
        assert e.data.key_metrics["threshold"] == THRESHOLD
    assert events[0].data.key_metrics["p_reach_target"] == 0.5
    assert "big" in events[0].actions[0].action
    assert state == GapState(day(7))


def test_a_new_episode_after_a_resolution_gets_a_new_id() -> None:
    state, first = step(None, fc(day(1), 0.1), THRESHOLD)
    state, _ = step(state, fc(day(2), 0.9), THRESHOLD)
    state, again = step(state, fc(day(3), 0.1), THRESHOLD)
    assert first is not None
    assert again is not None
    assert again.lifecycle is Lifecycle.RAISED
    assert again.insight_id != first.insight_id


@pytest.mark.parametrize(
    "forecast",
    [
        fc(day(2), 0.1, scope="owner:ann"),  # owners: not a workspace insight
        fc(day(2), None, target=None),  # no target: nothing to miss
    ],
)
def test_only_workspace_forecasts_with_a_target_count(forecast: DealForecast) -> None:
    before = GapState(day(1))
    assert step(before, forecast, THRESHOLD) == (before, None)
