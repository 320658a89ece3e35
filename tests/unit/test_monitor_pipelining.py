"""The monitor's pipeline on the consume loop, driven through the in-memory broker (no network):
batch N+1 is applied while batch N is published and committed, its outputs go out only after
batch N's commit, a rebalance waits for the batch in flight and drops what was applied ahead for
the revoked partitions, partitions handed back at their committed offset keep their state, a
stop finishes every applied batch, and a refused commit is survived.

The consumer hands out scripted batches (records of the in-memory topic). Each scenario is
ordered by events (a commit held until something happened), never by time; a broken pipeline
shows as a hang, caught by ``LIMIT``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry

from consumer.changelog import META_KEY, record_offset
from consumer.monitor.batch import BatchProcessor, Tally
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.service import Monitor
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig
from schemas.events import DealCreated, Stage, encode_event
from schemas.insights import insight_adapter
from vectoros.batch_produce import OutRecord
from vectoros.consume_loop import Subscription
from vectoros.memory_broker import MemoryBroker, MemoryConsumer, MemoryProducer, MemoryRecord
from vectoros.ops_server import Health

LIMIT = 30.0  # a hang guard, not a measurement
TOPIC = "events"
GROUP = "monitor-test"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def created(partition: int, offset: int) -> tuple[bytes, bytes]:
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
    return deal.encode(), encode_event(event)


Span = tuple[int, int, int]


def batch(*spans: Span) -> list[Span]:
    """(partition, first offset, count) per partition."""
    return list(spans)


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


class ScriptedConsumer(MemoryConsumer):
    """Hands out the scripted batches (of the topic's records), then nothing; ``gates[n]``
    holds the n-th commit."""

    def __init__(self, broker: ScriptedBroker, subscription: Subscription) -> None:
        super().__init__(broker, subscription)
        self.world = broker.world
        self.script = list(broker.script)
        self.gates = broker.gates
        self.commits = 0
        self._log = broker.topics

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[Any]]:
        if self.script:
            spans = self.script.pop(0)
            return {
                TopicPartition(TOPIC, p): self._log[TOPIC][p][first : first + n]
                for p, first, n in spans
            }
        await asyncio.sleep(0.005)
        return {}

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        assert offsets is not None
        n = self.commits
        self.commits += 1
        gate = self.gates.get(n)
        if gate is not None:
            await gate()
        await super().commit(offsets)
        self.world.add("committed", {tp.partition: o for tp, o in offsets.items()})


class WatchedProducer(MemoryProducer):
    def __init__(self, broker: ScriptedBroker) -> None:
        super().__init__(broker)
        self.world = broker.world

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        await super().send_all(records)
        for r in records:
            if r.key == META_KEY and r.value is not None:
                self.world.add("sent", r.partition, record_offset(r.value))


class ScriptedBroker(MemoryBroker):
    def __init__(self, world: World, script: list[list[Span]], partitions: int) -> None:
        super().__init__(partitions=partitions)
        self.world = world
        self.script = script
        self.gates: dict[int, Callable[[], Any]] = {}  # the n-th commit waits for gates[n]()
        self.consumers: list[ScriptedConsumer] = []
        self.create_topic(TOPIC)
        ends: dict[int, int] = {}
        for spans in script:
            for p, first, n in spans:
                ends[p] = max(ends.get(p, 0), first + n)
        for p, end in sorted(ends.items()):
            for offset in range(end):
                key, value = created(p, offset)
                self.topics[TOPIC][p].append(MemoryRecord(TOPIC, p, offset, key, value, NOW_MS))

    def consumer(self, subscription: Subscription) -> ScriptedConsumer:
        consumer = ScriptedConsumer(self, subscription)
        self.consumers.append(consumer)
        return consumer

    def producer(self) -> WatchedProducer:
        return WatchedProducer(self)


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
    broker: ScriptedBroker
    stop: asyncio.Event
    registry: CollectorRegistry
    task: asyncio.Task[None] | None = None

    @property
    def consumer(self) -> ScriptedConsumer:
        return self.broker.consumers[-1]

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


def harness(batches: list[list[Span]], partitions: int = 2, **kw: Any) -> Harness:
    world = World()
    settings = MonitorSettings(
        kafka_bootstrap_servers="unused:9092",  # never dialled: everything is in memory
        topic_events=TOPIC,
        monitor_group_id=GROUP,
        metrics_enabled=False,
        fetch_timeout_ms=5,
        **kw,
    )
    registry = CollectorRegistry()
    broker = ScriptedBroker(world, batches, partitions)
    monitor = Monitor(settings, RulesConfig(), MonitorMetrics(registry), Health(), broker=broker)
    processor = WatchedProcessor(settings)
    processor.world = world
    monitor.handler.processor = processor
    return Harness(world, monitor, broker, asyncio.Event(), registry)


def consumed_total(registry: CollectorRegistry) -> float:
    """vectoros_monitor_events_consumed_total over every type."""
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "vectoros_monitor_events_consumed_total"
    )


def consumed(h: Harness) -> float:
    return consumed_total(h.registry)


async def guarded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, LIMIT)


async def test_next_batch_applied_while_the_previous_is_in_flight_sent_after_its_commit() -> None:
    h = harness([batch((0, 0, 2)), batch((0, 2, 2)), batch((0, 4, 2))])
    w = h.world
    # the first commit completes only once the second batch has been applied: without the
    # pipeline this never happens (the hang guard fails the test)
    h.broker.gates[0] = lambda: w.until(lambda: ("applied", 0, 3) in w.log)
    h.start()
    await guarded(w.until(lambda: len(w.of("committed")) == 3))
    assert h.monitor.handler.assignment.committed == {0: 6, 1: 0}
    assert h.monitor.caught_up()
    assert h.checkpoints() == 3
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


async def test_revoke_waits_for_the_batch_in_flight_and_drops_what_was_applied_ahead() -> None:
    h = harness([batch((0, 0, 2), (1, 0, 2)), batch((0, 2, 2), (1, 2, 2))])
    w = h.world
    release = asyncio.Event()
    h.broker.gates[0] = release.wait
    h.start()
    # batch 0 is in flight (its commit held), batch 1 is applied ahead
    await guarded(w.until(lambda: ("applied", 1, 3) in w.log))
    revoked = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    listener = asyncio.create_task(h.consumer.revoke(revoked))
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
    assert h.monitor.handler.assignment.committed == {}
    assert consumed(h) == 4, "what was dropped unsent is counted by whoever replays it"


async def test_only_the_revoked_partitions_of_a_batch_applied_ahead_are_dropped() -> None:
    h = harness([batch((0, 0, 2), (1, 0, 2)), batch((0, 2, 2), (1, 2, 2))])
    w = h.world
    release = asyncio.Event()
    h.broker.gates[0] = release.wait
    h.start()
    await guarded(w.until(lambda: ("applied", 1, 3) in w.log))
    listener = asyncio.create_task(h.consumer.revoke([TopicPartition(TOPIC, 1)]))
    release.set()
    await guarded(listener)
    await guarded(w.until(lambda: len(w.of("committed")) == 2))
    assert h.monitor.handler.assignment.committed == {0: 4}
    await h.finish()

    assert [offsets for _, offsets in w.of("committed")] == [{0: 2, 1: 2}, {0: 4}]
    assert sorted(w.of("sent")) == [("sent", 0, 2), ("sent", 0, 4), ("sent", 1, 2)]
    assert consumed(h) == 6  # 2 + 2 of batch 0, the 2 of partition 0 in batch 1


async def test_stop_finishes_every_applied_batch_before_leaving() -> None:
    h = harness([batch((0, 0, 2)), batch((0, 2, 2))])
    w = h.world
    release = asyncio.Event()
    h.broker.gates[0] = release.wait
    h.start()
    await guarded(w.until(lambda: ("applied", 0, 3) in w.log))
    h.stop.set()
    release.set()
    await guarded(h.task)

    assert w.of("committed") == [("committed", {0: 2}), ("committed", {0: 4})]
    assert w.of("sent") == [("sent", 0, 2), ("sent", 0, 4)]
    assert h.broker.committed_offsets(GROUP)[TopicPartition(TOPIC, 0)] == 4


async def test_a_commit_refused_after_a_rebalance_is_survived() -> None:
    h = harness([batch((0, 0, 2)), batch((0, 2, 2))])
    w = h.world

    async def refuse() -> None:
        await w.until(lambda: ("applied", 0, 3) in w.log)
        raise CommitFailedError("the group rebalanced")

    h.broker.gates[0] = refuse
    h.start()
    await guarded(w.until(lambda: len(w.of("committed")) == 1))
    assert h.monitor.handler.assignment.committed[0] == 4
    await h.finish()

    # the refused batch is not counted as committed; the next one covers its offsets
    assert w.of("committed") == [("committed", {0: 4})]
    assert h.checkpoints() == 1


async def test_partitions_handed_back_at_their_committed_offset_keep_their_state() -> None:
    h = harness([batch((0, 0, 2), (1, 0, 2))])
    w = h.world
    h.start()
    await guarded(w.until(lambda: len(w.of("committed")) == 1))
    before = dict(h.monitor.partitions)
    assert sorted(len(state.deals) for state in before.values()) == [2, 2]
    # an eager rebalance hands both back at their committed offsets: no restore (which would
    # dial the unused bootstrap address), the very same states
    await guarded(h.consumer.rebalance({TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}))
    assert set(h.monitor.partitions) == {0, 1}
    assert all(h.monitor.partitions[p] is before[p] for p in before)
    assert h.registry.get_sample_value("vectoros_monitor_rebalances_total") == 2
    assert h.registry.get_sample_value("vectoros_monitor_restored_records_total") == 0
    await h.finish()


async def test_the_monitor_runs_on_the_in_memory_broker() -> None:
    """The whole service through the seam: events in, DLQ and changelog out, offsets committed."""
    broker = MemoryBroker(partitions=2)
    settings = MonitorSettings(
        kafka_bootstrap_servers="unused:9092",
        topic_events=TOPIC,
        monitor_group_id=GROUP,
        metrics_enabled=False,
        fetch_timeout_ms=5,
    )
    registry = CollectorRegistry()
    health = Health()
    monitor = Monitor(settings, RulesConfig(), MonitorMetrics(registry), health, broker=broker)
    for offset in range(3):
        key, value = created(0, offset)
        await broker.append(TOPIC, value, key, timestamp=NOW_MS)
    await broker.append(TOPIC, b"not json", b"d-bad", timestamp=NOW_MS)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    _running.append(task)
    while not (monitor.ready() and monitor.caught_up()):
        assert not task.done()
        await asyncio.sleep(0.01)
    assert health.ready()
    stop.set()
    await guarded(task)

    committed = {tp.partition: offset for tp, offset in broker.committed_offsets(GROUP).items()}
    assert committed == {p: len(log) for p, log in enumerate(broker.topics[TOPIC]) if log}
    [dlq] = broker.records(settings.topic_dlq)
    assert dlq.value == b"not json"
    metas = [r for r in broker.records(settings.topic_state) if r.key == META_KEY]
    assert metas, "no changelog checkpoint"
    deals = {r.key for r in broker.records(settings.topic_state) if r.key != META_KEY}
    assert deals == {f"d-0-{o}".encode() for o in range(3)}
    for record in broker.records(settings.topic_insights):
        assert record.value is not None
        insight_adapter.validate_json(record.value)
    assert consumed_total(registry) == 4
