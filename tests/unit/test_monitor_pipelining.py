"""The monitor's pipeline, against a scripted consumer and producer (no broker): batch N+1 is
applied while batch N is published and committed, its outputs go out only after batch N's
commit, a rebalance waits for the batch in flight and drops what was applied ahead for the
revoked partitions, a stop finishes every applied batch, and a refused commit is survived.

Each scenario is ordered by events (a commit held until something happened), never by time; a
broken pipeline shows as a hang, caught by ``LIMIT``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry

from consumer.changelog import META_KEY, record_offset
from consumer.monitor.batch import BatchProcessor, Tally
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.service import Monitor, _Rebalance
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig
from schemas.events import DealCreated, Stage, encode_event
from vectoros.batch_produce import OutRecord
from vectoros.ops_server import Health

LIMIT = 30.0  # a hang guard, not a measurement
TOPIC = "events"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None


def rec(partition: int, offset: int) -> Rec:
    deal = f"d-{partition}-{offset}"
    event = DealCreated(
        event_id=f"e-{partition}-{offset}",
        workspace_id="ws-pipe",
        deal_id=deal,
        occurred_at=NOW + dt.timedelta(minutes=offset),
        title=f"Deal {deal}",
        value=5_000,
        currency="USD",
        stage=Stage.LEAD,
        probability=10,
        close_date=(NOW + dt.timedelta(days=60)).date(),
        owner_id="owner-1",
    )
    ms = int(NOW.timestamp() * 1000)
    return Rec(TOPIC, partition, offset, deal.encode(), encode_event(event), ms)


def batch(*spans: tuple[int, int, int]) -> dict[TopicPartition, list[Rec]]:
    """(partition, first offset, count) per partition."""
    return {
        TopicPartition(TOPIC, p): [rec(p, o) for o in range(first, first + n)]
        for p, first, n in spans
    }


@dataclass
class World:
    """What happened, in order: ("applied", partition, last offset), ("sent", partition, offset
    of its checkpoint), ("committed", {partition: offset})."""

    log: list[tuple[Any, ...]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, *entry: Any) -> None:
        self.log.append(entry)
        self.changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.changed.clear()
            await self.changed.wait()

    def index(self, *entry: Any) -> int:
        return self.log.index(entry)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == kind]


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, world: World, partitions: int) -> None:
        self.world = world
        self.partitions = partitions

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        for key, value in batch.records:
            if key == META_KEY and value is not None:
                self.world.add("sent", partition, record_offset(value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def stop(self) -> None:
        pass


class FakeConsumer:
    """Hands out the scripted batches, then nothing; ``gates[n]`` holds the n-th commit."""

    def __init__(self, world: World, batches: list[dict[TopicPartition, list[Rec]]]) -> None:
        self.world = world
        self.batches = list(batches)
        self.gates: dict[int, Callable[[], Any]] = {}
        self.commits = 0
        self.ends: dict[int, int] = {}
        for b in batches:
            for tp, records in b.items():
                self.ends[tp.partition] = max(
                    self.ends.get(tp.partition, 0), records[-1].offset + 1
                )

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Rec]]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.005)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        n = self.commits
        self.commits += 1
        gate = self.gates.get(n)
        if gate is not None:
            await gate()
        self.world.add("committed", {tp.partition: o for tp, o in offsets.items()})

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp.partition)

    async def stop(self) -> None:
        pass


class WatchedProcessor(BatchProcessor):
    world: World

    def process_records(
        self,
        state: PartitionState,
        records: Iterable[Any],
        out: list[OutRecord],
        tally: Tally,
    ) -> None:
        records = list(records)
        super().process_records(state, records, out, tally)
        self.world.add("applied", records[0].partition, records[-1].offset)


@dataclass
class Harness:
    world: World
    monitor: Monitor
    consumer: FakeConsumer
    stop: asyncio.Event
    registry: CollectorRegistry
    task: asyncio.Task[None] | None = None

    def checkpoints(self) -> float | None:
        return self.registry.get_sample_value("vectoros_monitor_checkpoint_seconds_count")

    def start(self) -> None:
        self.task = asyncio.create_task(self.monitor.run(self.stop))
        _running.append(self.task)

    async def finish(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, LIMIT)


_running: list[asyncio.Task[None]] = []


@pytest.fixture(autouse=True)
async def _no_monitor_left() -> AsyncIterator[None]:
    """A failed scenario leaves its monitor waiting: cancel it, so the failure reads clean."""
    yield
    while _running:
        task = _running.pop()
        task.cancel()
        await asyncio.wait([task])


def harness(
    batches: list[dict[TopicPartition, list[Rec]]], partitions: int = 2, **kw: Any
) -> Harness:
    world = World()
    settings = MonitorSettings(
        kafka_bootstrap_servers="unused:9092",
        topic_events=TOPIC,
        metrics_enabled=False,
        fetch_timeout_ms=5,
        **kw,
    )
    registry = CollectorRegistry()
    monitor = Monitor(settings, RulesConfig(), MonitorMetrics(registry), Health())
    processor = WatchedProcessor(settings)
    processor.world = world
    monitor.processor = processor
    consumer = FakeConsumer(world, batches)
    producer = FakeProducer(world, partitions)

    async def connect(stop: asyncio.Event) -> tuple[Any, Any]:
        monitor._consumer = consumer
        monitor._started = True
        return producer, consumer

    monitor._connect = connect  # type: ignore[method-assign]
    for p in range(partitions):
        monitor.partitions[p] = monitor.new_partition_state()
        monitor.assignment.committed[p] = 0
    return Harness(world, monitor, consumer, asyncio.Event(), registry)


def consumed(h: Harness) -> float:
    """vectoros_monitor_events_consumed_total over every type."""
    return sum(
        s.value
        for metric in h.registry.collect()
        for s in metric.samples
        if s.name == "vectoros_monitor_events_consumed_total"
    )


async def guarded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, LIMIT)


async def test_next_batch_applied_while_the_previous_is_in_flight_sent_after_its_commit() -> None:
    h = harness([batch((0, 0, 2)), batch((0, 2, 2)), batch((0, 4, 2))])
    w = h.world
    # the first commit completes only once the second batch has been applied: without the
    # pipeline this never happens (the hang guard fails the test)
    h.consumer.gates[0] = lambda: w.until(lambda: ("applied", 0, 3) in w.log)
    h.start()
    await guarded(w.until(lambda: len(w.of("committed")) == 3))
    await h.finish()

    assert w.of("committed") == [
        ("committed", {0: 2}),
        ("committed", {0: 4}),
        ("committed", {0: 6}),
    ]
    assert w.of("sent") == [("sent", 0, 2), ("sent", 0, 4), ("sent", 0, 6)]
    # batch n is applied before batch n-1 is committed, sent only after that commit
    assert w.index("applied", 0, 3) < w.index("committed", {0: 2}) < w.index("sent", 0, 4)
    assert w.index("committed", {0: 4}) < w.index("sent", 0, 6)
    assert h.monitor.assignment.committed == {0: 6, 1: 0}
    h.consumer.ends[1] = 0  # partition 1 is empty
    assert h.monitor.caught_up()
    assert h.checkpoints() == 3


async def test_revoke_waits_for_the_batch_in_flight_and_drops_what_was_applied_ahead() -> None:
    h = harness([batch((0, 0, 2), (1, 0, 2)), batch((0, 2, 2), (1, 2, 2))])
    w = h.world
    release = asyncio.Event()
    h.consumer.gates[0] = release.wait
    h.start()
    # batch 0 is in flight (its commit held), batch 1 is applied ahead
    await guarded(w.until(lambda: ("applied", 1, 3) in w.log))
    revoked = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    listener = asyncio.create_task(_Rebalance(h.monitor).on_partitions_revoked(revoked))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not listener.done(), "partitions dropped while a batch was in flight"
    assert set(h.monitor.partitions) == {0, 1}
    release.set()
    await guarded(listener)
    assert h.monitor.partitions == {}
    await h.finish()

    assert w.of("committed") == [("committed", {0: 2, 1: 2})]
    assert w.index("committed", {0: 2, 1: 2}) == len(w.log) - 1, "something after the revoke"
    # batch 1 was applied but never sent: its partitions' new owner replays it from offset 2
    assert sorted(w.of("sent")) == [("sent", 0, 2), ("sent", 1, 2)]
    assert h.monitor.assignment.committed == {}
    assert consumed(h) == 4, "what was dropped unsent is counted by whoever replays it"


async def test_only_the_revoked_partitions_of_a_batch_applied_ahead_are_dropped() -> None:
    h = harness([batch((0, 0, 2), (1, 0, 2)), batch((0, 2, 2), (1, 2, 2))])
    w = h.world
    release = asyncio.Event()
    h.consumer.gates[0] = release.wait
    h.start()
    await guarded(w.until(lambda: ("applied", 1, 3) in w.log))
    listener = asyncio.create_task(
        _Rebalance(h.monitor).on_partitions_revoked([TopicPartition(TOPIC, 1)])
    )
    release.set()
    await guarded(listener)
    await guarded(w.until(lambda: len(w.of("committed")) == 2))
    await h.finish()

    assert [offsets for _, offsets in w.of("committed")] == [{0: 2, 1: 2}, {0: 4}]
    assert sorted(w.of("sent")) == [("sent", 0, 2), ("sent", 0, 4), ("sent", 1, 2)]
    assert h.monitor.assignment.committed == {0: 4}
    assert consumed(h) == 6  # 2 + 2 of batch 0, the 2 of partition 0 in batch 1


async def test_stop_finishes_every_applied_batch_before_leaving() -> None:
    h = harness([batch((0, 0, 2)), batch((0, 2, 2))])
    w = h.world
    release = asyncio.Event()
    h.consumer.gates[0] = release.wait
    h.start()
    await guarded(w.until(lambda: ("applied", 0, 3) in w.log))
    h.stop.set()
    release.set()
    await guarded(h.task)

    assert w.of("committed") == [("committed", {0: 2}), ("committed", {0: 4})]
    assert w.of("sent") == [("sent", 0, 2), ("sent", 0, 4)]
    assert h.monitor.assignment.committed[0] == 4


async def test_a_commit_refused_after_a_rebalance_is_survived() -> None:
    h = harness([batch((0, 0, 2)), batch((0, 2, 2))])
    w = h.world

    async def refuse() -> None:
        await w.until(lambda: ("applied", 0, 3) in w.log)
        raise CommitFailedError("the group rebalanced")

    h.consumer.gates[0] = refuse
    h.start()
    await guarded(w.until(lambda: len(w.of("committed")) == 1))
    await h.finish()

    # the refused batch is not counted as committed; the next one covers its offsets
    assert w.of("committed") == [("committed", {0: 4})]
    assert h.monitor.assignment.committed[0] == 4
    assert h.checkpoints() == 1
