"""Selection and delivery of single notifications (``Notifier``), no Kafka in here.

Selection (metric ``vectoros_notifier_skipped_total{reason}``):

- ``lifecycle``: only ``raised`` and ``escalated`` are announced, plus ``resolved`` with
  ``notify_resolved``. Any other lifecycle (e.g. a later ``enriched``, which re-publishes better
  text for an insight already announced) is skipped without being parsed further.
- ``below_threshold``: priority below ``notify_min_priority`` (default high).
- ``invalid``: not a valid insight event (logged with topic/partition/offset, then skipped).
- ``already_sent`` / ``already_failed``: the log has a final outcome for this destination.
- ``claimed_elsewhere``: another notifier (after a rebalance) took over the delivery.

Grouping window for the model's text: while an enricher runs (it announces itself in table
``enricher_instances``), the raised and escalated insights of a batch that it enriches (at or
above its ``enrich_min_priority``) are held up to ``notify_enrichment_window_seconds`` (default
10 s) from when the batch was read, until the enrichment log (table ``enrichments``) has the
outcome of each. An insight the model rewrote is sent with that text (title, description,
actions, source); one the enricher gave up on, or still waiting when the window ends, is sent
with the rule text. No enricher running (no key, ``VECTOROS_LLM=off``) or a window of 0 means
no wait at all; an unreadable log is treated as "no enrichment". Metric:
``vectoros_notifier_enrichment_waits_total{status}``.

Delivery: every destination concurrently, each in order, at most once per the notification
log (``log.py``); retries, rate limits and circuit breakers from ``delivery.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import orjson
from pydantic import ValidationError

from consumer.notifier.delivery import (
    CircuitBreaker,
    Clock,
    DeliveryResult,
    InvalidDestination,
    Random,
    RateLimiter,
    RetryPolicy,
    Sleep,
    deliver,
    error_text,
    status_code_of,
)
from consumer.notifier.destinations import Destination
from consumer.notifier.flood import Message
from consumer.notifier.log import ClaimState, NotificationRef, NotificationStore
from consumer.notifier.metrics import NotifierEnrichmentMetrics, NotifierMetrics
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.webhook import webhook_id
from schemas.insights import InsightEvent, Lifecycle, Priority, insight_adapter
from vectoros.db import TRANSIENT_ERRORS
from vectoros.enrichments import EnrichmentKey, EnrichmentLookup, Outcome
from vectoros.errors import DeliveryError
from vectoros.logs import scrub

logger = logging.getLogger(__name__)

BUSY_POLL_SECONDS = 0.5
ENRICHMENT_POLL_SECONDS = 0.2
DB_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)
RANK_NAMES = {p.rank: p.value for p in Priority}


@dataclass(frozen=True)
class NotificationMeta:
    """What the log stores next to a notification's key (for operators and reports)."""

    workspace_id: str
    deal_id: str
    rule: str
    priority: str


class Stopping(Exception):
    """Raised by the service's sleep when the stop event is set."""


class _Hooks:
    """Reports attempts of one notification to the log."""

    def __init__(
        self, log: NotificationStore, ref: NotificationRef, secrets: Sequence[str]
    ) -> None:
        self._log = log
        self._ref = ref
        self._secrets = list(secrets)

    async def begin_attempt(self) -> bool:
        return await self._log.begin_attempt(self._ref)

    async def attempt_failed(self, error: DeliveryError) -> None:
        text = scrub(error_text(error), self._secrets)
        await self._log.attempt_failed(self._ref, status_code_of(error), text)


