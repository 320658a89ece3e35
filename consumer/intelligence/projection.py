"""A deal's history, folded from its events: the projection ``vectoros history`` keeps.

``fold(events)`` is a pure function of the *set* of a deal's events: they are sorted by
``(occurred_at, event_id)`` first, so the order they arrived in, duplicates and replays change
nothing. Times are integer milliseconds since the epoch (UTC).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.events import (
    ActivityLogged,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealUpdated,
)

DAY_MS = 86_400_000


def to_ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(slots=True)
class StageSpell:
    """One stay in a stage: entered, and left (``None`` while the deal is still there)."""

    stage: str
    entered_ms: int
    left_ms: int | None = None

    def days(self) -> float | None:
        return None if self.left_ms is None else (self.left_ms - self.entered_ms) / DAY_MS


@dataclass(slots=True)
class Activity:
    at_ms: int
    type: str
    direction: str | None = None


@dataclass(slots=True)
class DealHistory:
    """Everything known about one deal, current fields and how they got there."""

    workspace_id: str
    deal_id: str
    source: str = "events"  # "events" (from deal-events) or "import" (a CRM export)
    title: str | None = None
    value: float | None = None
    currency: str | None = None
    stage: str | None = None
    probability: float | None = None
    close_date: dt.date | None = None
    owner_id: str | None = None
    owner_name: str | None = None
    company: str | None = None
    created_ms: int | None = None
    updated_ms: int | None = None
    outcome: str | None = None  # "won" / "lost" / None while open
    closed_ms: int | None = None
    close_reason: str | None = None
    deleted_ms: int | None = None
    stages: list[StageSpell] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    close_date_changes: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    value_changes: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    probabilities: list[tuple[int, float]] = field(default_factory=list)
    attributes: dict[str, str | float] = field(default_factory=dict)
    event_count: int = 0

    def activity_counts(self) -> dict[str, int]:
        """``{"email:inbound": 3, "meeting": 1, ...}``: by type, and direction when known."""
        counts = Counter(
            a.type if a.direction is None else f"{a.type}:{a.direction}" for a in self.activities
        )
        return dict(sorted(counts.items()))

    def close_date_pushes(self) -> int:
        """Close-date changes that moved it later."""
        return sum(1 for _, old, new in self.close_date_changes if old and new and new > old)

    def _enter(self, stage: str, at: int) -> None:
        if self.stages and self.stages[-1].left_ms is None:
            if self.stages[-1].stage == stage:
                return
            self.stages[-1].left_ms = at
        self.stages.append(StageSpell(stage, at))

    def _leave(self, at: int) -> None:
        if self.stages and self.stages[-1].left_ms is None:
            self.stages[-1].left_ms = at


def _sort_key(event: DealEvent) -> tuple[int, str]:
    return to_ms(event.occurred_at), event.event_id


def fold(events: Iterable[DealEvent]) -> DealHistory | None:
    """The history of one deal from its events (any order, duplicates allowed); ``None`` if
    there are none. Every event must be of the same deal."""
    unique = {e.event_id: e for e in events}
    ordered = sorted(unique.values(), key=_sort_key)
    if not ordered:
        return None
    first = ordered[0]
    h = DealHistory(workspace_id=first.workspace_id, deal_id=first.deal_id)
    for event in ordered:
        apply(h, event)
    return h


def apply(h: DealHistory, event: DealEvent) -> None:
    """One event onto ``h`` (events must come in ``(occurred_at, event_id)`` order)."""
    at = to_ms(event.occurred_at)
    h.event_count += 1
    h.updated_ms = at if h.updated_ms is None else max(h.updated_ms, at)
    if isinstance(event, DealCreated):
        if h.created_ms is None:
            h.created_ms = at
        h.title, h.value, h.currency = event.title, event.value, event.currency
        h.owner_id, h.owner_name, h.company = event.owner_id, event.owner_name, event.company
        h.close_date = event.close_date
        h.stage = event.stage.value
        h._enter(event.stage.value, at)
        h.probability = event.probability
        h.probabilities.append((at, event.probability))
    elif isinstance(event, DealUpdated):
        _update(h, event, at)
    elif isinstance(event, ActivityLogged):
        direction = None if event.direction is None else event.direction.value
        h.activities.append(Activity(at, event.activity_type.value, direction))
    elif isinstance(event, DealClosed):
        if h.outcome is None:
            h.outcome, h.closed_ms, h.close_reason = event.outcome.value, at, event.reason
            if event.value is not None and event.value != h.value:
                h.value_changes.append((at, h.value, event.value))
                h.value = event.value
            h._leave(at)
    elif isinstance(event, DealDeleted):
        if h.deleted_ms is None:
            h.deleted_ms = at
        h._leave(at)


def _update(h: DealHistory, event: DealUpdated, at: int) -> None:
    changes = event.changes
    given = changes.model_fields_set
    if h.created_ms is None:  # updates of a deal whose creation was never seen
        h.created_ms = at
    if "stage" in given:
        if changes.stage is None:
            h._leave(at)
            h.stage = None
        else:
            h.stage = changes.stage.value
            h._enter(changes.stage.value, at)
    if "close_date" in given and changes.close_date != h.close_date:
        old = None if h.close_date is None else h.close_date.isoformat()
        new = None if changes.close_date is None else changes.close_date.isoformat()
        h.close_date_changes.append((at, old, new))
        h.close_date = changes.close_date
    if "value" in given and changes.value != h.value:
        h.value_changes.append((at, h.value, changes.value))
        h.value = changes.value
    if "probability" in given and changes.probability is not None:
        h.probabilities.append((at, changes.probability))
    if "probability" in given:
        h.probability = changes.probability
    for name in ("title", "currency", "owner_id", "owner_name", "company"):
        if name in given:
            setattr(h, name, getattr(changes, name))


def to_json(h: DealHistory) -> dict[str, Any]:
    """The jsonb columns of the projection's row."""
    return {
        "stage_history": [
            {"stage": s.stage, "entered_ms": s.entered_ms, "left_ms": s.left_ms} for s in h.stages
        ],
        "activities": [
            {"at_ms": a.at_ms, "type": a.type, "direction": a.direction} for a in h.activities
        ],
        "activity_counts": h.activity_counts(),
        "close_date_changes": [
            {"at_ms": at, "from": old, "to": new} for at, old, new in h.close_date_changes
        ],
        "value_changes": [
            {"at_ms": at, "from": old, "to": new} for at, old, new in h.value_changes
        ],
        "probability_history": [{"at_ms": at, "probability": p} for at, p in h.probabilities],
        "attributes": dict(h.attributes),
    }


def from_json(base: DealHistory, data: dict[str, Any]) -> DealHistory:
    """``base`` (the scalar columns) completed with the jsonb columns of ``to_json``."""
    base.stages = [
        StageSpell(s["stage"], s["entered_ms"], s["left_ms"]) for s in data["stage_history"]
    ]
    base.activities = [Activity(a["at_ms"], a["type"], a["direction"]) for a in data["activities"]]
    base.close_date_changes = [(c["at_ms"], c["from"], c["to"]) for c in data["close_date_changes"]]
    base.value_changes = [(c["at_ms"], c["from"], c["to"]) for c in data["value_changes"]]
    base.probabilities = [(p["at_ms"], p["probability"]) for p in data["probability_history"]]
    base.attributes = dict(data["attributes"])
    return base
