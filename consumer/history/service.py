"""The history service: ``deal-events`` into the ``deal_history`` projection in PostgreSQL.

A ``HistoryHandler`` on the consume loop (``vectoros.consume_loop``), in its own consumer group,
beside the monitor: fetch a batch of deal events, record the new ones and recompute the deals
they touch in one transaction (``consumer.history.store``), then commit the offsets. Replays
and redeliveries change nothing. Ticks only start the periodic rescoring (below); a message
that is not a valid deal event is counted and skipped (the monitor dead-letters it with the
reason). Outages of the broker or PostgreSQL are the loop's: wait, retry the same batch, never
exit.

Beside the loop, the learned stage benchmarks (``stage_benchmarks``) are refreshed once at
start and then every ``history_benchmarks_refresh_seconds``.

Scoring (``history_scoring``): once a model is current (``vectoros train``), every open deal a
batch changed is scored in one batch call, as of just after its latest event; the scores go to
``deal_scores`` and, before the batch is committed, to ``deal-scores``. With
``history_model_rules`` (the default) the model-based rules run on every score and on the deals
the batch closed, in the same connection (``consumer.history.watch_store``: their state in
``model_watch``, their insights through ``model_insight_outbox`` to the insights topic, sent
until the next batch is handled). With ``history_scores_to_events`` instead, the scores that
differ enough from the deal's last published one (``consumer.intelligence.scoring.
worth_publishing``: a new model, a probability ``history_score_publish_points`` away, a P10
``history_score_publish_days`` away or across the rep's close date) also go to ``deal-events``
as ``deal.scored`` events, keyed by deal id like the deal's own events: on the deal's partition,
after the events they reflect, where the monitor folds them into the deal's state (this service
skips them when it reads them back). The current model and the owners' records are looked up at
start and every ``history_model_refresh_seconds``. Time changes features too (days since the
last activity, in the stage, to the close date): the first tick of each
``history_rescore_hours`` period of tick time scores every open deal again as of the period's
start, in one batch call (deterministic on replay; a restart scores the current period once
more, which changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumer.history import models, store, watch_store
from consumer.history.metrics import HistoryMetrics
from consumer.history.model_rules import closed as is_closed
from consumer.history.settings import HistorySettings
from consumer.history.train import retrain_if_due
from consumer.intelligence.features import OwnerRecord
from consumer.intelligence.projection import DealHistory
from consumer.intelligence.scoring import score_deals, score_event
from consumer.templates import Insight
from consumer.thresholds import RulesConfig
from schemas.events import DealEvent, DealScored, Tick, encode_event, event_adapter
from schemas.scores import DealScore
from vectoros.consume_loop import (
    OUTAGE_ERRORS,
    Broker,
    ConsumeLoop,
    Database,
    KafkaBroker,
    LoopOptions,
    Output,
    Records,
    Resources,
    Subscription,
    stopped_within,
)
from vectoros.db import PgPool, describe_dsn, migrate
from vectoros.ops_server import Health

logger = logging.getLogger(__name__)

IDLE_POLL_MS = 500
RETRY_JITTER = 0.2


@dataclass(frozen=True)
class Retrain:
    """When the service trains a new model by itself (``consumer.history.train.due``)."""

    after_outcomes: int = 200
    every_seconds: float = 7 * 86_400
    check_seconds: float = 600
    holdout_days: float = 90


class EventBatch(list[DealEvent]):
    """The deal events of a fetched batch, and the latest tick time in it (0: none)."""

    tick_ms: int = 0


def decode_batch(records: Records, metrics: HistoryMetrics | None = None) -> EventBatch:
    """The deal events of a batch; ticks and scores (``deal.scored``: this service's own
    output, not a change of the deal) dropped, invalid messages counted and skipped."""
    events = EventBatch()
    for recs in records.values():
        for rec in recs:
            if rec.value is None:
                continue
            try:
                event = event_adapter.validate_json(rec.value)
            except (ValidationError, ValueError):
                if metrics is not None:
                    metrics.skipped.inc()
                logger.debug(
                    "skipping a message that is not a deal event at %s[%d]@%d",
                    rec.topic,
                    rec.partition,
                    rec.offset,
                )
                continue
            if isinstance(event, Tick):
                events.tick_ms = max(events.tick_ms, round(event.at.timestamp() * 1000))
            elif not isinstance(event, DealScored):
                events.append(event)
    return events


class HistoryHandler:
    """The history's logic for the consume loop: one transaction per batch."""

    def __init__(
        self,
        metrics: HistoryMetrics,
        *,
        migrate_on_start: bool = True,
        refresh_seconds: float | None = None,
        scores_topic: str | None = None,
        events_topic: str | None = None,
        rescore_ms: int = 0,
        model_refresh_seconds: float = 300,
        retrain: Retrain | None = None,
        publish_points: float = 0.0,
        publish_days: int = 0,
        insights_topic: str | None = None,
        rules: RulesConfig | None = None,
    ) -> None:
        self.metrics = metrics
        self.pool: PgPool | None = None
        self._migrate = migrate_on_start
        self._refresh_seconds = refresh_seconds
        self._scores_topic = scores_topic
        self._events_topic = events_topic  # where scores also go as deal.scored events
        self._publish_points = publish_points  # ... when this far from the last one published
        self._publish_days = publish_days
        self._insights_topic = insights_topic  # where the model rules' insights go
        self._rules = rules or RulesConfig()
        self._outbox = watch_store.Outbox()
        self._rescore_ms = rescore_ms  # rescore every open deal once per this much tick time
        self._rescored_at = 0  # the last rescoring's time (a multiple of rescore_ms)
        self._model_refresh_seconds = model_refresh_seconds
        self._retrain = retrain
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.model: models.StoredModel | None = None  # the pooled one
        self.models: dict[str, models.StoredModel] = {}  # every scope's current one
        self.owners = OwnerRecord()

    async def open(self, resources: Resources) -> None:
        if resources.pool is None:
            raise RuntimeError("the history service needs PostgreSQL")
        self.pool = resources.pool
        if self._migrate:
            await migrate(self.pool)
        if self._tasks:
            return
        if self._refresh_seconds is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._every(self._refresh_seconds, self.refresh_benchmarks, "stage benchmarks")
                )
            )
        if self._scores_topic is not None:
            await self.load_model()
            self._tasks.append(
                asyncio.create_task(
                    self._every(self._model_refresh_seconds, self.load_model, "current model")
                )
            )
        if self._retrain is not None and self._retrain.after_outcomes > 0:
            self._tasks.append(
                asyncio.create_task(
                    self._every(self._retrain.check_seconds, self.retrain_if_due, "retraining")
                )
            )

    async def retrain_if_due(self) -> None:
        """Outcome learning: a new model when enough deals closed (or the last is old)."""
        assert self.pool is not None
        assert self._retrain is not None
        r = self._retrain
        result = await retrain_if_due(
            self.pool,
            after_outcomes=r.after_outcomes,
            every_seconds=r.every_seconds,
            holdout_days=r.holdout_days,
        )
        if result is not None:
            self.metrics.retrainings.labels(promoted=str(result.promoted).lower()).inc()
            if self._scores_topic is not None:  # a workspace's own model may be new too
                await self.load_model()

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def load_model(self) -> None:
        """The current models (pooled, and per workspace) and the owners' records, looked up
        again."""
        assert self.pool is not None
        current = await models.current_models(self.pool)
        self.owners = await models.owner_record(self.pool)
        before = {scope: m.version for scope, m in self.models.items()}
        if {scope: m.version for scope, m in current.items()} != before:
            logger.info(
                "scoring open deals with model versions %s",
                ", ".join(f"{scope} {m.version}" for scope, m in sorted(current.items())),
            )
        self.models = current
        self.model = current.get("pooled")

    def score(self, histories: Sequence[DealHistory], at_ms: int | None = None) -> list[DealScore]:
        """Each deal scored by its workspace's own model when it has one, else the pooled one;
        one batch call per model."""
        groups: dict[int, tuple[models.StoredModel, list[DealHistory]]] = {}
        for h in histories:
            m = self.models.get(models.workspace_scope(h.workspace_id)) or self.model
            if m is not None:
                groups.setdefault(m.version, (m, []))[1].append(h)
        out: list[DealScore] = []
        for m, group in groups.values():
            out += score_deals(m.model, m.version, group, self.owners, at_ms=at_ms)
        return out

    def decode(self, records: Records) -> EventBatch:
        events = decode_batch(records, self.metrics)
        self.metrics.events_consumed.inc(len(events))
        return events

    async def handle(self, events: list[DealEvent], stop: asyncio.Event) -> Sequence[Output]:
        tick_ms = getattr(events, "tick_ms", 0)
        rescore_at = 0
        if self._rescore_ms and tick_ms:
            rescore_at = tick_ms // self._rescore_ms * self._rescore_ms
            if rescore_at <= self._rescored_at:
                rescore_at = 0
        scoring = self._scores_topic is not None and (self.model is not None or self.models)
        watching = self._insights_topic is not None
        if not events and not (rescore_at and scoring) and not watching:
            return ()
        assert self.pool is not None
        started = time.perf_counter()
        scores: list[DealScore] = []
        published: list[DealScore] = []
        insights: list[Insight] = []
        pending: list[watch_store.Pending] = []
        result = store.WriteResult()
        try:
            async with self.pool.acquire() as conn:
                if events:
                    result = await store.write_events(conn, events)
                scored = list(result.histories)
                if scoring:
                    scores = self.score(scored)
                    if rescore_at:  # time changed every open deal's features: all of them again
                        open_deals = await store.load_open_histories(conn)
                        scores += self.score(open_deals, at_ms=rescore_at)
                        scored += open_deals
                    if self._events_topic is not None:
                        closes = {(h.workspace_id, h.deal_id): h.close_date for h in scored}
                        published = await models.scores_to_publish(
                            conn,
                            scores,
                            min_points=self._publish_points,
                            min_days=self._publish_days,
                            rep_close=closes,
                        )
                    await models.upsert_scores(conn, scores, published)
                if watching:  # the model rules, on the scores and the closed deals
                    deals = {(h.workspace_id, h.deal_id): h for h in scored}
                    ended = [h for h in result.histories if is_closed(h)]
                    insights = await watch_store.apply(conn, scores, deals, ended, self._rules)
                    pending = await self._outbox.pending(conn, events)
        except OUTAGE_ERRORS:
            self.metrics.db_errors.inc()
            raise
        if rescore_at and scoring:
            self._rescored_at = rescore_at
            logger.info("open deals scored again as of %s", _utc(rescore_at))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.events_recorded.inc(result.events_inserted)
        self.metrics.deals_written.inc(result.deals_written)
        self.metrics.deals_scored.inc(len(scores))
        topic = self._scores_topic or ""
        out = [Output(topic, s.model_dump_json().encode(), s.deal_id.encode()) for s in scores]
        if self._events_topic is not None:  # the monitor needs only the scores that matter
            out += [
                Output(self._events_topic, encode_event(score_event(s)), s.deal_id.encode())
                for s in published
            ]
            self.metrics.scores_to_events.inc(len(published))
        for insight in insights:
            self.metrics.model_insights.labels(insight.rule.value, insight.lifecycle.value).inc()
        if self._insights_topic is not None:
            out += [Output(self._insights_topic, p.value, p.deal_id.encode()) for p in pending]
        return out

    async def refresh_benchmarks(self) -> None:
        assert self.pool is not None
        await store.refresh_benchmarks(self.pool)
        self.metrics.benchmark_refreshes.inc()

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]], what: str) -> None:
        while True:
            try:
                await work()
                logger.debug("%s refreshed", what)
            except OUTAGE_ERRORS as exc:
                logger.warning(
                    "could not refresh the %s (%s: %s); trying again in %.0fs",
                    what,
                    type(exc).__name__,
                    exc,
                    seconds,
                )
            if await stopped_within(self._stop, seconds):
                return


