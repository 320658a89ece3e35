"""``vectoros simulate``: drive a generated scenario onto ``deal-events``.

The scenario (``producer.simulator``) is pure and seeded; this module only paces it: with
``speedup`` S, one simulated second takes 1/S wall seconds (0 = as fast as the broker takes it).
Simulated ticks go to every partition, so the monitor's clock follows simulated time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import Field

from producer.publisher import DealEventPublisher
from producer.simulator import SimTick, SimulationSpec, generate
from vectoros.settings import KafkaSettings

FLUSH_EVERY = 2_000


@dataclass(slots=True)
class SimProgress:
    """What has been published so far."""

    events: int = 0
    ticks: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    sim_time: datetime | None = None
    deals: set[tuple[str, str]] = field(default_factory=set)


async def run_simulation(
    spec: SimulationSpec,
    publisher: DealEventPublisher,
    *,
    speedup: float = 0.0,
    on_progress: Callable[[SimProgress], None] | None = None,
    stop: asyncio.Event | None = None,
    progress_every: int = 500,
) -> SimProgress:
    """Publish the whole scenario (or until ``stop``); returns the final counts."""
    progress = SimProgress()
    publisher = publisher.with_event_time()  # records carry simulated time (see the publisher)
    partitions = await publisher.partitions(refresh=True)
    wall_start = time.monotonic()
    queued = 0
    for item in generate(spec):
        if stop is not None and stop.is_set():
            break
        at = item.at if isinstance(item, SimTick) else item.occurred_at
        if speedup > 0:
            due = wall_start + (at - spec.start).total_seconds() / speedup
            delay = due - time.monotonic()
            if delay > 0:
                await publisher.flush()
                await asyncio.sleep(delay)
        if isinstance(item, SimTick):
            queued += await publisher.publish_tick(item.at, partitions)
            progress.ticks += 1
        else:
            await publisher.publish(item)
            queued += 1
            progress.events += 1
            progress.by_type[item.type] += 1
            progress.deals.add((item.workspace_id, item.deal_id))
        progress.sim_time = at
        if queued >= FLUSH_EVERY:
            await publisher.flush()
            queued = 0
        if on_progress is not None and (progress.events + progress.ticks) % progress_every == 0:
            on_progress(progress)
    await publisher.flush()
    if on_progress is not None:
        on_progress(progress)
    return progress


class SimulatorSettings(KafkaSettings):
    """``vectoros simulate``: a seeded, realistic pipeline."""

    sim_deals: int = Field(default=200, ge=1)
    sim_days: int = Field(default=90, ge=1)
    sim_workspaces: int = Field(default=3, ge=1)
    sim_seed: int = 42
    sim_speedup: float = Field(
        default=0, ge=0, description="Simulated seconds per wall second; 0 = as fast as possible."
    )
    sim_tick_hours: float = Field(default=6, gt=0, description="Simulated hours between ticks.")
