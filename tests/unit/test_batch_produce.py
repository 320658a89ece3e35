"""BatchProducer: records grouped per partition, a full batch sent and a new one started."""

from __future__ import annotations

import asyncio
from typing import Any

from vectoros.batch_produce import BatchProducer, OutRecord


class FakeBatch:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.closed = False

    def append(
        self, *, key: bytes | None, value: bytes | None, timestamp: Any, headers: Any
    ) -> object | None:
        size = sum(len(v or b"") for _, v in self.records) + len(value or b"")
        if size > self.limit:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.limit)

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        self.sent.append((topic, partition, batch.records))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}


async def test_records_are_grouped_and_split_into_batches() -> None:
    producer = FakeProducer(limit=10)
    records = [OutRecord("t", b"k", b"12345", partition=1) for _ in range(5)]
    records.append(OutRecord("t", b"k", b"x", partition=2))
    await BatchProducer(producer).send_all(records)
    assert [(p, len(r)) for _, p, r in producer.sent] == [(1, 2), (1, 2), (1, 1), (2, 1)]


async def test_keyed_records_follow_the_default_partitioner() -> None:
    producer = FakeProducer(limit=1000)
    await BatchProducer(producer).send_all([OutRecord("t", b"deal-1", b"v")] * 3)
    ((_, partition, records),) = producer.sent
    assert len(records) == 3
    assert partition in {0, 1, 2}
