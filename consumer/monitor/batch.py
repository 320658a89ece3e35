"""One fetched batch through the monitor's state: decode and apply every record, collect what it
publishes (insights, DLQ records, the changelog checkpoint) and what it counts.

The hot path is ``BatchProcessor.process_records``: everything it looks up per record is bound
once per call, and its outputs are ``OutRecord`` named tuples (cheap to build and to unpack).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from aiokafka import TopicPartition

from consumer.changelog import checkpoint_records
from consumer.decode import TimeBounds, decode, decode_timed
from consumer.monitor.dlq import dlq_record
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.partition import PartitionState
from schemas.events import Tick
from schemas.insights import Lifecycle, Priority, RuleName
from vectoros.batch_produce import OutRecord
from vectoros.errors import EventRejected

if TYPE_CHECKING:
    from consumer.monitor.checkpoint import Checkpoint

logger = logging.getLogger(__name__)


class Tally:
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


class Part(NamedTuple):
    """One partition's part of a processed batch."""

    partition: TopicPartition
    state: PartitionState  # the state it was applied to (still owned only if still the same)
    outputs: slice  # its records in ``ProcessedBatch.outputs``
    next_offset: int  # the offset to commit once its outputs are acknowledged
    first_timestamp: int | None  # the broker timestamp of its first record
    tally: Tally


class ProcessedBatch:
    """One fetched batch, applied to the states but not yet published: its outputs, partition
    by partition."""

    __slots__ = ("checkpoint", "outputs", "parts", "started")

    def __init__(self, started: float) -> None:
        self.started = started  # perf_counter when its processing began
        self.outputs: list[OutRecord] = []
        self.parts: list[Part] = []
        self.checkpoint: Checkpoint | None = None  # what goes out, once decided


class BatchProcessor:
    """Applies records to partition states; insights, DLQ records and checkpoints go out as
    ``OutRecord``s."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.time_bounds = TimeBounds.of_seconds(settings.max_clock_skew, settings.max_event_age)

    def start(self) -> ProcessedBatch:
        return ProcessedBatch(time.perf_counter())

    def add_partition(
        self,
        batch: ProcessedBatch,
        tp: TopicPartition,
        state: PartitionState,
        records: Sequence[Any],
    ) -> int:
        """Process one partition's records into ``batch``, with that partition's checkpoint
        (the changelog records of the deals that changed); returns the offset after them."""
        out = batch.outputs
        begin = len(out)
        tally = Tally()
        self.process_records(state, records, out, tally)
        end: int = records[-1].offset + 1
        state_topic = self.settings.topic_state
        partition = tp.partition
        for key, value in checkpoint_records(state, end):
            out.append(OutRecord(state_topic, key, value, None, partition))
        batch.parts.append(
            Part(tp, state, slice(begin, len(out)), end, records[0].timestamp, tally)
        )
        return end

    def process_records(
        self,
        state: PartitionState,
        records: Iterable[Any],
        out: list[OutRecord],
        tally: Tally,
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
                event, at_ms = decode_timed(
                    rec.value, rec.key, max_bytes=max_bytes, record_ms=stamp, bounds=bounds
                )
            except EventRejected as exc:
                self.reject(rec, exc, out, tally)
                continue
            try:
                if isinstance(event, Tick):
                    step = tick(event, at_ms)
                    touched += step.deals_touched
                else:
                    step = apply(event, at_ms)
            except Exception as exc:  # a bug must not stop the stream: park the event, say so
                logger.exception(
                    "processing failed at %s/%d@%d", rec.topic, rec.partition, rec.offset
                )
                self.reject(rec, EventRejected("processing_error", repr(exc)[:500]), out, tally)
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

    def reject(self, rec: Any, exc: EventRejected, out: list[OutRecord], tally: Tally) -> None:
        """``rec`` goes to the DLQ, with why and where it came from."""
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

    def replay_record(self, state: PartitionState, rec: Any) -> None:
        """Apply one source record again while restoring (no checkpoint yet): nothing is
        emitted or counted; what was rejected when first processed is skipped again."""
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
