"""The monitor when the broker is not there: it waits (clear log lines, readiness false), never
exits or crash-loops, and works as soon as the broker answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.monitor import Monitor
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.thresholds import RulesConfig
from schemas.events import DealCreated
from tests.kafka_utils import WAIT_LIMIT, publish, read_insights, wait_caught_up, wait_ready
from vectoros.embedded import EmbeddedBroker
from vectoros.kafka import ensure_standard_topics
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration


async def test_monitor_waits_for_a_broker_that_is_not_up_yet(
    unique_name: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = EmbeddedBroker()
    await asyncio.to_thread(broker.start)
    address = broker.bootstrap_servers
    await asyncio.to_thread(broker.stop)  # the port is known, nobody listens
    settings = MonitorSettings(
        kafka_bootstrap_servers=address,
        kafka_idempotence="off",
        kafka_connect_timeout_seconds=1,
        topic_events=unique_name("events"),
        topic_insights=unique_name("insights"),
        topic_dlq=unique_name("dlq"),
        topic_state=unique_name("state"),
        topic_partitions=2,
        monitor_group_id=unique_name("g"),
        metrics_enabled=False,
        fetch_timeout_ms=50,
    )
    health = Health()
    monitor = Monitor(settings, RulesConfig(), MonitorMetrics(CollectorRegistry()), health)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="vectoros.consume_loop")
    task = asyncio.create_task(monitor.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT
        while "not reachable" not in caplog.text:
            assert loop.time() < deadline, "no log line about the missing broker"
            assert not task.done(), "the monitor gave up instead of waiting"
            await asyncio.sleep(0.1)
        assert not health.ready()
        await asyncio.to_thread(broker.start)  # same port, comes up now
        await ensure_standard_topics(settings)
        await wait_ready(monitor)
        event = DealCreated(
            event_id="outage-1",
            workspace_id="ws",
            deal_id="d-outage",
            occurred_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
            title="After the outage",
            value=1_000,
            currency="USD",
            stage="lead",
            probability=1,  # type: ignore[arg-type]
            close_date=dt.date(2026, 7, 1),
            owner_id="u",
        )
        await publish(settings, [event])
        await wait_caught_up(monitor)
        insights = await read_insights(address, settings.topic_insights)
        assert [i.deal_id for i in insights] == ["d-outage"]
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)
        await asyncio.to_thread(broker.close)
