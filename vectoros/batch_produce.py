"""Producing many records with few awaits: one ``create_batch``/``send_batch`` per partition
instead of one ``send()`` per record (measured on the embedded broker: ~74k records/s with
``send()`` against ~850k/s with batches). Keyed records go to the partition Kafka's default
partitioner (murmur2) would choose, so consumers see the same placement as with ``send()``."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import DefaultPartitioner


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce. ``partition`` is set only when the target partition is explicit;
    ``value=None`` is a tombstone."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


class BatchProducer:
    """Groups records by (topic, partition) into producer batches and waits for all acks."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return parts

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Queue every record and wait until the broker acknowledged all (raises the first
        error; the caller decides whether to send the whole set again)."""
        grouped: dict[tuple[str, int], list[OutRecord]] = defaultdict(list)
        for r in records:
            partition = r.partition
            if partition is None:
                parts = await self._partitions_of(r.topic)
                partition = self._partitioner(r.key, parts, parts)
            grouped[(r.topic, partition)].append(r)
        futures: list[asyncio.Future[Any]] = []
        producer = self._producer
        for (topic, partition), recs in grouped.items():
            batch = producer.create_batch()
            for r in recs:
                headers = r.headers or []
                if batch.append(key=r.key, value=r.value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=None, headers=headers)
            batch.close()  # complete: do not wait linger_ms for more records
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        if futures:
            await asyncio.gather(*futures)
