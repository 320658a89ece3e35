"""The gateway's Prometheus metrics, in the style of ``vectoros.metrics``.

Labels are bounded: ``source`` (4 values), ``status`` (HTTP status code), ``type`` (deal event
type), ``reason`` (a short code from a fixed set in this package). Never a deal, workspace or
CRM object id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from vectoros.metrics import PREFIX

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}_gateway_requests_total",
            "Webhook requests answered, by source and HTTP status.",
            ["source", "status"],
            registry=registry,
        )
        self.auth_failures = Counter(
            f"{PREFIX}_gateway_auth_failures_total",
            "Requests rejected with 401, by source and reason "
            "(missing_credentials, bad_signature, stale_timestamp, bad_credentials).",
            ["source", "reason"],
            registry=registry,
        )
        self.rejected = Counter(
            f"{PREFIX}_gateway_rejected_requests_total",
            "Requests rejected as bad input (400/404/413), by source and reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.events_published = Counter(
            f"{PREFIX}_gateway_events_published_total",
            "Deal events published to deal-events and acknowledged, by source and type.",
            ["source", "type"],
            registry=registry,
        )
        self.ignored = Counter(
            f"{PREFIX}_gateway_ignored_total",
            "Parts of accepted webhooks that produced no event, by source and reason "
            "(e.g. unknown_object, unmapped_property, unmapped_stage, invalid_field).",
            ["source", "reason"],
            registry=registry,
        )
        self.publish_failures = Counter(
            f"{PREFIX}_gateway_publish_failures_total",
            "Requests answered 503 because the broker did not acknowledge in time.",
            ["source"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_gateway_request_seconds",
            "Time from a request's arrival to its answer (publishing included).",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.acks = GatewayAckMetrics(registry)


class GatewayAckMetrics:
    """The answers to insights that reach the gateway (Slack buttons, email links), and the
    SMS status callbacks (channel twilio)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.answers = Counter(
            f"{PREFIX}_gateway_ack_requests_total",
            "Answers to insights, by channel (slack, email), outcome (published, or a short "
            "rejection code: bad_signature, stale_timestamp, invalid_payload, ...) and state "
            "(acknowledged, snoozed, not_useful; - when nothing was published).",
            ["channel", "outcome", "state"],
            registry=registry,
        )
        self.sms_status = Counter(
            f"{PREFIX}_gateway_sms_status_total",
            "Twilio status callbacks with a valid signature, by MessageStatus (queued, sent, "
            "delivered, undelivered, failed, ...; other).",
            ["status"],
            registry=registry,
        )
