"""Where the sink writes insight events: the ``InsightStore`` protocol, PostgreSQL and a fake.

Writes are idempotent and order-robust. Each event becomes

* at most one ``insight_events`` row, keyed by (insight_id, lifecycle, detected_at): a
  redelivered or replayed event inserts nothing (the first position read is kept);
* a candidate ``insights`` row, merged into the current one column group by column group
  (``merge_rows``): the status columns come from the event with the greatest
  (state rank, detected_at) with raised < escalated < resolved, the content columns from the
  one with the greatest (content rank, detected_at) with resolved < raised < escalated.
  Taking a maximum is idempotent, commutative and associative, so a whole-topic replay, a
  batch written twice or a late ``raised`` after its ``resolved`` leave the row as it is.

An ``enriched`` event (model-written text, see ``schemas.insights``) never makes a row of its
own. It replaces ``title``, ``description``, ``actions`` and ``source`` of the existing row only
when it belongs to the row's current content version: the content comes from a ``raised`` or
``escalated`` event (not a ``resolved`` one) with the same ``detected_at`` and ``priority``.
``rule_title``/``rule_description`` keep the rule text as the fallback. An enrichment of an
older version (the insight was escalated since) changes nothing, and a later escalation
replaces the enriched text with its own rule text until that is enriched in turn. In a batch,
enrichments are applied after the other events are merged; since the enricher publishes an
enriched event after the event it enriches, on the same key (so the same partition), that is
the order the events have on the topic. Replays and redeliveries of either kind change nothing.

The PostgreSQL store folds a batch per insight_id with the same ``merge_rows`` and runs one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` whose CASEs are that merge in SQL; the
in-memory store applies ``merge_rows`` directly. The integration tests check that both agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Final, Protocol

from pydantic import TypeAdapter

from schemas.insights import InsightAction, InsightEvent, Lifecycle, MetricValue
from vectoros.db import PgPool


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where an event was read: recorded with its history row."""

    topic: str
    partition: int
    offset: int


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


class InsightStore(Protocol):
    async def write_batch(
        self, events: Sequence[tuple[InsightEvent, SourcePosition]]
    ) -> WriteResult:
        """Write the batch atomically (all or nothing); idempotent and order-robust."""
        ...


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
        payload=pg_json(event.model_dump_json()),
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


class InMemoryInsightStore:
    """The fake store of the unit tests: the same merge, in dictionaries.

    ``fail_with`` holds exceptions to raise on the next calls (one per call, nothing written),
    to simulate an unavailable database.
    """

    def __init__(self) -> None:
        self.insights: dict[str, InsightRow] = {}
        self.events: dict[tuple[str, str, datetime], EventRow] = {}
        self.fail_with: list[BaseException] = []
        self.calls = 0

    async def write_batch(
        self, events: Sequence[tuple[InsightEvent, SourcePosition]]
    ) -> WriteResult:
        self.calls += 1
        if self.fail_with:
            raise self.fail_with.pop(0)
        inserted = 0
        for key, erow in unique_events(event_row(e, p) for e, p in events).items():
            if key not in self.events:
                self.events[key] = erow
                inserted += 1
        steps, enrichments = split_enrichments(events)
        written = 0
        for insight_id, row in fold_rows(insight_row(e) for e, _ in steps).items():
            current = self.insights.get(insight_id)
            merged = row if current is None else merge_rows(current, row)
            if merged != current:
                self.insights[insight_id] = merged
                written += 1
        for enrichment in enrichments:
            found = self.insights.get(enrichment.insight_id)
            if found is not None and (enriched := apply_enrichment(found, enrichment)) != found:
                self.insights[enrichment.insight_id] = enriched
                written += 1
        return WriteResult(len(events), inserted, written)


# --- PostgreSQL -------------------------------------------------------------------------------

_INSIGHT_COLUMNS: Final = tuple(f.name for f in fields(InsightRow))
_EVENT_COLUMNS: Final = tuple(f.name for f in fields(EventRow))
_JSON_COLUMNS: Final = frozenset({"actions", "key_metrics", "data", "payload"})
_ARRAY_TYPES: Final = {
    "priority_rank": "smallint[]",
    "content_rank": "smallint[]",
    "state_rank": "smallint[]",
    "confidence": "float8[]",
    "content_detected_at": "timestamptz[]",
    "detected_at": "timestamptz[]",
    "resolved_at": "timestamptz[]",
    "raised_at": "timestamptz[]",
    "kafka_partition": "int4[]",
    "kafka_offset": "int8[]",
}


