"""A processed batch's checkpoint: its outputs (insights, DLQ records, changelog) published and
acknowledged, then its offsets committed; one batch in flight at most.

Only the parts of partitions still owned by the states they were applied to go out: a partition
revoked since was dropped with its state, and its new owner replays it from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer.monitor.batch import ProcessedBatch
from consumer.monitor.metrics import MonitorMetrics
from consumer.partition import PartitionState
from vectoros.batch_produce import BatchProducer, OutRecord

logger = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        metrics: MonitorMetrics,
        *,
        on_committed: Callable[[dict[TopicPartition, int]], None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.on_committed = on_committed
        self._wall = wall_clock
        self.producer: BatchProducer | None = None
        self.lock = asyncio.Lock()  # held to send a batch, and to drop partitions
        self._in_flight: asyncio.Task[None] | None = None

    def send(
        self,
        batch: ProcessedBatch,
        owned: Mapping[int, PartitionState],
        consumer: Any,
        stop: asyncio.Event,
    ) -> None:
        """Start publishing and committing ``batch`` (the previous one is committed)."""
        parts = [p for p in batch.parts if owned.get(p.partition.partition) is p.state]
        if not parts:
            logger.info("a processed batch of revoked partitions is dropped unsent")
            return
        if len(parts) == len(batch.parts):
            out = batch.outputs
        else:
            logger.info(
                "processed records of revoked partitions %s dropped unsent",
                sorted(
                    {p.partition.partition for p in batch.parts}
                    - {p.partition.partition for p in parts}
                ),
            )
            out = [r for p in parts for r in batch.outputs[p.outputs]]
        for part in parts:
            part.tally.flush(self.metrics)
        offsets = {p.partition: p.next_offset for p in parts}
        stamps = [p.first_timestamp for p in parts if p.first_timestamp is not None]
        oldest_ts = min(stamps) if stamps else None
        self._in_flight = asyncio.create_task(
            self._checkpoint(out, offsets, oldest_ts, batch.started, consumer, stop)
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
        self.on_committed(offsets)
        now = self._wall()
        done = time.perf_counter()
        self.metrics.checkpoint_seconds.observe(done - checkpoint_started)
        self.metrics.batch_seconds.observe(done - started)
        if oldest_ts is not None:
            self.metrics.event_latency_seconds.observe(max(0.0, now - oldest_ts / 1000))

    async def finish(self) -> None:
        """Wait for the batch in flight; its error (if any) is raised here."""
        task = self._in_flight
        if task is not None:
            try:
                await task
            finally:
                if task.done():  # a failure is raised here, not reported again on the way out
                    self._in_flight = None

    async def idle(self) -> None:
        """Wait until no batch is in flight (committed, commit refused, or failed); never
        raises (``finish`` reports a failure)."""
        task = self._in_flight
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def abandon(self) -> None:
        """Leaving on an error: the batch in flight stays uncommitted."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("the batch in flight failed too: %r", task.exception())

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

    async def _publish(self, out: list[OutRecord]) -> None:
        """Send every record (batched per partition), then wait for all acknowledgements. On a
        failure the whole set is sent again (with backoff) until it is acknowledged: insight ids
        are deterministic and the consumers are idempotent, so a resent record changes nothing
        downstream."""
        if not out:
            return
        assert self.producer is not None
        delay = 0.5
        while True:
            try:
                await self.producer.send_all(out)
                return
            except KafkaError as exc:
                logger.error(
                    "publishing %d records failed (%s); retrying in %.1fs", len(out), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
