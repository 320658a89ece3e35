"""The notifier's handler on the in-memory broker: selection, delivery, the log, the commit."""

from __future__ import annotations

import asyncio
import io

import httpx
import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import NotifierHandler, build_destinations, loop_options
from consumer.notifier.settings import NotifierSettings
from tests.unit.test_consume_loop import LIMIT, until
from tests.unit.test_notifier_service import FakeStore, insight_dict
from vectoros.consume_loop import ConsumeLoop
from vectoros.memory_broker import MemoryBroker

TOPIC = "deal-insights"
GROUP = "vectoros-notifier"


class Setup:
    def __init__(self, broker: MemoryBroker, http: httpx.AsyncClient) -> None:
        self.settings = NotifierSettings(
            topic_insights=TOPIC,
            notify_console=True,
            # one message per insight, at once, on in-memory stores (flood control is
            # tested in test_notifier_flood_handler.py)
            notify_flood_control=False,
            notify_fetch_timeout_ms=20,
            notify_db_retry_seconds=0.01,
            notify_db_retry_max_seconds=0.02,
        )
        self.console = io.StringIO()
        self.store = FakeStore()
        self.registry = CollectorRegistry()
        self.stop = asyncio.Event()
        destinations = build_destinations(self.settings, http, console_stream=self.console)
        handler = NotifierHandler(
            self.settings,
            destinations,
            NotifierMetrics(self.registry),
            self.stop,
            log=self.store,
        )
        self.loop = ConsumeLoop(handler, broker, loop_options(self.settings, None))

    async def run_until(self, broker: MemoryBroker, offset: int) -> None:
        task = asyncio.create_task(self.loop.run(self.stop))
        tp = TopicPartition(TOPIC, 0)
        await until(lambda: broker.committed_offsets(GROUP).get(tp) == offset, task)
        self.stop.set()
        await asyncio.wait_for(task, LIMIT)


async def test_a_raised_insight_is_delivered_once_and_committed() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.append(TOPIC, orjson.dumps(insight_dict(1)))
    await broker.append(TOPIC, orjson.dumps(insight_dict(2, priority="low")))  # below threshold
    await broker.append(TOPIC, orjson.dumps(insight_dict(1)))  # a replay of the same step
    async with httpx.AsyncClient() as http:
        setup = Setup(broker, http)
        await setup.run_until(broker, 3)
    assert setup.console.getvalue().count("Deal 1 has gone quiet") == 1
    assert "Deal 2" not in setup.console.getvalue()
    assert {r.status for r in setup.store.by_type("console").values()} == {"sent"}
    skipped = setup.registry.get_sample_value(
        "vectoros_notifier_skipped_total", {"reason": "below_threshold"}
    )
    assert skipped == 1


async def test_a_database_outage_reruns_the_batch_without_resending() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.append(TOPIC, orjson.dumps(insight_dict(1)))
    async with httpx.AsyncClient() as http:
        setup = Setup(broker, http)
        setup.store.fail["mark_sent"] = 1  # delivered, but the outcome cannot be recorded
        await setup.run_until(broker, 1)
    assert setup.console.getvalue().count("Deal 1 has gone quiet") == 1
    assert setup.store.by_type("console")["insight-1"].status == "sent"


async def test_waits_for_the_broker_then_delivers() -> None:
    broker = MemoryBroker(partitions=1, down=True)
    async with httpx.AsyncClient() as http:
        setup = Setup(broker, http)
        task = asyncio.create_task(setup.loop.run(setup.stop))
        await asyncio.sleep(0.1)
        assert not task.done()  # the notifier does not exit with the broker down
        assert not setup.loop.ready()
        broker.down = False
        await broker.append(TOPIC, orjson.dumps(insight_dict(1)))
        await until(lambda: "Deal 1" in setup.console.getvalue(), task)
        setup.stop.set()
        await asyncio.wait_for(task, LIMIT)
