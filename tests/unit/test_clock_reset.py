"""The pure part of ``vectoros state reset-clock``: changelog records in, the records that repair
the clock out; a restore of both takes the repaired clock and evaluates every deal again."""

from __future__ import annotations

import datetime as dt

import pytest

from consumer.changelog import checkpoint_records, load_into, restore
from consumer.clock_reset import ClockResetRefused, describe, plan_reset
from consumer.partition import PartitionState
from consumer.state import to_ms
from consumer.thresholds import RulesConfig
from schemas.events import DealClosed, DealCreated, Outcome, Tick
from schemas.insights import Lifecycle

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
Changelog = list[tuple[bytes | None, bytes | None]]


def created(deal_id: str, at: dt.datetime) -> DealCreated:
    return DealCreated(
        event_id=f"c-{deal_id}",
        workspace_id="w",
        deal_id=deal_id,
        occurred_at=at,
        title=deal_id,
        value=5_000,
        currency="USD",
        stage="negotiation",  # type: ignore[arg-type]
        probability=80,
        close_date=(at + dt.timedelta(days=60)).date(),
        owner_id="o",
    )


def poisoned() -> tuple[Changelog, int]:
    """The changelog an unbounded monitor wrote: two deals, a tick at 2100 (every rule fired),
    then a deal closed at that clock. Returns the records and the committed offset."""
    state = PartitionState(RulesConfig())
    log: Changelog = []
    state.apply(created("d-1", NOW))
    state.apply(created("d-2", NOW))
    state.apply(created("d-3", NOW))
    log += checkpoint_records(state, 3)
    raised = state.tick(Tick(event_id="t-far", at=FAR))
    assert raised.insights  # "stale for 26 000 days", ...
    state.apply(
        DealClosed(
            event_id="x-3",
            workspace_id="w",
            deal_id="d-3",
            occurred_at=NOW,
            outcome=Outcome.LOST,
        )
    )
    log += checkpoint_records(state, 5)
    return log, 5


def restored_state(log: Changelog, committed: int) -> PartitionState:
    state = PartitionState(RulesConfig())
    load_into(state, restore(log, committed))
    return state


def test_the_repaired_clock_is_restored_and_every_deal_is_evaluated_again() -> None:
    log, committed = poisoned()
    assert restored_state(log, committed).clock_ms == to_ms(FAR)
    new = to_ms(NOW + dt.timedelta(minutes=1))
    plan = plan_reset(log, partition=0, committed=committed, new_clock_ms=new)
    assert (plan.old_clock_ms, plan.new_clock_ms) == (to_ms(FAR), new)
    assert plan.deals_due == 2
    assert plan.tombstones_moved == 1
    assert plan.records[-1][0] == b"\x00meta"
    state = restored_state(log + plan.records, committed)
    assert state.clock_ms == new
    assert set(state.deals) == {"d-1", "d-2"}
    assert state.closed["d-3"] == new
    assert set(state.deadlines.values()) == {new}  # due at the next tick
    assert state.tick(Tick(event_id="t-far", at=NOW)).duplicate  # the tick ids are kept
    step = state.tick(Tick(event_id="t-next", at=NOW + dt.timedelta(minutes=2)))
    assert step.deals_touched == 2
    assert step.insights
    assert {i.lifecycle for i in step.insights} == {Lifecycle.RESOLVED}
    assert all(due > to_ms(NOW) for due in state.deadlines.values())
    assert "2100-01-01T00:00:00.000+00:00 -> 2026-11-25T12:01:00.000+00:00" in describe(
        plan, "deal-monitor-state"
    )


def test_entries_after_the_committed_offset_stay_ignored() -> None:
    """The records are written at the committed offset: a later restore at that offset takes
    them, and what an uncommitted batch wrote is still ignored."""
    log, committed = poisoned()
    plan = plan_reset(log, partition=0, committed=3, new_clock_ms=to_ms(NOW))
    assert plan.old_clock_ms == to_ms(NOW)  # as of offset 3, before the far tick
    assert restored_state(log + plan.records, 3).clock_ms == to_ms(NOW)
    assert committed == 5


@pytest.mark.parametrize(
    ("committed", "new", "says"),
    [
        (0, NOW, "no committed offset"),
        (5, dt.datetime(2200, 1, 1, tzinfo=dt.UTC), "only moves it back"),
    ],
)
def test_refusals(committed: int, new: dt.datetime, says: str) -> None:
    log, _ = poisoned()
    with pytest.raises(ClockResetRefused, match=says):
        plan_reset(log, partition=0, committed=committed, new_clock_ms=to_ms(new))


def test_a_partition_without_checkpoint_is_refused() -> None:
    with pytest.raises(ClockResetRefused, match="no checkpoint"):
        plan_reset([], partition=2, committed=10, new_clock_ms=to_ms(NOW))