def _unnest_insert(table: str, columns: tuple[str, ...]) -> str:
    """``INSERT INTO table (...) SELECT ... FROM unnest($1::type[], ...)``: one array per column.

    Only constant identifiers go into the text; every value is a parameter.
    """
    arrays = ", ".join(
        f"${i}::{_ARRAY_TYPES.get(name, 'text[]')}" for i, name in enumerate(columns, start=1)
    )
    selected = ", ".join(f"{n}::jsonb" if n in _JSON_COLUMNS else n for n in columns)
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table} AS cur ({names})\n"
        f"SELECT {selected}\nFROM unnest({arrays}) AS new({names})\n"
    )


def _upsert_insights_sql() -> str:
    newer_state = "(EXCLUDED.state_rank, EXCLUDED.detected_at) > (cur.state_rank, cur.detected_at)"
    newer_content = (
        "(EXCLUDED.content_rank, EXCLUDED.content_detected_at)"
        " > (cur.content_rank, cur.content_detected_at)"
    )
    sets = [
        f"{name} = CASE WHEN {newer_state} THEN EXCLUDED.{name} ELSE cur.{name} END"
        for name in STATE_COLUMNS
    ]
    sets += [
        f"{name} = CASE WHEN {newer_content} THEN EXCLUDED.{name} ELSE cur.{name} END"
        for name in CONTENT_COLUMNS
    ]
    sets += ["raised_at = LEAST(cur.raised_at, EXCLUDED.raised_at)", "updated_at = now()"]
    return (
        _unnest_insert("insights", _INSIGHT_COLUMNS)
        + "ON CONFLICT (insight_id) DO UPDATE SET\n    "
        + ",\n    ".join(sets)
        + f"\nWHERE {newer_state}\n   OR {newer_content}\n   OR EXCLUDED.raised_at < cur.raised_at"
    )


_ENRICHMENT_COLUMNS: Final = tuple(f.name for f in fields(EnrichmentRow))

# The same rule as ``apply_enrichment``; a row that already shows this text is not counted.
ENRICH_INSIGHTS_SQL: Final = f"""
UPDATE insights AS cur
   SET title = new.title, description = new.description, actions = new.actions::jsonb,
       source = new.source, updated_at = now()
  FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::text[]) AS new({", ".join(_ENRICHMENT_COLUMNS)})
 WHERE cur.insight_id = new.insight_id
   AND cur.content_rank >= {ENRICHABLE_CONTENT_RANK}
   AND cur.content_detected_at = new.detected_at
   AND cur.priority = new.priority
   AND (cur.title, cur.description, cur.actions, cur.source)
       IS DISTINCT FROM (new.title, new.description, new.actions::jsonb, new.source)
"""  # noqa: S608 - constant identifiers only; every value is a parameter

INSERT_EVENTS_SQL: Final = (
    _unnest_insert("insight_events", _EVENT_COLUMNS)
    + "ON CONFLICT (insight_id, lifecycle, detected_at) DO NOTHING"
)
UPSERT_INSIGHTS_SQL: Final = _upsert_insights_sql()


def _columns(rows: Sequence[object], names: tuple[str, ...]) -> list[list[object]]:
    """Row dataclasses to one list per column (the unnest arrays)."""
    return [[getattr(row, name) for row in rows] for name in names]


def _row_count(status: str) -> int:
    """The row count of a command tag such as ``INSERT 0 42``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresInsightStore:
    """``InsightStore`` on PostgreSQL: one transaction, two statements per batch (a third
    when it holds enriched events)."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def write_batch(
        self, events: Sequence[tuple[InsightEvent, SourcePosition]]
    ) -> WriteResult:
        if not events:
            return WriteResult()
        # Sorted by key: concurrent writers (e.g. during a rebalance) lock rows in one order.
        history = sorted(
            unique_events(event_row(e, p) for e, p in events).values(), key=lambda r: r.key
        )
        steps, enrichments = split_enrichments(events)
        current = sorted(
            fold_rows(insight_row(e) for e, _ in steps).values(), key=lambda r: r.insight_id
        )
        written = 0
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.execute(INSERT_EVENTS_SQL, *_columns(history, _EVENT_COLUMNS))
            if current:
                status = await conn.execute(
                    UPSERT_INSIGHTS_SQL, *_columns(current, _INSIGHT_COLUMNS)
                )
                written += _row_count(status)
            if enrichments:
                status = await conn.execute(
                    ENRICH_INSIGHTS_SQL, *_columns(enrichments, _ENRICHMENT_COLUMNS)
                )
                written += _row_count(status)
        return WriteResult(len(events), _row_count(inserted), written)
