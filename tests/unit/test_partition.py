"""The partition state machine: lifecycle, clock, deadline index, dedupe, closed deals."""

from __future__ import annotations

import datetime as dt
import itertools

from consumer.changelog import checkpoint_records, restore
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import (
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealFields,
    DealScored,
    DealUpdated,
    EmailLogged,
    MeetingLogged,
    Tick,
)
from schemas.insights import DEAL_RULES, InsightEvent, Lifecycle, Priority, RuleName

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def eid() -> str:
    return f"e{next(_ids)}"


def created(deal_id: str = "d1", at: dt.datetime = T0, **kw: object) -> DealCreated:
    fields: dict[str, object] = {
        "title": "Acme renewal",
        "value": 5_000,
        "currency": "USD",
        "stage": "negotiation",
        "probability": 80,
        "close_date": (at + dt.timedelta(days=60)).date(),
        "owner_id": "u1",
    }
    fields.update(kw)
    return DealCreated(event_id=eid(), workspace_id="ws", deal_id=deal_id, occurred_at=at, **fields)  # type: ignore[arg-type]


def activity(deal_id: str = "d1", at: dt.datetime = T0) -> ActivityLogged:
    return ActivityLogged(
        event_id=eid(), workspace_id="ws", deal_id=deal_id, occurred_at=at, activity_type="call"
    )


def tick(day: float) -> Tick:
    return Tick(at=T0 + dt.timedelta(days=day))


def run(p: PartitionState, *inputs: DealEvent | Tick) -> list[InsightEvent]:
    out: list[InsightEvent] = []
    for item in inputs:
        step = p.tick(item) if isinstance(item, Tick) else p.apply(item)
        out.extend(i.event() for i in step.insights)
    return out


def new() -> PartitionState:
    return PartitionState(RulesConfig())


def test_going_cold_raises_escalates_and_resolves_once_each() -> None:
    p = new()
    out = run(p, created(), activity(at=T0))
    out += run(p, *(tick(d) for d in range(1, 16)))
    out += run(p, activity(at=T0 + dt.timedelta(days=16)))
    stale = [i for i in out if i.rule is RuleName.STALE_DEAL]
    assert [(i.lifecycle, i.priority) for i in stale] == [
        (Lifecycle.RAISED, Priority.HIGH),
        (Lifecycle.ESCALATED, Priority.CRITICAL),
        (Lifecycle.RESOLVED, Priority.CRITICAL),
    ]
    assert len({i.insight_id for i in stale}) == 1
    assert stale[0].detected_at == T0 + dt.timedelta(days=8)
    assert stale[1].detected_at == T0 + dt.timedelta(days=15)


def test_a_tick_touches_only_due_deals() -> None:
    p = new()
    for n in range(1000):
        p.apply(created(f"d{n}", at=T0 + dt.timedelta(minutes=n)))
    step = p.tick(Tick(at=T0 + dt.timedelta(days=1)))
    assert step.deals_touched == 0
    p.apply(activity("d5", at=T0 + dt.timedelta(days=1)))
    # 7 days + 1 ms after creation the first ~40 deals are due (created one minute apart)
    step = p.tick(Tick(at=T0 + dt.timedelta(days=7, minutes=40)))
    assert 0 < step.deals_touched <= 41
    assert all(i.rule is RuleName.STALE_DEAL for i in step.insights)


def test_clock_never_goes_back() -> None:
    p = new()
    p.tick(tick(5))
    p.apply(created(at=T0))  # an old event
    assert p.clock_ms == int((T0 + dt.timedelta(days=5)).timestamp() * 1000)


def test_duplicates_are_skipped() -> None:
    p = new()
    event = created()
    assert not p.apply(event).duplicate
    assert p.apply(event).duplicate


def test_closed_deal_resolves_everything_and_raises_nothing_after() -> None:
    p = new()
    out = run(p, created(probability=5), tick(9))
    assert {i.rule for i in out} == {RuleName.LOW_PROBABILITY, RuleName.STALE_DEAL}
    closed = DealClosed(
        event_id=eid(),
        workspace_id="ws",
        deal_id="d1",
        occurred_at=T0 + dt.timedelta(days=9),
        outcome="lost",
    )  # type: ignore[arg-type]
    out = run(p, closed)
    assert {(i.rule, i.lifecycle) for i in out} == {
        (RuleName.LOW_PROBABILITY, Lifecycle.RESOLVED),
        (RuleName.STALE_DEAL, Lifecycle.RESOLVED),
    }
    assert all(i.data.key_metrics["resolution"] == "lost" for i in out)
    later = DealUpdated(
        event_id=eid(),
        workspace_id="ws",
        deal_id="d1",
        occurred_at=T0 + dt.timedelta(days=10),
        changes=DealFields(probability=1),
    )
    assert run(p, later, tick(40)) == []
    assert "d1" not in p.deals


