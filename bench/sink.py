"""Sink throughput: insight events into PostgreSQL.

Insight events are real ones: the pure core (``decode`` → ``PartitionState``) is run once over the
quick event dataset and the insights it publishes are kept as JSON bytes (cached); to reach
``count`` they are repeated with fresh ``insight_id``s, so every event is a new insight (one new
``insight_events`` row and one ``insights`` row inserted each).

* end to end: the events are loaded into a fresh insights topic; the real ``SinkService`` (its
  consumer, ``PostgresInsightStore``, default batch 1000 / flush 100 ms) reads them from offset
  0 until every partition is committed. events/s = count / (assignment → last commit).
* store only: ``PostgresInsightStore.write_batch`` on batches of 1000 decoded events, each with
  its record value (``SourcePosition.raw``), as the service passes them.

Both tables are emptied before every run.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bench.data import events_dataset, partition_for
from bench.env import Record, Session, cache_dir, load
from consumer.decode import decode
from consumer.partition import PartitionState
from consumer.sink.metrics import SinkMetrics
from consumer.sink.service import sink_loop
from consumer.sink.settings import SinkSettings
from consumer.sink.store import PostgresInsightStore, SourcePosition, WriteResult
from consumer.thresholds import RulesConfig
from schemas.events import Tick
from schemas.insights import InsightEvent, insight_adapter
from vectoros.db import PgPool, connect_pool, migrate

BATCH = 1000
VERSION = 1


def real_insights() -> list[bytes]:
    """The insights the pure core publishes over the quick dataset, as JSON (cached)."""
    path = cache_dir() / f"insights-v{VERSION}.pickle"
    if path.exists():
        with path.open("rb") as f:
            cached: list[bytes] = pickle.load(f)  # our own cache file
            return cached
    data = events_dataset(10_000)
    rules = RulesConfig()
    out: list[bytes] = []
    for recs in data.partitions.values():
        state = PartitionState(rules)
        for key, value, _ in recs:
            event = decode(value, key, max_bytes=1 << 20)
            step = state.tick(event) if isinstance(event, Tick) else state.apply(event)
            out.extend(i.value for i in step.insights)
    with path.open("wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    return out


def insight_values(count: int, seed: int = 5) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` insight events with distinct insight ids."""
    base = real_insights()
    rng = random.Random(seed)
    out = []
    for i in range(count):
        body = orjson.loads(base[i % len(base)])
        if i >= len(base):
            body["insight_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append((body["deal_id"].encode(), orjson.dumps(body)))
    return out


@dataclass
class SinkSetup:
    topic: str
    count: int
    events: list[tuple[InsightEvent, SourcePosition]]
    pool: PgPool


async def setup(session: Session, count: int) -> SinkSetup:
    values = insight_values(count)
    parts: dict[int, list[Record]] = {p: [] for p in range(session.partitions)}
    for key, value in values:
        parts[partition_for(key, session.partitions)].append((key, value, None))
    topic = session.name("insights")
    await session.create_topics(topic)
    await load(session.bootstrap, topic, parts)
    events = [
        (insight_adapter.validate_json(v), SourcePosition(topic, 0, i, v))
        for i, (_, v) in enumerate(values)
    ]
    pool = await connect_pool(session.dsn, max_size=4)
    await migrate(pool)
    return SinkSetup(topic, count, events, pool)


async def _truncate(pool: PgPool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE insights, insight_events")


class _CountingStore:
    def __init__(self, inner: PostgresInsightStore) -> None:
        self.inner = inner
        self.events = 0

    async def write_batch(
        self, events: Sequence[tuple[InsightEvent, SourcePosition]]
    ) -> WriteResult:
        result = await self.inner.write_batch(events)
        self.events += len(events)
        return result


@dataclass
class SinkResult:
    rate: float
    join_s: float
    seconds: float


async def run_service(session: Session, s: SinkSetup) -> SinkResult:
    await _truncate(s.pool)
    settings = SinkSettings(
        kafka_bootstrap_servers=session.bootstrap,
        database_url=SecretStr(session.dsn),
        topic_insights=s.topic,
        sink_group_id=session.name("sink"),
        metrics_enabled=False,
    )
    store = _CountingStore(PostgresInsightStore(s.pool))
    service = sink_loop(settings, SinkMetrics(CollectorRegistry()), store=store)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(service.run(stop))
    try:
        while service.consumer is None or not service.consumer.assignment():
            await _check(task, started)
        assigned = time.perf_counter()
        while store.events < s.count or not service.caught_up():
            await _check(task, started)
        done = time.perf_counter()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    async with s.pool.acquire() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM insight_events")
    if rows != s.count:
        raise AssertionError(f"{rows} insight_events rows, expected {s.count}")
    return SinkResult(s.count / (done - assigned), assigned - started, done - assigned)


async def _check(task: asyncio.Task[None], started: float) -> None:
    if task.done():
        task.result()
        raise AssertionError("the sink stopped on its own")
    if time.perf_counter() - started > 900:
        raise AssertionError("the sink did not catch up in time")
    await asyncio.sleep(0.005)


async def run_store(s: SinkSetup) -> float:
    await _truncate(s.pool)
    store = PostgresInsightStore(s.pool)
    started = time.perf_counter()
    for i in range(0, len(s.events), BATCH):
        await store.write_batch(s.events[i : i + BATCH])
    return len(s.events) / (time.perf_counter() - started)