HistoryService = ConsumeLoop[list[DealEvent]]


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def loop_options(settings: HistorySettings, pool: PgPool | None = None) -> LoopOptions:
    return LoopOptions(
        name="history",
        subscription=Subscription(
            topics=(settings.topic_events,),
            group_id=settings.history_group_id,
            client_id=f"{settings.kafka_client_id}-history",
        ),
        batch_max=settings.history_batch_max,
        flush_ms=settings.history_flush_ms,
        idle_poll_ms=IDLE_POLL_MS,
        read_ahead=True,
        publishes=settings.history_scoring or settings.history_model_rules,
        topics={
            settings.topic_events: settings.topic_partitions,
            **(
                {settings.topic_scores: settings.topic_partitions}
                if settings.history_scoring
                else {}
            ),
            **(
                {settings.topic_insights: settings.topic_partitions}
                if settings.history_model_rules
                else {}
            ),
        },
        database=Database(
            dsn=settings.dsn() if pool is None else "",
            max_size=settings.db_pool_max_size,
            command_timeout=settings.db_command_timeout_seconds,
            pool=pool,
        ),
        retry_initial_seconds=settings.db_retry_initial_seconds,
        retry_max_seconds=settings.db_retry_max_seconds,
        retry_jitter=RETRY_JITTER,
    )


