"""What the enricher and the notifier share of the enrichment log (table ``enrichments``,
migration ``0003_enrichments.sql``): the key of one enriched lifecycle step, the stored text,
the outcome the notifier waits for, and the notifier's read-only view of the log.

The enricher writes the log (``consumer.enricher.store``); the notifier only reads it through
:class:`EnrichmentLookup`: whether an enricher is running (table ``enricher_instances``) and
the outcome of the steps it is about to announce. Living here, below both services, it lets
neither service import the other. All SQL is parameterised; database time is used throughout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from schemas.enriched_text import EnrichedText
from schemas.insights import InsightEvent, Lifecycle, Priority, insight_adapter
from vectoros.db import PgPool


@dataclass(frozen=True, slots=True)
class EnrichmentKey:
    """One enriched lifecycle step."""

    insight_id: str
    lifecycle: str
    detected_at: dt.datetime

    @classmethod
    def of(cls, insight: InsightEvent) -> EnrichmentKey:
        return cls(insight.insight_id, insight.lifecycle.value, insight.detected_at)


@dataclass(frozen=True, slots=True)
class StoredText:
    """The model's validated text and the model that wrote it."""

    text: EnrichedText
    source: str

    def apply(self, insight: InsightEvent, lifecycle: Lifecycle | None = None) -> InsightEvent:
        """``insight`` with this text and source (and ``lifecycle`` if given); validated."""
        return insight_adapter.validate_python(
            {
                **insight.model_dump(mode="json"),
                "lifecycle": (lifecycle or insight.lifecycle).value,
                "title": self.text.title,
                "description": self.text.description,
                "actions": [a.model_dump(mode="json") for a in self.text.actions],
                "source": self.source,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.text.model_dump(mode="json"), "source": self.source}

    @classmethod
    def from_json(cls, value: Any) -> StoredText | None:
        """None for a value that is not a stored text (never raises)."""
        if not isinstance(value, dict):
            return None
        body = dict(value)
        source = body.pop("source", None)
        if not isinstance(source, str) or not source:
            return None
        try:
            return cls(EnrichedText.model_validate(body), source)
        except ValidationError:
            return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the notifier learns about one step: 'enriched' (with the text) or 'fallback'."""

    status: str
    stored: StoredText | None = None


class EnrichmentLookup(Protocol):
    """What the notifier needs of the log."""

    async def live_min_priority(self) -> Priority | None:
        """The lowest ``enrich_min_priority`` of the running enrichers; None if none runs."""
        ...

    async def outcomes(self, keys: Sequence[EnrichmentKey]) -> dict[EnrichmentKey, Outcome]:
        """The final outcomes known for ``keys`` (pending and unknown ones are left out)."""
        ...


def lowest(priorities: Sequence[str]) -> Priority | None:
    names = {p.value for p in Priority}
    known = [Priority(p) for p in priorities if p in names]
    return min(known, key=lambda p: p.rank) if known else None


# --- PostgreSQL -------------------------------------------------------------------------------


_LIVE = "SELECT min_priority FROM enricher_instances WHERE expires_at > clock_timestamp()"

_OUTCOMES = """
SELECT e.insight_id, e.lifecycle, e.detected_at, e.status, e.result
  FROM enrichments AS e
  JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(insight_id, lifecycle, detected_at)
 USING (insight_id, lifecycle, detected_at)
 WHERE e.status <> 'pending'
"""


class PgEnrichmentLookup:
    """:class:`EnrichmentLookup` on PostgreSQL."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def live_min_priority(self) -> Priority | None:
        rows = await self._pool.fetch(_LIVE)
        return lowest([str(r["min_priority"]) for r in rows])

    async def outcomes(self, keys: Sequence[EnrichmentKey]) -> dict[EnrichmentKey, Outcome]:
        if not keys:
            return {}
        rows = await self._pool.fetch(
            _OUTCOMES,
            [k.insight_id for k in keys],
            [k.lifecycle for k in keys],
            [k.detected_at for k in keys],
        )
        found: dict[EnrichmentKey, Outcome] = {}
        for row in rows:
            key = EnrichmentKey(row["insight_id"], row["lifecycle"], row["detected_at"])
            stored = StoredText.from_json(row["result"]) if row["status"] == "enriched" else None
            found[key] = Outcome("enriched" if stored else "fallback", stored)
        return found
