"""The sink on the real broker and PostgreSQL: tables, replays, redeliveries, an outage.

Every test gets its own database (created on the session's PostgreSQL) and its own topic.
Insight events are rendered by the monitor's own pure pipeline (rules → lifecycle → templates),
so they look exactly like production ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import fields
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from consumer.lifecycle import Change, Resolution
from consumer.rules import stale_deal
from consumer.sink.service import run_sink
from consumer.sink.settings import SinkSettings
from consumer.sink.store import (
    InMemoryInsightStore,
    InsightRow,
    PostgresInsightStore,
    SourcePosition,
)
from consumer.state import DAY_MS, DealState
from consumer.templates import render
from consumer.thresholds import RuleThresholds
from schemas.events import Stage
from schemas.insights import InsightEvent, Lifecycle, Priority, insight_adapter
from tests.databases import fresh_database, migrated_pool
from vectoros.db import PgPool, connect_pool, load_migrations, migrate
from vectoros.embedded import EmbeddedPostgres
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import Health
from vectoros.settings import KafkaSettings

pytestmark = pytest.mark.integration

WAIT_LIMIT = 60.0  # a bound for "never happens", not a timing goal
T0 = 20_000 * DAY_MS
TH = RuleThresholds()
JSON_COLUMNS = ("actions", "key_metrics", "data")


# --- events ------------------------------------------------------------------------------------


def episode(n: int, steps: int = 3) -> list[InsightEvent]:
    """A stale_deal episode of deal ``n``: raised (day 8), escalated (day 15), resolved (day 20),
    the first ``steps`` of them."""
    deal = DealState(
        workspace_id=f"ws-{n % 3}",
        deal_id=f"deal-{n}",
        title=f"Acme #{n} renewal",
        value=1_000.0 * (n % 40 + 1),
        currency="EUR",
        stage=Stage.PROPOSAL,
        probability=50,
        close_day=T0 // DAY_MS + 90,
        owner_id="owner-1",
        owner_name="Ada",
        company=f"Acme {n}",
        created_at_ms=T0,
        last_activity_at_ms=T0 + (n % 5) * 60_000,
        stage_entered_at_ms=T0,
    )
    raised_at = T0 + 8 * DAY_MS + n
    out: list[InsightEvent] = []
    for now, lifecycle in (
        (raised_at, Lifecycle.RAISED),
        (T0 + 15 * DAY_MS + n, Lifecycle.ESCALATED),
        (T0 + 20 * DAY_MS + n, Lifecycle.RESOLVED),
    )[:steps]:
        finding = stale_deal(deal, now, TH)
        assert finding is not None
        if lifecycle is Lifecycle.RESOLVED:
            change = Change(
                finding.rule, lifecycle, Priority.CRITICAL, raised_at, resolution=Resolution.WON
            )
        else:
            change = Change(finding.rule, lifecycle, finding.priority, raised_at)
        out.append(render(change, deal, now, TH).event())
    return out


def episodes(count: int) -> list[InsightEvent]:
    """``count`` deals: a third raised only, a third escalated, a third resolved."""
    return [e for n in range(count) for e in episode(n, steps=n % 3 + 1)]


def with_positions(
    events: Sequence[InsightEvent], first: int = 0
) -> list[tuple[InsightEvent, SourcePosition]]:
    return [(e, SourcePosition("t", 0, first + i)) for i, e in enumerate(events)]


# --- database ----------------------------------------------------------------------------------


@pytest.fixture
async def sink_dsn(database_url: str) -> AsyncIterator[str]:
    """A fresh database on the session's PostgreSQL; dropped afterwards."""
    async with fresh_database(database_url, "sink") as dsn:
        yield dsn


@pytest.fixture
async def pool(sink_dsn: str) -> AsyncIterator[PgPool]:
    async with migrated_pool(sink_dsn) as pool:
        yield pool


async def insights_in_db(pool: PgPool, with_times: bool = False) -> dict[str, dict[str, Any]]:
    columns = [f.name for f in fields(InsightRow)]
    if with_times:
        columns += ["created_at", "updated_at"]
    rows = await pool.fetch(f"SELECT {', '.join(columns)} FROM insights")
    return {row["insight_id"]: dict(row) for row in rows}


