"""``vectoros notify``: insight events -> Slack, Teams, email, SMS, signed webhooks and the console.

A ``NotifierHandler`` (``handler.py``) on the consume loop (``vectoros.consume_loop``): fetch a
batch from ``deal-insights`` (group ``vectoros-notifier``) -> pick the events worth telling
people about and deliver them (``dispatch.py``) to their destinations (``destinations.py``),
directly or through flood control (``flood_runner.py``) -> record every outcome in the
notification log -> commit the batch's offsets. A crash before the commit replays the batch; the
log (``log.py``) turns the replay into no-ops, so nobody gets a message twice.

A destination that is down costs at most its retry budget per notification (and, once its
circuit opens, nothing), is recorded as ``failed``, and never blocks the others for longer. A
database error stops the batch; the consume loop (``vectoros.consume_loop``) re-runs it
(idempotently) with capped exponential back-off from ``notify_db_retry_seconds`` up to
``notify_db_retry_max_seconds``, and waits the same way for PostgreSQL or the broker at start.
Stopping (the stop event) interrupts backoff and rate-limit waits at once and lets an HTTP
request already on the wire finish (bounded by ``notify_http_timeout_seconds``); the unfinished
batch is not committed and resumes on the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TextIO

import httpx
from prometheus_client import CollectorRegistry

from consumer.notifier.destinations import (
    PERSONAL,
    Destination,
    Send,
    SendMessage,
    build_destinations,
    secrets_of,
)
from consumer.notifier.directory import load_directory
from consumer.notifier.dispatch import DB_ERRORS, NotificationMeta, Notifier, Stopping
from consumer.notifier.flood_runner import FloodRunner, item_of
from consumer.notifier.handler import STALE_GRACE_SECONDS, NotifierHandler
from consumer.notifier.metrics import (
    NotifierEnrichmentMetrics,
    NotifierMetrics,
    UsefulnessMetrics,
)
from consumer.notifier.routing import load_policy
from consumer.notifier.settings import NotifierSettings
from vectoros import __version__
from vectoros.consume_loop import (
    Broker,
    ConsumeLoop,
    Database,
    KafkaBroker,
    LoopOptions,
    Subscription,
)
from vectoros.db import PgPool
from vectoros.errors import ConfigError
from vectoros.logs import redact_logs
from vectoros.ops_server import Health

__all__ = [
    "DB_ERRORS",
    "PERSONAL",
    "STALE_GRACE_SECONDS",
    "Destination",
    "FloodRunner",
    "NotificationMeta",
    "Notifier",
    "NotifierHandler",
    "Send",
    "SendMessage",
    "Stopping",
    "build_destinations",
    "check_escalation",
    "item_of",
    "loop_options",
    "run_notifier",
    "secrets_of",
]

logger = logging.getLogger(__name__)


def loop_options(settings: NotifierSettings, database: Database | None) -> LoopOptions:
    """The notifier's loop: one fetch per batch, no read-ahead, the one outage policy."""
    return LoopOptions(
        name="notifier",
        subscription=Subscription(
            topics=(settings.topic_insights, settings.topic_acks),
            group_id=settings.notifier_group_id,
            client_id=f"{settings.kafka_client_id}-notifier",
            max_poll_interval_ms=settings.notify_max_poll_interval_ms,
        ),
        topics={settings.topic_acks: settings.topic_partitions},
        batch_max=settings.notify_max_batch_records,
        idle_poll_ms=settings.notify_fetch_timeout_ms,
        database=database,
        retry_initial_seconds=settings.notify_db_retry_seconds,
        retry_max_seconds=max(
            settings.notify_db_retry_seconds, settings.notify_db_retry_max_seconds
        ),
    )


