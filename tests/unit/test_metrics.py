"""Every service's /metrics parses with prometheus_client's parser and follows the naming rules:
one prefix, ``_total`` on counters, units in the names of timings, bounded labels only."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer.enricher.metrics import EnricherMetrics
from consumer.monitor.metrics import MonitorMetrics
from consumer.notifier.metrics import NotifierMetrics
from consumer.sink.metrics import SinkMetrics
from producer.capture.metrics import CaptureMetrics
from producer.gateway.metrics import GatewayMetrics
from producer.ticker import TickerMetrics
from vectoros.ops_server import Health, OpsServer

SERVICES = {
    "monitor": MonitorMetrics,
    "ticker": TickerMetrics,
    "sink": SinkMetrics,
    "notifier": NotifierMetrics,
    "gateway": GatewayMetrics,
    "enricher": EnricherMetrics,
    "capture": CaptureMetrics,
}
BOUNDED_LABELS = {
    "type", "rule", "priority", "lifecycle", "reason", "partition", "table",
    "destination", "kind", "source", "status",
}  # fmt: skip
UNITS = (
    "_seconds",
    "_bytes",
    "_records",
    "_total",
    "_deals",
    "_partitions",
    "_stalled",
    "_enabled",
)


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_metrics_endpoint_parses_and_follows_naming(service: str) -> None:
    registry = CollectorRegistry()
    SERVICES[service](registry)
    health = Health()
    health.register(service, lambda: True)
    ops = OpsServer(registry, health, "127.0.0.1", 0)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as http:
            exposition = (await http.get("/metrics")).text
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.json() == {"ready": True, "components": {service: True}}
    finally:
        await ops.stop()
    families = list(text_string_to_metric_families(exposition))
    assert families, "no metrics exposed"
    for family in families:
        if family.name.endswith("_created"):
            continue  # prometheus_client's creation timestamps of label-less counters
        assert family.name.startswith(f"vectoros_{service}_"), family.name
        assert re.fullmatch(r"[a-z0-9_]+", family.name)
        if family.type == "counter":
            # the parser strips _total from the family name; the sample keeps it
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        elif family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: a timing needs its unit"
        else:
            assert family.name.endswith(UNITS), f"{family.name}: unit missing from the name"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= BOUNDED_LABELS, sample.labels


async def test_readyz_is_503_until_every_component_is_ready() -> None:
    health = Health()
    state = {"ready": False}
    health.register("monitor", lambda: state["ready"])
    ops = OpsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as http:
            assert (await http.get("/readyz")).status_code == 503
            state["ready"] = True
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await ops.stop()
