"""One bad timestamp must not poison a partition, on the real broker: a far-future event or tick
goes to the DLQ without moving the clock; a clock an older version let move is repaired with
``vectoros state reset-clock`` through the changelog."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from click.testing import CliRunner, Result

from app.cli import main
from consumer.clock_reset import active_members
from consumer.monitor import Monitor
from consumer.monitor.settings import MonitorSettings
from consumer.state import to_ms
from schemas.events import TICK_HEADER, TICK_HEADER_VALUE, DealCreated, Tick, encode_event
from schemas.insights import Lifecycle
from tests.kafka_utils import (
    monitor_settings,
    read_all,
    read_insights,
    running_monitor,
    wait_caught_up,
    wait_ready,
)
from vectoros.kafka import start_producer

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
FAR_EVENT = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
FAR_TICK = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def created(deal_id: str, at: dt.datetime, event_id: str) -> DealCreated:
    """A healthy deal: nothing fires at ``at`` (fresh, likely, closing in two months)."""
    return DealCreated(
        event_id=event_id,
        workspace_id="ws-clock",
        deal_id=deal_id,
        occurred_at=at,
        title=f"Deal {deal_id}",
        value=5_000,
        currency="USD",
        stage="negotiation",  # type: ignore[arg-type]
        probability=80,
        close_date=(at + dt.timedelta(days=60)).date(),
        owner_id="owner-1",
    )


async def produce(
    settings: MonitorSettings, items: list[DealCreated | Tick], stamp: dt.datetime
) -> None:
    """Every item with the Kafka record timestamp ``stamp`` (what a live producer's clock says),
    ticks to partition 0."""
    producer = await start_producer(settings)
    try:
        for item in items:
            if isinstance(item, Tick):
                await producer.send_and_wait(
                    settings.topic_events,
                    encode_event(item),
                    partition=0,
                    timestamp_ms=to_ms(stamp),
                    headers=[(TICK_HEADER, TICK_HEADER_VALUE)],
                )
            else:
                await producer.send_and_wait(
                    settings.topic_events,
                    encode_event(item),
                    key=item.deal_id.encode(),
                    timestamp_ms=to_ms(stamp),
                )
    finally:
        await producer.stop()


def clock_of(monitor: Monitor) -> int:
    return monitor.partitions[0].clock_ms


async def test_a_far_future_event_and_tick_go_to_the_dlq_and_leave_the_clock(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=1)
    good = created("d-good", NOW - MINUTE, "good-1")
    poison: list[DealCreated | Tick] = [
        created("d-future", FAR_EVENT, "future-1"),
        Tick(event_id="tick-2100", at=FAR_TICK),
    ]
    async with running_monitor(settings) as monitor:
        await produce(settings, [good, *poison], stamp=NOW)
        await wait_caught_up(monitor)
        assert clock_of(monitor) == to_ms(NOW - MINUTE)  # only the good event moved it
        assert set(monitor.partitions[0].deals) == {"d-good"}
        # the next tick: nothing is due, so nothing is raised (at 2100 every rule would fire)
        await produce(settings, [Tick(event_id="tick-now", at=NOW)], stamp=NOW)
        await wait_caught_up(monitor)
        assert clock_of(monitor) == to_ms(NOW)
    dlq = await read_all(kafka_bootstrap, settings.topic_dlq)
    reasons = [dict(r.headers)["vectoros-dlq-reason"] for r in dlq]
    assert reasons == [b"implausible_time", b"implausible_time"]
    assert [r.value for r in dlq] == [encode_event(p) for p in poison]
    assert await read_insights(kafka_bootstrap, settings.topic_insights) == []


def reset_clock_cli(settings: MonitorSettings, *args: str) -> Result:
    env = {
        "VECTOROS_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap(),
        "VECTOROS_TOPIC_EVENTS": settings.topic_events,
        "VECTOROS_TOPIC_STATE": settings.topic_state,
        "VECTOROS_MONITOR_GROUP_ID": settings.monitor_group_id,
        "VECTOROS_METRICS_ENABLED": "false",
    }
    return CliRunner().invoke(main, ["state", "reset-clock", *args], env=env)


async def test_reset_clock_repairs_a_poisoned_partition_and_refuses_while_a_monitor_runs(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=1)
    # an older monitor, before event time was bounded: a tick at 2100 moves its clock
    unbounded = settings.model_copy(update={"max_clock_skew": 1e12, "max_event_age": 1e12})
    async with running_monitor(unbounded) as monitor:
        await produce(settings, [created("d-1", NOW - MINUTE, "c-1")], stamp=NOW)
        await produce(settings, [Tick(event_id="tick-2100", at=FAR_TICK)], stamp=NOW)
        await wait_caught_up(monitor)
        assert clock_of(monitor) == to_ms(FAR_TICK)  # poisoned, and checkpointed
        poisoned = await read_insights(kafka_bootstrap, settings.topic_insights)
        assert {i.lifecycle for i in poisoned} == {Lifecycle.RAISED}  # "stale for 26 000 days"

        refused = await asyncio.to_thread(
            reset_clock_cli, settings, "--partition", "0", "--to", "2026-11-25T12:01:00Z"
        )
        assert refused.exit_code != 0
        assert "active member" in refused.output
        assert len(refused.output.strip().splitlines()) == 1, refused.output

    # Kafka empties the group when its last member leaves; the embedded Tansu keeps listing a
    # member that left (seen for as long as we looked), so there the stopped monitor needs --force
    left = await active_members(settings.bootstrap(), settings.monitor_group_id, "test") == 0
    force = [] if left else ["--force"]
    repaired = await asyncio.to_thread(
        reset_clock_cli, settings, "--partition", "0", "--to", "2026-11-25T12:01:00Z", *force
    )
    assert repaired.exit_code == 0, repaired.output
    assert "2100-01-01T00:00:00.000+00:00 -> 2026-11-25T12:01:00.000+00:00" in repaired.output

    async with running_monitor(settings) as monitor:  # restores from the changelog
        await wait_ready(monitor)
        assert clock_of(monitor) == to_ms(NOW + MINUTE)
        assert set(monitor.partitions[0].deals) == {"d-1"}
        await produce(settings, [Tick(event_id="tick-after", at=NOW + 2 * MINUTE)], stamp=NOW)
        await wait_caught_up(monitor)
        assert clock_of(monitor) == to_ms(NOW + 2 * MINUTE)
    after = (await read_insights(kafka_bootstrap, settings.topic_insights))[len(poisoned) :]
    # the deal is evaluated again at the repaired clock: what the bad clock raised is resolved
    assert sorted(i.insight_id for i in after) == sorted(i.insight_id for i in poisoned)
    assert {i.lifecycle for i in after} == {Lifecycle.RESOLVED}


async def test_reset_clock_refuses_to_move_a_clock_forward(
    kafka_bootstrap: str, unique_name: Any
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=1)
    async with running_monitor(settings) as monitor:
        await produce(settings, [created("d-1", NOW, "c-1")], stamp=NOW)
        await wait_caught_up(monitor)
    result = await asyncio.to_thread(
        reset_clock_cli, settings, "--partition", "0", "--to", "2027-01-01T00:00:00Z", "--force"
    )
    assert result.exit_code != 0
    assert "only moves it back" in result.output
