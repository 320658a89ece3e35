"""Acks as events: the notifier reads ``insight-acks`` next to ``deal-insights`` (memory broker),
stores each answer before announcing the batch's insights, and holds what was acknowledged,
snoozed or marked not useful; the contract's rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import io

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.notifier.acks import MemoryAcks
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import NotifierHandler, build_destinations, loop_options
from consumer.notifier.settings import NotifierSettings
from schemas.acks import AckSource, AckState, InsightAck
from tests.unit.test_consume_loop import LIMIT, until
from tests.unit.test_notifier_service import FakeStore, insight_dict
from vectoros.consume_loop import ConsumeLoop
from vectoros.memory_broker import MemoryBroker

INSIGHTS, ACKS, GROUP = "deal-insights", "insight-acks", "vectoros-notifier"
AT = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
FAR = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)


def ack(insight_id: str, state: str, until: dt.datetime | None = None, n: int = 1) -> InsightAck:
    return InsightAck(
        ack_id=f"ack-{insight_id}-{n}",
        insight_id=insight_id,
        state=AckState(state),
        snoozed_until=until,
        actor="slack:U1",
        source=AckSource.SLACK,
        at=AT,
    )


class Setup:
    def __init__(self, broker: MemoryBroker, http: httpx.AsyncClient) -> None:
        self.settings = NotifierSettings(
            notify_console=True,
            # one message per insight, at once, on in-memory stores (flood control is
            # tested in test_notifier_flood_handler.py)
            notify_flood_control=False,
            notify_fetch_timeout_ms=20,
            notify_db_retry_seconds=0.01,
            notify_db_retry_max_seconds=0.02,
        )
        self.console = io.StringIO()
        self.acks = MemoryAcks()
        self.registry = CollectorRegistry()
        self.stop = asyncio.Event()
        handler = NotifierHandler(
            self.settings,
            build_destinations(self.settings, http, console_stream=self.console),
            NotifierMetrics(self.registry),
            self.stop,
            log=FakeStore(),
            acks=self.acks,
            recorder=self.acks,
        )
        self.loop = ConsumeLoop(handler, broker, loop_options(self.settings, None))

    async def run_until(self, broker: MemoryBroker, offsets: dict[str, int]) -> None:
        task = asyncio.create_task(self.loop.run(self.stop))

        def done() -> bool:
            committed = broker.committed_offsets(GROUP)
            return all(committed.get(TopicPartition(t, 0)) == o for t, o in offsets.items())

        await until(done, task)
        self.stop.set()
        await asyncio.wait_for(task, LIMIT)


async def test_answers_on_insight_acks_are_stored_and_hold_their_insights() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.append(ACKS, ack("insight-1", "snoozed", FAR).model_dump_json().encode())
    await broker.append(ACKS, ack("insight-2", "not_useful").model_dump_json().encode())
    await broker.append(ACKS, b'{"not": "an ack"}')
    for n in (1, 2, 3):
        await broker.append(INSIGHTS, orjson.dumps(insight_dict(n)))
    async with httpx.AsyncClient() as http:
        setup = Setup(broker, http)
        setup.acks.rules["insight-2"] = "stale_deal"  # notified before
        await setup.run_until(broker, {ACKS: 3, INSIGHTS: 3})
    out = setup.console.getvalue()
    assert "Deal 3 has gone quiet" in out
    assert "Deal 1" not in out
    assert "Deal 2" not in out
    assert [a.insight_id for a in setup.acks.recorded] == ["insight-1", "insight-2"]
    sample = setup.registry.get_sample_value
    assert sample("vectoros_notifier_acks_recorded_total", {"source": "slack", "state": "snoozed"})
    assert sample("vectoros_notifier_skipped_total", {"reason": "invalid_ack"}) == 1
    answers = {"rule": "stale_deal", "state": "not_useful"}
    assert sample("vectoros_notifier_answers_total", answers) == 1
    assert sample("vectoros_notifier_skipped_total", {"reason": "acknowledged"}) == 2


def test_the_loop_reads_and_creates_insight_acks() -> None:
    options = loop_options(NotifierSettings(notify_console=True, topic_acks="acks-x"), None)
    assert options.subscription.topics == ("deal-insights", "acks-x")
    assert "acks-x" in options.topics


@pytest.mark.parametrize(
    ("state", "until"), [("snoozed", None), ("acknowledged", FAR), ("not_useful", FAR)]
)
def test_snoozed_until_goes_with_snoozed_only(state: str, until: dt.datetime | None) -> None:
    with pytest.raises(ValidationError, match="snoozed_until"):
        ack("i-1", state, until)


def test_an_ack_round_trips_as_json() -> None:
    one = ack("i-1", "snoozed", FAR)
    assert InsightAck.model_validate_json(one.model_dump_json()) == one
    assert orjson.loads(one.model_dump_json())["type"] == "insight.acked"
