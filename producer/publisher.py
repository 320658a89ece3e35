"""The typed publisher the CRM backend (and the simulator, gateway, ticker) use to put events on
``deal-events``: the key is always the ``deal_id``; ticks go to an explicit partition."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from schemas.events import TICK_HEADER, TICK_HEADER_VALUE, DealEvent, Tick, encode_event


class DealEventPublisher:
    """Wraps a started ``AIOKafkaProducer``. ``publish`` returns once the record is queued;
    ``flush``/``publish_and_wait`` wait for the broker's acknowledgement.

    Records carry the producer's clock as their Kafka timestamp, which the monitor bounds event
    time by. ``event_time=True`` stamps each record with the event's own time instead: for
    producers that replay history or simulate time (the simulator, tests), whose events are
    otherwise implausibly far from when they are produced. A live producer leaves it off."""

    def __init__(self, producer: Any, topic: str, *, event_time: bool = False) -> None:
        self._producer = producer
        self.topic = topic
        self.event_time = event_time
        self._pending: list[asyncio.Future[Any]] = []

    def with_event_time(self) -> DealEventPublisher:
        """A publisher on the same producer and topic that stamps records with event time."""
        return DealEventPublisher(self._producer, self.topic, event_time=True)

    def _stamp(self, at: dt.datetime) -> int | None:
        return int(at.timestamp() * 1000) if self.event_time else None

    async def publish(self, event: DealEvent) -> None:
        fut = await self._producer.send(
            self.topic,
            value=encode_event(event),
            key=event.deal_id.encode(),
            timestamp_ms=self._stamp(event.occurred_at),
        )
        self._pending.append(fut)

    async def publish_many(self, events: Iterable[DealEvent]) -> None:
        for event in events:
            await self.publish(event)

    async def publish_and_wait(self, event: DealEvent) -> None:
        await self.publish(event)
        await self.flush()

    async def partitions(self, *, refresh: bool = False) -> list[int]:
        """The partitions of the events topic; ``refresh`` re-reads them from the broker."""
        if refresh:
            await self._producer.client.force_metadata_update()
        parts = await self._producer.partitions_for(self.topic)
        return sorted(parts)

    async def publish_tick(self, at: dt.datetime, partitions: Iterable[int]) -> int:
        """One tick to each of ``partitions``; returns how many were queued."""
        count = 0
        for partition in partitions:
            tick = Tick(event_id=str(uuid.uuid4()), at=at)
            fut = await self._producer.send(
                self.topic,
                value=encode_event(tick),
                partition=partition,
                timestamp_ms=self._stamp(at),
                headers=[(TICK_HEADER, TICK_HEADER_VALUE)],
            )
            self._pending.append(fut)
            count += 1
        return count

    async def flush(self) -> None:
        """Wait until everything published so far is acknowledged (raises the first error)."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
