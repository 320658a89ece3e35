"""The enrichment log (table ``enrichments``, migration ``0003_enrichments.sql``) and what the
notifier reads from it.

"No second model call for an insight" holds across restarts, replays and rebalances because the
enricher claims a row per enriched lifecycle step, (insight_id, lifecycle, detected_at), before
it calls the model:

=============================================  ============================================
row found by :meth:`claim`                     result
=============================================  ============================================
none (inserted now, owned by this process)     ``NEW``: call the model
``pending``, owned by this process             ``NEW``: an earlier try of this process failed
                                               before the call or while recording it (the
                                               service keeps the outcome in memory, so the
                                               model is not called again)
``pending``, another owner, claimed more       ``NEW`` (taken over): that enricher died
than ``stale_after`` ago                       mid-call
``pending``, another owner, recently           ``BUSY``: skipped (``claimed_elsewhere``)
``enriched``, not published                    ``UNPUBLISHED``: publish the stored text, no call
``enriched`` and published, or ``fallback``    ``DONE``: skipped (``already_enriched``)
=============================================  ============================================

The text is stored (:meth:`finish_enriched`) before the enriched event is published, and
``published_at`` set after the broker acknowledged it, so a crash in between republishes the
same text (the sink ignores the duplicate) instead of calling the model again. A fallback is
final. A claim whose call was cancelled (the service stopped) is :meth:`release`\\ d so that the
next start can make the call.

The notifier reads the log through ``vectoros.enrichments.EnrichmentLookup`` (whether an
enricher is running, kept fresh by :meth:`EnrichmentLog.heartbeat`, and the outcome of the
steps it is about to announce). All SQL is parameterised; database time is used throughout.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from schemas.insights import InsightEvent, Priority
from vectoros.db import PgPool
from vectoros.enrichments import (
    EnrichmentKey,
    Outcome,
    PgEnrichmentLookup,
    StoredText,
    lowest,
)

if TYPE_CHECKING:  # the client imports the anthropic SDK, which the notifier does not need
    from consumer.enricher.client import CallOutcome


class ClaimState(StrEnum):
    NEW = "new"
    UNPUBLISHED = "unpublished"
    DONE = "done"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    stored: StoredText | None = None


class EnrichmentStore(Protocol):
    """What the enricher needs of the log."""

    async def claim(self, key: EnrichmentKey, insight: InsightEvent) -> Claim: ...

    async def finish_enriched(
        self, key: EnrichmentKey, stored: StoredText, outcome: CallOutcome
    ) -> bool: ...

    async def finish_fallback(
        self, key: EnrichmentKey, reason: str, outcome: CallOutcome | None
    ) -> None: ...

    async def mark_published(self, key: EnrichmentKey) -> None: ...

    async def release(self, key: EnrichmentKey) -> None: ...

    async def heartbeat(self, min_priority: Priority, ttl_seconds: float) -> None: ...

    async def deregister(self) -> None: ...


_KEY = "insight_id = $1 AND lifecycle = $2 AND detected_at = $3"

_INSERT = """
INSERT INTO enrichments (
    insight_id, lifecycle, detected_at, workspace_id, deal_id, rule, priority, owner, claimed_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())
ON CONFLICT (insight_id, lifecycle, detected_at) DO NOTHING
RETURNING 1
"""

_TAKE_OVER = f"""
UPDATE enrichments SET owner = $4, claimed_at = clock_timestamp()
 WHERE {_KEY} AND status = 'pending'
   AND (owner = $4 OR claimed_at < clock_timestamp() - make_interval(secs => $5))
RETURNING 1
"""  # noqa: S608 - constant fragments only; every value is a parameter

_STATUS = f"SELECT status, result, published_at FROM enrichments WHERE {_KEY}"  # noqa: S608

_FINISH_ENRICHED = f"""
UPDATE enrichments
   SET status = 'enriched', result = $4::jsonb, model = $5, attempts = $6, input_tokens = $7,
       output_tokens = $8, cache_read_input_tokens = $9, cache_creation_input_tokens = $10,
       cost_usd = $11, finished_at = clock_timestamp()
 WHERE {_KEY} AND status = 'pending'
