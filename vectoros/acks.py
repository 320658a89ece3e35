"""Answers to insights (``schemas.acks.InsightAck``) as the services that take them publish and
store them: on ``insight-acks`` keyed by the insight id, and in ``insight_acks`` (idempotent per
``ack_id``; the latest answer per insight wins). Used by the read API's answer buttons, the
gateway (Slack buttons, email links) and the notifier (which stores the answers it reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from schemas.acks import InsightAck
from vectoros.db import PgPool

RECORD_SQL = """
INSERT INTO insight_acks (insight_id, state, snoozed_until, actor, updated_at, source, ack_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (insight_id) DO UPDATE
   SET state = EXCLUDED.state, snoozed_until = EXCLUDED.snoozed_until, actor = EXCLUDED.actor,
       updated_at = EXCLUDED.updated_at, source = EXCLUDED.source, ack_id = EXCLUDED.ack_id
 WHERE insight_acks.ack_id IS DISTINCT FROM EXCLUDED.ack_id
   AND insight_acks.updated_at <= EXCLUDED.updated_at
"""


def encode_ack(ack: InsightAck) -> tuple[bytes, bytes]:
    """The Kafka key (the insight id) and value of an answer."""
    return ack.insight_id.encode(), ack.model_dump_json().encode()


async def publish_acks(producer: Any, topic: str, acks: Sequence[InsightAck]) -> None:
    """Publish ``acks`` on ``topic`` with a started aiokafka producer and return once the broker
    acknowledged every one of them."""
    pending = []
    for ack in acks:
        key, value = encode_ack(ack)
        pending.append(
            await producer.send(
                topic, value=value, key=key, timestamp_ms=int(ack.at.timestamp() * 1000)
            )
        )
    await asyncio.gather(*pending)


async def record_acks(pool: PgPool, acks: Sequence[InsightAck]) -> None:
    """Store answers in ``insight_acks`` (a replayed answer, or one older than the stored one,
    changes nothing)."""
    if not acks:
        return
    await pool.executemany(
        RECORD_SQL,
        [
            (a.insight_id, a.state.value, a.snoozed_until, a.actor, a.at, a.source.value, a.ack_id)
            for a in acks
        ],
    )
