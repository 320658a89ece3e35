"""State survives a monitor restart: the new process restores from the changelog and the insight
stream is the one an uninterrupted monitor produces."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.monitor.settings import MonitorSettings
from producer.simulator import SimTick, SimulationSpec, generate
from schemas.events import DealEvent
from tests.kafka_utils import (
    monitor_settings,
    publisher_for,
    read_all,
    running_monitor,
    wait_caught_up,
    wait_ready,
)

pytestmark = pytest.mark.integration


async def publish_items(settings: MonitorSettings, items: list[DealEvent | SimTick]) -> None:
    async with publisher_for(settings) as pub:
        parts = await pub.partitions()
        for item in items:
            if isinstance(item, SimTick):
                await pub.publish_tick(item.at, parts)
            else:
                await pub.publish(item)
        await pub.flush()


def by_partition(records: list[Any]) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r.value)
    return out


async def test_restart_restores_from_changelog_and_matches_uninterrupted_run(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name)
    items = list(generate(SimulationSpec(deals=60, days=60, seed=11)))
    cut = len(items) // 2

    async with running_monitor(settings) as monitor:
        await publish_items(settings, items[:cut])
        await wait_caught_up(monitor)
    async with running_monitor(settings) as monitor:  # a new process, same group
        await wait_ready(monitor)
        restored = sum(len(p.deals) for p in monitor.partitions.values())
        await publish_items(settings, items[cut:])
        await wait_caught_up(monitor)
    assert restored > 0, "the second monitor must start from restored state"
    assert monitor.metrics.restored_records._value.get() > 0

    reference = settings.model_copy(
        update={
            "monitor_group_id": unique_name("ref"),
            "topic_insights": unique_name("ref-insights"),
            "topic_state": unique_name("ref-state"),
            "topic_dlq": unique_name("ref-dlq"),
        }
    )
    async with running_monitor(reference) as monitor:
        await wait_caught_up(monitor)

    interrupted = await read_all(kafka_bootstrap, settings.topic_insights)
    uninterrupted = await read_all(kafka_bootstrap, reference.topic_insights)
    assert len(uninterrupted) > 20
    assert by_partition(interrupted) == by_partition(uninterrupted)
