"""The capture service's maintenance loop: every ``capture_poll_seconds``, for every live
connection of every configured provider,

1. the push channel is kept alive: Gmail ``users.watch`` again before its expiration (with
   ``capture_gmail_topic``), the Calendar ``events.watch`` channel opened or renewed, the Graph
   subscriptions created or renewed (with ``capture_public_url``), each a day before expiry;
2. the connection is synced from its cursor: the polling fallback, so a lost notification, a
   channel that lapsed while the service was down, or a provider that stopped pushing delays
   capture by one round at most, and never loses anything (the syncs read from their cursors,
   the captured log drops what was read before). It is also what turns a Calendar meeting that
   has ended into ``held``, as nothing is pushed when a meeting ends.

Then 3. the captured-id log is pruned: each workspace's connections' ids older than its
``retention_days``, and the ids of users without a connection (the JSON webhook's) older than
the longest retention; never younger than ``MIN_RETENTION_DAYS`` (31), as a full sync re-reads
30 days and an id forgotten sooner would be published again.

A user's sync shares the per-user lock with the push endpoints. A revoked grant marks the
connection (it leaves the loop until the user connects again); any other failure is logged
and counted, and the round goes on with the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from producer.capture.api import revoked
from producer.capture.gcal import CalendarPush
from producer.capture.gmail import GmailPush
from producer.capture.graph import GraphPush
from producer.capture.matcher import EventPublisher, Matcher
from producer.capture.metrics import CaptureMetrics
from producer.capture.store import CaptureStore

logger = logging.getLogger(__name__)

Watch = Callable[[str], Awaitable[object]]


MIN_RETENTION_DAYS = 31
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RoundResult:
    watched: int
    synced: int
    failed: int
    revoked: int
    pruned: int = 0


class Maintenance:
    def __init__(
        self,
        store: CaptureStore,
        matcher: Matcher,
        publisher: EventPublisher,
        metrics: CaptureMetrics,
        *,
        gmail: GmailPush | None = None,
        gcal: CalendarPush | None = None,
        graph: GraphPush | None = None,
        public_url: str | None = None,
        gmail_topic: str | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._clock_ms = clock_ms
        self._store, self._matcher, self._publisher = store, matcher, publisher
        self._metrics = metrics
        self._gmail, self._gcal, self._graph = gmail, gcal, graph
        self._url = public_url.rstrip("/") if public_url else None
        self._topic = gmail_topic

    def _watchers(self) -> list[tuple[str, Any, Watch | None]]:
        """(provider, push handler, how to keep a user's channel alive, if it can be)."""
        store, url = self._store, self._url
        out: list[tuple[str, Any, Watch | None]] = []
        if self._gmail is not None:
            gmail, topic = self._gmail, self._topic

            async def gmail_watch(user: str) -> object:
                assert topic is not None
                return await gmail.ensure_watch(store, user, topic)

            out.append(("gmail", gmail, gmail_watch if topic else None))
        if self._gcal is not None:
            gcal = self._gcal

            async def gcal_watch(user: str) -> object:
                return await gcal.ensure_watch(store, user, f"{url}/capture/gcal/notify")

            out.append(("gcal", gcal, gcal_watch if url else None))
        if self._graph is not None:
            graph = self._graph

            async def graph_watch(user: str) -> object:
                return await graph.ensure_subscriptions(store, user, f"{url}/capture/graph/notify")

            out.append(("graph", graph, graph_watch if url else None))
        return out

    async def round(self) -> RoundResult:
        watched = synced = failed = gone = 0
        for provider, push, watch in self._watchers():
            for user in self._store.users(provider):
                if watch is not None:
                    try:
                        await watch(user)
                        watched += 1
                        self._metrics.watches.labels(provider, "ok").inc()
                    except Exception as exc:
                        if revoked(exc):
                            self._store.mark_revoked(user, provider, self._clock_ms())
                            logger.warning("%s: access revoked; connection marked", provider)
                            self._metrics.watches.labels(provider, "revoked").inc()
                            gone += 1
                            continue
                        logger.exception("%s: keeping a push channel alive failed", provider)
                        self._metrics.watches.labels(provider, "failed").inc()
                        failed += 1
                outcome = await push.sync(self._store, self._matcher, self._publisher, user)
                if outcome.status >= 500:
                    failed += 1
                    self._metrics.syncs.labels(provider, "failed").inc()
                elif outcome.body.get("revoked"):
                    gone += 1
                    self._metrics.syncs.labels(provider, "revoked").inc()
                else:
                    synced += 1
                    self._metrics.syncs.labels(provider, "ok").inc()
        pruned = self.prune()
        self._metrics.rounds.inc()
        return RoundResult(watched, synced, failed, gone, pruned)

    def prune(self) -> int:
        """The captured-id log within each workspace's retention (see the module)."""
        now = self._clock_ms()
        policies = self._matcher.policies
        pruned = 0
        for workspace, policy in policies.items():
            days = max(policy.retention_days, MIN_RETENTION_DAYS)
            pruned += self._store.prune_workspace(workspace, now - days * DAY_MS)
        longest = max((p.retention_days for p in policies.values()), default=365)
        pruned += self._store.prune_unconnected(now - max(longest, MIN_RETENTION_DAYS) * DAY_MS)
        return pruned


async def run_maintenance(
    maintenance: Maintenance,
    interval_seconds: float,
    stop: asyncio.Event,
) -> None:
    """Rounds until ``stop``: one at once, then every ``interval_seconds``."""
    while not stop.is_set():
        try:
            result = await maintenance.round()
            logger.info(
                "capture maintenance: %d watched, %d synced, %d failed, %d revoked, %d pruned",
                result.watched, result.synced, result.failed, result.revoked, result.pruned,
            )  # fmt: skip
        except Exception:
            logger.exception("capture maintenance round failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
