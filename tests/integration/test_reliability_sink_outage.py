"""PostgreSQL stops for 30 s while insights keep arriving: the sink process stays up, reports not
ready, commits nothing it has not written, and once the database is back it writes everything.
The tables then equal those of a sink that never saw an outage, over the same insights topic.

(``test_sink.py`` has a short in-process outage; this is the full-length one, with the sink as a
real ``vectoros sink`` process.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from producer.simulator import SimulationSpec, generate
from tests.kafka_utils import (
    monitor_settings,
    publisher_for,
    read_all,
    running_monitor,
    wait_caught_up,
)
from tests.processes import (
    ServiceGroup,
    committed_offsets,
    end_offsets,
    fresh_database,
    http_get,
    insight_steps,
    metric_total,
    ops_port,
    read_tables,
    service_env,
    sink_everything,
    sink_settings,
    stream_items,
    wait_committed,
)
from vectoros.embedded import EmbeddedPostgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
OUTAGE_SECONDS = 30.0
STREAM_SECONDS = 20.0  # starts before the outage and ends during it
SPEC = SimulationSpec(deals=60, days=60, seed=23)


@contextlib.contextmanager
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A server of our own: stopping it must not disturb the session's."""
    pg = EmbeddedPostgres()
    try:
        yield pg
    finally:
        pg.stop()


async def history_rows(dsn: str) -> int:
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return -1  # down
    try:
        return int(await conn.fetchval("SELECT count(*) FROM insight_events"))
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet
    finally:
        await conn.close()


async def test_sink_survives_30_s_without_postgres_and_loses_nothing(
    kafka_bootstrap: str, database_url: str, unique_name: Any, tmp_path: Path
) -> None:
    settings = monitor_settings(kafka_bootstrap, unique_name, partitions=PARTITIONS)
    insights, group = settings.topic_insights, unique_name("sink")
    with own_postgres() as pg:
        await asyncio.to_thread(pg.start)
        env = service_env(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_idempotence="off",
            database_url=pg.dsn,
            topic_insights=insights,
            topic_partitions=PARTITIONS,
            sink_group_id=group,
            sink_flush_ms=20,
            sink_batch_max=50,
            db_retry_initial_seconds=0.2,
            db_retry_max_seconds=2,
            metrics_enabled="true",
            metrics_port=0,
        )
        async with (
            running_monitor(settings) as monitor,
            ServiceGroup(tmp_path) as services,
            publisher_for(settings) as pub,
        ):
            sink = await services.start("sink", "sink", env)
            await sink.wait_for_log(r"sink consuming")
            port = ops_port(sink)
            streaming = asyncio.create_task(stream_items(pub, list(generate(SPEC)), STREAM_SECONDS))
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while await history_rows(pg.dsn) <= 0:
                    assert loop.time() < deadline, "the sink wrote nothing"
                    await asyncio.sleep(0.1)

                await asyncio.to_thread(pg.pause)
                down_at = time.monotonic()
                produced_before = sum((await end_offsets(kafka_bootstrap, insights, 3)).values())
                await asyncio.sleep(3.0)  # a batch written just before the stop may commit now
                committed_early = await committed_offsets(kafka_bootstrap, group, insights, 3)
                statuses = set()
                while time.monotonic() - down_at < OUTAGE_SECONDS:
                    assert sink.running, f"the sink exited during the outage:\n{sink.tail()}"
                    statuses.add((await http_get(port, "/readyz"))[0])
                    await asyncio.sleep(0.5)
                committed_late = await committed_offsets(kafka_bootstrap, group, insights, 3)
                produced_during = (
                    sum((await end_offsets(kafka_bootstrap, insights, 3)).values())
                    - produced_before
                )
                await asyncio.to_thread(pg.resume)
                await streaming
            finally:
                if not streaming.done():
                    streaming.cancel()
            await wait_caught_up(monitor)
            ends = await end_offsets(kafka_bootstrap, insights, PARTITIONS)
            await wait_committed(kafka_bootstrap, group, insights, ends, alive=[sink])
            ready_after, _ = await http_get(port, "/readyz")
            _, exposition = await http_get(port, "/metrics")
            code, _ = await sink.stop()
            assert code == 0, sink.tail()
        got = await read_tables(pg.dsn)

    errors = metric_total(exposition, "vectoros_sink_database_errors_total")
    print(
        f"{produced_during} insight events arrived during the {OUTAGE_SECONDS:.0f} s outage; "
        f"{errors:.0f} failed batch writes; /readyz during the outage: {sorted(statuses)}"
    )
    assert produced_during > 0, "the outage was not mid-stream"
    assert committed_late == committed_early, "offsets were committed while PostgreSQL was down"
    assert 503 in statuses, statuses
    assert 200 not in statuses, statuses
    assert ready_after == 200
    assert errors > 0

    async with fresh_database(database_url) as reference_db:
        await sink_everything(
            sink_settings(kafka_bootstrap, reference_db, insights, unique_name("ref"), PARTITIONS)
        )
        want = await read_tables(reference_db)
    steps = insight_steps(await read_all(kafka_bootstrap, insights))
    assert len(want.insight_events) == len(steps.keys) > 50
    assert got.insights == want.insights
    assert got.insight_events == want.insight_events