def check_escalation(
    settings: NotifierSettings, destinations: Sequence[Destination], has_directory: bool
) -> None:
    """``ConfigError`` unless escalations can go where ``notify_escalate_via`` says."""
    via = settings.notify_escalate_via
    personal = [v for v in via if ":" not in v]
    if not settings.notify_flood_control or (personal and not has_directory):
        raise ConfigError(
            "VECTOROS_NOTIFY_ESCALATE_AFTER_HOURS needs VECTOROS_NOTIFY_FLOOD_CONTROL=true "
            "and, to reach managers by email or SMS, VECTOROS_NOTIFY_DIRECTORY_FILE (who the "
            "managers are)"
        )
    known = {n for d in destinations for n in d.names}
    missing = [v for v in via if ":" in v and v not in known]
    if missing:
        raise ConfigError(
            f"VECTOROS_NOTIFY_ESCALATE_VIA names {missing}, which are not configured "
            f"(configured: {sorted(n for n in known if ':' in n)})"
        )


async def run_notifier(
    settings: NotifierSettings,
    registry: CollectorRegistry,
    health: Health,
    stop_event: asyncio.Event,
    http_client: httpx.AsyncClient | None = None,
    *,
    pool: PgPool | None = None,
    console_stream: TextIO | None = None,
    broker: Broker | None = None,
) -> None:
    """Run the notifier until ``stop_event`` is set.

    ``http_client``/``pool`` are borrowed when given (and left open), else created and closed
    here. The pool is migrated (``vectoros.db.migrate``) either way. Waits for PostgreSQL and
    the broker as long as it takes (not ready meanwhile). Raises ``ConfigError`` when no
    destination is configured.
    """
    metrics = NotifierMetrics(registry)
    secrets = secrets_of(settings)
    own_http = http_client is None
    http = http_client or httpx.AsyncClient(
        timeout=settings.notify_http_timeout_seconds,
        follow_redirects=False,
        headers={"user-agent": f"vectoros-notifier/{__version__}"},
    )
    try:
        with redact_logs(secrets):
            directory = None
            if settings.notify_directory_file is not None:
                try:
                    directory = load_directory(settings.notify_directory_file)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            destinations = build_destinations(
                settings, http, console_stream=console_stream, directory=directory
            )
            if settings.notify_escalate_after_hours > 0:
                check_escalation(settings, destinations, directory is not None)
            if not settings.has_destinations or not destinations:
                raise ConfigError(
                    "the notifier has no destination: set VECTOROS_SLACK_WEBHOOK_URLS, "
                    "VECTOROS_SLACK_BOT_TOKEN (with VECTOROS_SLACK_CHANNELS), "
                    "VECTOROS_TEAMS_WEBHOOK_URLS, VECTOROS_SMTP_HOST (with a directory), "
                    "VECTOROS_WEBHOOK_URLS (with VECTOROS_WEBHOOK_SECRET) or "
                    "VECTOROS_NOTIFY_CONSOLE=true"
                )
            policy = None
            if settings.notify_policy_file is not None:
                try:
                    policy = load_policy(settings.notify_policy_file)
                    known = {n for d in destinations for n in d.names}
                    for kind in {d.kind for d in destinations} & PERSONAL:
                        known |= {f"{kind}:owner", f"{kind}:manager", f"{kind}:*"}
                    policy.check(known)
                    if policy.quiet_hours and not settings.notify_flood_control:
                        raise ValueError(
                            f"{settings.notify_policy_file}: quiet_hours hold notifications, "
                            "which needs VECTOROS_NOTIFY_FLOOD_CONTROL=true"
                        )
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            handler = NotifierHandler(
                settings,
                destinations,
                metrics,
                stop_event,
                secrets=secrets,
                enrichment_metrics=NotifierEnrichmentMetrics(registry),
                usefulness_metrics=UsefulnessMetrics(registry),
                policy=policy,
                directory=directory,
            )
            database = Database(
                dsn=settings.dsn() if pool is None else "",
                max_size=len(destinations) + 3,  # one kept by flood control's lock (lease.py)
                pool=pool,
            )
            loop = ConsumeLoop(
                handler, broker or KafkaBroker(settings), loop_options(settings, database)
            )
            health.register("notifier", loop.ready)
            logger.info(
                "notifier consuming %s as group %s (once the broker and PostgreSQL answer); "
                "destinations: %s",
                settings.topic_insights,
                settings.notifier_group_id,
                ", ".join(d.label for d in destinations),
            )
            await loop.run(stop_event)
    finally:
        if own_http:
            await http.aclose()
        logger.info("notifier stopped")