async def history_in_db(pool: PgPool) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM insight_events")
    return {(r["insight_id"], r["lifecycle"], r["detected_at"]): dict(r) for r in rows}


def insights_in_fake(store: InMemoryInsightStore) -> dict[str, dict[str, Any]]:
    out = {}
    for insight_id, row in store.insights.items():
        values = {f.name: getattr(row, f.name) for f in fields(InsightRow)}
        for name in JSON_COLUMNS:
            values[name] = json.loads(values[name])
        out[insight_id] = values
    return out


async def count(pool: PgPool, table: str) -> int:
    value = await pool.fetchval(f"SELECT count(*) FROM {table}")
    assert isinstance(value, int)
    return value


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- store on PostgreSQL -----------------------------------------------------------------------


async def test_migrate_twice_and_concurrently(sink_dsn: str) -> None:
    pools = [await connect_pool(sink_dsn, deadline_seconds=10) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(p) for p in pools))
        every = [m.name for m in load_migrations()]
        assert "0001_insights" in every
        assert sorted(results) == [[], [], every]
        assert await migrate(pools[0]) == []
        async with pools[0].acquire() as conn:
            assert await migrate(conn) == []
        versions = await pools[0].fetch("SELECT version FROM schema_migrations")
        assert sorted(r["version"] for r in versions) == every
        indexes = {
            r["indexname"]
            for r in await pools[0].fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename IN ('insights', 'insight_events')"
            )
        }
        assert {
            "insights_pkey",
            "insights_open_by_priority",
            "insights_open_by_rule",
            "insights_by_deal",
            "insight_events_pkey",
            "insight_events_by_deal",
        } <= indexes
    finally:
        for p in pools:
            await p.close()


async def test_postgres_store_agrees_with_the_fake(pool: PgPool) -> None:
    """Random orders, splits and duplicates: same WriteResults, same rows as the fake."""
    rng = random.Random(7)
    events = episodes(60)
    stream = events + rng.sample(events, 40)  # redeliveries
    rng.shuffle(stream)
    pg, fake = PostgresInsightStore(pool), InMemoryInsightStore()
    offset = 0
    while offset < len(stream):
        size = rng.randint(1, 30)
        batch = with_positions(stream[offset : offset + size], offset)
        assert await pg.write_batch(batch) == await fake.write_batch(batch)
        offset += size
    assert await insights_in_db(pool) == insights_in_fake(fake)
    history = await history_in_db(pool)
    assert len(history) == len(events) == len(fake.events)
    for key, row in fake.events.items():
        stored = history[key]
        assert stored["kafka_offset"] == row.kafka_offset
        assert insight_adapter.validate_python(stored["payload"]) == insight_adapter.validate_json(
            row.payload
        )


async def test_rows_of_one_episode(pool: PgPool) -> None:
    raised, escalated, resolved = episode(1)
    store = PostgresInsightStore(pool)
    await store.write_batch(with_positions([raised, escalated]))
    row = (await insights_in_db(pool))[raised.insight_id]
    assert (row["status"], row["lifecycle"], row["priority"]) == ("open", "escalated", "critical")
    assert row["title"] == row["rule_title"] == escalated.title
    assert row["resolved_at"] is None
    assert row["key_metrics"] == escalated.data.key_metrics
    assert row["data"]["company"] == "Acme 1"
    assert len(row["actions"]) == len(escalated.actions)

    await store.write_batch(with_positions([resolved], 2))
    row = (await insights_in_db(pool))[raised.insight_id]
    assert (row["status"], row["lifecycle"]) == ("resolved", "resolved")
    assert row["resolved_at"] == resolved.detected_at
    assert row["title"] == escalated.title  # the risk's text stays

    # the open-insights query of a dashboard uses the partial index columns
    open_rows = await pool.fetch(
        "SELECT insight_id FROM insights WHERE status = 'open' AND workspace_id = $1 "
        "ORDER BY priority_rank DESC, detected_at DESC",
        raised.workspace_id,
    )
    assert open_rows == []


