"""The notifier's Prometheus metrics (conventions in ``vectoros.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vectoros.metrics import LATENCY_BUCKETS, PREFIX

# how long a notification waited for the enricher's text (VECTOROS_NOTIFY_ENRICHMENT_WINDOW_SECONDS)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30)


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
        self.acks = Counter(
            f"{PREFIX}_notifier_acks_recorded_total",
            "Answers to insights read from insight-acks and stored, by source and state.",
            ["source", "state"],
            registry=registry,
        )
        self.answers = Counter(
            f"{PREFIX}_notifier_answers_total",
            "Answers to notified insights by the insight's rule and the answer (acknowledged, "
            "snoozed, not_useful): with notifications sent per rule, the usefulness of a rule.",
            ["rule", "state"],
            registry=registry,
        )
        self.flood_messages = Counter(
            f"{PREFIX}_notifier_flood_messages_total",
            "Messages flood control let out, by kind (alert, digest, reminder, burst).",
            ["kind"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            f"{PREFIX}_notifier_delivery_seconds",
            "Time to deliver one notification, retries included.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class NotifierEnrichmentMetrics:
    """The notifier's wait for the enricher's text (``notify_enrichment_window_seconds``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.waits = Counter(
            f"{PREFIX}_notifier_enrichment_waits_total",
            "Insights held for the model's text, by how the wait ended (enriched, fallback: the "
            "enricher gave up, timeout: the window ran out, unavailable: the log was unreadable).",
            ["status"],
            registry=registry,
        )
        self.wait_seconds = Histogram(
            f"{PREFIX}_notifier_enrichment_wait_seconds",
            "Time a batch of notifications waited for the model's text.",
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )


class UsefulnessMetrics:
    """Per rule, what ``vectoros report usefulness`` says over the last 30 days, refreshed by the
    notifier every ``notify_usefulness_refresh_seconds``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notified = Gauge(
            f"{PREFIX}_notifier_usefulness_notified",
            "Insights notified one by one in the last 30 days, by rule.",
            ["rule"],
            registry=registry,
        )
        self.share = Gauge(
            f"{PREFIX}_notifier_usefulness_share",
            "Share of a rule's insights notified in the last 30 days that were acknowledged, "
            "snoozed, marked not_useful, or followed by deal activity within 72 h (measure).",
            ["rule", "measure"],
            registry=registry,
        )
