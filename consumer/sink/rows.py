"""The rows the sink writes and the rules that merge them (pure: no I/O). See ``store``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final

from pydantic import TypeAdapter

from schemas.insights import (
    InsightAction,
    InsightEvent,
    Lifecycle,
    MetricValue,
    insight_adapter,
)


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where an event was read: recorded with its history row.

    ``raw`` is the record's value the event was decoded from, stored as the history row's
    payload as it is (no second serialisation); without it (an event not read from Kafka) the
    event is serialised. It takes no part in comparisons.
    """

    topic: str
    partition: int
    offset: int
    raw: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class WriteResult:
    events: int = 0
    """Events in the batch."""
    events_inserted: int = 0
    """New ``insight_events`` rows (redeliveries and replays add none)."""
    insights_written: int = 0
    """``insights`` row writes that changed something (a no-op merge is not counted; a row
    merged and then enriched in the same batch counts twice)."""

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.events + other.events,
            self.events_inserted + other.events_inserted,
            self.insights_written + other.insights_written,
        )


# ``enriched`` ranks below everything: as a candidate row (which ``write_batch`` never writes,
# see ``apply_enrichment``) it loses every merge against a real lifecycle step.
STATE_RANK: Final[dict[Lifecycle, int]] = {
    Lifecycle.ENRICHED: -1,
    Lifecycle.RAISED: 0,
    Lifecycle.ESCALATED: 1,
    Lifecycle.RESOLVED: 2,
}
CONTENT_RANK: Final[dict[Lifecycle, int]] = {
    Lifecycle.ENRICHED: -1,
    Lifecycle.RESOLVED: 0,
    Lifecycle.RAISED: 1,
    Lifecycle.ESCALATED: 2,
}
# Content versions an enrichment may apply to: those of raised and escalated events.
ENRICHABLE_CONTENT_RANK: Final = CONTENT_RANK[Lifecycle.RAISED]

OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class InsightRow:
    """One ``insights`` row as the sink writes it (json columns as JSON text)."""

    # identity: fixed for an insight_id
    insight_id: str
    workspace_id: str
    deal_id: str
    rule: str
    # content: from the event with the greatest (content_rank, content_detected_at)
    type: str
    priority: str
    priority_rank: int
    title: str
    description: str
    actions: str
    key_metrics: str
    data: str
    confidence: float
    source: str
    rule_title: str
    rule_description: str
    content_rank: int
    content_detected_at: datetime
    # state: from the event with the greatest (state_rank, detected_at)
    status: str
    lifecycle: str
    detected_at: datetime
    resolved_at: datetime | None
    state_rank: int
    # the episode's start: the earliest seen
    raised_at: datetime

    def state_version(self) -> tuple[int, datetime]:
        return (self.state_rank, self.detected_at)

    def content_version(self) -> tuple[int, datetime]:
        return (self.content_rank, self.content_detected_at)


IDENTITY_COLUMNS: Final = ("insight_id", "workspace_id", "deal_id", "rule")
CONTENT_COLUMNS: Final = (
    "type",
    "priority",
    "priority_rank",
    "title",
    "description",
    "actions",
    "key_metrics",
    "data",
    "confidence",
    "source",
    "rule_title",
    "rule_description",
    "content_rank",
    "content_detected_at",
)
STATE_COLUMNS: Final = ("status", "lifecycle", "detected_at", "resolved_at", "state_rank")


@dataclass(frozen=True, slots=True)
class EventRow:
    """One ``insight_events`` row."""

    insight_id: str
    lifecycle: str
    detected_at: datetime
    workspace_id: str
    deal_id: str
    rule: str
    priority: str
    source: str
    payload: str
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int

    @property
    def key(self) -> tuple[str, str, datetime]:
        return (self.insight_id, self.lifecycle, self.detected_at)


_ACTIONS: TypeAdapter[list[InsightAction]] = TypeAdapter(list[InsightAction])
_METRICS: TypeAdapter[dict[str, MetricValue]] = TypeAdapter(dict[str, MetricValue])

