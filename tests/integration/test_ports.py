"""Two services on one host with default settings (each has its own metrics port), and the
embedded broker's missing idempotent producer reported as one INFO line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import fresh_database
from tests.processes import ServiceGroup, service_env
from vectoros import kafka
from vectoros.kafka import ensure_topics, start_producer
from vectoros.settings import METRICS_PORTS, KafkaSettings

pytestmark = pytest.mark.integration


async def test_monitor_and_sink_run_side_by_side_with_default_ports(
    kafka_bootstrap: str, database_url: str, unique_name: Any, tmp_path: Path
) -> None:
    prefix = unique_name("ports")
    topics = {f"{prefix}-{t}": 1 for t in ("events", "insights", "dlq", "state")}
    await ensure_topics(kafka_bootstrap, topics)
    async with fresh_database(database_url, "ports") as dsn:
        env = service_env(  # no VECTOROS_METRICS_PORT: each takes its default
            kafka_bootstrap_servers=kafka_bootstrap,
            database_url=dsn,
            topic_events=f"{prefix}-events",
            topic_insights=f"{prefix}-insights",
            topic_dlq=f"{prefix}-dlq",
            topic_state=f"{prefix}-state",
            topic_partitions=1,
            monitor_group_id=f"{prefix}-monitor",
            sink_group_id=f"{prefix}-sink",
        )
        async with ServiceGroup(tmp_path) as group:
            monitor = await group.start("monitor", "monitor", env)
            sink = await group.start("sink", "sink", env)
            urls = {}
            for service in (monitor, sink):
                found = await service.wait_for_log(rf"{service.name}: /metrics\S* .* on (\S+)")
                urls[service.name] = found.group(1)
            assert urls == {
                "monitor": f"http://127.0.0.1:{METRICS_PORTS['monitor']}",
                "sink": f"http://127.0.0.1:{METRICS_PORTS['sink']}",
            }
            async with httpx.AsyncClient() as client:
                for url in urls.values():
                    response = await client.get(f"{url}/metrics")
                    assert response.status_code == 200
            assert monitor.running, monitor.tail()
            assert sink.running, sink.tail()
            for service in (monitor, sink):
                code, _ = await service.stop()
                assert code == 0, service.tail()
                assert "Traceback" not in service.log()


async def test_the_embedded_broker_without_idempotence_is_one_info_line(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if os.environ.get("VECTOROS_KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("an external broker may support idempotent producers")
    monkeypatch.setattr(kafka, "_no_idempotence", set())
    caplog.set_level(logging.INFO)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, kafka_idempotence="auto")
    for _ in range(2):  # the second producer does not ask again
        producer = await start_producer(settings)
        await producer.stop()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    said = [r for r in caplog.records if "idempotent" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO
    assert said[0].name == "vectoros.kafka"
