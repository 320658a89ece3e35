"""Hostile input on the real broker: thousands of malformed messages (the strategies of
``tests/unit/test_hostile_input.py``) interleaved with a valid stream on ``deal-events``, read by a
``vectoros monitor`` process. It never stops; every bad message is on the DLQ once with the
expected reason and its source position; the insights equal those of the valid stream alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumer.monitor.dlq import DLQ_REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from consumer.monitor.settings import MonitorSettings
from producer.simulator import SimulationSpec
from schemas.events import TICK_HEADER, TICK_HEADER_VALUE
from tests.kafka_utils import monitor_settings, read_all, running_monitor, wait_caught_up
from tests.processes import (
    ServiceGroup,
    describe_difference,
    end_offsets,
    http_get,
    insight_steps,
    metric_total,
    monitor_env,
    ops_port,
    wait_committed,
)
from tests.unit.test_hostile_input import MAX_BYTES, VALID, Message, interleave, sample_inserts
from vectoros.kafka import ensure_standard_topics, start_producer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
HOSTILE_COUNT = 2500
# The record timestamp of every message: after the valid stream (45 simulated days from
# SimulationSpec's start) and the up-to-60-day-later copies, so the monitor's event-time bounds
# (VECTOROS_MAX_CLOCK_SKEW ahead, VECTOROS_MAX_EVENT_AGE behind) hold whatever today's date is.
STAMP_MS = int((SimulationSpec().start + dt.timedelta(days=120)).timestamp() * 1000)


async def publish(
    settings: MonitorSettings, messages: list[Message]
) -> dict[tuple[int, int], Message]:
    """Publish in order (valid ticks to every partition); the position of each bad message."""
    producer = await start_producer(settings)
    try:
        topic = settings.topic_events
        pending: list[tuple[asyncio.Future[Any], Message]] = []
        for message in messages:
            if message.key is None and message.kind == "valid":  # a tick
                for partition in range(PARTITIONS):
                    await producer.send(
                        topic,
                        message.value,
                        partition=partition,
                        timestamp_ms=STAMP_MS,
                        headers=[(TICK_HEADER, TICK_HEADER_VALUE)],
                    )
                continue
            future = await producer.send(
                topic, message.value, key=message.key, timestamp_ms=STAMP_MS
            )
            if message.reasons:
                pending.append((future, message))
        await producer.flush()
        positions = {}
        for future, message in pending:
            metadata = await future
            positions[(metadata.partition, metadata.offset)] = message
        return positions
    finally:
        await producer.stop()


async def test_thousands_of_hostile_messages_on_the_broker(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    settings = monitor_settings(
        kafka_bootstrap, unique_name, partitions=PARTITIONS, max_event_bytes=MAX_BYTES
    )
    clean = monitor_settings(
        kafka_bootstrap, unique_name, partitions=PARTITIONS, max_event_bytes=MAX_BYTES
    )
    await ensure_standard_topics(settings)
    await ensure_standard_topics(clean)
    inserts = sample_inserts(HOSTILE_COUNT, seed=7)
    bad = await publish(settings, interleave(inserts))
    await publish(clean, VALID)
    assert len(bad) > HOSTILE_COUNT * 0.8

    env = monitor_env(settings, max_event_bytes=MAX_BYTES, metrics_enabled="true", metrics_port=0)
    async with ServiceGroup(tmp_path) as services:
        monitor = await services.start("monitor", "monitor", env)
        await monitor.wait_for_log(r"partitions assigned")
        ends = await end_offsets(kafka_bootstrap, settings.topic_events, PARTITIONS)
        await wait_committed(
            kafka_bootstrap, settings.monitor_group_id, settings.topic_events, ends, alive=[monitor]
        )
        port = ops_port(monitor)
        ready, _ = await http_get(port, "/readyz")
        _, exposition = await http_get(port, "/metrics")
        assert monitor.running, "the monitor stopped"
        code, _ = await monitor.stop()
        assert code == 0, monitor.tail()
    assert ready == 200

    async with running_monitor(clean) as reference:
        await wait_caught_up(reference)

    # every bad message is on the DLQ once, with its reason and where it came from
    dlq = await read_all(kafka_bootstrap, settings.topic_dlq)
    seen: Counter[tuple[int, int]] = Counter()
    wrong = []
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers[SOURCE_TOPIC] == settings.topic_events
        position = (int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET]))
        seen[position] += 1
        message = bad.get(position)
        if message is None or headers[DLQ_REASON] not in message.reasons:
            wrong.append((position, headers[DLQ_REASON], message and message.kind))
    assert not wrong, (
        f"{len(wrong)} DLQ records for valid messages or with a wrong reason: {wrong[:5]}"
    )
    assert set(seen) == set(bad), f"{len(set(bad) - set(seen))} bad messages are not on the DLQ"
    assert max(seen.values()) == 1, "a bad message was dead-lettered twice"
    assert metric_total(exposition, "vectoros_monitor_dlq_records_total") == len(bad)

    # every valid event processed once in effect
    got = insight_steps(await read_all(kafka_bootstrap, settings.topic_insights))
    want = insight_steps(await read_all(kafka_bootstrap, clean.topic_insights))
    print(f"{len(bad)} bad messages dead-lettered; {len(want.keys)} insight steps")
    assert len(want.keys) > 20
    assert got.repeated == 0
    assert got.by_partition == want.by_partition, describe_difference(got, want)
