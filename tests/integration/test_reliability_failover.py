"""Failover: two monitor processes share the group; one is killed for good mid-stream. The
survivor takes over its partitions, restores them from the changelog, and the results equal those
of one uninterrupted monitor over the same event log."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from producer.simulator import SimulationSpec, generate
from tests.kafka_utils import monitor_settings, publisher_for, read_all, running_monitor
from tests.kafka_utils import wait_caught_up as wait_in_process_caught_up
from tests.processes import (
    Service,
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

PARTITIONS = 4
SPEC = SimulationSpec(deals=60, days=60, seed=13)
STREAM_SECONDS = 15.0
RESTORE_LIMIT = 10.0  # seconds; a few hundred changelog records take well under one
ASSIGNED = re.compile(r"partitions assigned: \[([\d, ]*)\]")


def assignments(service: Service) -> list[set[int]]:
    """Every assignment a monitor logged, in order."""
    return [
        {int(p) for p in match.split(",") if p.strip()} for match in ASSIGNED.findall(service.log())
    ]


async def wait_assignment(service: Service, done: Any, what: str) -> set[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        seen = assignments(service)
        if seen and done(seen[-1]):
            return seen[-1]
        assert service.running, f"{service.name} exited:\n{service.tail()}"
        assert loop.time() < deadline, f"{service.name}: no {what}; saw {seen}"
        await asyncio.sleep(0.05)


async def test_survivor_restores_the_partitions_of_a_dead_member(
    kafka_bootstrap: str, database_url: str, unique_name: Any, tmp_path: Path
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=PARTITIONS)
    await ensure_standard_topics(settings)
    env = monitor_env(settings, max_batch_records=50)
    items = list(generate(SPEC))
    everything = set(range(PARTITIONS))

    async with ServiceGroup(tmp_path) as services, publisher_for(settings) as pub:
        first = await services.start("monitor-a", "monitor", env)
        await wait_assignment(first, lambda a: a == everything, "assignment")
        streaming = asyncio.create_task(stream_items(pub, items, STREAM_SECONDS))
        try:
            second = await services.start("monitor-b", "monitor", env)
            # the group splits the partitions between the two
            await wait_assignment(second, lambda a: 0 < len(a) < PARTITIONS, "share")
            lost = await wait_assignment(first, lambda a: 0 < len(a) < PARTITIONS, "share")
            assert lost | assignments(second)[-1] == everything
            # the hand-over of the join: what was in flight was checkpointed before it moved
            handover = restore_lines(first.log()) + restore_lines(second.log())
            await asyncio.sleep(2.0)  # both work for a while
            mid_stream = not streaming.done()
            first.kill()  # for good
            await first.wait()
            killed_at = len(second.log())
            await wait_assignment(second, lambda a: a == everything, "take-over")
            await streaming
        finally:
            if not streaming.done():
                streaming.cancel()
        ends = await end_offsets(kafka_bootstrap, settings.topic_events, PARTITIONS)
        await wait_committed(
            kafka_bootstrap, settings.monitor_group_id, settings.topic_events, ends, alive=[second]
        )
        code, _ = await second.stop()
        assert code == 0, second.tail()
        takeover = restore_lines(second.log()[killed_at:])
        restores = restore_lines(first.log()) + restore_lines(second.log())

    # the survivor rebuilt the dead member's partitions from the changelog
    restored = {r.partition: r for r in takeover}
    for partition in lost:
        assert partition in restored, f"partition {partition} was not restored: {takeover}"
        assert restored[partition].source == "changelog", takeover
        assert restored[partition].records > 0, takeover

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
    survived = insight_steps(await read_all(kafka_bootstrap, settings.topic_insights))
    expected = insight_steps(await read_all(kafka_bootstrap, reference.topic_insights))
    print(
        f"partitions {sorted(lost)} failed over; {survived.repeated} insight records "
        f"redelivered; {len(expected.keys)} insight steps"
    )
    assert len(expected.keys) > 100
    assert not survived.conflicting, (
        f"a step was published again with other content: {survived.conflicting[:3]}"
    )
    assert survived.by_partition == expected.by_partition, describe_difference(survived, expected)
    async with fresh_database(database_url) as got_db, fresh_database(database_url) as ref_db:
        await asyncio.gather(
            *(
                sink_everything(
                    sink_settings(kafka_bootstrap, dsn, topic, unique_name("sink"), PARTITIONS)
                )
                for topic, dsn in (
                    (settings.topic_insights, got_db),
                    (reference.topic_insights, ref_db),
                )
            )
        )
        got, want = await read_tables(got_db), await read_tables(ref_db)
    assert got.insights == want.insights
    assert got.insight_events == want.insight_events
    slowest = max(restores, key=lambda r: r.seconds)
    assert slowest.seconds < RESTORE_LIMIT, f"a restore took {slowest.seconds:.1f} s: {slowest}"
    assert mid_stream, "the stream was over before the member was killed"
    moved_in_flight = [r for r in handover if r.ignored_uncommitted]
    assert not moved_in_flight, f"revoked before their batch was checkpointed: {moved_in_flight}"


async def test_a_rebalance_restores_only_the_partitions_a_member_gains(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    """A second monitor joins and later leaves. The first keeps the state of the partitions it
    holds through both rebalances and restores only the partitions it gains back."""
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=PARTITIONS)
    await ensure_standard_topics(settings)
    env = monitor_env(settings, max_batch_records=50)
    everything = set(range(PARTITIONS))
    items = list(generate(SimulationSpec(deals=40, days=20, seed=5)))

    async with ServiceGroup(tmp_path) as services, publisher_for(settings) as pub:
        first = await services.start("monitor-a", "monitor", env)
        await wait_assignment(first, lambda a: a == everything, "assignment")
        await stream_items(pub, items, 1.0)
        ends = await end_offsets(kafka_bootstrap, settings.topic_events, PARTITIONS)
        await wait_committed(
            kafka_bootstrap, settings.monitor_group_id, settings.topic_events, ends, alive=[first]
        )
        before_join = len(first.log())

        second = await services.start("monitor-b", "monitor", env)
        given = await wait_assignment(second, lambda a: 0 < len(a) < PARTITIONS, "share")
        kept = await wait_assignment(first, lambda a: 0 < len(a) < PARTITIONS, "share")
        assert kept | given == everything
        await first.wait_for_log(r"partitions kept in memory \(no restore needed\)")
        before_leave = len(first.log())
        code, _ = await second.stop()
        assert code == 0, second.tail()
        await wait_assignment(first, lambda a: a == everything, "take-back")  # after restores
        restored_at_join = restore_lines(first.log()[before_join:before_leave])
        restored_at_leave = restore_lines(first.log()[before_leave:])
        code, _ = await first.stop()
        assert code == 0, first.tail()

    assert restored_at_join == [], f"the first member reloaded what it kept: {restored_at_join}"
    assert {r.partition for r in restored_at_leave} == given, restored_at_leave
    assert all(r.source == "changelog" for r in restored_at_leave), restored_at_leave
