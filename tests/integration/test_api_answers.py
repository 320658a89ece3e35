"""Answers from the dashboard on the real broker and PostgreSQL: ``run_api`` over uvicorn, a
POST publishes an InsightAck on insight-acks and stores it (the insight reads back snoozed), and
a token of another workspace answers nothing (404, nothing published, nothing stored); the
answer reaches the live stream of the insight's workspace only."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens
from consumer.sink.store import PostgresInsightStore, SourcePosition
from schemas.acks import AckSource, AckState, InsightAck
from schemas.insights import Lifecycle
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_api_db import insight
from tests.integration.test_api_live import auth, publish, running_api, sse_events, take
from tests.kafka_utils import WAIT_LIMIT, read_all
from tests.unit.test_api_live import insight as live_insight
from vectoros.kafka import ensure_topics

pytestmark = pytest.mark.integration

INSIGHT = "ws-a-d1-stale_deal"


@pytest.fixture
async def setup(
    kafka_bootstrap: str, database_url: str, unique_name: Callable[[str], str]
) -> AsyncIterator[tuple[ApiSettings, dict[str, str], str]]:
    async with fresh_database(database_url, "apiack") as dsn:
        async with migrated_pool(dsn) as pool:
            tokens = {ws: (await PgTokens(pool).create(ws, "t"))[1] for ws in ("ws-a", "ws-b")}
            stored = [insight("ws-a", 1, "stale_deal", Lifecycle.RAISED, "critical", 2)]
            await PostgresInsightStore(pool).write_batch(
                [(e, SourcePosition("t", 0, i)) for i, e in enumerate(stored)]
            )
        settings = ApiSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_idempotence="off",
            database_url=dsn,
            metrics_enabled=False,
            topic_insights=unique_name("insights"),
            topic_acks=unique_name("acks"),
            topic_partitions=2,
            api_port=0,
        )
        await ensure_topics(kafka_bootstrap, {settings.topic_insights: 2})
        yield settings, tokens, dsn


async def test_an_answer_is_published_and_stored_for_its_workspace_only(
    setup: tuple[ApiSettings, dict[str, str], str], kafka_bootstrap: str
) -> None:
    settings, tokens, dsn = setup
    url = f"/api/v1/insights/{INSIGHT}/answer"
    async with (
        running_api(settings) as (port, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_LIMIT) as client,
    ):
        refused = await client.post(url, json={"answer": "snooze_1d"}, headers=auth(tokens["ws-b"]))
        assert refused.status_code == 404
        before = dt.datetime.now(dt.UTC)
        reply = await client.post(url, json={"answer": "snooze_1w"}, headers=auth(tokens["ws-a"]))
        assert reply.status_code == 200, reply.text
        answered = reply.json()
        until = dt.datetime.fromisoformat(answered["ack"]["snoozed_until"])
        assert until >= before + dt.timedelta(days=7)
        assert answered["ack"]["state"] == "snoozed"

        shown = await client.get(f"/api/v1/insights/{INSIGHT}", headers=auth(tokens["ws-a"]))
        assert shown.json()["ack"] == answered["ack"]

    [record] = await read_all(kafka_bootstrap, settings.topic_acks)
    assert record.key == INSIGHT.encode()
    ack = InsightAck.model_validate_json(record.value)
    assert ack.ack_id == answered["ack_id"]
    assert ack.state == AckState.SNOOZED
    assert ack.snoozed_until == until
    assert ack.source == AckSource.DASHBOARD
    async with migrated_pool(dsn) as pool:
        rows = await pool.fetch("SELECT insight_id, state, source, ack_id FROM insight_acks")
    assert [dict(r) for r in rows] == [
        {"insight_id": INSIGHT, "state": "snoozed", "source": "dashboard", "ack_id": ack.ack_id}
    ]


async def test_an_answer_reaches_the_live_stream_of_its_workspace_only(
    setup: tuple[ApiSettings, dict[str, str], str],
) -> None:
    settings, tokens, _ = setup
    url = f"/api/v1/insights/{INSIGHT}/answer"
    async with (
        running_api(settings) as (port, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_LIMIT) as client,
        client.stream("GET", "/api/v1/stream", headers=auth(tokens["ws-a"])) as stream_a,
        client.stream("GET", "/api/v1/stream", headers=auth(tokens["ws-b"])) as stream_b,
    ):
        events_a, events_b = sse_events(stream_a), sse_events(stream_b)
        reply = await client.post(url, json={"answer": "not_useful"}, headers=auth(tokens["ws-a"]))
        assert reply.status_code == 200
        [got] = await take(events_a, 1)
        assert got["event"] == "ack"
        assert got["data"]["insight_id"] == INSIGHT
        assert got["data"]["state"] == "not_useful"
        assert got["data"]["source"] == "dashboard"
        # B's stream: the next thing it gets is B's own insight, never A's answer
        await publish(settings, [live_insight("ws-b", 5)])
        [first_b] = await take(events_b, 1)
        assert first_b["event"] == "insight"
        assert first_b["data"]["insight_id"] == "i-5"
