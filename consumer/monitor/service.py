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

The parts: ``batch`` (records applied to the states, outputs and counts collected),
``checkpoint`` (a batch published, then committed), ``assignment`` (the partitions owned, what a
rebalance does, restore on assignment via ``restore``), ``gauges`` (lag, stall), ``dlq``.

Durable state: every checkpoint also writes the latest state of each deal that changed to the
``deal-monitor-state`` changelog (coalesced, co-partitioned with the source). When a partition is
assigned, its state is restored from the changelog as of the group's committed offset before any
record is processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumer.monitor.assignment import Assignment
from consumer.monitor.batch import BatchProcessor, ProcessedBatch
from consumer.monitor.checkpoint import Checkpointer
from consumer.monitor.gauges import Gauges
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig
from vectoros.batch_produce import BatchProducer
from vectoros.errors import BrokerUnavailable
from vectoros.kafka import start_producer
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._monitor.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._monitor.on_assigned(assigned)


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
        self.processor = BatchProcessor(settings)
        self.gauges = Gauges(
            metrics,
            topic=settings.topic_events,
            stall_seconds=settings.stall_seconds,
            wall_clock=wall_clock,
        )
        self.assignment = Assignment(
            settings,
            metrics,
            self.gauges,
            new_state=self.new_partition_state,
            replay=self.processor.replay_record,
        )
        self.checkpointer = Checkpointer(
            metrics, on_committed=self._committed, wall_clock=wall_clock
        )
        self._consumer: Any = None
        self._started = False
        health.register("monitor", self.ready)

    @property
    def partitions(self) -> dict[int, PartitionState]:
        """The state of every partition owned, by partition number."""
        return self.assignment.states

    def ready(self) -> bool:
        return self._started and self.assignment.restoring == 0 and bool(self.partitions)

    def caught_up(self) -> bool:
        """Every assigned partition is committed up to its last known high watermark."""
        if self._consumer is None or not self.partitions:
            return False
        committed = self.assignment.committed
        for partition in self.partitions:
            hw = self._consumer.highwater(TopicPartition(self.settings.topic_events, partition))
            if hw is None or committed.get(partition, 0) < hw:
                return False
        return True

    def new_partition_state(self) -> PartitionState:
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
        checkpointer = self.checkpointer
        checkpointer.producer = BatchProducer(producer)
        try:
            logger.info("monitor consuming %s as group %s", s.topic_events, s.monitor_group_id)
            while not stop.is_set():
                batch = await consumer.getmany(
                    timeout_ms=s.fetch_timeout_ms, max_records=s.max_batch_records
                )
                if batch:
                    processed = await self._process(batch)
                    if processed.parts:
                        await checkpointer.finish()  # one batch in flight at most
                        async with checkpointer.lock:
                            checkpointer.send(processed, self.partitions, consumer, stop)
                self.gauges.update(consumer, self.partitions, self.assignment.committed)
            await checkpointer.finish()  # stopping: its checkpoint completes first
        finally:
            await checkpointer.abandon()  # leaving on an error: that batch stays uncommitted
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

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        # Runs in the coordinator before it re-joins: let the batch in flight finish its
        # checkpoint (outputs acknowledged, offsets committed) before the partitions go. Holding
        # the lock, no other batch can be sent meanwhile.
        async with self.checkpointer.lock:
            await self.checkpointer.idle()
            self.assignment.revoke(revoked)

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.assignment.assign(self._consumer, assigned)

    # -- the hot path ---------------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> ProcessedBatch:
        """Apply a fetched batch to the partitions' states and collect its outputs (insights,
        DLQ records, checkpoint). Between partitions the loop lets the batch in flight progress
        (acknowledgements, commit); a partition dropped or re-assigned meanwhile is skipped."""
        processor = self.processor
        processed = processor.start()
        states = self.partitions
        owned = dict(states)
        applied = self.assignment.applied
        first = True
        for tp, records in batch.items():
            if not first:
                await asyncio.sleep(0)
            first = False
            partition = tp.partition
            state = owned.get(partition)
            if state is None or states.get(partition) is not state:
                # Fetched before its restore began (aiokafka hands out records of a new
                # assignment before calling the listener), or revoked meanwhile: never process
                # without the state. The restore seeks back to the committed offset, so these
                # come again.
                continue
            if records[0].offset < applied.get(partition, 0):
                # fetched before a seek back to the committed offset of a partition kept across
                # a rebalance: the state already holds these; they come again from the seek
                continue
            applied[partition] = processor.add_partition(processed, tp, state, records)
        return processed

    def _committed(self, offsets: dict[TopicPartition, int]) -> None:
        committed = self.assignment.committed
        for tp, offset in offsets.items():
            committed[tp.partition] = offset
        self.gauges.progress()
