"""``vectoros monitor``'s Prometheus metrics (conventions: ``vectoros.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vectoros.metrics import LATENCY_BUCKETS, PREFIX


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_consumed = Counter(
            f"{PREFIX}_monitor_events_consumed_total",
            "Deal events and ticks consumed, by event type ('invalid' = went to the DLQ).",
            ["type"],
            registry=registry,
        )
        self.insights = Counter(
            f"{PREFIX}_monitor_insights_total",
            "Insight events published, by rule, priority and lifecycle.",
            ["rule", "priority", "lifecycle"],
            registry=registry,
        )
        self.dlq_records = Counter(
            f"{PREFIX}_monitor_dlq_records_total",
            "Input messages sent to the DLQ, by reason.",
            ["reason"],
            registry=registry,
        )
        self.untimed_records = Counter(
            f"{PREFIX}_monitor_records_without_timestamp_total",
            "Records without a broker timestamp: their event time could not be checked.",
            registry=registry,
        )
        self.duplicates = Counter(
            f"{PREFIX}_monitor_duplicate_events_total",
            "Events skipped because their event_id was seen recently.",
            registry=registry,
        )
        self.ignored = Counter(
            f"{PREFIX}_monitor_ignored_events_total",
            "Events for deals already closed or deleted.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_monitor_batch_processing_seconds",
            "Time from a fetched batch to its committed offsets.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_latency_seconds = Histogram(
            f"{PREFIX}_monitor_event_to_commit_seconds",
            "Wall time from an event's broker timestamp to its offset being committed.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tick_deals_touched = Counter(
            f"{PREFIX}_monitor_tick_deals_touched_total",
            "Deals evaluated because a tick found them due.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_monitor_consumer_lag_records",
            "Records between the committed position and the partition's high watermark.",
            ["partition"],
            registry=registry,
        )
        self.clock_lag_seconds = Gauge(
            f"{PREFIX}_monitor_partition_clock_lag_seconds",
            "Wall clock minus the partition clock; grows without bound when the ticker is dead.",
            ["partition"],
            registry=registry,
        )
        self.tracked_deals = Gauge(
            f"{PREFIX}_monitor_tracked_deals",
            "Open deals held in state, by partition.",
            ["partition"],
            registry=registry,
        )
        self.rebalances = Counter(
            f"{PREFIX}_monitor_rebalances_total",
            "Partition assignments received from the group coordinator.",
            registry=registry,
        )
        self.restore_seconds = Histogram(
            f"{PREFIX}_monitor_restore_seconds",
            "Time to restore one partition's state on assignment.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.restored_records = Counter(
            f"{PREFIX}_monitor_restored_records_total",
            "Changelog (or replayed source) records read to restore state.",
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            f"{PREFIX}_monitor_checkpoint_seconds",
            "Time to get a batch's outputs acknowledged and its offsets committed.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stalled = Gauge(
            f"{PREFIX}_monitor_stalled",
            "1 when records are waiting but nothing was committed for VECTOROS_STALL_SECONDS.",
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            f"{PREFIX}_monitor_assigned_partitions",
            "Partitions of deal-events assigned to this process.",
            registry=registry,
        )
