"""What the model rules cost ``vectoros history`` (``python -m bench.history_rules [--deals N]
[--pairs 2]``): its handler on a real PostgreSQL, with them off and on, alternately.

The deal events of the quick data set's first ``--deals`` deals (``bench.data.events_dataset``,
10 per deal) in time order, in batches of 2,000 (``VECTOROS_HISTORY_BATCH_MAX``), through
``HistoryHandler.handle``: each batch stored, the deals it changed recomputed and scored, and,
with the model rules on, those rules run on every score and their insights written to the
outbox. The model is a stand-in that gives every score a random probability (more volatile than
any trained model: more insights), so the figures are the service's own work around a
prediction, not LightGBM's. A fresh embedded PostgreSQL for each run; prints wall and process
CPU seconds, deal events/s and the model insights each run sent.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from bench.data import events_dataset
from consumer.history import models
from consumer.history.metrics import HistoryMetrics
from consumer.history.service import EventBatch, HistoryHandler
from schemas.events import DealEvent, event_adapter
from vectoros.db import connect_pool, migrate
from vectoros.embedded import EmbeddedPostgres

BATCH = 2000


class RandomModel:
    """A stand-in for the win model: a random probability and two factors per deal."""

    workspaces: dict[str, int] = {}
    close = None

    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)

    def explain(self, rows: list[Any], top: int = 3) -> tuple[Any, list[list[tuple[str, float]]]]:
        p = self.rng.uniform(0.05, 0.95, len(rows))
        return p, [[("stage", 0.1), ("days_since_activity", -0.05)] for _ in rows]


def deal_events(deals: int) -> list[DealEvent]:
    data = events_dataset(10_000)
    keep = {f"deal-{i:07d}" for i in range(deals)}
    events: list[DealEvent] = []
    for records in data.partitions.values():
        for key, value, _headers in records:
            if key is None:
                continue
            event = event_adapter.validate_json(value)
            if event.deal_id in keep:  # type: ignore[union-attr]
                events.append(event)  # type: ignore[arg-type]
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


async def one_run(events: list[DealEvent], model_rules: bool) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, model insights sent) of one run."""
    postgres = EmbeddedPostgres()
    postgres.start()
    try:
        pool = await connect_pool(postgres.dsn, deadline_seconds=30)
        try:
            await migrate(pool)
            handler = HistoryHandler(
                HistoryMetrics(CollectorRegistry()),
                scores_topic="scores",
                insights_topic="insights" if model_rules else None,
            )
            handler.pool = pool
            handler.model = models.StoredModel(1, "pooled", {}, RandomModel())  # type: ignore[arg-type]
            stop = asyncio.Event()
            sent = 0
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, len(events), BATCH):
                out = await handler.handle(EventBatch(events[start : start + BATCH]), stop)
                sent += sum(1 for o in out if o.topic == "insights")
            return time.perf_counter() - wall, time.process_time() - cpu, sent
        finally:
            await pool.close()
    finally:
        postgres.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    events = deal_events(args.deals)
    print(f"{len(events):,} deal events of {args.deals:,} deals, batches of {BATCH:,}")
    for pair in range(args.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for model_rules in order:
            wall, cpu, sent = await one_run(events, model_rules)
            print(
                f"model rules {'on ' if model_rules else 'off'}: {wall:.1f} s wall, "
                f"{cpu:.1f} s CPU of this process, {len(events) / wall:,.0f} deal events/s, "
                f"{sent:,} model insights sent"
            )


if __name__ == "__main__":
    asyncio.run(main())
