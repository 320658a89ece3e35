"""The live stream's HTTP side driven as ASGI: what a client that fell behind gets."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.api.app import build_app
from consumer.api.live import LiveHub
from consumer.api.metrics import ApiMetrics
from consumer.api.settings import ApiSettings
from consumer.api.tokens import MemoryTokens
from tests.kafka_utils import WAIT_LIMIT
from tests.unit.test_api_app import FakeStore
from tests.unit.test_api_live import insight


async def test_events_queued_while_a_client_is_behind_go_out_in_one_write() -> None:
    hub, tokens = LiveHub(), MemoryTokens()
    token = tokens.add("ws-a")
    settings = ApiSettings(kafka_bootstrap_servers="unused:9092", metrics_enabled=False)
    app = build_app(settings, FakeStore(), tokens, ApiMetrics(CollectorRegistry()), hub)
    bodies: list[bytes] = []
    arrived = asyncio.Condition()
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            async with arrived:
                bodies.append(message["body"])
                arrived.notify_all()

    async def writes(count: int) -> None:
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: len(bodies) >= count), WAIT_LIMIT)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/stream",
        "raw_path": b"/api/v1/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
    }
    served = asyncio.create_task(app(scope, receive, send))
    try:
        await writes(1)  # connected, waiting for the next event
        assert b": connected" in bodies[0]
        for n in range(3):  # three at once: the client reads them after they all arrived
            hub.publish(insight("ws-a", n))
        await writes(2)
        assert bodies[1].count(b"event: insight\n") == 3
        hub.publish(insight("ws-a", 9))
        await writes(3)
        assert bodies[2].count(b"event: insight\n") == 1
    finally:
        hub.close()
        await asyncio.wait_for(served, WAIT_LIMIT)
        gone.set()
