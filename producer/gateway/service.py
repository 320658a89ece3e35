"""``vectoros gateway``: serve the webhook app with uvicorn and publish through one producer.

Start-up: stage mapping loaded and checked -> ``deal-events`` exists -> producer started -> HTTP
server listening -> ready (``/readyz`` component ``gateway``). Stop (SIGTERM / ``stop``):
not ready -> the server stops accepting and finishes the requests in flight (their events are
acknowledged before they are answered) -> producer stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from producer.gateway.app import build_app
from producer.gateway.contacts import (
    ContactResolver,
    HubSpotContacts,
    PipedriveContacts,
    SalesforceContacts,
)
from producer.gateway.metrics import GatewayMetrics
from producer.gateway.settings import GatewaySettings
from producer.gateway.slack import KafkaAckPublisher
from producer.gateway.stages import StageMap
from producer.publisher import DealEventPublisher
from schemas.events import DealEvent
from vectoros.errors import ConfigError
from vectoros.kafka import ensure_topics, start_producer
from vectoros.ops_server import AppServer, Health

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


GatewayServer = AppServer  # the gateway's endpoints are served like the ops endpoint


def check_config(settings: GatewaySettings) -> StageMap:
    """What can be checked before anything starts: at least one source, the stage mapping.
    Raises ``ConfigError``; returns the loaded stage mapping."""
    settings.bootstrap()
    answers = (
        settings.gateway_slack_signing_secret,
        settings.gateway_ack_link_key,
        settings.gateway_twilio_auth_token,
    )
    if not settings.enabled_sources() and all(a is None for a in answers):
        raise ConfigError(
            "the gateway has no source: set VECTOROS_GATEWAY_HUBSPOT_CLIENT_SECRET, "
            "VECTOROS_GATEWAY_PIPEDRIVE_USERNAME/_PASSWORD, VECTOROS_GATEWAY_SALESFORCE_TOKEN, "
            "VECTOROS_GATEWAY_TWENTY_SECRET, VECTOROS_GATEWAY_SLACK_SIGNING_SECRET, "
            "VECTOROS_GATEWAY_ACK_LINK_KEY or VECTOROS_GATEWAY_TWILIO_AUTH_TOKEN"
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
    topics = {settings.topic_events: settings.topic_partitions}
    if settings.gateway_slack_signing_secret or settings.gateway_ack_link_key:
        topics[settings.topic_acks] = settings.topic_partitions
    await ensure_topics(settings.bootstrap(), topics)
    producer = await start_producer(settings)
    crm = httpx.AsyncClient(timeout=20.0)
    try:
        publisher = KafkaEventPublisher(producer, settings.topic_events)
        contacts: dict[str, ContactResolver] = {}
        if settings.gateway_hubspot_token is not None:
            contacts["hubspot"] = HubSpotContacts(
                crm, settings.gateway_hubspot_token.get_secret_value()
            )
        token, domain = (
            settings.gateway_pipedrive_api_token,
            settings.gateway_pipedrive_company_domain,
        )
        if token is not None and domain is not None:
            contacts["pipedrive"] = PipedriveContacts(crm, token.get_secret_value(), domain)
        sf_url, sf_id = (
            settings.gateway_salesforce_instance_url,
            settings.gateway_salesforce_client_id,
        )
        sf_secret = settings.gateway_salesforce_client_secret
        if sf_url is not None and sf_id is not None and sf_secret is not None:
            contacts["salesforce"] = SalesforceContacts(
                crm, sf_url, sf_id, sf_secret.get_secret_value()
            )
        acks = KafkaAckPublisher(producer, settings.topic_acks)
        app = build_app(settings, publisher, metrics, stages=stages, contacts=contacts, acks=acks)
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
        await crm.aclose()
        await producer.stop()
        logger.info("gateway stopped")