RETURNING 1
"""  # noqa: S608

_FINISH_FALLBACK = f"""
UPDATE enrichments
   SET status = 'fallback', fallback_reason = $5, model = $6, attempts = $7, input_tokens = $8,
       output_tokens = $9, cache_read_input_tokens = $10, cache_creation_input_tokens = $11,
       cost_usd = $12, finished_at = clock_timestamp()
 WHERE {_KEY} AND status = 'pending' AND owner = $4
"""  # noqa: S608

_PUBLISHED = f"""
UPDATE enrichments SET published_at = clock_timestamp() WHERE {_KEY} AND published_at IS NULL
"""  # noqa: S608

_RELEASE = f"DELETE FROM enrichments WHERE {_KEY} AND owner = $4 AND status = 'pending'"  # noqa: S608

_HEARTBEAT = """
INSERT INTO enricher_instances (instance_id, min_priority, expires_at)
VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (instance_id) DO UPDATE
   SET min_priority = EXCLUDED.min_priority, heartbeat_at = clock_timestamp(),
       expires_at = EXCLUDED.expires_at
"""

_FORGET_EXPIRED = """
DELETE FROM enricher_instances WHERE expires_at < clock_timestamp() - interval '1 day'
"""

_DEREGISTER = "DELETE FROM enricher_instances WHERE instance_id = $1"


def _stats(outcome: CallOutcome | None) -> tuple[Any, ...]:
    if outcome is None:
        return (None, 0, 0, 0, 0, 0, 0.0)
    u = outcome.usage
    return (
        outcome.model,
        outcome.attempts,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        outcome.cost_usd,
    )


class EnrichmentLog(PgEnrichmentLookup):
    """:class:`EnrichmentStore` and :class:`EnrichmentLookup` on PostgreSQL."""

    def __init__(
        self, pool: PgPool, *, stale_after_seconds: float = 300.0, owner: str | None = None
    ) -> None:
        super().__init__(pool)
        self._stale_after = float(stale_after_seconds)
        self.owner = owner or uuid.uuid4().hex

    @staticmethod
    def _key(key: EnrichmentKey) -> tuple[str, str, dt.datetime]:
        return (key.insight_id, key.lifecycle, key.detected_at)

    async def claim(self, key: EnrichmentKey, insight: InsightEvent) -> Claim:
        k = self._key(key)
        for _ in range(3):  # the row can change between the statements; settle in a few rounds
            inserted = await self._pool.fetchval(
                _INSERT,
                *k,
                insight.workspace_id,
                insight.deal_id,
                insight.rule.value,
                insight.priority.value,
                self.owner,
            )
            if inserted is not None:
                return Claim(ClaimState.NEW)
            if await self._pool.fetchval(_TAKE_OVER, *k, self.owner, self._stale_after):
                return Claim(ClaimState.NEW)
            row = await self._pool.fetchrow(_STATUS, *k)
            if row is None:
                continue  # deleted in between (a released claim): insert again
            if row["status"] == "pending":
                return Claim(ClaimState.BUSY)
            if row["status"] == "enriched" and row["published_at"] is None:
                stored = StoredText.from_json(row["result"])
                if stored is not None:
                    return Claim(ClaimState.UNPUBLISHED, stored)
            return Claim(ClaimState.DONE)
        return Claim(ClaimState.BUSY)

    async def finish_enriched(
        self, key: EnrichmentKey, stored: StoredText, outcome: CallOutcome
    ) -> bool:
        """Store the text. Not conditional on the owner: if the model answered, that is the
        truth, whoever took the row over meanwhile. False if the row is already final."""
        done = await self._pool.fetchval(
            _FINISH_ENRICHED, *self._key(key), stored.to_json(), *_stats(outcome)
        )
        return done is not None

    async def finish_fallback(
        self, key: EnrichmentKey, reason: str, outcome: CallOutcome | None
    ) -> None:
        await self._pool.execute(
            _FINISH_FALLBACK, *self._key(key), self.owner, reason, *_stats(outcome)
        )

    async def mark_published(self, key: EnrichmentKey) -> None:
        await self._pool.execute(_PUBLISHED, *self._key(key))

    async def release(self, key: EnrichmentKey) -> None:
        await self._pool.execute(_RELEASE, *self._key(key), self.owner)

    async def heartbeat(self, min_priority: Priority, ttl_seconds: float) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_HEARTBEAT, self.owner, min_priority.value, ttl_seconds)
            await conn.execute(_FORGET_EXPIRED)

    async def deregister(self) -> None:
        await self._pool.execute(
            "DELETE FROM enricher_instances WHERE instance_id = $1", self.owner
        )

    # -- the notifier's view ---------------------------------------------------------------------

    async def fetch_all(self) -> list[dict[str, Any]]:
        """Every row (tests and small installations only)."""
        rows = await self._pool.fetch("SELECT * FROM enrichments ORDER BY claimed_at")
        return [dict(r) for r in rows]


# --- in memory (unit tests) -------------------------------------------------------------------


@dataclass
class MemoryRow:
    status: str
    owner: str
    stored: StoredText | None = None
    published: bool = False
    reason: str | None = None
    priority: str = ""


class InMemoryEnrichmentLog:
    """The same protocol in dictionaries; ``fail_with`` raises on the next calls (a database
    that is down), ``live`` is the heartbeat table."""

    def __init__(self, owner: str = "me") -> None:
        self.owner = owner
        self.rows: dict[EnrichmentKey, MemoryRow] = {}
        self.live: dict[str, str] = {}
        self.fail_with: list[BaseException] = []

    def _maybe_fail(self) -> None:
        if self.fail_with:
            raise self.fail_with.pop(0)

    async def claim(self, key: EnrichmentKey, insight: InsightEvent) -> Claim:
        self._maybe_fail()
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = MemoryRow("pending", self.owner, priority=insight.priority.value)
            return Claim(ClaimState.NEW)
        if row.status == "pending":
            return Claim(ClaimState.NEW if row.owner == self.owner else ClaimState.BUSY)
        if row.status == "enriched" and not row.published:
            return Claim(ClaimState.UNPUBLISHED, row.stored)
        return Claim(ClaimState.DONE)

    async def finish_enriched(
        self, key: EnrichmentKey, stored: StoredText, outcome: CallOutcome
    ) -> bool:
        self._maybe_fail()
        row = self.rows[key]
        if row.status != "pending":
            return False
        row.status, row.stored = "enriched", stored
        return True

    async def finish_fallback(
        self, key: EnrichmentKey, reason: str, outcome: CallOutcome | None
    ) -> None:
        self._maybe_fail()
        row = self.rows[key]
        if row.status == "pending" and row.owner == self.owner:
            row.status, row.reason = "fallback", reason

    async def mark_published(self, key: EnrichmentKey) -> None:
        self._maybe_fail()
        self.rows[key].published = True

    async def release(self, key: EnrichmentKey) -> None:
        row = self.rows.get(key)
        if row is not None and row.status == "pending" and row.owner == self.owner:
            del self.rows[key]

    async def heartbeat(self, min_priority: Priority, ttl_seconds: float) -> None:
        self._maybe_fail()
        self.live[self.owner] = min_priority.value

    async def deregister(self) -> None:
        self.live.pop(self.owner, None)

    async def live_min_priority(self) -> Priority | None:
        self._maybe_fail()
        return lowest(list(self.live.values()))

    async def outcomes(self, keys: Sequence[EnrichmentKey]) -> dict[EnrichmentKey, Outcome]:
        self._maybe_fail()
        found: dict[EnrichmentKey, Outcome] = {}
        for key in keys:
            row = self.rows.get(key)
            if row is not None and row.status != "pending":
                status = "enriched" if row.stored is not None else "fallback"
                found[key] = Outcome(status, row.stored)
        return found
