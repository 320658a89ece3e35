"""The sink's handler on the in-memory broker: what a deployment does, without a network."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumer.sink.metrics import SinkMetrics
from consumer.sink.service import sink_loop
from consumer.sink.settings import SinkSettings
from consumer.sink.store import InMemoryInsightStore
from schemas.insights import Lifecycle, insight_adapter
from tests.unit.test_consume_loop import LIMIT, until
from tests.unit.test_sink_service import make_event
from vectoros.memory_broker import MemoryBroker

TOPIC = "deal-insights"


def settings() -> SinkSettings:
    return SinkSettings(
        topic_insights=TOPIC,
        sink_flush_ms=5,
        db_retry_initial_seconds=0.01,
        db_retry_max_seconds=0.02,
    )


async def publish(broker: MemoryBroker, *values: bytes) -> None:
    for value in values:
        await broker.append(TOPIC, value, b"deal")


async def test_insights_are_written_then_committed() -> None:
    broker, store = MemoryBroker(), InMemoryInsightStore()
    registry = CollectorRegistry()
    sink = sink_loop(settings(), SinkMetrics(registry), broker, store)
    raised = make_event(1)
    resolved = make_event(1, Lifecycle.RESOLVED)
    await publish(broker, insight_adapter.dump_json(raised), b"junk")
    await publish(broker, insight_adapter.dump_json(resolved))
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    await until(sink.caught_up, task)
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert store.insights["insight-1"].lifecycle == "resolved"
    [(tp, offset)] = broker.committed_offsets("vectoros-sink").items()
    assert offset == 3  # past the invalid record too
    assert tp.topic == TOPIC
    assert registry.get_sample_value("vectoros_sink_invalid_messages_total") == 1


async def test_a_database_outage_retries_the_batch_and_commits_after_the_write() -> None:
    broker, store = MemoryBroker(partitions=1), InMemoryInsightStore()
    registry = CollectorRegistry()
    sink = sink_loop(settings(), SinkMetrics(registry), broker, store)
    store.fail_with = [OSError("connection refused"), OSError("connection refused")]
    await publish(broker, insight_adapter.dump_json(make_event(1)))
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    await until(lambda: bool(broker.committed_offsets("vectoros-sink")), task)
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert store.calls == 3
    assert set(store.insights) == {"insight-1"}
    assert broker.committed_offsets("vectoros-sink") == {TopicPartition(TOPIC, 0): 1}
    assert registry.get_sample_value("vectoros_sink_database_errors_total") == 2


async def test_stopped_while_the_database_is_down_nothing_is_committed() -> None:
    broker, store = MemoryBroker(partitions=1), InMemoryInsightStore()
    sink = sink_loop(settings(), SinkMetrics(CollectorRegistry()), broker, store)
    store.fail_with = [OSError("down")] * 1000
    await publish(broker, insight_adapter.dump_json(make_event(1)))
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    await until(lambda: store.calls >= 3, task)
    assert not sink.ready()
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert broker.committed_offsets("vectoros-sink") == {}
    assert not store.insights
