"""``InsightStore`` on PostgreSQL: one transaction and one statement per batch (a second one
when the batch holds ``enriched`` events). All values are parameters.

``WRITE_BATCH_SQL`` takes a few arrays per event (its JSON, detected_at, position,
confidence; sorted by history key by ``batch_parameters``) and parses each event's JSON once:

* ``ev``: the events, materialised once: ``doc`` is the event's JSON as jsonb, the text
  columns are read from it (``EVENT_TEXT_FIELDS``), the ranks derived from them;
* ``history``: the first event of each history key into ``insight_events`` (``payload`` is
  ``doc``), ``ON CONFLICT DO NOTHING``, in key order;
* ``merged``: one candidate row per insight_id, in insight_id order, upserted with the CASEs
  of ``merge_rows``. The fold is done in Python on positions (``fold``, the rule of
  ``fold_rows``): for each insight_id, the event that gives the identity (its first), the one
  that gives the state columns (greatest (state_rank, detected_at), the first on a tie), the
  one that gives the content (greatest (content_rank, detected_at)), and the earliest
  ``raised_at``; the row is assembled from those ``ev`` rows. ``data`` is the content event's
  ``data`` object completed with the defaults of the fields it leaves out (``defaults``),
  ``key_metrics`` is ``data.key_metrics``, ``actions`` its ``actions``: for an event
  serialised from the schema (every producer of this project) the same JSON as re-serialising
  the validated event, without doing it. (A foreign producer's number written as a string,
  which pydantic's lax mode accepts, stays a string in those JSON columns.)

The JSON of an event is the record it was read from (``SourcePosition.raw``), so a batch read
from Kafka is written with no JSON serialisation in Python; an event that comes without its
record is serialised once. A JSON ``\\u0000`` (PostgreSQL cannot store NUL) becomes U+FFFD in
the JSON and so in the text columns read from it, as ``pg_json``/``pg_text`` do.

``enriched`` events go into the history like the others, then ``ENRICH_INSIGHTS_SQL`` applies
them (the rule of ``apply_enrichment``) after the upsert, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import itemgetter
from typing import Final

import orjson
import pydantic_core
from pydantic import BaseModel

from consumer.sink.rows import (
    CONTENT_COLUMNS,
    CONTENT_RANK,
    ENRICHABLE_CONTENT_RANK,
    OPEN,
    RESOLVED,
    STATE_COLUMNS,
    STATE_RANK,
    EnrichmentRow,
    InsightRow,
    SourcePosition,
    WriteResult,
    enrichment_row,
    payload_json,
    pg_json,
    pg_text,
    unique_enrichments,
)
from schemas.insights import InsightData, InsightEvent, Lifecycle, Priority
from vectoros.db import PgPool

Batch = Sequence[tuple[InsightEvent, SourcePosition]]

# The per-event arrays, in the order of ``_event_values`` (``first`` is added after sorting).
# Few on purpose: asyncpg spends about a microsecond on every array element.
EVENT_ARRAYS: Final = (
    ("payload", "text"),
    ("detected_at", "timestamptz"),
    ("kafka_topic", "text"),
    ("kafka_partition", "int4"),
    ("kafka_offset", "int8"),
    ("confidence", "float8"),
    ("first", "bool"),
)
# The event's str fields, read from its JSON in SQL: a JSON string decodes to the same text in
# pydantic and in PostgreSQL (escapes, last of duplicate keys; pydantic refuses the lone
# surrogates and control characters PostgreSQL would), and ``pg_json`` has already replaced
# ``\u0000``, as ``pg_text`` does. A field with a default may be left out of the JSON.
EVENT_TEXT_FIELDS: Final = (
    "insight_id",
    "lifecycle",
    "workspace_id",
    "deal_id",
    "rule",
    "priority",
    "source",
    "type",
    "title",
    "description",
)
# One per insight_id: the 1-based positions in ``ev`` of its identity, state and content events.
FOLD_ARRAYS: Final = (
    ("fi", "int8"),
    ("si", "int8"),
    ("ci", "int8"),
    ("raised_at", "timestamptz"),
)
HISTORY_COLUMNS: Final = (
    "insight_id",
    "lifecycle",
    "detected_at",
    "workspace_id",
    "deal_id",
    "rule",
    "priority",
    "source",
    "payload",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
INSIGHT_COLUMNS: Final = tuple(f.name for f in fields(InsightRow))

_RESOLVED_STEP = f"s.lifecycle = '{Lifecycle.RESOLVED.value}'"
# Where each ``insights`` column comes from: ``id``, ``s`` and ``c`` are the identity, state and
# content events in ``ev``, ``f`` the folded arrays, ``cd.data`` the content's data object.
INSIGHT_SOURCES: Final = {
    "insight_id": "id.insight_id",
    "workspace_id": "id.workspace_id",
    "deal_id": "id.deal_id",
    "rule": "id.rule",
    "type": "c.type",
    "priority": "c.priority",
    "priority_rank": "c.priority_rank",
    "title": "c.title",
    "description": "c.description",
    "actions": "c.doc -> 'actions'",
    "key_metrics": "cd.data -> 'key_metrics'",
    "data": "cd.data",
    "confidence": "c.confidence",
    "source": "c.source",
    "rule_title": "c.title",
    "rule_description": "c.description",
    "content_rank": "c.content_rank",
    "content_detected_at": "c.detected_at",
    "status": f"CASE WHEN {_RESOLVED_STEP} THEN '{RESOLVED}' ELSE '{OPEN}' END",
    "lifecycle": "s.lifecycle",
    "detected_at": "s.detected_at",
    "resolved_at": f"CASE WHEN {_RESOLVED_STEP} THEN s.detected_at END",
    "state_rank": "s.state_rank",
    "raised_at": "f.raised_at",
}


def _merge_clause() -> str:
    """``merge_rows`` in SQL: the SET and WHERE of the upsert."""
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
        "ON CONFLICT (insight_id) DO UPDATE SET\n        "
        + ",\n        ".join(sets)
        + f"\n    WHERE {newer_state}\n       OR {newer_content}"
        + "\n       OR EXCLUDED.raised_at < cur.raised_at"
    )


def defaults(model: type[BaseModel], names: Iterable[str] | None = None) -> str:
    """The JSON object of the fields of ``model`` (of ``names``) that have a default, with it:
    what a producer may leave out."""
    values = {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if not info.is_required() and (names is None or name in names)
    }
    return pydantic_core.to_json(values).decode()


_EVENT_DEFAULTS: Final = defaults(InsightEvent, EVENT_TEXT_FIELDS)
_DATA_DEFAULTS: Final = defaults(InsightData)


def _case(expression: str, values: Mapping[str, int]) -> str:
    whens = " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in values.items())
    return f"CASE {expression} {whens} END"


def _write_batch_sql() -> str:
    """Only constant identifiers and the rank tables go into the text; every value is a
    parameter."""
    n_ev = len(EVENT_ARRAYS)
    ev_arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(EVENT_ARRAYS, start=1))
    ev_names = ", ".join(name for name, _ in EVENT_ARRAYS)
    fold_arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(FOLD_ARRAYS, start=n_ev + 1))
    fold_names = ", ".join(name for name, _ in FOLD_ARRAYS)
    event_defaults = f"(SELECT ${n_ev + len(FOLD_ARRAYS) + 1}::text::jsonb)"
    data_defaults = f"(SELECT ${n_ev + len(FOLD_ARRAYS) + 2}::text::jsonb)"
    with_default = orjson.loads(_EVENT_DEFAULTS)
    texts = ",\n           ".join(
        f"COALESCE(e.doc ->> '{name}', {event_defaults} ->> '{name}') AS {name}"
        if name in with_default
        else f"e.doc ->> '{name}' AS {name}"
        for name in EVENT_TEXT_FIELDS
    )
    lifecycle = "(e.doc ->> 'lifecycle')"
    ranks = {
        "state_rank": _case(lifecycle, {k.value: v for k, v in STATE_RANK.items()}),
        "content_rank": _case(lifecycle, {k.value: v for k, v in CONTENT_RANK.items()}),
        "priority_rank": _case("(e.doc ->> 'priority')", {p.value: p.rank for p in Priority}),
    }
    ranked = ",\n           ".join(f"{expression} AS {name}" for name, expression in ranks.items())
    kept = ", ".join(f"e.{name}" for name, _ in EVENT_ARRAYS if name != "payload")
    history = ", ".join("doc" if name == "payload" else name for name in HISTORY_COLUMNS)
    current = ",\n           ".join(INSIGHT_SOURCES[name] for name in INSIGHT_COLUMNS)
    return f"""
