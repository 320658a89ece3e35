"""What an acknowledgement or a snooze holds back (``AckFilter``), read before announcing.

An acknowledged insight, and a snoozed one until its time, gets nothing more: raised replays,
resolutions and the lines of held digests are dropped (metric
``vectoros_notifier_skipped_total{reason="acknowledged"}``); an ``escalated`` event always
passes, and a burst summary is sent as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Collection, Sequence

from consumer.notifier.acks import AckLookup
from consumer.notifier.delivery import Clock
from consumer.notifier.flood import Message
from consumer.notifier.metrics import NotifierMetrics
from schemas.insights import InsightEvent, Lifecycle

HOLDABLE = frozenset({Lifecycle.RAISED, Lifecycle.RESOLVED})  # what an ack or snooze holds


class AckFilter:
    """Filters insights and held messages through the acks (``lookup``; None: nothing held)."""

    def __init__(
        self, lookup: AckLookup | None, metrics: NotifierMetrics, wall_clock: Clock = time.time
    ) -> None:
        self.lookup = lookup
        self._metrics = metrics
        self._wall_clock = wall_clock

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC)

    async def held(self, insight_ids: Collection[str]) -> set[str]:
        """Those of ``insight_ids`` acknowledged or snoozed now."""
        if self.lookup is None:
            return set()
        return await self.lookup.held(insight_ids, self.now())

    async def insights(self, insights: Sequence[InsightEvent]) -> list[InsightEvent]:
        """``insights`` less those acknowledged or snoozed (an escalation always passes)."""
        if self.lookup is None:
            return list(insights)
        ids = {i.insight_id for i in insights if i.lifecycle != Lifecycle.ESCALATED}
        held = await self.lookup.held(ids, self.now())
        if not held:
            return list(insights)
        kept = [i for i in insights if i.insight_id not in held or i.lifecycle not in HOLDABLE]
        self._metrics.skipped.labels(reason="acknowledged").inc(len(insights) - len(kept))
        return kept

    async def message(self, message: Message) -> Message | None:
        """A held message less the insights acknowledged or snoozed since it was made; None
        when nothing is left to say (a burst summary is sent as it is)."""
        if self.lookup is None or message.kind == "burst":
            return message
        ids = {i.insight_id for i in message.items if i.lifecycle != "escalated"}
        held = await self.lookup.held(ids, self.now())
        if not held:
            return message
        items = tuple(
            i for i in message.items if i.insight_id not in held or i.lifecycle == "escalated"
        )
        self._metrics.skipped.labels(reason="acknowledged").inc(len(message.items) - len(items))
        if not items:
            return None
        return dataclasses.replace(message, items=items, count=len(items))
