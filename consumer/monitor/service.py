"""``vectoros monitor``: the pure per-partition state machine as a handler on the consume loop
(``vectoros.consume_loop``, the same loop and outage policy as the sink, notifier and enricher).

Per batch: fetch → apply to the partitions' states (``MonitorHandler.decode``) → publish the
insights, DLQ records and changelog records, wait for every acknowledgement → commit the batch's
offsets. A crash anywhere before the commit replays the batch; deterministic insight ids make the
replay harmless.

Pipelined, one batch in flight at most (the loop's ``read_ahead``): batch N+1 is fetched and
applied (CPU) while batch N's outputs are on their way and its offsets are committed. Batch N+1's
outputs are sent only once batch N's commit is done, so outputs and commits stay in order and a
batch's offsets are still committed only after its own outputs are acknowledged. A rebalance
waits for the batch in flight (acknowledged and committed, or its commit refused) before the
partitions go (``revoke_waits_for_batch``); what was applied ahead for a partition that went is
dropped unsent (its new owner replays it from the commit).

The parts: ``batch`` (records applied to the states; outputs and counts), ``checkpoint`` (what of
a batch goes out; what is recorded once committed), ``assignment`` (the partitions owned, what a
rebalance does to them, restore on assignment via ``restore``), ``gauges`` (lag, stall), ``dlq``.

Durable state: every checkpoint also writes the latest state of each deal that changed to the
``deal-monitor-state`` changelog (coalesced, co-partitioned with the source). When a partition is
assigned, its state is restored from the changelog as of the group's committed offset before any
record is processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

from consumer.learned_rules import LearnedRules
from consumer.monitor.assignment import Assignment
from consumer.monitor.batch import BatchProcessor, ProcessedBatch
from consumer.monitor.checkpoint import checkpoint_of, record_commit
from consumer.monitor.gauges import Gauges
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from consumer.thresholds import RulesConfig
from vectoros import native
from vectoros.batch_produce import OutRecord
from vectoros.consume_loop import (
    Broker,
    ConsumeLoop,
    Consumer,
    KafkaBroker,
    LoopOptions,
    RebalanceHook,
    Records,
    Resources,
    Subscription,
)
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)

PRODUCER_BATCH_BYTES = 512 * 1024
"""The producer's batch size: a DLQ record (at most VECTOROS_MAX_EVENT_BYTES plus headers) fits."""