WITH ev AS MATERIALIZED (
    SELECT e.i, e.doc, {kept},
           {texts},
           {ranked}
    FROM (  -- OFFSET 0: the JSON is parsed once per event, not once per use of doc
        SELECT u.*, u.payload::jsonb AS doc
        FROM unnest({ev_arrays}) WITH ORDINALITY AS u({ev_names}, i)
        OFFSET 0
    ) AS e
),
history AS (
    INSERT INTO insight_events ({", ".join(HISTORY_COLUMNS)})
    SELECT {history}
    FROM ev WHERE first ORDER BY i
    ON CONFLICT (insight_id, lifecycle, detected_at) DO NOTHING
    RETURNING 1
),
merged AS (
    INSERT INTO insights AS cur ({", ".join(INSIGHT_COLUMNS)})
    SELECT {current}
    FROM unnest({fold_arrays}) WITH ORDINALITY AS f({fold_names}, o)
    JOIN ev AS id ON id.i = f.fi
    JOIN ev AS s ON s.i = f.si
    JOIN ev AS c ON c.i = f.ci
    CROSS JOIN LATERAL (SELECT {data_defaults} || (c.doc -> 'data') AS data) AS cd
    ORDER BY f.o
    {_merge_clause()}
    RETURNING 1
)
SELECT (SELECT count(*) FROM history) AS inserted, (SELECT count(*) FROM merged) AS written
"""  # noqa: S608 - constant identifiers only


WRITE_BATCH_SQL: Final = _write_batch_sql()

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


_KEY_LENGTH = 3
_HISTORY_KEY = itemgetter(0, 1, 2)  # the history key in ``_event_values``


def _event_values(event: InsightEvent, position: SourcePosition) -> tuple[object, ...]:
    """One event's values: the history key (insight_id, lifecycle, detected_at) then the
    ``EVENT_ARRAYS`` (without ``first``)."""
    payload = payload_json(event, position)
    insight_id = event.insight_id
    if b"\\u0000" in payload:  # the only way a NUL gets into a str of the event
        insight_id = pg_text(insight_id)
    return (
        insight_id,
        event.lifecycle,  # a StrEnum: compared and sent as its value
        event.detected_at,
        pg_json(payload),
        event.detected_at,
        position.topic,
        position.partition,
        position.offset,
        event.confidence,
    )


@dataclass(slots=True)
class Folded:
    """The lifecycle steps of one insight_id in a batch: positions of the events that give its
    identity (the first), state and content columns, and the earliest ``raised_at``."""

    identity: int
    state: int
    content: int
    raised_at: datetime


def fold(events: Batch, insight_ids: Sequence[str]) -> dict[str, Folded]:
    """The rule of ``fold_rows`` on positions (``enriched`` events are not steps): a version
    replaces the kept one only if it is greater, so the first wins a tie."""
    folded: dict[str, Folded] = {}
    for j, (event, _) in enumerate(events):
        lifecycle = event.lifecycle
        if lifecycle is Lifecycle.ENRICHED:
            continue
        found = folded.get(insight_ids[j])
        if found is None:
            folded[insight_ids[j]] = Folded(j, j, j, event.raised_at)
            continue
        state, content = events[found.state][0], events[found.content][0]
        if (STATE_RANK[lifecycle], event.detected_at) > (
            STATE_RANK[state.lifecycle],
            state.detected_at,
        ):
            found.state = j
        if (CONTENT_RANK[lifecycle], event.detected_at) > (
            CONTENT_RANK[content.lifecycle],
            content.detected_at,
        ):
            found.content = j
        if event.raised_at < found.raised_at:
            found.raised_at = event.raised_at
    return folded


def batch_parameters(events: Batch) -> list[object]:
    """The parameters of ``WRITE_BATCH_SQL`` for a batch (in batch order)."""
    values = [_event_values(e, p) for e, p in events]
    order = sorted(range(len(values)), key=lambda j: _HISTORY_KEY(values[j]))
    place = [0] * len(values)  # batch index → 1-based position in ``ev``
    for rank, j in enumerate(order, start=1):
        place[j] = rank
    ordered = [values[j] for j in order]
    first = [True] * len(ordered)
    for k in range(1, len(ordered)):
        first[k] = _HISTORY_KEY(ordered[k]) != _HISTORY_KEY(ordered[k - 1])
    columns: list[object] = [
        [v[k] for v in ordered] for k in range(_KEY_LENGTH, _KEY_LENGTH + len(EVENT_ARRAYS) - 1)
    ]
    columns.append(first)
    folded = fold(events, [str(v[0]) for v in values])
    steps = [folded[insight_id] for insight_id in sorted(folded)]
    return [
        *columns,
        [place[f.identity] for f in steps],
        [place[f.state] for f in steps],
        [place[f.content] for f in steps],
        [f.raised_at for f in steps],
        _EVENT_DEFAULTS,
        _DATA_DEFAULTS,
    ]


def _columns(rows: Sequence[object], names: tuple[str, ...]) -> list[list[object]]:
    """Row dataclasses to one list per column (the unnest arrays)."""
    return [[getattr(row, name) for row in rows] for name in names]


def _row_count(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 42``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresInsightStore:
    """``InsightStore`` on PostgreSQL: one transaction, one statement per batch (a second one
    when it holds enriched events)."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def write_batch(self, events: Batch) -> WriteResult:
        if not events:
            return WriteResult()
        parameters = batch_parameters(events)
        enrichments = unique_enrichments(
            enrichment_row(e) for e, _ in events if e.lifecycle is Lifecycle.ENRICHED
        )
        async with self._pool.acquire() as conn, conn.transaction():
            counts = await conn.fetchrow(WRITE_BATCH_SQL, *parameters)
            assert counts is not None  # one row, always
            inserted, written = int(counts["inserted"]), int(counts["written"])
            if enrichments:
                status = await conn.execute(
                    ENRICH_INSIGHTS_SQL, *_columns(enrichments, _ENRICHMENT_COLUMNS)
                )
                written += _row_count(status)
        return WriteResult(len(events), inserted, written)
