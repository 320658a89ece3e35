"""The monitor's per-partition gauges (lag, clock lag, deals held) and its stall detection."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import TopicPartition

from consumer.monitor.metrics import MonitorMetrics
from consumer.partition import PartitionState

logger = logging.getLogger(__name__)


class Gauges:
    """Updated after every fetch. Stalled: records are waiting and nothing was committed for
    ``stall_seconds`` (logged once when it starts)."""

    def __init__(
        self,
        metrics: MonitorMetrics,
        *,
        topic: str,
        stall_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.topic = topic
        self.stall_seconds = stall_seconds
        self._wall = wall_clock
        self._last_progress = time.monotonic()
        self._stall_logged = False

    def progress(self) -> None:
        """A commit went through."""
        self._last_progress = time.monotonic()

    def update(
        self, consumer: Any, states: Mapping[int, PartitionState], committed: Mapping[int, int]
    ) -> None:
        m = self.metrics
        now = self._wall()
        total_lag = 0
        for partition, state in states.items():
            label = str(partition)
            hw = consumer.highwater(TopicPartition(self.topic, partition))
            if hw is not None:
                lag = max(0, hw - committed.get(partition, 0))
                total_lag += lag
                m.consumer_lag.labels(label).set(lag)
            if state.clock_ms:
                m.clock_lag_seconds.labels(label).set(now - state.clock_ms / 1000)
            m.tracked_deals.labels(label).set(len(state.deals))
        if total_lag == 0:
            self._last_progress = time.monotonic()  # nothing waiting is not a stall
        idle = time.monotonic() - self._last_progress
        stalled = total_lag > 0 and idle > self.stall_seconds
        m.stalled.set(1 if stalled else 0)
        if stalled and not self._stall_logged:
            logger.warning("stalled: %d records waiting, no commit for %.0fs", total_lag, idle)
        self._stall_logged = stalled

    def forget(self, partition: int) -> None:
        """``partition`` went to another member: its gauges are no longer ours to report."""
        for gauge in (
            self.metrics.consumer_lag,
            self.metrics.clock_lag_seconds,
            self.metrics.tracked_deals,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(str(partition))
