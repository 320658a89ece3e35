"""Every Prometheus metric of VectorOS, in one place.

Conventions: one prefix (``vectoros_``), the unit in the name (``_seconds``, ``_bytes``),
``_total`` on counters, and bounded labels only: event type, rule, priority, lifecycle, DLQ
reason, destination type and partition number — never a deal, workspace or insight id.
Each service builds its metrics on a ``CollectorRegistry`` passed in, so tests and the
all-in-one ``vectoros run`` can keep services apart or share one registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "vectoros"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_latency_seconds = Histogram(
            f"{PREFIX}_monitor_event_to_commit_seconds",
            "Wall time from an event's broker timestamp to its offset being committed.",
            buckets=_LATENCY_BUCKETS,
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
            buckets=_LATENCY_BUCKETS,
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


class TickerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ticks_sent = Counter(
            f"{PREFIX}_ticker_ticks_sent_total",
            "Ticks produced (one per partition per interval).",
            registry=registry,
        )
        self.tick_failures = Counter(
            f"{PREFIX}_ticker_failures_total",
            "Tick rounds that failed to publish.",
            registry=registry,
        )


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows_written = Counter(
            f"{PREFIX}_sink_rows_written_total",
            "Rows inserted or updated in PostgreSQL, by table.",
            ["table"],
            registry=registry,
        )
        self.insight_events_consumed = Counter(
            f"{PREFIX}_sink_insight_events_consumed_total",
            "Insight events read from deal-insights.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_sink_batch_write_seconds",
            "Time to write one batch to PostgreSQL.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.db_errors = Counter(
            f"{PREFIX}_sink_database_errors_total",
            "Batches that failed against PostgreSQL and were retried.",
            registry=registry,
        )
        self.invalid = Counter(
            f"{PREFIX}_sink_invalid_messages_total",
            "Messages on deal-insights that are not valid insight events (skipped, logged).",
            registry=registry,
        )


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            f"{PREFIX}_notifier_notifications_sent_total",
            "Notifications delivered, by destination type.",
            ["destination"],
            registry=registry,
        )
        self.failed = Counter(
            f"{PREFIX}_notifier_notifications_failed_total",
            "Notifications that failed for good, by destination type and kind.",
            ["destination", "kind"],
            registry=registry,
        )
        self.retries = Counter(
            f"{PREFIX}_notifier_retries_total",
            "Delivery attempts retried (429, 5xx, network), by destination type.",
            ["destination"],
            registry=registry,
        )
        self.skipped = Counter(
            f"{PREFIX}_notifier_skipped_total",
            "Insight events not delivered, by reason (below_threshold, lifecycle, already_sent).",
            ["reason"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            f"{PREFIX}_notifier_delivery_seconds",
            "Time to deliver one notification, retries included.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
