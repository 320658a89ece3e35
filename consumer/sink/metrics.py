"""The sink's Prometheus metrics (conventions in ``vectoros.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from vectoros.metrics import LATENCY_BUCKETS, PREFIX


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
            buckets=LATENCY_BUCKETS,
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
