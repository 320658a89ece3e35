"""A Slack button press end to end on the real broker and PostgreSQL: the notifier posts an
insight with its buttons to a Slack Web API stand-in; a press with a bad signature is refused at
the gateway; a good "Snooze 1 week" is published on insight-acks, stored by the notifier, and the
message is redrawn with the answer and without buttons, and the insight's resolution is then
held (a later insight, the sentinel, still goes out)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumer.notifier.service import run_notifier
from consumer.notifier.settings import NotifierSettings
from producer.gateway.app import build_app
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from producer.gateway.slack import KafkaAckPublisher
from schemas.insights import InsightEvent
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_notifier import produce
from tests.slack_stand_in import SlackWebApi
from tests.unit.test_gateway_slack_interactions import NoEvents, interaction, signed
from tests.unit.test_notifier_service import insight
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import Health
from vectoros.settings import KafkaSettings

pytestmark = pytest.mark.integration

WAIT_LIMIT = 60.0  # a bound for "never happens", not a timing goal
TOKEN = "xoxb-42-42-SECRET"
CHANNEL = "C0DEALS"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def notifier(settings: NotifierSettings, http: httpx.AsyncClient) -> AsyncIterator[None]:
    registry, health, stop = CollectorRegistry(), Health(), asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, registry, health, stop, http))
    try:
        await eventually(lambda: health.ready() or task.done(), "the notifier to start")
        if task.done():
            task.result()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


def event(n: int, **kw: Any) -> InsightEvent:
    result: InsightEvent = insight(n, **kw)
    return result


async def test_a_slack_button_press_snoozes_through_the_gateway(
    kafka_bootstrap: str, database_url: str, unique_name: Callable[[str], str]
) -> None:
    topic, acks_topic = unique_name("insights"), unique_name("acks")
    await ensure_topics(kafka_bootstrap, {topic: 2, acks_topic: 2})
    api = SlackWebApi(TOKEN, {CHANNEL})
    async with (
        fresh_database(database_url, "slackapp") as dsn,
        httpx.AsyncClient(transport=httpx.MockTransport(api)) as http,
    ):
        settings = NotifierSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            database_url=SecretStr(dsn),
            topic_insights=topic,
            topic_acks=acks_topic,
            notifier_group_id=unique_name("notifier"),
            metrics_enabled=False,
            slack_bot_token=SecretStr(TOKEN),
            slack_channels=[CHANNEL],
            slack_min_interval_seconds=0,
            notify_resolved=True,
            notify_flood_control=False,  # one message per insight, updated in place
        )
        gateway_settings = GatewaySettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            metrics_enabled=False,
            gateway_slack_signing_secret=SecretStr(SIGNING_SECRET),
            topic_acks=acks_topic,
        )
        producer = await start_producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap))
        try:
            app = build_app(
                gateway_settings,
                NoEvents(),
                GatewayMetrics(CollectorRegistry()),
                acks=KafkaAckPublisher(producer, acks_topic),
            )
            transport = httpx.ASGITransport(app=app)
            async with (
                notifier(settings, http),
                httpx.AsyncClient(transport=transport, base_url="https://gw.test") as gateway,
            ):
                await produce(kafka_bootstrap, topic, [event(1)])
                await eventually(lambda: len(api.messages) == 1, "the insight in Slack")
                [posted] = api.messages.values()
                buttons = [b for b in posted.body["blocks"] if b["type"] == "actions"]
                snooze = next(
                    e for e in buttons[0]["elements"] if e["action_id"] == "vectoros_snooze_1w"
                )
                body = interaction((snooze["action_id"], snooze["value"]))
                forged = await gateway.post(
                    "/slack/interactions",
                    content=body,
                    headers=signed(body, at=time.time(), secret="not-the-secret"),
                )
                assert forged.status_code == 401
                pressed = await gateway.post(
                    "/slack/interactions", content=body, headers=signed(body, at=time.time())
                )
                assert pressed.status_code == 200

                async with migrated_pool(dsn) as pool:

                    async def stored() -> bool:
                        state = await pool.fetchval(
                            "SELECT state FROM insight_acks WHERE insight_id = 'insight-1'"
                        )
                        return bool(state == "snoozed")

                    await eventually(stored, "the notifier to store the snooze")
                    await eventually(lambda: len(posted.updates) == 1, "the answer shown")
                    count = await pool.fetchval("SELECT count(*) FROM insight_acks")
                    assert count == 1  # the forged press recorded nothing
                await produce(kafka_bootstrap, topic, [event(1, lifecycle="resolved")])
                await produce(kafka_bootstrap, topic, [event(2, deal_id="deal-1")])  # sentinel
                await eventually(lambda: len(api.messages) == 2, "the sentinel in Slack")
        finally:
            await producer.stop()
    [shown] = posted.updates  # the answer; the resolution of the snoozed insight was held
    assert "Snoozed until" in shown["blocks"][-1]["elements"][0]["text"]
    assert not [b for b in shown["blocks"] if b["type"] == "actions"]
    sentinel = next(m for m in api.messages.values() if m.ts != posted.ts)
    assert sentinel.thread_ts == posted.ts  # same deal: in its thread