def test_deleted_deal_resolves_what_was_open() -> None:
    p = new()
    run(p, created(probability=5))
    deleted = DealDeleted(event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0)
    out = run(p, deleted)
    assert [(i.rule, i.lifecycle) for i in out] == [(RuleName.LOW_PROBABILITY, Lifecycle.RESOLVED)]
    assert run(p, activity(), tick(30)) == []


def test_partial_update_merges_and_stage_change_restarts_the_stage_clock() -> None:
    p = new()
    run(p, created(stage="lead", probability=50))
    p.apply(
        DealUpdated(
            event_id=eid(),
            workspace_id="ws",
            deal_id="d1",
            occurred_at=T0 + dt.timedelta(days=10),
            changes=DealFields(stage="qualified"),
        )  # type: ignore[arg-type]
    )
    state = p.deals["d1"]
    assert state.stage == "qualified"
    assert state.probability == 50
    assert state.value == 5_000
    assert state.stage_entered_at_ms == int((T0 + dt.timedelta(days=10)).timestamp() * 1000)


def test_escalation_needs_a_higher_priority_and_is_not_resent() -> None:
    p = new()
    out = run(p, created(stage="lead", probability=10, value=5_000))
    assert [(i.lifecycle, i.priority) for i in out] == [(Lifecycle.RAISED, Priority.MEDIUM)]
    bump = DealUpdated(
        event_id=eid(),
        workspace_id="ws",
        deal_id="d1",
        occurred_at=T0,
        changes=DealFields(value=50_000),
    )
    out = [i for i in run(p, bump) if i.rule is RuleName.LOW_PROBABILITY]
    assert [(i.lifecycle, i.priority) for i in out] == [(Lifecycle.ESCALATED, Priority.HIGH)]
    again = DealUpdated(
        event_id=eid(),
        workspace_id="ws",
        deal_id="d1",
        occurred_at=T0,
        changes=DealFields(value=60_000),
    )
    assert [i for i in run(p, again) if i.rule is RuleName.LOW_PROBABILITY] == []


def test_per_workspace_thresholds() -> None:
    rules = RulesConfig(workspaces={"ws": RuleThresholds(stale_days=2, stale_critical_days=3)})
    p = PartitionState(rules)
    out = run(p, created(probability=90), tick(2.5))
    assert [i.rule for i in out] == [RuleName.STALE_DEAL]


def test_same_inputs_same_outputs() -> None:
    def scenario() -> list[str]:
        global _ids
        _ids = itertools.count()
        p = new()
        out = run(p, created(probability=5), activity(), *(tick(d) for d in range(30)))
        return [i.model_dump_json() for i in out]

    assert scenario() == scenario()


def test_a_copy_within_the_deals_window_is_a_duplicate_and_an_older_one_is_not() -> None:
    """De-duplication remembers each deal's last ``dedupe_per_deal`` event ids."""
    p = PartitionState(RulesConfig(), dedupe_per_deal=3)
    first = created()
    p.apply(first)
    later = [activity(at=T0 + dt.timedelta(hours=h)) for h in (1, 2)]
    for event in later:
        p.apply(event)
    assert p.apply(first).duplicate  # 3 ids kept: first, and the two activities
    assert p.apply(later[0]).duplicate
    p.apply(activity(at=T0 + dt.timedelta(hours=3)))  # pushes `first` out of the window
    assert not p.apply(first).duplicate
    assert PartitionState(RulesConfig(), dedupe_per_deal=0).apply(first).duplicate is False


def test_the_window_survives_a_restore_and_covers_closed_deals() -> None:
    live = new()
    opened, closing = (
        created(),
        DealClosed(event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0, outcome="won"),
    )  # type: ignore[arg-type]
    other = created("d2")
    for event in (opened, closing, other):
        live.apply(event)
    restored = restore(checkpoint_records(live, 3), committed=3)
    copy = new()
    copy.load(restored.deals, restored.closed, restored.clock_ms, closed_seen=restored.closed_seen)
    assert copy.apply(other).duplicate
    # a copy of the closing event with a later time must not move the partition clock
    late_copy = closing.model_copy(update={"occurred_at": T0 + dt.timedelta(days=40)})
    assert copy.apply(late_copy).duplicate
    assert copy.clock_ms == live.clock_ms


