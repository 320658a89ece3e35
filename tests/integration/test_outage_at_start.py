"""The sink, the notifier and the enricher started while neither the broker nor PostgreSQL is up:
they wait (not ready, one log line per attempt, never exiting) and work once both come up
90 s later; and SIGTERM ends a service that is still waiting, at once.

The services are real ``vectoros`` processes pointed at addresses where nothing listens yet: a
free TCP port for the broker, and the socket of a PostgreSQL that was initialised and then
stopped. The embedded Tansu broker and that PostgreSQL are then started on exactly those
addresses. The outage policy itself is ``vectoros/consume_loop.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.databases import fresh_database
from tests.fake_anthropic import API_KEY, FakeAnthropic
from tests.processes import WAIT_LIMIT, Service, ServiceGroup, http_get, ops_port, service_env
from tests.unit.test_enricher_service import raw
from vectoros.embedded import EmbeddedBroker, EmbeddedPostgres
from vectoros.kafka import ensure_topics

pytestmark = [pytest.mark.integration]

OUTAGE_SECONDS = 90.0
RETRY = {"initial": 0.5, "max": 5}  # so the first attempt after the outage comes soon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def stopped_postgres() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL of our own and its DSN, initialised, then stopped: the DSN leads nowhere
    until ``resume()``."""
    pg = EmbeddedPostgres()
    try:
        pg.start()
        dsn = pg.dsn
        pg.pause()
        yield pg, dsn
    finally:
        pg.stop()


@contextlib.asynccontextmanager
async def fake_model() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def common_env(bootstrap: str, dsn: str, topic: str, **extra: object) -> dict[str, str]:
    env = service_env(
        kafka_bootstrap_servers=bootstrap,
        kafka_idempotence="off",
        database_url=dsn,
        topic_insights=topic,
        topic_partitions=1,
        metrics_enabled="true",
        metrics_port=0,
        **extra,
    )
    env.pop("ANTHROPIC_API_KEY", None)
    return env


async def start_three(
    services: ServiceGroup, bootstrap: str, dsn: str, topic: str, model_url: str
) -> dict[str, Service]:
    sink = await services.start(
        "sink",
        "sink",
        common_env(
            bootstrap,
            dsn,
            topic,
            sink_group_id=f"{topic}-sink",
            db_retry_initial_seconds=RETRY["initial"],
            db_retry_max_seconds=RETRY["max"],
        ),
    )
    notifier = await services.start(
        "notifier",
        "notify",
        common_env(
            bootstrap,
            dsn,
            topic,
            notifier_group_id=f"{topic}-notifier",
            notify_console="true",
            notify_flood_control="false",  # looks for the per-insight console line
            notify_db_retry_seconds=RETRY["initial"],
            notify_db_retry_max_seconds=RETRY["max"],
        ),
    )
    enricher = await services.start(
        "enricher",
        "enrich",
        common_env(
            bootstrap,
            dsn,
            topic,
            enricher_group_id=f"{topic}-enricher",
            anthropic_api_key=API_KEY,
            anthropic_base_url=model_url,
            enrich_db_retry_seconds=RETRY["initial"],
            enrich_db_retry_max_seconds=RETRY["max"],
        ),
    )
    return {"sink": sink, "notifier": notifier, "enricher": enricher}


async def ready_status(service: Service) -> int:
    status, _ = await http_get(ops_port(service), "/readyz")
    return status


async def query(dsn: str, sql: str) -> Any:
    """``fetchval(sql)``, or None while the table is missing or the server unreachable."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return await conn.fetchval(sql)
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def eventually(what: str, check: Any, services: dict[str, Service]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while not await check():
        for service in services.values():
            assert service.running, f"{service.name} exited:\n{service.tail()}"
        assert loop.time() < deadline, f"{what} did not happen; logs:\n" + "\n".join(
            f"--- {s.name}\n{s.tail(2000)}" for s in services.values()
        )
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_services_wait_for_a_broker_and_postgres_that_come_up_90_s_later(
    unique_name: Any, tmp_path: Path
) -> None:
    topic = unique_name("late")
    broker = EmbeddedBroker(port=free_port())
    bootstrap = broker.bootstrap_servers
    with stopped_postgres() as (pg, dsn):
        async with fake_model() as model, ServiceGroup(tmp_path) as group:
            services = await start_three(group, bootstrap, dsn, topic, model.base_url)
            for service in services.values():
                await service.wait_for_log(r"not reachable \(attempt 2")
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE_SECONDS:
                for service in services.values():
                    assert service.running, f"{service.name} exited:\n{service.tail()}"
                    assert await ready_status(service) == 503, service.name
                await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(broker.start)
                await asyncio.to_thread(pg.resume)

                await ensure_topics(bootstrap, {topic: 1})
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
                await producer.start()
                try:
                    await producer.send_and_wait(topic, raw(1), key=b"deal-1")
                finally:
                    await producer.stop()

                async def all_ready() -> bool:
                    return all([await ready_status(s) == 200 for s in services.values()])

                async def sunk() -> bool:
                    sql = "SELECT count(*) FROM insights WHERE insight_id = 'insight-1'"
                    return bool(await query(dsn, sql))

                async def notified() -> bool:
                    # the rule text, or the model's when the enrichment came within the window
                    return "notified console: insight insight-1" in services["notifier"].log()

                async def enriched() -> bool:
                    sql = (
                        "SELECT count(*) FROM enrichments WHERE insight_id = 'insight-1' "
                        "AND status = 'enriched' AND published_at IS NOT NULL"
                    )
                    return bool(await query(dsn, sql))

                async def enrichment_sunk() -> bool:
                    sql = "SELECT source FROM insights WHERE insight_id = 'insight-1'"
                    source = await query(dsn, sql)
                    return source is not None and source != "rules"

                await eventually("all three ready", all_ready, services)
                await eventually("the sink wrote the insight", sunk, services)
                await eventually("the notifier printed it", notified, services)
                await eventually("the enricher enriched it", enriched, services)
                await eventually("the sink wrote the enriched text", enrichment_sunk, services)
                assert len(model.requests) == 1
                for name, service in services.items():
                    log = service.log()
                    assert "Traceback" not in log, f"{name}:\n{service.tail()}"
                    code, _ = await service.stop()
                    assert code == 0, f"{name} exited with {code}:\n{service.tail()}"
            finally:
                await asyncio.to_thread(broker.close)


async def test_sigterm_ends_a_service_waiting_for_the_broker(
    database_url: str, unique_name: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique_name("never")
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with (
        fresh_database(database_url, "sigterm") as dsn,
        fake_model() as model,
        ServiceGroup(tmp_path) as group,
    ):
        services = await start_three(group, bootstrap, dsn, topic, model.base_url)
        for service in services.values():
            await service.wait_for_log(r"Kafka broker at \S+ not reachable \(attempt 1")
        measured: dict[str, float] = {}
        for name, service in services.items():
            code, seconds = await service.stop(within=10)
            assert code == 0, f"{name} exited with {code}:\n{service.tail()}"
            measured[name] = seconds
        with capsys.disabled():
            print(
                "\nSIGTERM to exit while waiting for the broker: "
                + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in measured.items())
            )
