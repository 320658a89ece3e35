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

The PostgreSQL store (``postgres``) folds a batch per insight_id with the same rule and runs
an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` whose CASEs are that merge in SQL; the
in-memory store applies ``merge_rows`` directly. The integration tests check that both agree.

The rows and the merge rules are in ``rows``, the PostgreSQL store in ``postgres``; this module
is the protocol, the in-memory store, and the names of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from consumer.sink.postgres import (
    ENRICH_INSIGHTS_SQL,
    WRITE_BATCH_SQL,
    PostgresInsightStore,
)
from consumer.sink.rows import (
    CONTENT_COLUMNS,
    CONTENT_RANK,
    ENRICHABLE_CONTENT_RANK,
    IDENTITY_COLUMNS,
    OPEN,
    RESOLVED,
    STATE_COLUMNS,
    STATE_RANK,
    EnrichmentRow,
    EventRow,
    InsightRow,
    SourcePosition,
    WriteResult,
    apply_enrichment,
    enrichment_row,
    event_row,
    fold_rows,
    insight_row,
    merge_rows,
    payload_json,
    pg_json,
    pg_text,
    split_enrichments,
    unique_enrichments,
    unique_events,
)
from schemas.insights import InsightEvent

__all__ = [
    "CONTENT_COLUMNS",
    "CONTENT_RANK",
    "ENRICHABLE_CONTENT_RANK",
    "ENRICH_INSIGHTS_SQL",
    "IDENTITY_COLUMNS",
    "OPEN",
    "RESOLVED",
    "STATE_COLUMNS",
    "STATE_RANK",
    "WRITE_BATCH_SQL",
    "EnrichmentRow",
    "EventRow",
    "InMemoryInsightStore",
    "InsightRow",
    "InsightStore",
    "PostgresInsightStore",
    "SourcePosition",
    "WriteResult",
    "apply_enrichment",
    "enrichment_row",
    "event_row",
    "fold_rows",
    "insight_row",
    "merge_rows",
    "payload_json",
    "pg_json",
    "pg_text",
    "split_enrichments",
    "unique_enrichments",
    "unique_events",
]


class InsightStore(Protocol):
    async def write_batch(
        self, events: Sequence[tuple[InsightEvent, SourcePosition]]
    ) -> WriteResult:
        """Write the batch atomically (all or nothing); idempotent and order-robust."""
        ...


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
