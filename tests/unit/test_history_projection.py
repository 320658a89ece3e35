"""The deal-history fold: a function of the set of a deal's events (order and duplicates do
not matter), with stage stays, activities, close-date and value changes, rep probabilities."""

from __future__ import annotations

import datetime as dt
import random

from consumer.intelligence.projection import DAY_MS, fold, to_json
from producer.simulator import SimulationSpec, generate
from schemas.events import (
    ActivityLogged,
    ActivityType,
    DealClosed,
    DealCreated,
    DealEvent,
    DealFields,
    DealUpdated,
    Direction,
    Outcome,
    Stage,
)

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


def story() -> list[DealEvent]:
    base = {"workspace_id": "ws", "deal_id": "d1"}
    return [
        DealCreated(
            **base, event_id="e1", occurred_at=at(0), title="Acme", value=1000, currency="EUR",
            stage=Stage.LEAD, probability=20, close_date=dt.date(2026, 3, 1), owner_id="o1",
        ),
        ActivityLogged(
            **base, event_id="e2", occurred_at=at(1), activity_type=ActivityType.EMAIL,
            direction=Direction.INBOUND,
        ),
        DealUpdated(
            **base, event_id="e3", occurred_at=at(10),
            changes=DealFields(stage=Stage.PROPOSAL, probability=60),
        ),
        DealUpdated(
            **base, event_id="e4", occurred_at=at(12),
            changes=DealFields(close_date=dt.date(2026, 4, 1), value=1500),
        ),
        ActivityLogged(
            **base, event_id="e5", occurred_at=at(13), activity_type=ActivityType.MEETING
        ),
        DealClosed(**base, event_id="e6", occurred_at=at(20), outcome=Outcome.WON),
    ]  # fmt: skip


def test_the_fold_of_one_deal() -> None:
    h = fold(story())
    assert h is not None
    assert (h.outcome, h.closed_ms) == ("won", int(at(20).timestamp() * 1000))
    assert [(s.stage, s.days()) for s in h.stages] == [("lead", 10.0), ("proposal", 10.0)]
    assert h.activity_counts() == {"email:inbound": 1, "meeting": 1}
    assert h.close_date_changes == [(int(at(12).timestamp() * 1000), "2026-03-01", "2026-04-01")]
    assert h.close_date_pushes() == 1
    assert [(old, new) for _, old, new in h.value_changes] == [(1000, 1500)]
    assert [p for _, p in h.probabilities] == [20, 60]
    assert (h.stage, h.value, h.probability, h.event_count) == ("proposal", 1500, 60, 6)


def test_order_and_duplicates_change_nothing() -> None:
    events = [
        i for i in generate(SimulationSpec(deals=30, days=60, seed=5)) if not hasattr(i, "at")
    ]
    by_deal: dict[str, list[DealEvent]] = {}
    for e in events:
        by_deal.setdefault(e.deal_id, []).append(e)  # type: ignore[union-attr]
    rng = random.Random(1)
    for evs in by_deal.values():
        expected = fold(evs)
        assert expected is not None
        shuffled = evs + rng.sample(evs, len(evs) // 2)
        rng.shuffle(shuffled)
        again = fold(shuffled)
        assert again == expected
        assert to_json(again) == to_json(expected)


def test_no_events_no_history() -> None:
    assert fold([]) is None


def test_stage_spells_are_contiguous() -> None:
    h = fold(story())
    assert h is not None
    assert h.stages[0].left_ms == h.stages[1].entered_ms
    assert h.stages[1].left_ms == h.closed_ms
    assert h.closed_ms is not None
    assert h.created_ms is not None
    assert (h.closed_ms - h.created_ms) / DAY_MS == 20
