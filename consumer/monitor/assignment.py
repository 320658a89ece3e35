"""The partitions a monitor owns, and what a rebalance does to them.

For each owned partition: its state, the offset committed for it, and the offset its state holds
records up to (ahead of the commit while a batch is in flight). A partition revoked whose state
holds exactly what was committed is parked: a rebalance usually hands most partitions back to
the same member, and one handed back at that same committed offset needs no restore. Every
other newly assigned partition is restored (``consumer.monitor.restore``) before any of its
records is processed: paused while restoring, then positioned at the committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from aiokafka import TopicPartition

from consumer.monitor.gauges import Gauges
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.restore import restore_partitions
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState

logger = logging.getLogger(__name__)


class Assignment:
    def __init__(
        self,
        settings: MonitorSettings,
        metrics: MonitorMetrics,
        gauges: Gauges,
        *,
        new_state: Callable[[], PartitionState],
        replay: Callable[[PartitionState, Any], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.gauges = gauges
        self.new_state = new_state
        self.replay = replay  # a source record applied again, when there is no checkpoint
        self.states: dict[int, PartitionState] = {}
        self.committed: dict[int, int] = {}  # per partition: committed up to here
        self.applied: dict[int, int] = {}  # per partition: its state includes up to here
        self.parked: dict[int, tuple[PartitionState, int]] = {}  # state, committed offset
        self.restoring = 0

    def revoke(self, revoked: Collection[TopicPartition]) -> None:
        """Partitions going away (the batch in flight is done): parked when their state holds
        exactly what was committed, else dropped."""
        for tp in revoked:
            partition = tp.partition
            state = self.states.pop(partition, None)
            committed = self.committed.pop(partition, None)
            applied = self.applied.pop(partition, None)
            if state is not None and committed is not None and applied == committed:
                self.parked[partition] = (state, committed)
            else:
                self.gauges.forget(partition)
        if revoked:
            logger.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def assign(self, consumer: Any, assigned: Collection[TopicPartition]) -> None:
        """Take the partitions the group assigned: the ones kept need nothing, the parked ones
        handed back at their offset are reinstated, every other one is restored first."""
        self.metrics.assigned_partitions.set(len(assigned))
        self.metrics.rebalances.inc()
        new = [tp for tp in assigned if tp.partition not in self.states]
        parked, self.parked = self.parked, {}
        for partition in set(parked) - {tp.partition for tp in assigned}:
            self.gauges.forget(partition)  # went to another member
        self.restoring += 1
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
                    self._own(tp.partition, state, offset)
                    consumer.seek(tp, offset)
                    kept.append(tp.partition)
                else:
                    todo.append(tp)
            if kept:
                logger.info("partitions kept in memory (no restore needed): %s", sorted(kept))
            await self._restore(consumer, todo, committed)
        finally:
            self.restoring -= 1
            if new:
                consumer.resume(*new)
        logger.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    def _own(self, partition: int, state: PartitionState, offset: int) -> None:
        self.states[partition] = state
        self.committed[partition] = self.applied[partition] = offset

    async def _restore(
        self, consumer: Any, todo: list[TopicPartition], committed: dict[int, int]
    ) -> None:
        s = self.settings
        states = {tp.partition: self.new_state() for tp in todo}
        reports = await restore_partitions(
            states,
            bootstrap=s.bootstrap(),
            changelog_topic=s.topic_state,
            source_topic=s.topic_events,
            committed=committed,
            replay=self.replay,
            client_id=s.kafka_client_id,
        )
        for tp in todo:
            report = reports[tp.partition]
            offset = committed[tp.partition]
            self._own(tp.partition, states[tp.partition], offset)
            consumer.seek(tp, offset)  # what was fetched meanwhile comes again
            self.metrics.restore_seconds.observe(report.seconds)
            self.metrics.restored_records.inc(report.records)
            logger.info(
                "partition %d restored from %s at offset %d: %d deals from %d records in "
                "%.2fs (%d uncommitted entries ignored)",
                tp.partition,
                report.source,
                offset,
                report.deals,
                report.records,
                report.seconds,
                report.skipped_uncommitted,
            )
