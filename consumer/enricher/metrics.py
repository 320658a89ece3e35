"""The enricher's Prometheus metrics, and the notifier's metric of its enrichment wait.

Same conventions as ``vectoros/metrics.py`` (where these classes can move): prefix
``vectoros_``, units in the names, ``_total`` on counters, bounded labels only: ``kind`` (a
failure kind), ``reason`` (why an insight kept the rule text or was skipped) and ``status``,
each from the fixed sets below; never a deal, workspace or insight id, nor a model name.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "vectoros"

_CALL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120)

# Label values (bounded): what can go wrong with one HTTP attempt, and why an insight keeps its
# rule text.
FAILURE_KINDS: Final = (
    "rate_limited",  # 429
    "overloaded",  # 529
    "server_error",  # other 5xx
    "timeout",  # no answer within enrich_timeout_seconds
    "connection",  # network error
    "client_error",  # other 4xx: never retried
    "invalid_output",  # no single valid tool call, or it fails validation: discarded
    "refused",  # stop_reason "refusal"
)
FALLBACK_REASONS: Final = ("budget", *FAILURE_KINDS)
SKIP_REASONS: Final = (
    "lifecycle",  # resolved or enriched: nothing to write
    "below_threshold",  # priority under enrich_min_priority
    "invalid",  # not a valid insight event
    "already_enriched",  # the log has an outcome for it (replay, restart)
    "claimed_elsewhere",  # another enricher is calling the model for it right now
    "duplicate",  # the same event twice in flight in this process
)


class EnricherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.enabled = Gauge(
            f"{PREFIX}_enricher_enabled",
            "1 when the enricher calls the model; 0 when it is off (no key, VECTOROS_LLM=off).",
            registry=registry,
        )
        self.consumed = Counter(
            f"{PREFIX}_enricher_insight_events_consumed_total",
            "Insight events read from deal-insights.",
            registry=registry,
        )
        self.skipped = Counter(
            f"{PREFIX}_enricher_skipped_total",
            "Insight events not sent to the model, by reason.",
            ["reason"],
            registry=registry,
        )
        self.calls = Counter(
            f"{PREFIX}_enricher_calls_total",
            "HTTP requests to the Messages API (every attempt, retries included).",
            registry=registry,
        )
        self.call_seconds = Histogram(
            f"{PREFIX}_enricher_call_seconds",
            "Time of one Messages API attempt that got an answer.",
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            f"{PREFIX}_enricher_failures_total",
            "Failed attempts, by kind (each retry's failure counts).",
            ["kind"],
            registry=registry,
        )
        self.retries = Counter(
            f"{PREFIX}_enricher_retries_total",
            "Attempts retried after a failure, by the kind of that failure.",
            ["kind"],
            registry=registry,
        )
        self.input_tokens = Counter(
            f"{PREFIX}_enricher_input_tokens_total",
            "Uncached input tokens billed.",
            registry=registry,
        )
        self.output_tokens = Counter(
            f"{PREFIX}_enricher_output_tokens_total",
            "Output tokens billed.",
            registry=registry,
        )
        self.cache_read_tokens = Counter(
            f"{PREFIX}_enricher_cache_read_input_tokens_total",
            "Input tokens read from the prompt cache.",
            registry=registry,
        )
        self.cache_write_tokens = Counter(
            f"{PREFIX}_enricher_cache_creation_input_tokens_total",
            "Input tokens written to the prompt cache.",
            registry=registry,
        )
        self.cost_usd = Counter(
            f"{PREFIX}_enricher_estimated_cost_usd_total",
            "Estimated spend from token counts and the configured prices (USD).",
            registry=registry,
        )
        self.enriched = Counter(
            f"{PREFIX}_enricher_enriched_total",
            "Insights whose model-written text was published as an enriched event.",
            registry=registry,
        )
        self.fallbacks = Counter(
            f"{PREFIX}_enricher_fallbacks_total",
            "Insights that keep the rule text, by reason (budget, or the final failure kind).",
            ["reason"],
            registry=registry,
        )
        for kind in FAILURE_KINDS:
            self.failures.labels(kind=kind)
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason=reason)
