"""``vectoros gateway``: serve the webhook app with uvicorn and publish through one producer.

Start-up: stage mapping loaded and checked -> ``deal-events`` exists -> producer started -> HTTP
server listening -> ready (``/readyz`` component ``gateway``). Stop (SIGTERM / ``stop``):
not ready -> the server stops accepting and finishes the requests in flight (their events are
acknowledged before they are answered) -> producer stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from producer.gateway.app import build_app
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from producer.gateway.stages import StageMap
from producer.publisher import DealEventPublisher
from schemas.events import DealEvent
from vectoros.errors import ConfigError
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)


class KafkaEventPublisher:
    """Publishes one request's events on a shared producer and waits for exactly their
    acknowledgements (a ``DealEventPublisher`` per call: concurrent requests never flush, or
    fail, each other's records)."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, events: Sequence[DealEvent]) -> None:
        publisher = DealEventPublisher(self._producer, self.topic)
        await publisher.publish_many(events)
        await publisher.flush()


class _Server(uvicorn.Server):
    """The service owns SIGINT/SIGTERM (graceful shutdown); uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """Serves an ASGI app with uvicorn inside the running event loop."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=30,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="gateway-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the start-up error (e.g. port in use)
                raise ConfigError("the gateway's HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("gateway server is not started")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def check_config(settings: GatewaySettings) -> StageMap:
    """What can be checked before anything starts: at least one source, the stage mapping.
    Raises ``ConfigError``; returns the loaded stage mapping."""
    settings.bootstrap()
    if not settings.enabled_sources():
        raise ConfigError(
            "the gateway has no source: set VECTOROS_GATEWAY_HUBSPOT_CLIENT_SECRET, "
            "VECTOROS_GATEWAY_PIPEDRIVE_USERNAME/_PASSWORD, VECTOROS_GATEWAY_SALESFORCE_TOKEN "
            "or VECTOROS_GATEWAY_TWENTY_SECRET"
        )
    return StageMap.load(settings.gateway_stages_file)


async def run_gateway(
    settings: GatewaySettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run the gateway until ``stop`` is set. ``on_ready(port)`` is called once it serves."""
    stages = check_config(settings)
    sources = settings.enabled_sources()
    metrics = GatewayMetrics(registry)
    ready = False
    health.register("gateway", lambda: ready)
    await ensure_topics(settings.bootstrap(), {settings.topic_events: settings.topic_partitions})
    producer = await start_producer(settings)
    try:
        publisher = KafkaEventPublisher(producer, settings.topic_events)
        app = build_app(settings, publisher, metrics, stages=stages)
        server = GatewayServer(app, settings.gateway_host, settings.gateway_port)
        await server.start()
        try:
            ready = True
            logger.info(
                "gateway: %s on http://%s:%d/webhooks/<source>[/<workspace>] -> %s",
                ", ".join(sources),
                settings.gateway_host,
                server.port,
                settings.topic_events,
            )
            if on_ready is not None:
                on_ready(server.port)
            await stop.wait()
        finally:
            ready = False
            await server.stop()
    finally:
        await producer.stop()
        logger.info("gateway stopped")
