"""``vectoros enrich``: Claude rewrites the text of raised and escalated insights.

An ``EnricherHandler`` on the consume loop (``vectoros.consume_loop``): fetch a batch from
``deal-insights`` (group ``vectoros-enricher``) -> remember every
event in the per-deal memory and pick the ones to enrich (raised or escalated, priority at or
above ``enrich_min_priority``) -> enrich them concurrently (at most ``enrich_concurrency`` model
calls at once) -> commit the batch's offsets. Per insight:

1. claim it in the enrichment log (``store.py``): an insight already enriched, failed, or being
   enriched by another enricher is skipped, so replays and restarts make no second call;
2. reserve one call of the workspace's daily budget (``budget.py``); past it, the insight keeps
   its rule text (fallback ``budget``);
3. call the model (``client.py``: retries, timeouts, validation); on failure the rule text stays
   (fallback with the failure kind);
4. store the validated text, publish an ``enriched`` event (same key, ``insight_id``,
   ``detected_at``, ``priority``, data; new title, description, actions; ``source`` = the
   model) and mark it published.

Detection never waits for this: the monitor has already published the complete insight with
the rule text, and the sink and notifier use it as it is when no enrichment comes.

A database or broker error re-runs the batch (the consume loop's back-off, from
``enrich_db_retry_seconds`` up to ``enrich_db_retry_max_seconds``; the log turns what was done
into no-ops, and outcomes not yet recorded are kept in memory, so no call is repeated). At
start the enricher waits the same way for PostgreSQL and the broker, as long as it takes.
Stopping cancels the calls in flight, releases their claims and leaves the batch uncommitted:
the next start enriches those insights.

Without an API key, or with ``VECTOROS_LLM=off``, :func:`run_enricher` says so once, sets
``vectoros_enricher_enabled`` to 0 and waits for the stop event: nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.enricher.budget import Budget, PostgresBudget, Reservation
from consumer.enricher.client import CallOutcome, ClaudeWriter, TextWriter, check_model
from consumer.enricher.context import DealMemory, build_context
from consumer.enricher.metrics import EnricherMetrics
from consumer.enricher.prompt import user_message
from consumer.enricher.settings import EnricherSettings
from consumer.enricher.store import ClaimState, EnrichmentLog, EnrichmentStore
from schemas.insights import InsightEvent, Lifecycle, insight_adapter
from vectoros.consume_loop import (
    Broker,
    ConsumeLoop,
    Database,
    KafkaBroker,
    LoopOptions,
    Output,
    Records,
    Resources,
    Subscription,
)
from vectoros.db import TRANSIENT_ERRORS, PgPool, migrate
from vectoros.enrichments import EnrichmentKey, StoredText
from vectoros.errors import ConfigError
from vectoros.logs import redact_logs
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)

Publish = Callable[[InsightEvent], Awaitable[None]]
WallClock = Callable[[], dt.datetime]

ENRICHED_LIFECYCLES = frozenset({Lifecycle.RAISED, Lifecycle.ESCALATED})
RETRIABLE_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    asyncpg.PostgresError,
    KafkaError,
)
RELEASE_TIMEOUT_SECONDS = 5.0


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def enriched_event(insight: InsightEvent, stored: StoredText) -> InsightEvent:
    """The ``enriched`` event for ``insight``: only the text and the source change."""
    return stored.apply(insight, Lifecycle.ENRICHED)


@dataclass(frozen=True, slots=True)
class Job:
    """One insight to enrich, with its prompt (built in stream order)."""

    insight: InsightEvent
    key: EnrichmentKey
    prompt: str


@dataclass(slots=True)
class _Unrecorded:
    """A call made by this process whose outcome is not in the log yet."""

    outcome: CallOutcome
    day: dt.date
    tokens_added: bool = False


class Enricher:
    """Selection, context and enrichment of insight events; no Kafka consumer in here."""

    def __init__(
        self,
        settings: EnricherSettings,
        writer: TextWriter,
        log: EnrichmentStore,
        budget: Budget,
        publish: Publish,
        metrics: EnricherMetrics,
        *,
        wall_clock: WallClock = _utc_now,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.log = log
        self.budget = budget
        self._publish_event = publish
        self.metrics = metrics
        self._wall_clock = wall_clock
        self.memory = DealMemory(settings.enrich_memory_deals)
        self._semaphore = asyncio.Semaphore(settings.enrich_concurrency)
        self._in_flight: set[EnrichmentKey] = set()
        self._unrecorded: dict[EnrichmentKey, _Unrecorded] = {}
        self._budget_told: set[tuple[str, dt.date]] = set()

    # -- selection --------------------------------------------------------------------------------

    def observe(self, value: bytes | None, where: str = "") -> Job | None:
        """Remember one record of the insights topic; the job if it is to be enriched."""
        self.metrics.consumed.inc()
        try:
            insight = insight_adapter.validate_json(value or b"")
        except (ValidationError, ValueError) as exc:
            self.metrics.skipped.labels(reason="invalid").inc()
            detail = (
                f"{exc.error_count()} error(s)"
                if isinstance(exc, ValidationError)
                else type(exc).__name__
            )
            logger.warning("skipping a record that is not a valid insight (%s): %s", where, detail)
            return None
        before = self.memory.observe(insight)
        if insight.lifecycle not in ENRICHED_LIFECYCLES:
            self.metrics.skipped.labels(reason="lifecycle").inc()
            return None
        if insight.priority.rank < self.settings.enrich_min_priority.rank:
            self.metrics.skipped.labels(reason="below_threshold").inc()
            return None
        prompt = user_message(build_context(insight, before))
        return Job(insight, EnrichmentKey.of(insight), prompt)

    # -- enrichment -------------------------------------------------------------------------------

    async def process(self, jobs: Sequence[Job]) -> None:
        """Enrich ``jobs`` concurrently. After all have ended, raises the first error (a
        database or broker error: the caller runs the same jobs again)."""
        results = await asyncio.gather(*(self._one(job) for job in jobs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _one(self, job: Job) -> None:
        if job.key in self._in_flight:
            self.metrics.skipped.labels(reason="duplicate").inc()
            return
        self._in_flight.add(job.key)
        try:
            async with self._semaphore:
                await self.enrich(job)
        finally:
            self._in_flight.discard(job.key)

    async def enrich(self, job: Job) -> None:
        insight, key = job.insight, job.key
        claim = await self.log.claim(key, insight)
        if claim.state is ClaimState.BUSY:
            self.metrics.skipped.labels(reason="claimed_elsewhere").inc()
            return
        if claim.state is ClaimState.DONE:
            self.metrics.skipped.labels(reason="already_enriched").inc()
            return
        if claim.state is ClaimState.UNPUBLISHED:
            assert claim.stored is not None
            logger.info("publishing the stored enrichment of insight %s", insight.insight_id)
            await self._publish(insight, key, claim.stored)
            return
        pending = self._unrecorded.get(key)
        if pending is None:
            day = self._wall_clock().astimezone(dt.UTC).date()
            reservation = await self.budget.reserve(insight.workspace_id, day)
            if not reservation.ok:
                self._tell_budget(insight.workspace_id, day, reservation)
                await self.log.finish_fallback(key, "budget", None)
                self.metrics.fallbacks.labels(reason="budget").inc()
                return
            outcome = await self._call(job)
            pending = _Unrecorded(outcome, day)
            self._unrecorded[key] = pending
        if not pending.tokens_added:
            await self.budget.add_tokens(
                insight.workspace_id, pending.day, pending.outcome.usage.total_tokens
            )
            pending.tokens_added = True
        outcome = pending.outcome
        if outcome.text is None:
            reason = outcome.failure or "server_error"
            await self.log.finish_fallback(key, reason, outcome)
            del self._unrecorded[key]
            self.metrics.fallbacks.labels(reason=reason).inc()
            logger.info(
                "insight %s keeps its rule text (%s after %d attempt(s))",
                insight.insight_id,
                reason,
                outcome.attempts,
            )
            return
        stored = StoredText(outcome.text, outcome.model)
        recorded = await self.log.finish_enriched(key, stored, outcome)
        del self._unrecorded[key]
        if recorded:
            await self._publish(insight, key, stored)

    async def _call(self, job: Job) -> CallOutcome:
        try:
            return await self.writer.write(job.prompt)
        except asyncio.CancelledError:
            # Stopping: nobody will record this call. Free the claim so that the next start
            # makes it (the outcome of a request cut off mid-way is unknown anyway).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.log.release(job.key), RELEASE_TIMEOUT_SECONDS)
            raise

    async def _publish(self, insight: InsightEvent, key: EnrichmentKey, stored: StoredText) -> None:
        await self._publish_event(enriched_event(insight, stored))
        await self.log.mark_published(key)
        self.metrics.enriched.inc()
        logger.info(
            "enriched insight %s (%s, %s) with %s",
            insight.insight_id,
            insight.rule.value,
            insight.lifecycle.value,
            stored.source,
        )

    def _tell_budget(self, workspace_id: str, day: dt.date, reservation: Reservation) -> None:
        if (workspace_id, day) in self._budget_told:
            return
        if len(self._budget_told) > 10_000:
            self._budget_told.clear()
        self._budget_told.add((workspace_id, day))
        logger.warning(
            "workspace %s reached its daily enrichment budget for %s (%s: %d calls, %d tokens "
            "used); its insights keep the rule text until the next UTC day",
            workspace_id,
            day.isoformat(),
            reservation.refused,
            reservation.calls,
            reservation.tokens,
        )


# --- the Kafka service ------------------------------------------------------------------------


async def process_or_stop(enricher: Enricher, jobs: Sequence[Job], stop: asyncio.Event) -> bool:
    """Run the jobs: True when done, False when ``stop`` came first (the calls in flight are
    cancelled and their claims released). A database or broker error is raised once every job
    has ended (the consume loop runs the batch again)."""
    work = asyncio.create_task(enricher.process(jobs), name="enrich-batch")
    stopper = asyncio.create_task(stop.wait(), name="enrich-stop")
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
        await asyncio.gather(work, stopper, return_exceptions=True)
    if work.cancelled():
        return False
    error = work.exception()
    if error is not None:
        raise error
    return True


async def _beat(log: EnrichmentStore, settings: EnricherSettings) -> None:
    """Tell the notifier that an enricher runs (see ``store.py``) for three more intervals."""
    ttl = 3 * settings.enrich_heartbeat_seconds
    try:
        await log.heartbeat(settings.enrich_min_priority, ttl_seconds=ttl)
    except RETRIABLE_ERRORS as exc:
        logger.warning("enricher heartbeat failed (%s: %s)", type(exc).__name__, exc)


async def _heartbeat(log: EnrichmentStore, settings: EnricherSettings) -> None:
    """Beat every ``enrich_heartbeat_seconds`` until cancelled."""
    while True:
        await asyncio.sleep(settings.enrich_heartbeat_seconds)
        await _beat(log, settings)


class EnricherHandler:
    """The enricher's logic for the consume loop. ``open`` builds the log, the budget and the
    ``Enricher`` on the pool (or takes ``log``/``budget`` given, e.g. in memory), publishes
    through the loop's producer (each event acknowledged before it is marked published) and
    starts the heartbeat."""

    def __init__(
        self,
        settings: EnricherSettings,
        writer: TextWriter,
        metrics: EnricherMetrics,
        *,
        log: EnrichmentStore | None = None,
        budget: Budget | None = None,
        wall_clock: WallClock = _utc_now,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.log = log
        self.budget = budget
        self._wall_clock = wall_clock
        self.enricher: Enricher | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def open(self, resources: Resources) -> None:
        settings = self.settings
        if resources.pool is not None:
            await migrate(resources.pool)
            if self.log is None:
                self.log = EnrichmentLog(
                    resources.pool, stale_after_seconds=settings.enrich_claim_stale_seconds
                )
            if self.budget is None:
                self.budget = PostgresBudget(
                    resources.pool,
                    settings.enrich_daily_calls_per_workspace,
                    settings.enrich_daily_tokens_per_workspace,
                )
        if self.log is None or self.budget is None or resources.producer is None:
            raise RuntimeError("the enricher needs a log, a budget and a producer")
        producer = resources.producer
        topic = settings.topic_insights

        async def publish(event: InsightEvent) -> None:
            await producer.send(topic, event.model_dump_json().encode(), event.deal_id.encode())

        self.enricher = Enricher(
            settings,
            self.writer,
            self.log,
            self.budget,
            publish,
            self.metrics,
            wall_clock=self._wall_clock,
        )
        await _beat(self.log, settings)  # before the first fetch: the notifier waits from now on
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(
                _heartbeat(self.log, settings), name="enricher-heartbeat"
            )

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self.log is not None and self.enricher is not None:
            with contextlib.suppress(*RETRIABLE_ERRORS):
                await self.log.deregister()

    def decode(self, records: Records) -> list[Job]:
        assert self.enricher is not None
        enricher = self.enricher
        return [
            job
            for tp, recs in records.items()
            for rec in recs
            if (job := enricher.observe(rec.value, f"{tp.topic}/{tp.partition}@{rec.offset}"))
            is not None
        ]

    async def handle(self, jobs: Sequence[Job], stop: asyncio.Event) -> Sequence[Output] | None:
        assert self.enricher is not None
        if jobs and not await process_or_stop(self.enricher, jobs, stop):
            return None
        return ()


def loop_options(settings: EnricherSettings, database: Database | None) -> LoopOptions:
    """The enricher's loop: one fetch per batch, a producer, the one outage policy."""
    return LoopOptions(
        name="enricher",
        subscription=Subscription(
            topics=(settings.topic_insights,),
            group_id=settings.enricher_group_id,
            client_id=f"{settings.kafka_client_id}-enricher",
            max_poll_interval_ms=settings.enrich_max_poll_interval_ms,
        ),
        batch_max=settings.enrich_max_batch_records,
        idle_poll_ms=settings.enrich_fetch_timeout_ms,
        publishes=True,
        topics={settings.topic_insights: settings.topic_partitions},
        database=database,
        retry_initial_seconds=settings.enrich_db_retry_seconds,
        retry_max_seconds=max(
            settings.enrich_db_retry_seconds, settings.enrich_db_retry_max_seconds
        ),
    )


