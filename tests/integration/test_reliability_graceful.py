"""Graceful shutdown: SIGTERM while the monitor is busy makes it finish the batch in flight,
checkpoint, leave the group and exit 0 within a bounded time; the next process starts exactly
where the first stopped, so no event is processed twice.

Redelivered events are counted from the changelog: every checkpoint writes a meta record per
partition whose ``o`` is the source offset after the batch it checkpoints, so the largest ``o`` on
a changelog partition is how far the first process got. Whatever lies between the group's
committed offset and that point would be processed again by the next process.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from consumer.changelog import META_KEY, record_offset
from producer.simulator import SimulationSpec, generate
from tests.kafka_utils import monitor_settings, publisher_for, read_all, running_monitor
from tests.kafka_utils import wait_caught_up as wait_in_process_caught_up
from tests.processes import (
    ServiceGroup,
    committed_offsets,
    describe_difference,
    end_offsets,
    http_get,
    insight_steps,
    metric_total,
    monitor_env,
    ops_port,
    restore_lines,
    stream_items,
    wait_committed,
)
from vectoros.kafka import ensure_standard_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
SPEC = SimulationSpec(deals=80, days=60, seed=17)
STREAM_SECONDS = 12.0
SHUTDOWN_LIMIT = 10.0  # seconds from SIGTERM to exit


async def checkpointed_offsets(bootstrap: str, state_topic: str) -> dict[int, int]:
    """Per partition, the source offset of the last checkpoint written to the changelog."""
    out = dict.fromkeys(range(PARTITIONS), 0)
    for record in await read_all(bootstrap, state_topic):
        if record.key == META_KEY:
            offset = record_offset(record.value)
            assert offset is not None
            out[record.partition] = max(out[record.partition], offset)
    return out


async def test_sigterm_under_load_exits_cleanly_and_nothing_is_processed_twice(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=PARTITIONS)
    await ensure_standard_topics(settings)
    env = monitor_env(settings, max_batch_records=50)
    group, events = settings.monitor_group_id, settings.topic_events

    async with ServiceGroup(tmp_path) as services, publisher_for(settings) as pub:
        first = await services.start("monitor", "monitor", env)
        await first.wait_for_log(r"partitions assigned")
        streaming = asyncio.create_task(stream_items(pub, list(generate(SPEC)), STREAM_SECONDS))
        try:
            await asyncio.sleep(random.SystemRandom().uniform(2.0, 5.0))  # a point under load
            assert not streaming.done()
            code, seconds = await first.stop()
            assert code == 0, first.tail()
            committed = await committed_offsets(kafka_bootstrap, group, events, PARTITIONS)
            checkpointed = await checkpointed_offsets(kafka_bootstrap, settings.topic_state)

            observed = {**env, "VECTOROS_METRICS_ENABLED": "true", "VECTOROS_METRICS_PORT": "0"}
            second = await services.start("monitor", "monitor", observed)
            await second.wait_for_log(r"partitions assigned")
            rejoin = time.monotonic() - second.started_at
            await streaming
        finally:
            if not streaming.done():
                streaming.cancel()
        ends = await end_offsets(kafka_bootstrap, events, PARTITIONS)
        await wait_committed(kafka_bootstrap, group, events, ends, alive=[second])
        port = ops_port(second)
        ready, _ = await http_get(port, "/readyz")
        _, exposition = await http_get(port, "/metrics")
        code, _ = await second.stop()
        assert code == 0, second.tail()
        restores = restore_lines(second.log())

    redelivered = {p: max(0, checkpointed[p] - committed[p]) for p in range(PARTITIONS)}
    processed_before = sum(checkpointed.values())
    print(
        f"SIGTERM -> exit in {seconds:.2f} s after {processed_before} records; committed "
        f"{committed}, checkpointed {checkpointed}; redelivered on restart: {redelivered}; "
        f"the next process was assigned {rejoin:.1f} s after its start"
    )
    assert seconds < SHUTDOWN_LIMIT
    assert processed_before > 0, "the first process did nothing before the SIGTERM"
    assert sum(redelivered.values()) == 0, (
        f"records processed before the SIGTERM but not committed: {redelivered}"
    )
    # the second process restored exactly at the committed offsets, with nothing to discard
    assert {r.partition: r.committed for r in restores} == committed, (
        "the next process restored at other offsets than the group had committed when it "
        f"started: {restores}"
    )
    assert all(r.ignored_uncommitted == 0 for r in restores), restores

    reference = settings.model_copy(
        update={
            "monitor_group_id": unique_name("ref"),
            "topic_insights": unique_name("ref-insights"),
            "topic_state": unique_name("ref-state"),
            "topic_dlq": unique_name("ref-dlq"),
        }
    )
    async with running_monitor(reference) as ref_monitor:
        await wait_in_process_caught_up(ref_monitor)
    got = insight_steps(await read_all(kafka_bootstrap, settings.topic_insights))
    expected = insight_steps(await read_all(kafka_bootstrap, reference.topic_insights))
    assert got.repeated == 0, "insights were published twice"
    assert got.by_partition == expected.by_partition, describe_difference(got, expected)

    # what the ops endpoint of the restarted process says about it
    assert ready == 200
    for name, least in (
        ("vectoros_monitor_restore_seconds_count", PARTITIONS),
        ("vectoros_monitor_restored_records_total", 1),
        ("vectoros_monitor_rebalances_total", 1),
        ("vectoros_monitor_checkpoint_seconds_count", 1),
    ):
        assert metric_total(exposition, name) >= least, name
    assert metric_total(exposition, "vectoros_monitor_stalled") == 0
