"""``vectoros monitor``: the Kafka shell around the pure per-partition state machine.

Per batch: fetch → decode → apply to the partition's state → produce insights and DLQ records →
wait for the broker's acknowledgements → commit the batch's offsets. A crash anywhere before the
commit replays the batch; deterministic insight ids make the replay harmless.

Pipelined, one batch in flight at most: batch N+1 is fetched and applied (CPU) while batch N's
outputs are on their way and its offsets are committed. Batch N+1's outputs are sent only once
batch N's commit is done, so outputs and commits stay in order and a batch's offsets are still
committed only after its own outputs are acknowledged. A rebalance waits for the batch in flight
(acknowledged and committed, or its commit refused) before the partitions go; what was applied
ahead for a partition that went is dropped unsent (its new owner replays it from the commit).

Durable state: every checkpoint also writes the latest state of each deal that changed to the
``deal-monitor-state`` changelog (coalesced, co-partitioned with the source). When a partition is
assigned, its state is restored from the changelog as of the group's committed offset before any
record is processed (``consumer.restore``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer.changelog import checkpoint_records
from consumer.decode import TimeBounds, decode
from consumer.dlq import dlq_record
from consumer.partition import PartitionState
from consumer.restore import restore_partitions
from consumer.thresholds import RulesConfig
from schemas.events import Tick
from schemas.insights import Lifecycle, Priority, RuleName
from vectoros.batch_produce import BatchProducer, OutRecord
from vectoros.errors import BrokerUnavailable, EventRejected
from vectoros.kafka import start_producer
from vectoros.metrics import MonitorMetrics
from vectoros.ops_server import Health
from vectoros.settings import MonitorSettings

logger = logging.getLogger(__name__)


class _Tally:
    """Counts of one partition's part of a batch, added to the metrics once when that part is
    sent (a part dropped unsent on a revoke is counted by whoever replays it)."""

    __slots__ = ("duplicates", "events", "ignored", "insights", "rejected", "touched", "untimed")

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.insights: Counter[tuple[RuleName, Priority, Lifecycle]] = Counter()
        self.rejected: Counter[str] = Counter()
        self.duplicates = 0
        self.ignored = 0
        self.touched = 0
        self.untimed = 0

    def flush(self, m: MonitorMetrics) -> None:
        for kind, n in self.events.items():
            m.events_consumed.labels(kind).inc(n)
        for (rule, priority, lifecycle), n in self.insights.items():
            m.insights.labels(rule.value, priority.value, lifecycle.value).inc(n)
        for reason, n in self.rejected.items():
            m.dlq_records.labels(reason).inc(n)
            m.events_consumed.labels("invalid").inc(n)
        if self.duplicates:
            m.duplicates.inc(self.duplicates)
        if self.ignored:
            m.ignored.inc(self.ignored)
        if self.touched:
            m.tick_deals_touched.inc(self.touched)
        if self.untimed:
            m.untimed_records.inc(self.untimed)


class _Batch:
    """One fetched batch, applied but not yet published: its outputs, partition by partition."""

    __slots__ = ("out", "parts", "started", "tallies")

    def __init__(self, started: float) -> None:
        self.started = started  # perf_counter when its processing began
        self.out: list[OutRecord] = []
        self.tallies: dict[int, _Tally] = {}  # per partition
        # per partition: (tp, the state it was applied to, its slice of ``out``, the offset to
        # commit, the broker timestamp of its first record)
        self.parts: list[tuple[TopicPartition, PartitionState, slice, int, int | None]] = []


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Runs in the coordinator before it re-joins: let the batch in flight finish its
        # checkpoint (outputs acknowledged, offsets committed) before the partitions go. Holding
        # the lock, no other batch can be sent meanwhile.
        async with self._monitor.batch_lock:
            await self._monitor.in_flight_done()
            self._monitor.drop_partitions(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._monitor.restore_partitions(assigned)


class Monitor:
    """Consumes ``deal-events``; publishes ``deal-insights`` and ``deal-events-dlq``."""

    def __init__(
        self,
        settings: MonitorSettings,
        rules: RulesConfig,
        metrics: MonitorMetrics,
        health: Health,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.time_bounds = TimeBounds.of_seconds(settings.max_clock_skew, settings.max_event_age)
        self.partitions: dict[int, PartitionState] = {}
        self._next_offset: dict[int, int] = {}  # per partition: committed up to here
        self._applied_offset: dict[int, int] = {}  # per partition: its state includes up to here
        # Revoked partitions whose state equals their last commit, kept across a rebalance: if
        # the group hands one back at that same committed offset it needs no restore.
        self._parked: dict[int, tuple[PartitionState, int]] = {}
        self._wall = wall_clock
        self._consumer: Any = None
        self._batcher: BatchProducer | None = None
        self.batch_lock = asyncio.Lock()  # held to send a batch, and to drop partitions
        self._in_flight: asyncio.Task[None] | None = None  # the batch being published+committed
        self._restoring = 0
        self._started = False
        self._last_progress = time.monotonic()
        self._stall_logged = False
        health.register("monitor", self.ready)

    def ready(self) -> bool:
        return self._started and self._restoring == 0 and bool(self.partitions)

    def caught_up(self) -> bool:
        """Every assigned partition is committed up to its last known high watermark."""
        if self._consumer is None or not self.partitions:
            return False
        for partition in self.partitions:
            hw = self._consumer.highwater(TopicPartition(self.settings.topic_events, partition))
            if hw is None or self._next_offset.get(partition, 0) < hw:
                return False
        return True

    def _new_partition(self) -> PartitionState:
        return PartitionState(
            self.rules,
            dedupe_per_deal=self.settings.dedupe_per_deal,
            tombstone_days=self.settings.tombstone_days,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. An unreachable broker is waited for (with backoff and
        a clear log line per attempt, readiness false), never a reason to exit."""
        s = self.settings
        started = await self._connect(stop)
        if started is None:
            return
        producer, consumer = started
        self._batcher = BatchProducer(producer)
        try:
            logger.info("monitor consuming %s as group %s", s.topic_events, s.monitor_group_id)
            while not stop.is_set():
                batch = await consumer.getmany(
                    timeout_ms=s.fetch_timeout_ms, max_records=s.max_batch_records
                )
                if batch:
                    applied = await self._prepare(batch)
                    if applied.parts:
                        await self._finish_in_flight()  # one batch in flight at most
                        async with self.batch_lock:
                            self._send(applied, consumer, stop)
                self._update_gauges(consumer)
            await self._finish_in_flight()  # stopping: its checkpoint completes first
        finally:
            task, self._in_flight = self._in_flight, None
            if task is not None:  # leaving on an error: that batch stays uncommitted
                task.cancel()
                await asyncio.wait([task])
                if not task.cancelled() and task.exception() is not None:
                    logger.error("the batch in flight failed too: %r", task.exception())
            self._started = False
            await consumer.stop()  # commits nothing more; leaves the group
            await producer.stop()
            logger.info("monitor stopped")

    async def _connect(self, stop: asyncio.Event) -> tuple[Any, Any] | None:
        s = self.settings
        delay = 1.0
        while not stop.is_set():
            producer = consumer = None
            try:
                producer = await start_producer(s, max_batch_size=512 * 1024)
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=s.bootstrap(),
                    group_id=s.monitor_group_id,
                    group_instance_id=s.monitor_group_instance_id,
                    client_id=f"{s.kafka_client_id}-monitor",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    session_timeout_ms=s.session_timeout_ms,
                    # Kafka answers a waiting fetch as soon as data arrives; the embedded Tansu
                    # only when this expires, so it bounds what an idle partition adds
                    fetch_max_wait_ms=s.fetch_max_wait_ms,
                    heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
                )
                consumer.subscribe([s.topic_events], listener=_Rebalance(self))
                self._consumer = consumer
                await consumer.start()
                self._started = True
                return producer, consumer
            except (BrokerUnavailable, KafkaError, OSError) as exc:
                if consumer is not None:
                    await consumer.stop()
                if producer is not None:
                    await producer.stop()
                logger.error(
                    "broker %s not reachable (%s); retrying in %.0fs", s.bootstrap(), exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        return None

    # -- rebalancing ----------------------------------------------------------------------------

    def drop_partitions(self, revoked: list[TopicPartition]) -> None:
        """Partitions going away. A state that holds exactly what was committed (nothing applied
        ahead of the last commit) is parked: a rebalance usually hands most partitions back to
        the same member, and those then need no restore (``restore_partitions``)."""
        for tp in revoked:
            partition = tp.partition
            state = self.partitions.pop(partition, None)
            committed = self._next_offset.pop(partition, None)
            applied = self._applied_offset.pop(partition, None)
            if state is not None and committed is not None and applied == committed:
                self._parked[partition] = (state, committed)
            else:
                self._forget_gauges(partition)
        if revoked:
            logger.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def _forget_gauges(self, partition: int) -> None:
        for gauge in (
            self.metrics.consumer_lag,
            self.metrics.clock_lag_seconds,
            self.metrics.tracked_deals,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(str(partition))

    async def restore_partitions(self, assigned: list[TopicPartition]) -> None:
        """Restore every newly assigned partition before any of its records is processed: the
        partitions are paused while restoring, then positioned at the committed offset."""
        self.metrics.assigned_partitions.set(len(assigned))
        self.metrics.rebalances.inc()
        s = self.settings
        consumer = self._consumer
        new = [tp for tp in assigned if tp.partition not in self.partitions]
        parked, self._parked = self._parked, {}
        for partition in set(parked) - {tp.partition for tp in assigned}:
            self._forget_gauges(partition)  # went to another member
        self._restoring += 1
        if new:
            consumer.pause(*new)
        try:
            committed = {tp.partition: await consumer.committed(tp) or 0 for tp in new}
            todo = []
            kept = []
            for tp in new:
                state, offset = parked.get(tp.partition, (None, -1))
                if state is not None and offset == committed[tp.partition]:
                    # handed back at the offset its state was parked at: nobody else committed
                    # meanwhile, so the state in memory is exactly what a restore would build
                    self.partitions[tp.partition] = state
                    self._next_offset[tp.partition] = self._applied_offset[tp.partition] = offset
                    consumer.seek(tp, offset)
                    kept.append(tp.partition)
                else:
                    todo.append(tp)
            if kept:
                logger.info("partitions kept in memory (no restore needed): %s", sorted(kept))
            states = {tp.partition: self._new_partition() for tp in todo}
            reports = await restore_partitions(
                states,
                bootstrap=s.bootstrap(),
                changelog_topic=s.topic_state,
                source_topic=s.topic_events,
                committed=committed,
                replay=lambda st, rec: self._apply(st, rec, None),
                client_id=s.kafka_client_id,
            )
            for tp in todo:
                report = reports[tp.partition]
                self.partitions[tp.partition] = states[tp.partition]
                self._next_offset[tp.partition] = committed[tp.partition]
                self._applied_offset[tp.partition] = committed[tp.partition]
                consumer.seek(tp, committed[tp.partition])  # what was fetched meanwhile comes again
                self.metrics.restore_seconds.observe(report.seconds)
                self.metrics.restored_records.inc(report.records)
                logger.info(
                    "partition %d restored from %s at offset %d: %d deals from %d records in "
                    "%.2fs (%d uncommitted entries ignored)",
                    tp.partition,
                    report.source,
                    committed[tp.partition],
                    report.deals,
                    report.records,
                    report.seconds,
                    report.skipped_uncommitted,
                )
        finally:
            self._restoring -= 1
            if new:
                consumer.resume(*new)
        logger.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    # -- the hot path ---------------------------------------------------------------------------

    async def _prepare(self, batch: dict[TopicPartition, list[Any]]) -> _Batch:
        """Apply a fetched batch to the partitions' states and collect its outputs (insights,
        DLQ records, checkpoint). Between partitions the loop lets the batch in flight progress
        (acknowledgements, commit); a partition dropped or re-assigned meanwhile is skipped."""
        applied = _Batch(time.perf_counter())
        out = applied.out
        state_topic = self.settings.topic_state
        owned = dict(self.partitions)
        first = True
        for tp, records in batch.items():
            if not first:
                await asyncio.sleep(0)
            first = False
            partition = tp.partition
            state = owned.get(partition)
            if state is None or self.partitions.get(partition) is not state:
                # Fetched before its restore began (aiokafka hands out records of a new
                # assignment before calling the listener), or revoked meanwhile: never process
                # without the state. The restore seeks back to the committed offset, so these
                # come again.
                continue
            if records[0].offset < self._applied_offset.get(partition, 0):
                # fetched before a seek back to the committed offset of a partition kept across
                # a rebalance: the state already holds these; they come again from the seek
                continue
            begin = len(out)
            tally = applied.tallies[partition] = _Tally()
            self._apply_records(state, records, out, tally)
            end = records[-1].offset + 1
            self._applied_offset[partition] = end
            for key, value in checkpoint_records(state, end):
                out.append(OutRecord(state_topic, key, value, None, partition))
            applied.parts.append((tp, state, slice(begin, len(out)), end, records[0].timestamp))
        return applied

    def _send(self, applied: _Batch, consumer: Any, stop: asyncio.Event) -> None:
        """Start publishing and committing ``applied`` (the previous batch is committed). Only
        partitions still owned by the states they were applied to go out: a partition revoked
        since was dropped with its state, its new owner replays it from the last commit."""
        partitions = self.partitions
        parts = [p for p in applied.parts if partitions.get(p[0].partition) is p[1]]
        if not parts:
            logger.info("a processed batch of revoked partitions is dropped unsent")
            return
        if len(parts) == len(applied.parts):
            out = applied.out
        else:
            logger.info(
                "processed records of revoked partitions %s dropped unsent",
                sorted({p[0].partition for p in applied.parts} - {p[0].partition for p in parts}),
            )
            out = [r for p in parts for r in applied.out[p[2]]]
        for tp, *_ in parts:
            applied.tallies[tp.partition].flush(self.metrics)
        offsets = {tp: end for tp, _, _, end, _ in parts}
        stamps = [ts for *_, ts in parts if ts is not None]
        oldest_ts = min(stamps) if stamps else None
        self._in_flight = asyncio.create_task(
            self._checkpoint(out, offsets, oldest_ts, applied.started, consumer, stop)
        )

    async def _checkpoint(
        self,
        out: list[OutRecord],
        offsets: dict[TopicPartition, int],
        oldest_ts: int | None,
        started: float,
        consumer: Any,
        stop: asyncio.Event,
    ) -> None:
        """Outputs acknowledged, then offsets committed (the batch in flight)."""
        checkpoint_started = time.perf_counter()
        await self._publish(out)
        if not await self._commit(consumer, offsets, stop):
            return
        next_offset = self._next_offset
        for tp, offset in offsets.items():
            next_offset[tp.partition] = offset
        self._last_progress = time.monotonic()
        now = self._wall()
        done = time.perf_counter()
        self.metrics.checkpoint_seconds.observe(done - checkpoint_started)
        self.metrics.batch_seconds.observe(done - started)
        if oldest_ts is not None:
            self.metrics.event_latency_seconds.observe(max(0.0, now - oldest_ts / 1000))

    async def _finish_in_flight(self) -> None:
        """Wait for the batch in flight; its error (if any) is raised here."""
        task = self._in_flight
        if task is not None:
            try:
                await task
            finally:
                if task.done():  # a failure is raised here, not reported again on the way out
                    self._in_flight = None

    async def in_flight_done(self) -> None:
        """Wait until no batch is in flight (committed, commit refused, or failed); never
        raises (the run loop reports a failure)."""
        task = self._in_flight
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def _commit(
        self, consumer: Any, offsets: dict[TopicPartition, int], stop: asyncio.Event
    ) -> bool:
        """Commit, retrying transient errors. False when the group moved on (rebalance): the new
        owner replays the batch from the last commit; insight ids are stable, so that is safe."""
        delay = 0.5
        while True:
            try:
                await consumer.commit(offsets)
                return True
            except (CommitFailedError, IllegalStateError) as exc:
                logger.warning(
                    "commit refused after a rebalance; batch will be redelivered: %s", exc
                )
                return False
            except KafkaError as exc:
                if not exc.retriable:
                    logger.error("commit failed (%s); the batch will be redelivered", exc)
                    return False
                if stop.is_set() and delay > 4:
                    logger.error(
                        "giving up committing at shutdown (%s); batch will be replayed", exc
                    )
                    return False
                logger.error("commit failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _apply(
        self,
        state: PartitionState,
        rec: Any,
        out: list[OutRecord] | None,
        tally: _Tally | None = None,
    ) -> None:
        """Decode and apply one record; with ``out=None`` (restore) nothing is emitted."""
        if out is not None:
            counts = _Tally() if tally is None else tally
            self._apply_records(state, (rec,), out, counts)
            if tally is None:  # one record on its own (tests): count it at once
                counts.flush(self.metrics)
            return
        try:
            event = decode(
                rec.value,
                rec.key,
                max_bytes=self.settings.max_event_bytes,
                record_ms=rec.timestamp,
                bounds=self.time_bounds,
            )
        except EventRejected:
            return
        try:
            if isinstance(event, Tick):
                state.tick(event)
            else:
                state.apply(event)
        except Exception:  # sent to the DLQ (and logged) when it was first processed
            return

    def _apply_records(
        self,
        state: PartitionState,
        records: Iterable[Any],
        out: list[OutRecord],
        tally: _Tally,
    ) -> None:
        """The hot path: decode and apply each record of one partition, in order; insights and
        DLQ records go to ``out``. Everything looked up per record is bound once per call."""
        max_bytes = self.settings.max_event_bytes
        topic = self.settings.topic_insights
        append = out.append
        events = tally.events
        raised = tally.insights
        apply = state.apply
        tick = state.tick
        bounds = self.time_bounds
        duplicates = ignored = touched = untimed = 0
        for rec in records:
            stamp = rec.timestamp
            if stamp is None or stamp < 0:
                untimed += 1  # nothing to check its time against: accepted, counted
            try:
                event = decode(
                    rec.value, rec.key, max_bytes=max_bytes, record_ms=stamp, bounds=bounds
                )
            except EventRejected as exc:
                self._reject(rec, exc, out, tally)
                continue
            try:
                if isinstance(event, Tick):
                    step = tick(event)
                    touched += step.deals_touched
                else:
                    step = apply(event)
            except Exception as exc:  # a bug must not stop the stream: park the event, say so
                logger.exception(
                    "processing failed at %s/%d@%d", rec.topic, rec.partition, rec.offset
                )
                self._reject(rec, EventRejected("processing_error", repr(exc)[:500]), out, tally)
                continue
            events[event.type] += 1
            if step.duplicate:
                duplicates += 1
            if step.ignored:
                ignored += 1
            for insight in step.insights:
                append(
                    OutRecord(
                        topic, insight.deal_id.encode(), insight.value
                    )  # keyed by deal_id, placed by the default partitioner like the enricher's
                )
                raised[insight.rule, insight.priority, insight.lifecycle] += 1
        tally.duplicates += duplicates
        tally.ignored += ignored
        tally.touched += touched
        tally.untimed += untimed

    def _reject(self, rec: Any, exc: EventRejected, out: list[OutRecord], tally: _Tally) -> None:
        s = self.settings
        out.append(
            dlq_record(
                dlq_topic=s.topic_dlq,
                reason=exc.reason,
                detail=exc.detail,
                topic=rec.topic,
                partition=rec.partition,
                offset=rec.offset,
                key=rec.key,
                value=rec.value,
                max_value_bytes=s.max_event_bytes,
            )
        )
        tally.rejected[exc.reason] += 1
        logger.warning(
            "to DLQ: %s/%d@%d %s: %s", rec.topic, rec.partition, rec.offset, exc.reason, exc.detail
        )

    async def _publish(self, out: list[OutRecord]) -> None:
        """Send every record (batched per partition), then wait for all acknowledgements. On a
        failure the whole set is sent again (with backoff) until it is acknowledged: insight ids
        are deterministic and the consumers are idempotent, so a resent record changes nothing
        downstream."""
        if not out:
            return
        assert self._batcher is not None
        delay = 0.5
        while True:
            try:
                await self._batcher.send_all(out)
                return
            except KafkaError as exc:
                logger.error(
                    "publishing %d records failed (%s); retrying in %.1fs", len(out), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _update_gauges(self, consumer: Any) -> None:
        now = self._wall()
        total_lag = 0
        for partition, state in self.partitions.items():
            label = str(partition)
            hw = consumer.highwater(TopicPartition(self.settings.topic_events, partition))
            if hw is not None:
                lag = max(0, hw - self._next_offset.get(partition, 0))
                total_lag += lag
                self.metrics.consumer_lag.labels(label).set(lag)
            if state.clock_ms:
                self.metrics.clock_lag_seconds.labels(label).set(now - state.clock_ms / 1000)
            self.metrics.tracked_deals.labels(label).set(len(state.deals))
        if total_lag == 0:
            self._last_progress = time.monotonic()  # nothing waiting is not a stall
        idle = time.monotonic() - self._last_progress
        stalled = total_lag > 0 and idle > self.settings.stall_seconds
        self.metrics.stalled.set(1 if stalled else 0)
        if stalled and not self._stall_logged:
            logger.warning("stalled: %d records waiting, no commit for %.0fs", total_lag, idle)
        self._stall_logged = stalled
