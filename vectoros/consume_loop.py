"""The one consume → handle → publish → commit loop of the Kafka services, and its outage policy.

A service is a :class:`Handler` (its logic) plus :class:`LoopOptions` (its settings); the loop
does the rest, through a small :class:`Broker` interface (``KafkaBroker`` here on aiokafka,
``vectoros.memory_broker.MemoryBroker`` in memory for the tests):

1. connect: PostgreSQL pool (when ``options.database`` is set), the topics, a producer (when
   ``options.publishes``), the handler's ``JoinGate`` if it has one (standby until it opens),
   the consumer (joining its group), then ``handler.open(resources)`` (migrations, stores);
2. fetch a batch (up to ``batch_max`` records; once the first arrives, wait at most ``flush_ms``
   for more), ``handler.decode(records)`` once;
3. ``handler.handle(decoded, stop)``, then publish what it returned and wait for every
   acknowledgement;
4. commit the batch's offsets. With ``read_ahead`` the next batch is fetched (and decoded) while
   one is handled; batches are still handled and committed one after the other, in order.

A pipelined service (the monitor) does its CPU work in ``decode`` (batch N+1 applied while
batch N is published and committed), publishes many records at once (``batched_publish``:
``OutRecord``s, one producer batch per partition), lets a rebalance wait for the batch in flight
(``revoke_waits_for_batch``) and, through :class:`CommitHooks`, chooses the offsets to commit
and hears when they are committed. Its rebalance hooks use ``ConsumeLoop.consumer`` (set before
the consumer starts) to pause, seek and read committed offsets.

Outage policy, the same for the broker and for PostgreSQL, at start and later:

* While either is unreachable the service waits and tries again with capped exponential
  back-off (``retry_initial_seconds`` doubling up to ``retry_max_seconds``, with jitter), logs
  one line per attempt (no traceback) and reports not ready. It never exits because of it.
* An outage while handling (a database or broker error raised by ``handle``, or a publish
  that fails) retries the same batch, uncommitted, until it succeeds: handlers are written so
  that running a batch again is harmless (idempotent writes, claims, logs). A commit that meets
  an outage is retried the same way; one refused after a rebalance is only logged (the new
  owner reads those records again).
* The stop event ends every wait at once; a connection attempt in progress is abandoned. A
  batch left unfinished is not committed and is read again on the next start.

Errors that waiting cannot fix (``ConfigError``, a bug) are raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar, cast, runtime_checkable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from vectoros.batch_produce import BatchProducer, OutRecord
from vectoros.db import TRANSIENT_ERRORS, PgPool, backoff_delay, connect_pool, describe_dsn
from vectoros.errors import BrokerUnavailable, DatabaseUnavailable
from vectoros.kafka import ensure_topics, start_producer
from vectoros.settings import KafkaSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D")

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    BrokerUnavailable,
    DatabaseUnavailable,
    KafkaError,
    *TRANSIENT_ERRORS,
    asyncpg.PostgresError,
)
"""Errors that waiting can fix: the broker or PostgreSQL is down, starting or restarting."""

TOPICS_ATTEMPT_SECONDS = 10.0
"""How long one attempt to create the topics may wait for the broker (a busy broker may take
more than a moment to answer; an unreachable one fails at once)."""

# --- the broker interface ------------------------------------------------------------------------


class Record(Protocol):
    """What the loop and the handlers read of a consumed record (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


Records = Mapping[Any, Sequence[Record]]
"""One fetched batch: records by topic-partition."""


class Consumer(Protocol):
    """The part of ``AIOKafkaConsumer`` the loop (and a handler's hooks) use."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Records: ...
    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None: ...
    def assignment(self) -> Collection[Any]: ...
    def highwater(self, partition: Any) -> int | None: ...
    def pause(self, *partitions: Any) -> None: ...
    def resume(self, *partitions: Any) -> None: ...
    def seek(self, partition: Any, offset: int) -> None: ...
    async def committed(self, partition: Any) -> int | None: ...


class Producer(Protocol):
    """Publishing: ``send`` returns once the broker acknowledged the record."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...
    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Every record sent (batched per partition), returns once all are acknowledged."""
        ...


RebalanceHook = Callable[[set[TopicPartition]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """What a consumer reads, as which group. The hooks run inside the rebalance (the monitor's
    restore and checkpoint belong there)."""

    topics: tuple[str, ...]
    group_id: str
    client_id: str
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int | None = None
    heartbeat_interval_ms: int | None = None
    fetch_max_wait_ms: int | None = None
    group_instance_id: str | None = None  # static membership
    on_assigned: RebalanceHook | None = None
    on_revoked: RebalanceHook | None = None


class Broker(Protocol):
    """Makes consumers and producers; ``KafkaBroker`` or ``MemoryBroker``."""

    @property
    def description(self) -> str: ...
    def consumer(self, subscription: Subscription) -> Consumer: ...
    def producer(self) -> Producer: ...
    async def ensure_topics(self, topics: Mapping[str, int]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: Subscription) -> None:
        self._sub = subscription

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self._sub.on_revoked is not None:
            await self._sub.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self._sub.on_assigned is not None:
            await self._sub.on_assigned(set(assigned))


class KafkaProducer:
    """A ``Producer`` on aiokafka, started by ``vectoros.kafka.start_producer`` (acks=all;
    ``options`` win)."""

    def __init__(self, settings: KafkaSettings, options: Mapping[str, Any] | None = None) -> None:
        self._settings = settings
        self._options = dict(options or {})
        self._producer: Any = None
        self._batches: BatchProducer | None = None

    async def start(self) -> None:
        self._producer = await start_producer(self._settings, **self._options)
        self._batches = BatchProducer(self._producer)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
            self._batches = None

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        if self._batches is None:
            raise BrokerUnavailable("the producer is not started")
        await self._batches.send_all(records)

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        if self._producer is None:
            raise BrokerUnavailable("the producer is not started")
        await self._producer.send_and_wait(topic, value, key=key)


class KafkaBroker:
    """The real broker (aiokafka): consumers without auto-commit, reading from the earliest
    offset when the group has none; producers as ``vectoros.kafka.start_producer`` makes them."""

    def __init__(
        self, settings: KafkaSettings, *, producer_options: Mapping[str, Any] | None = None
    ) -> None:
        self._settings = settings
        self._producer_options = producer_options

    @property
    def description(self) -> str:
        return f"Kafka broker at {self._settings.bootstrap()}"

    def consumer(self, subscription: Subscription) -> Consumer:
        options: dict[str, Any] = {}
        if subscription.session_timeout_ms is not None:
            options["session_timeout_ms"] = subscription.session_timeout_ms
        if subscription.heartbeat_interval_ms is not None:
            options["heartbeat_interval_ms"] = subscription.heartbeat_interval_ms
        if subscription.fetch_max_wait_ms is not None:
            options["fetch_max_wait_ms"] = subscription.fetch_max_wait_ms
        if subscription.group_instance_id is not None:
            options["group_instance_id"] = subscription.group_instance_id
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap(),
            group_id=subscription.group_id,
            client_id=subscription.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=subscription.max_poll_interval_ms,
            **options,
        )
        consumer.subscribe(list(subscription.topics), listener=_Listener(subscription))
        result: Consumer = consumer
        return result

    def producer(self) -> Producer:
        return KafkaProducer(self._settings, self._producer_options)

    async def ensure_topics(self, topics: Mapping[str, int]) -> None:
        """One attempt of at most ``TOPICS_ATTEMPT_SECONDS`` (the loop does the waiting);
        raises what made it fail."""
        try:
            await ensure_topics(
                self._settings.bootstrap(), dict(topics), retry_for=TOPICS_ATTEMPT_SECONDS
            )
        except BrokerUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, Exception):
                raise cause from None
            raise


# --- handlers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """One record a handler wants published before its batch is committed."""

    topic: str
    value: bytes
    key: bytes | None = None


@dataclass(frozen=True)
class Resources:
    """What the loop connected for the handler (``None`` when not asked for)."""

    pool: PgPool | None
    producer: Producer | None
    consumer: Consumer


Outputs = Sequence[Output] | Sequence[OutRecord]
"""What ``handle`` returns to publish: ``OutRecord``s with ``batched_publish``, else ``Output``s."""


class Handler(Protocol, Generic[D]):
    """A service's logic. ``decode`` runs once per batch (it may be a coroutine: the monitor's
    yields between partitions, so the batch in flight progresses), ``handle`` once or more
    (again after an outage: it must be harmless to repeat). ``handle`` returns the records to
    publish, or None when ``stop`` interrupted it (the batch is then not committed)."""

    async def open(self, resources: Resources) -> None: ...
    def decode(self, records: Records) -> D | Awaitable[D]: ...
    async def handle(self, decoded: D, stop: asyncio.Event) -> Outputs | None: ...
    async def close(self) -> None: ...


@runtime_checkable
class CommitHooks(Protocol):
    """Optional, on a handler: which offsets a handled batch commits (instead of every fetched
    record's), what happens once they are committed, and a look after every fetch."""

    def offsets(self, decoded: Any) -> Mapping[Any, int]:
        """Asked after ``handle`` (and its publish) succeeded; empty commits nothing."""
        ...

    def committed(self, decoded: Any, offsets: Mapping[Any, int]) -> None:
        """``offsets`` are committed (not called when the commit was refused or abandoned)."""
        ...

    def fetched(self) -> None:
        """After every fetch, empty or not (gauges)."""
        ...


@runtime_checkable
class JoinGate(Protocol):
    """Optional, on a handler: a condition that must hold before its consumer joins the group
    (e.g. a lock that only one instance may hold). Until it does the loop stands by, not ready:
    one log line, then asked again with the outage back-off; the stop event ends the wait."""

    async def may_join(self, pool: PgPool | None) -> str | None:
        """None to go on and join; else why to wait. An outage error is waited out as such."""
        ...


@dataclass(frozen=True)
class Database:
    """The PostgreSQL pool a handler needs: made from ``dsn``, or ``pool`` borrowed (left open)."""

    dsn: str = ""
    min_size: int = 0
    max_size: int = 4
    command_timeout: float | None = 30.0
    pool: PgPool | None = None

    @property
    def description(self) -> str:
        return f"PostgreSQL at {describe_dsn(self.dsn)}" if self.dsn else "PostgreSQL"


@dataclass(frozen=True)
class LoopOptions:
    name: str
    subscription: Subscription
    batch_max: int = 500
    flush_ms: int = 0
    idle_poll_ms: int = 500
    read_ahead: bool = False
    publishes: bool = False
    batched_publish: bool = False  # ``handle`` returns ``OutRecord``s, sent with ``send_all``
    revoke_waits_for_batch: bool = False  # a revoke waits for the batch in flight (then its hook)
    topics: Mapping[str, int] = field(default_factory=dict)
    database: Database | None = None
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 30.0
    retry_jitter: float = 0.2


# --- waiting -------------------------------------------------------------------------------------


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True as soon as ``stop`` is set."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return False
    return True


class _Stopped(Exception):
    pass


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """``work``'s result; raises ``_Stopped`` (and cancels ``work``) as soon as ``stop`` is set."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    if task.cancelled():
        raise _Stopped
    return task.result()


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line, bounded."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    text = text.removeprefix(f"{name}: ")[:200]  # aiokafka's errors start with their name
    return f"{name}: {text}" if text else name


class _QuietWhileConnecting(logging.Filter):
    """Drops aiokafka's own "Unable connect to ..." error while a loop is trying to connect:
    the loop logs one line per attempt itself. Later (a broker lost mid-run) they pass."""

    def __init__(self) -> None:
        super().__init__()
        self.connecting = 0

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.connecting and str(record.msg).startswith("Unable connect to"))


_quiet = _QuietWhileConnecting()
logging.getLogger("aiokafka").addFilter(_quiet)


async def fetch_batch(
    consumer: Consumer,
    stop: asyncio.Event,
    *,
    batch_max: int,
    flush_ms: int = 0,
    idle_poll_ms: int = 500,
) -> dict[Any, list[Record]]:
    """Up to ``batch_max`` records; once the first arrives, wait at most ``flush_ms`` more.
    Empty when ``idle_poll_ms`` passed without any (the caller looks at ``stop``)."""
    loop = asyncio.get_running_loop()
    batch: dict[Any, list[Record]] = {}
    count = 0
    deadline: float | None = None
    while count < batch_max and not stop.is_set():
        if deadline is None:
            timeout_ms = idle_poll_ms
        else:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            timeout_ms = max(1, int(remaining * 1000))
        got = await consumer.getmany(timeout_ms=timeout_ms, max_records=batch_max - count)
        for tp, recs in got.items():
            if recs:
                batch.setdefault(tp, []).extend(recs)
                count += len(recs)
        if deadline is None:
            if count == 0:
                break
            deadline = loop.time() + flush_ms / 1000
    return batch


def next_offsets(records: Records) -> dict[Any, int]:
    """The offsets to commit once ``records`` are handled."""
    return {tp: max(r.offset for r in recs) + 1 for tp, recs in records.items() if recs}


# --- the loop ------------------------------------------------------------------------------------


class ConsumeLoop(Generic[D]):
    """Runs one ``Handler`` on one ``Broker`` until stopped (see the module docstring)."""

    def __init__(self, handler: Handler[D], broker: Broker, options: LoopOptions) -> None:
        self.handler = handler
        self.broker = broker
        self.options = options
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.pool: PgPool | None = None
        self._connected = False
        self._failing = False
        self._committed: dict[Any, int] = {}
        self._pending: asyncio.Task[bool] | None = None  # the batch read ahead of, or None
        # revoke_waits_for_batch: the batch being handled, published and committed (done when
        # it is), and the revokes in progress (no batch starts being handled meanwhile)
        self._in_flight: asyncio.Future[None] | None = None
        self._revokes = 0
        self._revokes_over = asyncio.Event()
        self._hooks: CommitHooks | None = handler if isinstance(handler, CommitHooks) else None

    # -- state ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Connected to everything, and the last batch did not fail."""
        return self._connected and not self._failing

    def caught_up(self) -> bool:
        """Every assigned partition is committed up to its last known high watermark."""
        consumer = self.consumer
        if not self._connected or consumer is None:
            return False
        assigned = consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            hw = consumer.highwater(tp)
            if hw is None or self._committed.get(tp, 0) < hw:
                return False
        return True

    def _delay(self, attempt: int) -> float:
        o = self.options
        return backoff_delay(attempt, o.retry_initial_seconds, o.retry_max_seconds, o.retry_jitter)

    # -- connecting -----------------------------------------------------------------------------

    async def _until_up(
        self, stop: asyncio.Event, what: str, connect: Callable[[], Awaitable[T]]
    ) -> T:
        """``connect()``'s result, trying again after every outage; ``_Stopped`` on stop."""
        attempt = 0
        while True:
            if stop.is_set():
                raise _Stopped
            attempt += 1
            try:
                result = await unless_stopped(stop, connect())
            except OUTAGE_ERRORS as exc:
                delay = self._delay(attempt)
                logger.warning(
                    "%s: %s not reachable (attempt %d, %s); retrying in %.1fs",
                    self.options.name,
                    what,
                    attempt,
                    describe_error(exc),
                    delay,
                )
                if await stopped_within(stop, delay):
                    raise _Stopped from None
                continue
            if attempt > 1:
                logger.info("%s: %s reached after %d attempts", self.options.name, what, attempt)
            return result

    async def _connect_pool(self, database: Database) -> PgPool:
        """One attempt (the loop does the waiting); raises what made it fail."""
        try:
            return await connect_pool(
                database.dsn,
                min_size=database.min_size,
                max_size=database.max_size,
                deadline_seconds=0,
                command_timeout=database.command_timeout,
            )
        except DatabaseUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, Exception):
                raise cause from None
            raise

    async def _start_producer(self) -> Producer:
        producer = self.broker.producer()
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _start_consumer(self) -> Consumer:
        subscription = self.options.subscription
        if self.options.revoke_waits_for_batch:
            subscription = replace(subscription, on_revoked=self._after_batch(subscription))
        consumer = self.broker.consumer(subscription)
        self.consumer = consumer  # the rebalance hooks may run inside ``start``
        try:
            await consumer.start()
        except BaseException:
            self.consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        return consumer

    def _after_batch(self, subscription: Subscription) -> RebalanceHook:
        """The revoke hook, run once the batch in flight is done (committed, its commit refused,
        or failed): the partitions go with everything handled so far committed. Meanwhile no
        other batch starts being handled; one that waited is handled after the hook (with the
        partitions gone)."""
        hook = subscription.on_revoked

        async def revoked(partitions: set[TopicPartition]) -> None:
            self._revokes += 1
            self._revokes_over.clear()
            try:
                in_flight = self._in_flight
                if in_flight is not None and not in_flight.done():
                    await asyncio.wait([in_flight])
                if hook is not None:
                    await hook(partitions)
            finally:
                self._revokes -= 1
                if not self._revokes:
                    self._revokes_over.set()

        return revoked

    async def _take_off(self) -> asyncio.Future[None] | None:
        """With ``revoke_waits_for_batch``: once no revoke is in progress, mark a batch in
        flight (the future is done when the batch is)."""
        if not self.options.revoke_waits_for_batch:
            return None
        while self._revokes:
            await self._revokes_over.wait()
        flight = self._in_flight = asyncio.get_running_loop().create_future()
        return flight

    async def _connect(self, stop: asyncio.Event) -> None:
        _quiet.connecting += 1
        try:
            await self._connect_all(stop)
        finally:
            _quiet.connecting -= 1
        logger.info("%s: connected", self.options.name)

    async def _connect_all(self, stop: asyncio.Event) -> None:
        o = self.options
        kafka = self.broker.description
        if o.database is not None:
            database = o.database
            if database.pool is not None:
                self.pool = database.pool
            else:
                self.pool = await self._until_up(
                    stop, database.description, lambda: self._connect_pool(database)
                )
        if o.topics:
            await self._until_up(stop, kafka, lambda: self.broker.ensure_topics(o.topics))
        if o.publishes:
            self.producer = await self._until_up(stop, kafka, self._start_producer)
        if isinstance(self.handler, JoinGate):
            await self._until_allowed(stop, self.handler)
        self.consumer = await self._until_up(stop, kafka, self._start_consumer)
        resources = Resources(self.pool, self.producer, self.consumer)
        what = o.database.description if o.database is not None else kafka
        await self._until_up(stop, what, lambda: self.handler.open(resources))

    async def _until_allowed(self, stop: asyncio.Event, gate: JoinGate) -> None:
        """Stand by until ``gate`` lets the consumer join its group (``_Stopped`` on stop)."""
        what = self.options.database.description if self.options.database else "the gate"
        attempt = 0
        while True:
            reason = await self._until_up(stop, what, lambda: gate.may_join(self.pool))
            if reason is None:
                if attempt:
                    logger.info("%s: standby over, joining the consumer group", self.options.name)
                return
            attempt += 1
            if attempt == 1:
                logger.info(
                    "%s: standing by before joining the consumer group: %s",
                    self.options.name,
                    reason,
                )
            if await stopped_within(stop, self._delay(attempt)):
                raise _Stopped

    async def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self.handler.close()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self.pool is not None:
            if self.options.database is not None and self.options.database.pool is None:
                await self.pool.close()
            self.pool = None

    # -- running --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (waiting as long as it takes), then consume until ``stop`` is set."""
        try:
            try:
                await self._connect(stop)
            except _Stopped:
                logger.info("%s: stopped while waiting for its connections", self.options.name)
                return
            self._connected = True
            await self._consume(stop)
        finally:
            self._connected = False
            await self._disconnect()

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        o = self.options
        fetched = self._hooks.fetched if self._hooks is not None else None
        try:
            while not stop.is_set():
                records = await fetch_batch(
                    self.consumer,
                    stop,
                    batch_max=o.batch_max,
                    flush_ms=o.flush_ms,
                    idle_poll_ms=o.idle_poll_ms,
                )
                decoded = await self._decode(records) if records else None
                if self._pending is not None:
                    done = await self._pending
                    self._pending = None
                    if not done:
                        break
                if decoded is not None:
                    work = self._process(records, decoded, stop)
                    if o.read_ahead:
                        self._pending = asyncio.create_task(work)
                    elif not await work:
                        break
                if fetched is not None:
                    fetched()
            if self._pending is not None:
                await self._pending
                self._pending = None
        finally:
            pending, self._pending = self._pending, None
            if pending is not None:  # leaving on an error: that batch is not committed
                pending.cancel()
                await asyncio.wait([pending])

    async def _decode(self, records: Records) -> D:
        decoded = self.handler.decode(records)
        if inspect.isawaitable(decoded):
            return cast(D, await decoded)
        return decoded

    async def _process(self, records: Records, decoded: D, stop: asyncio.Event) -> bool:
        """Handle, publish, commit; True when committed, False when ``stop`` came first."""
        flight = await self._take_off()
        try:
            return await self._handle_publish_commit(records, decoded, stop)
        finally:
            if flight is not None:
                flight.set_result(None)
                if self._in_flight is flight:
                    self._in_flight = None

    async def _handle_publish_commit(
        self, records: Records, decoded: D, stop: asyncio.Event
    ) -> bool:
        failures = 0
        outputs: Outputs | None = None
        while True:
            try:
                outputs = await self.handler.handle(decoded, stop)
                if outputs is None:
                    logger.info(
                        "%s: stopping with a batch unfinished; it is not committed and will be "
                        "read again",
                        self.options.name,
                    )
                    return False
                await self._publish(outputs)
            except OUTAGE_ERRORS as exc:
                failures += 1
                self._failing = True
                delay = self._delay(failures)
                logger.error(
                    "%s: a batch of %d records failed (attempt %d, %s); offsets not committed, "
                    "consumption paused, retrying in %.1fs",
                    self.options.name,
                    sum(len(r) for r in records.values()),
                    failures,
                    describe_error(exc),
                    delay,
                )
                if await stopped_within(stop, delay):
                    logger.warning(
                        "%s: stopping with a batch not done; it is not committed and will be "
                        "read again",
                        self.options.name,
                    )
                    return False
                continue
            break
        if self._failing:
            self._failing = False
            logger.warning(
                "%s: working again: batch done after %d failed attempts",
                self.options.name,
                failures,
            )
        hooks = self._hooks
        if hooks is None:
            await self._commit(next_offsets(records), stop)
            return True
        offsets = hooks.offsets(decoded)
        if await self._commit(offsets, stop):
            hooks.committed(decoded, offsets)
        return True

    async def _publish(self, outputs: Outputs) -> None:
        if not outputs:
            return
        if self.producer is None:
            raise RuntimeError(f"{self.options.name}: outputs to publish but publishes=False")
        if self.options.batched_publish:
            await self.producer.send_all(cast(Sequence[OutRecord], outputs))
            return
        producer = self.producer
        singles = cast(Sequence[Output], outputs)
        await asyncio.gather(*(producer.send(o.topic, o.value, o.key) for o in singles))

    async def _commit(self, offsets: Mapping[Any, int], stop: asyncio.Event) -> bool:
        """Commit; while the broker is unreachable, wait and try again (not ready meanwhile).
        True once committed; False when refused (a rebalance) or abandoned on stop."""
        if not offsets or self.consumer is None:
            return False
        failures = 0
        while True:
            try:
                await self.consumer.commit(dict(offsets))
            except KafkaError as exc:
                if not (exc.retriable or isinstance(exc, KafkaConnectionError)):
                    # E.g. a rebalance took the partition away: whoever reads these records
                    # again handles them again, and handlers make that harmless.
                    logger.warning(
                        "%s: committing offsets failed (%s); the records will be read again",
                        self.options.name,
                        describe_error(exc),
                    )
                    return False
                failures += 1
                self._failing = True
                delay = self._delay(failures)
                logger.error(
                    "%s: committing offsets failed (attempt %d, %s); retrying in %.1fs",
                    self.options.name,
                    failures,
                    describe_error(exc),
                    delay,
                )
                if await stopped_within(stop, delay):
                    return False  # handled, not committed: read again (harmlessly) on next start
                continue
            if failures:
                self._failing = False
                logger.warning(
                    "%s: offsets committed after %d failures", self.options.name, failures
                )
            self._committed.update(offsets)
            return True