# PostgreSQL text cannot hold NUL and jsonb rejects "\u0000": both become U+FFFD. In JSON text,
# an escape is "\u0000" preceded by an even number of backslashes ("\\u0000" is a backslash
# followed by the letters u0000, and must stay).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def pg_text(value: str) -> str:
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def pg_json(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def payload_json(event: InsightEvent, position: SourcePosition) -> bytes:
    """The JSON of the whole event for the history row: the bytes it was read from, if known."""
    return position.raw if position.raw is not None else insight_adapter.dump_json(event)


def insight_row(event: InsightEvent) -> InsightRow:
    """The candidate ``insights`` row of one event, before merging."""
    resolved = event.lifecycle is Lifecycle.RESOLVED
    title = pg_text(event.title)
    description = pg_text(event.description)
    return InsightRow(
        insight_id=pg_text(event.insight_id),
        workspace_id=pg_text(event.workspace_id),
        deal_id=pg_text(event.deal_id),
        rule=event.rule.value,
        type=event.type.value,
        priority=event.priority.value,
        priority_rank=event.priority.rank,
        title=title,
        description=description,
        actions=pg_json(_ACTIONS.dump_json(event.actions)),
        key_metrics=pg_json(_METRICS.dump_json(event.data.key_metrics)),
        data=pg_json(event.data.model_dump_json()),
        confidence=event.confidence,
        source=pg_text(event.source),
        rule_title=title,
        rule_description=description,
        content_rank=CONTENT_RANK[event.lifecycle],
        content_detected_at=event.detected_at,
        status=RESOLVED if resolved else OPEN,
        lifecycle=event.lifecycle.value,
        detected_at=event.detected_at,
        resolved_at=event.detected_at if resolved else None,
        state_rank=STATE_RANK[event.lifecycle],
        raised_at=event.raised_at,
    )


@dataclass(frozen=True, slots=True)
class EnrichmentRow:
    """What an ``enriched`` event changes: the shown text of one content version."""

    insight_id: str
    detected_at: datetime
    priority: str
    title: str
    description: str
    actions: str
    source: str

    @property
    def key(self) -> tuple[str, datetime, str]:
        """The content version it belongs to."""
        return (self.insight_id, self.detected_at, self.priority)


def enrichment_row(event: InsightEvent) -> EnrichmentRow:
    return EnrichmentRow(
        insight_id=pg_text(event.insight_id),
        detected_at=event.detected_at,
        priority=event.priority.value,
        title=pg_text(event.title),
        description=pg_text(event.description),
        actions=pg_json(_ACTIONS.dump_json(event.actions)),
        source=pg_text(event.source),
    )


def apply_enrichment(row: InsightRow, enrichment: EnrichmentRow) -> InsightRow:
    """``row`` with the enriched text if it belongs to the row's current content version."""
    if (
        row.insight_id != enrichment.insight_id
        or row.content_rank < ENRICHABLE_CONTENT_RANK
        or row.content_detected_at != enrichment.detected_at
        or row.priority != enrichment.priority
    ):
        return row
    return replace(
        row,
        title=enrichment.title,
        description=enrichment.description,
        actions=enrichment.actions,
        source=enrichment.source,
    )


def unique_enrichments(rows: Iterable[EnrichmentRow]) -> list[EnrichmentRow]:
    """One enrichment per content version (the last one), ordered by insight_id."""
    unique: dict[tuple[str, datetime, str], EnrichmentRow] = {}
    for row in rows:
        unique[row.key] = row
    return sorted(unique.values(), key=lambda r: (r.insight_id, r.detected_at, r.priority))


def split_enrichments(
    events: Sequence[tuple[InsightEvent, SourcePosition]],
) -> tuple[list[tuple[InsightEvent, SourcePosition]], list[EnrichmentRow]]:
    """The lifecycle steps that make rows, and the enrichments (applied after them)."""
    steps = [(e, p) for e, p in events if e.lifecycle is not Lifecycle.ENRICHED]
    enrichments = [enrichment_row(e) for e, _ in events if e.lifecycle is Lifecycle.ENRICHED]
    return steps, unique_enrichments(enrichments)


def event_row(event: InsightEvent, position: SourcePosition) -> EventRow:
    return EventRow(
        insight_id=pg_text(event.insight_id),
        lifecycle=event.lifecycle.value,
        detected_at=event.detected_at,
        workspace_id=pg_text(event.workspace_id),
        deal_id=pg_text(event.deal_id),
        rule=event.rule.value,
        priority=event.priority.value,
        source=pg_text(event.source),
        payload=pg_json(payload_json(event, position)),
        kafka_topic=position.topic,
        kafka_partition=position.partition,
        kafka_offset=position.offset,
    )


def merge_rows(current: InsightRow, new: InsightRow) -> InsightRow:
    """``current`` updated by ``new`` (same insight_id): a per-group maximum, see the module."""
    merged = current
    if new.state_version() > current.state_version():
        merged = replace(merged, **{name: getattr(new, name) for name in STATE_COLUMNS})
    if new.content_version() > current.content_version():
        merged = replace(merged, **{name: getattr(new, name) for name in CONTENT_COLUMNS})
    if new.raised_at < current.raised_at:
        merged = replace(merged, raised_at=new.raised_at)
    return merged


def fold_rows(rows: Iterable[InsightRow]) -> dict[str, InsightRow]:
    """Merge the candidate rows of a batch into one per insight_id."""
    folded: dict[str, InsightRow] = {}
    for row in rows:
        current = folded.get(row.insight_id)
        folded[row.insight_id] = row if current is None else merge_rows(current, row)
    return folded


def unique_events(rows: Iterable[EventRow]) -> dict[tuple[str, str, datetime], EventRow]:
    """The first row of each history key."""
    unique: dict[tuple[str, str, datetime], EventRow] = {}
    for row in rows:
        unique.setdefault(row.key, row)
    return unique
