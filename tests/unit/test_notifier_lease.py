"""Only one notifier instance runs flood control per consumer group (``consumer/notifier/lease.py``
and the consume loop's ``JoinGate``): a gated handler stands by, without a consumer, until the
gate opens (one log line), a stop ends the standby at once, and flood control that lost its lock
with its connection either takes it again and reloads the saved state or fails as an outage.
The real lock on PostgreSQL: tests/integration/test_notifier_standby.py."""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest

from consumer.notifier.lease import FloodLease
from consumer.notifier.outbox import MemoryFloodStore
from tests.unit.test_consume_loop import IN, LIMIT, OUT, Echo, options, until
from tests.unit.test_notifier_flood_handler import Setup
from tests.unit.test_notifier_service import FakeStore, insight_dict
from vectoros.consume_loop import ConsumeLoop, Consumer, Subscription
from vectoros.db import PgPool
from vectoros.errors import DatabaseUnavailable
from vectoros.memory_broker import MemoryBroker


class Gated(Echo):
    """Echo that may join only once its gate answered None (after ``refusals`` reasons)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.asked = 0

    async def may_join(self, pool: PgPool | None) -> str | None:
        self.asked += 1
        if self.refusals < 0 or self.asked <= self.refusals:
            return "someone else holds the lock"
        return None


class Recording(MemoryBroker):
    """Remembers how often the gate had been asked when each consumer was made."""

    def __init__(self, handler: Gated) -> None:
        super().__init__(partitions=1)
        self.handler = handler
        self.asked_at_join: list[int] = []

    def consumer(self, subscription: Subscription) -> Consumer:
        self.asked_at_join.append(self.handler.asked)
        return super().consumer(subscription)


async def test_a_gated_handler_joins_its_group_only_once_the_gate_opens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Gated(refusals=3)
    broker = Recording(handler)
    await broker.append(IN, b"a")
    loop = ConsumeLoop(handler, broker, options())
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="vectoros.consume_loop"):
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: broker.values(OUT) == [b"A"], task)
        stop.set()
        await asyncio.wait_for(task, LIMIT)
    assert broker.asked_at_join == [4]  # no consumer (no group join) before the gate opened
    standby = [r for r in caplog.records if "standing by" in r.getMessage()]
    assert len(standby) == 1  # one line, not one per attempt
    assert "someone else holds the lock" in standby[0].getMessage()
    assert any("standby over" in r.getMessage() for r in caplog.records)


async def test_a_stop_ends_the_standby_at_once_without_joining() -> None:
    handler = Gated(refusals=-1)
    broker = Recording(handler)
    loop = ConsumeLoop(handler, broker, options(retry_initial_seconds=3600, retry_max_seconds=3600))
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: handler.asked >= 1, task)
    assert not loop.ready()
    stop.set()
    await asyncio.wait_for(task, LIMIT)  # not the hour of back-off
    assert broker.asked_at_join == []
    assert handler.opened is None


class FakeLease(FloodLease):
    """A lease whose connection was lost; ``take`` answers from ``results``."""

    def __init__(self, *results: bool) -> None:
        super().__init__(None, "vectoros-notifier")  # type: ignore[arg-type]
        self.results = list(results)

    @property
    def held(self) -> bool:
        return False

    async def take(self) -> bool:
        return self.results.pop(0)


async def test_flood_control_that_lost_its_lock_takes_it_again_and_reloads_or_fails() -> None:
    log, store = FakeStore(), MemoryFloodStore()
    async with httpx.AsyncClient() as http:
        mine = Setup(http, log=log, store=store)
        await mine.open()
        other = Setup(http, log=log, store=store, clock=mine.clock)  # ran while we were cut off
        await other.open()
        await other.feed([insight_dict(1), insight_dict(2)])
        assert store.state is not None
        saved = orjson.loads(store.state)

        mine.handler._flood.lease = FakeLease(False, True)
        with pytest.raises(DatabaseUnavailable):  # someone else holds it: an outage, retried
            await mine.feed([insight_dict(3)])
        assert orjson.loads(store.state) == saved  # nothing of ours was saved
        await mine.handler.tick()  # taken again: the saved state is ours now
        flood = mine.handler._flood.flood
        assert flood is not None
        assert flood.to_state() == saved
        await mine.handler.close()
        await other.handler.close()
