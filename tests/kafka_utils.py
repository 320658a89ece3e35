"""Test helpers that talk to the real broker: read a topic to its end, run a monitor in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.monitor import Monitor
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.thresholds import RulesConfig
from producer.publisher import DealEventPublisher
from schemas.events import DealEvent
from schemas.insights import InsightEvent, insight_adapter
from vectoros.kafka import ensure_standard_topics, start_producer
from vectoros.ops_server import Health

WAIT_LIMIT = 60.0  # a safety bound for "never happens", not a timing goal


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``, partition by partition in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        done: set[int] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT
        while len(done) < len(tps) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for tp, recs in batch.items():
                records[tp.partition].extend(recs)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    done.add(tp.partition)
        return [r for p in sorted(records) for r in records[p]]
    finally:
        await consumer.stop()


async def read_insights(bootstrap: str, topic: str) -> list[InsightEvent]:
    return [insight_adapter.validate_json(r.value) for r in await read_all(bootstrap, topic)]


@dataclass
class Topics:
    events: str
    insights: str
    dlq: str
    state: str


def monitor_settings(bootstrap: str, names: Any, partitions: int = 3, **kw: Any) -> MonitorSettings:
    prefix = names("t")
    return MonitorSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_events=f"{prefix}-events",
        topic_insights=f"{prefix}-insights",
        topic_dlq=f"{prefix}-dlq",
        topic_state=f"{prefix}-state",
        topic_partitions=partitions,
        monitor_group_id=names("g"),
        metrics_enabled=False,
        fetch_timeout_ms=50,
        **kw,
    )


@contextlib.asynccontextmanager
async def running_monitor(
    settings: MonitorSettings, rules: RulesConfig | None = None
) -> AsyncIterator[Monitor]:
    """A monitor consuming in the background; stopped (cleanly) on exit."""
    await ensure_standard_topics(settings)
    monitor = Monitor(
        settings, rules or RulesConfig(), MonitorMetrics(CollectorRegistry()), Health()
    )
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        yield monitor
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


async def wait_ready(monitor: Monitor) -> None:
    """Until partitions are assigned and restored (what /readyz reports)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while not monitor.ready():
        if loop.time() > deadline:
            raise AssertionError("monitor did not become ready")
        await asyncio.sleep(0.05)


async def wait_caught_up(monitor: Monitor) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    # two consecutive observations: the high watermark is refreshed by the next fetch
    streak = 0
    while streak < 3:
        if loop.time() > deadline:
            raise AssertionError("monitor did not catch up")
        streak = streak + 1 if monitor.caught_up() else 0
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def publisher_for(settings: MonitorSettings) -> AsyncIterator[DealEventPublisher]:
    producer = await start_producer(settings)
    try:
        # scenarios run in their own time: records carry it, as the simulator's do
        yield DealEventPublisher(producer, settings.topic_events, event_time=True)
    finally:
        await producer.stop()


async def publish(settings: MonitorSettings, items: Iterable[DealEvent]) -> None:
    async with publisher_for(settings) as pub:
        await pub.publish_many(items)
        await pub.flush()
