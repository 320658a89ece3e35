"""The model-based rules where the scores are made (``consumer.history.model_rules``): on the
same deal events and scores they publish, byte for byte, the model-rule insights the monitor
publishes when it folds the scores itself; a close resolves what is open; the stored form
round-trips."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.history.model_rules import (
    MODEL_RULES,
    Watch,
    from_json,
    on_close,
    on_score,
    to_json,
)
from consumer.intelligence.projection import fold
from consumer.partition import PartitionState
from consumer.state import DAY_MS, to_ms
from consumer.templates import Insight
from consumer.thresholds import RulesConfig
from schemas.events import DealClosed, DealEvent, DealScored, Outcome, Tick
from schemas.insights import Lifecycle, Priority, RuleName
from tests.unit.test_deal_scores import DAY, T0, created, eid, scored, updated

MODEL = {rule.name for rule in MODEL_RULES}


def _midnight(day: int) -> dt.datetime:
    """The start (UTC) of ``day`` days after T0's day: where a daily rescoring lands."""
    return dt.datetime.fromtimestamp((to_ms(T0) // DAY_MS + day) * DAY_MS / 1000, dt.UTC)


def rescored(probability: float, day: int) -> DealScored:
    """A rescoring at the start of a day (``history_rescore_hours`` 24)."""
    s = scored(probability, 0, p10_day=20)
    return s.model_copy(update={"occurred_at": _midnight(day), "event_id": eid()})


def _scenario() -> list[Any]:
    """Deal events, each followed by the score made as of it (what ``vectoros history`` does),
    and daily rescorings; the ticks the monitor needs to see time pass."""
    return [
        created(),  # negotiation, rep 80, close in 60 days
        scored(0.7, 0, p10_day=20),  # model 70: nothing
        updated(1, probability=85),
        scored(0.5, 1, p10_day=20),  # rep 85, model 50: forecast_risk; a 20-point drop
        Tick(at=_midnight(2)),
        rescored(0.5, 2),
        updated(3, close_date=(T0 + 10 * DAY).date()),  # before the P10 (day 20)
        scored(0.5, 3, p10_day=20),  # close_date_unrealistic
        updated(4, probability=45),  # the rep agrees now: forecast_risk clears
        scored(0.5, 4, p10_day=20),
        Tick(at=_midnight(5)),
        rescored(0.3, 5),  # the model drops again: 40 points below its peak, escalated
        Tick(at=_midnight(13)),  # the peak (day 0-4) leaves the 7-day window
        rescored(0.3, 13),
        DealClosed(
            event_id=eid(),
            workspace_id="ws",
            deal_id="d1",
            occurred_at=T0 + 14 * DAY,
            outcome=Outcome.LOST,
        ),
    ]


def monitor_path(inputs: list[Any]) -> list[Insight]:
    p = PartitionState(RulesConfig())
    out: list[Insight] = []
    for item in inputs:
        step = p.tick(item) if isinstance(item, Tick) else p.apply(item)
        out += [i for i in step.insights if i.rule in MODEL]
    return out


def history_path(inputs: list[Any]) -> list[Insight]:
    th = RulesConfig().for_workspace("ws")
    events: list[DealEvent] = []
    watch = Watch()
    out: list[Insight] = []
    for item in inputs:
        if isinstance(item, Tick):
            continue
        if isinstance(item, DealScored):
            h = fold(events)
            assert h is not None
            watch, insights = on_score(h, watch, item, th)
            watch = from_json(to_json(watch))  # stored and read back between steps
            out += insights
        else:
            events.append(item)
            h = fold(events)
            assert h is not None
            if h.outcome is not None:
                watch, insights = on_close(h, watch, th)
                out += insights
    return out


def test_the_history_publishes_what_the_monitor_would() -> None:
    inputs = _scenario()
    expected = monitor_path(inputs)
    assert [(i.rule, i.lifecycle) for i in expected] == [
        (RuleName.FORECAST_RISK, Lifecycle.RAISED),
        (RuleName.WIN_PROBABILITY_DROP, Lifecycle.RAISED),
        (RuleName.CLOSE_DATE_UNREALISTIC, Lifecycle.RAISED),
        (RuleName.FORECAST_RISK, Lifecycle.RESOLVED),
        (RuleName.WIN_PROBABILITY_DROP, Lifecycle.ESCALATED),
        (RuleName.WIN_PROBABILITY_DROP, Lifecycle.RESOLVED),
        (RuleName.CLOSE_DATE_UNREALISTIC, Lifecycle.RESOLVED),
    ]
    assert history_path(inputs) == expected


def test_an_older_or_repeated_score_changes_nothing() -> None:
    th = RulesConfig().for_workspace("ws")
    h = fold([created()])
    assert h is not None
    first = scored(0.3, 0)
    watch, raised = on_score(h, Watch(), first, th)
    assert [(i.rule, i.priority) for i in raised] == [(RuleName.FORECAST_RISK, Priority.CRITICAL)]
    assert on_score(h, watch, first, th) == (watch, [])
    assert on_score(h, watch, scored(0.9, -1), th) == (watch, [])


def test_a_close_resolves_every_open_model_insight_and_nothing_else() -> None:
    th = RulesConfig().for_workspace("ws")
    events: list[DealEvent] = [created(close_date=(T0 + 5 * DAY).date())]
    h = fold(events)
    assert h is not None
    watch, raised = on_score(h, Watch(), scored(0.3, 0, p10_day=20), th)
    assert {i.rule for i in raised} == {
        RuleName.FORECAST_RISK,
        RuleName.CLOSE_DATE_UNREALISTIC,
    }
    won = DealClosed(
        event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0 + DAY, outcome=Outcome.WON
    )
    closed = fold([*events, won])
    assert closed is not None
    after, resolved = on_close(closed, watch, th)
    assert after.open == ()
    assert [(i.rule, i.lifecycle) for i in resolved] == [
        (i.rule, Lifecycle.RESOLVED) for i in raised
    ]
    assert all(i.event().data.key_metrics["resolution"] == "won" for i in resolved)
    assert on_close(closed, after, th) == (after, [])


def test_the_stored_watch_round_trips() -> None:
    th = RulesConfig().for_workspace("ws")
    h = fold([created()])
    assert h is not None
    watch, _ = on_score(h, Watch(), scored(0.3, 0, p10_day=20), th)
    watch, _ = on_score(h, watch, scored(0.25, 1, p10_day=21), th)
    assert watch.score is not None
    assert watch.open
    assert from_json(to_json(watch)) == watch
    assert from_json(to_json(Watch())) == Watch()


def test_the_model_rules_have_one_home() -> None:
    from consumer.history.settings import HistorySettings

    assert HistorySettings().history_model_rules  # the default: here, not in the monitor
    assert not HistorySettings().history_scores_to_events
    HistorySettings(history_model_rules=False, history_scores_to_events=True)
    with pytest.raises(ValidationError, match="would run twice"):
        HistorySettings(history_model_rules=True, history_scores_to_events=True)


def test_a_deal_changed_behind_its_latest_score_is_evaluated_again() -> None:
    """A rescoring at day 2 scored the deal; an event of day 1 (its partition lagged) then
    changes the rep's probability: its own score is older than the rescoring's, yet the rules
    run again, with the newer score, at its time."""
    th = RulesConfig().for_workspace("ws")
    events: list[DealEvent] = [created()]  # rep 80
    h = fold(events)
    assert h is not None
    watch, raised = on_score(h, Watch(), rescored(0.5, 2), th)  # 30 points below the rep
    assert [(i.rule, i.lifecycle) for i in raised] == [(RuleName.FORECAST_RISK, Lifecycle.RAISED)]
    events.append(updated(1, probability=50))
    late = fold(events)
    assert late is not None
    after, cleared = on_score(late, watch, scored(0.5, 1), th)
    assert [(i.rule, i.lifecycle) for i in cleared] == [
        (RuleName.FORECAST_RISK, Lifecycle.RESOLVED)
    ]
    assert cleared[0].event().detected_at == _midnight(2)  # the newer score's time
    assert after.score == watch.score
    assert on_score(late, after, scored(0.5, 1), th) == (after, [])  # handled again: nothing


def test_a_closed_watch_never_raises_and_imported_deals_are_not_watched() -> None:
    th = RulesConfig().for_workspace("ws")
    events: list[DealEvent] = [created()]
    lost = DealClosed(
        event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0 + DAY, outcome=Outcome.LOST
    )
    closed_h = fold([*events, lost])
    assert closed_h is not None
    closed, resolved = on_close(closed_h, Watch(), th)
    assert closed.closed
    assert resolved == []
    # a score made before the close, by a process that was behind, finds the watch closed
    h = fold(events)
    assert h is not None
    assert on_score(h, closed, scored(0.2, 0.5), th) == (closed, [])
    imported = fold(events)
    assert imported is not None
    imported.source = "import"
    assert on_score(imported, Watch(), scored(0.2, 0.5), th) == (Watch(), [])
