"""Monitor throughput, end to end, and the reference: a bare aiokafka loop with state in a dict.

Both read the same pre-loaded ``deal-events`` topic from offset 0 (a fresh consumer group each
run) until every partition is committed to its end. events/s = records / (time from the group
assignment being done to the last commit). Group join (subscribe → assigned and restored) is
reported separately.

Monitor: the real ``consumer.monitor.Monitor`` in this process, default settings (batches of
up to 5000 records, acks=all, changelog + insights produced and acknowledged before every
commit). Completion is observed through its public ``ready()`` / ``caught_up()`` and checked
against its ``vectoros_monitor_events_consumed_total`` counter.

Reference ("bare loop"): what the issue calls the hand-written aiokafka loop keeping state only in
a dict: ``getmany`` → the same ``decode`` and pure ``PartitionState`` (rules, lifecycle, insight
rendering) → the insights (the JSON bytes the core renders) produced with one
``create_batch``/``send_batch`` per partition (``BatchProducer``, as the monitor) → wait for the
acknowledgements → commit. No changelog, no metrics, no DLQ handling. It uses the project's
pure core, so it gets faster with it: the ratio monitor / bare loop is the cost of the Kafka
shell (changelog, metrics, checkpointing) over the least a correct loop must do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import CollectorRegistry

from bench.data import MAX_EVENT_AGE_SECONDS, Dataset
from bench.env import Session, bench_rules
from consumer.decode import decode
from consumer.monitor import Monitor
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from schemas.events import Tick
from vectoros.batch_produce import BatchProducer, OutRecord
from vectoros.errors import EventRejected
from vectoros.kafka import start_producer
from vectoros.ops_server import Health

logger = logging.getLogger("bench")

POLL_S = 0.005
BATCH_BYTES = 512 * 1024
LIMIT_S = 900.0  # a safety bound, not a goal


@dataclass
class RunResult:
    records: int
    join_s: float
    process_s: float
    insights: int
    cpu_s: float  # this process, during the processing window
    broker_cpu_s: float | None

    @property
    def rate(self) -> float:
        return self.records / self.process_s


def monitor_settings(
    session: Session, events_topic: str, prefix: str, **kw: Any
) -> MonitorSettings:
    return MonitorSettings(
        kafka_bootstrap_servers=session.bootstrap,
        topic_events=events_topic,
        topic_insights=f"{prefix}-insights",
        topic_dlq=f"{prefix}-dlq",
        topic_state=f"{prefix}-state",
        topic_partitions=session.partitions,
        monitor_group_id=f"{prefix}-group",
        metrics_enabled=False,
        max_event_age=MAX_EVENT_AGE_SECONDS,
        **kw,
    )


def _counter_total(registry: CollectorRegistry, name: str) -> int:
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return int(total)


async def run_monitor(
    session: Session, data: Dataset, events_topic: str, *, profile: Any = None
) -> RunResult:
    prefix = session.name("mon")
    settings = monitor_settings(session, events_topic, prefix)
    outputs = (settings.topic_insights, settings.topic_dlq, settings.topic_state)
    await session.create_topics(*outputs)
    registry = CollectorRegistry()
    monitor = Monitor(settings, bench_rules(), MonitorMetrics(registry), Health())
    stop = asyncio.Event()
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    task = asyncio.create_task(monitor.run(stop))
    try:
        while not monitor.ready():
            await _check(task, started)
        assigned = time.perf_counter()
        cpu0, broker0 = time.process_time(), session.broker_cpu_seconds()
        while not monitor.caught_up():
            await _check(task, started)
        done = time.perf_counter()
        cpu1, broker1 = time.process_time(), session.broker_cpu_seconds()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        if profile is not None:
            profile.disable()
    consumed = _counter_total(registry, "vectoros_monitor_events_consumed_total")
    if consumed != data.records:
        raise AssertionError(f"monitor consumed {consumed} records, expected {data.records}")
    insights = _counter_total(registry, "vectoros_monitor_insights_total")
    await session.drop_topics(*outputs)
    return RunResult(
        data.records,
        assigned - started,
        done - assigned,
        insights,
        cpu1 - cpu0,
        None if broker0 is None or broker1 is None else broker1 - broker0,
    )


async def _check(task: asyncio.Task[None], started: float) -> None:
    if task.done():
        task.result()
        raise AssertionError("the monitor stopped on its own")
    if time.perf_counter() - started > LIMIT_S:
        raise AssertionError("the monitor did not catch up in time")
    await asyncio.sleep(POLL_S)


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.at = time.perf_counter()


# A job for the plain loop: one partition's fetched records -> the insights, (key, value) each.
Job = Callable[[int, list[Any]], list[tuple[bytes, bytes]]]


def pure_core_job(max_bytes: int) -> Job:
    """The monitor's work: ``decode`` and a ``PartitionState`` per partition."""
    rules = bench_rules()
    states: dict[int, PartitionState] = {}

    def job(partition: int, recs: list[Any]) -> list[tuple[bytes, bytes]]:
        state = states.get(partition)
        if state is None:
            state = states[partition] = PartitionState(rules)
        found = []
        for rec in recs:
            try:
                event = decode(rec.value, rec.key, max_bytes=max_bytes)
            except EventRejected:
                continue
            step = state.tick(event) if isinstance(event, Tick) else state.apply(event)
            found += [(insight.deal_id.encode(), insight.value) for insight in step.insights]
        state.dirty.clear()
        return found

    return job