def _captured_then_silent(deal_id: str) -> list[DealEvent]:
    """A large negotiation with one buyer contact, three daily meetings and two unanswered
    emails, then nothing: single_threaded, meeting_cadence_drop and ghosting fire."""
    day = dt.timedelta(days=1)
    out: list[DealEvent] = [created(deal_id, value=50_000)]
    for i in range(3):
        at = T0 + i * day
        out.append(
            MeetingLogged(
                event_id=eid(), workspace_id="ws", deal_id=deal_id, occurred_at=at,
                meeting_id=f"m{i}", status="held", start=at, end=at + day / 24,
                attendees=("ana@acme.com",),
            )  # type: ignore[arg-type]
        )  # fmt: skip
    for hours in (60, 72):
        out.append(
            EmailLogged(
                event_id=eid(), workspace_id="ws", deal_id=deal_id,
                occurred_at=T0 + dt.timedelta(hours=hours), direction="outbound",
                participants=("ana@acme.com",),
            )  # type: ignore[arg-type]
        )  # fmt: skip
    return out


def scored(
    probability: float,
    at: dt.datetime,
    deal_id: str = "d1",
    close_p10: dt.date | None = None,
    factors: tuple[tuple[str, float], ...] = (),
) -> DealScored:
    return DealScored(
        event_id=eid(),
        workspace_id="ws",
        deal_id=deal_id,
        occurred_at=at,
        model_version=1,
        win_probability=probability,
        top_factors=[{"feature": f, "effect": e} for f, e in factors],
        close_p10=close_p10,
    )  # type: ignore[arg-type]


def test_rendered_insights_are_valid_insight_events() -> None:
    """The renderer writes JSON directly; every rule and lifecycle must be a valid
    ``InsightEvent`` whose routing fields agree with the JSON."""
    p = new()
    out = []
    for step in (
        p.apply(created(probability=5, value=50_000, close_date=T0.date() + dt.timedelta(days=3))),
        *(p.apply(activity(at=T0)) for _ in range(4)),  # a baseline that then goes silent
        *(p.apply(e) for e in _captured_then_silent("d9")),
        p.apply(created("d8", close_date=T0.date() + dt.timedelta(days=3))),
        p.apply(scored(0.7, T0, "d8")),
        p.apply(
            scored(
                0.3,
                T0 + dt.timedelta(hours=1),
                "d8",
                T0.date() + dt.timedelta(days=40),
                (("stage", -0.2),),
            )
        ),
        p.tick(tick(4)),
        p.tick(tick(9)),
        p.tick(tick(40)),
        p.apply(activity(at=T0 + dt.timedelta(days=41))),
        p.apply(DealDeleted(event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0)),  # type: ignore[call-arg]
    ):
        out.extend(step.insights)
    assert {i.rule for i in out} == set(DEAL_RULES)
    assert {i.lifecycle for i in out} == {Lifecycle.RAISED, Lifecycle.ESCALATED, Lifecycle.RESOLVED}
    for insight in out:
        event = insight.event()
        assert (event.deal_id, event.rule, event.priority, event.lifecycle) == (
            insight.deal_id,
            insight.rule,
            insight.priority,
            insight.lifecycle,
        )
        assert event.detected_at.tzinfo is not None
        assert event.source == "rules"
        assert 2 <= len(event.actions) <= 3


def test_a_copy_of_a_tick_is_recognised_after_a_restore() -> None:
    """Tick ids are checkpointed with the clock: a copy of a tick (a producer retry) that comes
    after a restore must not evaluate the partition's deals early."""
    live = new()
    live.apply(created())
    first = Tick(event_id="tick-1", at=T0 + dt.timedelta(days=1))
    live.tick(first)
    restored = restore(checkpoint_records(live, 2), committed=2)
    copy = new()
    copy.load(
        restored.deals,
        restored.closed,
        restored.clock_ms,
        closed_seen=restored.closed_seen,
        tick_digests=restored.tick_digests,
    )
    assert copy.tick_digests == live.tick_digests != b""
    assert copy.tick(first).duplicate
    assert not copy.tick(Tick(event_id="tick-2", at=T0 + dt.timedelta(days=2))).duplicate


def test_a_deal_never_identified_is_dropped_after_the_tombstone_period() -> None:
    """Random ids from partial updates (no stage, no value) cannot grow the state for ever; a
    deal that got a stage is kept however long it is silent."""
    p = PartitionState(RulesConfig(), tombstone_days=30)
    partial = DealUpdated(  # type: ignore[call-arg]
        event_id=eid(), workspace_id="ws", deal_id="ghost", occurred_at=T0,
        changes=DealFields(probability=40),  # type: ignore[call-arg]
    )  # fmt: skip
    out = run(p, partial, created("real"))
    out += run(p, tick(20))
    assert set(p.deals) == {"ghost", "real"}
    out += run(p, tick(30))
    assert set(p.deals) == {"real"}
    ghost = [i for i in out if i.deal_id == "ghost"]
    assert ghost
    assert ghost[-1].lifecycle is Lifecycle.RESOLVED
    assert ghost[-1].data.key_metrics["resolution"] == "forgotten"
    assert all("unknown" not in i.description for i in out)
    records = dict(checkpoint_records(p, 10))
    assert records[b"ghost"] is None  # a tombstone: compaction forgets it
