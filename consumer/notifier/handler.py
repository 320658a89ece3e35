"""The notifier's handler on the consume loop (``NotifierHandler``): select, wait for the
model's text, route (the policy, else every shared destination and the owner's own), drop what
an ack or a snooze holds (``held.py``), then deliver (``dispatch.py``) straight away or through
flood control (``flood_runner.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence

from pydantic import ValidationError

from consumer.notifier.acks import AckLookup, AckRecorder, PgAcks
from consumer.notifier.delivery import Clock, error_text
from consumer.notifier.destinations import PERSONAL, Destination
from consumer.notifier.directory import Directory
from consumer.notifier.dispatch import DB_ERRORS, Notifier
from consumer.notifier.flood_runner import FloodRunner, item_of
from consumer.notifier.held import AckFilter
from consumer.notifier.lease import FloodLease
from consumer.notifier.log import NotificationLog, NotificationStore
from consumer.notifier.metrics import (
    NotifierEnrichmentMetrics,
    NotifierMetrics,
    UsefulnessMetrics,
)
from consumer.notifier.outbox import FloodStore, PgFloodStore
from consumer.notifier.routing import DailyDigest, Hold, Holds, Policy, QuietHours
from consumer.notifier.settings import NotifierSettings
from consumer.notifier.usefulness import publish, usefulness
from schemas.acks import InsightAck
from schemas.insights import InsightEvent
from vectoros.consume_loop import Output, Records, Resources
from vectoros.db import PgPool, migrate
from vectoros.enrichments import EnrichmentLookup, PgEnrichmentLookup
from vectoros.errors import DeliveryError
from vectoros.logs import scrub

logger = logging.getLogger(__name__)

STALE_GRACE_SECONDS = 20.0
USEFULNESS_WINDOW = dt.timedelta(days=30)
_ANSWER_ERRORS: tuple[type[BaseException], ...] = (DeliveryError, *DB_ERRORS)


class NotifierHandler:
    """The notifier's logic for the consume loop: select, wait for the model's text, deliver.

    With ``notify_flood_control`` the batch goes through flood control (``flood.py``) instead
    of straight to the destinations; its state and the messages it lets out are saved
    (``outbox.py``) before the batch is committed, and a background tick (every
    ``notify_flush_tick_seconds``) sends what becomes due between batches."""

    def __init__(
        self,
        settings: NotifierSettings,
        destinations: Sequence[Destination],
        metrics: NotifierMetrics,
        stop: asyncio.Event,
        *,
        secrets: Sequence[str] = (),
        enrichment_metrics: NotifierEnrichmentMetrics | None = None,
        log: NotificationStore | None = None,
        enrichments: EnrichmentLookup | None = None,
        flood_store: FloodStore | None = None,
        wall_clock: Clock = time.time,
        policy: Policy | None = None,
        directory: Directory | None = None,
        acks: AckLookup | None = None,
        recorder: AckRecorder | None = None,
        usefulness_metrics: UsefulnessMetrics | None = None,
    ) -> None:
        self.settings = settings
        self._held = AckFilter(acks, metrics, wall_clock)
        self._recorder: AckRecorder | None = recorder
        self.policy = policy
        self.directory = directory
        self._keys_by_name = {n: d.key for d in destinations for n in d.names}
        self._destinations = list(destinations)
        self._metrics = metrics
        self._stop = stop
        self._secrets = list(secrets)
        self._enrichment_metrics = enrichment_metrics
        self._log = log
        self._enrichments = enrichments
        # without a policy: every shared destination, and the owner's own (email) ones
        self._recipients = tuple(d.key for d in self._destinations if d.kind not in PERSONAL)
        self._routed = policy is not None or len(self._recipients) < len(self._destinations)
        self.notifier: Notifier | None = None
        if log is not None:
            self.notifier = self._new_notifier(log, enrichments)
        self._zones = {  # the time zone of each person's destinations
            d.key: person.tz
            for d in self._destinations
            for name in d.names
            if name.partition(":")[0] in PERSONAL
            and directory is not None
            and (person := directory.person(name.partition(":")[2])) is not None
            and person.tz is not None
        }
        self._usefulness = usefulness_metrics
        self._refresher: asyncio.Task[None] | None = None
        self._lease: FloodLease | None = None
        self._flood = FloodRunner(
            settings,
            self._destinations,
            metrics,
            stop,
            self._held,
            wall_clock=wall_clock,
            directory=directory,
            keys_by_name=self._keys_by_name,
            store=flood_store,
        )

    @property
    def _acks(self) -> AckLookup | None:
        return self._held.lookup

    @_acks.setter
    def _acks(self, lookup: AckLookup | None) -> None:
        self._held.lookup = lookup

    def _new_notifier(
        self, log: NotificationStore, enrichments: EnrichmentLookup | None
    ) -> Notifier:
        return Notifier(
            self.settings,
            self._destinations,
            log,
            self._metrics,
            self._stop,
            secrets=self._secrets,
            enrichments=enrichments,
            enrichment_metrics=self._enrichment_metrics,
            routes=self.recipients if self._routed else None,
        )

    def _resolve(self, name: str, insight: InsightEvent) -> str | None:
        """``email:owner`` / ``email:manager`` -> ``email:<owner id>`` of this insight."""
        kind, _, who = name.partition(":")
        if kind not in PERSONAL or who not in ("owner", "manager"):
            return name
        owner = insight.data.owner_id
        person = owner if who == "owner" else (self.directory and self.directory.manager_of(owner))
        return None if not person else f"{kind}:{person}"

    def quiet_hours(self, insight: InsightEvent) -> dict[str, QuietHours]:
        """Per destination key, the quiet hours that hold ``insight`` (not urgent there)."""
        policy = self.policy
        if policy is None or not policy.quiet_hours:
            return {}
        out = {}
        for name, urgent in policy.deliveries(insight).items():
            resolved = self._resolve(name, insight)
            key = None if resolved is None else self._keys_by_name.get(resolved)
            if key is None or urgent or resolved is None:
                continue
            quiet = policy.quiet_for(name, resolved)
            if quiet is None:
                continue
            if quiet.tz is None:  # a person's: in their own time zone
                person = (
                    self.directory.person(resolved.partition(":")[2]) if self.directory else None
                )
                quiet = quiet.model_copy(update={"tz": person.tz if person else None})
            out[key] = quiet
        return out

    def holds(self, insight: InsightEvent) -> dict[str, Hold]:
        """Per destination key, what holds ``insight`` back: its quiet hours, and the daily
        digest for insights at or below ``notify_daily_digest_max_priority``."""
        out: dict[str, Hold] = dict(self.quiet_hours(insight))
        at = self.settings.notify_daily_digest_at
        if (
            at is None
            or insight.priority.rank > self.settings.notify_daily_digest_max_priority.rank
        ):
            return out
        for key in self.recipients(insight):
            digest = DailyDigest(at, self._zones.get(key, self.settings.notify_daily_digest_tz))
            quiet = out.get(key)
            out[key] = digest if quiet is None else Holds((quiet, digest))
        return out

    def recipients(self, insight: InsightEvent) -> tuple[str, ...]:
        """The keys of the destinations ``insight`` goes to (the policy's, else all)."""
        if self.policy is None:
            if not self._routed:
                return self._recipients
            own = self._keys_by_name.get(f"email:{insight.data.owner_id}")
            return self._recipients if own is None else (*self._recipients, own)
        names = (self._resolve(name, insight) for name in self.policy.route(insight))
        keys = (self._keys_by_name.get(n) for n in names if n is not None)
        return tuple(dict.fromkeys(k for k in keys if k is not None))

    async def may_join(self, pool: PgPool | None) -> str | None:
        """Before the consumer joins its group (``vectoros.consume_loop.JoinGate``): with flood
        control on PostgreSQL, only the instance holding the group's lock (``lease.py``) runs;
        the others stand by until it is free."""
        if not self.settings.notify_flood_control or pool is None or self._flood.store is not None:
            return None  # no flood control, or a store given (tests): nothing shared to guard
        if self._lease is None:
            self._lease = FloodLease(pool, self.settings.notifier_group_id)
        if await self._lease.take():
            self._flood.lease = self._lease
            return None
        return (
            f"flood control of consumer group {self.settings.notifier_group_id} is run by "
            "another notifier instance (PostgreSQL advisory lock); taking over when it stops"
        )

    async def open(self, resources: Resources) -> None:
        """Migrate, then the notification and enrichment logs on the pool (unless given); with
        flood control, load its state and undelivered messages and start the tick."""
        if self.notifier is None:
            pool = resources.pool
            if pool is None:
                raise RuntimeError("the notifier needs a database")
            await migrate(pool)
            log = NotificationLog(
                pool,
                stale_after_seconds=self.settings.notify_http_timeout_seconds + STALE_GRACE_SECONDS,
            )
            self.notifier = self._new_notifier(log, PgEnrichmentLookup(pool))
            if self._flood.store is None and self.settings.notify_flood_control:
                self._flood.store = PgFloodStore(pool, self.settings.notifier_group_id)
            if self._held.lookup is None:
                self._held.lookup = PgAcks(pool)
            if self._recorder is None:
                self._recorder = PgAcks(pool)
            for dest in self._destinations:
                if dest.bind is not None:
                    dest.bind(pool)
            if self._usefulness is not None and self.settings.notify_usefulness_refresh_seconds:
                self._refresher = asyncio.create_task(self._refresh_usefulness(pool))
        if self.settings.notify_flood_control:
            await self._flood.start(self.notifier)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        await self._flood.close()
        if self._lease is not None:
            try:
                await self._lease.release()
            except DB_ERRORS as exc:  # the connection is gone: so is the lock
                logger.info(
                    "flood control lock not released (%s); it went with its connection", exc
                )

    async def _refresh_usefulness(self, pool: PgPool) -> None:
        """Every ``notify_usefulness_refresh_seconds``: the usefulness gauges, last 30 days."""
        assert self._usefulness is not None
        seconds = self.settings.notify_usefulness_refresh_seconds
        while not self._stop.is_set():
            since = dt.datetime.now(dt.UTC) - USEFULNESS_WINDOW
            try:
                publish(self._usefulness, await usefulness(pool, since))
            except DB_ERRORS as exc:
                logger.warning("usefulness gauges not refreshed (database: %s)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)

    def decode(self, records: Records) -> list[InsightEvent | InsightAck]:
        """The batch's insights worth announcing and, from ``insight-acks``, its answers."""
        assert self.notifier is not None
        out: list[InsightEvent | InsightAck] = []
        for tp, recs in records.items():
            for rec in recs:
                where = f"{tp.topic}/{tp.partition}@{rec.offset}"
                if tp.topic == self.settings.topic_acks:
                    ack = self._ack(rec.value, where)
                    if ack is not None:
                        out.append(ack)
                elif (insight := self.notifier.select(rec.value, where)) is not None:
                    out.append(insight)
        return out

    def _ack(self, value: bytes | None, where: str) -> InsightAck | None:
        try:
            return InsightAck.model_validate_json(value or b"")
        except ValidationError as exc:
            self._metrics.skipped.labels(reason="invalid_ack").inc()
            logger.warning(
                "skipping an invalid ack event (%s): %d error(s)", where, exc.error_count()
            )
            return None

    async def handle(
        self, batch: Sequence[InsightEvent | InsightAck], stop: asyncio.Event
    ) -> Sequence[Output] | None:
        """Store the batch's answers first (so its insights already see them), then announce."""
        assert self.notifier is not None
        acks = [a for a in batch if isinstance(a, InsightAck)]
        if acks:
            if self._recorder is None:
                raise RuntimeError("acks need a database")
            await self._recorder.record(acks)
            rules = await self._recorder.rules_of({a.insight_id for a in acks})
            await self._show_answers(acks)
            for ack in acks:
                self._metrics.acks.labels(source=ack.source.value, state=ack.state.value).inc()
                rule = rules.get(ack.insight_id)
                if rule is not None:
                    self._metrics.answers.labels(rule=rule, state=ack.state.value).inc()
        insights = [i for i in batch if isinstance(i, InsightEvent)]
        if not insights:
            return ()
        ready = await self.notifier.with_enrichments(insights)
        if self.policy is not None:
            routed = [i for i in ready if self.recipients(i)]
            if len(routed) < len(ready):
                self._metrics.skipped.labels(reason="unrouted").inc(len(ready) - len(routed))
            ready = routed
        ready = await self._held.insights(ready)
        if self._flood.flood is None:
            if not await self.notifier.process(ready):
                return None
            return ()
        await self._flood.offer([(item_of(i), self.recipients(i), self.holds(i)) for i in ready])
        if not await self._flood.drain():
            return None
        return ()

    async def _show_answers(self, acks: Sequence[InsightAck]) -> None:
        """Redraw the Slack app messages of the answered insights (best effort: a failure is
        logged; the answer itself is stored and holds either way)."""
        for dest in self._destinations:
            if dest.show_answer is None:
                continue
            for ack in acks:
                try:
                    await dest.show_answer(ack)
                except _ANSWER_ERRORS as exc:
                    logger.warning(
                        "answer to insight %s not shown on %s: %s",
                        ack.insight_id,
                        dest.label,
                        scrub(error_text(exc), self._secrets),
                    )

    async def drain(self) -> bool:
        """Deliver flood control's outbox in order; False when the stop event came first."""
        return await self._flood.drain()

    async def tick(self) -> None:
        """Send what became due since the last batch (called every flush tick)."""
        await self._flood.tick()
