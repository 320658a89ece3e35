"""The read API's Prometheus metrics. Labels are bounded: ``route`` (the route templates of
this package), ``status`` (HTTP status code), ``reason``, ``lifecycle``, ``answer`` and
``outcome`` (fixed sets); never a token, workspace, deal or insight id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vectoros.metrics import PREFIX

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}_api_requests_total",
            "API requests answered, by route and HTTP status.",
            ["route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_api_request_seconds",
            "Time to answer an API request (not the live stream), by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            f"{PREFIX}_api_auth_failures_total",
            "Requests refused with 401, by reason (missing, invalid).",
            ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_api_rate_limited_total",
            "Requests refused with 429 (a token over its rate limit).",
            registry=registry,
        )
        self.live_clients = Gauge(
            f"{PREFIX}_api_live_clients",
            "Clients connected to the live stream.",
            registry=registry,
        )
        self.live_events = Counter(
            f"{PREFIX}_api_live_events_total",
            "Insight events read from deal-insights for the live stream, by lifecycle.",
            ["lifecycle"],
            registry=registry,
        )
        self.answers = Counter(
            f"{PREFIX}_api_answers_total",
            "Answers from the dashboard (acknowledged, snooze_1d, snooze_1w, not_useful), by"
            " outcome (published, unavailable).",
            ["answer", "outcome"],
            registry=registry,
        )
