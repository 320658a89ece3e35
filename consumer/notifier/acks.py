"""Acknowledged and snoozed insights (table ``insight_acks``, migration ``0007_insight_acks``).

``vectoros insights ack ID`` and ``vectoros insights snooze ID --until 1d`` write here; every
notifier reads it before announcing, so all instances agree (the table is the shared truth; a
Kafka event for the read side is future work). Held: an acknowledged insight, and a snoozed one
until ``snoozed_until``, get nothing more (raised replays, resolutions, reminders, held digest
lines) except an ``escalated`` event, which always goes out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Protocol

from vectoros.db import PgPool

_UPSERT = """
INSERT INTO insight_acks (insight_id, state, snoozed_until, actor, updated_at)
VALUES ($1, $2, $3, $4, clock_timestamp())
ON CONFLICT (insight_id) DO UPDATE
   SET state = EXCLUDED.state, snoozed_until = EXCLUDED.snoozed_until, actor = EXCLUDED.actor,
       updated_at = EXCLUDED.updated_at
"""

_HELD = """
SELECT insight_id FROM insight_acks
 WHERE insight_id = ANY($1::text[])
   AND (state = 'acknowledged' OR snoozed_until > $2)
"""


class AckLookup(Protocol):
    async def held(self, insight_ids: Collection[str], now: dt.datetime) -> set[str]: ...


class PgAcks:
    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def acknowledge(self, insight_id: str, actor: str) -> None:
        await self._pool.execute(_UPSERT, insight_id, "acknowledged", None, actor)

    async def snooze(self, insight_id: str, until: dt.datetime, actor: str) -> None:
        await self._pool.execute(_UPSERT, insight_id, "snoozed", until, actor)

    async def held(self, insight_ids: Collection[str], now: dt.datetime) -> set[str]:
        """Which of ``insight_ids`` are acknowledged, or snoozed past ``now``."""
        if not insight_ids:
            return set()
        rows = await self._pool.fetch(_HELD, list(insight_ids), now)
        return {r["insight_id"] for r in rows}


class MemoryAcks:
    """The same in memory (unit tests)."""

    def __init__(self) -> None:
        self.acked: set[str] = set()
        self.snoozed: dict[str, dt.datetime] = {}

    async def held(self, insight_ids: Collection[str], now: dt.datetime) -> set[str]:
        return {
            i
            for i in insight_ids
            if i in self.acked or (i in self.snoozed and self.snoozed[i] > now)
        }
