"""Flood control wired to the notifier (``FloodRunner``): the pure ``FloodControl`` (``flood.py``)
fed with each batch, its state and the messages it lets out saved (``outbox.py``) before the
batch is committed, the outbox delivered in order, the manager escalations of critical insights
nobody acknowledged, and a background tick (every ``notify_flush_tick_seconds``) that sends what
becomes due between batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import orjson

from consumer.notifier.delivery import Clock
from consumer.notifier.destinations import Destination
from consumer.notifier.digest import insight_of
from consumer.notifier.directory import Directory
from consumer.notifier.dispatch import DB_ERRORS, Notifier, Stopping
from consumer.notifier.flood import FloodControl, Item, Message
from consumer.notifier.held import AckFilter
from consumer.notifier.lease import FloodLease
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.outbox import FloodStore
from consumer.notifier.routing import Hold
from consumer.notifier.settings import NotifierSettings
from schemas.insights import InsightEvent, Priority
from vectoros.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

CRITICAL = Priority.CRITICAL.rank
_TICK_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, DatabaseUnavailable)

Offer = tuple[Item, tuple[str, ...], Mapping[str, Hold]]  # recipients, holds per recipient


def item_of(insight: InsightEvent) -> Item:
    """What flood control needs of an insight event (the event itself as its payload)."""
    return Item(
        insight_id=insight.insight_id,
        lifecycle=insight.lifecycle.value,
        workspace_id=insight.workspace_id,
        deal_id=insight.deal_id,
        rule=insight.rule.value,
        rank=insight.priority.rank,
        value=insight.data.deal_value,
        payload=insight.model_dump_json(),
    )


class FloodRunner:
    """Flood control's state, outbox and tick for one notifier (see the module docstring)."""

    def __init__(
        self,
        settings: NotifierSettings,
        destinations: Sequence[Destination],
        metrics: NotifierMetrics,
        stop: asyncio.Event,
        acks: AckFilter,
        *,
        wall_clock: Clock,
        directory: Directory | None,
        keys_by_name: Mapping[str, str],
        store: FloodStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lease: FloodLease | None = None  # with several instances: who runs flood control
        self._destinations = list(destinations)
        self._metrics = metrics
        self._stop = stop
        self._acks = acks
        self._wall_clock = wall_clock
        self._directory = directory
        self._keys_by_name = keys_by_name
        self.notifier: Notifier | None = None
        self.flood: FloodControl | None = None
        self._saved: bytes | None = None
        self._outbox: list[Message] = []
        self._flood_lock = asyncio.Lock()
        self._drain_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._suppressed: dict[str, int] = {}

    async def start(self, notifier: Notifier) -> None:
        """Load the saved state and the undelivered messages, and start the tick (once)."""
        self.notifier = notifier
        if self.flood is not None:
            return
        if self.store is None:
            raise RuntimeError("flood control needs a database")
        await self._load()
        self._ticker = asyncio.create_task(self._tick_loop())

    async def _load(self) -> None:
        assert self.store is not None
        state, outbox = await self.store.load()
        policy = self.settings.flood_policy()
        if state is None:
            self.flood = FloodControl(policy)
            self._saved = None
        else:
            self.flood = FloodControl.from_state(policy, state)
            self._saved = orjson.dumps(state)
        self._outbox = outbox
        if outbox:
            logger.info("%d held notification message(s) left to deliver", len(outbox))

    async def _keep_lease(self) -> None:
        """With a lease: if its connection was lost (and the lock with it), take it again and
        reload the saved state (another instance may have run meanwhile), else fail as an
        outage (the batch is retried, uncommitted)."""
        lease = self.lease
        if lease is None or lease.held:
            return
        if not await lease.take():
            raise DatabaseUnavailable(
                f"flood control of consumer group {lease.consumer_group}: its lock was lost "
                "with its connection and another instance holds it now"
            )
        logger.warning(
            "flood control of consumer group %s: lock taken again after its connection was "
            "lost; reloading the saved state",
            lease.consumer_group,
        )
        async with self._drain_lock:
            await self._load()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None

    async def _escalations(self, flood: FloodControl, now: float) -> list[Message]:
        """Messages to the managers of the owners of watched insights whose time is up and
        that nobody acknowledged or snoozed (nor resolved: the watch ends with it)."""
        expired = flood.expired(now)
        if not expired:
            return []
        held = await self._acks.held({i.insight_id for i in expired})
        out: list[Message] = []
        for item in expired:
            if item.insight_id in held:
                continue
            owner = insight_of(item).data.owner_id
            manager = self._directory.manager_of(owner) if self._directory else None
            names = [  # the manager's own (email, sms) and shared channels (slack_app:0, ...)
                via if ":" in via else f"{via}:{manager}"
                for via in dict.fromkeys(self.settings.notify_escalate_via)
                if ":" in via or manager
            ]
            keys = list(
                dict.fromkeys(k for n in names if (k := self._keys_by_name.get(n)) is not None)
            )
            if not keys:
                logger.info("insight %s: nobody to escalate to (owner %s)", item.insight_id, owner)
                continue
            out.extend(flood.escalation(item, key) for key in keys)
        return out

    async def offer(self, items: Sequence[Offer]) -> None:
        """Offer ``items``, take what is due, and save both before anything is committed or
        sent. On a failed save the state in memory goes back to the last saved one."""
        assert self.store is not None
        async with self._flood_lock:
            await self._keep_lease()
            flood = self.flood
            assert flood is not None
            now = self._wall_clock()
            try:
                escalate = self.settings.notify_escalate_after_hours * 3600.0
                for item, recipients, quiet in items:
                    held = {k: u for k, q in quiet.items() if (u := q.until(now)) is not None}
                    flood.offer(item, recipients, now, held)
                    if escalate > 0 and item.lifecycle != "resolved" and item.rank == CRITICAL:
                        flood.watch(item, now + escalate)
                messages = flood.due(now)
                messages += await self._escalations(flood, now)
                if not items and not messages:
                    return
                state = orjson.dumps(flood.to_state())
                await self.store.save(state, messages)
            except BaseException:
                policy = self.settings.flood_policy()
                self.flood = (
                    FloodControl(policy)
                    if self._saved is None
                    else FloodControl.from_state(policy, orjson.loads(self._saved))
                )
                raise
            self._saved = state
            self._outbox.extend(messages)
            for message in messages:
                self._metrics.flood_messages.labels(kind=message.kind).inc()
            for reason, count in flood.suppressed.items():
                new = count - self._suppressed.get(reason, 0)
                if new > 0:
                    self._metrics.skipped.labels(reason=reason).inc(new)
            self._suppressed = dict(flood.suppressed)

    async def drain(self) -> bool:
        """Deliver the outbox in order; False when the stop event came first."""
        assert self.notifier is not None
        assert self.store is not None
        async with self._drain_lock:
            while self._outbox:
                message = self._outbox[0]
                current = await self._acks.message(message)
                targets = [d for d in self._destinations if d.key == message.recipient]
                if current is None:
                    targets = []
                else:
                    message = current
                if not targets and current is not None:
                    logger.warning(
                        "dropping held message %s: its destination is no longer configured",
                        message.message_id,
                    )
                for dest in targets:
                    if self._stop.is_set():
                        return False
                    try:
                        await self.notifier.notify_message(dest, message)
                    except Stopping:
                        return False
                await self.store.done(self._outbox[0].message_id)
                self._outbox.pop(0)
        return True

    async def tick(self) -> None:
        """Send what became due since the last batch (called every flush tick)."""
        await self.offer(())
        if self._outbox:
            await self.drain()

    async def _tick_loop(self) -> None:
        seconds = self.settings.notify_flush_tick_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            if self._stop.is_set():
                return
            try:
                await self.tick()
            except _TICK_ERRORS as exc:
                logger.warning("held notifications not sent yet (database: %s); retrying", exc)
            except Exception:
                logger.exception("held notifications not sent yet; retrying")
