"""An in-memory broker with the interface of ``vectoros.consume_loop.KafkaBroker``.

Handlers run on it as on Kafka, without a network: topics are lists of records per partition,
keyed records are placed by Kafka's partitioner, each consumer group has its committed offsets,
and ``send`` returns once the record is appended (the acknowledgement). One consumer per group
is assigned every partition of its topics (enough for a test); a test plays a rebalance with
``MemoryConsumer.rebalance`` (eager: everything revoked, then the new set assigned) or takes
some partitions away with ``MemoryConsumer.revoke``.

``down = True`` makes every start, send, commit and topic creation fail as an unreachable broker
does (``KafkaConnectionError``), so outage handling can be tested too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from vectoros.batch_produce import OutRecord
from vectoros.consume_loop import Consumer, Producer, Record, Subscription
from vectoros.partitioner import murmur2


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None  # the broker timestamp, ms (None: not set)
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class MemoryBroker:
    """Topics, committed offsets and the records published, all in memory."""

    partitions: int = 3
    down: bool = False
    topics: dict[str, list[list[MemoryRecord]]] = field(default_factory=dict)
    committed: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)
    _appended: asyncio.Condition | None = field(default=None, init=False, repr=False)

    @property
    def description(self) -> str:
        return "in-memory broker"

    def _check(self) -> None:
        if self.down:
            raise KafkaConnectionError("in-memory broker is down")

    def _condition(self) -> asyncio.Condition:
        if self._appended is None:
            self._appended = asyncio.Condition()
        return self._appended

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        if name not in self.topics:
            self.topics[name] = [[] for _ in range(partitions or self.partitions)]

    async def ensure_topics(self, topics: Mapping[str, int]) -> None:
        self._check()
        for name, count in topics.items():
            self.create_topic(name, count)

    def consumer(self, subscription: Subscription) -> Consumer:
        return MemoryConsumer(self, subscription)

    def producer(self) -> Producer:
        return MemoryProducer(self)

    async def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> int:
        """Add a record (the test's own producer); returns its offset. Without ``partition``, a
        keyed record goes where Kafka's partitioner puts it, an unkeyed one to partition 0."""
        self.create_topic(topic)
        parts = self.topics[topic]
        if partition is None:
            partition = (murmur2(key) & 0x7FFFFFFF) % len(parts) if key is not None else 0
        log = parts[partition]
        log.append(MemoryRecord(topic, partition, len(log), key, value, timestamp, tuple(headers)))
        condition = self._condition()
        async with condition:
            condition.notify_all()
        return len(log) - 1

    def records(self, topic: str) -> list[MemoryRecord]:
        """Every record of ``topic``, partition by partition."""
        return [r for part in self.topics.get(topic, []) for r in part]

    def values(self, topic: str) -> list[bytes | None]:
        return [r.value for r in self.records(topic)]

    def committed_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        return {tp: off for (group, tp), off in self.committed.items() if group == group_id}


class MemoryProducer:
    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def start(self) -> None:
        self._broker._check()

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self._broker._check()
        await self._broker.append(topic, value, key)

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        self._broker._check()
        for topic, key, value, headers, partition in records:
            await self._broker.append(topic, value, key, partition=partition, headers=headers or ())


class MemoryConsumer:
    """Reads every partition of the subscription's topics from the group's committed offsets."""

    def __init__(self, broker: MemoryBroker, subscription: Subscription) -> None:
        self._broker = broker
        self._sub = subscription
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._started = False

    async def start(self) -> None:
        self._broker._check()
        for topic in self._sub.topics:
            self._broker.create_topic(topic)
        assigned = {
            TopicPartition(topic, p)
            for topic in self._sub.topics
            for p in range(len(self._broker.topics[topic]))
        }
        group = self._sub.group_id
        self._positions = {tp: self._broker.committed.get((group, tp), 0) for tp in assigned}
        self._started = True
        if self._sub.on_assigned is not None:
            await self._sub.on_assigned(set(assigned))

    async def stop(self) -> None:
        if self._started and self._sub.on_revoked is not None:
            await self._sub.on_revoked(set(self._positions))
        self._started = False

    async def rebalance(self, assigned: Collection[TopicPartition]) -> None:
        """An eager rebalance: every partition revoked, then ``assigned`` assigned, each read
        from the group's committed offset."""
        if self._sub.on_revoked is not None:
            await self._sub.on_revoked(set(self._positions))
        group = self._sub.group_id
        self._positions = {tp: self._broker.committed.get((group, tp), 0) for tp in assigned}
        self._paused.intersection_update(assigned)
        if self._sub.on_assigned is not None:
            await self._sub.on_assigned(set(assigned))

    async def revoke(self, partitions: Collection[TopicPartition]) -> None:
        """``partitions`` taken away (the others stay, as in an incremental rebalance)."""
        if self._sub.on_revoked is not None:
            await self._sub.on_revoked(set(partitions))
        for tp in partitions:
            self._positions.pop(tp, None)
            self._paused.discard(tp)

    def _available(self, max_records: int | None) -> dict[TopicPartition, list[Record]]:
        out: dict[TopicPartition, list[Record]] = {}
        room = max_records if max_records is not None else 10**9
        for tp in sorted(self._positions):
            if tp in self._paused or room <= 0:
                continue
            log = self._broker.topics[tp.topic][tp.partition]
            start = self._positions[tp]
            take = log[start : start + room]
            if take:
                out[tp] = list(take)
                self._positions[tp] = start + len(take)
                room -= len(take)
        return out

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[Record]]:
        got = self._available(max_records)
        if got or timeout_ms <= 0:
            return got
        condition = self._broker._condition()
        try:
            async with condition:
                await asyncio.wait_for(condition.wait(), timeout_ms / 1000)
        except TimeoutError:
            return {}
        return self._available(max_records)

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        self._broker._check()
        for tp, offset in (offsets if offsets is not None else self._positions).items():
            self._broker.committed[(self._sub.group_id, tp)] = offset

    def assignment(self) -> Collection[Any]:
        return set(self._positions)

    def highwater(self, partition: Any) -> int | None:
        return len(self._broker.topics[partition.topic][partition.partition])

    def pause(self, *partitions: Any) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: Any) -> None:
        self._paused.difference_update(partitions)

    def seek(self, partition: Any, offset: int) -> None:
        self._positions[partition] = offset

    async def committed(self, partition: Any) -> int | None:
        return self._broker.committed.get((self._sub.group_id, partition))
