"""The history service's Prometheus metrics (conventions in ``vectoros.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from vectoros.metrics import LATENCY_BUCKETS, PREFIX


class HistoryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_consumed = Counter(
            f"{PREFIX}_history_events_consumed_total",
            "Deal events read from deal-events (ticks not counted).",
            registry=registry,
        )
        self.events_recorded = Counter(
            f"{PREFIX}_history_events_recorded_total",
            "Deal events new to the history (replays and redeliveries not counted).",
            registry=registry,
        )
        self.deals_written = Counter(
            f"{PREFIX}_history_deals_written_total",
            "Deal projections recomputed and written.",
            registry=registry,
        )
        self.skipped = Counter(
            f"{PREFIX}_history_skipped_messages_total",
            "Messages on deal-events that are not deal events (the monitor dead-letters them).",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_history_batch_write_seconds",
            "Time to write one batch to PostgreSQL.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.db_errors = Counter(
            f"{PREFIX}_history_database_errors_total",
            "Batches that failed against PostgreSQL and were retried.",
            registry=registry,
        )
        self.deals_scored = Counter(
            f"{PREFIX}_history_deals_scored_total",
            "Open deals scored with the current model (published on deal-scores).",
            registry=registry,
        )
        self.scores_to_events = Counter(
            f"{PREFIX}_history_scores_to_events_total",
            "Scores published on deal-events as deal.scored (those that differ enough from the "
            "deal's last published one), for the monitor.",
            registry=registry,
        )
        self.model_insights = Counter(
            f"{PREFIX}_history_model_insights_total",
            "Insights of the model-based rules, evaluated here on the scores "
            "(VECTOROS_HISTORY_MODEL_RULES), by rule and lifecycle step.",
            ["rule", "lifecycle"],
            registry=registry,
        )
        self.retrainings = Counter(
            f"{PREFIX}_history_retrainings_total",
            "Models trained by the service itself (outcome learning), by whether promoted.",
            ["promoted"],
            registry=registry,
        )
        self.benchmark_refreshes = Counter(
            f"{PREFIX}_history_benchmark_refreshes_total",
            "Recomputations of the learned stage benchmarks.",
            registry=registry,
        )
