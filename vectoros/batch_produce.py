"""Producing many records with few awaits: one ``create_batch``/``send_batch`` per partition
instead of one ``send()`` per record (measured on the embedded broker: ~74k records/s with
``send()`` against ~850k/s with batches). Keyed records go to the partition Kafka's default
partitioner (murmur2, ``vectoros.partitioner``) would choose, so consumers see the same placement
as with ``send()``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from vectoros.partitioner import partition_for

_NO_HEADERS: list[tuple[str, bytes]] = []  # shared, never mutated (aiokafka only reads headers)


class OutRecord(NamedTuple):
    """One record to produce. ``partition`` is set only when the target partition is explicit;
    ``value=None`` is a tombstone. A named tuple: the monitor builds one per insight and per
    changelog entry, and a tuple is built (and unpacked) several times faster than a frozen
    dataclass."""

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

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return parts

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Queue every record and wait until the broker acknowledged all (raises the first
        error; the caller decides whether to send the whole set again)."""
        grouped: dict[tuple[str, int], list[OutRecord]] = {}
        known = self._partitions
        for r in records:
            topic, key, _, _, partition = r
            if partition is None:
                parts = known.get(topic)
                if parts is None:
                    parts = await self._partitions_of(topic)
                partition = partition_for(key, parts)
            group = grouped.get((topic, partition))
            if group is None:
                grouped[(topic, partition)] = [r]
            else:
                group.append(r)
        futures: list[asyncio.Future[Any]] = []
        producer = self._producer
        for (topic, partition), recs in grouped.items():
            batch = producer.create_batch()
            append = batch.append
            for _, key, value, headers, _ in recs:
                headers = headers or _NO_HEADERS
                if append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    append = batch.append
                    # an empty batch takes any first record (aiokafka); the monitor's records are
                    # bounded by VECTOROS_MAX_EVENT_BYTES (<= 256 KiB) and dlq.MAX_KEY_BYTES
                    append(key=key, value=value, timestamp=None, headers=headers)
            batch.close()  # complete: do not wait linger_ms for more records
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        if futures:
            await asyncio.gather(*futures)