async def run_enricher(
    settings: EnricherSettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    pool: PgPool | None = None,
    broker: Broker | None = None,
) -> None:
    """``vectoros enrich`` (and part of ``vectoros run``): run until ``stop`` is set.

    ``pool`` is borrowed when given (and left open). Off without a key or with
    ``VECTOROS_LLM=off``: says so once and waits. Waits for PostgreSQL and the broker as long
    as it takes (not ready meanwhile). Registers the readiness check ``enricher``.
    """
    metrics = EnricherMetrics(registry)
    off = settings.off_reason
    if off is not None:
        metrics.enabled.set(0)
        health.register("enricher", lambda: True)
        logger.info("enricher off (%s): insights keep the rule text", off)
        await stop.wait()
        return
    assert settings.anthropic_api_key is not None
    secret = settings.anthropic_api_key.get_secret_value()
    metrics.enabled.set(1)
    check_model(settings.enrich_model)
    writer: ClaudeWriter | None = None
    try:
        with redact_logs([secret], names=("anthropic", "httpx2", "httpcore", "httpx")):
            try:
                writer = ClaudeWriter.from_settings(settings, metrics)
            except ValueError as exc:  # e.g. a base URL the SDK refuses
                raise ConfigError(f"enricher: {exc}") from None
            database = Database(
                dsn=settings.dsn() if pool is None else "",
                max_size=settings.enrich_concurrency + 2,
                pool=pool,
            )
            loop = ConsumeLoop(
                EnricherHandler(settings, writer, metrics),
                broker or KafkaBroker(settings),
                loop_options(settings, database),
            )
            health.register("enricher", loop.ready)
            logger.info(
                "enricher consuming %s as group %s (once the broker and PostgreSQL answer): "
                "%s for %s+ insights, %d calls at once",
                settings.topic_insights,
                settings.enricher_group_id,
                settings.enrich_model,
                settings.enrich_min_priority.value,
                settings.enrich_concurrency,
            )
            await loop.run(stop)
    finally:
        if writer is not None:
            await writer.close()
        logger.info("enricher stopped")
