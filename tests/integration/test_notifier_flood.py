"""Flood control on the real PostgreSQL (tables ``notify_flood_state``, ``notify_outbox`` and the
notification log): held insights survive a restart and go out once; a notifier that dies after
sending a digest but before clearing it from the outbox does not send it again; a save is one
transaction (a failed one leaves nothing behind)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.notifier.acks import PgAcks
from consumer.notifier.flood import Message
from consumer.notifier.log import NotificationLog, NotificationRef
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.outbox import PgFloodStore
from consumer.notifier.service import NotifierHandler, build_destinations
from consumer.notifier.settings import NotifierSettings
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_cli import run
from tests.unit.test_notifier_flood_handler import Clock, Messages
from tests.unit.test_notifier_service import insight
from vectoros.consume_loop import Resources
from vectoros.db import PgPool

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[PgPool]:
    async with fresh_database(database_url, "flood") as dsn, migrated_pool(dsn) as pool:
        yield pool


class Notifier:
    """One notifier process: its own log owner id, handler and console."""

    def __init__(self, pool: PgPool, http: httpx.AsyncClient, clock: Clock) -> None:
        self.settings = NotifierSettings(
            notify_console=True,
            notify_flood_control=True,
            notify_group_wait_seconds=30,
            notify_flush_tick_seconds=60,  # the test ticks by hand
        )
        self.console = Messages()
        self.store = PgFloodStore(pool, self.settings.notifier_group_id)
        self.handler = NotifierHandler(
            self.settings,
            build_destinations(self.settings, http, console_stream=self.console),
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=NotificationLog(pool, stale_after_seconds=30),
            flood_store=self.store,
            wall_clock=clock,
        )

    async def __aenter__(self) -> Notifier:
        await self.handler.open(Resources(pool=None, producer=None, consumer=None))  # type: ignore[arg-type]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.handler.close()

    async def feed(self, *numbers: int) -> None:
        stop = asyncio.Event()
        assert await self.handler.handle([insight(n) for n in numbers], stop) == ()


async def test_held_insights_survive_a_restart_and_go_out_once(pool: PgPool) -> None:
    clock = Clock()
    async with httpx.AsyncClient() as http:
        async with Notifier(pool, http, clock) as first:
            await first.feed(1, 2)
        assert first.console.messages == []
        saved = await pool.fetchval("SELECT count(*) FROM notify_flood_state")
        assert saved == 1

        clock.now += 31
        async with Notifier(pool, http, clock) as second:
            await second.feed(1, 2)  # the batch was not committed: it comes again
            await second.handler.tick()
        async with Notifier(pool, http, clock) as third:
            clock.now += 1000
            await third.handler.tick()
    assert len(second.console.messages) == 1
    assert "2 insights need attention" in second.console.messages[0]
    assert third.console.messages == []
    assert await pool.fetchval("SELECT count(*) FROM notify_outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE status = 'sent'") == 1


async def test_dying_after_sending_a_digest_does_not_send_it_again(pool: PgPool) -> None:
    clock = Clock()
    async with httpx.AsyncClient() as http:
        async with Notifier(pool, http, clock) as first:
            await first.feed(1, 2, 3)
            clock.now += 31

            async def killed(message_id: str) -> None:
                raise asyncio.CancelledError  # the process dies right after the send

            first.store.done = killed  # type: ignore[method-assign]
            with pytest.raises(asyncio.CancelledError):
                await first.handler.tick()
        assert len(first.console.messages) == 1
        assert await pool.fetchval("SELECT count(*) FROM notify_outbox") == 1

        async with Notifier(pool, http, clock) as second:
            await second.handler.tick()
    assert second.console.messages == []
    assert await pool.fetchval("SELECT count(*) FROM notify_outbox") == 0


async def test_a_save_is_one_transaction(pool: PgPool) -> None:
    store = PgFloodStore(pool, "group-a")
    message = Message("grp_x", "recipient", "ws-1", "digest", (), 0)
    with pytest.raises(Exception, match="invalid input syntax for type json"):
        await store.save(b"not json", [message])
    assert await store.load() == (None, [])
    await store.save(b'{"a": 1}', [message, message])
    assert await store.load() == ({"a": 1}, [message])
    await store.done("grp_x")
    assert await store.load() == ({"a": 1}, [])


async def test_insights_ack_and_snooze_commands(database_url: str) -> None:
    async with fresh_database(database_url, "acks") as dsn:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
        env.update(VECTOROS_DATABASE_URL=dsn)
        acked = await asyncio.to_thread(run, ["insights", "ack", "ins-1", "--by", "ana"], env)
        assert acked.returncode == 0, acked.stderr
        assert acked.stdout.strip() == "acknowledged ins-1"
        snoozed = await asyncio.to_thread(
            run, ["insights", "snooze", "ins-2", "--until", "2h"], env
        )
        assert snoozed.returncode == 0, snoozed.stderr
        assert snoozed.stdout.startswith("snoozed ins-2 until ")
        bad = await asyncio.to_thread(run, ["insights", "snooze", "ins-3", "--until", "soon"], env)
        assert bad.returncode != 0
        assert "--until" in bad.stderr
        async with migrated_pool(dsn) as pool:
            acks = PgAcks(pool)
            now = dt.datetime.now(dt.UTC)
            assert await acks.held(["ins-1", "ins-2", "ins-3"], now) == {"ins-1", "ins-2"}
            assert await acks.held(["ins-2"], now + dt.timedelta(hours=3)) == set()
            actor = await pool.fetchval("SELECT actor FROM insight_acks WHERE insight_id = 'ins-1'")
            assert actor == "ana"


async def test_report_usefulness(database_url: str) -> None:
    async with fresh_database(database_url, "useful") as dsn:
        async with migrated_pool(dsn) as pool:
            log = NotificationLog(pool, stale_after_seconds=30)
            for n, rule in [
                (1, "stale_deal"),
                (2, "stale_deal"),
                (3, "stale_deal"),
                (4, "low_probability"),
            ]:
                for destination in ("a" * 64, "b" * 64):  # two destinations: one insight
                    ref = NotificationRef(f"ins-{n}", "raised", destination)
                    await log.claim(
                        ref,
                        destination_type="slack",
                        destination_label="slack",
                        workspace_id="w",
                        deal_id=f"d-{n}",
                        rule=rule,
                        priority="high",
                    )
                    await log.mark_sent(ref)
            acks = PgAcks(pool)
            await acks.acknowledge("ins-1", "ana")
            await acks.snooze("ins-2", dt.datetime.now(dt.UTC) + dt.timedelta(days=1), "ana")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
        env.update(VECTOROS_DATABASE_URL=dsn)
        result = await asyncio.to_thread(run, ["report", "usefulness", "--json"], env)
        assert result.returncode == 0, result.stderr
        rows = {r["rule"]: r for r in orjson.loads(result.stdout)}
        assert rows["stale_deal"]["notified"] == 3
        assert rows["stale_deal"]["acknowledged"] == 1
        assert rows["stale_deal"]["snoozed"] == 1
        assert rows["stale_deal"]["acknowledged_share"] == pytest.approx(1 / 3, abs=1e-4)
        assert rows["low_probability"]["notified"] == 1
        table = await asyncio.to_thread(run, ["report", "usefulness"], env)
        assert "stale_deal" in table.stdout