def history_loop(
    settings: HistorySettings, metrics: HistoryMetrics, broker: Broker | None = None
) -> HistoryService:
    handler = HistoryHandler(
        metrics,
        migrate_on_start=settings.history_migrate_on_start,
        refresh_seconds=settings.history_benchmarks_refresh_seconds,
        scores_topic=settings.topic_scores if settings.history_scoring else None,
        events_topic=(
            settings.topic_events
            if settings.history_scoring and settings.history_scores_to_events
            else None
        ),
        rescore_ms=round(settings.history_rescore_hours * 3_600_000),
        model_refresh_seconds=settings.history_model_refresh_seconds,
        retrain=Retrain(
            after_outcomes=settings.history_retrain_after_outcomes,
            every_seconds=settings.history_retrain_every_seconds,
            check_seconds=settings.history_retrain_check_seconds,
            holdout_days=settings.history_holdout_days,
        ),
        publish_points=settings.history_score_publish_points,
        publish_days=settings.history_score_publish_days,
        insights_topic=settings.topic_insights if settings.history_model_rules else None,
        rules=RulesConfig.load(settings.rules_file),
    )
    return ConsumeLoop(handler, broker or KafkaBroker(settings), loop_options(settings))


async def run_history(
    settings: HistorySettings,
    registry: CollectorRegistry,
    health: Health,
    stop: asyncio.Event,
    *,
    on_service: Callable[[HistoryService], None] | None = None,
    broker: Broker | None = None,
) -> None:
    """``vectoros history``: run until ``stop`` is set (readiness check ``history``)."""
    service = history_loop(settings, HistoryMetrics(registry), broker)
    health.register("history", service.ready)
    if on_service is not None:
        on_service(service)
    logger.info(
        "history consuming %s as group %s into PostgreSQL at %s (once both answer)",
        settings.topic_events,
        settings.history_group_id,
        describe_dsn(settings.dsn()),
    )
    try:
        await service.run(stop)
    finally:
        logger.info("history stopped")