async def test_late_raised_after_resolved_stays_resolved(pool: PgPool) -> None:
    raised, escalated, resolved = episode(2)
    store = PostgresInsightStore(pool)
    await store.write_batch(with_positions([raised, escalated, resolved]))
    before = await insights_in_db(pool, with_times=True)
    result = await store.write_batch(with_positions([raised, escalated], 10))
    assert (result.events_inserted, result.insights_written) == (0, 0)
    after = await insights_in_db(pool, with_times=True)
    assert after == before  # updated_at too: nothing was rewritten
    assert after[raised.insight_id]["status"] == "resolved"


async def test_a_value_postgres_cannot_store_is_replaced(pool: PgPool) -> None:
    [raised] = episode(3, steps=1)
    poisoned = raised.model_copy(update={"title": "NUL \x00 in a title"})
    await PostgresInsightStore(pool).write_batch(with_positions([poisoned]))
    row = (await insights_in_db(pool))[raised.insight_id]
    assert row["title"] == "NUL \ufffd in a title"


async def test_write_batch_throughput(pool: PgPool, capsys: pytest.CaptureFixture[str]) -> None:
    """10,000 new events in one batch, then the same batch again (all no-ops)."""
    events = [e for n in range(3334) for e in episode(n)][:10_000]
    batch = with_positions(events)
    store = PostgresInsightStore(pool)
    started = time.perf_counter()
    first = await store.write_batch(batch)
    new_s = time.perf_counter() - started
    started = time.perf_counter()
    again = await store.write_batch(batch)
    replay_s = time.perf_counter() - started
    assert first.events_inserted == 10_000
    assert (again.events_inserted, again.insights_written) == (0, 0)
    with capsys.disabled():
        print(
            f"\nwrite_batch, 10k events: {10_000 / new_s:,.0f} events/s new "
            f"({first.insights_written} insights), {10_000 / replay_s:,.0f} events/s replayed"
        )


# --- the service on the broker -----------------------------------------------------------------


async def produce(bootstrap: str, topic: str, values: Sequence[InsightEvent | bytes]) -> None:
    producer = await start_producer(KafkaSettings(kafka_bootstrap_servers=bootstrap))
    try:
        for value in values:
            if isinstance(value, InsightEvent):
                await producer.send(
                    topic, insight_adapter.dump_json(value), key=value.deal_id.encode()
                )
            else:
                await producer.send(topic, value, key=b"junk")
        await producer.flush()
    finally:
        await producer.stop()


def sink_settings(bootstrap: str, dsn: str, topic: str, group: str) -> SinkSettings:
    return SinkSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=dsn,  # type: ignore[arg-type]
        topic_insights=topic,
        topic_partitions=3,
        sink_group_id=group,
        sink_flush_ms=20,
        metrics_enabled=False,
        db_connect_deadline_seconds=10,
        db_retry_initial_seconds=0.05,
        db_retry_max_seconds=0.5,
    )


