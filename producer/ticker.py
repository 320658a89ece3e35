"""``vectoros tick``: the only component that reads the wall clock.

Every interval it sends one tick to every partition of ``deal-events`` (explicitly, not by key),
re-reading the partition count each round so partitions added later are ticked too. A failed
round is logged and counted; the next round tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from producer.publisher import DealEventPublisher
from vectoros.metrics import PREFIX
from vectoros.settings import KafkaSettings, metrics_port_field

logger = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def tick_once(publisher: DealEventPublisher, now: dt.datetime) -> int:
    """One tick to every current partition; returns the number of ticks acknowledged."""
    partitions = await publisher.partitions(refresh=True)
    sent = await publisher.publish_tick(now, partitions)
    await publisher.flush()
    return sent


async def run_ticker(
    publisher: DealEventPublisher,
    interval_seconds: float,
    stop: asyncio.Event,
    metrics: TickerMetrics,
    *,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> None:
    """Tick until ``stop`` is set. The first round goes out at once."""
    logger.info("ticking %s every %.1fs", publisher.topic, interval_seconds)
    while not stop.is_set():
        try:
            sent = await tick_once(publisher, clock())
            metrics.ticks_sent.inc(sent)
            logger.debug("sent %d ticks", sent)
        except KafkaError as exc:
            metrics.tick_failures.inc()
            logger.error("tick round failed (%s); trying again next interval", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)


class TickerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ticks_sent = Counter(
            f"{PREFIX}_ticker_ticks_sent_total",
            "Ticks produced (one per partition per interval).",
            registry=registry,
        )
        self.tick_failures = Counter(
            f"{PREFIX}_ticker_failures_total",
            "Tick rounds that failed to publish.",
            registry=registry,
        )


class TickerSettings(KafkaSettings):
    """``vectoros tick``: one tick to every partition of ``deal-events`` per interval."""

    metrics_port: int = metrics_port_field("ticker")
    tick_interval_seconds: float = Field(default=60, gt=0)