class MonitorHandler:
    """The monitor's logic for the consume loop. ``decode`` applies a fetched batch to the
    states (the CPU work, done while the previous batch is in flight); ``handle`` decides what
    of it goes out; ``committed`` records the checkpoint; ``fetched`` updates the gauges."""

    def __init__(
        self,
        settings: MonitorSettings,
        rules: RulesConfig,
        metrics: MonitorMetrics,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self._wall = wall_clock
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
        self.consumer: Consumer | None = None

    def new_partition_state(self) -> PartitionState:
        return PartitionState(
            self.rules,
            dedupe_per_deal=self.settings.dedupe_per_deal,
            tombstone_days=self.settings.tombstone_days,
        )

    # -- the Handler ----------------------------------------------------------------------------

    async def open(self, resources: Resources) -> None:
        self.consumer = resources.consumer

    async def close(self) -> None:
        return None

    async def decode(self, records: Records) -> ProcessedBatch:
        """Apply a fetched batch to the partitions' states and collect its outputs (insights,
        DLQ records, checkpoint). Between partitions the batch in flight progresses
        (acknowledgements, commit); a partition not owned (yet), or revoked or re-assigned
        meanwhile, is skipped: never processed without its state."""
        processor = self.processor
        batch = processor.start()
        states = self.assignment.states
        owned = dict(states)
        applied = self.assignment.applied
        first = True
        for tp, records_of in records.items():
            if not first:
                await asyncio.sleep(0)
            first = False
            partition = tp.partition
            state = owned.get(partition)
            if state is None or states.get(partition) is not state or not records_of:
                # Fetched before its restore began (aiokafka hands out records of a new
                # assignment before calling the listener), or revoked meanwhile: the restore
                # seeks back to the committed offset, so these come again.
                continue
            if records_of[0].offset < applied.get(partition, 0):
                # fetched before a seek back to the committed offset of a partition kept across
                # a rebalance: the state already holds these; they come again from the seek
                continue
            applied[partition] = processor.add_partition(batch, tp, state, records_of)
        return batch

    async def handle(self, batch: ProcessedBatch, stop: asyncio.Event) -> Sequence[OutRecord]:
        """What goes out: decided (and counted) once; a retry after an outage sends the same."""
        checkpoint = batch.checkpoint
        if checkpoint is None:
            checkpoint = batch.checkpoint = checkpoint_of(
                batch, self.assignment.states, self.metrics
            )
        return checkpoint.outputs

    # -- CommitHooks ----------------------------------------------------------------------------

    def offsets(self, batch: ProcessedBatch) -> Mapping[Any, int]:
        return batch.checkpoint.offsets if batch.checkpoint is not None else {}

    def committed(self, batch: ProcessedBatch, offsets: Mapping[Any, int]) -> None:
        committed = self.assignment.committed
        for tp, offset in offsets.items():
            committed[tp.partition] = offset
        self.gauges.progress()
        if batch.checkpoint is not None:
            record_commit(batch.checkpoint, self.metrics, self._wall())

    def fetched(self) -> None:
        if self.consumer is not None:
            self.gauges.update(self.consumer, self.assignment.states, self.assignment.committed)

    # -- rebalances -----------------------------------------------------------------------------

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Runs once the batch in flight is done (the loop waits for it)."""
        self.assignment.revoke(partitions)

    async def assigned(self, consumer: Consumer, partitions: set[TopicPartition]) -> None:
        await self.assignment.assign(consumer, partitions)


def loop_options(
    settings: MonitorSettings, *, on_assigned: RebalanceHook, on_revoked: RebalanceHook
) -> LoopOptions:
    """The monitor's loop: one fetch per batch, pipelined, batched publishing."""
    s = settings
    return LoopOptions(
        name="monitor",
        subscription=Subscription(
            topics=(s.topic_events,),
            group_id=s.monitor_group_id,
            client_id=f"{s.kafka_client_id}-monitor",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
            # Kafka answers a waiting fetch as soon as data arrives; the embedded Tansu only
            # when this expires, so it bounds what an idle partition adds
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            group_instance_id=s.monitor_group_instance_id,
            on_assigned=on_assigned,
            on_revoked=on_revoked,
        ),
        batch_max=s.max_batch_records,
        idle_poll_ms=s.fetch_timeout_ms,
        read_ahead=True,
        publishes=True,
        batched_publish=True,
        revoke_waits_for_batch=True,
        retry_initial_seconds=0.5,
        retry_max_seconds=10.0,
    )


class Monitor:
    """Consumes ``deal-events``; publishes ``deal-insights``, ``deal-events-dlq`` and the
    changelog. A ``MonitorHandler`` on a ``ConsumeLoop`` (Kafka, or the ``broker`` given)."""

    def __init__(
        self,
        settings: MonitorSettings,
        rules: RulesConfig,
        metrics: MonitorMetrics,
        health: Health,
        *,
        broker: Broker | None = None,
        learned: LearnedRules | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.learned = learned  # refreshes the learned stage benchmarks while running
        self.handler = MonitorHandler(settings, rules, metrics, wall_clock=wall_clock)
        if broker is None:
            options = {"max_batch_size": PRODUCER_BATCH_BYTES}
            broker = KafkaBroker(settings, producer_options=options)
        self.loop = ConsumeLoop(
            self.handler,
            broker,
            loop_options(settings, on_assigned=self._assigned, on_revoked=self.handler.revoked),
        )
        health.register("monitor", self.ready)

    def use_rules(self, rules: RulesConfig) -> None:
        """Evaluate with ``rules`` from now on (e.g. newly learned benchmarks): every owned and
        parked partition, and every partition restored later. A deal's insights follow at its
        next event or deadline."""
        self.handler.rules = rules
        for state in self.partitions.values():
            state.rules = rules
        for state, _ in self.handler.assignment.parked.values():
            state.rules = rules

    @property
    def partitions(self) -> dict[int, PartitionState]:
        """The state of every partition owned, by partition number."""
        return self.handler.assignment.states

    def ready(self) -> bool:
        return (
            self.loop.ready() and self.handler.assignment.restoring == 0 and bool(self.partitions)
        )

    def caught_up(self) -> bool:
        """Every assigned partition is committed up to its last known high watermark."""
        consumer = self.loop.consumer
        if consumer is None or not self.partitions:
            return False
        committed = self.handler.assignment.committed
        for partition in self.partitions:
            hw = consumer.highwater(TopicPartition(self.settings.topic_events, partition))
            if hw is None or committed.get(partition, 0) < hw:
                return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. An unreachable broker is waited for (the loop's
        outage policy: backoff, a log line per attempt, readiness false), never a reason to
        exit."""
        s = self.settings
        logger.info(
            "monitor consuming %s as group %s; pure core: %s",
            s.topic_events,
            s.monitor_group_id,
            native.status(),
        )
        learning: asyncio.Task[None] | None = None
        if self.learned is not None:
            learning = asyncio.create_task(
                self.learned.run(stop, s.learned_refresh_seconds, self.use_rules)
            )
        try:
            await self.loop.run(stop)
        finally:
            if learning is not None:
                learning.cancel()
                await asyncio.gather(learning, return_exceptions=True)
            logger.info("monitor stopped")

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        consumer = self.loop.consumer
        if consumer is None:
            # the consumer's start was abandoned (stop) while its group join completed: it is
            # being stopped, nothing will be consumed, so there is nothing to restore
            logger.info("partitions assigned while stopping: %s (ignored)", sorted(partitions))
            return
        await self.handler.assigned(consumer, partitions)