async def run_bare_loop(session: Session, data: Dataset, events_topic: str) -> RunResult:
    """The reference loop with the project's pure core."""
    max_bytes = monitor_settings(session, events_topic, "x").max_event_bytes
    return await run_plain_loop(session, data, events_topic, "bare", pure_core_job(max_bytes))


async def run_plain_loop(
    session: Session, data: Dataset, events_topic: str, name: str, job: Job
) -> RunResult:
    """``getmany`` -> ``job`` per partition -> insights with one ``send_batch`` per partition ->
    every ack -> commit, until every partition is committed to its end."""
    prefix = session.name(name)
    settings = monitor_settings(session, events_topic, prefix)
    await session.create_topics(settings.topic_insights)
    ends = data.end_offsets()
    producer = await start_producer(settings, max_batch_size=BATCH_BYTES)
    batcher = BatchProducer(producer)  # what the monitor produces with
    topic = settings.topic_insights
    consumer = AIOKafkaConsumer(
        bootstrap_servers=session.bootstrap,
        group_id=settings.monitor_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    listener = _Assigned()
    consumer.subscribe([events_topic], listener=listener)
    position: dict[int, int] = {}
    insights = 0
    records = 0
    started = time.perf_counter()
    await consumer.start()
    try:
        cpu0: float | None = None
        broker0: float | None = None
        while any(position.get(p, 0) < end for p, end in ends.items()):
            if time.perf_counter() - started > LIMIT_S:
                raise AssertionError(f"the {name} loop did not finish in time")
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if cpu0 is None and listener.at is not None:
                cpu0, broker0 = time.process_time(), session.broker_cpu_seconds()
            if not batch:
                continue
            out: list[OutRecord] = []
            offsets: dict[TopicPartition, int] = {}
            for tp, recs in batch.items():
                found = job(tp.partition, recs)
                for key, value in found:
                    out.append(OutRecord(topic, key, value))
                insights += len(found)
                records += len(recs)
                offsets[tp] = recs[-1].offset + 1
            await batcher.send_all(out)
            await consumer.commit(offsets)
            for tp, offset in offsets.items():
                position[tp.partition] = offset
        done = time.perf_counter()
        cpu1, broker1 = time.process_time(), session.broker_cpu_seconds()
    finally:
        await consumer.stop()
        await producer.stop()
    if records != data.records:
        raise AssertionError(f"{name} loop read {records} records, expected {data.records}")
    assigned = listener.at or started
    await session.drop_topics(settings.topic_insights)
    return RunResult(
        records,
        assigned - started,
        done - assigned,
        insights,
        cpu1 - (cpu0 or 0.0),
        None if broker0 is None or broker1 is None else broker1 - broker0,
    )
