"""The sink service: ``deal-insights`` into PostgreSQL, offsets committed only after the write.

A ``SinkHandler`` on the consume loop (``vectoros.consume_loop``): fetch a batch (up to
``sink_batch_max`` events, waiting at most ``sink_flush_ms`` after the first one), decode it,
write it in one transaction, then commit the offsets. The next batch is fetched and decoded
while the previous one is written and committed (one batch ahead at most); it is written only
once that commit is done, so batches are written and committed one after the other, in order.

* A message that is not a valid insight event is counted (``invalid``), logged with its
  topic/partition/offset and skipped: ``deal-insights`` is our own output, there is no DLQ.
* When PostgreSQL fails (down, restarting, connection lost, deadlock, missing table...), the
  offsets are not committed, nothing more is fetched (beyond the one batch read ahead),
  readiness goes false, and the same batch is retried with capped exponential back-off until
  it is written or the service is stopped (the loop's outage policy, which also covers
  PostgreSQL or the broker being down at start). The process never exits because of either.
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
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.sink.metrics import SinkMetrics
from consumer.sink.settings import SinkSettings
from consumer.sink.store import InsightStore, PostgresInsightStore, SourcePosition, WriteResult
from schemas.insights import InsightEvent, insight_adapter
from vectoros.consume_loop import (
    Broker,
    ConsumeLoop,
    Database,
    KafkaBroker,
    LoopOptions,
    Output,
    Records,
    Resources,
    Subscription,
)
from vectoros.db import TRANSIENT_ERRORS, describe_dsn, migrate
from vectoros.errors import DatabaseUnavailable
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


class SinkHandler:
    """The sink's logic for the consume loop: decode a batch, write it in one transaction.

    Database failures are counted and raised (the loop retries the same batch); a value
    PostgreSQL rejects is isolated by halving the batch and skipped.
    """

    def __init__(
        self,
        metrics: SinkMetrics,
        store: InsightStore | None = None,
        *,
        migrate_on_start: bool = False,
        database: str = "PostgreSQL",
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.database = database
        self._migrate = migrate_on_start

    async def open(self, resources: Resources) -> None:
        if resources.pool is not None:
            if self._migrate:
                await migrate(resources.pool)
            if self.store is None:
                self.store = PostgresInsightStore(resources.pool)
        if self.store is None:
            raise RuntimeError("the sink has neither a store nor a database")

    async def close(self) -> None:
        return None

    def decode(self, records: Records) -> list[tuple[InsightEvent, SourcePosition]]:
        events, _ = decode_batch(records, self.metrics)
        if events:
            self.metrics.insight_events_consumed.inc(len(events))
        return events

    async def handle(self, events: Batch, stop: asyncio.Event) -> Sequence[Output]:
        if not events:
            return ()
        started = time.perf_counter()
        try:
            result = await self._write(events)
        except RETRIABLE_DB_ERRORS:
            self.metrics.db_errors.inc()
            raise
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.rows_written.labels(table="insight_events").inc(result.events_inserted)
        self.metrics.rows_written.labels(table="insights").inc(result.insights_written)
        logger.debug(
            "wrote %d insight events: %d new history rows, %d insights changed",
            result.events,
            result.events_inserted,
            result.insights_written,
        )
        return ()

    async def _write(self, events: Batch) -> WriteResult:
        """Write; if PostgreSQL rejects the data, isolate the offending event(s) by halving."""
        assert self.store is not None
        try:
            return await self.store.write_batch(events)
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


SinkService = ConsumeLoop[list[tuple[InsightEvent, SourcePosition]]]
"""The running sink: the consume loop with a ``SinkHandler`` (``ready``, ``caught_up``)."""


def loop_options(settings: SinkSettings, *, with_database: bool = True) -> LoopOptions:
    """The sink's loop: batches of ``sink_batch_max`` waiting ``sink_flush_ms``, one read
    ahead, the database's back-off for every outage."""
    return LoopOptions(
        name="sink",
        subscription=Subscription(
            topics=(settings.topic_insights,),
            group_id=settings.sink_group_id,
            client_id=f"{settings.kafka_client_id}-sink",
        ),
        batch_max=settings.sink_batch_max,
        flush_ms=settings.sink_flush_ms,
        idle_poll_ms=IDLE_POLL_MS,
        read_ahead=True,
        topics={settings.topic_insights: settings.topic_partitions},
        database=(
            Database(
                dsn=settings.dsn(),
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                command_timeout=settings.db_command_timeout_seconds,
            )
            if with_database
            else None
        ),
        retry_initial_seconds=settings.db_retry_initial_seconds,
        retry_max_seconds=settings.db_retry_max_seconds,
        retry_jitter=RETRY_JITTER,
    )


def sink_loop(
    settings: SinkSettings,
    metrics: SinkMetrics,
    broker: Broker | None = None,
    store: InsightStore | None = None,
) -> SinkService:
    """The sink on ``broker`` (Kafka by default), writing to ``store`` (PostgreSQL by default)."""
    handler = SinkHandler(
        metrics,
        store,
        migrate_on_start=settings.sink_migrate_on_start,
        database=(
            f"PostgreSQL at {describe_dsn(settings.dsn())}"
            if settings.database_url is not None
            else "PostgreSQL"
        ),
    )
    options = loop_options(settings, with_database=store is None)
    return ConsumeLoop(handler, broker or KafkaBroker(settings), options)


async def run_sink(
    settings: SinkSettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_service: Callable[[SinkService], None] | None = None,
    broker: Broker | None = None,
) -> None:
    """``vectoros sink``: run until ``stop`` is set. ``on_service`` sees the service once it
    exists (``vectoros run`` watches its progress).

    Waits for PostgreSQL and the broker as long as it takes (not ready meanwhile), applies
    pending migrations if ``sink_migrate_on_start``, makes sure the insights topic exists,
    then consumes. Registers the readiness check ``sink``.
    """
    service = sink_loop(settings, SinkMetrics(registry), broker)
    health.register("sink", service.ready)
    if on_service is not None:
        on_service(service)
    logger.info(
        "sink consuming %s as group %s into PostgreSQL at %s (once both answer)",
        settings.topic_insights,
        settings.sink_group_id,
        describe_dsn(settings.dsn()),
    )
    try:
        await service.run(stop)
    finally:
        logger.info("sink stopped")