class RunningSink:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.health = Health()

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"vectoros_sink_{name}", labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running_sink(settings: SinkSettings) -> AsyncIterator[RunningSink]:
    sink = RunningSink()
    stop = asyncio.Event()
    task = asyncio.create_task(run_sink(settings, sink.registry, sink.health, stop))
    try:
        yield sink
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for partition in range(3):
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def test_sink_end_to_end_replay_and_redelivery(
    kafka_bootstrap: str, sink_dsn: str, pool: PgPool, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("insights")
    await ensure_topics(kafka_bootstrap, {topic: 3})
    events = episodes(30)  # 60 events: 30 raised, 20 escalated, 10 resolved
    await produce(kafka_bootstrap, topic, [*events[:25], b'{"not": "an insight"}', *events[25:]])
    settings = sink_settings(kafka_bootstrap, sink_dsn, topic, unique_name("sink"))

    def committed(group: str, expected: int) -> Callable[[], Awaitable[bool]]:
        return lambda: _equals(committed_total(kafka_bootstrap, topic, group), expected)

    # 1. the sink writes every event once; the invalid message is counted and skipped
    async with running_sink(settings) as sink:
        await eventually(committed(settings.sink_group_id, 61), "61 committed offsets")
        assert await count(pool, "insight_events") == 60
        assert sink.metric("invalid_messages_total") == 1
        assert sink.metric("insight_events_consumed_total") == 60
        assert sink.metric("rows_written_total", table="insight_events") == 60
        assert sink.health.ready()
    fake = InMemoryInsightStore()
    await fake.write_batch(with_positions(events))
    assert await insights_in_db(pool) == insights_in_fake(fake)
    statuses = [r["status"] for r in (await insights_in_db(pool)).values()]
    assert (statuses.count("open"), statuses.count("resolved")) == (20, 10)
    snapshot = (await insights_in_db(pool, with_times=True), await history_in_db(pool))

    # 2. a new consumer group replays the whole topic: nothing changes, not even updated_at
    replay = settings.model_copy(update={"sink_group_id": unique_name("replay")})
    async with running_sink(replay) as sink:
        await eventually(committed(replay.sink_group_id, 61), "the replay")
        assert sink.metric("insight_events_consumed_total") == 60
        assert sink.metric("rows_written_total", table="insights") == 0
        assert sink.metric("rows_written_total", table="insight_events") == 0
    assert (await insights_in_db(pool, with_times=True), await history_in_db(pool)) == snapshot

    # 3. the monitor redelivers a batch after a crash, and a late "raised" of a resolved insight
    resolved = next(e for e in events if e.lifecycle is Lifecycle.RESOLVED)
    late_raised = next(
        e for e in events if e.insight_id == resolved.insight_id and e.lifecycle is Lifecycle.RAISED
    )
    await produce(kafka_bootstrap, topic, [*events[:20], late_raised])
    async with running_sink(settings) as sink:
        await eventually(committed(settings.sink_group_id, 82), "the redeliveries")
        assert sink.metric("insight_events_consumed_total") == 21  # only the new offsets
    assert (await insights_in_db(pool, with_times=True), await history_in_db(pool)) == snapshot
    assert snapshot[0][late_raised.insight_id]["status"] == "resolved"


async def test_sink_survives_a_database_outage(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """PostgreSQL stops while events arrive: not ready, nothing committed, retried; then the
    server comes back and everything is written, without restarting the sink."""
    with _own_postgres() as pg:
        await asyncio.to_thread(pg.start)
        topic = unique_name("insights")
        await ensure_topics(kafka_bootstrap, {topic: 3})
        first, second = episodes(10), [e for n in range(10, 20) for e in episode(n)]
        total = len(first) + len(second)
        settings = sink_settings(kafka_bootstrap, pg.dsn, topic, unique_name("sink"))
        group = settings.sink_group_id
        pool = await connect_pool(pg.dsn, deadline_seconds=10)
        try:
            async with running_sink(settings) as sink:
                await produce(kafka_bootstrap, topic, first)
                await eventually(
                    lambda: _equals(committed_total(kafka_bootstrap, topic, group), len(first)),
                    "the first events",
                )
                assert await _retrying_count(pool) == len(first)
                assert sink.health.ready()

                await asyncio.to_thread(pg.pause)
                await produce(kafka_bootstrap, topic, second)
                await eventually(lambda: sink.metric("database_errors_total") >= 2, "db errors")
                assert not sink.health.ready()
                assert await committed_total(kafka_bootstrap, topic, group) == len(first)

                await asyncio.to_thread(pg.resume)
                await eventually(
                    lambda: _equals(committed_total(kafka_bootstrap, topic, group), total),
                    "the events of the outage",
                )
                assert await _retrying_count(pool) == total
                assert sink.health.ready()
        finally:
            await pool.close()


@contextlib.contextmanager
def _own_postgres() -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres()
    try:
        yield pg
    finally:
        pg.stop()


async def _retrying_count(pool: PgPool) -> int:
    """The history row count; the first try may meet a connection of the stopped server."""
    for _ in range(3):
        try:
            return await count(pool, "insight_events")
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
            await asyncio.sleep(0.1)
    return await count(pool, "insight_events")


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
