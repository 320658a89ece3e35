"""The rules configuration with the learned stage benchmarks, read from PostgreSQL.

A shared client (like ``consumer.restore``): the monitor calls ``learned_rules`` at start and
every few minutes (``LearnedRules.run``) and evaluates with the result, so ``stuck_in_stage``
uses each team's own days-in-stage norm once a stage has enough closed-out stays. The history
service writes and refreshes the benchmarks (``stage_benchmarks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg

from consumer.intelligence.benchmarks import SQL, Benchmark, with_benchmarks
from consumer.thresholds import RulesConfig
from vectoros.consume_loop import OUTAGE_ERRORS, stopped_within
from vectoros.db import PgConnection, PgPool

logger = logging.getLogger(__name__)


async def learned_rules(db: PgPool | PgConnection, base: RulesConfig) -> RulesConfig:
    """``base`` (the rules file) with every workspace's benchmarks as of the last refresh."""
    rows = await db.fetch(SQL, None)
    return with_benchmarks(base, [Benchmark.of_row(dict(r)) for r in rows])


class LearnedRules:
    """Keeps ``current`` up to date: the base rules with the latest benchmarks. While
    PostgreSQL is unreachable the last known configuration (at first the base) stays."""

    def __init__(self, pool: PgPool, base: RulesConfig) -> None:
        self.pool = pool
        self.base = base
        self.current = base

    async def refresh(self) -> RulesConfig:
        self.current = await learned_rules(self.pool, self.base)
        return self.current

    async def run(
        self,
        stop: asyncio.Event,
        every_seconds: float,
        on_change: Callable[[RulesConfig], None] | None = None,
    ) -> None:
        """Refresh now and every ``every_seconds`` until ``stop``; ``on_change`` sees each new
        configuration."""
        while True:
            try:
                config = await self.refresh()
            except OUTAGE_ERRORS as exc:
                logger.warning(
                    "could not read the stage benchmarks (%s: %s); keeping the current rules",
                    type(exc).__name__,
                    exc,
                )
            else:
                if on_change is not None:
                    on_change(config)
            if await stopped_within(stop, every_seconds):
                return


@contextlib.asynccontextmanager
async def learned_rules_from(dsn: str, base: RulesConfig) -> AsyncIterator[LearnedRules]:
    """A ``LearnedRules`` on a small pool of its own that connects on first use, so a
    PostgreSQL that is down at start only delays the learned benchmarks (the rules file's
    thresholds apply meanwhile); it never stops the monitor."""
    pool: PgPool = await asyncpg.create_pool(dsn, min_size=0, max_size=1, command_timeout=30)
    try:
        yield LearnedRules(pool, base)
    finally:
        await pool.close()
