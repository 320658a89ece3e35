"""The enricher's handler on the in-memory broker: claim, call, publish (acknowledged), commit."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumer.enricher.budget import InMemoryBudget
from consumer.enricher.metrics import EnricherMetrics
from consumer.enricher.service import EnricherHandler, loop_options
from consumer.enricher.settings import EnricherSettings
from consumer.enricher.store import InMemoryEnrichmentLog
from schemas.insights import Lifecycle, insight_adapter
from tests.unit.test_consume_loop import LIMIT, until
from tests.unit.test_enricher_service import DAY, TEXT, FakeWriter, insight, raw
from vectoros.consume_loop import ConsumeLoop
from vectoros.enrichments import EnrichmentKey
from vectoros.memory_broker import MemoryBroker

TOPIC = "deal-insights"
GROUP = "vectoros-enricher"


class Setup:
    def __init__(self, broker: MemoryBroker) -> None:
        self.settings = EnricherSettings(
            anthropic_api_key=SecretStr("sk-test"),
            topic_insights=TOPIC,
            topic_partitions=1,
            enrich_fetch_timeout_ms=20,
            enrich_db_retry_seconds=0.01,
            enrich_db_retry_max_seconds=0.02,
        )
        self.writer = FakeWriter()
        self.log = InMemoryEnrichmentLog()
        self.handler = EnricherHandler(
            self.settings,
            self.writer,
            EnricherMetrics(CollectorRegistry()),
            log=self.log,
            budget=InMemoryBudget(10, 1_000_000),
            wall_clock=lambda: DAY,
        )
        self.loop = ConsumeLoop(self.handler, broker, loop_options(self.settings, None))
        self.stop = asyncio.Event()


def enriched(broker: MemoryBroker) -> list[bytes]:
    return [v for v in broker.values(TOPIC) if v is not None and b'"lifecycle":"enriched"' in v]


def committed(broker: MemoryBroker) -> int | None:
    return broker.committed_offsets(GROUP).get(TopicPartition(TOPIC, 0))


async def test_an_insight_is_enriched_published_and_committed() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.append(TOPIC, raw(1), b"deal-1")
    await broker.append(TOPIC, raw(2, priority="low"), b"deal-2")  # below the threshold
    setup = Setup(broker)
    task = asyncio.create_task(setup.loop.run(setup.stop))
    await until(lambda: committed(broker) == 3, task)  # the two, then its own enriched event
    setup.stop.set()
    await asyncio.wait_for(task, LIMIT)
    [event] = [insight_adapter.validate_json(v) for v in enriched(broker)]
    assert event.lifecycle is Lifecycle.ENRICHED
    assert (event.insight_id, event.title) == ("insight-1", TEXT.title)
    assert len(setup.writer.prompts) == 1
    assert setup.log.rows[EnrichmentKey.of(insight(1))].published
    assert setup.log.live == {}  # deregistered on stop


async def test_a_database_outage_reruns_the_batch_then_commits() -> None:
    broker = MemoryBroker(partitions=1)
    setup = Setup(broker)
    task = asyncio.create_task(setup.loop.run(setup.stop))
    await until(setup.loop.ready, task)
    original = setup.log.finish_enriched
    failures = [ConnectionResetError("database went away")]

    async def flaky(*args: object) -> bool:
        if failures:
            raise failures.pop()
        return await original(*args)  # type: ignore[arg-type]

    setup.log.finish_enriched = flaky  # type: ignore[method-assign]
    await broker.append(TOPIC, raw(1), b"deal-1")
    await until(lambda: committed(broker) == 2, task)
    setup.stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert len(setup.writer.prompts) == 1  # the call is not repeated
    assert len(enriched(broker)) == 1


async def test_stopping_mid_call_releases_the_claim_and_commits_nothing() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.append(TOPIC, raw(1), b"deal-1")
    setup = Setup(broker)
    setup.writer.gate = asyncio.Event()  # never opened: the call hangs
    task = asyncio.create_task(setup.loop.run(setup.stop))
    await until(lambda: setup.writer.running == 1, task)
    setup.stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert committed(broker) is None
    assert setup.log.rows == {}  # released: the next start makes the call
    assert enriched(broker) == []
