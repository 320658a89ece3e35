"""``vectoros api``: the read API, the live stream and the dashboard page in one process.

Start-up: PostgreSQL pool (migrations applied) -> the live feed (its own consumer group, read
from the end of ``deal-insights``) -> with a broker configured, a producer for the dashboard's
answers (``insight-acks``; without one, answering is 503) -> HTTP server listening -> ready
(``/readyz`` components ``api`` and ``api_live``). Stop: not ready -> every live stream ends ->
the server finishes the requests in flight -> the feed, the producer and the pool close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.api.answers import KafkaAnswers
from consumer.api.app import build_app
from consumer.api.live import LiveHub
from consumer.api.metrics import ApiMetrics
from consumer.api.queries import PgApiStore
from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens
from schemas.acks import InsightAck
from schemas.insights import InsightEvent, insight_adapter
from vectoros.consume_loop import (
    ConsumeLoop,
    KafkaBroker,
    LoopOptions,
    Outputs,
    Records,
    Resources,
    Subscription,
)
from vectoros.db import connect_pool, migrate
from vectoros.errors import PortInUse
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import AppServer, Health

logger = logging.getLogger(__name__)


WorkspacesOf = Callable[[list[str]], Awaitable[dict[str, str]]]


class LiveFeed:
    """The consume loop's handler: every insight event read goes to the hub, and every answer
    (``insight-acks``) to the hub of its insight's workspace (looked up in ``insights``; an
    insight not stored yet is skipped: the page reads the answer with the list)."""

    def __init__(
        self,
        hub: LiveHub,
        metrics: ApiMetrics,
        acks_topic: str | None = None,
        workspaces_of: WorkspacesOf | None = None,
    ) -> None:
        self._hub = hub
        self._metrics = metrics
        self._acks_topic = acks_topic
        self._workspaces_of = workspaces_of
        self.assigned = False

    async def open(self, resources: Resources) -> None:
        return None

    def decode(self, records: Records) -> list[InsightEvent | InsightAck]:
        out: list[InsightEvent | InsightAck] = []
        for batch in records.values():
            for record in batch:
                if record.value is None:
                    continue
                try:
                    if record.topic == self._acks_topic:
                        out.append(InsightAck.model_validate_json(record.value))
                    else:
                        out.append(insight_adapter.validate_json(record.value))
                except ValueError:
                    logger.warning(
                        "live feed: record at %s/%d@%d is not an insight event or answer; skipped",
                        record.topic,
                        record.partition,
                        record.offset,
                    )
        return out

    async def handle(
        self, decoded: list[InsightEvent | InsightAck], stop: asyncio.Event
    ) -> Outputs | None:
        acks = [a for a in decoded if isinstance(a, InsightAck)]
        where: dict[str, str] = {}
        if acks and self._workspaces_of is not None:
            where = await self._workspaces_of(sorted({a.insight_id for a in acks}))
        for event in decoded:
            if isinstance(event, InsightAck):
                workspace = where.get(event.insight_id)
                if workspace is not None:
                    self._hub.publish_ack(workspace, event)
                    self._metrics.live_events.labels("ack").inc()
                continue
            self._hub.publish(event)
            self._metrics.live_events.labels(event.lifecycle.value).inc()
        return []

    async def close(self) -> None:
        return None


def live_loop(
    settings: ApiSettings,
    hub: LiveHub,
    metrics: ApiMetrics,
    workspaces_of: WorkspacesOf | None = None,
) -> tuple[ConsumeLoop[Any], LiveFeed]:
    """The live feed: a consumer group of its own (a new one per process), starting at the end
    of ``deal-insights`` (and of ``insight-acks`` given ``workspaces_of``). A later assignment
    (after an outage) starts at the end again and tells every client to refetch
    (``LiveHub.gap``)."""
    topics = {settings.topic_insights: settings.topic_partitions}
    if workspaces_of is not None:
        topics[settings.topic_acks] = settings.topic_partitions
    feed = LiveFeed(hub, metrics, settings.topic_acks if workspaces_of else None, workspaces_of)
    loop: ConsumeLoop[Any]

    async def assigned(partitions: set[Any]) -> None:
        consumer = loop.consumer
        seek_to_end = getattr(consumer, "seek_to_end", None)
        if seek_to_end is not None and partitions:
            await seek_to_end(*partitions)
        if feed.assigned:
            hub.gap()
        feed.assigned = True

    options = LoopOptions(
        name="api-live",
        subscription=Subscription(
            topics=tuple(topics),
            group_id=f"{settings.api_group_prefix}-{uuid.uuid4().hex[:12]}",
            client_id=f"{settings.kafka_client_id}-api",
            fetch_max_wait_ms=100,
            on_assigned=assigned,
        ),
        batch_max=500,
        flush_ms=0,
        idle_poll_ms=100,
        topics=topics,
    )
    loop = ConsumeLoop(feed, KafkaBroker(settings), options)
    return loop, feed


async def run_api(
    settings: ApiSettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[int], None] | None = None,
    any_port_if_busy: bool = False,
) -> None:
    """Run the API until ``stop`` is set. ``on_ready(port)`` is called once it serves.
    ``any_port_if_busy`` (``vectoros run``): a busy *default* port is replaced by a free one
    (a port set explicitly never is)."""
    metrics = ApiMetrics(registry)
    ready = False
    health.register("api", lambda: ready)
    pool = await connect_pool(
        settings.dsn(), max_size=settings.db_pool_max_size, deadline_seconds=60
    )
    async with contextlib.AsyncExitStack() as exits:
        exits.push_async_callback(pool.close)
        if settings.api_migrate_on_start:
            await migrate(pool)
        hub: LiveHub | None = None
        live_task: asyncio.Task[None] | None = None
        if settings.api_live:
            settings.bootstrap()
            hub = LiveHub(buffer=settings.api_live_buffer)
            loop, feed = live_loop(settings, hub, metrics, PgApiStore(pool).workspaces_of)
            live_stop = asyncio.Event()
            health.register("api_live", lambda: loop.ready() and feed.assigned)
            live_task = asyncio.create_task(loop.run(live_stop), name="api-live")

            async def stop_live() -> None:
                live_stop.set()
                await asyncio.gather(live_task, return_exceptions=True)

            exits.push_async_callback(stop_live)
        answers: KafkaAnswers | None = None
        if settings.kafka_bootstrap_servers:
            await ensure_topics(
                settings.bootstrap(), {settings.topic_acks: settings.topic_partitions}
            )
            producer = await start_producer(settings)
            exits.push_async_callback(producer.stop)
            answers = KafkaAnswers(
                producer, settings.topic_acks, pool, settings.api_answer_timeout_seconds
            )
        app = build_app(settings, PgApiStore(pool), PgTokens(pool), metrics, hub, answers=answers)
        server = AppServer(
            app, settings.api_host, settings.api_port, name="api", setting="VECTOROS_API_PORT"
        )
        try:
            await server.start()
        except PortInUse:
            if not any_port_if_busy or "api_port" in settings.model_fields_set:
                raise
            server = AppServer(app, settings.api_host, 0, name="api")
            await server.start()
            logger.warning(
                "api: port %d is busy; serving on port %d instead (set VECTOROS_API_PORT)",
                settings.api_port,
                server.port,
            )
        try:
            ready = True
            logger.info(
                "api: dashboard and read API on http://%s:%d/ (live stream %s)",
                settings.api_host,
                server.port,
                "on" if hub is not None else "off",
            )
            if on_ready is not None:
                on_ready(server.port)
            stopped = asyncio.create_task(stop.wait())
            waits: list[asyncio.Task[Any]] = [stopped]
            if live_task is not None:
                waits.append(live_task)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
        finally:
            ready = False
            if hub is not None:
                hub.close()
            await server.stop()
        if live_task is not None and live_task.done() and not live_task.cancelled():
            live_task.result()  # a live feed that failed (a bug, bad config) fails the service
    logger.info("api stopped")
