"""A processed batch's checkpoint: what of it goes out, and what is recorded once it is committed.

The consume loop publishes a checkpoint's outputs (insights, DLQ records, the changelog records
of the deals that changed), waits for every acknowledgement, then commits its offsets. Only the
parts of partitions still owned by the states they were applied to go out: a partition revoked
since was dropped with its state, and its new owner replays it from the last commit. A part's
counts go to the metrics when it goes out (a part dropped unsent is counted by whoever replays
it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from aiokafka import TopicPartition

from consumer.monitor.batch import ProcessedBatch
from consumer.monitor.metrics import MonitorMetrics
from consumer.partition import PartitionState
from vectoros.batch_produce import OutRecord

logger = logging.getLogger(__name__)


class Checkpoint:
    """The outputs to publish and the offsets to commit once they are acknowledged."""

    __slots__ = ("batch_started", "offsets", "oldest_timestamp", "outputs", "started")

    def __init__(
        self,
        outputs: list[OutRecord],
        offsets: dict[TopicPartition, int],
        oldest_timestamp: int | None,
        batch_started: float,
    ) -> None:
        self.outputs = outputs
        self.offsets = offsets
        self.oldest_timestamp = oldest_timestamp  # broker timestamp (ms) of its oldest record
        self.batch_started = batch_started  # perf_counter when the batch's processing began
        self.started = time.perf_counter()  # when publishing began


def checkpoint_of(
    batch: ProcessedBatch, owned: Mapping[int, PartitionState], metrics: MonitorMetrics
) -> Checkpoint:
    """What of ``batch`` goes out, given the partitions ``owned`` now; counts what does."""
    parts = [p for p in batch.parts if owned.get(p.partition.partition) is p.state]
    if len(parts) == len(batch.parts):
        outputs = batch.outputs
    elif not parts:
        logger.info("a processed batch of revoked partitions is dropped unsent")
        outputs = []
    else:
        logger.info(
            "processed records of revoked partitions %s dropped unsent",
            sorted(
                {p.partition.partition for p in batch.parts}
                - {p.partition.partition for p in parts}
            ),
        )
        outputs = [r for p in parts for r in batch.outputs[p.outputs]]
    for part in parts:
        part.tally.flush(metrics)
    stamps = [p.first_timestamp for p in parts if p.first_timestamp is not None]
    return Checkpoint(
        outputs,
        {p.partition: p.next_offset for p in parts},
        min(stamps) if stamps else None,
        batch.started,
    )


def record_commit(checkpoint: Checkpoint, metrics: MonitorMetrics, wall_now: float) -> None:
    """``checkpoint``'s offsets are committed: how long it took, how old its events were."""
    done = time.perf_counter()
    metrics.checkpoint_seconds.observe(done - checkpoint.started)
    metrics.batch_seconds.observe(done - checkpoint.batch_started)
    if checkpoint.oldest_timestamp is not None:
        latency = wall_now - checkpoint.oldest_timestamp / 1000
        metrics.event_latency_seconds.observe(max(0.0, latency))
