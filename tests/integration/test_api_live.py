"""The live stream on the real broker and PostgreSQL: ``run_api`` serving over uvicorn, insight
events published to the topic, server-sent events read over HTTP per workspace, resumed with
Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.api.service import run_api
from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens
from schemas.insights import InsightEvent, Lifecycle
from tests.databases import fresh_database, migrated_pool
from tests.kafka_utils import WAIT_LIMIT
from tests.unit.test_api_live import insight
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of a text/event-stream response, as {id, event, data}."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


@contextlib.asynccontextmanager
async def running_api(settings: ApiSettings) -> AsyncIterator[tuple[int, Health]]:
    health = Health()
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_api(settings, CollectorRegistry(), health, stop, on_ready=port.set_result)
    )
    try:
        done, _ = await asyncio.wait(
            [task, port], timeout=WAIT_LIMIT, return_when="FIRST_COMPLETED"
        )
        if task in done:
            task.result()
        assert port.done(), "the API did not start"
        while not health.ready():  # the live feed has its partitions
            assert not task.done(), task
            await asyncio.sleep(0.05)
        yield port.result(), health
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT)


@pytest.fixture
async def setup(
    kafka_bootstrap: str, database_url: str, unique_name: Callable[[str], str]
) -> AsyncIterator[tuple[ApiSettings, dict[str, str]]]:
    async with fresh_database(database_url, "apilive") as dsn:
        async with migrated_pool(dsn) as pool:
            tokens = {ws: (await PgTokens(pool).create(ws, "t"))[1] for ws in ("ws-a", "ws-b")}
        settings = ApiSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_idempotence="off",
            database_url=dsn,
            metrics_enabled=False,
            topic_insights=unique_name("insights"),
            topic_partitions=2,
            api_port=0,
        )
        await ensure_topics(kafka_bootstrap, {settings.topic_insights: 2})
        yield settings, tokens


async def publish(settings: ApiSettings, events: list[InsightEvent]) -> None:
    producer = await start_producer(settings)
    try:
        for event in events:
            await producer.send_and_wait(
                settings.topic_insights,
                event.model_dump_json().encode(),
                key=event.deal_id.encode(),
            )
    finally:
        await producer.stop()


async def take(events: AsyncIterator[dict[str, str]], count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        item = await asyncio.wait_for(anext(events), WAIT_LIMIT)
        out.append({**item, "data": orjson.loads(item["data"])})
    return out


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_insights_reach_their_workspace_stream_and_resume(
    setup: tuple[ApiSettings, dict[str, str]],
) -> None:
    settings, tokens = setup
    async with (
        running_api(settings) as (port, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_LIMIT) as client,
        client.stream("GET", "/api/v1/stream", headers=auth(tokens["ws-a"])) as stream_a,
        client.stream("GET", "/api/v1/stream", headers=auth(tokens["ws-b"])) as stream_b,
    ):
        assert stream_a.status_code == 200
        assert stream_a.headers["content-type"].startswith("text/event-stream")
        events_a, events_b = sse_events(stream_a), sse_events(stream_b)
        await publish(settings, [insight("ws-a", 1), insight("ws-b", 2)])
        await publish(settings, [insight("ws-a", 1, Lifecycle.RESOLVED), insight("ws-b", 3)])
        got_a = await take(events_a, 2)
        got_b = await take(events_b, 2)
        assert [(e["event"], e["data"]["lifecycle"]) for e in got_a] == [
            ("insight", "raised"),
            ("insight", "resolved"),
        ]
        assert {e["data"]["deal_id"] for e in got_a} == {"d-1"}
        assert {e["data"]["deal_id"] for e in got_b} == {"d-2", "d-3"}

        headers = auth(tokens["ws-a"], **{"Last-Event-ID": got_a[0]["id"]})
        async with client.stream("GET", "/api/v1/stream", headers=headers) as resumed:
            [again] = await take(sse_events(resumed), 1)
        assert again["id"] == got_a[1]["id"]
        assert again["data"]["lifecycle"] == "resolved"

        headers = auth(tokens["ws-a"], **{"Last-Event-ID": "elsewhere-7"})
        async with client.stream("GET", "/api/v1/stream", headers=headers) as foreign:
            [reset] = await take(sse_events(foreign), 1)
        assert reset["event"] == "reset"


async def test_the_stream_needs_a_token(setup: tuple[ApiSettings, dict[str, str]]) -> None:
    settings, _ = setup
    async with (
        running_api(settings) as (port, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_LIMIT) as client,
    ):
        assert (await client.get("/api/v1/stream")).status_code == 401
        page = await client.get("/")
        assert page.status_code == 200
