"""The enricher's metrics (and the notifier's wait metrics) follow vectoros/metrics.py's rules:
one prefix, ``_total`` on counters, units in the names, bounded labels only."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.enricher.metrics import FAILURE_KINDS, FALLBACK_REASONS, EnricherMetrics
from consumer.notifier.metrics import NotifierEnrichmentMetrics

UNITS = ("_seconds", "_total", "_tokens", "_usd", "_enabled")


def test_names_and_labels() -> None:
    registry = CollectorRegistry()
    EnricherMetrics(registry)
    NotifierEnrichmentMetrics(registry)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    names = {f.name for f in families}
    for expected in (
        "vectoros_enricher_calls",
        "vectoros_enricher_call_seconds",
        "vectoros_enricher_input_tokens",
        "vectoros_enricher_output_tokens",
        "vectoros_enricher_estimated_cost_usd",
        "vectoros_enricher_failures",
        "vectoros_enricher_fallbacks",
        "vectoros_notifier_enrichment_waits",
    ):
        assert expected in names, expected
    for family in families:
        if family.name.endswith("_created"):
            continue
        assert re.fullmatch(r"vectoros_(enricher|notifier)_[a-z0-9_]+", family.name)
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        elif family.type == "histogram":
            assert family.name.endswith("_seconds")
        else:
            assert family.name.endswith(UNITS), family.name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= {"kind", "reason", "status"}


def test_label_values_are_a_fixed_set() -> None:
    registry = CollectorRegistry()
    EnricherMetrics(registry)
    exposition = generate_latest(registry).decode()
    for kind in FAILURE_KINDS:
        assert f'vectoros_enricher_failures_total{{kind="{kind}"}} 0.0' in exposition
    for reason in FALLBACK_REASONS:
        assert f'vectoros_enricher_fallbacks_total{{reason="{reason}"}} 0.0' in exposition
