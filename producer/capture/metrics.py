"""The capture service's Prometheus metrics, in the style of ``vectoros.metrics``.

Labels are bounded: ``source`` (webhook, gmail, gcal, graph, oauth, disconnect), ``status``
(an HTTP status code, or ok, failed, revoked). Never a
user, mailbox or workspace.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from vectoros.metrics import PREFIX


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}_capture_requests_total",
            "Requests answered by the capture endpoints, by source (webhook, gmail, gcal, graph, "
            "oauth, disconnect) and HTTP status (forged pushes are 401/403).",
            ["source", "status"],
            registry=registry,
        )
        self.syncs = Counter(
            f"{PREFIX}_capture_syncs_total",
            "Connection syncs of the maintenance loop (polling fallback), by provider and "
            "outcome (ok, failed, revoked).",
            ["source", "status"],
            registry=registry,
        )
        self.watches = Counter(
            f"{PREFIX}_capture_watches_total",
            "Watch channels and subscriptions checked, opened or renewed by the maintenance "
            "loop, by provider and outcome (ok, failed, revoked).",
            ["source", "status"],
            registry=registry,
        )
        self.rounds = Counter(
            f"{PREFIX}_capture_maintenance_rounds_total",
            "Maintenance rounds run (re-watch, renew, polling sync of every connection).",
            registry=registry,
        )
