"""The sink service: ``deal-insights`` into PostgreSQL, offsets committed only after the write.

One loop: fetch a batch (up to ``sink_batch_max`` events, waiting at most ``sink_flush_ms``
after the first one), decode it, write it in one transaction, then commit the offsets. The
next batch is fetched and decoded while the previous one is written and committed (one batch
ahead at most); it is written only once that commit is done, so batches are written and
committed one after the other, in order.

* A message that is not a valid insight event is counted (``invalid``), logged with its
  topic/partition/offset and skipped: ``deal-insights`` is our own output, there is no DLQ.
* When PostgreSQL fails (down, restarting, connection lost, deadlock, missing table...), the
  offsets are not committed, nothing more is fetched (beyond the one batch read ahead),
  readiness goes false, and the same batch is retried with capped exponential back-off until
  it is written or the service is stopped.
  The process never exits because of the database.
* When PostgreSQL rejects the data itself (a value it cannot store), the batch is split in
  halves until the offending event is isolated; that event is counted as ``invalid``, logged
  and skipped, the rest is written. A bad value never blocks the stream.
* Writes are idempotent (see ``store``), so a crash between the write and the commit only
  rewrites the same rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.sink.settings import SinkSettings
from consumer.sink.store import InsightStore, PostgresInsightStore, SourcePosition, WriteResult
from schemas.insights import InsightEvent, insight_adapter
from vectoros.db import TRANSIENT_ERRORS, backoff_delay, connect_pool, describe_dsn, migrate
from vectoros.errors import BrokerUnavailable, DatabaseUnavailable
from vectoros.kafka import ensure_topics
from vectoros.metrics import SinkMetrics
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)

IDLE_POLL_MS = 500
"""How long one fetch waits when there is nothing to read (bounds the reaction to stop)."""

RETRY_JITTER = 0.2

# Failures of a batch write that waiting can fix (PostgreSQL errors that are about the data
# itself never get here: they are isolated and skipped, see ``is_data_error``).
RETRIABLE_DB_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    asyncpg.PostgresError,
    DatabaseUnavailable,
)

Batch = Sequence[tuple[InsightEvent, SourcePosition]]


class SinkRecord(Protocol):
    """What the sink reads of a consumer record (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class SinkConsumer(Protocol):
    """The part of ``AIOKafkaConsumer`` the sink uses (a fake in the unit tests)."""

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[SinkRecord]]: ...

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None: ...

    def assignment(self) -> set[Any]: ...

    def highwater(self, partition: Any) -> int | None: ...


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL (or asyncpg, client-side) refuses a value: retrying the same data cannot help."""
    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError) or (
        isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)
    )


def describe_invalid(exc: ValidationError) -> str:
    """A short, bounded description of why a message is not an insight event (no input)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "invalid"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"[:300]


def decode_batch(
    records: Mapping[Any, Sequence[SinkRecord]], metrics: SinkMetrics | None = None
) -> tuple[list[tuple[InsightEvent, SourcePosition]], dict[Any, int]]:
    """Valid events with their positions, and the offsets to commit once they are written.

    Invalid messages are counted, logged and skipped; their offsets are committed too.
    """
    events: list[tuple[InsightEvent, SourcePosition]] = []
    offsets: dict[Any, int] = {}
    for tp, recs in records.items():
        if not recs:
            continue
        for rec in recs:
            position = SourcePosition(rec.topic, rec.partition, rec.offset, rec.value)
            try:
                if rec.value is None:
                    raise ValueError("empty message (tombstone)")
                event = insight_adapter.validate_json(rec.value)
            except ValidationError as exc:
                _skip_invalid(position, describe_invalid(exc), metrics)
                continue
            except ValueError as exc:
                _skip_invalid(position, str(exc), metrics)
                continue
            events.append((event, position))
        offsets[tp] = max(rec.offset for rec in recs) + 1
    return events, offsets


