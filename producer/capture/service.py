"""``vectoros capture``: serve the capture endpoints and publish what they match.

Start-up: secrets and workspaces file checked -> ``deal-events`` exists -> producer started ->
the deal index follows ``deal-events`` from the beginning (every deal's contacts and account
domains; closed and deleted deals leave it) -> HTTP server listening -> ready (``/readyz``
component ``capture``) once the index has caught up with the log end seen at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from producer.capture import oauth
from producer.capture.app import build_app
from producer.capture.gcal import CalendarPush
from producer.capture.gmail import GmailPush, google_oauth
from producer.capture.graph import GraphPush, graph_oauth
from producer.capture.maintain import Maintenance, run_maintenance
from producer.capture.matcher import DealIndex, Matcher
from producer.capture.metrics import CaptureMetrics
from producer.capture.oauth import OAuthFlow
from producer.capture.settings import CaptureSettings, load_policies
from producer.capture.store import CaptureStore, TokenCipher
from producer.publisher import DealEventPublisher
from schemas.events import DealEvent, Tick, event_adapter
from vectoros.errors import ConfigError
from vectoros.kafka import ensure_topics, start_client, start_producer
from vectoros.ops_server import AppServer, Health

logger = logging.getLogger(__name__)


def check_config(settings: CaptureSettings) -> None:
    settings.bootstrap()
    if settings.capture_webhook_secret is None or settings.capture_token_key is None:
        raise ConfigError(
            "vectoros capture needs VECTOROS_CAPTURE_WEBHOOK_SECRET and "
            "VECTOROS_CAPTURE_TOKEN_KEY (a Fernet key)"
        )
    TokenCipher(settings.capture_token_key)  # a bad key fails now, with how to make one
    google = (settings.capture_google_client_id, settings.capture_google_client_secret)
    if (google[0] is None) != (google[1] is None):
        raise ConfigError(
            "set both VECTOROS_CAPTURE_GOOGLE_CLIENT_ID and VECTOROS_CAPTURE_GOOGLE_CLIENT_SECRET"
        )
    if settings.capture_gmail_push_token is not None and not settings.gmail_configured():
        raise ConfigError(
            "the Gmail connector needs all of VECTOROS_CAPTURE_GMAIL_PUSH_TOKEN, "
            "VECTOROS_CAPTURE_GOOGLE_CLIENT_ID and VECTOROS_CAPTURE_GOOGLE_CLIENT_SECRET"
        )
    if settings.capture_gcal_channel_secret is not None and not settings.gcal_configured():
        raise ConfigError(
            "the Google Calendar connector needs VECTOROS_CAPTURE_GCAL_CHANNEL_SECRET with "
            "VECTOROS_CAPTURE_GOOGLE_CLIENT_ID and VECTOROS_CAPTURE_GOOGLE_CLIENT_SECRET"
        )
    graph_set = (
        settings.capture_graph_secret,
        settings.capture_ms_client_id,
        settings.capture_ms_client_secret,
    )
    if any(v is not None for v in graph_set) and not settings.graph_configured():
        raise ConfigError(
            "the Microsoft Graph connector needs all of VECTOROS_CAPTURE_GRAPH_SECRET, "
            "VECTOROS_CAPTURE_MS_CLIENT_ID and VECTOROS_CAPTURE_MS_CLIENT_SECRET"
        )
    load_policies(settings.capture_workspaces_file)


class _Publisher:
    def __init__(self, producer: Any, topic: str) -> None:
        self._producer, self._topic = producer, topic

    async def send(self, events: Sequence[DealEvent]) -> None:
        publisher = DealEventPublisher(self._producer, self._topic)
        await publisher.publish_many(events)
        await publisher.flush()


def oauth_flow(
    settings: CaptureSettings, http: httpx.AsyncClient, store: CaptureStore
) -> OAuthFlow | None:
    """Connecting mailboxes: with a public URL, for the providers whose clients are set."""
    if settings.capture_public_url is None:
        return None
    providers = {}
    if settings.capture_google_client_id and settings.capture_google_client_secret:
        client = google_oauth(
            settings.capture_google_client_id,
            settings.capture_google_client_secret.get_secret_value(),
        )
        providers["gmail"] = oauth.google("gmail", client)
        providers["gcal"] = oauth.google("gcal", client)
    if settings.capture_ms_client_id and settings.capture_ms_client_secret:
        providers["graph"] = oauth.microsoft(
            graph_oauth(
                settings.capture_ms_client_id, settings.capture_ms_client_secret.get_secret_value()
            )
        )
    if not providers:
        return None
    return OAuthFlow(http, store, providers, settings.capture_public_url)


async def follow_deals(
    settings: CaptureSettings, index: DealIndex, caught_up: asyncio.Event
) -> None:
    """Keep ``index`` current from ``deal-events`` (no consumer group: every process reads it
    all); set ``caught_up`` once the log end seen at start is reached."""
    topic = settings.topic_events
    consumer = await start_client(
        lambda: AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap(), enable_auto_commit=False, group_id=None
        ),
        settings.bootstrap(),
        wait_seconds=settings.kafka_connect_timeout_seconds,
        what="capture",
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            await consumer.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while True:
            if not caught_up.is_set() and all(
                await asyncio.gather(*(_at(consumer, tp, ends[tp]) for tp in parts))
            ):
                caught_up.set()
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValidationError, ValueError):
                        event = event_adapter.validate_json(record.value or b"")
                        if not isinstance(event, Tick):
                            index.apply(event)
    finally:
        await consumer.stop()


async def _at(consumer: Any, tp: TopicPartition, end: int) -> bool:
    return bool(await consumer.position(tp) >= end)


async def run_capture(
    settings: CaptureSettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run until ``stop`` is set; ``on_ready(port)`` once it serves with a current index."""
    check_config(settings)
    assert settings.capture_webhook_secret is not None
    assert settings.capture_token_key is not None
    policies = load_policies(settings.capture_workspaces_file)
    caught_up = asyncio.Event()
    health.register("capture", caught_up.is_set)
    await ensure_topics(settings.bootstrap(), {settings.topic_events: settings.topic_partitions})
    store = CaptureStore(settings.capture_db_path, TokenCipher(settings.capture_token_key))
    producer = await start_producer(settings)
    index = DealIndex()
    follower = asyncio.create_task(follow_deals(settings, index, caught_up))
    http = httpx.AsyncClient(timeout=30.0)
    try:
        gmail = None
        if settings.gmail_configured():
            assert settings.capture_gmail_push_token is not None
            assert settings.capture_google_client_id is not None
            assert settings.capture_google_client_secret is not None
            oauth = google_oauth(
                settings.capture_google_client_id,
                settings.capture_google_client_secret.get_secret_value(),
            )
            gmail = GmailPush(
                http,
                oauth,
                settings.capture_gmail_push_token.get_secret_value(),
                ready=caught_up.is_set,
            )
        gcal = None
        if settings.gcal_configured():
            assert settings.capture_gcal_channel_secret is not None
            assert settings.capture_google_client_id is not None
            assert settings.capture_google_client_secret is not None
            gcal = CalendarPush(
                http,
                google_oauth(
                    settings.capture_google_client_id,
                    settings.capture_google_client_secret.get_secret_value(),
                ),
                settings.capture_gcal_channel_secret.get_secret_value(),
                ready=caught_up.is_set,
            )
        graph = None
        if settings.graph_configured():
            assert settings.capture_graph_secret is not None
            assert settings.capture_ms_client_id is not None
            assert settings.capture_ms_client_secret is not None
            graph = GraphPush(
                http,
                graph_oauth(
                    settings.capture_ms_client_id,
                    settings.capture_ms_client_secret.get_secret_value(),
                ),
                settings.capture_graph_secret.get_secret_value(),
                ready=caught_up.is_set,
            )
        flow = oauth_flow(settings, http, store)
        metrics = CaptureMetrics(registry)
        matcher = Matcher(index, policies)
        publisher = _Publisher(producer, settings.topic_events)
        app = build_app(
            matcher,
            publisher,
            store,
            settings.capture_webhook_secret.get_secret_value(),
            gmail=gmail,
            gcal=gcal,
            graph=graph,
            oauth=flow,
            metrics=metrics,
        )
        server = AppServer(app, settings.capture_host, settings.capture_port, name="capture")
        await server.start()
        upkeep: asyncio.Task[None] | None = None
        try:
            waiter = asyncio.create_task(caught_up.wait())
            await asyncio.wait([waiter, follower], return_when=asyncio.FIRST_COMPLETED)
            if follower.done():
                follower.result()  # raises what stopped it
            logger.info(
                "capture: %d workspaces on http://%s:%d/capture/webhook/<workspace> -> %s",
                len(policies), settings.capture_host, server.port, settings.topic_events,
            )  # fmt: skip
            if on_ready is not None:
                on_ready(server.port)
            if settings.capture_poll_seconds > 0:
                maintenance = Maintenance(
                    store, matcher, publisher, metrics,
                    gmail=gmail, gcal=gcal, graph=graph,
                    public_url=settings.capture_public_url,
                    gmail_topic=settings.capture_gmail_topic,
                )  # fmt: skip
                upkeep = asyncio.create_task(
                    run_maintenance(maintenance, settings.capture_poll_seconds, stop)
                )
            await stop.wait()
        finally:
            if upkeep is not None:
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep
            await server.stop()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await http.aclose()
        await producer.stop()
        store.close()
        logger.info("capture stopped")
