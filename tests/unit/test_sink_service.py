"""The sink (``SinkHandler`` on the consume loop) on a fake consumer and the in-memory store:
decode, retry, commit order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry

from consumer.sink.metrics import SinkMetrics
from consumer.sink.service import (
    IDLE_POLL_MS,
    SinkHandler,
    SinkService,
    decode_batch,
    describe_invalid,
    is_data_error,
    loop_options,
    sink_loop,
)
from consumer.sink.store import InMemoryInsightStore, SourcePosition, WriteResult
from schemas.insights import (
    InsightAction,
    InsightData,
    InsightEvent,
    Lifecycle,
    Priority,
    RuleName,
    insight_adapter,
)
from vectoros.consume_loop import ConsumeLoop, LoopOptions, Subscription, fetch_batch

TOPIC = "deal-insights"
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def make_event(n: int, lifecycle: Lifecycle = Lifecycle.RAISED, title: str = "") -> InsightEvent:
    return InsightEvent(
        insight_id=f"insight-{n}",
        lifecycle=lifecycle,
        rule=RuleName.CLOSE_DATE_PASSED,
        workspace_id="ws",
        deal_id=f"deal-{n}",
        title=title or f"Deal {n} is past its close date",
        description="The expected close date passed.",
        priority=Priority.HIGH,
        confidence=0.95,
        data=InsightData(deal_id=f"deal-{n}", deal_title=f"Deal {n}", deal_value=None),
        actions=[
            InsightAction(action="a", priority=Priority.HIGH, timeline="t", expected_impact="i"),
            InsightAction(action="b", priority=Priority.LOW, timeline="t", expected_impact="i"),
        ],
        source="rules",
        detected_at=T0 + timedelta(hours=n),
        raised_at=T0,
    )


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def rec(offset: int, value: bytes | InsightEvent | None, partition: int = 0) -> Rec:
    if isinstance(value, InsightEvent):
        value = insight_adapter.dump_json(value)
    return Rec(TOPIC, partition, offset, value)


@dataclass
class FakeConsumer:
    """Serves prepared batches (one per getmany, split by max_records); records commits.

    ``drained`` is set when an idle poll finds nothing left: everything before is processed.
    """

    batches: list[dict[int, list[Rec]]] = field(default_factory=list)
    commits: list[dict[Any, int]] = field(default_factory=list)
    commit_errors: list[BaseException] = field(default_factory=list)
    polls: int = 0
    highwaters: dict[Any, int] = field(default_factory=dict)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[Rec]]:
        self.polls += 1
        if not self.batches:
            if timeout_ms >= IDLE_POLL_MS:  # a fetch's first poll: the previous batch is done
                self.drained.set()
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
            return {}
        batch = self.batches[0]
        limit = max_records or 10**9
        out: dict[int, list[Rec]] = {}
        for tp in list(batch):
            take, batch[tp] = batch[tp][:limit], batch[tp][limit:]
            limit -= len(take)
            if take:
                out[tp] = take
            if not batch[tp]:
                del batch[tp]
        if not batch:
            self.batches.pop(0)
        return out

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append(dict(offsets or {}))

    def assignment(self) -> set[Any]:
        return {0, 1}

    def highwater(self, partition: Any) -> int | None:
        return self.highwaters.get(partition)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def pause(self, *partitions: Any) -> None:
        pass

    def resume(self, *partitions: Any) -> None:
        pass

    def seek(self, partition: Any, offset: int) -> None:
        pass


@dataclass
class FakeBroker:
    """Hands the consume loop the one ``FakeConsumer``."""

    fake: FakeConsumer
    description: str = "fake broker"

    def consumer(self, subscription: Subscription) -> FakeConsumer:
        return self.fake

    def producer(self) -> Any:
        raise AssertionError("the sink publishes nothing")

    async def ensure_topics(self, topics: Mapping[str, int]) -> None:
        pass


def new_service(
    consumer: FakeConsumer, store: Any, **kw: Any
) -> tuple[SinkService, CollectorRegistry]:
    registry = CollectorRegistry()
    options: dict[str, Any] = {
        "batch_max": 1000,
        "flush_ms": 5,
        "retry_initial_seconds": 0.001,
        "retry_max_seconds": 0.01,
        **kw,
    }
    loop_settings = LoopOptions(
        name="sink",
        subscription=Subscription((TOPIC,), "sink", "sink"),
        idle_poll_ms=IDLE_POLL_MS,
        read_ahead=True,
        **options,
    )
    handler = SinkHandler(SinkMetrics(registry), store)
    return ConsumeLoop(handler, FakeBroker(consumer), loop_settings), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def run_until_drained(service: SinkService, consumer: FakeConsumer) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(consumer.drained.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# --- decoding ----------------------------------------------------------------------------------


def test_decode_skips_invalid_and_commits_past_them(caplog: pytest.LogCaptureFixture) -> None:
    metrics = SinkMetrics(registry := CollectorRegistry())
    records = {
        0: [rec(0, make_event(1)), rec(1, b"{not json"), rec(2, None), rec(3, make_event(2))],
        1: [rec(7, b'{"insight_id": "x", "secret": "s3cret"}', partition=1)],
    }
    with caplog.at_level(logging.WARNING, logger="consumer.sink.service"):
        events, offsets = decode_batch(records, metrics)
    assert [e.insight_id for e, _ in events] == ["insight-1", "insight-2"]
    assert events[1][1] == SourcePosition(TOPIC, 0, 3)
    assert offsets == {0: 4, 1: 8}
    assert sample(registry, "vectoros_sink_invalid_messages_total") == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{TOPIC}[0]@1" in m for m in messages)
    assert any(f"{TOPIC}[0]@2" in m and "tombstone" in m for m in messages)
    assert any(f"{TOPIC}[1]@7" in m for m in messages)
    assert not any("s3cret" in m for m in messages)  # the input is never logged


def test_describe_invalid_is_short_and_input_free() -> None:
    try:
        insight_adapter.validate_json(b'{"lifecycle": "exploded", "title": "' + b"x" * 5000 + b'"}')
    except ValueError as exc:
        text = describe_invalid(exc)  # type: ignore[arg-type]
    assert len(text) <= 300
    assert "more" in text
    assert "xxxx" not in text


def test_is_data_error() -> None:
    assert is_data_error(asyncpg.DataError("invalid byte sequence"))
    assert is_data_error(asyncpg.CheckViolationError("check"))
    assert not is_data_error(asyncpg.ConnectionDoesNotExistError("closed"))
    assert not is_data_error(asyncpg.UndefinedTableError("no insights table"))
    assert not is_data_error(OSError("refused"))


# --- the loop ----------------------------------------------------------------------------------


async def test_writes_then_commits() -> None:
    consumer = FakeConsumer([{0: [rec(0, make_event(1)), rec(1, make_event(2))]}])
    store = InMemoryInsightStore()
    service, registry = new_service(consumer, store)
    await run_until_drained(service, consumer)
    assert set(store.insights) == {"insight-1", "insight-2"}
    assert consumer.commits == [{0: 2}]
    assert sample(registry, "vectoros_sink_insight_events_consumed_total") == 2
    assert sample(registry, "vectoros_sink_rows_written_total", table="insights") == 2
    assert sample(registry, "vectoros_sink_rows_written_total", table="insight_events") == 2
    assert sample(registry, "vectoros_sink_batch_write_seconds_count") == 1


async def test_batch_of_only_invalid_messages_is_committed_without_a_write() -> None:
    consumer = FakeConsumer([{0: [rec(0, b"junk")]}])
    store = InMemoryInsightStore()
    service, registry = new_service(consumer, store)
    await run_until_drained(service, consumer)
    assert store.calls == 0
    assert consumer.commits == [{0: 1}]
    assert sample(registry, "vectoros_sink_invalid_messages_total") == 1


async def test_fetch_caps_the_batch_and_waits_flush_ms_for_more() -> None:
    consumer = FakeConsumer(
        [{0: [rec(i, make_event(i)) for i in range(3)]}, {1: [rec(0, make_event(9), 1)]}]
    )

    async def fetch() -> dict[Any, list[Any]]:
        return await fetch_batch(
            consumer, asyncio.Event(), batch_max=2, flush_ms=50, idle_poll_ms=IDLE_POLL_MS
        )

    got = await fetch()
    assert sum(len(v) for v in got.values()) == 2
    got = await fetch()  # 1 left + the next poll's 1, within flush_ms
    assert {tp: [r.offset for r in recs] for tp, recs in got.items()} == {0: [2], 1: [0]}
    assert await fetch() == {}


class FlakyStore(InMemoryInsightStore):
    """Records whether the service reported ready at each call."""

    def __init__(self, service_ready: list[bool]) -> None:
        super().__init__()
        self.ready_seen = service_ready
        self.service: SinkService | None = None

    async def write_batch(
        self, events: Sequence[tuple[InsightEvent, SourcePosition]]
    ) -> WriteResult:
        assert self.service is not None
        self.ready_seen.append(self.service.ready())
        return await super().write_batch(events)


async def test_database_errors_are_retried_without_commit(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer([{0: [rec(0, make_event(1))]}, {0: [rec(1, make_event(2))]}])
    store = FlakyStore([])
    store.fail_with = [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        OSError("Connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
    ]
    service, registry = new_service(consumer, store, batch_max=1)
    store.service = service
    with caplog.at_level(logging.ERROR, logger="consumer.sink.service"):
        await run_until_drained(service, consumer)
    # ready on the first attempt, not while retrying, ready again after the batch went through
    assert store.ready_seen == [True, False, False, False, True]
    assert consumer.commits == [{0: 1}, {0: 2}]
    assert set(store.insights) == {"insight-1", "insight-2"}
    assert sample(registry, "vectoros_sink_database_errors_total") == 3
    assert sample(registry, "vectoros_sink_batch_write_seconds_count") == 2
    assert sum("offsets not committed" in r.getMessage() for r in caplog.records) == 3


async def test_stop_while_retrying_leaves_the_batch_uncommitted() -> None:
    class DownStore(InMemoryInsightStore):
        def __init__(self) -> None:
            super().__init__()
            self.failed_thrice = asyncio.Event()

        async def write_batch(
            self, events: Sequence[tuple[InsightEvent, SourcePosition]]
        ) -> WriteResult:
            self.calls += 1
            if self.calls >= 3:
                self.failed_thrice.set()
            raise OSError("down")

    consumer = FakeConsumer([{0: [rec(0, make_event(1))]}])
    store = DownStore()
    service, _ = new_service(consumer, store, retry_initial_seconds=0.01, retry_max_seconds=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(store.failed_thrice.wait(), 5)
    assert not service.ready()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert consumer.commits == []
    assert not store.insights


async def test_a_value_postgres_rejects_is_isolated_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class PickyStore(InMemoryInsightStore):
        async def write_batch(
            self, events: Sequence[tuple[InsightEvent, SourcePosition]]
        ) -> WriteResult:
            if any(e.title == "poison" for e, _ in events):
                self.calls += 1
                raise asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence")
            return await super().write_batch(events)

    events = [make_event(i) for i in range(7)]
    events[4] = make_event(4, title="poison")
    consumer = FakeConsumer([{0: [rec(i, e) for i, e in enumerate(events)]}])
    store = PickyStore()
    service, registry = new_service(consumer, store)
    with caplog.at_level(logging.ERROR, logger="consumer.sink.service"):
        await run_until_drained(service, consumer)
    assert set(store.insights) == {f"insight-{i}" for i in range(7) if i != 4}
    assert consumer.commits == [{0: 7}]
    assert sample(registry, "vectoros_sink_invalid_messages_total") == 1
    assert sample(registry, "vectoros_sink_database_errors_total") == 0
    assert any("insight-4" in r.getMessage() and "@4" in r.getMessage() for r in caplog.records)


async def test_commit_failure_is_not_fatal() -> None:
    consumer = FakeConsumer([{0: [rec(0, make_event(1))]}, {0: [rec(1, make_event(2))]}])
    consumer.commit_errors.append(CommitFailedError("rebalanced"))
    store = InMemoryInsightStore()
    service, _ = new_service(consumer, store, batch_max=1)
    await run_until_drained(service, consumer)
    assert consumer.commits == [{0: 2}]
    assert len(store.insights) == 2


async def test_a_bug_is_not_retried_forever() -> None:
    consumer = FakeConsumer([{0: [rec(0, make_event(1))]}])
    store = InMemoryInsightStore()
    store.fail_with = [RuntimeError("bug")]
    service, _ = new_service(consumer, store)
    with pytest.raises(RuntimeError, match="bug"):
        await service.run(asyncio.Event())
    assert not service.ready()
    assert consumer.commits == []


async def test_ready_only_while_running() -> None:
    consumer = FakeConsumer()
    service, _ = new_service(consumer, InMemoryInsightStore())
    assert not service.ready()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(consumer.drained.wait(), 5)
    assert service.ready()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not service.ready()


async def test_caught_up_when_committed_to_every_high_watermark() -> None:
    consumer = FakeConsumer([{0: [rec(0, make_event(1)), rec(1, make_event(2))]}])
    consumer.highwaters = {0: 2}  # partition 1: no fetch yet, high watermark unknown
    service, _ = new_service(consumer, InMemoryInsightStore())
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(consumer.drained.wait(), 5)
        assert not service.caught_up()
        consumer.highwaters[1] = 0
        assert service.caught_up()
        consumer.highwaters[0] = 3  # a new record arrived
        assert not service.caught_up()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not service.caught_up()


def test_from_settings() -> None:
    from consumer.sink.settings import SinkSettings

    settings = SinkSettings(
        sink_batch_max=7,
        sink_flush_ms=9,
        database_url="postgresql://sink:hunter2@db/x",  # type: ignore[arg-type]
    )
    service = sink_loop(
        settings,
        SinkMetrics(CollectorRegistry()),
        FakeBroker(FakeConsumer()),
        InMemoryInsightStore(),
    )
    assert service.options.batch_max == 7
    assert service.options.flush_ms == 9
    assert service.options.read_ahead
    assert service.options.database is None  # the given store, no pool
    assert isinstance(service.handler, SinkHandler)
    assert service.handler.database == "PostgreSQL at sink@db/x"
    options = loop_options(settings)
    assert options.database is not None
    assert options.database.description == "PostgreSQL at sink@db/x"


async def test_next_batch_is_read_ahead_and_written_after_the_previous_commit() -> None:
    class WatchingStore(InMemoryInsightStore):
        def __init__(self, consumer: FakeConsumer) -> None:
            super().__init__()
            self.consumer = consumer
            self.seen: list[tuple[int, int]] = []  # (commits, polls) when a write starts

        async def write_batch(
            self, events: Sequence[tuple[InsightEvent, SourcePosition]]
        ) -> WriteResult:
            self.seen.append((len(self.consumer.commits), self.consumer.polls))
            return await super().write_batch(events)

    consumer = FakeConsumer([{0: [rec(i, make_event(i))]} for i in range(3)])
    store = WatchingStore(consumer)
    service, _ = new_service(consumer, store, batch_max=1)
    await run_until_drained(service, consumer)
    # batch n is written only once batches 0..n-1 are committed, and after the poll that
    # fetched batch n+1 (one batch read ahead)
    assert [commits for commits, _ in store.seen] == [0, 1, 2]
    assert all(polls >= n + 2 for n, (_, polls) in enumerate(store.seen))
    assert consumer.commits == [{0: 1}, {0: 2}, {0: 3}]


async def test_decoded_events_carry_their_record_value() -> None:
    value = insight_adapter.dump_json(make_event(1))
    events, _ = decode_batch({0: [Rec(TOPIC, 0, 0, value)]})
    assert events[0][1].raw == value
