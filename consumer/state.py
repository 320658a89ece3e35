"""Per-deal state and how deal events change it: pure functions, no I/O, no clock.

Times are integer milliseconds since the epoch (UTC); the close date is an integer day number
(days since 1970-01-01). Integers keep the state small and the arithmetic exact.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import NamedTuple

from schemas.events import (
    ActivityLogged,
    DealCreated,
    DealEvent,
    DealFields,
    DealUpdated,
    Stage,
)
from schemas.insights import Priority, RuleName

DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)

HISTORY_DAYS = 90
"""How many days of activity history a deal keeps (before its most recent activity day)."""
_ENTRY = struct.Struct("<HB")
ENTRY_SIZE = _ENTRY.size


def to_ms(ts: dt.datetime) -> int:
    """An aware datetime as integer epoch milliseconds."""
    return int(ts.timestamp() * 1000)


def to_day(d: dt.date) -> int:
    return (d - _EPOCH).days


def from_day(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=day)


class OpenInsight(NamedTuple):
    """One open insight on a deal: at most one per rule. (Named tuples rather than frozen
    dataclasses for the small records of the hot path: ~5x cheaper to create.)"""

    rule: RuleName
    priority: Priority
    raised_at_ms: int


@dataclass(slots=True)
class DealState:
    """What the monitor knows about one open deal.

    Fields from the CRM may be unknown (``None``) when the monitor first hears of a deal through a
    partial update; rules that need an unknown field do not fire.

    Treated as immutable: every transition returns a new instance and nothing assigns to a field
    after construction. It is not ``frozen`` only because a frozen dataclass's ``__init__`` costs
    ~4 µs against ~0.8 µs, on the hot path of every event.
    """

    workspace_id: str
    deal_id: str
    title: str | None = None
    value: float | None = None
    currency: str | None = None
    stage: Stage | None = None
    probability: float | None = None
    close_day: int | None = None
    owner_id: str | None = None
    owner_name: str | None = None
    company: str | None = None
    created_at_ms: int = 0
    last_activity_at_ms: int = 0
    stage_entered_at_ms: int = 0
    activity_count: int = 0
    open: tuple[OpenInsight, ...] = ()
    seen: bytes = b""  # digests of the most recent event ids (``consumer.partition``)
    activity: bytes = b""  # activity history: ``activity_days`` reads it
    last_event_at_ms: int = 0
    """When the monitor last heard of the deal (set by ``consumer.partition``); kept only while
    the deal is ``partial`` (0 otherwise): it decides when a never-identified deal is dropped."""

    @property
    def partial(self) -> bool:
        """Known only from partial updates: never given a stage or a value."""
        return self.stage is None and self.value is None

    def open_insight(self, rule: RuleName) -> OpenInsight | None:
        for item in self.open:
            if item.rule is rule:
                return item
        return None


def copy_state(b: DealState) -> DealState:
    """A new instance with the same fields (positional: ~5x cheaper than ``replace``)."""
    return DealState(
        b.workspace_id,
        b.deal_id,
        b.title,
        b.value,
        b.currency,
        b.stage,
        b.probability,
        b.close_day,
        b.owner_id,
        b.owner_name,
        b.company,
        b.created_at_ms,
        b.last_activity_at_ms,
        b.stage_entered_at_ms,
        b.activity_count,
        b.open,
        b.seen,
        b.activity,
        b.last_event_at_ms,
    )


def _merge_fields(state: DealState, fields: DealFields | DealCreated, at_ms: int) -> DealState:
    names = [name for name in fields.model_fields_set if name in _DEAL_FIELD_NAMES]
    if not names:
        return state
    new = copy_state(state)  # not shared yet: setting its fields keeps states immutable
    for name in names:
        value = getattr(fields, name)
        if name == "close_date":
            new.close_day = None if value is None else to_day(value)
        else:
            setattr(new, name, value)
    if new.stage is not None and new.stage != state.stage:
        new.stage_entered_at_ms = at_ms
    return new


_DEAL_FIELD_NAMES = frozenset(DealFields.model_fields)


def new_deal(event: DealEvent, at_ms: int | None = None) -> DealState:
    """A state for a deal the monitor has not seen before; the event's time starts its clocks."""
    at = to_ms(event.occurred_at) if at_ms is None else at_ms
    return DealState(
        workspace_id=event.workspace_id,
        deal_id=event.deal_id,
        created_at_ms=at,
        last_activity_at_ms=at,
        stage_entered_at_ms=at,
    )


def apply_event(
    state: DealState | None, event: DealEvent, at_ms: int | None = None
) -> DealState | None:
    """The next state of a deal after ``event``; ``None`` means the deal is gone (closed/deleted).

    Applying the same event twice gives the same state (except ``activity_count``), so a
    redelivery that slips past de-duplication changes nothing that rules read.
    """
    if event.type in ("deal.closed", "deal.deleted"):
        return None
    at = to_ms(event.occurred_at) if at_ms is None else at_ms  # the caller may know it already
    base = state if state is not None else new_deal(event, at)
    if isinstance(event, DealCreated):
        return _merge_fields(base, event, at)
    if isinstance(event, DealUpdated):
        return _merge_fields(base, event.changes, at)
    if isinstance(event, ActivityLogged):
        new = copy_state(base)  # not shared yet: setting its fields keeps states immutable
        new.last_activity_at_ms = max(base.last_activity_at_ms, at)
        new.activity_count = base.activity_count + 1
        new.activity = record_activity(base.activity, at // DAY_MS)
        return new
    raise AssertionError(f"unhandled event type {event.type}")  # pragma: no cover


iter_activity = _ENTRY.iter_unpack
"""``(day, activities that day)`` of a deal's activity history, oldest first, lazily."""


def activity_days(history: bytes) -> list[tuple[int, int]]:
    """``(day, activities that day)`` of a deal's activity history, oldest first."""
    return [(day, count) for day, count in _ENTRY.iter_unpack(history)]


def record_activity(history: bytes, day: int) -> bytes:
    """``history`` with one more activity on ``day``: compact (3 bytes per day with activity,
    ``<HB`` day number and count, saturating at 255) and bounded (days more than
    ``HISTORY_DAYS`` before the newest one are dropped, so at most ``HISTORY_DAYS + 1``
    entries). A day outside ``0..65535`` (before 1970 or after 2149) is not recorded."""
    if not 0 <= day <= 0xFFFF:
        return history
    if history:
        last_day, last_count = _ENTRY.unpack_from(history, len(history) - ENTRY_SIZE)
        if day == last_day:  # the common case: another activity today
            if last_count == 255:
                return history
            return history[:-1] + bytes((last_count + 1,))
        if day > last_day and day - HISTORY_DAYS <= _ENTRY.unpack_from(history)[0]:
            return history + _ENTRY.pack(day, 1)  # a new day, nothing ages out
    counts = dict(activity_days(history))
    counts[day] = min(counts.get(day, 0) + 1, 255)
    horizon = max(counts) - HISTORY_DAYS
    return b"".join(_ENTRY.pack(d, c) for d, c in sorted(counts.items()) if d >= horizon)
