"""Captured email and meetings: the contract's new events in the deal state, the codec, and the
rules that read them (ghosting, meeting_cadence_drop, single_threaded, the hold-off)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consumer.changelog import checkpoint_records, restore
from consumer.deal_codec import FORMAT, deadline_of, pack, unpack, upgrade
from consumer.partition import PartitionState
from consumer.rules import BY_NAME, fired, next_deadline
from consumer.state import (
    CONTACTS_KEPT,
    DAY_MS,
    HELD_KEPT,
    DealState,
    Engagement,
    apply_event,
    short_digest,
    to_ms,
)
from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import (
    DealCreated,
    DealEvent,
    DealUpdated,
    EmailLogged,
    MeetingLogged,
    Stage,
    Tick,
)
from schemas.insights import Lifecycle, Priority, RuleName
from vectoros.errors import ConfigError

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
T0_MS = to_ms(T0)
DAY = dt.timedelta(days=1)
TH = RuleThresholds()
ROOT = Path(__file__).resolve().parents[2]
_ids = itertools.count()


def eid() -> str:
    return f"c{next(_ids)}"


def created(deal_id: str = "d1", **kw: Any) -> DealCreated:
    fields: dict[str, Any] = {
        "title": "Acme renewal",
        "value": 50_000,
        "currency": "USD",
        "stage": "proposal",
        "probability": 80,
        "close_date": (T0 + 90 * DAY).date(),
        "owner_id": "u1",
        "contacts": ("ana@acme.com", "ben@acme.com"),
        "account_domains": ("acme.com",),
    }
    fields.update(kw)
    return DealCreated(event_id=eid(), workspace_id="ws", deal_id=deal_id, occurred_at=T0, **fields)


def email(
    day: float, direction: str, *who: str, deal_id: str = "d1", thread: str = "t1"
) -> EmailLogged:
    return EmailLogged(
        event_id=eid(),
        workspace_id="ws",
        deal_id=deal_id,
        occurred_at=T0 + day * DAY,
        direction=direction,  # type: ignore[arg-type]
        thread_id=thread,
        participants=who or ("ana@acme.com",),
    )


def meeting(
    meeting_id: str, status: str, start_day: float, seen_day: float | None = None, *who: str
) -> MeetingLogged:
    start = T0 + start_day * DAY
    return MeetingLogged(
        event_id=eid(),
        workspace_id="ws",
        deal_id="d1",
        occurred_at=T0 + (start_day if seen_day is None else seen_day) * DAY,
        meeting_id=meeting_id,
        status=status,  # type: ignore[arg-type]
        start=start,
        end=start + DAY / 24,
        attendees=who or ("ana@acme.com",),
    )


def tick(day: float) -> Tick:
    return Tick(at=T0 + day * DAY)


def steps(
    p: PartitionState, *inputs: DealEvent | Tick
) -> list[tuple[RuleName, Lifecycle, Priority]]:
    out = []
    for item in inputs:
        step = p.tick(item) if isinstance(item, Tick) else p.apply(item)
        out += [(i.rule, i.lifecycle, i.priority) for i in step.insights]
    return out


def only(rule: RuleName, got: list[tuple[RuleName, Lifecycle, Priority]]) -> list[Any]:
    return [(lifecycle, priority) for r, lifecycle, priority in got if r is rule]


def state(*events: DealEvent) -> DealState:
    deal: DealState | None = None
    for event in events:
        deal = apply_event(deal, event)
    assert deal is not None
    return deal


# --- the state -----------------------------------------------------------------------------


def test_emails_count_as_activity_and_keep_their_direction() -> None:
    deal = state(created(), email(1, "outbound"), email(2, "outbound"), email(3, "inbound"))
    assert deal.activity_count == 3
    assert deal.last_activity_at_ms == T0_MS + 3 * DAY_MS
    e = deal.engagement
    assert e is not None
    assert (e.last_outbound_ms, e.last_inbound_ms) == (T0_MS + 2 * DAY_MS, T0_MS + 3 * DAY_MS)
    assert (e.unanswered, e.unanswered_since_ms) == (0, 0)  # the reply cleared them
    deal = apply_event(deal, email(4, "outbound"))
    deal = apply_event(deal, email(5, "outbound"))
    assert deal is not None
    assert deal.engagement is not None
    assert (deal.engagement.unanswered, deal.engagement.unanswered_since_ms) == (
        2,
        T0_MS + 4 * DAY_MS,
    )


def test_a_late_outbound_email_older_than_the_reply_is_not_unanswered() -> None:
    deal = state(created(), email(3, "inbound"), email(2, "outbound"))
    assert deal.engagement is not None
    assert deal.engagement.unanswered == 0


def test_an_old_inbound_email_does_not_answer_newer_outbound_ones() -> None:
    deal = state(created(), email(3, "outbound"), email(4, "outbound"), email(1, "inbound"))
    assert deal.engagement is not None
    assert deal.engagement.unanswered == 2


def test_contact_fields_do_not_reach_the_monitor_state() -> None:
    deal = state(created())
    assert deal.engagement is None
    update = DealUpdated(
        event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0,
        changes={"contacts": ("cy@acme.com",)},
    )  # type: ignore[arg-type]  # fmt: skip
    assert apply_event(deal, update) == deal


def test_meetings_scheduled_held_cancelled() -> None:
    deal = state(created(), meeting("m1", "scheduled", 5, 1), meeting("m2", "scheduled", 6, 1))
    e = deal.engagement
    assert e is not None
    assert [start for _, start in e.scheduled] == [T0_MS + 5 * DAY_MS, T0_MS + 6 * DAY_MS]
    assert deal.activity_count == 0  # scheduling is not activity
    deal = apply_event(deal, meeting("m2", "cancelled", 6, 2))  # type: ignore[assignment]
    deal = apply_event(deal, meeting("m1", "held", 5))  # type: ignore[assignment]
    e = deal.engagement
    assert e is not None
    assert e.scheduled == ()
    assert e.held == (T0_MS + 5 * DAY_MS,)
    assert deal.activity_count == 1
    assert deal.last_activity_at_ms == T0_MS + 5 * DAY_MS
    # a redelivered "held" keeps one start; a meeting scheduled in the past is not held off
    deal = apply_event(deal, meeting("m1", "held", 5))  # type: ignore[assignment]
    deal = apply_event(deal, meeting("m3", "scheduled", 4, 6))  # type: ignore[assignment]
    assert deal.engagement == e


def test_kept_meetings_and_contacts_are_bounded() -> None:
    events: list[DealEvent] = [created()]
    events += [meeting(f"m{i}", "held", i, None, f"p{i}@acme.com") for i in range(20)]
    deal = state(*events)
    e = deal.engagement
    assert e is not None
    assert len(e.held) == HELD_KEPT
    assert e.held[-1] == T0_MS + 19 * DAY_MS
    assert len(e.contacts) == CONTACTS_KEPT
    assert {d for d, _ in e.contacts} == {short_digest(f"p{i}@acme.com") for i in range(12, 20)}
    assert short_digest("P19@Acme.com ") == short_digest("p19@acme.com")


# --- the codec -----------------------------------------------------------------------------


def test_a_deal_with_engagement_packs_and_unpacks() -> None:
    deal = state(
        created(),
        email(1, "inbound", "ana@acme.com", "ben@acme.com"),
        email(2, "outbound"),
        meeting("m1", "held", 3),
        meeting("m2", "scheduled", 9, 4),
    )
    data = pack(deal, T0_MS + 7 * DAY_MS)
    assert data[0] == FORMAT
    assert unpack("d1", data) == deal
    assert deadline_of(data) == T0_MS + 7 * DAY_MS
    plain = replace(deal, engagement=None)
    assert len(data) - len(pack(plain, None)) == 28 + 8 + 12 + 2 * 8  # what engagement costs


def test_format_2_bytes_read_and_upgrade() -> None:
    """The monitor of main before this change wrote format 2 (tests/fixtures/changelog-v3.json,
    record version 3): those deals restore, the same state, in the current format."""
    fixture = json.loads((ROOT / "tests/fixtures/changelog-v3.json").read_text("utf-8"))
    records = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in fixture["records"]]
    out = restore(records, fixture["committed"])
    assert out.unreadable == 0
    assert out.clock_ms == fixture["clock_ms"]
    assert out.tick_digests.hex() == fixture["tick_digests"]
    assert {d: [at, out.closed_seen[d].hex()] for d, at in out.closed.items()} == fixture["closed"]
    assert set(out.deals) == set(fixture["deals"])
    for deal_id, want in fixture["deals"].items():
        data = out.deals[deal_id]
        assert data[0] == FORMAT
        deal = unpack(deal_id, data)
        assert deadline_of(data) == want.pop("deadline")
        got = {k: getattr(deal, k) for k in want}
        got["stage"] = deal.stage and deal.stage.value
        got["open"] = [[o.rule.value, o.priority.value, o.raised_at_ms] for o in deal.open]
        got["seen"], got["activity"] = deal.seen.hex(), deal.activity.hex()
        assert got == want
        assert deal.engagement is None
        assert unpack(deal_id, pack(deal, deadline_of(data))) == deal
    raw = bytes.fromhex(fixture["records"][0][1])[10:]  # a packed format 2 deal
    assert raw[0] == 2
    assert upgrade("d-full", raw) == bytes((FORMAT,)) + raw[1:]
    assert unpack("d-full", raw) == unpack("d-full", upgrade("d-full", raw))
    with pytest.raises(ValueError, match="not readable"):
        upgrade("d-full", b"\x09" + raw[1:])


def test_engagement_survives_a_checkpoint_and_restore() -> None:
    live = PartitionState(RulesConfig())
    steps(
        live,
        created(),
        email(1, "outbound"),
        email(2, "outbound"),
        meeting("m", "scheduled", 30, 3),
    )
    restored = restore(checkpoint_records(live, 5), committed=5)
    copy = PartitionState(RulesConfig())
    copy.load(restored.deals, restored.closed, restored.clock_ms)
    assert copy.deals == live.deals
    assert copy.deadlines == live.deadlines


# --- the rules, table-driven ----------------------------------------------------------------

NOW = T0_MS + 40 * DAY_MS


def _deal(engagement: Engagement | None, **kw: Any) -> DealState:
    base = DealState(
        "ws", "d1", "Deal", 50_000, "USD", Stage.PROPOSAL, 80, NOW // DAY_MS + 60, "u1",
        created_at_ms=T0_MS, last_activity_at_ms=NOW, stage_entered_at_ms=NOW,
        engagement=engagement,
    )  # fmt: skip
    return replace(base, **kw)


def _ago(days: float) -> int:
    return NOW - int(days * DAY_MS)


GHOSTING = [
    ("no engagement", None, None),
    (
        "one unanswered email for 10 days",
        Engagement(unanswered_since_ms=_ago(10), unanswered=1),
        None,
    ),
    ("two for exactly 7 days", Engagement(unanswered_since_ms=_ago(7), unanswered=2), None),
    ("two for 7.5 days", Engagement(unanswered_since_ms=_ago(7.5), unanswered=2), Priority.HIGH),
    ("five for 15 days", Engagement(unanswered_since_ms=_ago(15), unanswered=5), Priority.CRITICAL),
    (
        "held off by a meeting tomorrow",
        Engagement(unanswered_since_ms=_ago(10), unanswered=2, scheduled=((1, _ago(-1)),)),
        None,
    ),
    (
        "a meeting that has started holds nothing off",
        Engagement(unanswered_since_ms=_ago(10), unanswered=2, scheduled=((1, NOW),)),
        Priority.HIGH,
    ),
]

CADENCE = [
    ("two meetings only", Engagement(held=(_ago(60), _ago(50))), None),
    ("weekly, last 14 days ago", Engagement(held=(_ago(28), _ago(21), _ago(14))), None),
    ("weekly, last 15 days ago", Engagement(held=(_ago(29), _ago(22), _ago(15))), Priority.MEDIUM),
    ("weekly, last 29 days ago", Engagement(held=(_ago(43), _ago(36), _ago(29))), Priority.HIGH),
    # the median, not the mean: one long gap does not stretch the rhythm
    (
        "median of 1, 1, 20 days is 1",
        Engagement(held=(_ago(25), _ago(24), _ago(23), _ago(3))),
        Priority.MEDIUM,
    ),
]

ONE = ((1, NOW // DAY_MS - 5),)
TWO = ((1, NOW // DAY_MS - 5), (2, NOW // DAY_MS - 2))
SINGLE = [
    ("one contact, proposal", Engagement(contacts=ONE), {}, Priority.MEDIUM),
    (
        "one contact, negotiation",
        Engagement(contacts=ONE),
        {"stage": Stage.NEGOTIATION},
        Priority.HIGH,
    ),
    ("two contacts", Engagement(contacts=TWO), {}, None),
    (
        "second contact out of the window",
        Engagement(contacts=((2, NOW // DAY_MS - 30), *ONE)),
        {},
        Priority.MEDIUM,
    ),
    ("no contact engaged", Engagement(contacts=((1, NOW // DAY_MS - 31),)), {}, None),
    ("small deal", Engagement(contacts=ONE), {"value": 10_000}, None),
    ("qualified", Engagement(contacts=ONE), {"stage": Stage.QUALIFIED}, None),
]


@pytest.mark.parametrize(
    ("engagement", "want"), [c[1:] for c in GHOSTING], ids=[c[0] for c in GHOSTING]
)
def test_ghosting(engagement: Engagement | None, want: Priority | None) -> None:
    assert fired(_deal(engagement), NOW, TH).get(RuleName.GHOSTING) is want


@pytest.mark.parametrize(
    ("engagement", "want"), [c[1:] for c in CADENCE], ids=[c[0] for c in CADENCE]
)
def test_meeting_cadence_drop(engagement: Engagement, want: Priority | None) -> None:
    assert fired(_deal(engagement), NOW, TH).get(RuleName.MEETING_CADENCE_DROP) is want


@pytest.mark.parametrize(
    ("engagement", "kw", "want"), [c[1:] for c in SINGLE], ids=[c[0] for c in SINGLE]
)
def test_single_threaded(engagement: Engagement, kw: dict[str, Any], want: Priority | None) -> None:
    assert fired(_deal(engagement, **kw), NOW, TH).get(RuleName.SINGLE_THREADED) is want


def test_a_scheduled_meeting_holds_off_stale_deal_until_it_starts() -> None:
    quiet = _deal(None, last_activity_at_ms=_ago(10))
    assert RuleName.STALE_DEAL in fired(quiet, NOW, TH)
    held_off = replace(quiet, engagement=Engagement(scheduled=((1, _ago(-2)),)))
    assert RuleName.STALE_DEAL not in fired(held_off, NOW, TH)
    assert next_deadline(held_off, NOW, TH) == _ago(-2)
    assert BY_NAME[RuleName.STALE_DEAL].next_deadline(held_off, NOW, TH) == _ago(-2)
    assert RuleName.STALE_DEAL in fired(held_off, _ago(-2), TH)


def test_thresholds_come_from_the_rules_file() -> None:
    th = RuleThresholds(ghosting_days=3, meeting_cadence_ratio=1.5, single_threaded_days=3)
    ghost = _deal(Engagement(unanswered_since_ms=_ago(4), unanswered=2))
    assert RuleName.GHOSTING in fired(ghost, NOW, th)
    assert RuleName.GHOSTING not in fired(ghost, NOW, TH)
    rhythm = _deal(Engagement(held=(_ago(34), _ago(27), _ago(20), _ago(11))))
    assert RuleName.MEETING_CADENCE_DROP in fired(rhythm, NOW, th)
    assert RuleName.MEETING_CADENCE_DROP not in fired(rhythm, NOW, TH)
    assert RuleName.SINGLE_THREADED not in fired(_deal(Engagement(contacts=ONE)), NOW, th)
    with pytest.raises(ConfigError, match="ghosting_critical_days must be greater"):
        RuleThresholds(ghosting_days=20)


# --- each rule raised, escalated and resolved in a partition --------------------------------


def test_ghosting_raised_escalated_resolved() -> None:
    p = PartitionState(RulesConfig())
    got = steps(p, created(), email(0, "outbound"), email(1, "outbound"))
    got += steps(p, *(tick(d) for d in range(2, 16)), email(16, "inbound"))
    assert only(RuleName.GHOSTING, got) == [
        (Lifecycle.RAISED, Priority.HIGH),  # at day 7 + 1 ms after the first email: day 8
        (Lifecycle.ESCALATED, Priority.CRITICAL),
        (Lifecycle.RESOLVED, Priority.CRITICAL),
    ]


def test_a_scheduled_meeting_holds_off_ghosting_and_stale_until_it_starts() -> None:
    p = PartitionState(RulesConfig())
    got = steps(p, created(), email(0, "outbound"), email(1, "outbound"))
    got += steps(p, meeting("m1", "scheduled", 12, 1.5))
    got += steps(p, *(tick(d) for d in range(2, 12)))
    assert only(RuleName.GHOSTING, got) == only(RuleName.STALE_DEAL, got) == []
    got = steps(p, tick(12))
    assert (RuleName.GHOSTING, Lifecycle.RAISED, Priority.HIGH) in got
    assert (RuleName.STALE_DEAL, Lifecycle.RAISED, Priority.HIGH) in got


def test_cancelling_the_meeting_ends_the_hold_off() -> None:
    p = PartitionState(RulesConfig())
    steps(
        p,
        created(),
        email(0, "outbound"),
        email(1, "outbound"),
        meeting("m1", "scheduled", 12, 1.5),
    )
    assert only(RuleName.GHOSTING, steps(p, tick(9))) == []
    got = steps(p, meeting("m1", "cancelled", 12, 9.5))
    assert (RuleName.GHOSTING, Lifecycle.RAISED, Priority.HIGH) in got


def test_meeting_cadence_drop_raised_escalated_resolved() -> None:
    p = PartitionState(RulesConfig())
    got = steps(p, created(), *(meeting(f"m{i}", "held", 7 * i) for i in range(3)))
    got += steps(p, *(tick(d) for d in range(15, 45)))
    got += steps(p, meeting("m3", "held", 45))
    assert only(RuleName.MEETING_CADENCE_DROP, got) == [
        (Lifecycle.RAISED, Priority.MEDIUM),
        (Lifecycle.ESCALATED, Priority.HIGH),
        (Lifecycle.RESOLVED, Priority.HIGH),
    ]


def test_single_threaded_raised_escalated_resolved() -> None:
    p = PartitionState(RulesConfig())
    got = steps(p, created(), email(0, "inbound", "ana@acme.com"))
    to_negotiation = DealUpdated(
        event_id=eid(), workspace_id="ws", deal_id="d1", occurred_at=T0 + DAY,
        changes={"stage": "negotiation"},
    )  # type: ignore[arg-type]  # fmt: skip
    got += steps(p, to_negotiation, meeting("m1", "held", 2, None, "ana@acme.com", "cy@acme.com"))
    assert only(RuleName.SINGLE_THREADED, got) == [
        (Lifecycle.RAISED, Priority.MEDIUM),
        (Lifecycle.ESCALATED, Priority.HIGH),
        (Lifecycle.RESOLVED, Priority.HIGH),
    ]


def test_single_threaded_fires_when_a_contact_leaves_the_window() -> None:
    """No event: the second contact's last engagement ages out (the rule's deadline)."""
    p = PartitionState(RulesConfig())
    got = steps(
        p,
        created(),
        email(0, "inbound", "ana@acme.com", "ben@acme.com"),
        email(10, "inbound", "ben@acme.com"),
    )
    assert only(RuleName.SINGLE_THREADED, got) == []
    got = steps(p, *(tick(d) for d in range(11, 32)))
    assert only(RuleName.SINGLE_THREADED, got) == [(Lifecycle.RAISED, Priority.MEDIUM)]
    assert p.clock_ms >= T0_MS + 30 * DAY_MS