def _skip_invalid(position: SourcePosition, why: str, metrics: SinkMetrics | None) -> None:
    if metrics is not None:
        metrics.invalid.inc()
    logger.warning(
        "skipping a message that is not a valid insight event at %s[%d]@%d: %s",
        position.topic,
        position.partition,
        position.offset,
        why,
    )


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True as soon as ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class SinkService:
    """The consume → write → commit loop, on any ``SinkConsumer`` and ``InsightStore``."""

    def __init__(
        self,
        consumer: SinkConsumer,
        store: InsightStore,
        metrics: SinkMetrics,
        *,
        batch_max: int = 1000,
        flush_ms: int = 100,
        retry_initial_seconds: float = 0.2,
        retry_max_seconds: float = 30.0,
        retry_jitter: float = RETRY_JITTER,
        database: str = "PostgreSQL",
    ) -> None:
        self._consumer = consumer
        self._store = store
        self.metrics = metrics
        self._batch_max = batch_max
        self._flush_s = flush_ms / 1000
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._retry_jitter = retry_jitter
        self._database = database
        self._running = False
        self._db_failing = False
        self._committed: dict[Any, int] = {}

    @classmethod
    def from_settings(
        cls,
        settings: SinkSettings,
        consumer: SinkConsumer,
        store: InsightStore,
        metrics: SinkMetrics,
    ) -> SinkService:
        return cls(
            consumer,
            store,
            metrics,
            batch_max=settings.sink_batch_max,
            flush_ms=settings.sink_flush_ms,
            retry_initial_seconds=settings.db_retry_initial_seconds,
            retry_max_seconds=settings.db_retry_max_seconds,
            database=(
                f"PostgreSQL at {describe_dsn(settings.dsn())}"
                if settings.database_url is not None
                else "PostgreSQL"
            ),
        )

    def ready(self) -> bool:
        """Consuming, and the last write to PostgreSQL did not fail."""
        return self._running and not self._db_failing

    def caught_up(self) -> bool:
        """Every assigned partition is committed up to its last known high watermark."""
        assigned = self._consumer.assignment()
        if not self._running or not assigned:
            return False
        for tp in assigned:
            hw = self._consumer.highwater(tp)
            if hw is None or self._committed.get(tp, 0) < hw:
                return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. A batch being written (or fetched when ``stop`` came) is
        finished before returning; while the database is failing, it is abandoned uncommitted,
        and so is the batch read ahead (both will be read again)."""
        self._running = True
        writing: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set():
                records = await self.fetch(stop)
                decoded = decode_batch(records, self.metrics) if records else None
                if writing is not None:
                    done = await writing
                    writing = None
                    if not done:
                        break
                if decoded is not None:
                    writing = asyncio.create_task(self._write_and_commit(*decoded, stop))
            if writing is not None:
                await writing
                writing = None
        finally:
            if writing is not None:  # leaving on an error: that batch is not committed
                writing.cancel()
                await asyncio.wait([writing])
            self._running = False

    async def fetch(self, stop: asyncio.Event) -> dict[Any, list[SinkRecord]]:
        """Up to ``batch_max`` records; once the first arrives, wait at most ``flush_ms`` more."""
        loop = asyncio.get_running_loop()
        batch: dict[Any, list[SinkRecord]] = {}
        count = 0
        deadline: float | None = None
        while count < self._batch_max and not stop.is_set():
            if deadline is None:
                timeout_ms = IDLE_POLL_MS
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                timeout_ms = max(1, int(remaining * 1000))
            got = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self._batch_max - count
            )
            for tp, recs in got.items():
                if recs:
                    batch.setdefault(tp, []).extend(recs)
                    count += len(recs)
            if deadline is None:
                if count == 0:
                    break  # idle: let the caller look at ``stop``
                deadline = loop.time() + self._flush_s
        return batch

    async def process(
        self, records: Mapping[Any, Sequence[SinkRecord]], stop: asyncio.Event
    ) -> bool:
        """Decode, write (retrying until it succeeds), commit. False if stopped before writing."""
        events, offsets = decode_batch(records, self.metrics)
        return await self._write_and_commit(events, offsets, stop)

    async def _write_and_commit(
        self, events: Batch, offsets: Mapping[Any, int], stop: asyncio.Event
    ) -> bool:
        if events:
            self.metrics.insight_events_consumed.inc(len(events))
            if not await self._write_until_done(events, stop):
                return False
        await self._commit(offsets)
        return True

    async def _write_until_done(self, events: Batch, stop: asyncio.Event) -> bool:
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self._write(events)
            except RETRIABLE_DB_ERRORS as exc:
                failures += 1
                self.metrics.db_errors.inc()
                self._db_failing = True
                delay = backoff_delay(
                    failures, self._retry_initial, self._retry_max, self._retry_jitter
                )
                logger.error(
                    "writing %d insight events to %s failed (attempt %d, %s: %s); "
                    "offsets not committed, consumption paused, retrying in %.1fs",
                    len(events),
                    self._database,
                    failures,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if await _stopped_within(stop, delay):
                    logger.warning(
                        "stopping with %d insight events not written; they were not committed "
                        "and will be read again",
                        len(events),
                    )
                    return False
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.rows_written.labels(table="insight_events").inc(result.events_inserted)
            self.metrics.rows_written.labels(table="insights").inc(result.insights_written)
            if self._db_failing:
                self._db_failing = False
                logger.warning(
                    "%s is writable again: batch written after %d failed attempts",
                    self._database,
                    failures,
                )
            logger.debug(
                "wrote %d insight events: %d new history rows, %d insights changed",
                result.events,
                result.events_inserted,
                result.insights_written,
            )
            return True

    async def _write(self, events: Batch) -> WriteResult:
        """Write; if PostgreSQL rejects the data, isolate the offending event(s) by halving."""
        try:
            return await self._store.write_batch(events)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(events) == 1:
                event, pos = events[0]
                self.metrics.invalid.inc()
                logger.error(
                    "PostgreSQL rejected insight %s (%s) at %s[%d]@%d: %s: %s; skipped",
                    event.insight_id,
                    event.lifecycle.value,
                    pos.topic,
                    pos.partition,
                    pos.offset,
                    type(exc).__name__,
                    exc,
                )
                return WriteResult(events=1)
            logger.warning(
                "PostgreSQL rejected a batch of %d insight events (%s: %s); "
                "writing it in halves to isolate the offending event",
                len(events),
                type(exc).__name__,
                exc,
            )
        middle = len(events) // 2
        return await self._write(events[:middle]) + await self._write(events[middle:])

    async def _commit(self, offsets: Mapping[Any, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(dict(offsets))
        except KafkaError as exc:
            # E.g. a rebalance took the partition away. The rows are written; whoever reads
            # these events again rewrites the same rows. Nothing is lost.
            logger.warning(
                "committing offsets failed (%s: %s); the events will be read and written again",
                type(exc).__name__,
                " ".join(str(exc.args[0] if exc.args else "").split())[:160],
            )
            return
        self._committed.update(offsets)


def create_consumer(settings: SinkSettings) -> Any:
    """The sink's consumer of ``topic_insights`` (not started)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap(),
        group_id=settings.sink_group_id,
        client_id=f"{settings.kafka_client_id}-sink",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.subscribe([settings.topic_insights])
    return consumer


