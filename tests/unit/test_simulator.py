"""The pipeline simulator: reproducible, ordered, valid, and realistic enough for every rule."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from typing import Any

import pytest

from producer.simulator import (
    SimItem,
    SimTick,
    SimulationSpec,
    generate,
    start_ending_at,
    summary,
)
from schemas.events import (
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealFields,
    DealUpdated,
    Direction,
    EmailLogged,
    MeetingLogged,
    MeetingStatus,
    Outcome,
    Stage,
    encode_event,
    event_adapter,
)

SPEC = SimulationSpec()
STAGE_ORDER = [Stage.LEAD, Stage.QUALIFIED, Stage.PROPOSAL, Stage.NEGOTIATION]


@pytest.fixture(scope="module")
def items() -> list[SimItem]:
    return list(generate(SPEC))


@pytest.fixture(scope="module")
def events(items: list[SimItem]) -> list[DealEvent]:
    return [item for item in items if not isinstance(item, SimTick)]


@pytest.fixture(scope="module")
def by_deal(events: list[DealEvent]) -> dict[str, list[DealEvent]]:
    out: dict[str, list[DealEvent]] = defaultdict(list)
    for event in events:
        out[event.deal_id].append(event)
    return out


@pytest.fixture(scope="module")
def created(events: list[DealEvent]) -> list[DealCreated]:
    return [e for e in events if isinstance(e, DealCreated)]


def _time(item: SimItem) -> datetime:
    return item.at if isinstance(item, SimTick) else item.occurred_at


def _fingerprint(stream: list[SimItem]) -> list[str]:
    return [repr(i) if isinstance(i, SimTick) else encode_event(i).decode() for i in stream]


def _cold_deals(by_deal: dict[str, list[DealEvent]]) -> set[str]:
    """Deals with more than 7 days without activity while open (so stale_deal fires)."""
    cold = set()
    for deal_id, stream in by_deal.items():
        marks = [
            e.occurred_at
            for e in stream
            if isinstance(e, DealCreated | ActivityLogged | DealClosed | DealDeleted)
        ]
        if any(b - a > timedelta(days=7) for a, b in pairwise(marks)):
            cold.add(deal_id)
    return cold


# --- reproducibility and ordering ------------------------------------------------------------


def test_same_seed_gives_an_identical_stream(items: list[SimItem]) -> None:
    assert _fingerprint(list(generate(SimulationSpec()))) == _fingerprint(items)


def test_a_different_seed_gives_a_different_stream(items: list[SimItem]) -> None:
    other = list(generate(SimulationSpec(seed=7)))
    assert _fingerprint(other) != _fingerprint(items)
    assert {e.event_id for e in other if not isinstance(e, SimTick)}.isdisjoint(
        e.event_id for e in items if not isinstance(e, SimTick)
    )


def test_generation_is_lazy_and_streams() -> None:
    big = generate(SimulationSpec(deals=100_000, days=365))
    head = list(islice(big, 50))
    assert len(head) == 50
    assert isinstance(head[0], SimTick)


def test_items_are_in_non_decreasing_time_order_within_the_period(items: list[SimItem]) -> None:
    times = [_time(i) for i in items]
    assert times == sorted(times)
    assert SPEC.start <= times[0]
    assert times[-1] <= SPEC.end


def test_event_ids_are_unique(events: list[DealEvent]) -> None:
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids))


def test_ticks_every_tick_every_over_the_whole_period(items: list[SimItem]) -> None:
    ticks = [i.at for i in items if isinstance(i, SimTick)]
    assert ticks[0] == SPEC.start
    assert ticks[-1] == SPEC.end  # 90 days is a whole number of 6 h steps
    assert all(b - a == SPEC.tick_every for a, b in pairwise(ticks))
    assert len(ticks) == SPEC.days * 4 + 1


def test_a_spec_with_no_deals_gives_only_ticks() -> None:
    spec = SimulationSpec(deals=0, days=2, tick_every=timedelta(hours=12))
    assert [i.at for i in generate(spec) if isinstance(i, SimTick)] == [
        spec.start + timedelta(hours=12 * k) for k in range(5)
    ]
    assert summary(generate(spec)) == {"tick": 5}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deals": -1},
        {"days": 0},
        {"workspaces": 0},
        {"tick_every": timedelta(0)},
        {"start": datetime(2026, 1, 5)},  # naive
    ],
)
def test_bad_specs_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="need"):
        SimulationSpec(**kwargs)


# --- validity --------------------------------------------------------------------------------


def test_every_event_is_a_valid_model_with_an_aware_time(events: list[DealEvent]) -> None:
    for event in events:
        assert event.occurred_at.tzinfo is not None
        assert event_adapter.validate_json(encode_event(event)) == event


def test_ids_look_like_the_contract(events: list[DealEvent], created: list[DealCreated]) -> None:
    assert len({e.deal_id for e in created}) == SPEC.deals
    assert all(re.fullmatch(r"deal-\d{5}", e.deal_id) for e in events)
    assert {e.workspace_id for e in events} == {"ws-northwind", "ws-acme", "ws-globex"}
    assert all(re.fullmatch(r"[0-9a-f-]{36}", e.event_id) for e in events)


def test_every_type_is_present(items: list[SimItem]) -> None:
    counts = summary(items)
    for kind in ("tick", "deal.created", "deal.updated", "activity.logged", "deal.closed"):
        assert counts[kind] > 0, kind
    assert counts["deal.deleted"] >= 1
    assert counts["won"] > 0
    assert counts["lost"] > 0
    assert counts["won"] + counts["lost"] == counts["deal.closed"]
    assert sum(v for k, v in counts.items() if k not in ("won", "lost")) == len(items)


# --- deal lifecycles -------------------------------------------------------------------------


def test_each_deal_is_created_first_and_silent_after_close_or_delete(
    by_deal: dict[str, list[DealEvent]],
) -> None:
    for stream in by_deal.values():
        assert isinstance(stream[0], DealCreated)
        assert not any(isinstance(e, DealCreated) for e in stream[1:])
        ends = [i for i, e in enumerate(stream) if isinstance(e, DealClosed | DealDeleted)]
        assert ends in ([], [len(stream) - 1])


def test_updates_name_only_changed_fields_and_stages_advance_one_at_a_time(
    by_deal: dict[str, list[DealEvent]],
) -> None:
    seen_previous = seen_without = 0
    for stream in by_deal.values():
        first = stream[0]
        assert isinstance(first, DealCreated)
        state = first.model_dump(include=set(DealFields.model_fields))
        for event in stream[1:]:
            if not isinstance(event, DealUpdated):
                continue
            changed = event.changes.model_dump(exclude_unset=True)
            assert changed
            for key, value in changed.items():
                assert state[key] != value, (event.deal_id, key)
            if event.previous is not None:
                seen_previous += 1
                assert event.previous.model_dump(exclude_unset=True) == {
                    k: state[k] for k in changed
                }
            else:
                seen_without += 1
            if "stage" in changed:
                assert STAGE_ORDER.index(changed["stage"]) == STAGE_ORDER.index(state["stage"]) + 1
                assert changed["probability"] > state["probability"]
            state.update(changed)
    assert seen_previous > 0
    assert seen_without > 0


def test_kinds_of_updates(events: list[DealEvent]) -> None:
    updates = [e for e in events if isinstance(e, DealUpdated)]
    fields = [set(u.changes.model_fields_set) for u in updates]
    assert sum(f == {"stage", "probability"} for f in fields) > 20
    assert sum(f == {"close_date"} for f in fields) > 10
    assert sum(f == {"value"} for f in fields) > 5
    assert sum(f == {"probability"} for f in fields) > 5  # drops after a silence
    pushes = [
        (u.changes.close_date, u.previous.close_date)
        for u in updates
        if u.previous and u.changes.close_date and u.previous.close_date
    ]
    assert len(pushes) > 5
    assert all(new > old for new, old in pushes)


def test_some_deals_reach_every_stage(events: list[DealEvent]) -> None:
    reached = {e.changes.stage for e in events if isinstance(e, DealUpdated) and e.changes.stage}
    assert reached == {Stage.QUALIFIED, Stage.PROPOSAL, Stage.NEGOTIATION}


def test_a_share_of_deals_goes_cold(by_deal: dict[str, list[DealEvent]]) -> None:
    share = len(_cold_deals(by_deal)) / len(by_deal)
    assert 0.15 <= share <= 0.6


def test_activity_comes_in_bursts(by_deal: dict[str, list[DealEvent]]) -> None:
    bursty = 0
    for stream in by_deal.values():
        times = [e.occurred_at for e in stream if isinstance(e, ActivityLogged)]
        if any(b - a <= timedelta(days=3) for a, b in zip(times, times[2:], strict=False)):
            bursty += 1
    assert bursty / len(by_deal) > 0.5


def test_activities_are_emails_calls_and_meetings_mostly(events: list[DealEvent]) -> None:
    acts = [e for e in events if isinstance(e, ActivityLogged)]
    kinds = {a.activity_type.value for a in acts}
    assert kinds == {"email", "call", "meeting", "note", "task"}
    assert all(a.direction is not None for a in acts if a.activity_type.value in ("email", "call"))
    assert all(a.subject for a in acts)


def test_wins_carry_a_value_and_losses_a_reason(events: list[DealEvent]) -> None:
    closed = [e for e in events if isinstance(e, DealClosed)]
    assert all(c.value for c in closed if c.outcome is Outcome.WON)
    assert all(c.reason for c in closed)


# --- realism of new deals --------------------------------------------------------------------


def test_deals_are_created_over_the_period_mostly_early(created: list[DealCreated]) -> None:
    offsets = [(c.occurred_at - SPEC.start) / timedelta(days=1) for c in created]
    assert statistics.median(offsets) < SPEC.days / 2
    assert max(offsets) > SPEC.days / 2
    assert sum(o < SPEC.days / 3 for o in offsets) > sum(o > 2 * SPEC.days / 3 for o in offsets)


def test_titles_values_currencies_and_close_dates(created: list[DealCreated]) -> None:
    for deal in created:
        product, _, company = deal.title.partition(" - ")
        assert product
        assert company == deal.company
        assert 2_000 <= deal.value <= 250_000
        days_out = (deal.close_date - deal.occurred_at.date()).days
        assert 20 <= days_out <= 120
        assert deal.stage in (Stage.LEAD, Stage.QUALIFIED)
        assert 0 <= deal.probability <= 100
    values = [d.value for d in created]
    assert sum(v > 10_000 for v in values) > len(values) / 3
    assert sum(v < 10_000 for v in values) > len(values) / 10
    main = sum(d.currency in ("USD", "EUR", "GBP") for d in created)
    assert main / len(created) > 0.85
    assert sum(d.currency == "USD" for d in created) > len(created) / 3


def test_each_workspace_has_several_named_owners(created: list[DealCreated]) -> None:
    owners: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for deal in created:
        owners[deal.workspace_id].add((deal.owner_id, deal.owner_name))
    assert len(owners) == SPEC.workspaces
    for workspace_id, team in owners.items():
        assert len(team) >= 2, workspace_id
        assert all(name for _, name in team)
        ids = {owner_id for owner_id, _ in team}
        assert len(ids) == len(team)  # one name per owner id
    all_ids = [owner_id for team in owners.values() for owner_id, _ in team]
    assert len(all_ids) == len(set(all_ids))  # no owner in two workspaces


def test_more_workspaces_than_names_still_get_unique_ids() -> None:
    spec = SimulationSpec(deals=300, days=10, workspaces=12, start=datetime(2026, 3, 1, tzinfo=UTC))
    ids = {e.workspace_id for e in generate(spec) if not isinstance(e, SimTick)}
    assert len(ids) == 12
    assert all(re.fullmatch(r"ws-[a-z]+(-\d+)?", i) for i in ids)


def test_start_ending_at_ends_the_simulation_then() -> None:
    end = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=UTC)
    spec = SimulationSpec(days=90, start=start_ending_at(end, 90))
    assert spec.end == end.replace(microsecond=0)
    assert spec.start == datetime(2026, 9, 3, 9, 30, 15, tzinfo=UTC)
    last_tick = [item for item in generate(spec) if isinstance(item, SimTick)][-1]
    assert last_tick.at <= spec.end
    with pytest.raises(ValueError, match="aware"):
        start_ending_at(datetime(2026, 1, 1), 3)


# --- captured email and meetings -------------------------------------------------------------


def _crm(stream: Iterable[SimItem]) -> list[str]:
    """The CRM events (and ticks), with the capture-only deal fields left out."""
    out = []
    for item in stream:
        if isinstance(item, SimTick):
            out.append(repr(item))
        elif not isinstance(item, EmailLogged | MeetingLogged):
            if isinstance(item, DealCreated):
                item = item.model_copy(update={"contacts": None, "account_domains": None})
            out.append(encode_event(item).decode())
    return out


def test_capture_adds_events_and_changes_no_crm_event(items: list[SimItem]) -> None:
    assert _crm(generate(replace(SPEC, capture=False))) == _crm(items)
    counts = summary(items)
    assert counts["email.logged"] > 500
    assert counts["meeting.logged"] > 200
    assert "email.logged" not in summary(generate(replace(SPEC, capture=False)))


def test_captured_events_name_only_the_deals_buyer(
    by_deal: dict[str, list[DealEvent]],
) -> None:
    for stream in by_deal.values():
        first = stream[0]
        assert isinstance(first, DealCreated)
        assert first.contacts
        assert first.account_domains
        for event in stream:
            people = (
                event.participants
                if isinstance(event, EmailLogged)
                else event.attendees
                if isinstance(event, MeetingLogged)
                else ()
            )
            assert set(people) <= set(first.contacts)
            assert not isinstance(event, EmailLogged) or event.subject is None


def test_meetings_are_scheduled_before_they_are_held(events: list[DealEvent]) -> None:
    by_meeting: dict[str, list[MeetingLogged]] = defaultdict(list)
    for event in events:
        if isinstance(event, MeetingLogged):
            by_meeting[event.meeting_id].append(event)
    statuses = set()
    for stream in by_meeting.values():
        assert stream[0].status is MeetingStatus.SCHEDULED
        assert stream[0].occurred_at < stream[0].start
        statuses.update(m.status for m in stream)
    assert statuses == set(MeetingStatus)


def test_some_buyers_ghost(by_deal: dict[str, list[DealEvent]]) -> None:
    """At least two outbound emails and no reply for over 7 days, while the deal is open."""
    ghosted = 0
    for stream in by_deal.values():
        first_unanswered = None
        unanswered = 0
        for event in stream:
            if isinstance(event, EmailLogged) and event.direction is Direction.INBOUND:
                first_unanswered, unanswered = None, 0
            elif isinstance(event, EmailLogged):
                unanswered += 1
                first_unanswered = first_unanswered or event.occurred_at
            if (
                unanswered >= 2
                and first_unanswered is not None
                and event.occurred_at - first_unanswered > timedelta(days=7)
            ):
                ghosted += 1
                break
    assert 0.05 <= ghosted / len(by_deal) <= 0.5
