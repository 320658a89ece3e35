"""Crash test: while the simulator streams a fixed scenario, the monitor process is killed with
SIGKILL at random points and restarted each time. The insights it publishes (as the sink sees
them: one step per insight id, lifecycle and detection instant) and the tables the sink builds
from them equal those of one uninterrupted monitor over the same event log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from consumer.monitor.settings import MonitorSettings
from producer.simulator import SimulationSpec, generate
from tests.kafka_utils import monitor_settings, publisher_for, read_all, running_monitor
from tests.kafka_utils import wait_caught_up as wait_in_process_caught_up
from tests.processes import (
    ServiceGroup,
    describe_difference,
    end_offsets,
    fresh_database,
    insight_steps,
    monitor_env,
    read_tables,
    restore_lines,
    sink_everything,
    sink_settings,
    stream_items,
    wait_committed,
)
from vectoros.kafka import ensure_standard_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 10
SPEC = SimulationSpec(deals=60, days=60, seed=7)
RESTORE_LIMIT = 10.0  # seconds; a few hundred changelog records take well under one
SEGMENT_SECONDS = 1.5  # the scenario streams in KILLS + 1 segments; a kill lands in each


def reference_of(settings: MonitorSettings, names: Any) -> MonitorSettings:
    """Same event log, fresh group and fresh output topics: the uninterrupted run."""
    return settings.model_copy(
        update={
            "monitor_group_id": names("ref"),
            "topic_insights": names("ref-insights"),
            "topic_state": names("ref-state"),
            "topic_dlq": names("ref-dlq"),
        }
    )


async def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    kafka_bootstrap: str, database_url: str, unique_name: Any, tmp_path: Path
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=3)
    await ensure_standard_topics(settings)
    # small batches: many checkpoints, so kills also land between changelog write and commit
    env = monitor_env(settings, max_batch_records=20)
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    print(f"kill points drawn with random.Random({seed})")
    items = list(generate(SPEC))
    size = -(-len(items) // (KILLS + 1))
    segments = [items[n : n + size] for n in range(0, len(items), size)]
    kills: list[tuple[float, bool]] = []  # (seconds after assignment, segment still streaming)

    async with ServiceGroup(tmp_path) as services, publisher_for(settings) as pub:
        started = time.monotonic()
        streaming: asyncio.Task[None] | None = None
        try:
            for segment in segments:
                monitor = await services.start("monitor", "monitor", env)
                await monitor.wait_for_log(r"partitions assigned")
                if streaming is not None:
                    await streaming  # what was left of the previous segment: a backlog now
                # The stream goes on while the monitor runs, is killed and restarts.
                streaming = asyncio.create_task(stream_items(pub, segment, SEGMENT_SECONDS))
                if len(kills) == KILLS:
                    break
                # every other kill lands while the backlog of the downtime is worked off (many
                # checkpoints back to back), the others anywhere in the live segment
                busy = len(kills) % 2 == 0
                delay = rng.uniform(0.0, 0.3 if busy else SEGMENT_SECONDS)
                await asyncio.sleep(delay)
                assert monitor.running, f"the monitor exited by itself:\n{monitor.tail()}"
                monitor.kill()
                await monitor.wait()
                kills.append((delay, not streaming.done()))
            assert streaming is not None
            await streaming
        finally:
            if streaming is not None and not streaming.done():
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streaming
        kill_phase = time.monotonic() - started

        ends = await end_offsets(kafka_bootstrap, settings.topic_events, 3)
        await wait_committed(
            kafka_bootstrap, settings.monitor_group_id, settings.topic_events, ends, alive=[monitor]
        )
        code, _ = await monitor.stop()
        assert code == 0, monitor.tail()
        restores = [r for s in services.services for r in restore_lines(s.log())]

    reference = reference_of(settings, unique_name)
    async with running_monitor(reference) as ref_monitor:
        await wait_in_process_caught_up(ref_monitor)

    crashed = insight_steps(await read_all(kafka_bootstrap, settings.topic_insights))
    expected = insight_steps(await read_all(kafka_bootstrap, reference.topic_insights))
    mid_checkpoint = sum(1 for r in restores if r.ignored_uncommitted > 0)
    print(
        f"{len(kills)} kills in {kill_phase:.0f} s ({sum(s for _, s in kills)} while a segment "
        "was streaming); "
        f"{len(restores)} partition restores, {mid_checkpoint} of them ignored uncommitted "
        f"changelog entries; {crashed.repeated} insight records redelivered; "
        f"{len(expected.keys)} insight steps"
    )
    assert len(kills) >= KILLS
    assert any(r.source == "changelog" for r in restores), "nothing was restored"
    assert expected.repeated == 0
    assert len(expected.keys) > 100
    assert not crashed.conflicting, (
        f"a step was published again with other content: {crashed.conflicting[:3]}"
    )
    assert crashed.by_partition == expected.by_partition, describe_difference(crashed, expected)
    assert await read_all(kafka_bootstrap, settings.topic_dlq) == []
    slowest = max(restores, key=lambda r: r.seconds)
    assert slowest.seconds < RESTORE_LIMIT, f"a restore took {slowest.seconds:.1f} s: {slowest}"

    # the tables the sink builds: same ids, same final status, no duplicate or missing history
    async with fresh_database(database_url) as crashed_db, fresh_database(database_url) as ref_db:
        await asyncio.gather(
            sink_everything(
                sink_settings(
                    kafka_bootstrap, crashed_db, settings.topic_insights, unique_name("sink"), 3
                )
            ),
            sink_everything(
                sink_settings(
                    kafka_bootstrap, ref_db, reference.topic_insights, unique_name("sink"), 3
                )
            ),
        )
        got, want = await read_tables(crashed_db), await read_tables(ref_db)
    assert len(want.insight_events) == len(expected.keys)
    assert len(want.insights) > 50
    assert got.insight_events.keys() == want.insight_events.keys()
    assert got.insights == want.insights
    assert got.insight_events == want.insight_events
