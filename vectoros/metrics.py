"""Every Prometheus metric of VectorOS, in one place.

Conventions: one prefix (``vectoros_``), the unit in the name (``_seconds``, ``_bytes``),
``_total`` on counters, and bounded labels only: event type, rule, priority, lifecycle, DLQ
reason, destination type and partition number — never a deal, workspace or insight id.
Each service builds its metrics on a ``CollectorRegistry`` passed in, so tests and the
all-in-one ``vectoros run`` can keep services apart or share one registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

PREFIX = "vectoros"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_BUCKETS = _LATENCY_BUCKETS  # for the services' own metrics modules


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
