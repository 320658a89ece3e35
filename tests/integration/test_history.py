"""The history service on the real broker and PostgreSQL: the projection of deal-events, equal
after a replay and after out-of-order redeliveries; the stage benchmarks it refreshes."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.history import store
from consumer.history.service import run_history
from consumer.history.settings import HistorySettings
from consumer.intelligence.projection import fold
from producer.simulator import SimulationSpec, generate
from schemas.events import DealEvent, encode_event
from tests.databases import fresh_database, migrated_pool
from vectoros.db import PgPool
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import Health
from vectoros.settings import KafkaSettings

pytestmark = pytest.mark.integration

WAIT_LIMIT = 60.0  # a bound for "never happens", not a timing goal


@pytest.fixture
async def history_dsn(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url, "history") as dsn:
        yield dsn


@pytest.fixture
async def pool(history_dsn: str) -> AsyncIterator[PgPool]:
    async with migrated_pool(history_dsn) as pool:
        yield pool


def deal_events(deals: int = 40) -> list[DealEvent]:
    spec = SimulationSpec(deals=deals, days=60, workspaces=2, seed=11)
    return [item for item in generate(spec) if not hasattr(item, "at")]  # type: ignore[misc]


async def produce(bootstrap: str, topic: str, values: Sequence[DealEvent | bytes]) -> None:
    producer = await start_producer(KafkaSettings(kafka_bootstrap_servers=bootstrap))
    try:
        for value in values:
            if isinstance(value, bytes):
                await producer.send(topic, value, key=b"junk")
            else:
                await producer.send(topic, encode_event(value), key=value.deal_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def table(pool: PgPool) -> dict[tuple[str, str], dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM deal_history")
    return {(r["workspace_id"], r["deal_id"]): dict(r) for r in rows}


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(3)])
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Running:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.health = Health()

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(f"vectoros_history_{name}") or 0.0


@contextlib.asynccontextmanager
async def running(settings: HistorySettings) -> AsyncIterator[Running]:
    service = Running()
    stop = asyncio.Event()
    task = asyncio.create_task(run_history(settings, service.registry, service.health, stop))
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


async def test_projection_is_equal_after_a_replay_and_redeliveries(
    kafka_bootstrap: str, history_dsn: str, pool: PgPool, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("events")
    await ensure_topics(kafka_bootstrap, {topic: 3})
    events = deal_events()
    await produce(kafka_bootstrap, topic, [*events[:30], b'{"not": "an event"}', *events[30:]])
    total = len(events) + 1
    settings = HistorySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=history_dsn,  # type: ignore[arg-type]
        topic_events=topic,
        topic_scores=unique_name("scores"),
        topic_insights=unique_name("insights"),
        topic_partitions=3,
        history_group_id=unique_name("history"),
        history_flush_ms=20,
        metrics_enabled=False,
        db_retry_initial_seconds=0.05,
        db_retry_max_seconds=0.5,
    )

    def committed(group: str, expected: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await committed_total(kafka_bootstrap, topic, group) == expected

        return check

    # 1. every deal's row is the fold of its events; the invalid message is skipped
    async with running(settings) as service:
        await eventually(committed(settings.history_group_id, total), "every offset committed")
        assert service.metric("events_recorded_total") == len(events)
        assert service.metric("skipped_messages_total") == 1
        assert service.metric("benchmark_refreshes_total") >= 1
    first = await table(pool)
    by_deal: dict[tuple[str, str], list[DealEvent]] = {}
    for e in events:
        by_deal.setdefault((e.workspace_id, e.deal_id), []).append(e)
    assert set(first) == set(by_deal)
    for key, evs in by_deal.items():
        expected = fold(evs)
        assert expected is not None
        assert store.row_of(expected) == tuple(first[key][c] for c in store._COLUMNS)
    closed = [r for r in first.values() if r["outcome"] is not None]
    assert closed
    assert all(r["closed_at"] is not None for r in closed)
    assert any(len(r["stage_history"]) > 1 for r in first.values())
    assert any(r["activity_counts"] for r in first.values())

    # 2. a new consumer group replays the whole topic: the projection is the same
    replay = settings.model_copy(update={"history_group_id": unique_name("replay")})
    async with running(replay) as service:
        await eventually(committed(replay.history_group_id, total), "the replay")
        assert service.metric("events_recorded_total") == 0
    assert await table(pool) == first

    # 3. redeliveries out of order (a shuffled half of the events again): the same
    again = random.Random(3).sample(events, len(events) // 2)
    await produce(kafka_bootstrap, topic, again)
    async with running(settings) as service:
        await eventually(
            committed(settings.history_group_id, total + len(again)), "the redeliveries"
        )
    assert await table(pool) == first


async def test_stage_benchmarks_from_the_history(pool: PgPool) -> None:
    events = deal_events(60)
    async with pool.acquire() as conn:
        await store.write_events(conn, events)
    await store.refresh_benchmarks(pool)
    rows = await store.load_benchmarks(pool)
    assert rows
    histories = await store.load_histories(pool)
    for row in rows:
        days = sorted(
            d
            for h in histories
            if h.workspace_id == row["workspace_id"]
            for s in h.stages
            if s.stage == row["stage"] and (d := s.days()) is not None
        )
        assert row["samples"] == len(days)
        assert row["p50_days"] <= row["p75_days"] <= row["p90_days"] <= days[-1]
    assert await store.load_benchmarks(pool, "no-such-workspace") == []


HEADER = "Deal - ID,Deal - Title,Deal - Deal created,Deal - Deal closed on,Deal - Status,Deal - Stage,Deal - Value,Deal - Currency,Deal - Owner,Deal - Expected close date,Deal - Organization,Deal - Pipeline,Deal - Source channel,Deal - Lost reason,Deal - Product quantity\n"  # noqa: E501


def export(rows: int, poison: int | None = None, bad: int | None = None) -> str:
    lines = [HEADER]
    for n in range(rows):
        title = "Deal \x00 nul" if n == poison else f"Deal {n}"
        created = "not a date" if n == bad else "2025-01-01 08:00:00"
        status = ("Won", "Lost", "Open")[n % 3]
        closed = "" if status == "Open" else "2025-02-01 08:00:00"
        lines.append(
            f"{n},{title},{created},{closed},{status},Proposal Made,{n},EUR,Ann,,Org {n},"
            "Default,Web,,1\n"
        )
    return "".join(lines)


async def test_import_is_all_or_nothing(pool: PgPool, tmp_path: Any) -> None:
    from pathlib import Path

    from consumer.history.importer import import_csv, read_mapping

    mapping = read_mapping(Path(__file__).parents[2] / "docs" / "mappings" / "pipedrive.yaml")
    good = tmp_path / "good.csv"
    good.write_text(export(30, bad=4), encoding="utf-8")
    seen: list[tuple[str, int, int]] = []
    report = await import_csv(pool, good, mapping, "ws-imp", lambda *p: seen.append(p))
    assert (report.imported, report.rows, [str(e) for e in report.errors]) == (
        29,
        30,
        ["line 6: created (Deal - Deal created): 'not a date' is not a date"],
    )
    assert seen[-1] == ("write", 29, 29)
    rows = await table(pool)
    assert len(rows) == 29
    assert {r["source"] for r in rows.values()} == {"import"}
    assert sorted(r["outcome"] or "open" for r in rows.values()).count("won") == 10
    before = rows
    assert (await import_csv(pool, good, mapping, "ws-imp")).imported == 29
    assert await table(pool) == before  # importing again changes nothing

    # a value PostgreSQL refuses in the second chunk: the whole import is rolled back
    poisoned = tmp_path / "poisoned.csv"
    poisoned.write_text(export(1500, poison=1200), encoding="utf-8")
    with pytest.raises(Exception, match="0x00"):
        await import_csv(pool, poisoned, mapping, "ws-other")
    assert await pool.fetchval("SELECT count(*) FROM deal_history") == 29


async def test_learned_rules_from_the_benchmarks(pool: PgPool) -> None:
    """35 deals left negotiation after 1..35 days: the monitor's rules read P90 = 31.6 days
    from 35 deals for that workspace, and stuck_in_stage says so."""
    from consumer.intelligence.projection import DAY_MS, DealHistory, StageSpell
    from consumer.learned_rules import LearnedRules
    from consumer.rules import stuck_in_stage
    from consumer.state import DealState
    from consumer.thresholds import RulesConfig
    from schemas.events import Stage

    t0 = 20_000 * DAY_MS
    deals = [
        DealHistory(
            workspace_id="ws-l",
            deal_id=f"d{n}",
            created_ms=t0,
            outcome="won",
            closed_ms=t0 + n * DAY_MS,
            stages=[StageSpell("negotiation", t0, t0 + n * DAY_MS)],
        )
        for n in range(1, 36)
    ]
    async with pool.acquire() as conn:
        await store.upsert_histories(conn, deals)
    learned = LearnedRules(pool, RulesConfig())
    assert (await learned.refresh()).for_workspace("ws-l") == RulesConfig().defaults  # stale view
    await store.refresh_benchmarks(pool)
    stop = asyncio.Event()
    stop.set()
    seen: list[RulesConfig] = []
    await learned.run(stop, 60, seen.append)
    th = seen[0].for_workspace("ws-l")
    assert th is learned.current.for_workspace("ws-l")
    bench = th.stuck_learned[Stage.NEGOTIATION]
    assert (bench.deals, round(bench.p90, 1)) == (35, 31.6)
    open_deal = DealState(
        workspace_id="ws-l",
        deal_id="x",
        stage=Stage.NEGOTIATION,
        created_at_ms=t0,
        last_activity_at_ms=t0,
        stage_entered_at_ms=t0,
    )
    finding = stuck_in_stage(open_deal, t0 + 45 * DAY_MS, th)
    assert finding is not None
    assert (finding.metrics["benchmark"], finding.metrics["benchmark_deals"]) == ("P90", 35)