class Notifier:
    """Selection and delivery of insight events; no Kafka in here (see :func:`run_notifier`)."""

    def __init__(
        self,
        settings: NotifierSettings,
        destinations: Sequence[Destination],
        log: NotificationStore,
        metrics: NotifierMetrics,
        stop: asyncio.Event,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        rand: Random = random.random,
        secrets: Sequence[str] = (),
        enrichments: EnrichmentLookup | None = None,
        enrichment_metrics: NotifierEnrichmentMetrics | None = None,
        routes: Callable[[InsightEvent], Collection[str]] | None = None,
    ) -> None:
        self.settings = settings
        self._routes = routes  # the destination keys of an insight (None: every destination)
        self.enrichments = enrichments
        self.enrichment_metrics = enrichment_metrics
        self.destinations = list(destinations)
        self.log = log
        self.metrics = metrics
        self._stop = stop
        self._clock = clock
        self._sleep: Sleep = sleep or self._stoppable_sleep
        self._rand = rand
        self._secrets = list(secrets)
        self.policy = RetryPolicy(
            max_attempts=settings.notify_max_attempts,
            base_seconds=settings.notify_backoff_base_seconds,
            cap_seconds=settings.notify_backoff_cap_seconds,
            retry_after_max_seconds=settings.notify_retry_after_max_seconds,
        )
        self.limiter = RateLimiter(clock, self._sleep)
        self._breakers = {
            d.key: CircuitBreaker(
                settings.notify_circuit_failures, settings.notify_circuit_open_seconds, clock
            )
            for d in self.destinations
        }
        notified = {Lifecycle.RAISED.value, Lifecycle.ESCALATED.value}
        if settings.notify_resolved:
            notified.add(Lifecycle.RESOLVED.value)
        self._lifecycles = frozenset(notified)
        # Outcomes known in this process but not yet in the log (a database error came between).
        self._unrecorded: dict[NotificationRef, DeliveryResult] = {}
        # Requests whose outcome this process does not know (cancelled while on the wire).
        self._uncertain: set[NotificationRef] = set()

    async def _stoppable_sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            raise Stopping
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
            raise Stopping

    # -- selection ------------------------------------------------------------------------------

    def select(self, value: bytes | None, where: str = "") -> InsightEvent | None:
        """The insight event in ``value`` if it is to be announced, else None (metric counted)."""
        try:
            raw = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            raw = None
        if not isinstance(raw, dict):
            self.metrics.skipped.labels(reason="invalid").inc()
            logger.warning("skipping a record that is not a JSON object (%s)", where)
            return None
        if raw.get("lifecycle") not in self._lifecycles:
            self.metrics.skipped.labels(reason="lifecycle").inc()
            return None
        try:
            insight = insight_adapter.validate_python(raw)
        except ValidationError as exc:
            self.metrics.skipped.labels(reason="invalid").inc()
            logger.warning(
                "skipping an invalid insight event (%s): %d error(s), first: %s",
                where,
                exc.error_count(),
                exc.errors(include_input=False, include_url=False)[0]["msg"],
            )
            return None
        if insight.priority.rank < self.settings.notify_min_priority.rank:
            self.metrics.skipped.labels(reason="below_threshold").inc()
            return None
        return insight

    # -- the model's text -------------------------------------------------------------------------

    async def with_enrichments(self, insights: Sequence[InsightEvent]) -> list[InsightEvent]:
        """``insights``, those the enricher rewrote with its text; waits up to the grouping
        window for them (see the module docstring). Never raises for the log's sake."""
        window = self.settings.notify_enrichment_window_seconds
        if self.enrichments is None or window <= 0 or not insights:
            return list(insights)
        started = self._clock()
        try:
            floor = await self.enrichments.live_min_priority()
        except DB_ERRORS as exc:
            logger.warning("enrichment log unreadable (%s); sending the rule text", exc)
            return list(insights)
        if floor is None:
            return list(insights)
        held = {
            EnrichmentKey.of(i)
            for i in insights
            if i.lifecycle in (Lifecycle.RAISED, Lifecycle.ESCALATED)
            and i.priority.rank >= floor.rank
        }
        if not held:
            return list(insights)
        logger.debug("holding %d notification(s) for the model's text", len(held))
        found: dict[EnrichmentKey, Outcome] = {}
        unavailable = False
        while True:
            try:
                found.update(await self.enrichments.outcomes([k for k in held if k not in found]))
            except DB_ERRORS as exc:
                logger.warning("enrichment log unreadable (%s); sending the rule text", exc)
                unavailable = True
                break
            remaining = started + window - self._clock()
            if len(found) == len(held) or remaining <= 0:
                break
            try:
                await self._sleep(min(ENRICHMENT_POLL_SECONDS, remaining))
            except Stopping:
                break  # process() sees the stop event and leaves the batch uncommitted
        self._count_waits(held, found, unavailable, self._clock() - started)
        out = []
        for insight in insights:
            outcome = found.get(EnrichmentKey.of(insight))
            if outcome is not None and outcome.stored is not None:
                insight = outcome.stored.apply(insight)
            out.append(insight)
        return out

    def _count_waits(
        self,
        held: set[EnrichmentKey],
        found: Mapping[EnrichmentKey, Outcome],
        unavailable: bool,
        waited: float,
    ) -> None:
        metrics = self.enrichment_metrics
        if metrics is None:
            return
        metrics.wait_seconds.observe(max(0.0, waited))
        for key in held:
            outcome = found.get(key)
            if outcome is not None:
                metrics.waits.labels(status=outcome.status).inc()
            else:
                metrics.waits.labels(status="unavailable" if unavailable else "timeout").inc()

    # -- delivery -------------------------------------------------------------------------------

    async def process(self, insights: Sequence[InsightEvent]) -> bool:
        """Deliver ``insights`` to every destination and record the outcomes.

        True when all are recorded; False when the stop event interrupted the batch (nothing
        is lost: the unrecorded rest is redone on the next start). A database error is raised
        once every destination has stopped; running the same batch again then resends nothing
        already delivered (the log, and the outcomes kept in memory until recorded).
        """
        if not insights:
            return True
        results = await asyncio.gather(
            *(self._run_destination(d, insights) for d in self.destinations),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return True
        for error in errors:
            if not isinstance(error, (Stopping, *DB_ERRORS)):
                raise error  # a bug, or a cancellation: crash loudly rather than loop
        if any(isinstance(e, Stopping) for e in errors) or self._stop.is_set():
            return False
        raise errors[0]

    async def _run_destination(self, dest: Destination, insights: Sequence[InsightEvent]) -> None:
        for insight in insights:
            if self._stop.is_set():
                raise Stopping
            if self._routes is not None and dest.key not in self._routes(insight):
                continue
            await self.notify(dest, insight)

    async def notify(self, dest: Destination, insight: InsightEvent) -> None:
        """Deliver one insight to one destination, at most once per the log."""
        ref = NotificationRef(insight.insight_id, insight.lifecycle.value, dest.key)
        meta = NotificationMeta(
            insight.workspace_id, insight.deal_id, insight.rule.value, insight.priority.value
        )

        async def send(msg_id: str) -> None:
            await dest.send(insight, msg_id)

        await self._deliver(dest, ref, meta, send)

    async def notify_message(self, dest: Destination, message: Message) -> None:
        """Deliver one flood-control message to its destination, at most once per the log
        (keyed by the message id; ``lifecycle`` is the message's kind)."""
        ref = NotificationRef(message.message_id, message.kind, dest.key)
        first = max(message.items, key=lambda i: i.rank) if message.items else None
        rank = max((r for r, _ in message.by_rank), default=first.rank if first else 0)
        meta = NotificationMeta(
            message.workspace_id,
            first.deal_id if first and len(message.items) == 1 else "*",
            first.rule if first and len(message.items) == 1 else message.kind,
            RANK_NAMES.get(rank, "high"),
        )
        send_message = dest.send_message
        if send_message is None:  # every built destination has one
            raise RuntimeError(f"{dest.label} cannot send flood-control messages")

        async def send(msg_id: str) -> None:
            await send_message(message, msg_id)

        await self._deliver(dest, ref, meta, send)

    async def _deliver(
        self,
        dest: Destination,
        ref: NotificationRef,
        meta: NotificationMeta,
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        known = self._unrecorded.get(ref)
        if known is not None:
            await self._record(dest, ref, known)
            return
        while True:
            claim = await self.log.claim(
                ref,
                destination_type=dest.kind,
                destination_label=dest.label,
                workspace_id=meta.workspace_id,
                deal_id=meta.deal_id,
                rule=meta.rule,
                priority=meta.priority,
                own_requests_settled=ref not in self._uncertain,
            )
            if claim.state is not ClaimState.BUSY:
                break
            await self._sleep(BUSY_POLL_SECONDS)
        if claim.state is ClaimState.SENT:
            self.metrics.skipped.labels(reason="already_sent").inc()
            return
        if claim.state is ClaimState.FAILED:
            self.metrics.skipped.labels(reason="already_failed").inc()
            return
        self._uncertain.discard(ref)
        if claim.state is ClaimState.UNKNOWN_OUTCOME and dest.at_most_once:
            result = DeliveryResult(
                "failed",
                claim.attempts,
                "unknown_outcome",
                None,
                "a notifier stopped mid-request; the message may or may not have arrived and "
                "is not resent (at-most-once destination)",
            )
            self._count(dest, result)
            await self._record(dest, ref, result)
            return
        if claim.state is ClaimState.UNKNOWN_OUTCOME:
            logger.info(
                "resending insight %s (%s) to %s: a previous attempt's outcome is unknown",
                ref.insight_id,
                ref.lifecycle,
                dest.label,
            )
        breaker = self._breakers[dest.key]
        if breaker.is_open:
            result = DeliveryResult(
                "failed", claim.attempts, "circuit_open", None, "destination circuit open"
            )
            self._count(dest, result)
            await self._record(dest, ref, result)
            return

        msg_id = webhook_id(ref.insight_id, ref.lifecycle, dest.key)

        async def attempt() -> None:
            self._uncertain.add(ref)
            try:
                await send(msg_id)
            except DeliveryError:
                self._uncertain.discard(ref)
                raise
            except Exception as exc:  # a bug building the payload: record it, do not loop
                self._uncertain.discard(ref)
                logger.exception("cannot build the notification for %s", dest.label)
                raise InvalidDestination(f"internal error: {type(exc).__name__}") from exc
            self._uncertain.discard(ref)

        started = time.perf_counter()
        result = await deliver(
            attempt,
            key=dest.key,
            min_interval=dest.min_interval,
            at_most_once=dest.at_most_once,
            policy=self.policy,
            limiter=self.limiter,
            hooks=_Hooks(self.log, ref, self._secrets),
            sleep=self._sleep,
            rand=self._rand,
            on_retry=self.metrics.retries.labels(destination=dest.kind).inc,
        )
        if result.outcome == "lost_claim":
            self.metrics.skipped.labels(reason="claimed_elsewhere").inc()
            logger.info(
                "insight %s (%s) for %s was taken over by another notifier",
                ref.insight_id,
                ref.lifecycle,
                dest.label,
            )
            return
        if result.outcome == "sent":
            breaker.record_success()
            self.metrics.delivery_seconds.labels(destination=dest.kind).observe(
                time.perf_counter() - started
            )
        elif result.kind == "exhausted":
            breaker.record_exhausted()
        self._count(dest, result)
        await self._record(dest, ref, result)

    def _count(self, dest: Destination, result: DeliveryResult) -> None:
        if result.outcome == "sent":
            self.metrics.sent.labels(destination=dest.kind).inc()
        else:
            self.metrics.failed.labels(destination=dest.kind, kind=result.kind or "unknown").inc()

    async def _record(
        self, dest: Destination, ref: NotificationRef, result: DeliveryResult
    ) -> None:
        self._unrecorded[ref] = result
        error = scrub(result.error, self._secrets) if result.error else None
        if result.outcome == "sent":
            await self.log.mark_sent(ref)
            logger.info(
                "notified %s: insight %s (%s) after %d attempt(s)",
                dest.label,
                ref.insight_id,
                ref.lifecycle,
                result.attempts,
            )
        else:
            await self.log.mark_failed(ref, result.kind or "unknown", result.status_code, error)
            logger.warning(
                "notification to %s failed for good (%s): insight %s (%s), %d attempt(s): %s",
                dest.label,
                result.kind,
                ref.insight_id,
                ref.lifecycle,
                result.attempts,
                error,
            )
        del self._unrecorded[ref]