async def run_sink(
    settings: SinkSettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_service: Callable[[SinkService], None] | None = None,
) -> None:
    """``vectoros sink``: run until ``stop`` is set. ``on_service`` sees the service once it
    exists (``vectoros run`` watches its progress).

    Connects to PostgreSQL (waiting up to ``db_connect_deadline_seconds``, then
    ``DatabaseUnavailable``), applies pending migrations if ``sink_migrate_on_start``, makes
    sure the insights topic exists, then consumes. Registers the readiness check ``sink``.
    """
    metrics = SinkMetrics(registry)
    bootstrap = settings.bootstrap()
    pool = await connect_pool(
        settings.dsn(),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        deadline_seconds=settings.db_connect_deadline_seconds,
        command_timeout=settings.db_command_timeout_seconds,
    )
    try:
        if settings.sink_migrate_on_start:
            await migrate(pool)
        await ensure_topics(bootstrap, {settings.topic_insights: settings.topic_partitions})
        consumer = create_consumer(settings)
        service = SinkService.from_settings(settings, consumer, PostgresInsightStore(pool), metrics)
        health.register("sink", service.ready)
        if on_service is not None:
            on_service(service)
        try:
            try:
                await consumer.start()
            except (KafkaConnectionError, OSError, TimeoutError) as exc:
                raise BrokerUnavailable(
                    f"sink cannot start its consumer: Kafka broker at {bootstrap} not reachable "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            logger.info(
                "sink consuming %s as group %s into PostgreSQL at %s",
                settings.topic_insights,
                settings.sink_group_id,
                describe_dsn(settings.dsn()),
            )
            await service.run(stop)
        finally:
            await consumer.stop()
            logger.info("sink stopped")
    finally:
        await pool.close()
