"""Answers from the dashboard: ``POST /api/v1/insights/{insight_id}/answer`` with
``{"answer": "acknowledged" | "snooze_1d" | "snooze_1w" | "not_useful"}``.

An answer is an ``InsightAck`` (``schemas/acks.py``, source ``dashboard``, actor
``token:<token id> <token name>``) published on ``insight-acks`` and acknowledged by the broker
(else 503: nothing was recorded), then stored in ``insight_acks`` (what the notifiers and this
API read; the notifier's copy of the same event changes nothing). Only an insight of the token's
workspace can be answered (another one is 404, as if it did not exist).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from schemas.acks import AckSource, AckState, InsightAck
from vectoros.acks import publish_acks, record_acks
from vectoros.db import PgPool

DAY = dt.timedelta(days=1)

# The buttons (the same four as the notifier's Slack message) -> the answer and its snooze.
ANSWERS: dict[str, tuple[AckState, dt.timedelta | None]] = {
    "acknowledged": (AckState.ACKNOWLEDGED, None),
    "snooze_1d": (AckState.SNOOZED, DAY),
    "snooze_1w": (AckState.SNOOZED, 7 * DAY),
    "not_useful": (AckState.NOT_USEFUL, None),
}
BODY_MAX = 1024


class AnswersUnavailable(Exception):
    """The answer could not be published (no broker, or it did not acknowledge in time)."""


class Answers(Protocol):
    async def answer(self, ack: InsightAck) -> None:
        """Publish and store ``ack``; raise ``AnswersUnavailable`` when it was not published."""
        ...


def make_ack(insight_id: str, answer: str, token: str, now: dt.datetime) -> InsightAck:
    state, snooze = ANSWERS[answer]
    return InsightAck(
        ack_id=f"dashboard-{uuid.uuid4().hex}",
        insight_id=insight_id,
        state=state,
        snoozed_until=None if snooze is None else now + snooze,
        actor=f"token:{token}"[:200],
        source=AckSource.DASHBOARD,
        at=now,
    )


class KafkaAnswers:
    """Publishes on ``topic`` with a started aiokafka producer, waits up to ``timeout`` seconds
    for the broker, then stores the answer in ``insight_acks``."""

    def __init__(self, producer: Any, topic: str, pool: PgPool, timeout: float) -> None:
        self._producer = producer
        self._topic = topic
        self._pool = pool
        self._timeout = timeout

    async def answer(self, ack: InsightAck) -> None:
        try:
            await asyncio.wait_for(publish_acks(self._producer, self._topic, [ack]), self._timeout)
        except (TimeoutError, KafkaError) as exc:
            raise AnswersUnavailable(f"{type(exc).__name__}") from exc
        await record_acks(self._pool, [ack])
