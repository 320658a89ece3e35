"""Acknowledged, snoozed and "not useful" insights (table ``insight_acks``, migrations 0007 and
0010).

Answers arrive as ``InsightAck`` events on ``insight-acks`` (``schemas/acks.py``: Slack buttons
through the gateway, ``vectoros insights ack|snooze``); the notifier group stores each in the
table (``record``: a replayed event, or one older than the stored answer, changes nothing), and
every notifier reads the table before announcing, so all instances agree. Held: an acknowledged
or not-useful insight, and a snoozed one until ``snoozed_until``, gets nothing more (raised
replays, resolutions, reminders, held digest lines) except an ``escalated`` event, which always
goes out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Protocol

from schemas.acks import InsightAck
from vectoros.acks import record_acks
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
   AND (state IN ('acknowledged', 'not_useful') OR snoozed_until > $2)
"""


class AckLookup(Protocol):
    async def held(self, insight_ids: Collection[str], now: dt.datetime) -> set[str]: ...


class AckRecorder(Protocol):
    async def record(self, acks: Sequence[InsightAck]) -> None: ...
    async def rules_of(self, insight_ids: Collection[str]) -> dict[str, str]: ...


class PgAcks:
    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def acknowledge(self, insight_id: str, actor: str) -> None:
        await self._pool.execute(_UPSERT, insight_id, "acknowledged", None, actor)

    async def snooze(self, insight_id: str, until: dt.datetime, actor: str) -> None:
        await self._pool.execute(_UPSERT, insight_id, "snoozed", until, actor)

    async def record(self, acks: Sequence[InsightAck]) -> None:
        """Store answers (idempotent; the latest answer per insight wins)."""
        await record_acks(self._pool, acks)

    async def rules_of(self, insight_ids: Collection[str]) -> dict[str, str]:
        """The rule of each of ``insight_ids`` that was notified (from ``notifications``, or
        inside a flood-control message: ``notify_message_items``)."""
        if not insight_ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (insight_id) insight_id, rule FROM ("
            " SELECT insight_id, rule FROM notifications WHERE insight_id = ANY($1::text[])"
            " UNION ALL SELECT m.insight_id, m.rule FROM notify_message_items AS m"
            " JOIN notifications AS n ON n.insight_id = m.message_id AND n.status = 'sent'"
            " WHERE m.insight_id = ANY($1::text[])) AS notified",
            list(insight_ids),
        )
        return {r["insight_id"]: r["rule"] for r in rows}

    async def held(self, insight_ids: Collection[str], now: dt.datetime) -> set[str]:
        """Which of ``insight_ids`` are acknowledged or not useful, or snoozed past ``now``."""
        if not insight_ids:
            return set()
        rows = await self._pool.fetch(_HELD, list(insight_ids), now)
        return {r["insight_id"] for r in rows}


class MemoryAcks:
    """The same in memory (unit tests)."""

    def __init__(self) -> None:
        self.acked: set[str] = set()
        self.snoozed: dict[str, dt.datetime] = {}
        self.recorded: list[InsightAck] = []
        self.rules: dict[str, str] = {}

    async def rules_of(self, insight_ids: Collection[str]) -> dict[str, str]:
        return {i: self.rules[i] for i in insight_ids if i in self.rules}

    async def record(self, acks: Sequence[InsightAck]) -> None:
        for ack in acks:
            self.recorded.append(ack)
            self.acked.discard(ack.insight_id)
            self.snoozed.pop(ack.insight_id, None)
            if ack.snoozed_until is not None:
                self.snoozed[ack.insight_id] = ack.snoozed_until
            else:
                self.acked.add(ack.insight_id)

    async def held(self, insight_ids: Collection[str], now: dt.datetime) -> set[str]:
        return {
            i
            for i in insight_ids
            if i in self.acked or (i in self.snoozed and self.snoozed[i] > now)
        }
