"""How fast the monitor's outputs can be produced: insight-sized records, three ways.

Real insight events (JSON, about 1.2 KB each, key ``deal_id``) are produced to a fresh topic
and every acknowledgement is awaited, with acks=all:

* ``send()`` one record at a time with the project's producer settings
  (``vectoros.kafka.start_producer``: linger 5 ms, aiokafka's default 16 KiB batches), records
  in partition order;
* the same with 1 MiB batches (``max_batch_size``);
* ``create_batch()`` + ``send_batch()`` per partition (1 MiB batches).

aiokafka keeps one open batch per partition and one request in flight per broker: once a
partition's batch is full, ``send()`` waits for it to be drained, so with 16 KiB batches a
sequential ``send()`` loop gets about a dozen insights out per broker round trip.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.data import partition_for
from bench.env import Session
from bench.sink import insight_values
from vectoros.kafka import start_producer
from vectoros.settings import KafkaSettings

BIG_BATCH = 1024 * 1024


async def setup(session: Session, count: int) -> tuple[str, dict[int, list[tuple[bytes, bytes]]]]:
    topic = session.name("produce")
    await session.create_topics(topic)
    parts: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(session.partitions)}
    for key, value in insight_values(count):
        parts[partition_for(key, session.partitions)].append((key, value))
    return topic, parts


async def run(
    session: Session, topic: str, parts: dict[int, list[tuple[bytes, bytes]]], how: str
) -> float:
    """Records per second, first send to last acknowledgement."""
    settings = KafkaSettings(kafka_bootstrap_servers=session.bootstrap, metrics_enabled=False)
    overrides: dict[str, Any] = {} if how == "send" else {"max_batch_size": BIG_BATCH}
    if how == "send_batch":
        overrides["max_request_size"] = 4 * BIG_BATCH
    producer = await start_producer(settings, **overrides)
    count = sum(len(v) for v in parts.values())
    try:
        started = time.perf_counter()
        if how == "send_batch":
            await asyncio.gather(*(_batches(producer, topic, p, recs) for p, recs in parts.items()))
        else:
            futures = [
                await producer.send(topic, key=key, value=value, partition=p)
                for p, recs in parts.items()
                for key, value in recs
            ]
            await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _batches(
    producer: Any, topic: str, partition: int, recs: list[tuple[bytes, bytes]]
) -> None:
    futures = []
    batch = producer.create_batch()
    for key, value in recs:
        if batch.append(key=key, value=value, timestamp=None) is None:
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)
